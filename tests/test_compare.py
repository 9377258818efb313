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


def _fake_run(folder, seed, steps=10, seconds=(1.0, 2.0), **changes):
    """A finished run folder as training writes it: config.json, metrics.jsonl and eval.json."""
    from stabook.config import preset

    config = preset("tiny").to_dict() | {"seed": seed, "run_dir": str(folder), "steps": steps, **changes}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    lines = [{"step": 5 * (i + 1), "loss": 1.0, "seconds": s} for i, s in enumerate(seconds)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    ev = {"equivariance": {"rotate": {"mae": 0.1 * (seed + 1), "identity_mae": 0.2, "identity_x0_mae": 0.4,
                                      "floor_mae": 0.05}},
          "equivariance_ratio": {"rotate": 0.5 * (seed + 1)},
          "disentanglement": {"score": 0.9, "matched_share": 0.8, "matching": {"0": 0, "1": 1},
                              # seed 0: both transformations' largest share is on field 1
                              "matrix": [[0.4, 0.6], [0.1, 0.9]] if seed == 0 else [[0.6, 0.4], [0.1, 0.9]]},
          "recognition": {"rotate": {"ratio": 0.7}}}
    (folder / "eval.json").write_text(json.dumps(ev))
    return folder


def test_existing_runs_are_collected_into_a_results_file(tmp_path):
    runs = {"sta": {s: _fake_run(tmp_path / f"a{s}", s) for s in (0, 1)}}
    out = tmp_path / "out" / "results.json"
    results = compare.collect_runs(runs, "tiny", command="test", out=out)
    assert json.loads(out.read_text()) == results and results["seeds"] == [0, 1] and results["steps"] == 10
    summary = results["variants"]["sta"]["summary"]
    assert summary["equivariance_rotate"]["mean"] == pytest.approx(0.15)
    assert summary["ratio_x0_rotate"]["mean"] == pytest.approx(0.375)       # 0.1 / 0.4 and 0.2 / 0.4
    assert summary["floor_ratio_rotate"]["mean"] == pytest.approx(3.0)      # 2 and 4
    assert summary["recognition_rotate"]["mean"] == pytest.approx(0.7)
    assert summary["own_fields"]["mean"] == pytest.approx(0.5)              # not on seed 0
    assert summary["wall_minutes"]["mean"] == pytest.approx(2.0 / 60)       # read from metrics.jsonl
    # runs of one variant must differ only in seed and bookkeeping
    runs["sta"][2] = _fake_run(tmp_path / "a2", 2, lr=0.5)
    with pytest.raises(ValueError, match=r"differ in \['lr'\]"):
        compare.collect_runs(runs, "tiny")
    with pytest.raises(ValueError, match="listed as seed 3"):
        compare.collect_runs({"sta": {3: runs["sta"][0]}}, "tiny")
    with pytest.raises(FileNotFoundError, match="eval.json is missing"):
        compare.collect_runs({"sta": {0: tmp_path}}, "tiny")
    with pytest.raises(ValueError, match="unknown variant"):
        compare.collect_runs({"gan": {}}, "tiny")


def test_wall_time_adds_the_segments_of_a_resumed_run(tmp_path):
    from stabook.runs import wall_time

    run = _fake_run(tmp_path / "r", 0, seconds=(3.0, 7.0, 2.0, 5.0))     # resumed after the second entry
    assert wall_time(run) == {"seconds": 12.0, "segments": 2, "steps": 20}
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ValueError, match="no logged step"):
        wall_time(run)
