"""Chapter 5: the STA model and the bound it maximises.

Sequences ``x_0 .. x_T`` are ``frames`` of shape ``[B, T + 1, C, H, W]`` with values in [0, 1]. Per sequence,

    L = sum_{t=0}^{T} E_q[log p(x_t | z_t)] - KL(q(z_0 | x_0) || N(0, I)) - sum_t KL_t^flow
        - sum_{t, m} KL_spike(t, m) - sum_{t, m} KL(q(s_t^m) || p(s)) - lambda_HJ R_HJ,

in nats. :meth:`STA.forward` returns every term separately (:class:`STAOutput`), the weighted objective
that training maximises and the unweighted bound (every weight 1, no HJ term).

Given ``z_0``, the spikes and the slabs, every ``z_t`` is deterministic, so the tight bound of the generative
model has no flow terms: ``recon - KL(z_0) - KL(spikes) - KL(slabs)``. The flow KLs (each a KL, >= 0 in
expectation) are a regulariser that keeps every frame's latent typical under ``N(0, I)``; subtracting them
keeps a looser bound, which is the ``bound`` reported here. Both are bounds when the spikes the decoder sees
are binary (``straight_through=True``); with relaxed spikes the objective is a surrogate (chapter 4).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Normal, kl_divergence
from torch.profiler import record_function

from . import flow as flowlib
from ._checks import check_images, check_tensor
from .nets import Encoder, make_decoder
from .sparse import PosteriorOutput, SpeedPosterior, SpikeSlabPrior, relaxed_spikes, slab_kl, spike_kl

__all__ = ["STAConfig", "STA", "STAOutput", "Rollout", "bernoulli_log_likelihood", "gaussian_toy_bound",
           "gaussian_toy_posterior"]


#: upper limits of the sizes, checked before any weight is allocated: generous (the ``mnist`` preset uses a
#: latent of 324, 512 hidden units and 3 + 3 fields) but far from a model that cannot be built
SIZE_LIMITS = {"latent_dim": 4096, "n_potential": 64, "n_rotational": 64, "field_hidden": 16_384,
               "net_width": 1024, "net_hidden": 16_384, "posterior_width": 1024, "posterior_hidden": 16_384,
               "n_sub": 100}
#: the slab prior's log-speed beyond which exp(slab_mu) overflows the objective
SLAB_MU_LIMIT = 10.0


@dataclass
class STAConfig:
    """Architecture and objective of an :class:`STA` model."""

    image_size: int = 28
    channels: int = 3
    latent_dim: int = 16
    n_potential: int = 3
    n_rotational: int = 3
    field_hidden: int = 64
    net_width: int = 32
    net_hidden: int = 256
    decoder: str = "conv"          # "conv" or "mlp"
    posterior_width: int = 32
    posterior_hidden: int = 256
    h: float = 1.0                 # step size of a transition
    n_sub: int = 1                 # Euler substeps per transition
    logdet: str = "exact"          # "exact", "first_order" or "hutchinson" (see stabook.flow)
    pi0: float = 0.1
    alpha: float = 0.9
    beta: float = 0.1
    slab_mu: float = 0.0
    slab_sigma: float = 0.25
    beta_flow: float = 1.0
    beta_spike: float = 1.0
    beta_slab: float = 1.0
    lambda_hj: float = 1.0
    straight_through: bool = False
    speeds: str = "sparse"         # "sparse": spike and slab; "dense": the ablation g ~ N(mu, sigma^2), prior N(0, 1)
    dense_sigma: float = 1.0       # the dense ablation's prior scale

    def __post_init__(self):
        if self.logdet not in flowlib.LOGDET_METHODS:
            raise ValueError(f"logdet must be one of {flowlib.LOGDET_METHODS}, got {self.logdet!r}")
        if self.decoder not in ("conv", "mlp"):
            raise ValueError(f"decoder must be 'conv' or 'mlp', got {self.decoder!r}")
        if self.speeds not in ("sparse", "dense"):
            raise ValueError(f"speeds must be 'sparse' or 'dense', got {self.speeds!r}")
        minimum = {"image_size": 1, "channels": 1, "latent_dim": 2, "n_potential": 0, "n_rotational": 0,
                   "field_hidden": 1, "net_width": 1, "net_hidden": 1, "posterior_width": 1, "posterior_hidden": 1,
                   "n_sub": 1}
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
            if name in SIZE_LIMITS and value > SIZE_LIMITS[name]:
                raise ValueError(f"{name} must be at most {SIZE_LIMITS[name]:,}, got {value:,}")
        if self.n_potential + self.n_rotational < 1:
            raise ValueError("the model needs at least one field: n_potential + n_rotational >= 1")
        for name in ("h", "slab_sigma", "dense_sigma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("pi0", "alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(f"{name} must be a probability in (0, 1), got {value!r}")
        for name in ("slab_mu", "beta_flow", "beta_spike", "beta_slab", "lambda_hj"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            if name != "slab_mu" and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if abs(self.slab_mu) > SLAB_MU_LIMIT:
            raise ValueError(f"slab_mu must lie in [-{SLAB_MU_LIMIT}, {SLAB_MU_LIMIT}] (the log of the prior's typical "
                             f"speed), got {self.slab_mu!r}")
        if not isinstance(self.straight_through, bool):
            raise ValueError(f"straight_through must be true or false, got {self.straight_through!r}")

    @classmethod
    def from_dict(cls, values: dict) -> STAConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown STAConfig fields: {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


class STAOutput(NamedTuple):
    """Every term of the objective, per sequence, in nats (``B`` sequences, ``T`` transitions, ``M`` fields)."""

    recon: torch.Tensor        # [B, T + 1], log p(x_t | z_t)
    kl_z0: torch.Tensor        # [B], KL(q(z_0 | x_0) || N(0, I)), closed form
    kl_flow: torch.Tensor      # [B, T], one-sample estimate of KL(q_t || N(0, I))
    kl_spike: torch.Tensor     # [B], exact spike KL summed over t and m (0 for dense speeds)
    kl_slab: torch.Tensor      # [B], slab KL summed over t and m (dense speeds: the speeds' Gaussian KL)
    hj: torch.Tensor           # [B], R_HJ: sum over t and potential fields of spike * residual^2
    objective: torch.Tensor    # [B], the weighted objective (higher is better)
    bound: torch.Tensor        # [B], the unweighted bound: all weights 1, no HJ term, flow KLs included
    x_hat: torch.Tensor        # [B, T + 1, C, H, W], decoder means
    z: torch.Tensor            # [B, T + 1, D], the latent trajectory
    speeds: torch.Tensor       # [B, T, M], the sampled speeds g = y * s
    rho: torch.Tensor          # [B, T, M], spike probabilities

    @property
    def loss(self) -> torch.Tensor:
        """``-mean_b objective``: what the optimiser minimises."""
        return -self.objective.mean()

    def summary(self) -> dict[str, float]:
        """Batch means of the terms (nats per sequence), as plain floats."""
        return {"loss": self.loss.item(), "bound": self.bound.mean().item(),
                "recon": self.recon.sum(1).mean().item(), "kl_z0": self.kl_z0.mean().item(),
                "kl_flow": self.kl_flow.sum(1).mean().item(), "kl_spike": self.kl_spike.mean().item(),
                "kl_slab": self.kl_slab.mean().item(), "hj": self.hj.mean().item()}


class Rollout(NamedTuple):
    """A model's prediction of a sequence from its first frame and the speeds read from its frames
    (:meth:`STA.rollout`, :meth:`stabook.baselines.FrameVAE.rollout`)."""

    frames: torch.Tensor       # [B, T + 1, C, H, W], the decoded latents z_0 .. z_T (step 0: the reconstruction)
    speeds: torch.Tensor       # [B, T, M], the speeds of every transition (a VAE: [B, T, 1], along one direction)
    z0_frames: torch.Tensor    # [B, T + 1, C, H, W], z_0 decoded at every step (a baseline that never moves)
    z: torch.Tensor            # [B, T + 1, D], the latent path
    displacement: torch.Tensor  # [B, T, M], how far each field moved the latent: h |g_t^m| |v_m(z_{t-1}, t)|


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log p(x | z)`` of a Bernoulli per pixel with ``logits`` ``[..., C, H, W]`` (``x`` broadcasts against
    them), summed over the last three axes: ``sum x log sigma(l) + (1 - x) log(1 - sigma(l))``, in nats."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").flatten(-3).sum(-1)


def _sharded(draw, local: int, total: int | None, offset: int):
    """Draw noise for the whole global batch and keep this shard's rows, so that a process of a data-parallel
    run draws exactly the numbers a single process would (``total=None``: no sharding)."""
    if total is None:
        return draw(local)
    return draw(total)[offset:offset + local]


def _check_shard(noise_batch, noise_offset, local: int) -> None:
    """``noise_batch`` (the global batch) and ``noise_offset`` (this shard's first row) must hold the ``local``
    rows of the frames."""
    if noise_batch is None:
        if noise_offset != 0:
            raise ValueError(f"noise_offset needs noise_batch (the global batch size), got noise_offset="
                             f"{noise_offset!r} and noise_batch=None")
        return
    for name, value in (("noise_batch", noise_batch), ("noise_offset", noise_offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if noise_offset + local > noise_batch:
        raise ValueError(f"noise_batch must cover this shard: noise_offset + batch size <= noise_batch, got "
                         f"noise_batch={noise_batch}, noise_offset={noise_offset} and {local} frame sequences")


class STA(nn.Module):
    """Sparse Transformation Analysis: encoder, decoder, ``M`` potential and rotational fields, pair network."""

    kind = "sta"

    def __init__(self, config: STAConfig | None = None, **overrides):
        super().__init__()
        config = config or STAConfig()
        if overrides:
            config = STAConfig.from_dict({**config.to_dict(), **overrides})
        self.config = c = config
        self.encoder = Encoder(c.latent_dim, c.channels, c.image_size, c.net_width, c.net_hidden)
        self.decoder = make_decoder(c)
        self.fields = flowlib.FieldBank(c.latent_dim, c.n_potential, c.n_rotational, hidden=c.field_hidden)
        self.posterior = SpeedPosterior(self.M, c.channels, c.image_size, c.posterior_width, c.posterior_hidden)
        self.prior = SpikeSlabPrior(self.M, c.pi0, c.alpha, c.beta, c.slab_mu, c.slab_sigma)

    @property
    def M(self) -> int:
        return self.config.n_potential + self.config.n_rotational

    @property
    def decoder_dtype(self) -> torch.dtype:
        """The dtype of the parameters; frames of another floating dtype are converted to it."""
        return next(self.decoder.parameters()).dtype

    def _check_frames(self, frames):
        c = self.config
        frames = check_images(frames, "frames", ndim=5, dtype=self.decoder_dtype)
        if tuple(frames.shape[2:]) != (c.channels, c.image_size, c.image_size):
            raise ValueError(f"frames must have shape [B, T + 1, {c.channels}, {c.image_size}, {c.image_size}], "
                             f"got {tuple(frames.shape)}")
        if frames.shape[1] < 2:
            raise ValueError(f"frames must hold T >= 1 transitions (at least 2 frames), got {tuple(frames.shape)}")
        return frames

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_var)`` of ``q(z_0 | x)``, each ``[N, D]``, for images ``[N, C, H, W]``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder means (pixel probabilities) ``[N, C, H, W]`` for latents ``[N, D]``."""
        z = check_tensor(z, "z", ndim=2, last=self.config.latent_dim)
        return torch.sigmoid(self.decoder(z))

    def infer_speeds(self, x_prev: torch.Tensor, x_next: torch.Tensor, mode: str = "hard") -> torch.Tensor:
        """Speeds ``[N, M]`` between frames ``[N, C, H, W]``: ``"hard"`` is ``1[rho > 1/2] * median slab``,
        ``"mean"`` is ``rho * E[s]``."""
        out = self.posterior.pair(x_prev, x_next)
        if mode not in ("hard", "mean"):
            raise ValueError(f"mode must be 'hard' or 'mean', got {mode!r}")
        if self.config.speeds == "dense":
            return out.mu                       # the posterior mean (and median) of a Gaussian speed
        if mode == "hard":
            return (out.rho > 0.5).to(out.mu) * out.mu.exp()
        if mode == "mean":
            return out.mean_speed()

    def transform(self, z: torch.Tensor, speeds: torch.Tensor, t=1.0) -> torch.Tensor:
        """One transition of latents ``[N, D]`` with speeds ``[N, M]`` at field time ``t``."""
        c = self.config
        return flowlib.flow_step(self.fields, z, speeds, t, c.h, c.n_sub, logdet=None).z

    def traverse(self, z: torch.Tensor, field: int, steps: int = 8, speed: float = 1.0) -> torch.Tensor:
        """Move latents ``[N, D]`` along one field at a constant speed: ``[N, steps + 1, D]``."""
        if isinstance(field, bool) or not isinstance(field, int) or not 0 <= field < self.M:
            raise ValueError(f"field must be an integer in [0, {self.M}), got {field!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1 (the number of flow steps), got {steps!r}")
        z = check_tensor(z, "z", ndim=2, last=self.config.latent_dim)
        g = z.new_zeros(z.shape[0], steps, self.M)
        g[..., field] = speed
        c = self.config
        return flowlib.flow(self.fields, z, g, c.h, c.n_sub, logdet=None).z

    @torch.no_grad()
    def rollout(self, frames: torch.Tensor, speeds: torch.Tensor | None = None, period: int | None = None) -> Rollout:
        """Predict ``frames`` ``[B, T + 1, C, H, W]`` from ``x_0`` alone plus speeds ``[B, T, M]`` (default: the
        hard speeds inferred from consecutive frames): flow the encoder mean of ``x_0`` and decode every step.

        Transition ``t`` uses field time ``t``; with ``period`` the field time restarts every ``period``
        transitions (``1, ..., period, 1, ...``), so that a flow longer than training never asks a time-dependent
        field about a time it was not trained at."""
        frames = check_tensor(frames, "frames", ndim=5)
        B, T1 = frames.shape[:2]
        if T1 < 2:
            raise ValueError(f"frames must hold at least 2 frames, got shape {tuple(frames.shape)}")
        mu, _ = self.encode(frames[:, 0])
        if speeds is None:
            speeds = self.infer_speeds(frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)).reshape(B, T1 - 1, -1)
        speeds = check_tensor(speeds, "speeds", ndim=3, last=self.M).to(mu)
        if speeds.shape[:2] != (B, T1 - 1):
            raise ValueError(f"speeds must have shape [B, T, M] = [{B}, {T1 - 1}, {self.M}], got {tuple(speeds.shape)}")
        if period is not None and (isinstance(period, bool) or not isinstance(period, int) or period < 1):
            raise ValueError(f"period must be an integer >= 1 or None, got {period!r}")
        c = self.config
        chunk = period or speeds.shape[1]
        path = [mu[:, None]]
        for start in range(0, speeds.shape[1], chunk):                               # one pass without a period
            part = flowlib.flow(self.fields, path[-1][:, -1], speeds[:, start:start + chunk], c.h, c.n_sub,
                                logdet=None).z
            path.append(part[:, 1:])
        z = torch.cat(path, 1)                                                        # [B, T + 1, D]
        field_time = torch.arange(speeds.shape[1], device=z.device) % chunk + 1       # [T]
        z_prev = z[:, :-1].flatten(0, 1)                                              # [B T, D]
        norms = self.fields.velocities(z_prev, field_time.repeat(B).to(z)).norm(dim=-1)   # [B T, M]
        displacement = c.h * speeds.abs() * norms.reshape(B, T1 - 1, -1)
        x_hat = self.decode(z.flatten(0, 1)).reshape(frames.shape)
        x_z0 = self.decode(mu)[:, None].expand_as(frames)
        return Rollout(x_hat, speeds, x_z0, z, displacement)

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` in nats for latents ``[..., D]`` and images ``x`` that broadcast against
        ``[..., C, H, W]``: a Bernoulli per pixel with the decoder's logits."""
        lead = z.shape[:-1]
        logits = self.decoder(z.reshape(-1, z.shape[-1])).reshape(*lead, *self.decoder_output_shape)
        return bernoulli_log_likelihood(logits, x)

    @property
    def decoder_output_shape(self) -> tuple[int, int, int]:
        c = self.config
        return c.channels, c.image_size, c.image_size

    @torch.no_grad()
    def sequence_log_weights(self, frames: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` importance log-weights per sequence, ``[B, n]``, for an IWAE bound on ``log p(x_0, ..., x_T)``.

        The latent variables are ``z_0``, the spikes ``y`` and the slabs ``s`` (``z_t`` is then a deterministic
        function of them), drawn from ``q(z_0 | x_0) q(y, s | x)`` with *hard* Bernoulli spikes; the weight is
        ``sum_t log p(x_t | z_t) + log p(z_0) + log p(y, s) - log q(z_0) - log q(y, s)``. For dense speeds
        ``g`` is Gaussian with prior ``N(0, dense_sigma^2)``."""
        c = self.config
        B = frames.shape[0]
        mu, log_var = self.encode(frames[:, 0])
        q0 = Normal(mu[:, None], (0.5 * log_var).exp()[:, None])                      # [B, 1, D]
        post = self.posterior(frames)                                                # [B, T, M]
        q_slab = Normal(post.mu[:, None], post.log_sigma.exp()[:, None])            # log-slab (or speed) [B, 1, T, M]
        z0 = q0.loc + q0.scale * torch.randn(B, n, mu.shape[-1], device=mu.device, dtype=mu.dtype)   # [B, n, D]
        log_w = Normal(0.0, 1.0).log_prob(z0).sum(-1) - q0.log_prob(z0).sum(-1)
        a = q_slab.loc + q_slab.scale * torch.randn(B, n, *post.mu.shape[1:], device=mu.device, dtype=mu.dtype)
        if c.speeds == "dense":
            g = a
            log_w = log_w + (Normal(0.0, c.dense_sigma).log_prob(g) - q_slab.log_prob(g)).sum((2, 3))
        else:
            q_spike = Bernoulli(probs=post.rho[:, None])
            y = (torch.rand_like(a) < q_spike.probs).to(a)                          # [B, n, T, M]
            s = a.exp()
            # log q(s) = log q(log s) - log s, and likewise for the prior: the Jacobians cancel in the ratio
            log_q = q_spike.log_prob(y).sum((2, 3)) + q_slab.log_prob(a).sum((2, 3))
            log_p = self.prior.log_prob(y.flatten(0, 1), s.flatten(0, 1)).reshape(B, n) + a.sum((2, 3))
            log_w = log_w + log_p - log_q
            g = y * s
        z = flowlib.flow(self.fields, z0.flatten(0, 1), g.flatten(0, 1), c.h, c.n_sub, logdet=None).z
        z = z.reshape(B, n, *z.shape[1:])                                             # [B, n, T + 1, D]
        return log_w + self.log_likelihood(z, frames[:, None]).sum(-1)

    def forward(self, frames: torch.Tensor, temperature: float = 1.0, noise_batch: int | None = None,
                noise_offset: int = 0) -> STAOutput:
        """All terms of the objective for ``frames`` ``[B, T + 1, C, H, W]``.

        ``temperature`` is the relaxed spikes' temperature. ``noise_batch``/``noise_offset``: in a
        data-parallel run, the global batch size and this shard's first row, so that the random draws match a
        single process on the global batch.
        """
        c = self.config
        frames = self._check_frames(frames)
        B, T = frames.shape[0], frames.shape[1] - 1
        D, M = c.latent_dim, self.M
        _check_shard(noise_batch, noise_offset, B)

        # Under mixed precision (torch.autocast, bf16) only the networks run in low precision: their outputs are
        # cast back to the frames' dtype, and the flow (closed-form derivatives, slogdet), the KLs and the
        # reconstruction are computed in full precision (slogdet has no bf16 kernel, and bf16's 8-bit mantissa
        # would swamp a log-determinant of a step close to the identity)
        dtype = frames.dtype

        # q(z_0 | x_0) and its KL to N(0, I)
        with record_function("sta.encoder"):
            mu, log_var = (o.to(dtype) for o in self.encoder(frames[:, 0]))
        q0 = Normal(mu, (0.5 * log_var).exp())
        eps = _sharded(lambda n: torch.randn(n, D, device=mu.device, dtype=mu.dtype), B, noise_batch, noise_offset)
        z0 = mu + q0.stddev * eps
        kl_z0 = kl_divergence(q0, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)

        # q(y_t, s_t | x_{t-1}, x_t): relaxed spikes and LogNormal slabs
        with record_function("sta.posterior"):
            post = PosteriorOutput(*(o.to(dtype) for o in self.posterior(frames)))
        logits = post.logits

        def draw_spikes(n):
            full = logits.new_zeros(n, T, M)
            full[noise_offset:noise_offset + B] = logits
            return relaxed_spikes(full, temperature, hard=c.straight_through)

        def draw_normal(n):
            return torch.randn(n, T, M, device=mu.device, dtype=mu.dtype)

        if c.speeds == "dense":         # the ablation: every field moves at every step, g ~ N(mu, sigma^2)
            y = torch.ones_like(logits)
            g = post.mu + post.log_sigma.exp() * _sharded(draw_normal, B, noise_batch, noise_offset)
        else:
            y = _sharded(draw_spikes, B, noise_batch, noise_offset)
            g = y * torch.exp(post.mu + post.log_sigma.exp() * _sharded(draw_normal, B, noise_batch, noise_offset))

        # the flow and the density along it
        with record_function("sta.flow"), torch.autocast(z0.device.type, enabled=False):
            result = flowlib.flow(self.fields, z0, g, c.h, c.n_sub, logdet=c.logdet, log_q0=q0.log_prob(z0).sum(-1))
        z = result.z
        log_prior = -0.5 * (z[:, 1:] ** 2).sum(-1) - 0.5 * D * math.log(2 * math.pi)
        kl_flow = result.log_q[:, 1:] - log_prior

        # reconstruction of every frame
        with record_function("sta.decoder"):
            logits_x = self.decoder(z.flatten(0, 1)).to(dtype)
        recon = bernoulli_log_likelihood(logits_x, frames.flatten(0, 1)).reshape(B, T + 1)

        if c.speeds == "dense":
            kl_spike = z.new_zeros(B)
            kl_slab = kl_divergence(Normal(post.mu, post.log_sigma.exp()),
                                    Normal(post.mu.new_tensor(0.0), post.mu.new_tensor(c.dense_sigma))).sum((1, 2))
        else:
            kl_spike = spike_kl(post.rho, c.pi0, c.alpha, c.beta).sum((1, 2))
            kl_slab = slab_kl(post.mu, post.log_sigma, c.slab_mu, c.slab_sigma).sum((1, 2))
        with record_function("sta.flow"), torch.autocast(z.device.type, enabled=False):
            hj = self._hj(z, y, T) if c.n_potential and c.lambda_hj > 0 else z.new_zeros(B)

        bound = recon.sum(1) - kl_z0 - kl_flow.sum(1) - kl_spike - kl_slab
        objective = (recon.sum(1) - kl_z0 - c.beta_flow * kl_flow.sum(1) - c.beta_spike * kl_spike
                     - c.beta_slab * kl_slab - c.lambda_hj * hj)
        x_hat = torch.sigmoid(logits_x).reshape(frames.shape)
        rho = torch.ones_like(post.rho) if c.speeds == "dense" else post.rho
        return STAOutput(recon, kl_z0, kl_flow, kl_spike, kl_slab, hj, objective, bound, x_hat, z, g, rho)

    def _hj(self, z, y, T):
        """``sum_{t, m potential} y_t^m (d_t u_m + |grad u_m|^2 / 2)^2`` at ``(z_{t-1}, t)``, ``[B]``."""
        B = z.shape[0]
        times = torch.arange(1, T + 1, device=z.device, dtype=z.dtype).repeat(B)
        residual = flowlib.hj_residual(self.fields.potential, z[:, :-1].flatten(0, 1), times)   # [B*T, Mp]
        use = y[..., : self.config.n_potential].flatten(0, 1)
        return (use * residual**2).reshape(B, T, -1).sum((1, 2))


def gaussian_toy_posterior(x: torch.Tensor, a: float, s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact posterior of the linear-Gaussian toy ``z ~ N(0, 1)``, ``x | z ~ N(a z, s^2)``: ``(mean, var)``."""
    var = s**2 / (s**2 + a**2)
    return a * x / (s**2 + a**2), torch.full_like(x, var)


def gaussian_toy_bound(x: torch.Tensor, a: float, s: float, q_mean: torch.Tensor, q_var: torch.Tensor
                       ) -> dict[str, torch.Tensor]:
    """The bound of the toy ``z ~ N(0, 1)``, ``x | z ~ N(a z, s^2)`` for ``q(z | x) = N(q_mean, q_var)``, in closed
    form: ``E_q[log p(x | z)] - KL(q || p(z))``, with the exact ``log p(x) = log N(x; 0, a^2 + s^2)``."""
    expected_ll = -0.5 * math.log(2 * math.pi * s**2) - ((x - a * q_mean) ** 2 + a**2 * q_var) / (2 * s**2)
    q = Normal(q_mean, q_var.sqrt())
    kl = kl_divergence(q, Normal(torch.zeros_like(q_mean), torch.ones_like(q_mean)))
    log_px = Normal(torch.zeros_like(x), torch.full_like(x, math.sqrt(a**2 + s**2))).log_prob(x)
    bound = expected_ll - kl
    return {"bound": bound, "log_px": log_px, "gap": log_px - bound, "expected_ll": expected_ll, "kl": kl}
