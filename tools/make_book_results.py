"""Collect the book preset's runs into ``book/results/book.json``, the results file chapter 7 reads.

The STA runs of seeds 0 and 1 are the committed ones (``book/checkpoints/book-seed0`` with weights,
``book/results/book-seed1`` without); the others were trained by

    python -m stabook compare --preset book --variants VARIANT --seeds SEED --runs-dir runs/compare-book

and evaluated on the test digits (with ``python -m stabook eval RUN --recognition`` for STA). Run from the
repository root: ``python tools/make_book_results.py``. Variants or seeds whose run is missing are skipped
with a message, so the file says exactly what was run.
"""

from pathlib import Path

from stabook.compare import collect_runs

RUNS = {
    "sta": {0: "book/checkpoints/book-seed0", 1: "book/results/book-seed1", 2: "book/results/sta-seed2"},
    "vae": {s: f"book/results/vae-seed{s}" for s in (0, 1, 2)},
    "dense": {s: f"book/results/dense-seed{s}" for s in (0, 1, 2)},
}


def main() -> None:
    runs = {}
    for variant, folders in RUNS.items():
        found = {s: f for s, f in folders.items() if (Path(f) / "eval.json").is_file()}
        for s in sorted(set(folders) - set(found)):
            print(f"skipped {variant} seed {s}: no {folders[s]}/eval.json")
        if found:
            runs[variant] = found
    results = collect_runs(runs, "book", command="python tools/make_book_results.py", out="book/results/book.json")
    for variant, entry in results["variants"].items():
        print(f"{variant}: seeds {sorted(int(s) for s in entry['per_seed'])}")
    print("wrote book/results/book.json")


if __name__ == "__main__":
    main()
