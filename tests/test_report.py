"""The report module: names, targets met or missed, leads by the standard of evidence."""

import pytest

from stabook import report


def _results(sta, vae=None, dense=None, names=("rotate", "scale")):
    def variant(summary):
        return {"config": {"transformations": list(names)}, "summary": summary}

    out = {"variants": {"sta": variant(sta)}}
    if vae is not None:
        out["variants"]["vae"] = variant(vae)
    if dense is not None:
        out["variants"]["dense"] = variant(dense)
    return out


def s(mean, std=0.0, n=3):
    return {"mean": mean, "std": std, "n": n}


def test_every_results_key_has_one_name():
    assert report.quantity("ratio_x0_rotate") == "rotate: error over $x_0$"
    assert report.quantity("ratio_rotate") == "rotate: error over decoded $z_0$"
    assert report.quantity("recognition_floor_hue") == "hue: recognition floor"
    assert report.quantity("per_frame_floor_ratio_scale") == "scale: error over the per-frame floor"
    assert report.quantity("matched_share") == "matched share"
    assert not any("identity" in label for label in report.QUANTITIES.values())
    with pytest.raises(KeyError, match="no name"):
        report.quantity("nonsense")


def test_bounds_are_met_or_missed_by_the_mean_over_seeds():
    res = _results({"recognition_rotate": s(0.96), "recognition_scale": s(0.94),
                    "ratio_x0_rotate": s(0.25), "ratio_x0_scale": s(0.26)})
    targets = (report.Target("recognition_{name}", "at_least", 0.95), report.Target("ratio_x0_{name}", "at_most", 0.25))
    rows = report.check_targets(res, targets)
    assert [r["met"] for r in rows] == [True, False, True, False]      # a bound is met when reached exactly
    assert rows[0]["text"] == "0.96 ± 0.00" and rows[0]["goal"] == "≥ 0.95"
    assert report.tally(rows) == {"met": 2, "missed": 2, "unchecked": 0}
    table = report.targets_table(rows)
    assert table.count("\n") == 1 + len(rows) and "**missed**" in table


def test_a_lead_needs_two_standard_errors_and_the_right_direction():
    # STA 0.30 +- 0.01 against 0.40 +- 0.01 over 3 seeds: SE = 0.0082, z = -12: lower error, a lead
    res = _results({"ratio_x0_rotate": s(0.30, 0.01), "ratio_x0_scale": s(0.40, 0.01)},
                   vae={"ratio_x0_rotate": s(0.40, 0.01), "ratio_x0_scale": s(0.30, 0.01)})
    rows = report.check_targets(res, (report.Target("ratio_x0_{name}", "lead", other="vae"),))
    assert rows[0]["met"] is True and rows[0]["z"] == pytest.approx(-12.25, abs=0.01)
    assert rows[1]["met"] is False                                      # a finding, but the wrong way
    close = _results({"ratio_x0_rotate": s(0.30, 0.05), "ratio_x0_scale": s(0.3)},
                     vae={"ratio_x0_rotate": s(0.35, 0.05), "ratio_x0_scale": s(0.3)})
    assert report.lead(close, "ratio_x0_rotate", "vae")["met"] is False   # 1.2 SE: not a finding
    higher = _results({"sequence_nats_k100": s(-700, 5)}, vae={"sequence_nats_k100": s(-720, 5)})
    assert report.lead(higher, "sequence_nats_k100", "vae")["met"] is True    # a likelihood: higher is better


def test_what_cannot_be_checked_is_said_not_guessed():
    res = _results({"matched_share": s(0.9, 0.01), "own_fields": s(2 / 3)}, dense={"matched_share": s(0.5, 0, n=1)})
    rows = report.check_targets(res, (report.Target("matched_share", "lead", other="dense"),
                                      report.Target("own_fields", "every_seed"),
                                      report.Target("matched_share", "lead", other="vae"),
                                      report.Target("score", "at_least", 0.9)))
    assert [r["met"] for r in rows] == [None, False, None, None]
    assert rows[1]["text"] == "2 of 3 seeds" and rows[3]["text"] == "not measured"
    with pytest.raises(ValueError, match="needs other"):
        report.Target("matched_share", "lead")
    with pytest.raises(ValueError, match="numeric bound"):
        report.Target("matched_share", "at_least")
    with pytest.raises(ValueError, match="minutes must be"):
        report.cost_row(float("nan"))
    assert report.cost_row(24.9)["met"] and not report.cost_row(25.1)["met"]


def test_findings_against_chance_follow_the_binomial_tail():
    expected, within = report.by_chance(0, 20)
    assert expected == pytest.approx(20 * 0.0455, abs=1e-3) and within      # P(|z| > 2) = 4.55%
    assert report.by_chance(2, 20)[1] and not report.by_chance(4, 20)[1]     # P(X >= 4) = 1.1%
    with pytest.raises(ValueError, match="cannot exceed"):
        report.by_chance(3, 2)


def test_verdict_table_marks_findings_and_missing_numbers():
    res = _results({"ratio_x0_rotate": s(0.30, 0.01), "score": s(0.9, 0.01)},
                   vae={"ratio_x0_rotate": s(0.40, 0.01)}, dense={"ratio_x0_rotate": s(0.305, 0.01)})
    table = report.verdict_table(res, ["vae", "dense"], {"ratio_x0_rotate": "rotate", "score": "score"},
                                 {"sta": "STA", "vae": "VAE", "dense": "dense"})
    lines = table.splitlines()
    assert lines[0] == "| STA minus | VAE | dense |"
    assert lines[2] == "| rotate | **-0.10 (-12.2 SE)** | -0.01 (-0.6 SE) |"
    assert lines[3] == "| score | - | - |"
    with pytest.raises(KeyError, match="no 'score'"):
        report.verdict(res, "sta", "vae", "score")
