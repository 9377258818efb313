"""The chapters' text sources (book/NN_*.py) and their notebooks: in sync, free of run-to-run noise, and a sync
that keeps exactly the outputs of unchanged cells (tools/chapters.py)."""

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("chapters", ROOT / "tools" / "chapters.py")
chapters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chapters)
TEXTS = chapters.chapters()


def test_every_notebook_has_a_text_source():
    notebooks = {p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb")}
    assert notebooks and notebooks == {t.stem for t in TEXTS}


@pytest.mark.parametrize("text", TEXTS, ids=lambda p: p.stem)
def test_text_source_and_notebook_agree(text):
    problems = chapters.differences(text)
    assert not problems, "\n".join(problems) + "\nrun `make sync` (or `make execute`) after editing a chapter"


def _write_pair(tmp_path, second="x = 2\nprint(x)"):
    text = tmp_path / "01_demo.py"
    text.write_text(f"# %% [markdown]\n# # Demo\n\n# %%\nprint(1)\n\n# %%\n{second}\n")
    return text


def test_sync_keeps_outputs_of_unchanged_cells_only(tmp_path):
    text = _write_pair(tmp_path)
    nb = chapters.sync(text)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.outputs = [nbformat.v4.new_output("stream", text=f"out {i}\n")]
        cell.execution_count = i + 1
        cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    chapters.write(nb, text.with_suffix(".ipynb"))
    assert any("run-to-run" in p for p in chapters.differences(text))   # the timestamps are caught
    _write_pair(tmp_path, second="x = 3\nprint(x)")
    assert any("differs" in p for p in chapters.differences(text))      # the edited cell is caught
    synced = chapters.sync(text)
    code = [c for c in synced.cells if c.cell_type == "code"]
    assert code[0].outputs[0]["text"] == "out 0\n" and code[0].execution_count == 1
    assert code[1].outputs == [] and code[1].execution_count is None   # changed: must be executed again
    assert not any("execution" in c.metadata for c in synced.cells)
    chapters.write(synced, text.with_suffix(".ipynb"))
    assert chapters.differences(text) == []
