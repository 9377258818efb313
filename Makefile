PY ?= python

.PHONY: install book test sync execute lint figure clean check-explorer

install:
	$(PY) -m pip install -r requirements.txt

book:
	jupyter-book build --all -W --keep-going .

test:
	$(PY) -m pytest --nbval

sync:  ## text sources (book/NN_*.py) -> notebooks, keeping the outputs of unchanged cells
	$(PY) tools/chapters.py sync

execute:  ## sync, re-run every chapter (or CHAPTERS="06 07") and store fresh outputs, figures included
	$(PY) tools/chapters.py execute $(CHAPTERS)

lint:
	ruff check stabook tests tools benchmarks book
	$(PY) tools/chapters.py check

check-explorer:  ## after `make book`: drive chapter 6's field explorer in headless Chromium (skips without one)
	$(PY) tools/check_explorer.py _build/html/book/06_training.html

figure:
	$(PY) tools/readme_figure.py

clean:
	rm -rf _build .pytest_cache
