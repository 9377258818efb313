"""The committed runs (book/checkpoints): small, loadable with weights_only, and reproduced by their own command."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stabook import train

RUNS = sorted((Path(__file__).resolve().parents[1] / "book" / "checkpoints").iterdir())


@pytest.mark.parametrize("RUN", RUNS, ids=lambda p: p.name)
def test_checkpoint_is_small_and_loads(RUN):
    path = RUN / "checkpoint.pt"
    assert path.stat().st_size < 12 * 2**20
    model, state = train.load_model(RUN)
    assert state["step"] == train.preset(state["train_config"]["preset"]).steps
    assert state["command"] == (RUN / "COMMAND").read_text().strip()
    assert "optimizer" not in state
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("RUN", RUNS, ids=lambda p: p.name)
def test_the_command_reproduces_the_logged_metrics(RUN, tmp_path):
    command = shlex.split((RUN / "COMMAND").read_text().strip())
    assert command[:3] == ["python", "-m", "stabook"]
    out = subprocess.run([sys.executable, *command[1:], "--run-dir", str(tmp_path), "--max-steps", "20", "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    fresh = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    committed = [json.loads(line) for line in (RUN / "metrics.jsonl").read_text().splitlines()][: len(fresh)]
    assert [e["step"] for e in fresh] == [e["step"] for e in committed] == [10, 20]
    for a, b in zip(fresh, committed, strict=True):
        for key in ("loss", "recon", "kl_z0", "kl_flow", "kl_spike", "kl_slab"):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(b[key])), (key, a[key], b[key])
    assert torch.isfinite(torch.tensor(fresh[-1]["loss"]))
