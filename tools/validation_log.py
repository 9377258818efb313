"""Collect validation-split evaluations of trial runs into one results file (the log of what was tried).

    python tools/validation_log.py runs/trial-a runs/trial-b --output book/results/book-preset-validation.json

Each run must hold ``eval-val.json`` (``python -m stabook eval RUN --split val``). For each run the file records
the settings that differ from the ``tiny`` preset, the steps, the training wall time (summed over resumed
segments; one thread, often shared with other jobs) and, per transformation, the equivariance error against the
true identity (predicting ``x_t = x_0``), against decoding ``z_0``, and against the model's own floor (its error
on ``x_0``), the digit classifier's recognition ratio (``eval --recognition``), the matched share and whether each
transformation's largest share lies on its own field (``stabook.metrics.own_fields``).
"""

import argparse
import json
from pathlib import Path

from stabook.config import TrainConfig, preset
from stabook.metrics import own_fields
from stabook.runs import read_metrics, wall_time


def summarise(run: Path) -> dict:
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    base = preset("tiny")
    a, b = base.to_dict(), config.to_dict()
    changed = {k: b[k] for k in b if k not in ("model", "run_dir", "seed", "steps") and a[k] != b[k]}
    changed.update({f"model.{k}": v for k, v in b["model"].items() if a["model"][k] != v})
    ev = json.loads((run / "eval-val.json").read_text())
    rows = {}
    for name, v in ev["equivariance"].items():
        rows[name] = {"error_over_x0": v["mae"] / v["identity_x0_mae"], "error_over_z0": v["mae"] / v["identity_mae"],
                      "error_over_floor": v["mae"] / v["floor_mae"], "mae": v["mae"]}
        if "per_frame_floor_mae" in v:
            rows[name]["error_over_per_frame_floor"] = v["mae"] / v["per_frame_floor_mae"]
        if name in ev.get("recognition", {}):
            rows[name]["recognition_ratio"] = ev["recognition"][name]["ratio"]
            if "floor_ratio" in ev["recognition"][name]:
                rows[name]["recognition_floor"] = ev["recognition"][name]["floor_ratio"]
    d = ev["disentanglement"]
    wall = wall_time(run)
    return {"run": run.name, "seed": config.seed, "steps": wall["steps"], "wall_minutes": wall["seconds"] / 60,
            "changed_from_tiny": changed, "equivariance": rows, "matched_share": d["matched_share"],
            "dominance_score": d["score"], "own_fields": own_fields(d), "split": "val",
            **({"matched_displacement_share": d["matched_displacement_share"]}
               if "matched_displacement_share" in d else {}),
            **_objective(run)}


def _objective(run: Path, last: int = 1000) -> dict:
    """KL(z_0), the reconstruction term and the flow KLs (nats per sequence) averaged over the last ``last`` logged
    steps of training: what the first latent carries and what the flow terms cost."""
    entries, _ = read_metrics(run)
    end = entries[-1]["step"]
    tail = [e for e in entries if e["step"] > end - last]
    return {f"train_{k}": sum(e[k] for e in tail) / len(tail) for k in ("kl_z0", "recon", "kl_flow")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--output", required=True)
    parser.add_argument("--note", action="append", default=[], metavar="RUN=TEXT", help="a remark on a run")
    args = parser.parse_args()
    notes = dict(n.split("=", 1) for n in args.note)
    out = Path(args.output)
    log = json.loads(out.read_text()) if out.exists() else {"trials": []}
    for run in map(Path, args.runs):
        entry = summarise(run)
        if run.name in notes:
            entry["note"] = notes[run.name]
        log["trials"] = [t for t in log["trials"] if t["run"] != entry["run"]] + [entry]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(log, indent=1))
    for t in log["trials"]:
        eq = t["equivariance"]
        print(f"{t['run']:24s} {t['steps']:6d} steps {t['wall_minutes']:5.1f} min | x0 " +
              " ".join(f"{eq[n]['error_over_x0']:.2f}" for n in eq) + " | floor " +
              " ".join(f"{eq[n]['error_over_floor']:.2f}" for n in eq) + " | digit " +
              " ".join(f"{eq[n].get('recognition_ratio', float('nan')):.2f}" for n in eq) +
              f" | share {t['matched_share']:.2f} own fields {t.get('own_fields', '?')}")


if __name__ == "__main__":
    main()
