"""Command line: ``python -m stabook train|eval|compare|export`` (``--help`` on each).

Every error a user can cause (a bad setting, a missing or corrupt file, no GPU, no space, no permission) prints
one line that names the setting or the file and exits with status 2; ``--debug`` shows the traceback instead.
A training stopped by SIGINT or SIGTERM saves a checkpoint and exits with 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from pathlib import Path


class UsageError(ValueError):
    """A bad command-line value."""


def _positive_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated integers >= 1, got {text!r}") from None
    if any(v < 1 for v in values):
        raise UsageError(f"{option}: expected comma-separated integers >= 1, got {text!r}")
    return values


def _train_overrides(args) -> list[tuple[str, str]]:
    """The ``--set`` items and the options that set a value: ``(key=value, where it came from)``."""
    given = [(item, f"--set {item}") for item in args.set or []]
    for key in ("preset", "steps", "seed", "device", "run_dir", "batch_size"):
        value = getattr(args, key)
        if value is not None and not (args.resume and key == "run_dir"):
            given.append((f"{key}={value}", f"--{key.replace('_', '-')} {value}"))
    return given


def _apply(config, given):
    """``config`` with every override applied. Each value is checked on its own first, and a setting given twice
    with different values is refused (the later one would silently win)."""
    from .train import apply_overrides

    seen = {}
    for item, origin in given:
        apply_overrides(config, [item])                    # each value is checked, even one given twice
        key, value = (part.strip() for part in item.split("=", 1))
        key = key.removeprefix("model.")
        if key in seen and seen[key][0] != value:
            raise UsageError(f"{key} is given twice with different values ({seen[key][1]} and {origin}): give "
                             f"each setting once")
        seen[key] = (value, origin)
    return apply_overrides(config, [item for item, _ in given])


def _train(args) -> int:
    from .runs import read_config
    from .train import preset, train

    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other: resume continues a run, overwrite replaces it")
    overrides = _train_overrides(args)
    if args.resume:
        if args.run_dir is not None and Path(args.run_dir).resolve() != Path(args.resume).resolve():
            raise UsageError("--run-dir cannot move a resumed run: --resume names the run directory")
        config = read_config(Path(args.resume))
        config.run_dir = str(args.resume)          # the run continues where it lies now, even if it was moved
    else:                                           # the preset is the base the other settings change
        named = [o.split("=", 1)[1].strip() for o, _ in overrides if o.split("=", 1)[0].strip() == "preset"]
        if len(set(named)) > 1:
            raise UsageError(f"preset is given twice with different values ({', '.join(named)}): give it once")
        config = preset(named[0] if named else "tiny")
    config = _apply(config, overrides)
    summary = train(config, resume=bool(args.resume), progress=not args.quiet, max_steps=args.max_steps,
                    overwrite=args.overwrite)
    if "interrupted" in summary:
        return 128 + int(getattr(signal, summary["interrupted"]))
    if "eval" in summary:
        ev = summary["eval"]
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in ev["equivariance_ratio"].items())
        score = f"; disentanglement score {ev['disentanglement']['score']:.2f}" if ev["disentanglement"] else ""
        print(f"equivariance error over decoded z_0: {ratios}{score}; written to "
              f"{Path(config.run_dir) / 'eval.json'}")
    return 0


def _eval(args) -> int:
    from . import data, metrics
    from .config import LIMITS, TrainConfig
    from .runs import CHECKPOINT, load_model, wall_time, write_atomic

    if not 1 <= args.n <= LIMITS["eval_sequences"]:
        raise UsageError(f"--n: expected an integer from 1 to {LIMITS['eval_sequences']:,}, got {args.n}")
    if args.floor_steps < 0:
        raise UsageError(f"--floor-steps: expected an integer >= 0, got {args.floor_steps}")
    if args.recognition_steps < 1:
        raise UsageError(f"--recognition-steps: expected an integer >= 1, got {args.recognition_steps}")
    ks = _positive_ints(args.k, "--k") if args.k is not None else None
    if ks and max(ks) > LIMITS["eval_k"]:
        raise UsageError(f"--k: expected sample counts of at most {LIMITS['eval_k']:,}, got {args.k!r}")
    run_dir = Path(args.run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"{run_dir} does not exist: expected a run directory or a checkpoint file")
    folder = run_dir if run_dir.is_dir() else run_dir.parent
    if run_dir.is_dir() and not (run_dir / CHECKPOINT).exists():
        raise FileNotFoundError(f"no checkpoint at {run_dir / CHECKPOINT}: is {run_dir} a run directory?")
    out = Path(args.output) if args.output else folder / ("eval.json" if args.split == "test" else "eval-val.json")
    if out.is_dir():
        raise UsageError(f"--output: {out} is a folder; name a file such as {out / 'eval.json'}")
    if not out.parent.is_dir():
        raise UsageError(f"--output: the folder {out.parent} does not exist")
    replaces = _check_output(out, args.overwrite)
    model, state = load_model(run_dir, device=args.device or "cpu")
    config = TrainConfig.from_dict({**state["train_config"], "model": state["model_config"]})
    images, labels = data.load_images(config.dataset)
    splits = data.split_indices(len(images), seed=0)
    # the validation split chooses settings; a VAE then picks its directions on the training digits, so that
    # nothing it is scored on was used to fit it
    target, fit = ("test", "val") if args.split == "test" else ("val", "train")
    result = metrics.evaluate(model, images[splits[target]], config.transformations, n=args.n, T=config.T,
                              seed=config.seed + 1000, val_images=images[splits[fit]],
                              ks=ks if ks is not None else config.eval_k, floor_steps=args.floor_steps)
    result["split"] = target
    try:
        result["wall_time"] = wall_time(folder)
    except ValueError:                     # a checkpoint with no training log beside it
        pass
    if args.recognition:
        result["recognition"] = _recognition(model, images, labels, splits, target, config, args.n,
                                             args.recognition_steps)
    write_atomic(out, json.dumps(result, indent=2))
    for line in _eval_summary(result):
        print(line)
    print(f"wrote {out}" + (f" (--overwrite: replaced {replaces})" if replaces else ""))
    return 0


def _check_output(out: Path, overwrite: bool) -> str | None:
    """Refuse an ``--output`` that would write over a run's file (or any file that is not an evaluation) unless
    ``--overwrite``; returns what it replaces then."""
    from .runs import EXPORT_FILES, LOCK

    run_file = out.name in (*EXPORT_FILES, LOCK) and out.name != "eval.json"
    if not run_file and (not out.exists() or _is_evaluation(out)):
        return None
    what = f"a run's {out.name}" if run_file else "a file that is not an evaluation"
    if not overwrite:
        raise UsageError(f"--output: {out} is {what}; eval refuses to write over it: name another file (default: "
                         f"eval.json beside the checkpoint), or replace it with --overwrite")
    return f"{out}, {what}"


def _is_evaluation(path: Path) -> bool:
    """Whether ``path`` holds an evaluation that ``eval`` wrote (a JSON object with ``equivariance``)."""
    try:
        if path.stat().st_size > 2**24:
            return False
        return "equivariance" in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return False


def _recognition(model, images, labels, splits, target, config, n, steps) -> dict:
    """Does the digit survive the model's rollout? A digit classifier trained on transformed frames of the
    training digits (seed 0) reads predicted and true frames of the evaluation sequences."""
    import torch

    from . import classifier, data

    if model.kind != "sta":                                   # a VAE has no fields to roll out
        return {}
    clf = classifier.train_digit_classifier(images[splits["train"]], labels[splits["train"]],
                                            config.transformations, T=config.T, steps=steps)
    gen = data.SequenceGenerator(images[splits[target]], config.transformations, T=config.T)
    device = next(model.parameters()).device
    out = {}
    for k, name in enumerate(gen.transformations):           # the sequences metrics.evaluate scores
        batch = gen.sample(n, generator=torch.Generator().manual_seed(config.seed + 1000 + k), only=name)
        x_hat = model.rollout(batch.frames.to(device)).frames
        out[name] = classifier.recognition(clf, x_hat.cpu(), batch.frames, labels[splits[target]][batch.index])
    return out


def _eval_summary(result: dict) -> list[str]:
    from .metrics import own_fields

    lines = []
    for name, v in result["equivariance"].items():
        line = (f"{name:>8s}: error over x_0 {v['mae'] / v['identity_x0_mae']:.3f}, error over decoded z_0 "
                f"{v['mae'] / v['identity_mae']:.3f}; error over the x_0 floor {v['mae'] / v['floor_mae']:.2f}")
        if "per_frame_floor_mae" in v:
            line += f", over the per-frame floor {v['mae'] / v['per_frame_floor_mae']:.2f}"
        lines.append(line)
        if name in result.get("recognition", {}):
            r = result["recognition"][name]
            lines.append(f"{'':>10s}digit recognised {r['ratio']:.2f} as often as in the true frames (recognition "
                         f"floor, the reconstruction of x_0: {r['floor_ratio']:.2f})")
    d = result.get("disentanglement")
    if d:
        fields = list(d["matching"].values())
        own = "each transformation's largest share on its own field" if own_fields(d) else \
            "two transformations share their largest field"
        moved = (f", matched displacement share {d['matched_displacement_share']:.3f}"
                 if "matched_displacement_share" in d else "")
        lines.append(f"matched share {d['matched_share']:.3f}{moved}, dominance score {d['score']:.3f}, matched "
                     f"fields {fields}: {own}")
    for kind in ("frame", "sequence"):
        for k, v in result.get("likelihood", {}).get(kind, {}).items():
            lines.append(f"{kind} IWAE k={k}: {v['nats']:.1f} nats")
    if "wall_time" in result:
        w = result["wall_time"]
        lines.append(f"trained {w['steps']:,} steps in {w['seconds'] / 60:.1f} min of wall time "
                     f"({w['segments']} segment{'s' if w['segments'] > 1 else ''}, from metrics.jsonl)")
    return lines


def _compare(args) -> int:
    from .compare import parse_seeds, run_comparison

    command = "python -m stabook " + " ".join(sys.argv[1:]) if args.argv is None else args.argv
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as err:
        raise UsageError(f"--seeds: {err}") from None
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps: expected an integer >= 1, got {args.steps}")
    variants = [v for v in args.variants.split(",") if v] if args.variants else None
    results = run_comparison(args.preset, seeds, variants, args.steps, args.runs_dir, args.output, args.device,
                             progress=not args.quiet, overrides=args.set or (), command=command)
    if args.output:
        print(f"wrote {args.output}")
    for variant, entry in results["variants"].items():
        s = entry["summary"]
        cells = [f"{key} {s[key]['mean']:.4f}+-{s[key]['std']:.4f}" for key in s if key.startswith("ratio_")]
        if "score" in s:
            cells.append(f"score {s['score']['mean']:.2f}+-{s['score']['std']:.2f}")
        print(f"{variant:>16}: " + ", ".join(cells))
    return 0


def _export(args) -> int:
    from .runs import EXPORT_FILES, export_run

    replaced = [n for n in EXPORT_FILES if (Path(args.out_dir) / n).exists()] if args.overwrite else []
    out = export_run(args.run_dir, args.out_dir, args.command_line, overwrite=args.overwrite)
    print(f"exported {args.run_dir} to {out}" + (f" (--overwrite: replaced {', '.join(replaced)})"
                                                   if replaced else ""))
    return 0


def _doctor(args) -> int:
    from .doctor import run_doctor, summary_lines

    report = run_doctor(args.device, quick=args.quick, output=args.output, ddp=not args.no_ddp,
                        progress=not args.quiet)
    print("\n".join(summary_lines(report)))
    print(f"report written to {args.output}")
    return 0 if report["ok"] else 1


def _message(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename}"
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0] if isinstance(err, OSError) else text


BEST_DEVICE = "default: the best available, cuda, then mps, then cpu"


def _train_epilog() -> str:
    from .config import LIMITS, TrainConfig
    from .model import SIZE_LIMITS, STAConfig

    def wrap(words, indent="  "):
        lines, line = [], indent
        for word in words:
            if len(line) + len(word) > 100:
                lines.append(line.rstrip())
                line = indent
            line += word + " "
        return "\n".join([*lines, line.rstrip()])

    train_keys = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "model"]
    model_keys = [f.name for f in dataclasses.fields(STAConfig)]
    limits = {**LIMITS, **SIZE_LIMITS}
    return "\n".join([
        "--set keys (KEY=VALUE; model keys may be written model.KEY):",
        wrap(["training:", *train_keys]), wrap(["model:", *model_keys]),
        wrap(["upper limits:", *(f"{k} {v:,}" for k, v in limits.items())]),
        "",
        "signals: SIGINT (Ctrl-C) or SIGTERM stops after the current step and saves a checkpoint; a second",
        "  signal stops at once without saving.",
        "exit status: 0 done; 2 a refused command or another error a user can cause (one line names the setting",
        "  or the file; no file of the run was changed by a refusal); 130 (128 + SIGINT) or 143 (128 + SIGTERM)",
        "  stopped by a signal, with a checkpoint saved; 130 also after a second signal (no checkpoint).",
    ])


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser = argparse.ArgumentParser(prog="python -m stabook", description="Sparse Transformation Analysis "
                                     "(also installed as the command stabook)", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", parents=[common], help="train STA (a preset, with overrides), or resume a run",
                        description="Train STA from a preset with overrides, or resume a run.",
                        epilog=_train_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("--preset", help="the settings to start from: tiny (digits, CPU, ~10 min), book (real digits, "
                                     "CPU, ~25 min) or mnist (GPU); default tiny. With --resume: must be the run's")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped")
    tr.add_argument("--overwrite", action="store_true",
                    help="replace the run that --run-dir already holds (a folder that is not a run is refused)")
    tr.add_argument("--steps", type=int, help="total training steps (default: the preset's: tiny 5000, "
                                              "book 14000, mnist 100000)")
    tr.add_argument("--max-steps", type=int, help="stop after this step, with a checkpoint, to resume later "
                                                  "(default: train to --steps)")
    tr.add_argument("--seed", type=int, help="the seed of the weights, the data and the noise (default 0)")
    tr.add_argument("--batch-size", dest="batch_size", type=int,
                    help="sequences per step (default: the preset's: 32, or 128 for mnist)")
    tr.add_argument("--device", help=f"cpu, cuda, cuda:1, mps ... ({BEST_DEVICE})")
    tr.add_argument("--run-dir", dest="run_dir", help="the run directory to write (default runs/<preset>)")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a setting, e.g. latent_dim=32 (repeatable; keys below)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar or messages (default: shown)")
    ev = sub.add_parser("eval", parents=[common],
                        help="evaluate a run: equivariance errors, disentanglement, IWAE bounds, as JSON")
    ev.add_argument("run_dir", help="a run directory or a checkpoint file")
    ev.add_argument("--n", type=int, default=128, help="test sequences per transformation (default 128)")
    ev.add_argument("--floor-steps", dest="floor_steps", type=int, default=300,
                    help="gradient steps of the per-frame floor, the decoder's best drawing of each true frame "
                         "(default 300; 0: skip it)")
    ev.add_argument("--k", help="IWAE sample counts, comma separated (default: the run's eval_k, e.g. 1,100)")
    ev.add_argument("--device", help="where to evaluate: cpu, cuda, mps ... (default: cpu)")
    ev.add_argument("--recognition", action="store_true",
                    help="also train a digit classifier on transformed training digits (about a minute) and report "
                         "how often it recognises the digit in predicted frames")
    ev.add_argument("--recognition-steps", dest="recognition_steps", type=int, default=1500,
                    help="training steps of that classifier (default 1500)")
    ev.add_argument("--split", choices=("test", "val"), default="test",
                    help="the digits to evaluate on: test (default) or val (for choosing settings)")
    ev.add_argument("--output", help="the JSON file to write (default: eval.json, or eval-val.json for --split val, "
                                     "beside the checkpoint); never a run's other files")
    ev.add_argument("--overwrite", action="store_true",
                    help="let --output replace a file that is not an evaluation (default: refuse)")
    co = sub.add_parser("compare", parents=[common],
                        help="train and evaluate STA, its ablations and the VAE over seeds (chapter 7)")
    co.add_argument("--preset", default="tiny", help="tiny, book or mnist (default tiny)")
    co.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, each a run per variant (default 0,1,2)")
    co.add_argument("--variants",
                    help="comma-separated subset of sta, dense, potential_only, rotational_only, vae (default: all)")
    co.add_argument("--steps", type=int, help="training steps per run (default: the preset's)")
    co.add_argument("--runs-dir", dest="runs_dir", default="runs/compare",
                    help="where the runs live, one folder <variant>-seed<s> each; finished runs are reused and "
                         "interrupted ones resumed (default runs/compare)")
    co.add_argument("--output", help="the results file (JSON) that chapter 7 reads (default: none)")
    co.add_argument("--device", help=f"where every run trains and is evaluated ({BEST_DEVICE})")
    co.add_argument("--set", action="append", metavar="KEY=VALUE", help="an override for every run")
    co.add_argument("--quiet", action="store_true", help="no progress bars (default: shown)")
    co.set_defaults(argv=None)
    ex = sub.add_parser("export", parents=[common],
                        help="write a slim, weights-only copy of a finished run (for publishing)")
    ex.add_argument("run_dir", help="the run directory to export (its checkpoint is checked first)")
    ex.add_argument("out_dir", help="a new or empty folder, or a finished export to replace (never the run itself)")
    ex.add_argument("--command", dest="command_line", required=True, help="the command that made the run")
    ex.add_argument("--overwrite", action="store_true",
                    help="write into a folder that holds other files or a run, replacing an export's files "
                         "(default: refuse)")
    do = sub.add_parser("doctor", parents=[common],
                        help="check the full-scale path on this machine: speed, bf16, IWAE, torchrun (JSON report)")
    do.add_argument("--device", help=BEST_DEVICE)
    do.add_argument("--quick", action="store_true", help="small sizes (about a minute on a CPU)")
    do.add_argument("--output", default="doctor.json", help="the JSON report (default: doctor.json)")
    do.add_argument("--no-ddp", dest="no_ddp", action="store_true", help="skip the torchrun check")
    do.add_argument("--quiet", action="store_true", help="no progress lines, only the summary (default: shown)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"train": _train, "eval": _eval, "compare": _compare, "export": _export, "doctor": _doctor}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, FloatingPointError) as err:
        if args.debug:
            raise
        print(f"error: {_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
