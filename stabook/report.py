"""Chapters 6 and 7's report: the book's targets checked against a results file, and the verdicts of a comparison.

A results file (``python -m stabook compare``, or ``tools/make_book_results.py``) holds, per variant, the
evaluation of every seed and a summary (mean, standard deviation over seeds, count) of every number
:func:`stabook.compare.flatten_metrics` reads from an evaluation. This module says, once, what the book calls
those numbers (:data:`QUANTITIES`), which targets the book sets (:data:`BOOK_TARGETS`), whether a results file
meets them (:func:`check_targets`) and whether one model is ahead of another by the book's standard of evidence
(:func:`lead`: a difference beyond two standard errors, :func:`stabook.metrics.difference_verdict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .metrics import difference_verdict, own_fields

__all__ = ["flatten_metrics", "QUANTITIES", "Target", "BOOK_TARGETS", "BOOK_MINUTES", "quantity", "stat", "pm", "lead",
           "check_targets", "cost_row", "targets_table", "tally", "seed_table", "validation_table", "verdict",
           "verdict_table", "by_chance"]

#: what the book calls each number of a results file; ``{name}`` is a transformation
QUANTITIES = {
    "ratio_x0_{name}": "error over $x_0$",                      # the rollout's error / predicting x_t = x_0
    "ratio_{name}": "error over decoded $z_0$",                 # / decoding z_0 at every step
    "floor_ratio_{name}": "error over the $x_0$ floor",         # / the error of decoding the encoding of x_0
    "per_frame_floor_ratio_{name}": "error over the per-frame floor",   # / the decoder's best drawing of each frame
    "recognition_{name}": "recognition ratio",                # digits read in predictions / in the true frames
    "recognition_floor_{name}": "recognition floor",          # the same for the reconstruction of x_0
    "matched_share": "matched share",                         # speed on the matched fields
    "matched_displacement_share": "matched displacement share",   # speed x field norm on the matched fields
    "score": "dominance score",                               # steps on which the matched field moves fastest
    "own_fields": "own field per transformation",             # share of seeds on which the largest shares differ
    "sequence_nats_k100": "sequence IWAE (k = 100)",
    "frame_nats_k100": "frame IWAE (k = 100)",
    "wall_minutes": "wall minutes",
}


def flatten_metrics(result: dict) -> dict[str, float]:
    """The numbers of an evaluation (:func:`stabook.metrics.evaluate`) that the comparison table reports."""
    row = {}
    for name, v in result["equivariance"].items():
        row[f"equivariance_{name}"] = v["mae"]
        row[f"identity_{name}"] = v["identity_mae"]
        row[f"ratio_{name}"] = result["equivariance_ratio"][name]
        if "identity_x0_mae" in v:                  # evaluations since the x_t = x_0 baseline was added
            row[f"identity_x0_{name}"] = v["identity_x0_mae"]
            row[f"ratio_x0_{name}"] = v["mae"] / v["identity_x0_mae"]
        if v.get("floor_mae"):
            row[f"floor_ratio_{name}"] = v["mae"] / v["floor_mae"]
        if v.get("per_frame_floor_mae"):
            row[f"per_frame_floor_ratio_{name}"] = v["mae"] / v["per_frame_floor_mae"]
    for name, v in result.get("recognition", {}).items():
        row[f"recognition_{name}"] = v["ratio"]
        if "floor_ratio" in v:
            row[f"recognition_floor_{name}"] = v["floor_ratio"]
    if result.get("disentanglement"):
        row["score"] = result["disentanglement"]["score"]
        row["matched_share"] = result["disentanglement"]["matched_share"]
        if "matched_displacement_share" in result["disentanglement"]:
            row["matched_displacement_share"] = result["disentanglement"]["matched_displacement_share"]
        if "matrix" in result["disentanglement"]:
            row["own_fields"] = float(own_fields(result["disentanglement"]))
    if "wall_time" in result:
        row["wall_minutes"] = result["wall_time"]["seconds"] / 60
    for kind in ("frame", "sequence"):
        for k, v in result.get("likelihood", {}).get(kind, {}).items():
            row[f"{kind}_nats_k{k}"] = v["nats"]
            row[f"{kind}_bpd_k{k}"] = v["bits_per_dim"]
    return row


def quantity(key: str) -> str:
    """The book's name of a results key: ``"ratio_x0_rotate"`` -> ``"rotate: error over $x_0$"``."""
    if key in QUANTITIES:
        return QUANTITIES[key]
    for pattern, label in QUANTITIES.items():
        prefix = pattern.removesuffix("{name}")
        if pattern.endswith("{name}") and key.startswith(prefix) and "_" not in key[len(prefix):]:
            return f"{key[len(prefix):]}: {label}"
    raise KeyError(f"no name for the results key {key!r}")


