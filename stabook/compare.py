"""Chapter 7: STA, its ablations and the VAE trained by the same code on the same data and budget, over seeds.

``python -m stabook compare --preset tiny --steps 2000 --seeds 0,1,2 --output results.json`` runs
:func:`run_comparison`; :func:`summarise` gives mean and standard deviation over seeds and
:func:`comparison_table` a Markdown table. This module sits above the trainer (:mod:`stabook.train`), which sits
above the models (:mod:`stabook.model`, :mod:`stabook.baselines`) and the metrics (:mod:`stabook.metrics`).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import torch

from .baselines import LABELS, VARIANTS
from .config import TrainConfig, apply_overrides, preset
from .report import flatten_metrics
from .runs import CHECKPOINT, wall_time, write_atomic
from .train import train

__all__ = ["run_comparison", "collect_runs", "summarise", "comparison_table", "parse_seeds", "flatten_metrics"]


def parse_seeds(seeds) -> list[int]:
    """Seeds from ``"0,1,2"`` or an iterable of ints; a ValueError says what was expected."""
    parts = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    try:
        out = [int(s) for s in parts if str(s).strip()]
    except (TypeError, ValueError):
        raise ValueError(f"seeds must be comma-separated integers >= 0, got {seeds!r}") from None
    if not out or any(s < 0 for s in out):
        raise ValueError(f"seeds must be comma-separated integers >= 0 (at least one), got {seeds!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must not repeat, got {seeds!r}")
    return out


def summarise(per_seed: dict[int, dict]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (``ddof = 1``; 0 for one seed) and count of every metric over seeds."""
    rows = [flatten_metrics(r) for r in per_seed.values()]
    keys = sorted(set().union(*rows)) if rows else []
    out = {}
    for key in keys:
        values = torch.tensor([r[key] for r in rows if key in r], dtype=torch.float64)
        out[key] = {"mean": values.mean().item(), "std": values.std().item() if len(values) > 1 else 0.0,
                    "n": len(values)}
    return out


def _results(command: str, preset_name: str) -> dict:
    """The head of a results file: when and by what it was made, and for which preset."""
    return {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": command, "preset": preset_name, "variants": {}}


def _variant_entry(variant: str, config: dict, per_seed: dict) -> dict:
    """One variant's entry of a results file: its overrides, configuration, per-seed evaluations and summary."""
    return {"overrides": list(VARIANTS[variant]), "config": config,
            "per_seed": {str(s): r for s, r in per_seed.items()}, "summary": summarise(per_seed)}


def _write(results: dict, out) -> None:
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, json.dumps(results, indent=1))


def run_comparison(preset_name: str = "tiny", seeds=(0, 1, 2), variants=None, steps: int | None = None,
                   runs_dir="runs/compare", out=None, device=None, progress: bool = True, overrides=(),
                   command: str = "") -> dict:
    """Train and evaluate every variant of :data:`VARIANTS` (or those named) for every seed with the same
    preset, data and budget, and summarise. ``steps`` overrides the preset's budget (the temperature is then
    annealed over the first 80% of it). Each run lives in ``runs_dir/<variant>-seed<s>``: a finished run
    (``eval.json`` present) is reused, an interrupted one resumed, so the command can be repeated until done
    and split over processes. Writes ``out`` (JSON) if given; returns the results."""
    variants = list(VARIANTS) if variants is None else list(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}: expected names from {list(VARIANTS)}")
    seeds = parse_seeds(seeds)
    results = _results(command, preset_name) | {"seeds": seeds}
    for variant in variants:
        per_seed, configs = {}, None
        for seed in seeds:
            run_dir = Path(runs_dir) / f"{variant}-seed{seed}"
            settings = [*VARIANTS[variant], *overrides, f"seed={seed}", f"run_dir={run_dir}"]
            if device is not None:
                settings.append(f"device={device}")
            if steps is not None:
                settings += [f"steps={steps}", f"temperature_steps={max(1, int(0.8 * steps))}"]
            config = apply_overrides(preset(preset_name), settings)
            eval_path = run_dir / "eval.json"
            done = eval_path.exists() and (run_dir / "config.json").exists() and \
                TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())).to_dict() == config.to_dict()
            if not done:
                resume = (run_dir / CHECKPOINT).exists()
                if resume:
                    saved = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
                    if saved.to_dict() != config.to_dict():
                        raise ValueError(f"{run_dir} holds a run with another configuration; move it away or "
                                         f"choose another runs_dir")
                # a folder with no checkpoint holds nothing to resume (a run stopped before its first one)
                train(config, resume=resume, progress=progress, overwrite=not resume)
            per_seed[seed] = json.loads(eval_path.read_text())
            configs = config.to_dict()
        results["variants"][variant] = _variant_entry(variant, configs, per_seed)
        results["steps"] = configs["steps"]
    _write(results, out)
    return results


