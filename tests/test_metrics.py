import math
from types import SimpleNamespace

import pytest
import torch
from conftest import digit_sequences
from torch import nn
from torch.distributions import Normal

from stabook import data, flow, metrics
from stabook.baselines import FrameVAE
from stabook.fields import VectorField
from stabook.model import STA, STAConfig, gaussian_toy_bound, gaussian_toy_posterior

SMALL = dict(latent_dim=4, n_potential=2, n_rotational=1, field_hidden=8, net_width=8, net_hidden=32,
             posterior_width=8, posterior_hidden=32)


# ------------------------------------------------------------------------------------------------------ IWAE


def _toy_log_weights(x, a, s, q_mean, q_var):
    """log p(x, z) - log q(z | x) for the linear-Gaussian toy, ``n`` samples per datum."""
    def draw(n):
        z = q_mean[:, None] + q_var.sqrt()[:, None] * torch.randn(x.shape[0], n, dtype=x.dtype)
        log_joint = Normal(a * z, s).log_prob(x[:, None]) + Normal(0.0, 1.0).log_prob(z)
        return log_joint - Normal(q_mean[:, None], q_var.sqrt()[:, None]).log_prob(z)
    return draw


def test_iwae_with_the_exact_posterior_is_log_p_x_for_every_k():
    torch.manual_seed(0)
    a, s = 1.5, 0.5
    x = torch.randn(16, dtype=torch.float64) * 2
    mean, var = gaussian_toy_posterior(x, a, s)
    log_px = gaussian_toy_bound(x, a, s, mean, var)["log_px"]
    for k in (1, 7, 64):
        torch.testing.assert_close(metrics.iwae(_toy_log_weights(x, a, s, mean, var), k, chunk=5), log_px)


def test_iwae_is_a_bound_that_rises_with_k_toward_log_p_x():
    torch.manual_seed(1)
    a, s = 1.5, 0.5
    x = torch.full((4000,), 1.2, dtype=torch.float64)
    mean, var = gaussian_toy_posterior(x, a, s)
    q_mean, q_var = mean + 0.4, var * 3.0                                     # a poor proposal
    closed = gaussian_toy_bound(x, a, s, q_mean, q_var)
    log_px = closed["log_px"][0].item()
    means, errors = [], []
    for k in (1, 4, 16, 64):
        bound = metrics.iwae(_toy_log_weights(x, a, s, q_mean, q_var), k, chunk=16)
        means.append(bound.mean().item())
        errors.append(bound.std().item() / math.sqrt(len(x)))
    assert abs(means[0] - closed["bound"][0].item()) < 4 * errors[0]            # k = 1 is the ELBO
    assert all(m < log_px for m in means)
    assert all(later > earlier for earlier, later in zip(means, means[1:], strict=False))
    assert log_px - means[-1] < 0.1 * (log_px - means[0])                      # most of the gap closes by k = 64


def test_iwae_rejects_bad_input():
    with pytest.raises(ValueError, match="k must be a positive int"):
        metrics.iwae(lambda n: torch.zeros(2, n), 0)
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        metrics.iwae(lambda n: torch.zeros(2, n), 3, chunk=0)
    with pytest.raises(ValueError, match=r"must return \[B, 2\]"):
        metrics.iwae(lambda n: torch.zeros(2), 2)


def test_bits_per_dim():
    assert metrics.bits_per_dim(-10 * math.log(2), 10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="dims"):
        metrics.bits_per_dim(-1.0, 0)


@pytest.fixture(scope="module")
def frames():
    return digit_sequences(3)


def _mean_and_error(samples):
    samples = torch.stack(samples)
    return samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])


@pytest.mark.parametrize("speeds", ["sparse", "dense"])
def test_sequence_iwae_with_one_sample_is_the_tight_elbo(frames, speeds):
    """E[IWAE_1] = E[recon] - KL(z_0) - KL(spikes) - KL(slabs): the forward pass's terms without the flow KL
    (hard straight-through spikes are exact Bernoulli draws)."""
    torch.manual_seed(0)
    model = STA(STAConfig(**SMALL, straight_through=True, speeds=speeds)).double()
    x = frames.double()
    with torch.no_grad():
        elbo = []
        for _ in range(300):
            out = model(x, temperature=0.5)
            elbo.append(out.recon.sum(1) - out.kl_z0 - out.kl_spike - out.kl_slab)
        iw = [metrics.sequence_log_likelihood(model, x, k=1) for _ in range(300)]
    (m1, e1), (m2, e2) = _mean_and_error(elbo), _mean_and_error(iw)
    assert ((m1 - m2).abs() < 4 * (e1**2 + e2**2).sqrt() + 1e-6 * m1.abs()).all(), (m1, m2, e1, e2)
    many = torch.stack([metrics.sequence_log_likelihood(model, x, k=50, chunk=7) for _ in range(10)]).mean(0)
    assert (many > m2).all()


