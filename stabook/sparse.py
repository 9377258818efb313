"""Chapter 4: the sparse speed posterior (spike and slab with a Markov prior).

Speeds ``g_t = y_t * s_t`` for ``M`` fields over ``T`` transitions, shapes ``[B, T, M]``.

* Prior (:class:`SpikeSlabPrior`): spikes ``y_t^m`` are independent two-state Markov chains,
  ``P(y_1 = 1) = pi0``, ``P(y_t = 1 | y_{t-1}) = alpha`` if on else ``beta``; slabs
  ``s_t^m ~ LogNormal(mu0, sigma0)`` i.i.d.
* Posterior (:class:`SpeedPosterior`): a convolutional network on the channel-concatenated frame pair
  ``(x_{t-1}, x_t)`` gives, per field, a spike logit and the slab's ``(mu, log sigma)``.
* Relaxed spikes (:func:`relaxed_spikes`) through ``torch.distributions.RelaxedBernoulli``, optionally
  straight-through hard, with a :class:`TemperatureSchedule`.
* KLs: :func:`spike_kl`, the exact expected KL of the posterior spikes from the Markov prior (differentiable in
  the spike probabilities), and :func:`slab_kl`, the closed-form LogNormal KL (``torch.distributions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, LogNormal, RelaxedBernoulli, kl_divergence

from ._checks import check_images, check_positive, check_probability, check_tensor

__all__ = ["SpikeSlabPrior", "SpeedPosterior", "PosteriorOutput", "relaxed_spikes", "TemperatureSchedule",
           "spike_kl", "slab_kl", "fit_supervised", "evaluate_supervised"]


def _check_open_probability(value, name):
    return check_probability(value, name, open_interval=True)


@dataclass
class SpikeSlabPrior:
    """The spike-and-slab prior over speeds of ``n_fields`` fields (chapter 4).

    Defaults: ``pi0 = 0.1``, ``alpha = 0.9``, ``beta = 0.1`` (the released code's data chain) and a slab
    ``LogNormal(0, 0.25)`` (median speed 1).
    """

    n_fields: int
    pi0: float = 0.1
    alpha: float = 0.9
    beta: float = 0.1
    slab_mu: float = 0.0
    slab_sigma: float = 0.25

    def __post_init__(self):
        if not isinstance(self.n_fields, int) or self.n_fields < 1:
            raise ValueError(f"n_fields must be a positive int, got {self.n_fields!r}")
        for name in ("pi0", "alpha", "beta"):
            _check_open_probability(getattr(self, name), name)
        check_positive(self.slab_sigma, "slab_sigma")

    def slab(self, like: torch.Tensor | None = None) -> LogNormal:
        """The slab distribution (scalar parameters, on ``like``'s device and dtype)."""
        like = like if like is not None else torch.zeros(())
        return LogNormal(like.new_tensor(self.slab_mu), like.new_tensor(self.slab_sigma))

    def sample(self, batch: int, T: int, generator: torch.Generator | None = None):
        """``(spikes, slabs, speeds)``, each ``[B, T, M]``. Spikes follow the Markov chains (no rejection)."""
        if not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be an int >= 1, got {T!r}")
        u = torch.rand(batch, T, self.n_fields, generator=generator)
        spikes = torch.zeros(batch, T, self.n_fields)
        p = torch.full((batch, self.n_fields), self.pi0)
        for t in range(T):                                     # a loop over time only
            spikes[:, t] = (u[:, t] < p).float()
            p = self.beta + (self.alpha - self.beta) * spikes[:, t]
        normal = torch.randn(batch, T, self.n_fields, generator=generator)
        slabs = torch.exp(self.slab_mu + self.slab_sigma * normal)
        return spikes, slabs, spikes * slabs

    def log_prob(self, spikes: torch.Tensor, slabs: torch.Tensor) -> torch.Tensor:
        """``log p(y) + log p(s)`` per sequence, ``[B]``, for binary spikes and positive slabs ``[B, T, M]``."""
        spikes = check_tensor(spikes, "spikes", ndim=3, last=self.n_fields)
        slabs = check_tensor(slabs, "slabs", ndim=3, last=self.n_fields)
        on = torch.cat([spikes.new_full(spikes[:, :1].shape, self.pi0),
                        self.beta + (self.alpha - self.beta) * spikes[:, :-1]], 1)   # P(y_t = 1 | y_{t-1})
        log_spikes = Bernoulli(probs=on).log_prob(spikes).sum((1, 2))
        return log_spikes + self.slab(slabs).log_prob(slabs).sum((1, 2))

    def spike_marginals(self, T: int) -> torch.Tensor:
        """``P(y_t = 1)`` for ``t = 1..T``: ``p_t = beta + (alpha - beta) p_{t-1}``, ``[T]``."""
        p = [self.pi0]
        for _ in range(T - 1):
            p.append(self.beta + (self.alpha - self.beta) * p[-1])
        return torch.tensor(p)


def spike_kl(rho: torch.Tensor, pi0: float = 0.1, alpha: float = 0.9, beta: float = 0.1) -> torch.Tensor:
    """Exact ``KL(q(y) || p(y))`` per step and field, ``[B, T, M]`` (sum it for the total).

    ``q(y) = prod_t Bernoulli(rho_t)`` (the posterior spikes do not depend on ``y_{t-1}``) and ``p`` is the Markov
    prior, so the KL splits over steps, each averaged over the previous spike:

        KL_1 = KL(Bern(rho_1) || Bern(pi0))
        KL_t = rho_{t-1} KL(Bern(rho_t) || Bern(alpha)) + (1 - rho_{t-1}) KL(Bern(rho_t) || Bern(beta)).

    Differentiable in ``rho`` (including through ``rho_{t-1}``).
    """
    rho = check_tensor(rho, "rho", ndim=3)
    if bool(((rho < 0) | (rho > 1)).any()):
        raise ValueError("rho must hold probabilities in [0, 1]")
    pi0, alpha, beta = (_check_open_probability(v, n) for v, n in ((pi0, "pi0"), (alpha, "alpha"), (beta, "beta")))
    q = Bernoulli(probs=rho)
    kl_first = kl_divergence(Bernoulli(probs=rho[:, :1]), Bernoulli(probs=rho.new_tensor(pi0)))
    kl_on = kl_divergence(q, Bernoulli(probs=rho.new_tensor(alpha)))[:, 1:]
    kl_off = kl_divergence(q, Bernoulli(probs=rho.new_tensor(beta)))[:, 1:]
    previous = rho[:, :-1]
    return torch.cat([kl_first, previous * kl_on + (1 - previous) * kl_off], 1)


def slab_kl(mu: torch.Tensor, log_sigma: torch.Tensor, mu0: float = 0.0, sigma0: float = 0.25) -> torch.Tensor:
    """``KL(LogNormal(mu, sigma) || LogNormal(mu0, sigma0))`` elementwise (shape of ``mu``), closed form.

    The log map is shared, so it equals the KL of the underlying normals,
    ``log(sigma0 / sigma) + (sigma^2 + (mu - mu0)^2) / (2 sigma0^2) - 1/2``.
    """
    mu = check_tensor(mu, "mu", ndim=None)
    log_sigma = check_tensor(log_sigma, "log_sigma", ndim=None)
    if mu.shape != log_sigma.shape:
        raise ValueError(f"mu and log_sigma must have the same shape, got {tuple(mu.shape)} and "
                         f"{tuple(log_sigma.shape)}")
    check_positive(sigma0, "sigma0")
    prior = LogNormal(mu.new_tensor(mu0), mu.new_tensor(sigma0))
    return kl_divergence(LogNormal(mu, log_sigma.exp()), prior)


def relaxed_spikes(logits: torch.Tensor, temperature: float, hard: bool = False) -> torch.Tensor:
    """Reparameterised relaxed spikes in ``(0, 1)``, same shape as ``logits``.

    A draw of ``RelaxedBernoulli(temperature, logits)`` (Concrete / Gumbel-sigmoid). ``hard=True`` returns the
    straight-through sample: exactly 0 or 1 in the forward pass, the relaxed sample's gradient backward.
    Random numbers come from the global generator (seed with :func:`stabook.seed_everything`).
    """
    logits = check_tensor(logits, "logits", ndim=None)
    check_positive(temperature, "temperature")
    y = RelaxedBernoulli(logits.new_tensor(float(temperature)), logits=logits).rsample()
    if hard:
        y = (y > 0.5).to(y) + (y - y.detach())   # exactly 0 or 1 forward; the relaxed gradient backward
    return y


@dataclass
class TemperatureSchedule:
    """Temperature of the relaxed spikes against the training step.

    ``kind="exponential"``: ``start * (end / start) ** min(step / steps, 1)``; ``"linear"``: straight from
    ``start`` to ``end``; ``"constant"``: ``start``. After ``steps`` the temperature stays at ``end``.
    """

    start: float = 1.0
    end: float = 0.1
    steps: int = 10_000
    kind: str = "exponential"

    def __post_init__(self):
        check_positive(self.start, "start")
        check_positive(self.end, "end")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        if self.kind not in ("exponential", "linear", "constant"):
            raise ValueError(f"kind must be 'exponential', 'linear' or 'constant', got {self.kind!r}")

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        frac = min(step / self.steps, 1.0)
        if self.kind == "constant":
            return self.start
        if self.kind == "linear":
            return self.start + (self.end - self.start) * frac
        return self.start * (self.end / self.start) ** frac


class PosteriorOutput(NamedTuple):
    """Per frame pair and field: spike logit, slab ``mu`` and ``log sigma``; each ``[B, T, M]`` (or ``[N, M]``)."""

    logits: torch.Tensor
    mu: torch.Tensor
    log_sigma: torch.Tensor

    @property
    def rho(self) -> torch.Tensor:
        """Spike probabilities ``sigmoid(logits)``."""
        return torch.sigmoid(self.logits)

    def slab(self) -> LogNormal:
        return LogNormal(self.mu, self.log_sigma.exp())

    def mean_speed(self) -> torch.Tensor:
        """``E[g] = rho * E[s] = rho * exp(mu + sigma^2 / 2)``."""
        return self.rho * torch.exp(self.mu + 0.5 * self.log_sigma.exp() ** 2)


class SpeedPosterior(nn.Module):
    """``q(y_t, s_t | x_{t-1}, x_t)``: a conv net on the channel-concatenated pair ``[N, 2C, H, W]``.

    For ``H = W`` in {28, 32, 64}: stride-2 convolutions down to 4x4 (3 of them for 28 and 32 pixels, 4 for
    64), then a linear head with ``3 M`` outputs: spike logits, slab ``mu`` and slab ``log sigma``.
    Call it on frames ``[B, T + 1, C, H, W]`` (all ``T`` pairs at once) or on one pair of ``[N, C, H, W]``
    batches with :meth:`pair`.
    """

    SIZES = {28: 3, 32: 3, 64: 4}

    def __init__(self, n_fields: int, channels: int = 3, image_size: int = 28, width: int = 32,
                 hidden: int = 256, log_sigma_min: float = -6.0, log_sigma_max: float = 2.0, mu_max: float = 8.0):
        super().__init__()
        if image_size not in self.SIZES:
            raise ValueError(f"image_size must be one of {sorted(self.SIZES)}, got {image_size!r}")
        if not isinstance(n_fields, int) or n_fields < 1:
            raise ValueError(f"n_fields must be a positive int, got {n_fields!r}")
        self.n_fields, self.channels, self.image_size = n_fields, channels, image_size
        # bounds on the slab keep exp(mu + sigma * eps) finite in float32: an overflow to inf times a hard spike
        # of exactly 0 would be NaN
        self.log_sigma_min, self.log_sigma_max, self.mu_max = log_sigma_min, log_sigma_max, mu_max
        layers, c_in = [], 2 * channels
        for i in range(self.SIZES[image_size]):
            c_out = width * 2 ** min(i, 2)
            layers += [nn.Conv2d(c_in, c_out, 4 if i < 2 else 3, stride=2, padding=1), nn.SiLU()]
            c_in = c_out
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.trunk(torch.zeros(1, 2 * channels, image_size, image_size)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, hidden), nn.SiLU(), nn.Linear(hidden, 3 * n_fields))

    def pair(self, x_prev: torch.Tensor, x_next: torch.Tensor) -> PosteriorOutput:
        """Outputs ``[N, M]`` for frame pairs ``[N, C, H, W]``."""
        shape = (self.channels, self.image_size, self.image_size)
        dtype = self.head[0].weight.dtype
        x_prev = check_images(x_prev, "x_prev", ndim=4, dtype=dtype)
        x_next = check_images(x_next, "x_next", ndim=4, dtype=dtype)
        if x_prev.shape != x_next.shape or tuple(x_prev.shape[1:]) != shape:
            raise ValueError(f"x_prev and x_next must both have shape [N, {', '.join(map(str, shape))}], got "
                             f"{tuple(x_prev.shape)} and {tuple(x_next.shape)}")
        out = self.head(self.trunk(torch.cat([x_prev, x_next], 1)))
        logits, mu, log_sigma = out.chunk(3, dim=-1)
        return PosteriorOutput(logits, mu.clamp(-self.mu_max, self.mu_max),
                               log_sigma.clamp(self.log_sigma_min, self.log_sigma_max))

    def forward(self, frames: torch.Tensor) -> PosteriorOutput:
        """Outputs ``[B, T, M]`` for sequences ``[B, T + 1, C, H, W]`` (every consecutive pair)."""
        frames = check_images(frames, "frames", ndim=5, dtype=self.head[0].weight.dtype)
        B, T1 = frames.shape[:2]
        if T1 < 2:
            raise ValueError(f"frames must hold at least two frames per sequence, got shape {tuple(frames.shape)}")
        out = self.pair(frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1))
        return PosteriorOutput(*(o.reshape(B, T1 - 1, -1) for o in out))


