import json
from types import SimpleNamespace

import pytest
import torch
from conftest import digit_sequences
from torch.distributions import Normal, kl_divergence

from stabook import baselines
from stabook import train as training
from stabook.__main__ import main
from stabook.model import STA, STAConfig

SMALL = dict(latent_dim=4, n_potential=2, n_rotational=1, field_hidden=8, net_width=8, net_hidden=32,
             posterior_width=8, posterior_hidden=32)
SMALL_SET = ["latent_dim=4", "n_potential=2", "n_rotational=1", "field_hidden=8", "net_width=8", "net_hidden=32",
             "posterior_width=8", "posterior_hidden=32", "T=2", "batch_size=4", "eval_sequences=4", "log_every=1",
             "device=cpu", "eval_k=1,2"]


@pytest.fixture(scope="module")
def frames():
    return digit_sequences(4)


def test_vae_terms_and_summary(frames):
    torch.manual_seed(0)
    vae = baselines.FrameVAE(STAConfig(**SMALL))
    out = vae(frames)
    assert out.recon.shape == out.kl.shape == (4, 4) and out.x_hat.shape == frames.shape
    torch.testing.assert_close(out.objective, (out.recon - out.kl).sum(1))
    assert (out.kl >= 0).all() and (out.recon <= 0).all()
    sta_keys = set(STA(STAConfig(**SMALL))(frames).summary())
    assert set(out.summary()) == sta_keys
    with pytest.raises(ValueError, match="frames must have shape"):
        vae(frames[:, :, :1])


def test_vae_noise_is_sharded_like_sta(frames):
    torch.manual_seed(0)
    vae = baselines.FrameVAE(STAConfig(**SMALL))
    torch.manual_seed(5)
    full = vae(frames, noise_batch=4, noise_offset=0).objective
    torch.manual_seed(5)
    part = vae(frames[2:], noise_batch=4, noise_offset=2).objective
    torch.testing.assert_close(part, full[2:])
    with pytest.raises(ValueError, match="noise_batch must cover this shard"):
        vae(frames, noise_batch=1)
    with pytest.raises(ValueError, match="noise_offset needs noise_batch"):
        vae(frames, noise_offset=1)


def test_dense_speeds_are_signed_gaussians(frames):
    torch.manual_seed(0)
    model = STA(STAConfig(**SMALL, speeds="dense", dense_sigma=0.5))
    out = model(frames)
    post = model.posterior(frames)
    assert (out.kl_spike == 0).all() and (out.rho == 1).all()
    assert (out.speeds < 0).any() and (out.speeds > 0).any()
    expected = kl_divergence(Normal(post.mu, post.log_sigma.exp()), Normal(0.0, 0.5)).sum((1, 2))
    torch.testing.assert_close(out.kl_slab, expected)
    speeds = model.infer_speeds(frames[:, 0], frames[:, 1])
    torch.testing.assert_close(speeds, model.posterior.pair(frames[:, 0], frames[:, 1]).mu)
    with pytest.raises(ValueError, match="speeds must be 'sparse' or 'dense'"):
        STAConfig(speeds="none")


def test_build_model():
    assert isinstance(baselines.build_model("vae", STAConfig(**SMALL)), baselines.FrameVAE)
    assert isinstance(baselines.build_model("sta", STAConfig(**SMALL)), STA)
    with pytest.raises(ValueError, match="model_kind must be one of"):
        baselines.build_model("gan", STAConfig(**SMALL))
    with pytest.raises(ValueError, match="model_kind must be one of"):
        training.apply_overrides(training.preset("tiny"), ["model_kind=gan"])


class _LinearEncoder:
    """A test double whose encoder reads the first ``D`` pixels of the red channel."""

    def __init__(self, D):
        self.D = D

    def encode(self, x):
        mu = x[:, 0].flatten(1)[:, : self.D]
        return mu, torch.zeros_like(mu)


def test_fit_directions_recovers_the_direction_of_motion():
    torch.manual_seed(0)
    D = 5
    d = torch.tensor([0.0, 3.0, 0.0, -4.0, 0.0]) / 5
    start = torch.rand(30, 1, D)
    steps = torch.rand(30, 4, 1).cumsum(1)                      # positive speeds, different per step
    mu = torch.cat([start, start + steps * d], 1)               # [30, 5, D]
    frames = torch.zeros(30, 5, 3, 28, 28)
    frames[:, :, 0].view(30, 5, -1)[..., :D] = mu
    found = baselines.fit_directions(_LinearEncoder(D), {"rotate": frames})["rotate"]
    torch.testing.assert_close(found, d, atol=1e-5, rtol=0)
    # the rollout along it reproduces the encodings exactly, as it should for motion along one direction
    def decode(z):
        x = torch.zeros(z.shape[0], 3, 28, 28)
        x[:, 0].view(z.shape[0], -1)[:, :D] = z
        return x

    model = SimpleNamespace(encode=_LinearEncoder(D).encode, decode=decode, config=SimpleNamespace(latent_dim=D))
    x_hat, speeds, *_ = baselines.FrameVAE.rollout(model, frames, found)
    torch.testing.assert_close(x_hat, frames, atol=1e-5, rtol=0)
    torch.testing.assert_close(speeds[..., 0], (steps[:, :, 0] - torch.cat([torch.zeros(30, 1), steps[:, :-1, 0]], 1)))


def test_a_vae_trains_with_the_same_code_and_evaluates(tmp_path):
    config = training.apply_overrides(training.preset("tiny"), SMALL_SET + [f"run_dir={tmp_path}", "steps=3",
                                                                            "model_kind=vae"])
    summary = training.train(config, progress=False)
    assert summary["eval"]["model"] == "vae" and summary["eval"]["disentanglement"] is None
    assert set(summary["eval"]["likelihood"]["frame"]) == {"1", "2"}
    model, _ = training.load_model(tmp_path)
    assert isinstance(model, baselines.FrameVAE)
    sta_config = training.apply_overrides(config, ["model_kind=sta", "steps=6"])
    with pytest.raises(ValueError, match="another model configuration"):
        training.train(sta_config, resume=True, progress=False)


def test_eval_command_writes_every_metric_as_json(tmp_path, capsys):
    config = training.apply_overrides(training.preset("tiny"), SMALL_SET + [f"run_dir={tmp_path}", "steps=2",
                                                                            "eval_k=", "log_every=1"])
    training.train(config, progress=False)
    # the run's wall time, read from its log, goes into the evaluation and the printed summary
    assert json.loads((tmp_path / "eval.json").read_text())["wall_time"]["steps"] == 2
    assert not (tmp_path / "eval.json").read_text().count("likelihood")      # eval_k empty: none at the end
    out = tmp_path / "full.json"
    capsys.readouterr()
    assert main(["eval", str(tmp_path), "--n", "4", "--k", "1,3", "--output", str(out)]) == 0
    assert "trained 2 steps in" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result) >= {"equivariance", "equivariance_ratio", "disentanglement", "likelihood"}
    assert set(result["likelihood"]["sequence"]) == {"1", "3"}
    assert all(v["released_form"] > 0 for v in result["equivariance"].values())
