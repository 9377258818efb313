import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stabook import runs
from stabook import train as training

SMALL = ["latent_dim=4", "n_potential=2", "n_rotational=1", "field_hidden=8", "net_width=8", "net_hidden=32",
         "posterior_width=8", "posterior_hidden=32", "T=2", "batch_size=4", "eval_sequences=4", "log_every=1",
         "device=cpu"]


def _config(run_dir, *extra):
    return training.apply_overrides(training.preset("tiny"), SMALL + [f"run_dir={run_dir}", *extra])


def _params(run_dir):
    return runs.load_checkpoint(Path(run_dir) / "checkpoint.pt")["model"]


def test_presets_and_overrides():
    tiny, mnist = training.preset("tiny"), training.preset("mnist")
    assert tiny.dataset == "digits" and tiny.model.latent_dim == 16
    assert mnist.model.latent_dim == 324 and mnist.batch_size == 128 and mnist.T == 8
    cfg = training.apply_overrides(tiny, ["lr=0.01", "model.latent_dim=8", "straight_through=false",
                                          "transformations=rotate,hue"])
    assert cfg.lr == 0.01 and cfg.model.latent_dim == 8 and cfg.model.straight_through is False
    assert cfg.transformations == ("rotate", "hue")
    assert training.TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        training.preset("huge")
    with pytest.raises(ValueError, match="unknown setting 'colour'"):
        training.apply_overrides(tiny, ["colour=red"])
    with pytest.raises(ValueError, match="key=value"):
        training.apply_overrides(tiny, ["lr"])


def test_resume_is_exact(tmp_path):
    full = _config(tmp_path / "full", "steps=6", "ckpt_every=3")
    training.train(full, progress=False)
    part = _config(tmp_path / "part", "steps=6", "ckpt_every=3")
    training.train(part, progress=False, max_steps=3)
    assert runs.load_checkpoint(tmp_path / "part" / "checkpoint.pt")["step"] == 3
    training.train(part, resume=True, progress=False)
    a, b = _params(tmp_path / "full"), _params(tmp_path / "part")
    for key in a:
        assert torch.equal(a[key], b[key]), key
    losses = lambda d: [json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(tmp_path / "full") == losses(tmp_path / "part")
    evaluation = json.loads((tmp_path / "part" / "eval.json").read_text())
    assert set(evaluation["equivariance"]) == {"rotate", "scale", "hue"}


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    runs.save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def interrupted(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runs.save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    state = runs.load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_resume_with_another_configuration_is_refused(tmp_path):
    training.train(_config(tmp_path, "steps=2"), progress=False)
    with pytest.raises(ValueError, match="another model configuration"):
        training.train(_config(tmp_path, "steps=4", "latent_dim=6"), resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        training.train(_config(tmp_path / "empty", "steps=4"), resume=True, progress=False)


def _run(args, env=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_ddp_with_gloo_equals_one_process(tmp_path):
    args = ["-m", "stabook", "train", "--quiet", "--steps", "2"] + [x for s in SMALL for x in ("--set", s)]
    single = _run(args + ["--run-dir", str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr
    multi = _run(["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517"] + args
                 + ["--run-dir", str(tmp_path / "ddp")], env={"STABOOK_DDP_BACKEND": "gloo"})
    assert multi.returncode == 0, multi.stderr[-3000:]
    a, b = _params(tmp_path / "single"), _params(tmp_path / "ddp")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_cli_eval_writes_json_and_reports_errors(tmp_path):
    run = tmp_path / "run"
    args = ["-m", "stabook", "train", "--quiet", "--steps", "1", "--run-dir", str(run)]
    assert _run(args + [x for s in SMALL for x in ("--set", s)]).returncode == 0
    out = _run(["-m", "stabook", "eval", str(run), "--n", "4", "--output", str(tmp_path / "e.json")])
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    assert 0 <= result["disentanglement"]["score"] <= 1
    bad = _run(["-m", "stabook", "train", "--preset", "huge"])
    assert bad.returncode == 2 and "unknown preset 'huge'" in bad.stderr


def test_non_finite_gradients_skip_the_update(tmp_path, monkeypatch):
    real_clip = torch.nn.utils.clip_grad_norm_
    calls = []

    def clip(params, max_norm, *args, **kwargs):
        norm = real_clip(params, max_norm, *args, **kwargs)
        calls.append(1)
        return torch.tensor(float("nan")) if len(calls) == 2 else norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    training.train(_config(tmp_path, "steps=3"), progress=False)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [entry["skipped_updates"] for entry in logged] == [0, 1, 1]
    assert all(torch.isfinite(v).all() for v in _params(tmp_path).values())


def test_cosine_learning_rate_schedule_and_exact_resume(tmp_path):
    config = _config(tmp_path / "full", "steps=6", "ckpt_every=3", "lr_schedule=cosine", "lr_final=0.1")
    rates = [config.learning_rate(s) for s in range(7)]
    assert rates[0] == config.lr and abs(rates[6] - 0.1 * config.lr) < 1e-12
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert training.preset("tiny").learning_rate(1234) == training.preset("tiny").lr      # constant by default
    with pytest.raises(ValueError, match="lr_schedule must be"):
        _config(tmp_path, "lr_schedule=step")
    training.train(config, progress=False)
    part = _config(tmp_path / "part", "steps=6", "ckpt_every=3", "lr_schedule=cosine", "lr_final=0.1")
    training.train(part, progress=False, max_steps=3)
    training.train(part, resume=True, progress=False)
    a, b = _params(tmp_path / "full"), _params(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = runs.load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(config.learning_rate(5))
