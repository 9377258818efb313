"""Checks of the book's structure: table of contents, Colab cells, stored outputs, configuration."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = (ROOT / "_toc.yml").read_text()


def _cells(nb_path):
    return json.loads(nb_path.read_text())["cells"]


def test_there_are_chapters():
    assert NOTEBOOKS, "no chapters found in book/"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_is_in_toc(nb):
    assert f"book/{nb.stem}" in TOC


def test_toc_entries_exist():
    for entry in re.findall(r"file:\s*(\S+)", TOC):
        assert any((ROOT / f"{entry}{ext}").exists() for ext in (".ipynb", ".md")), entry


def test_launch_buttons_configuration():
    repo = CONFIG["repository"]
    assert repo["branch"] == "main" and repo["path_to_book"] == ""
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    exts = CONFIG["parse"]["myst_enable_extensions"]
    assert "dollarmath" in exts and "amsmath" in exts


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_cell_installs_from_the_configured_repository(nb):
    url = CONFIG["repository"]["url"].rstrip("/")
    code = [c for c in _cells(nb) if c["cell_type"] == "code"]
    first = "".join(code[0]["source"])
    assert "google.colab" in first and "%pip install" in first
    assert f"git+{url}@main" in first, f"{nb.name}: the install cell must use {url} from _config.yml"
    for other in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", first):
        assert other.removesuffix(".git") == url, f"{nb.name}: {other} is not the configured {url}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_chapters_that_read_book_files_fetch_them_on_colab(nb):
    """A chapter that opens files next to it (a checkpoint, results) must fetch them on Colab, where only the
    notebook is downloaded."""
    text = "".join("".join(c["source"]) for c in _cells(nb) if c["cell_type"] == "code")
    if re.search(r"Path\(\"(checkpoints|results)/", text):
        first = "".join([c for c in _cells(nb) if c["cell_type"] == "code"][0]["source"])
        assert "git clone" in first and "%cd" in first, f"{nb.name} reads book files but does not fetch them on Colab"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_are_complete_and_error_free(nb):
    code = [c for c in _cells(nb) if c["cell_type"] == "code"]
    skipped = {"skip-execution", "nbval-skip"}
    for cell in code:
        if skipped & set(cell.get("metadata", {}).get("tags", [])):
            assert not cell["outputs"], f"{nb.name}: a skipped cell must not store outputs"
            continue
        assert cell["execution_count"] is not None, f"{nb.name}: a cell was not executed before committing"
        assert all(o["output_type"] != "error" for o in cell["outputs"]), f"{nb.name}: a stored error"
    last = "".join(code[-1]["source"])
    assert "assert" in last, f"{nb.name}: a chapter must end with a cell that checks its claims"


def test_jupyter_book_is_bounded_below_2():
    req = (ROOT / "requirements.txt").read_text()
    assert re.search(r"jupyter-book\s*>=\s*1\.0\.4\s*,\s*<\s*2", req)
