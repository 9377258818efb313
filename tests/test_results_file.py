"""The comparison results that chapter 7 reads (book/results/*.json) are complete and consistent."""

import json
import math
from pathlib import Path

import pytest

from stabook.baselines import VARIANTS
from stabook.compare import summarise

RESULTS = Path(__file__).resolve().parents[1] / "book" / "results"
FILES = {"tiny.json": set(VARIANTS), "tiny-5000.json": set(VARIANTS), "book.json": {"sta", "vae", "dense"}}


@pytest.fixture(params=sorted(FILES), scope="module")
def named_results(request):
    return request.param, json.loads((RESULTS / request.param).read_text())


def test_results_name_the_command_that_made_them(named_results):
    name, results = named_results
    if name == "book.json":           # collected from the committed runs and those trained beside them
        assert results["command"] == "python tools/make_book_results.py" and results["preset"] == "book"
        for entry in results["variants"].values():
            assert entry["config"]["preset"] == "book" and set(entry["runs"]) == set(entry["per_seed"])
    else:
        assert results["command"].startswith("python -m stabook compare")
        assert f"--output book/results/{name}" in results["command"]
        assert results["preset"] == "tiny"
    assert results["created"]


def test_every_variant_has_enough_seeds(named_results):
    name, results = named_results
    assert len(results["seeds"]) >= 3
    assert set(results["variants"]) == FILES[name]
    for variant, entry in results["variants"].items():
        # the book preset: three seeds of STA, two of each model it is compared with (enough for a standard error)
        wanted = 3 if name != "book.json" or variant == "sta" else 2
        assert len(entry["per_seed"]) >= wanted and set(entry["per_seed"]) <= {str(s) for s in results["seeds"]}
        assert entry["config"]["steps"] == results["steps"]


def test_summaries_are_recomputed_from_the_seeds(named_results):
    for entry in named_results[1]["variants"].values():
        again = summarise({int(s): r for s, r in entry["per_seed"].items()})
        # every stored statistic is recomputed; a file written before a metric was added lacks only that one
        assert set(entry["summary"]) <= set(again) and "ratio_rotate" in entry["summary"]
        for key, stat in entry["summary"].items():
            stat = again[key]
            assert math.isclose(stat["mean"], entry["summary"][key]["mean"], rel_tol=1e-12, abs_tol=1e-12)
            assert math.isclose(stat["std"], entry["summary"][key]["std"], rel_tol=1e-12, abs_tol=1e-12)


def test_more_samples_give_a_higher_bound(named_results):
    for entry in named_results[1]["variants"].values():
        for r in entry["per_seed"].values():
            for kind in ("frame", "sequence"):
                like = r["likelihood"][kind]
                assert like["100"]["nats"] > like["1"]["nats"]      # by far more than Monte Carlo noise