def _supervised_loss(out: PosteriorOutput, spikes: torch.Tensor, speeds: torch.Tensor) -> torch.Tensor:
    spike_loss = F.binary_cross_entropy_with_logits(out.logits, spikes)
    on = spikes > 0
    slab_nll = -out.slab().log_prob(speeds.clamp_min(1e-6))
    slab_loss = (slab_nll * on).sum() / on.sum().clamp_min(1)
    return spike_loss + 0.1 * slab_loss


def fit_supervised(posterior: SpeedPosterior, generator, steps: int = 300, batch_size: int = 32, lr: float = 2e-3,
                   seed: int = 0, device=None, callback=None) -> list[float]:
    """Train ``posterior`` on the *true* spikes and speeds of a :class:`stabook.data.SequenceGenerator`.

    For demonstration only (chapter 4: can the network read speeds off frame pairs at all?); STA itself never
    sees these labels. Loss: spike cross-entropy plus ``0.1 *`` the slab's negative log-likelihood of the true
    speed on active steps. Returns the loss per step; ``callback(step, loss)`` is called every step.
    """
    device = torch.device(device) if device is not None else next(posterior.parameters()).device
    opt = torch.optim.Adam(posterior.parameters(), lr=lr)
    rng = torch.Generator().manual_seed(seed)
    history = []
    posterior.train()
    for step in range(steps):
        batch = generator.sample(batch_size, generator=rng, device=device)
        loss = _supervised_loss(posterior(batch.frames), batch.spikes, batch.speeds)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
        if callback is not None:
            callback(step, loss.item())
    return history


@torch.no_grad()
def evaluate_supervised(posterior: SpeedPosterior, generator, n: int = 256, seed: int = 1,
                        device=None) -> dict[str, float]:
    """Spike accuracy (threshold 0.5), per-field accuracy and the mean relative error of the posterior median
    speed on active steps, on ``n`` fresh sequences."""
    device = torch.device(device) if device is not None else next(posterior.parameters()).device
    posterior.eval()
    batch = generator.sample(n, generator=torch.Generator().manual_seed(seed), device=device)
    out = posterior(batch.frames)
    predicted = (out.rho > 0.5).float()
    on = batch.spikes > 0
    median = out.mu.exp()
    result = {"spike_accuracy": (predicted == batch.spikes).float().mean().item(),
              "speed_relative_error": ((median - batch.speeds).abs() / batch.speeds.clamp_min(1e-6))[on].mean().item()}
    for k, name in enumerate(generator.transformations):
        result[f"accuracy_{name}"] = (predicted[..., k] == batch.spikes[..., k]).float().mean().item()
    return result
