PY ?= python

.PHONY: install book test execute lint figure clean

install:
	$(PY) -m pip install -r requirements.txt

book:
	jupyter-book build --all -W --keep-going .

test:
	$(PY) -m pytest --nbval

execute:  ## re-run every chapter in place, storing fresh outputs
	cd book && jupyter execute --inplace *.ipynb

lint:
	ruff check stabook tests tools benchmarks

figure:
	$(PY) tools/readme_figure.py

clean:
	rm -rf _build .pytest_cache