def test_frame_iwae_of_a_vae_matches_its_elbo_and_rises(frames):
    torch.manual_seed(0)
    vae = FrameVAE(STAConfig(**SMALL)).double()
    x = frames[:, 0].double()
    with torch.no_grad():
        elbo = [(lambda o: (o.recon - o.kl)[:, 0])(vae(x[:, None].expand(-1, 2, -1, -1, -1))) for _ in range(200)]
        iw = [metrics.frame_log_likelihood(vae, x, k=1) for _ in range(200)]
        high = torch.stack([metrics.frame_log_likelihood(vae, x, k=100, chunk=30) for _ in range(5)]).mean(0)
    (m1, e1), (m2, e2) = _mean_and_error(elbo), _mean_and_error(iw)
    assert ((m1 - m2).abs() < 4 * (e1**2 + e2**2).sqrt() + 1e-9).all()
    assert (high > m2).all()
    # frames are independent under a VAE: the sequence bound is the sum of the frame bounds
    torch.manual_seed(3)
    seq = metrics.sequence_log_likelihood(vae, frames.double(), k=4)
    torch.manual_seed(3)
    per_frame = metrics.frame_log_likelihood(vae, frames.double().flatten(0, 1), k=4, chunk=4096 // 12)
    torch.testing.assert_close(seq, per_frame.reshape(3, 4).sum(1))


# ---------------------------------------------------------------------------------------------- equivariance


class _UnitField(VectorField):
    """The constant field ``e_k``."""

    def __init__(self, dim, k):
        super().__init__()
        self.dim, self.k = dim, k

    def velocity(self, z, t):
        return nn.functional.one_hot(torch.full((z.shape[0],), self.k), self.dim).to(z)


class _PerfectModel(nn.Module):
    """A test double that is exactly equivariant: its latent is (image index, amount of each transformation so
    far), its fields add one unit of a transformation, its decoder renders, and its speed posterior is an
    oracle that returns the speeds the test frames were made with."""

    def __init__(self, generator, true_speeds):
        super().__init__()
        self.gen, self.true_speeds, self.M = generator, true_speeds, generator.K
        self.fields = flow.as_field_bank([_UnitField(generator.K + 1, k + 1) for k in range(generator.K)])
        self.config = SimpleNamespace(h=1.0, n_sub=1)
        self.anchor = nn.Parameter(torch.zeros(()))

    def encode(self, x):
        index = (x[:, None] - self.gen.images[None]).abs().flatten(2).sum(-1).argmin(1)
        z = torch.zeros(x.shape[0], self.M + 1)
        z[:, 0] = index.float()
        return z, torch.zeros_like(z)

    kind = "sta"
    rollout = STA.rollout            # the model's own rollout, run on this exact double

    def infer_speeds(self, x_prev, x_next):
        return self.true_speeds.flatten(0, 1)

    def decode(self, z):
        x0 = self.gen.images[z[:, 0].round().long()]
        return self.gen.render(x0, z[:, None, 1:])[:, 1]


def test_a_perfect_model_has_zero_equivariance_error():
    images, _ = data.load_digits()
    gen = data.SequenceGenerator(images[:20], T=4)
    for name in gen.transformations:
        batch = gen.sample(6, generator=torch.Generator().manual_seed(1), only=name)
        err = metrics.equivariance_error(_PerfectModel(gen, batch.speeds), batch.frames)
        assert err["mae"] < 1e-4 and err["released_form"] < 1e-4 * 4 * 3 * 28 * 28
        assert err["identity_mae"] > 0.005


def test_equivariance_error_forms_agree_and_vae_needs_a_direction(frames):
    torch.manual_seed(0)
    model = STA(STAConfig(**SMALL))
    err = metrics.equivariance_error(model, frames)
    x_hat = model.rollout(frames).frames
    per_sequence = (x_hat[:, 1:] - frames[:, 1:]).abs().sum((1, 2, 3, 4))
    assert err["released_form"] == pytest.approx(per_sequence.mean().item(), rel=1e-5)
    assert err["mae"] == pytest.approx(per_sequence.mean().item() / (3 * frames[0, 0].numel()), rel=1e-5)
    with pytest.raises(ValueError, match="needs direction="):
        metrics.equivariance_error(FrameVAE(STAConfig(**SMALL)), frames)


def test_stepwise_error_checks_shapes(frames):
    assert metrics.stepwise_error(frames, frames).abs().max() == 0
    with pytest.raises(ValueError, match="same shape"):
        metrics.stepwise_error(frames[:, 1:], frames)


# -------------------------------------------------------------------------------------------- disentanglement


def test_a_permuted_assignment_still_scores_one():
    columns = [4, 0, 2]
    shares = torch.zeros(3, 5)
    shares[torch.arange(3), columns] = 1.0
    dominant = torch.tensor(columns)[:, None].expand(3, 10)
    result = metrics.disentanglement(shares, dominant)
    assert result["score"] == 1.0 and result["matched_share"] == 1.0
    assert result["matching"] == {0: 4, 1: 0, 2: 2}


def test_borrowed_fields_lower_both_scores():
    shares = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    dominant = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]])
    result = metrics.disentanglement(shares, dominant)
    assert result["matched_share"] == pytest.approx(0.75)
    assert result["score"] == pytest.approx(0.75)        # row 0 is matched to one field; it dominates half the time


