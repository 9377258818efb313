"""Chapter 7: the baselines STA is compared with, trained by the same code (:func:`stabook.train.train`).

* :class:`FrameVAE`: a plain VAE on single frames, with STA's encoder and decoder. It has no notion of
  transformations; it predicts ``x_t`` by decoding ``z_0`` (the identity baseline) or by moving along one latent
  direction per transformation, chosen on validation data (:func:`fit_directions`).
* Ablations of STA, as configuration overrides (:data:`VARIANTS`): dense speeds (no spike and slab),
  potential fields only (FFRL-like, but unsupervised) and rotational fields only, each with the same number
  of fields ``M`` as STA.

:func:`build_model` makes the model a :class:`stabook.train.TrainConfig` asks for (``model_kind``). The comparison
of all of them over seeds is :mod:`stabook.compare`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from ._checks import check_images, check_tensor
from .model import STA, Rollout, STAConfig, _check_shard, bernoulli_log_likelihood
from .nets import Encoder, make_decoder

__all__ = ["FrameVAE", "VAEOutput", "VARIANTS", "LABELS", "MODEL_KINDS", "build_model", "fit_directions"]

#: the comparison of chapter 7: variant name -> ``--set`` overrides of a training preset
VARIANTS: dict[str, tuple[str, ...]] = {
    "sta": (),
    "dense": ("speeds=dense",),
    "potential_only": ("n_potential=6", "n_rotational=0"),
    "rotational_only": ("n_potential=0", "n_rotational=6"),
    "vae": ("model_kind=vae",),
}

#: how the chapter names the variants
LABELS = {"sta": "STA", "dense": "dense speeds", "potential_only": "potential only",
          "rotational_only": "rotational only", "vae": "VAE (one direction)"}

MODEL_KINDS = ("sta", "vae")


class VAEOutput(NamedTuple):
    """The frame-wise ELBO of a sequence ``[B, T + 1, C, H, W]``, in nats (frames are independent under a VAE)."""

    recon: torch.Tensor        # [B, T + 1], log p(x_t | z_t)
    kl: torch.Tensor           # [B, T + 1], KL(q(z_t | x_t) || N(0, I))
    objective: torch.Tensor    # [B], sum_t (recon - kl)
    bound: torch.Tensor        # [B], the same (a VAE has no weights)
    x_hat: torch.Tensor        # [B, T + 1, C, H, W], decoder means

    @property
    def loss(self) -> torch.Tensor:
        return -self.objective.mean()

    def summary(self) -> dict[str, float]:
        """Batch means (nats per sequence), with the keys of :meth:`stabook.model.STAOutput.summary`."""
        zero = 0.0
        return {"loss": self.loss.item(), "bound": self.bound.mean().item(), "recon": self.recon.sum(1).mean().item(),
                "kl_z0": self.kl.sum(1).mean().item(), "kl_flow": zero, "kl_spike": zero, "kl_slab": zero, "hj": zero}


class FrameVAE(nn.Module):
    """A VAE on single frames with the encoder and decoder an :class:`STAConfig` describes (the other fields of
    the configuration are ignored): ``z ~ N(0, I)``, ``x | z ~ Bernoulli(Dec(z))``, ``q(z | x) = N(mu(x), sigma^2(x))``.
    """

    kind = "vae"

    def __init__(self, config: STAConfig | None = None):
        super().__init__()
        self.config = c = config or STAConfig()
        self.encoder = Encoder(c.latent_dim, c.channels, c.image_size, c.net_width, c.net_hidden)
        self.decoder = make_decoder(c)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_var)`` of ``q(z | x)``, each ``[N, D]``, for images ``[N, C, H, W]``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder means ``[N, C, H, W]`` for latents ``[N, D]``."""
        z = check_tensor(z, "z", ndim=2, last=self.config.latent_dim)
        return torch.sigmoid(self.decoder(z))

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` in nats for latents ``[..., D]`` and images ``x`` that broadcast against
        ``[..., C, H, W]``: a Bernoulli per pixel, as in STA."""
        c = self.config
        logits = self.decoder(z.reshape(-1, z.shape[-1])).reshape(*z.shape[:-1], c.channels, c.image_size,
                                                                   c.image_size)
        return bernoulli_log_likelihood(logits, x)

    @torch.no_grad()
    def rollout(self, frames: torch.Tensor, direction: torch.Tensor) -> Rollout:
        """The VAE's prediction along one latent ``direction`` ``[D]`` (:func:`fit_directions`): speeds read
        from consecutive frames, ``a_t = (mu(x_t) - mu(x_{t-1})) . d``, and ``z_t = z_{t-1} + a_t d`` from
        ``z_0 = mu(x_0)``. Speeds and displacements are ``[B, T, 1]``."""
        frames = check_tensor(frames, "frames", ndim=5)
        direction = check_tensor(direction, "direction", ndim=1, last=self.config.latent_dim)
        B, T1 = frames.shape[:2]
        mu, _ = self.encode(frames.flatten(0, 1))
        mu = mu.reshape(B, T1, -1)
        d = direction.to(mu) / direction.norm()
        a = (mu[:, 1:] - mu[:, :-1]) @ d                                                # [B, T]
        z = mu[:, :1] + torch.cat([a.new_zeros(B, 1), a.cumsum(1)], 1)[..., None] * d
        x_hat = self.decode(z.flatten(0, 1)).reshape(frames.shape)
        x_z0 = self.decode(mu[:, 0])[:, None].expand_as(frames)
        return Rollout(x_hat, a[..., None], x_z0, z, a.abs()[..., None])

    def forward(self, frames: torch.Tensor, temperature: float = 1.0, noise_batch: int | None = None,
                noise_offset: int = 0) -> VAEOutput:
        """The ELBO of every frame of ``frames`` ``[B, T + 1, C, H, W]``. ``temperature`` is ignored (it keeps the
        signature of :meth:`STA.forward`); ``noise_batch``/``noise_offset`` shard the noise as in STA."""
        c = self.config
        frames = check_images(frames, "frames", ndim=5, dtype=next(self.decoder.parameters()).dtype)
        if tuple(frames.shape[2:]) != (c.channels, c.image_size, c.image_size):
            raise ValueError(f"frames must have shape [B, T + 1, {c.channels}, {c.image_size}, {c.image_size}], "
                             f"got {tuple(frames.shape)}")
        B, T1 = frames.shape[:2]
        _check_shard(noise_batch, noise_offset, B)
        x = frames.flatten(0, 1)
        mu, log_var = (o.to(frames.dtype) for o in self.encoder(x))        # full precision outside the networks
        q = Normal(mu, (0.5 * log_var).exp())
        shape = (T1, c.latent_dim)
        if noise_batch is None:
            eps = torch.randn(B, *shape, device=mu.device, dtype=mu.dtype)
        else:
            eps = torch.randn(noise_batch, *shape, device=mu.device, dtype=mu.dtype)[noise_offset:noise_offset + B]
        z = mu + q.stddev * eps.flatten(0, 1)
        logits = self.decoder(z).to(frames.dtype)
        recon = bernoulli_log_likelihood(logits, x).reshape(B, T1)
        kl = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1).reshape(B, T1)
        objective = (recon - kl).sum(1)
        return VAEOutput(recon, kl, objective, objective, torch.sigmoid(logits).reshape(frames.shape))


def build_model(kind: str, config: STAConfig) -> nn.Module:
    """``STA(config)`` for ``kind="sta"``, ``FrameVAE(config)`` for ``kind="vae"``."""
    if kind == "sta":
        return STA(config)
    if kind == "vae":
        return FrameVAE(config)
    raise ValueError(f"model_kind must be one of {MODEL_KINDS}, got {kind!r}")


@torch.no_grad()
def fit_directions(model: nn.Module, sequences: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """For each transformation, the single latent direction that best explains its steps: the top right singular
    vector of the encoded step displacements ``mu(x_t) - mu(x_{t-1})`` (``[N T, D]``), i.e. the unit vector ``d``
    minimising ``sum ||delta - (delta . d) d||^2``. ``sequences`` maps a name to frames ``[N, T + 1, C, H, W]`` in
    which only that transformation acts (validation data). Returns unit vectors ``[D]``, oriented so the mean
    step moves along ``+d``."""
    directions = {}
    for name, frames in sequences.items():
        frames = check_tensor(frames, f"sequences[{name!r}]", ndim=5)
        mu, _ = model.encode(frames.flatten(0, 1))
        mu = mu.reshape(*frames.shape[:2], -1)
        delta = (mu[:, 1:] - mu[:, :-1]).flatten(0, 1)                      # [N T, D]
        _, _, vh = torch.linalg.svd(delta, full_matrices=False)
        d = vh[0]
        directions[name] = d if (delta @ d).mean() >= 0 else -d
    return directions
