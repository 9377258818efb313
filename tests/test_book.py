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
    assert "google.colab" in first and '"pip", "install"' in first
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
        assert '"git", "clone"' in first and "os.chdir" in first, \
            f"{nb.name} reads book files but does not fetch them on Colab"


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
    cells = _cells(nb)
    summary = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and SUMMARY in "".join(c["source"])]
    before = [c for c in cells[:summary[0]] if c["cell_type"] == "code"] if summary else code
    assert "assert" in "".join(before[-1]["source"]), f"{nb.name}: the chapter must end with a check of its claims"


SUMMARY = "## What this chapter showed"
CHAPTERS = [nb for nb in NOTEBOOKS if re.match(r"0[1-9]_", nb.name)]
FORBIDDEN = re.compile(r"MODEL\.md|REFERENCE_NOTES|prototype|\bissues? \d+", re.IGNORECASE)


def _texts():
    """Every text a reader of the book or the package meets: cell sources, pages, modules, the README."""
    for nb in NOTEBOOKS:
        for i, cell in enumerate(_cells(nb)):
            yield f"{nb.name} cell {i}", "".join(cell["source"])
    for path in [*(ROOT / "book").glob("*.md"), *(ROOT / "stabook").glob("*.py"), ROOT / "README.md"]:
        yield str(path.relative_to(ROOT)), path.read_text()