@dataclass(frozen=True)
class Target:
    """One target of the book. ``kind``: ``"at_most"`` or ``"at_least"`` a ``bound`` on the mean over seeds;
    ``"every_seed"``: the value is 1 on every seed; ``"lead"``: STA ahead of ``other`` beyond two standard errors
    (lower is better for error ratios, higher for everything else). ``key`` may hold ``{name}``, one target per
    transformation."""

    key: str
    kind: str
    bound: float | None = None
    other: str | None = None

    def __post_init__(self):
        if self.kind not in ("at_most", "at_least", "every_seed", "lead"):
            raise ValueError(f"kind must be at_most, at_least, every_seed or lead, got {self.kind!r}")
        if self.kind in ("at_most", "at_least") and not isinstance(self.bound, (int, float)):
            raise ValueError(f"a {self.kind} target needs a numeric bound, got {self.bound!r}")
        if self.kind == "lead" and not self.other:
            raise ValueError("a lead target needs other=, the variant STA must beat")

    @property
    def lower_is_better(self) -> bool:
        return "ratio" in self.key

    def goal(self) -> str:
        """The target as the book's table states it."""
        if self.kind == "at_most":
            return f"≤ {self.bound:g}"
        if self.kind == "at_least":
            return f"≥ {self.bound:g}"
        if self.kind == "every_seed":
            return "every seed"
        other = MODEL_NAMES.get(self.other, self.other)
        return f"{'lower' if self.lower_is_better else 'higher'} than {other}, > 2 SE"


#: the targets of the book preset (held-out test digits, three seeds)
BOOK_TARGETS = (
    Target("recognition_{name}", "at_least", 0.95),
    Target("ratio_x0_{name}", "at_most", 0.25),
    Target("per_frame_floor_ratio_{name}", "at_most", 1.3),
    Target("matched_share", "at_least", 0.85),
    Target("own_fields", "every_seed"),
    Target("ratio_x0_{name}", "lead", other="vae"),
    Target("sequence_nats_k100", "lead", other="vae"),
    Target("matched_share", "lead", other="dense"),
)

#: how the targets name the models STA is compared with
MODEL_NAMES = {"vae": "VAE", "dense": "dense speeds", "potential_only": "potential only",
               "rotational_only": "rotational only"}

#: the cost target: minutes per seed on one quiet CPU thread (seconds per iteration x steps)
BOOK_MINUTES = 25.0


def stat(results: dict, variant: str, key: str) -> dict | None:
    """``{"mean", "std", "n"}`` of ``key`` for ``variant`` in a results file, or None where it was not measured."""
    return results.get("variants", {}).get(variant, {}).get("summary", {}).get(key)


def pm(results: dict, variant: str, key: str, digits: int = 2) -> str:
    """``"0.43 ± 0.02"``: mean ± standard deviation over seeds ("not measured" where absent)."""
    s = stat(results, variant, key)
    return "not measured" if s is None else f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def lead(results: dict, key: str, other: str, variant: str = "sta") -> dict | None:
    """Is ``variant`` ahead of ``other`` on ``key``? The verdict of :func:`stabook.metrics.difference_verdict`
    (``variant - other``) plus ``ahead`` (the difference points the right way) and ``met`` (ahead and a
    finding). None when either side has fewer than two seeds."""
    a, b = stat(results, variant, key), stat(results, other, key)
    if a is None or b is None or min(a["n"], b["n"]) < 2:
        return None
    v = difference_verdict(a["mean"], a["std"], a["n"], b["mean"], b["std"], b["n"])
    ahead = v["difference"] < 0 if "ratio" in key else v["difference"] > 0
    return {**v, "ahead": bool(ahead), "met": bool(ahead and v["finding"])}


