"""Collect the book preset's runs into the files chapters 6 and 7 read.

    python tools/make_book_results.py --from runs/book     # publish finished runs, then collect
    python tools/make_book_results.py                      # collect what is published

Each run of ``runs/book/<variant>-seed<s>`` was trained and evaluated on the test digits by

    python -m stabook train --preset book --seed S [--set speeds=dense | --set model_kind=vae] --set eval_k=1 \
        --run-dir RUN
    python -m stabook eval RUN --k 1,100 [--recognition]                   # --recognition for STA

``--from`` publishes them: STA seed 0 as a weights-only checkpoint with its files (``book/checkpoints/book-seed0``,
``python -m stabook export``), every other run as its files without weights (``book/results/book/<run>``), and for
every STA seed the frames of its traversals (``traversal.pt``: each field moved at unit speed from the encodings of
the first test digits, the frames as uint8), so that chapter 6 can show every seed's fields without their weights.
Then the runs are collected into ``book/results/book.json`` (:func:`stabook.compare.collect_runs`). Variants or
seeds whose run is missing are skipped with a message, so the file says exactly what was run.
"""

import argparse
import shutil
from pathlib import Path

import torch

from stabook import data
from stabook.compare import collect_runs
from stabook.runs import export_run, load_model, write_atomic

CHECKPOINTS = Path("book/checkpoints")
RESULTS = Path("book/results/book")
VARIANTS = {"sta": "", "dense": " --set speeds=dense", "vae": " --set model_kind=vae"}
SEEDS = (0, 1, 2)
FILES = ("config.json", "eval.json", "history.jsonl", "metrics.jsonl")
#: the traversals stored per STA seed: digits (the first test digits), steps and speed
TRAVERSAL = {"digits": 4, "steps": 8, "speed": 1.0}


def published(variant: str, seed: int) -> Path:
    """Where a run is published: STA seed 0 with its weights, every other run without."""
    return CHECKPOINTS / "book-seed0" if (variant, seed) == ("sta", 0) else RESULTS / f"{variant}-seed{seed}"


def command(variant: str, seed: int) -> str:
    """The training command of a run (its test evaluation, ``python -m stabook eval RUN --k 1,100``, with
    ``--recognition`` for STA, followed it)."""
    return f"python -m stabook train --preset book --seed {seed}{VARIANTS[variant]} --set eval_k=1"


@torch.no_grad()
def traversal(run: Path) -> dict:
    """The frames ``[digits, M, steps + 1, C, H, W]`` (uint8) of every field of ``run``'s model moved at constant
    speed from the encodings of the first test digits (:meth:`stabook.model.STA.traverse`)."""
    model, _ = load_model(run)
    images, _ = data.load_images("mnist_sample")
    test = images[data.split_indices(len(images), seed=0)["test"]][:TRAVERSAL["digits"]]
    z0, _ = model.encode(test)
    paths = torch.stack([model.traverse(z0, m, steps=TRAVERSAL["steps"], speed=TRAVERSAL["speed"])
                         for m in range(model.M)], 1)                             # [digits, M, steps + 1, D]
    frames = model.decode(paths.flatten(0, 2)).reshape(*paths.shape[:3], *test.shape[1:])
    return {**TRAVERSAL, "kinds": list(model.fields.kinds), "frames": (frames * 255).round().to(torch.uint8)}


def publish(source: Path) -> None:
    for variant in VARIANTS:
        for seed in SEEDS:
            run = source / f"{variant}-seed{seed}"
            if not (run / "eval.json").is_file():
                print(f"not published {variant} seed {seed}: no {run}/eval.json")
                continue
            out = published(variant, seed)
            if out.exists():
                shutil.rmtree(out)
            if out.parent == CHECKPOINTS:
                export_run(run, out, command(variant, seed))
            else:
                out.mkdir(parents=True)
                for name in FILES:
                    shutil.copyfile(run / name, out / name)
                write_atomic(out / "COMMAND", command(variant, seed) + "\n")
            if variant == "sta":
                torch.save(traversal(run), out / "traversal.pt")
            print(f"published {run} -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", help="a folder of finished runs <variant>-seed<s> to publish first")
    args = parser.parse_args()
    if args.source:
        publish(Path(args.source))
    runs = {}
    for variant in VARIANTS:
        found = {s: str(published(variant, s)) for s in SEEDS if (published(variant, s) / "eval.json").is_file()}
        for s in sorted(set(SEEDS) - set(found)):
            print(f"skipped {variant} seed {s}: no {published(variant, s)}/eval.json")
        if found:
            runs[variant] = found
    results = collect_runs(runs, "book", command="python tools/make_book_results.py", out="book/results/book.json")
    for variant, entry in results["variants"].items():
        print(f"{variant}: seeds {sorted(int(s) for s in entry['per_seed'])}")
    print("wrote book/results/book.json")


if __name__ == "__main__":
    main()
