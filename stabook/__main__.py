"""Command line: ``python -m stabook train ...`` and ``python -m stabook eval RUN_DIR``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _train(args) -> int:
    from .train import TrainConfig, apply_overrides, preset, train

    if args.resume:
        config_path = Path(args.resume) / "config.json"
        if not config_path.exists():
            print(f"error: {config_path} does not exist: is {args.resume} a run directory?", file=sys.stderr)
            return 2
        config = TrainConfig.from_dict(json.loads(config_path.read_text()))
        config.run_dir = str(args.resume)          # the run continues where it lies now, even if it was moved
    else:
        config = preset(args.preset)
    overrides = list(args.set or [])
    for key in ("steps", "seed", "device", "run_dir", "batch_size"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"{key}={value}")
    config = apply_overrides(config, overrides)
    summary = train(config, resume=bool(args.resume), progress=not args.quiet, max_steps=args.max_steps)
    if "eval" in summary:
        ev = summary["eval"]
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in ev["equivariance_ratio"].items())
        score = f"; disentanglement score {ev['disentanglement']['score']:.2f}" if ev["disentanglement"] else ""
        print(f"equivariance error / identity baseline: {ratios}{score}; written to "
              f"{Path(config.run_dir) / 'eval.json'}")
    return 0


def _eval(args) -> int:
    from . import data, metrics
    from .train import TrainConfig, load_model

    run_dir = Path(args.run_dir)
    model, state = load_model(run_dir, device=args.device or "cpu")
    config = TrainConfig.from_dict(state["train_config"])
    images, _ = data.load_images(config.dataset)
    splits = data.split_indices(len(images), seed=0)
    ks = tuple(int(k) for k in args.k.split(",") if k) if args.k is not None else config.eval_k
    result = metrics.evaluate(model, images[splits["test"]], config.transformations, n=args.n, T=config.T,
                              seed=config.seed + 1000, val_images=images[splits["val"]], ks=ks)
    out = Path(args.output) if args.output else run_dir / "eval.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


def _compare(args) -> int:
    from .baselines import run_comparison

    command = "python -m stabook " + " ".join(sys.argv[1:]) if args.argv is None else args.argv
    seeds = [int(s) for s in args.seeds.split(",") if s]
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
    from .train import export_run

    out = export_run(args.run_dir, args.out_dir, args.command)
    print(f"exported {args.run_dir} to {out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stabook", description="Sparse Transformation Analysis")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train STA (a preset, with overrides), or resume a run")
    tr.add_argument("--preset", default="tiny", help="tiny (digits, CPU) or mnist (GPU)")
    tr.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped")
    tr.add_argument("--steps", type=int)
    tr.add_argument("--max-steps", type=int, help="stop after this step (resume later)")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--batch-size", dest="batch_size", type=int)
    tr.add_argument("--device")
    tr.add_argument("--run-dir", dest="run_dir")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any setting, e.g. latent_dim=32")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    ev = sub.add_parser("eval", help="evaluate a run: equivariance errors and disentanglement, as JSON")
    ev.add_argument("run_dir")
    ev.add_argument("--n", type=int, default=128, help="test sequences per transformation")
    ev.add_argument("--k", help="IWAE sample counts, comma separated (default: the run's eval_k, e.g. 1,100)")
    ev.add_argument("--device")
    ev.add_argument("--output")
    co = sub.add_parser("compare", help="train and evaluate STA, its ablations and the VAE over seeds (chapter 7)")
    co.add_argument("--preset", default="tiny")
    co.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    co.add_argument("--variants",
                    help="comma-separated subset of sta, dense, potential_only, rotational_only, vae (default: all)")
    co.add_argument("--steps", type=int, help="training steps per run (default: the preset's)")
    co.add_argument("--runs-dir", dest="runs_dir", default="runs/compare")
    co.add_argument("--output", help="the results file (JSON) that chapter 7 reads")
    co.add_argument("--device")
    co.add_argument("--set", action="append", metavar="KEY=VALUE", help="an override for every run")
    co.add_argument("--quiet", action="store_true")
    co.set_defaults(argv=None)
    ex = sub.add_parser("export", help="write a slim, weights-only copy of a finished run (for publishing)")
    ex.add_argument("run_dir")
    ex.add_argument("out_dir")
    ex.add_argument("--command", dest="command_line", required=True, help="the command that made the run")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            args.command = args.command_line
            return _export(args)
        if args.command == "compare":
            return _compare(args)
        return _train(args) if args.command == "train" else _eval(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
