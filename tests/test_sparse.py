import math

import pytest
import torch
from torch.distributions import Bernoulli, LogNormal

from stabook import sparse


def _rho(B=3, T=5, M=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.05 + 0.9 * torch.rand(B, T, M, generator=g, dtype=torch.float64))


def test_spike_kl_matches_monte_carlo():
    rho = _rho(B=2, T=4, M=2)
    prior = sparse.SpikeSlabPrior(2)
    exact = sparse.spike_kl(rho).sum((1, 2))                           # [B]
    n = 40_000
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(n, *rho.shape, generator=g, dtype=torch.float64) < rho).double()   # [n, B, T, M]
    log_q = Bernoulli(probs=rho).log_prob(y).sum((-1, -2))
    on = torch.cat([torch.full_like(y[..., :1, :], prior.pi0),
                    prior.beta + (prior.alpha - prior.beta) * y[..., :-1, :]], -2)
    log_p = Bernoulli(probs=on).log_prob(y).sum((-1, -2))
    samples = log_q - log_p
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(n)
    assert ((mc - exact).abs() < 3 * se).all(), (mc, exact, se)


def test_prior_log_prob_matches_the_chain():
    prior = sparse.SpikeSlabPrior(1, pi0=0.2, alpha=0.7, beta=0.3)
    spikes = torch.tensor([[[1.0], [1.0], [0.0]]])
    slabs = torch.tensor([[[1.0], [2.0], [0.5]]])
    expected = math.log(0.2) + math.log(0.7) + math.log(0.3) + LogNormal(0.0, 0.25).log_prob(slabs).sum().item()
    assert abs(prior.log_prob(spikes, slabs).item() - expected) < 1e-5


def test_spike_kl_is_differentiable_and_matches_finite_differences():
    rho = _rho().requires_grad_()
    total = sparse.spike_kl(rho).sum()
    (grad,) = torch.autograd.grad(total, rho)
    assert grad.abs().min() > 0
    eps = 1e-6
    for index in [(0, 0, 0), (1, 2, 1), (2, 4, 0)]:
        bumped = rho.detach().clone()
        bumped[index] += eps
        lowered = rho.detach().clone()
        lowered[index] -= eps
        fd = (sparse.spike_kl(bumped).sum() - sparse.spike_kl(lowered).sum()) / (2 * eps)
        assert abs(fd.item() - grad[index].item()) < 1e-6


def test_spike_kl_is_zero_at_the_prior_marginal_only_for_the_first_step():
    rho = torch.full((1, 1, 1), 0.1, dtype=torch.float64)
    assert sparse.spike_kl(rho).abs().max() < 1e-12
    assert (sparse.spike_kl(_rho()) >= 0).all()


def test_slab_kl_matches_monte_carlo():
    mu = torch.tensor([0.3, -0.2], dtype=torch.float64)
    log_sigma = torch.tensor([-1.0, -0.5], dtype=torch.float64)
    exact = sparse.slab_kl(mu, log_sigma, 0.0, 0.25)
    q, p = LogNormal(mu, log_sigma.exp()), LogNormal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.25))
    s = q.sample((200_000,))
    samples = q.log_prob(s) - p.log_prob(s)
    assert ((samples.mean(0) - exact).abs() < 3 * samples.std(0) / math.sqrt(200_000)).all()
    closed = torch.log(0.25 / log_sigma.exp()) + (log_sigma.exp() ** 2 + mu**2) / (2 * 0.25**2) - 0.5
    torch.testing.assert_close(exact, closed)


def test_relaxed_spikes_approach_bernoulli_as_temperature_falls():
    torch.manual_seed(0)
    logits = torch.full((20_000,), math.log(0.3 / 0.7))
    near = []
    for tau in (1.0, 0.3, 0.03):
        y = sparse.relaxed_spikes(logits, tau)
        near.append(((y < 0.01) | (y > 0.99)).float().mean().item())
        if tau == 0.03:
            assert abs((y > 0.5).float().mean().item() - 0.3) < 0.015
    assert near[0] < near[1] < near[2] and near[2] > 0.9


def test_straight_through_spikes_are_binary_with_gradients():
    torch.manual_seed(1)
    logits = torch.zeros(1000, requires_grad=True)
    y = sparse.relaxed_spikes(logits, 0.5, hard=True)
    assert set(y.detach().unique().tolist()) <= {0.0, 1.0}
    y.sum().backward()
    assert logits.grad.abs().sum() > 0


