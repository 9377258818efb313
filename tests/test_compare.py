import json

import pytest
from test_baselines import SMALL_SET

from stabook import compare


def test_comparison_trains_every_variant_once_and_summarises(tmp_path):
    out = tmp_path / "results.json"
    kwargs = dict(variants=["sta", "dense", "vae"], steps=2, runs_dir=tmp_path / "runs", out=out, progress=False,
                  overrides=[s for s in SMALL_SET if not s.startswith(("n_potential", "n_rotational"))],
                  command="test")
    results = compare.run_comparison("tiny", seeds=(0, 1), **kwargs)
    saved = json.loads(out.read_text())
    assert saved["seeds"] == [0, 1] and saved["steps"] == 2 and set(saved["variants"]) == {"sta", "dense", "vae"}
    sta = saved["variants"]["sta"]["summary"]
    ratios = [saved["variants"]["sta"]["per_seed"][s]["equivariance_ratio"]["rotate"] for s in ("0", "1")]
    assert sta["ratio_rotate"]["mean"] == pytest.approx(sum(ratios) / 2)
    assert sta["ratio_rotate"]["std"] == pytest.approx(abs(ratios[0] - ratios[1]) / 2**0.5)
    assert "score" in sta and "score" not in saved["variants"]["vae"]["summary"]
    assert results["variants"]["dense"]["config"]["model"]["speeds"] == "dense"
    stamp = (tmp_path / "runs" / "sta-seed0" / "checkpoint.pt").stat().st_mtime_ns
    compare.run_comparison("tiny", seeds=(0,), **kwargs)                  # finished runs are reused
    assert (tmp_path / "runs" / "sta-seed0" / "checkpoint.pt").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown variants"):
        compare.run_comparison("tiny", seeds=(0,), variants=["gan"], runs_dir=tmp_path / "x")


def test_seeds_are_parsed_with_clear_errors():
    assert compare.parse_seeds("0, 1,2") == [0, 1, 2] and compare.parse_seeds((3,)) == [3]
    for bad, match in (("abc", "comma-separated integers"), ("", "at least one"), ("1,-2", ">= 0"),
                       ("1,1", "must not repeat")):
        with pytest.raises(ValueError, match=match):
            compare.parse_seeds(bad)