def _names(results: dict) -> list[str]:
    sta = results["variants"]["sta"]
    return list(sta["config"]["transformations"])


def check_targets(results: dict, targets=BOOK_TARGETS, variant: str = "sta") -> list[dict]:
    """One row per target (per transformation where the key holds ``{name}``): ``key``, ``label`` (the book's
    name), ``goal``, ``value`` (the mean, or the difference for a lead), ``text`` (what the table prints) and
    ``met``: True, False, or None where the results file cannot say (not measured, too few seeds)."""
    rows = []
    for target in targets:
        keys = ([target.key.format(name=n) for n in _names(results)] if "{name}" in target.key else [target.key])
        for key in keys:
            row = {"key": key, "label": quantity(key), "goal": target.goal(), "kind": target.kind,
                   "other": target.other, "value": None, "met": None}
            s = stat(results, variant, key)
            if target.kind == "lead":
                v = lead(results, key, target.other, variant)
                if v is None:
                    row["text"] = f"not checked: fewer than two seeds of {MODEL_NAMES.get(target.other)} or STA"
                else:
                    digits = 1 if "nats" in key else 3
                    row |= {"value": v["difference"], "z": v["z"], "met": v["met"],
                            "text": f"STA − {MODEL_NAMES.get(target.other, target.other)}: "
                                    f"{v['difference']:+.{digits}f} ({v['z']:+.1f} SE)"}
            elif s is None:
                row["text"] = "not measured"
            elif target.kind == "every_seed":
                seeds = round(s["mean"] * s["n"])
                row |= {"value": s["mean"], "met": math.isclose(s["mean"], 1.0), "text": f"{seeds} of {s['n']} seeds"}
            else:
                met = s["mean"] <= target.bound if target.kind == "at_most" else s["mean"] >= target.bound
                row |= {"value": s["mean"], "met": bool(met), "text": f"{s['mean']:.2f} ± {s['std']:.2f}"}
            rows.append(row)
    return rows


def cost_row(minutes: float, bound: float = BOOK_MINUTES) -> dict:
    """The cost target's row: minutes per seed on one quiet CPU thread against ``bound``."""
    if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"minutes must be a finite number > 0, got {minutes!r}")
    return {"key": "quiet_minutes", "label": "minutes per seed, one quiet CPU thread", "goal": f"≤ {bound:g}",
            "kind": "at_most", "other": None, "value": minutes, "met": minutes <= bound, "text": f"{minutes:.1f}"}


MARK = {True: "met", False: "**missed**", None: "not checked"}


def targets_table(rows: list[dict]) -> str:
    """The rows of :func:`check_targets` as a Markdown table: target, STA's value, goal, met or missed."""
    lines = ["| target | STA: mean ± std over seeds, or its lead | goal | status |", "|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['text']} | {r['goal']} | {MARK[r['met']]} |" for r in rows]
    return "\n".join(lines)


def tally(rows: list[dict]) -> dict[str, int]:
    """How many rows are met, missed and not checked."""
    return {"met": sum(r["met"] is True for r in rows), "missed": sum(r["met"] is False for r in rows),
            "unchecked": sum(r["met"] is None for r in rows)}


def seed_table(results: dict, keys, variant: str = "sta", digits: int = 2) -> str:
    """A Markdown table of one variant's numbers per seed and their mean ± std: one row per results key (named by
    :func:`quantity`), one column per seed."""
    entry = results["variants"][variant]
    seeds = sorted(entry["per_seed"], key=int)
    rows = {s: flatten_metrics(entry["per_seed"][s]) for s in seeds}
    lines = ["| | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
             "|---|" + "---:|" * (len(seeds) + 1)]
    for key in keys:
        cells = [f"{rows[s][key]:.{digits}f}" if key in rows[s] else "–" for s in seeds]
        lines.append(f"| {quantity(key)} | " + " | ".join(cells) + f" | {pm(results, variant, key, digits)} |")
    return "\n".join(lines)