def test_disentanglement_rejects_bad_input():
    with pytest.raises(ValueError, match="at least as many fields"):
        metrics.disentanglement(torch.rand(3, 2), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="one per transformation"):
        metrics.disentanglement(torch.rand(2, 3), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="shares must be a torch.Tensor"):
        metrics.disentanglement([[1.0]], torch.zeros(1, 1, dtype=torch.long))


# ------------------------------------------------------------------------------------------------- evaluate


def test_evaluate_and_composition_on_a_small_model():
    images, _ = data.load_digits()
    torch.manual_seed(0)
    model = STA(STAConfig(**SMALL))
    result = metrics.evaluate(model, images[:40], n=4, T=2, ks=(1, 3), floor_steps=50)
    assert set(result["equivariance"]) == {"rotate", "scale", "hue"} and result["model"] == "sta"
    d = result["disentanglement"]
    assert 0 <= d["score"] <= 1 and 0 < d["matched_share"] <= 1 and 0 < d["matched_displacement_share"] <= 1
    for row in (*d["matrix"], *d["displacement_matrix"]):               # each row is a distribution over fields
        assert sum(row) == pytest.approx(1, abs=1e-5)
    for v in result["equivariance"].values():
        # the decoder's best drawing of x_0 is at least as good as drawing the encoding of x_0 (the search starts
        # there and minimises the same error)
        assert 0 < v["x0_best_mae"] <= v["floor_mae"] * (1 + 1e-4) and v["per_frame_floor_mae"] > 0
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        metrics.evaluate(model, images[:40], n=0, T=2)
    like = result["likelihood"]
    assert set(like["frame"]) == {"1", "3"} and like["dims"] == 3 * 28 * 28
    assert like["frame"]["1"]["bits_per_dim"] == pytest.approx(-like["frame"]["1"]["nats"] / (2352 * math.log(2)))
    gen = data.SequenceGenerator(images[:40], T=3)
    comp = metrics.composition(model, gen, ("rotate", "hue"), n=4)
    assert set(comp["mae"]) == {"summed", "inferred", "single", "identity"}
    assert len(comp["curves"]["summed"]) == 4 and comp["frames"].shape == (4, 4, 3, 28, 28)
    with pytest.raises(ValueError, match="unknown transformation"):
        metrics.composition(model, gen, ("rotate", "shear"), n=2)
    with pytest.raises(ValueError, match="needs val_images"):
        metrics.evaluate(FrameVAE(STAConfig(**SMALL)), images[:40], n=2, T=2, ks=())


def test_rollout_with_a_period_restarts_the_field_time(frames):
    torch.manual_seed(0)
    model = STA(STAConfig(**SMALL))
    speeds = torch.rand(3, 3, 3)
    full = model.rollout(frames, speeds).frames
    torch.testing.assert_close(model.rollout(frames, speeds, period=3).frames, full)
    two = model.rollout(frames, speeds, period=2).frames
    torch.testing.assert_close(two[:, :3], full[:, :3])
    mu, _ = model.encode(frames[:, 0])
    z2 = model.transform(model.transform(model.transform(mu, speeds[:, 0], 1), speeds[:, 1], 2), speeds[:, 2], 1)
    torch.testing.assert_close(two[:, 3], model.decode(z2))
    with pytest.raises(ValueError, match="period must be an integer >= 1"):
        model.rollout(frames, speeds, period=0)