def test_the_book_is_self_contained():
    """No page, chapter, docstring or the README points at files a reader does not have, or at how the book
    was made."""
    found = [f"{where}: {m.group(0)!r}" for where, text in _texts() for m in FORBIDDEN.finditer(text)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_each_chapter_has_a_summary_and_exercises_with_solutions(nb):
    cells = _cells(nb)
    sources = ["".join(c["source"]) for c in cells]
    assert any(SUMMARY in s for s in sources if s), f"{nb.name}: no '{SUMMARY}' section"
    assert any(s.startswith("## Exercises") or "\n## Exercises" in s for s in sources), f"{nb.name}: no exercises"
    number = int(nb.name[:2])
    exercises = [i for i, s in enumerate(sources) if re.match(rf"\*\*Exercise {number}\.\d+\*\*", s)]
    assert 2 <= len(exercises) <= 4, f"{nb.name}: {len(exercises)} exercises (two to four expected)"
    for k, start in enumerate(exercises):
        end = exercises[k + 1] if k + 1 < len(exercises) else len(cells)
        hidden_text = any("{admonition} Solution" in sources[i] and ":class: dropdown" in sources[i]
                          for i in range(start, end) if cells[i]["cell_type"] == "markdown")
        hidden_code = any(cells[i]["cell_type"] == "code" and "hide-cell" in cells[i]["metadata"].get("tags", [])
                          for i in range(start, end))
        assert hidden_text or hidden_code, f"{nb.name}: exercise {k + 1} has no solution behind a toggle"
        for i in range(start, end):
            if cells[i]["cell_type"] == "code" and "hide-cell" in cells[i]["metadata"].get("tags", []):
                assert "assert" in sources[i], f"{nb.name}: a computed solution must check its answer"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_code_fits_the_page(nb):
    """The HTML cuts code lines longer than about 88 characters."""
    long = [(i, line) for i, c in enumerate(_cells(nb)) if c["cell_type"] == "code"
            for line in "".join(c["source"]).splitlines() if len(line) > 88]
    assert not long, f"{nb.name}: lines over 88 characters: {long[:3]}"


def test_jupyter_book_is_bounded_below_2():
    req = (ROOT / "requirements.txt").read_text()
    assert re.search(r"jupyter-book\s*>=\s*1\.0\.4\s*,\s*<\s*2", req)


def _words(nb_path) -> int:
    """Words a reader meets on a chapter's page: its Markdown and its generated text (printed and displayed)."""
    count = 0
    for cell in _cells(nb_path):
        if cell["cell_type"] == "markdown":
            count += len("".join(cell["source"]).split())
            continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = out.get("text") or data.get("text/markdown") or data.get("text/plain") or ""
            count += len("".join(text).split())
    return count


def test_the_results_chapters_stay_short():
    """Chapters 6 and 7 lead with their results and stay within about 7,000 words together; the full tables live
    in the results appendix."""
    words = sum(_words(ROOT / "book" / f"{name}.ipynb") for name in ("06_training", "07_evaluation"))
    assert words <= 7200, f"chapters 6 and 7 hold {words} words"


#: a baseline is named "error over x_0" or "error over decoded z_0"; "identity" is allowed only in these senses
IDENTITY_ALLOWED = ("exactly the identity", "check the identity", "the identity (chapter 1)", "identity matrix",
                    "identity map")


def _reader_texts():
    """Prose, printed outputs and figure-free page text that a reader meets: chapters' Markdown and outputs, the
    Markdown pages."""
    for nb in NOTEBOOKS:
        for i, cell in enumerate(_cells(nb)):
            if cell["cell_type"] == "markdown":
                yield f"{nb.name} cell {i}", "".join(cell["source"])
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                yield f"{nb.name} cell {i} output", "".join(out.get("text") or data.get("text/markdown")
                                                           or data.get("text/plain") or "")
    for path in (ROOT / "book").glob("*.md"):
        yield path.name, path.read_text()


def test_no_baseline_is_called_identity():
    found = []
    for where, text in _reader_texts():
        for m in re.finditer(r"\bidentity\b(?![_\"'])", text):
            window = " ".join(text[max(0, m.start() - 30): m.end() + 20].split())
            if not any(allowed in window for allowed in IDENTITY_ALLOWED):
                found.append(f"{where}: ...{window!r}...")
    assert not found, "\n".join(found)


def _png_widths(nb_path):
    import base64
    import struct
    for cell in _cells(nb_path):
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png:
                head = base64.b64decode("".join(png)[:64])
                yield struct.unpack(">I", head[16:20])[0]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_figures_fit_the_page(nb):
    """Figures are drawn at 96 dpi and at most 7 inches wide (plus tight-bounding-box margins), so the page
    column (about 690 px on a 1280 px screen) never scales them down and their 10-point labels stay 10 points."""
    wide = [w for w in _png_widths(nb) if w > 700]
    assert not wide, f"{nb.name}: figures {wide} px wide"


def test_no_figure_text_below_ten_points():
    sources = [*(ROOT / "book").glob("*.py"), *(ROOT / "stabook").glob("*.py")]
    small = [f"{p.name}: {m.group(0)}" for p in sources
             for m in re.finditer(r"fontsize\s*=\s*(\d+(?:\.\d+)?)", p.read_text()) if float(m.group(1)) < 10]
    assert not small, small


@pytest.mark.parametrize("nb", [nb for nb in NOTEBOOKS if re.match(r"0\d_", nb.name)], ids=lambda p: p.name)
def test_each_chapter_says_what_it_teaches_and_assumes(nb):
    first = "".join(_cells(nb)[0]["source"])
    assert "{admonition} This chapter" in first and "**Teaches**" in first and "**Assumes**" in first


def test_the_intro_running_time_matches_the_measured_times():
    times = json.loads((ROOT / "benchmarks" / "results" / "chapter_times.json").read_text())["chapters"]
    assert {f"{nb.stem}" for nb in NOTEBOOKS} <= set(times), "a chapter has no measured time"
    claim = re.search(r"runs on a laptop CPU in under\s+(\d+)\s+minutes", (ROOT / "book" / "intro.md").read_text())
    assert claim, "the intro must state the chapters' running time"
    slowest = max(t["seconds"] for t in times.values())
    assert slowest < 60 * int(claim.group(1)), f"the slowest chapter takes {slowest:.0f} s"


def test_the_glossary_is_alphabetical_and_covers_the_reported_quantities():
    text = (ROOT / "book" / "glossary.md").read_text()
    terms = re.findall(r"^([^\n:(][^\n]*)\n: ", text, re.MULTILINE)
    keys = [re.sub(r"[^a-z ]", "", t.lower()) for t in terms]
    assert keys == sorted(keys), terms
    for needed in ("floor", "per-frame floor", "recognition ratio", "matched share", "dominance score",
                   "displacement share", "flow kl", "iwae", "pair network", "field time", "error over $x_0$",
                   "error over decoded $z_0$", "finding", "dense speeds", "own field"):
        assert any(needed in t.lower() for t in terms), needed