def test_relaxed_spikes_are_the_concrete_formula_on_the_global_generator():
    """Chapter 5 rewrites the spike draw by hand: sigmoid((logit + log u - log(1 - u)) / tau), one
    uniform per spike from the global generator, rounded to 0 or 1 when straight-through."""
    logits = torch.linspace(-4, 4, 9, dtype=torch.float64)
    torch.manual_seed(0)
    u = torch.rand(9, dtype=torch.float64)
    by_hand = torch.sigmoid((logits + u.log() - (-u).log1p()) / 0.7)
    torch.manual_seed(0)
    torch.testing.assert_close(sparse.relaxed_spikes(logits, 0.7), by_hand)
    torch.manual_seed(0)
    torch.testing.assert_close(sparse.relaxed_spikes(logits, 0.7, hard=True), (by_hand > 0.5).double())


def test_temperature_schedule_values():
    s = sparse.TemperatureSchedule(1.0, 0.1, steps=100)
    assert s(0) == 1.0 and abs(s(50) - math.sqrt(0.1)) < 1e-12 and abs(s(100) - 0.1) < 1e-12 and s(500) == s(100)
    lin = sparse.TemperatureSchedule(1.0, 0.2, steps=10, kind="linear")
    assert abs(lin(5) - 0.6) < 1e-12
    assert sparse.TemperatureSchedule(0.5, 0.1, 10, "constant")(7) == 0.5


@pytest.mark.parametrize("size", [28, 32, 64])
def test_posterior_shapes(size):
    net = sparse.SpeedPosterior(n_fields=4, channels=3, image_size=size, width=8, hidden=16)
    out = net(torch.rand(2, 5, 3, size, size))
    assert out.logits.shape == out.mu.shape == out.log_sigma.shape == (2, 4, 4)
    assert out.rho.min() >= 0 and out.rho.max() <= 1
    assert net.pair(torch.rand(6, 3, size, size), torch.rand(6, 3, size, size)).logits.shape == (6, 4)


def test_prior_samples_follow_the_marginals():
    prior = sparse.SpikeSlabPrior(3)
    spikes, slabs, speeds = prior.sample(20_000, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(spikes.mean((0, 2)), prior.spike_marginals(6), atol=0.01, rtol=0)
    assert abs(slabs.log().std().item() - 0.25) < 0.01 and ((speeds > 0) == (spikes > 0)).all()


def test_posterior_learns_from_labels_quickly():
    from stabook import data
    torch.manual_seed(0)
    images, _ = data.load_digits()
    gen = data.SequenceGenerator(images[:200], T=3)
    net = sparse.SpeedPosterior(3, width=8, hidden=32)
    history = sparse.fit_supervised(net, gen, steps=40, batch_size=16)
    assert sum(history[-5:]) / 5 < 0.8 * sum(history[:5]) / 5


def test_device(device):
    net = sparse.SpeedPosterior(2, width=8, hidden=16).to(device)
    out = net(torch.rand(1, 3, 3, 28, 28, device=device))
    assert out.logits.device.type == device.type
    assert sparse.spike_kl(out.rho).device.type == device.type


def test_bad_inputs():
    with pytest.raises(ValueError, match="alpha must lie in"):
        sparse.spike_kl(_rho(), alpha=1.0)
    with pytest.raises(ValueError, match="pi0 must lie in"):
        sparse.SpikeSlabPrior(2, pi0=0.0)
    with pytest.raises(ValueError, match="rho must hold probabilities"):
        sparse.spike_kl(_rho() + 1)
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        sparse.relaxed_spikes(torch.zeros(3), 0.0)
    with pytest.raises(ValueError, match="start must be finite and > 0"):
        sparse.TemperatureSchedule(start=-1.0)
    with pytest.raises(ValueError, match="mu and log_sigma must have the same shape"):
        sparse.slab_kl(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="image_size must be one of"):
        sparse.SpeedPosterior(2, image_size=30)
    net = sparse.SpeedPosterior(2, width=8, hidden=16)
    with pytest.raises(ValueError, match="x_prev and x_next must both have shape"):
        net.pair(torch.rand(2, 3, 28, 28), torch.rand(3, 3, 28, 28))
    with pytest.raises(ValueError, match="frames must have 5 dimensions"):
        net(torch.rand(3, 28, 28))
    with pytest.raises(ValueError, match="at least two frames"):
        net(torch.rand(2, 1, 3, 28, 28))


def test_slab_parameters_are_bounded_so_speeds_stay_finite():
    net = sparse.SpeedPosterior(2, width=8, hidden=16)
    with torch.no_grad():
        net.head[-1].bias.fill_(1e4)                      # absurd outputs
    out = net(torch.rand(1, 3, 3, 28, 28))
    assert out.mu.max() <= net.mu_max and out.log_sigma.max() <= net.log_sigma_max
    slab = torch.exp(out.mu + out.log_sigma.exp() * 6.0)  # a six-sigma draw
    assert torch.isfinite(slab).all() and torch.isfinite(0.0 * slab).all()