def validation_table(trials: list[dict], names, base: dict | None = None) -> str:
    """The validation log (``tools/validation_log.py``) as a Markdown table: each trial's settings that differ
    from ``base`` (default: the first trial), seed, steps, and per transformation (``a / b / c`` in the order of
    ``names``) the error over x_0, the recognition ratio, then the matched share and the first latent's KL over
    the last 1,000 training steps where the log has it."""
    base = base or trials[0]

    def change(trial):
        if trial is base:
            return "tiny with " + ", ".join(f"`{k}={v}`" for k, v in trial["changed_from_tiny"].items())
        changed = {k: v for k, v in trial["changed_from_tiny"].items()
                   if base["changed_from_tiny"].get(k) != v and k != "preset"}
        changed |= {k: "default" for k in base["changed_from_tiny"] if k not in trial["changed_from_tiny"]}
        return ", ".join(f"`{k}={v}`" for k, v in changed.items()) or "the same settings"

    def three(trial, key):
        values = [trial["equivariance"][n].get(key) for n in names]
        return " / ".join("–" if v is None else f"{v:.2f}" for v in values)

    lines = ["| trial | change from the first | seed | steps | error over $x_0$ | recognition ratio "
             "| matched share | KL($z_0$), nats |", "|---|---|---:|---:|---|---|---:|---:|"]
    for t in trials:
        kl = f"{t['train_kl_z0']:.1f}" if "train_kl_z0" in t else "–"
        lines.append(f"| {t['run']} | {change(t)} | {t['seed']} | {t['steps']:,} | {three(t, 'error_over_x0')} "
                     f"| {three(t, 'recognition_ratio')} | {t['matched_share']:.2f} | {kl} |")
    return "\n".join(lines)


def verdict(results: dict, a: str, b: str, key: str) -> dict:
    """:func:`stabook.metrics.difference_verdict` of variant ``a`` minus variant ``b`` on ``key``, read from a
    results file's summaries. A KeyError names what the file lacks."""
    sa, sb = stat(results, a, key), stat(results, b, key)
    if sa is None or sb is None:
        raise KeyError(f"the results file has no {key!r} for {a if sa is None else b!r}")
    return difference_verdict(sa["mean"], sa["std"], sa["n"], sb["mean"], sb["std"], sb["n"])


def verdict_table(results: dict, others, keys: dict[str, str], labels: dict[str, str], variant: str = "sta",
                  digits: int = 2) -> str:
    """A Markdown table of ``variant`` minus each of ``others`` on each key of ``keys`` (key -> row label), as
    the difference and its size in standard errors; findings (beyond two standard errors) in bold; a dash where a
    model lacks the number. ``labels`` names the models."""
    lines = [f"| {labels.get(variant, variant)} minus | " + " | ".join(labels.get(o, o) for o in others) + " |",
             "|---" * (len(others) + 1) + "|"]
    for key, label in keys.items():
        row = []
        for other in others:
            if stat(results, other, key) is None or stat(results, variant, key) is None:
                row.append("-")
                continue
            v = verdict(results, variant, other, key)
            cell = f"{v['difference']:+.{digits}f} ({v['z']:+.1f} SE)"
            row.append(f"**{cell}**" if v["finding"] else cell)
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def by_chance(count: int, n: int, threshold: float = 2.0) -> tuple[float, bool]:
    """Findings against chance: if no model differed (each difference's z standard normal), how many of ``n``
    differences would pass ``threshold`` standard errors (``n p``, ``p = P(|z| > threshold)``), and whether
    ``count`` findings are within what chance gives (the binomial tail ``P(X >= count) > 0.05``)."""
    for name, value in (("count", count), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if count > n:
        raise ValueError(f"count ({count}) cannot exceed n ({n})")
    p = math.erfc(threshold / math.sqrt(2))
    tail = sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(count, n + 1))
    return n * p, tail > 0.05