def collect_runs(runs: dict[str, dict[int, str | Path]], preset_name: str, command: str = "", out=None) -> dict:
    """A results file in :func:`run_comparison`'s format from runs that already exist, wherever they live.

    ``runs`` maps a variant to ``{seed: folder}``; each folder holds the run's ``eval.json`` (its test
    evaluation) and ``config.json``. The runs of one variant must share every setting but the seed, the run
    folder and the budget's bookkeeping (``log_every``, ``ckpt_every``, the final evaluation's ``eval_k``), so
    that a committed run exported from one place and a run trained elsewhere can be compared fairly; anything
    else is an error."""
    results = _results(command, preset_name)
    free = {"seed", "run_dir", "log_every", "ckpt_every", "device", "preset", "eval_k"}
    seeds_seen = set()
    for variant, folders in runs.items():
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}: expected names from {list(VARIANTS)}")
        per_seed, reference = {}, None
        for seed, folder in sorted(folders.items()):
            folder = Path(folder)
            for name in ("eval.json", "config.json"):
                if not (folder / name).is_file():
                    raise FileNotFoundError(f"{folder / name} is missing: expected a finished, evaluated run")
            config = json.loads((folder / "config.json").read_text())
            if config.get("seed") != seed:
                raise ValueError(f"{folder} holds seed {config.get('seed')}, listed as seed {seed}")
            kept = {k: v for k, v in config.items() if k not in free}
            if reference is None:
                reference = (folder, kept, config)
            elif kept != reference[1]:
                differ = sorted(k for k in set(kept) | set(reference[1]) if kept.get(k) != reference[1].get(k))
                raise ValueError(f"{folder} and {reference[0]} differ in {differ}: not one variant's runs")
            per_seed[seed] = json.loads((folder / "eval.json").read_text())
            if "wall_time" not in per_seed[seed] and (folder / "metrics.jsonl").is_file():
                per_seed[seed]["wall_time"] = wall_time(folder)      # an evaluation made before it was recorded
            seeds_seen.add(seed)
        results["variants"][variant] = _variant_entry(variant, reference[2], per_seed) | {
            "runs": {str(s): str(f) for s, f in folders.items()}}
        results["steps"] = reference[2]["steps"]
    results["seeds"] = sorted(seeds_seen)
    _write(results, out)
    return results


def comparison_table(results: dict, columns: dict[str, str], digits: int = 3) -> str:
    """A Markdown table of ``mean +- std`` over seeds, one row per variant of a :func:`run_comparison` result.

    ``columns`` maps a summary key (e.g. ``"ratio_rotate"``) to its column header; a variant without that
    metric (the VAE has no fields, so no disentanglement score) shows a dash."""
    lines = ["| model | " + " | ".join(columns.values()) + " |", "|---" * (len(columns) + 1) + "|"]
    for variant, entry in results["variants"].items():
        cells = []
        for key in columns:
            stat = entry["summary"].get(key)
            cells.append("-" if stat is None else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}")
        lines.append(f"| {LABELS.get(variant, variant)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