def test_rollout_displacement_is_speed_times_the_field_velocity(frames):
    torch.manual_seed(0)
    model = STA(STAConfig(**SMALL))
    speeds = torch.rand(3, 3, 3) * (torch.rand(3, 3, 3) > 0.5)
    roll = model.rollout(frames, speeds)
    t = 2                                                          # the third transition, field time 3
    v = model.fields.velocities(roll.z[:, t], torch.full((3,), 3.0))          # [B, M, D]
    torch.testing.assert_close(roll.displacement[:, t], model.config.h * speeds[:, t] * v.norm(dim=-1))
    assert (roll.displacement[speeds == 0] == 0).all()             # a field that does not move moves nothing
    with pytest.raises(ValueError, match="speeds must have shape"):
        model.rollout(frames, speeds[:, :2])


# ----------------------------------------------------------------------------------------- difference verdict


def test_difference_verdict_uses_two_standard_errors_of_the_difference():
    # SE = sqrt(0.1^2 / 4 + 0.1^2 / 4) = sqrt(0.005); a difference of 0.2 is 2.83 SE: a finding
    out = metrics.difference_verdict(1.0, 0.1, 4, 0.8, 0.1, 4)
    assert out["se"] == pytest.approx(math.sqrt(0.005))
    assert out["z"] == pytest.approx(0.2 / math.sqrt(0.005))
    assert out["finding"] and out["verdict"] == "finding"
    # 0.08 apart with spreads 0.09 and 0.02 over three seeds each: SE 0.053, 1.5 SE, not a finding
    out = metrics.difference_verdict(0.57, 0.09, 3, 0.49, 0.02, 3)
    assert out["z"] == pytest.approx(0.08 / math.sqrt((0.09**2 + 0.02**2) / 3))
    assert not out["finding"] and out["verdict"] == "not a finding"
    # the sign follows a - b, the verdict does not depend on the order
    back = metrics.difference_verdict(0.49, 0.02, 3, 0.57, 0.09, 3)
    assert back["difference"] == pytest.approx(-0.08) and back["finding"] == out["finding"]
    # exactly repeatable sides: any difference is a finding, none is not
    assert metrics.difference_verdict(1.0, 0.0, 3, 0.5, 0.0, 3)["finding"]
    assert not metrics.difference_verdict(1.0, 0.0, 3, 1.0, 0.0, 3)["finding"]


@pytest.mark.parametrize("bad", [dict(a_n=1), dict(b_n=0), dict(a_std=-0.1), dict(b_std=math.nan)])
def test_difference_verdict_refuses_what_says_nothing_about_spread(bad):
    args = dict(a_mean=1.0, a_std=0.1, a_n=3, b_mean=0.5, b_std=0.1, b_n=3) | bad
    with pytest.raises(ValueError):
        metrics.difference_verdict(**args)


def test_best_decoding_finds_the_latent_a_linear_decoder_draws_from(frames):
    """With a decoder sigmoid(W z), frames drawn from known latents are recovered: the search ends far below its
    start, near zero error, and leaves the model's parameters as it found them."""
    torch.manual_seed(0)
    B, T1, D = frames.shape[0], frames.shape[1], 4
    decoder = nn.Linear(D, frames[0, 0].numel())
    model = SimpleNamespace(decode=lambda z: torch.sigmoid(decoder(z)), parameters=decoder.parameters)
    truth = torch.randn(B, T1, D)
    with torch.no_grad():
        target = model.decode(truth.flatten(0, 1)).reshape(frames.shape)
    start = truth + torch.randn_like(truth)
    decoder.weight.requires_grad_(False)              # a frozen part stays frozen
    z, err = metrics.best_decoding(model, target, start, steps=400, lr=0.05)
    with torch.no_grad():
        before = (model.decode(start.flatten(0, 1)).reshape(target.shape) - target).abs().mean((2, 3, 4))
    assert err.shape == (B, T1) and z.shape == truth.shape
    assert (err < 0.1 * before).all() and err.max() < 1e-3
    assert not decoder.weight.requires_grad and decoder.bias.requires_grad
    with pytest.raises(ValueError, match=r"z_init must have shape \[B, T\+1, D\]"):
        metrics.best_decoding(model, target, start[:, :2], steps=1)
    with pytest.raises(ValueError, match="steps: expected an integer >= 1"):
        metrics.best_decoding(model, target, start, steps=0)
    with pytest.raises(ValueError, match="frames"):
        metrics.best_decoding(model, target * 2, start, steps=1)
