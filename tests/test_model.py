import math

import pytest
import torch
from conftest import digit_sequences

from stabook import data
from stabook.model import STA, STAConfig, gaussian_toy_bound, gaussian_toy_posterior

SMALL = dict(latent_dim=4, n_potential=2, n_rotational=1, field_hidden=8, net_width=8, net_hidden=32,
             posterior_width=8, posterior_hidden=32)


@pytest.fixture(scope="module")
def frames():
    images, _ = data.load_digits()
    gen = data.SequenceGenerator(images[:64], T=3)
    return gen.sample(4, generator=torch.Generator().manual_seed(0)).frames


def _model(**kw):
    torch.manual_seed(0)
    return STA(STAConfig(**{**SMALL, **kw}))


def test_terms_sum_to_the_objective_and_the_bound(frames):
    model = _model(beta_flow=2.0, beta_spike=3.0, beta_slab=0.5, lambda_hj=1.5)
    out = model(frames, temperature=0.7)
    B, T = 4, 3
    assert out.recon.shape == (B, T + 1) and out.kl_flow.shape == (B, T) and out.z.shape == (B, T + 1, 4)
    assert out.x_hat.shape == frames.shape and out.speeds.shape == out.rho.shape == (B, T, 3)
    total = (out.recon.sum(1) - out.kl_z0 - 2.0 * out.kl_flow.sum(1) - 3.0 * out.kl_spike - 0.5 * out.kl_slab
             - 1.5 * out.hj)
    torch.testing.assert_close(out.objective, total)
    bound = out.recon.sum(1) - out.kl_z0 - out.kl_flow.sum(1) - out.kl_spike - out.kl_slab
    torch.testing.assert_close(out.bound, bound)
    torch.testing.assert_close(out.loss, -out.objective.mean())
    assert (out.recon <= 0).all()


def test_kls_are_non_negative(frames):
    out = _model()(frames)
    assert (out.kl_z0 >= 0).all() and (out.kl_spike >= 0).all() and (out.kl_slab >= 0).all() and (out.hj >= 0).all()


def test_flow_kl_is_non_negative_in_expectation(frames):
    # a one-sample estimate can be negative; its average over many draws estimates a KL
    model = _model()
    with torch.no_grad():
        draws = torch.stack([model(frames).kl_flow for _ in range(64)])
    assert draws.mean() > 0


def test_one_step_lowers_the_loss_on_a_fixed_batch(frames):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(1)
    before = model(frames).loss.item()
    for _ in range(3):
        torch.manual_seed(1)
        loss = model(frames).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(1)
    assert model(frames).loss.item() < before


def test_sharded_noise_equals_the_whole_batch(frames):
    model = _model()
    torch.manual_seed(3)
    whole = model(frames)
    parts = []
    for offset in (0, 2):
        torch.manual_seed(3)
        parts.append(model(frames[offset:offset + 2], noise_batch=4, noise_offset=offset))
    torch.testing.assert_close(torch.cat([p.objective for p in parts]), whole.objective)
    torch.testing.assert_close(torch.cat([p.z for p in parts]), whole.z)


def test_straight_through_and_relaxed_spikes_share_their_noise(frames):
    """Under one seed the two spike modes draw the same numbers: a hard speed is the slab where the relaxed
    spike exceeds 1/2, so relaxed speed / hard speed is the relaxed spike there (chapter 5 relies on it)."""
    model = _model()
    torch.manual_seed(5)
    soft = model(frames, temperature=0.5)
    model.config = STAConfig.from_dict({**model.config.to_dict(), "straight_through": True})
    torch.manual_seed(5)
    hard = model(frames, temperature=0.5)
    on = hard.speeds > 0
    assert on.any() and (~on).any()
    ratio = soft.speeds[on] / hard.speeds[on]
    assert (ratio > 0.5).all() and (ratio < 1).all()
    torch.testing.assert_close(soft.kl_spike, hard.kl_spike)
    torch.testing.assert_close(soft.kl_z0, hard.kl_z0)


def test_gaussian_toy_bound_is_below_log_px_and_tight_at_the_posterior():
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    a, s = 1.5, 0.7
    loose = gaussian_toy_bound(x, a, s, torch.zeros_like(x), torch.full_like(x, 0.5))
    assert (loose["gap"] > 0).all()
    mean, var = gaussian_toy_posterior(x, a, s)
    tight = gaussian_toy_bound(x, a, s, mean, var)
    assert tight["gap"].abs().max() < 1e-12
    # the exact log p(x) of the toy
    var = a**2 + s**2
    torch.testing.assert_close(tight["log_px"], -0.5 * x**2 / var - 0.5 * math.log(2 * math.pi * var))


def test_helpers(frames):
    model = _model()
    mu, log_var = model.encode(frames[:, 0])
    assert mu.shape == log_var.shape == (4, 4)
    assert model.decode(mu).shape == (4, 3, 28, 28)
    g = model.infer_speeds(frames[:, 0], frames[:, 1])
    assert g.shape == (4, 3) and (g >= 0).all()
    assert model.transform(mu, g).shape == (4, 4)
    path = model.traverse(mu, field=1, steps=5, speed=0.5)
    assert path.shape == (4, 6, 4)
    torch.testing.assert_close(path[:, 0], mu)


def test_bad_inputs(frames):
    model = _model()
    with pytest.raises(ValueError, match="frames must have 5 dimensions"):
        model(frames[0])
    with pytest.raises(ValueError, match="T >= 1 transitions"):
        model(frames[:, :1])
    with pytest.raises(ValueError, match=r"frames must have shape \[B, T \+ 1, 3, 28, 28\]"):
        model(torch.rand(2, 3, 1, 28, 28))
    with pytest.raises(ValueError, match="logdet must be one of"):
        STAConfig(logdet="trace")
    with pytest.raises(ValueError, match="unknown STAConfig fields"):
        STAConfig.from_dict({"latent": 3})
    with pytest.raises(ValueError, match="field must be an integer in"):
        model.traverse(torch.zeros(1, 4), field=7)


def test_bf16_autocast_on_the_cpu_keeps_the_flow_in_float32_and_stays_close():
    """Under torch.autocast(bf16) only the networks run in bf16: every term is float32, close to the float32
    forward pass, and a few training steps stay finite."""
    from stabook.config import preset

    torch.manual_seed(0)
    model = STA(preset("tiny").model)
    frames = digit_sequences(8, T=3)
    torch.manual_seed(1)
    ref = model(frames, 0.5)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(frames, 0.5)
    for name in ("recon", "kl_z0", "kl_flow", "kl_spike", "kl_slab", "bound", "z", "speeds"):
        assert getattr(out, name).dtype == torch.float32, name
    torch.testing.assert_close(out.bound, ref.bound, rtol=2e-3, atol=1.0)
    torch.testing.assert_close(out.kl_flow, ref.kl_flow, rtol=2e-2, atol=0.5)
    torch.testing.assert_close(out.kl_spike, ref.kl_spike, rtol=1e-2, atol=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(frames, 0.5).loss
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                            if p.grad is not None)
        opt.step()
