"""The chapters' two forms: the text source people edit (``book/NN_name.py``, jupytext's percent format) and the
notebook that is tested, rendered and opened on Colab (``book/NN_name.ipynb``, with its outputs).

    python tools/chapters.py sync [NAMES]      # text -> notebook: new sources, outputs kept where a cell is unchanged
    python tools/chapters.py execute [NAMES]   # sync, run each chapter, store its outputs without run-to-run noise
    python tools/chapters.py check             # exit 1 if a pair differs or a notebook carries execution noise
    python tools/chapters.py to-text NAMES     # notebook -> text (once, for a chapter written as a notebook)

NAMES are chapter stems or prefixes (``06``, ``06_training``); none means every chapter. A cell's source, type
and tags must agree between the two forms; ``pytest`` runs :func:`differences` through ``tests/test_chapters.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import jupytext
import nbformat

BOOK = Path(__file__).resolve().parents[1] / "book"
#: the measured wall time of each chapter's last execution (the intro's running-time claim is checked against it)
TIMES = BOOK.parent / "benchmarks" / "results" / "chapter_times.json"
TEXT_FORMAT = "py:percent"
#: cell metadata that is run-to-run noise (execution timestamps) or editor state, dropped from stored notebooks
NOISY_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def chapters(names=()) -> list[Path]:
    """The text sources ``book/NN_*.py`` that match ``names`` (stems or prefixes); all of them for none."""
    texts = sorted(BOOK.glob("[0-9][0-9]_*.py"))
    if not names:
        return texts
    chosen = [t for t in texts if any(t.stem == n or t.stem.startswith(n) for n in names)]
    missing = [n for n in names if not any(t.stem == n or t.stem.startswith(n) for t in texts)]
    if missing:
        raise SystemExit(f"no chapter text named {missing} in {BOOK}")
    return chosen


def _key(cell) -> tuple:
    tags = tuple(cell.get("metadata", {}).get("tags", []))
    return cell["cell_type"], cell["source"].strip("\n"), tags


def clean(nb) -> None:
    """Drop run-to-run noise in place: execution timestamps, editor state and jupytext's pairing metadata."""
    nb.metadata.pop("jupytext", None)
    for cell in nb.cells:
        for key in NOISY_CELL_METADATA:
            cell.metadata.pop(key, None)
        cell.pop("id", None)
    nb.nbformat, nb.nbformat_minor = 4, 4          # cell ids (4.5) change on every conversion


def sync(text: Path) -> nbformat.NotebookNode:
    """The notebook of ``text``: its cells and sources, with the stored outputs of every unchanged code cell."""
    new = jupytext.read(text)
    ipynb = text.with_suffix(".ipynb")
    old = nbformat.read(ipynb, as_version=4) if ipynb.exists() else None
    stored = {}
    if old is not None:
        for cell in old.cells:
            if cell.cell_type == "code":
                stored.setdefault(_key(cell), cell)
        new.metadata = {**old.metadata, **{k: v for k, v in new.metadata.items() if k != "jupytext"}}
    for cell in new.cells:
        if cell.cell_type == "code":
            hit = stored.get(_key(cell))
            cell.outputs = hit.outputs if hit is not None else []
            cell.execution_count = hit.execution_count if hit is not None else None
    clean(new)
    return new


def write(nb, path: Path) -> None:
    path.write_text(nbformat.writes(nb) + "\n")


def execute(text: Path, timeout: int = 900) -> float:
    """Run the chapter from its own folder and store the outputs (no timing metadata in the notebook); returns
    the wall time in seconds, which :func:`record_time` keeps in ``benchmarks/results/chapter_times.json``."""
    from nbclient import NotebookClient

    nb = sync(text)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(BOOK)}}).execute()
    seconds = time.perf_counter() - start
    clean(nb)
    write(nb, text.with_suffix(".ipynb"))
    return seconds


def record_time(stem: str, seconds: float, path: Path = TIMES) -> None:
    """Keep the wall time of a chapter's execution (the latest per chapter) with the machine it ran on."""
    times = json.loads(path.read_text()) if path.exists() else {"chapters": {}}
    times["chapters"][stem] = {"seconds": round(seconds, 1), "cpus": os.cpu_count(),
                               "machine": platform.machine(), "python": platform.python_version(),
                               "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "load_average_1min": round(os.getloadavg()[0], 2)}
    times["chapters"] = dict(sorted(times["chapters"].items()))
    path.write_text(json.dumps(times, indent=2) + "\n")


def differences(text: Path) -> list[str]:
    """Where the notebook beside ``text`` differs from it (sources, cell types, tags) or carries noise."""
    ipynb = text.with_suffix(".ipynb")
    if not ipynb.exists():
        return [f"{ipynb.name} is missing: run `python tools/chapters.py execute {text.stem}`"]
    src = jupytext.read(text).cells
    nb = nbformat.read(ipynb, as_version=4)
    problems = []
    if len(src) != len(nb.cells):
        problems.append(f"{text.name} has {len(src)} cells, {ipynb.name} {len(nb.cells)}")
    for i, (a, b) in enumerate(zip(src, nb.cells, strict=False)):
        if _key(a) != _key(b):
            first = (a.source.splitlines() or [""])[0][:60]
            problems.append(f"cell {i} ({a.cell_type}, {first!r}) differs between {text.name} and {ipynb.name}")
    noisy = sorted({k for c in nb.cells for k in NOISY_CELL_METADATA if k in c.metadata})
    if noisy:
        problems.append(f"{ipynb.name} stores run-to-run metadata {noisy}: run `python tools/chapters.py sync`")
    orphans = sorted(p.name for p in BOOK.glob("[0-9][0-9]_*.ipynb") if not p.with_suffix(".py").exists())
    problems += [f"{name} has no text source" for name in orphans]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("sync", "execute", "check", "to-text"))
    parser.add_argument("names", nargs="*", help="chapter stems or prefixes (default: every chapter)")
    args = parser.parse_args(argv)
    if args.command == "to-text":
        for name in args.names:
            for ipynb in sorted(BOOK.glob(f"{name}*.ipynb")):
                jupytext.write(nbformat.read(ipynb, as_version=4), ipynb.with_suffix(".py"), fmt=TEXT_FORMAT)
                print(f"wrote {ipynb.with_suffix('.py').name}")
        return 0
    texts = chapters(args.names)
    if args.command == "check":
        problems = [p for t in texts for p in differences(t)]
        print("\n".join(problems) if problems else f"{len(texts)} chapters: text and notebook agree")
        return 1 if problems else 0
    for text in texts:
        if args.command == "sync":
            write(sync(text), text.with_suffix(".ipynb"))
        else:
            print(f"executing {text.stem} ...", flush=True)
            seconds = execute(text)
            record_time(text.stem, seconds)
            print(f"{text.stem}: {seconds:.0f} s")
        print(f"{args.command}: {text.with_suffix('.ipynb').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
