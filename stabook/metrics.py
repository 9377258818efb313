"""Chapter 7: evaluation.

* Likelihood: importance-weighted bounds (IWAE, Burda et al. 2016) of single frames under ``q(z_0 | x)`` and of
  whole sequences under ``q(z_0 | x_0) q(y, s | x)`` (:func:`frame_log_likelihood`,
  :func:`sequence_log_likelihood`), ``k = 1`` being the ELBO; nats, and bits per dimension.
* Equivariance error per ground-truth transformation on test sequences in which one transformation acts
  (:func:`equivariance_error`): speeds inferred from consecutive frames, the latent flowed, frames decoded.
* Transformation disentanglement (:func:`disentanglement`): the share of inferred speed mass per field for each
  transformation, with a best one-to-one matching.
* Composition and extrapolation (:func:`composition`, :func:`stepwise_error`) and :func:`evaluate`, which
  gathers everything for ``python -m stabook eval``.
* Reading a comparison over seeds (:func:`difference_verdict`): a difference of means is a finding only
  beyond two standard errors of the difference.

Models are :class:`stabook.model.STA` or :class:`stabook.baselines.FrameVAE` (which has no fields: it
predicts along one latent direction per transformation, :func:`stabook.baselines.fit_directions`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch.distributions import Bernoulli, Normal

from . import flow as flowlib
from ._checks import check_images, check_tensor
from .baselines import fit_directions
from .data import SequenceGenerator

__all__ = ["best_decoding", "iwae", "frame_log_likelihood", "sequence_log_likelihood", "bits_per_dim", "rollout",
           "direction_rollout", "equivariance_error", "stepwise_error", "disentanglement", "typical_speeds",
           "composition", "extrapolation", "likelihoods", "evaluate", "is_sta", "difference_verdict"]


def is_sta(model) -> bool:
    """Whether ``model`` has transformation fields (an STA) rather than being a plain VAE."""
    return hasattr(model, "infer_speeds")


def _check_k(k, chunk):
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")


# ------------------------------------------------------------------------------------------------ likelihood


def iwae(log_weights: Callable[[int], torch.Tensor], k: int, chunk: int = 100) -> torch.Tensor:
    """The importance-weighted bound ``log (1/k) sum_i w_i``, ``[B]``, from ``k`` samples drawn ``chunk`` at a time.

    ``log_weights(n)`` draws ``n`` fresh samples per datum and returns ``log p(x, h_i) - log q(h_i | x)``,
    ``[B, n]``. The expectation of the bound is at most ``log p(x)`` and does not decrease with ``k``.
    """
    _check_k(k, chunk)
    parts, left = [], k
    while left:
        n = min(chunk, left)
        w = log_weights(n)
        if w.ndim != 2 or w.shape[1] != n:
            raise ValueError(f"log_weights({n}) must return [B, {n}], got {tuple(w.shape)}")
        parts.append(w)
        left -= n
    return torch.logsumexp(torch.cat(parts, 1), 1) - math.log(k)


def _bernoulli_log_lik(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log p(x | z)`` summed over the last three axes ``[C, H, W]``; ``x`` broadcasts against ``logits``."""
    target = x.expand_as(logits)
    return -F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(-3).sum(-1)


@torch.no_grad()
def frame_log_likelihood(model, x: torch.Tensor, k: int = 1, chunk: int | None = None) -> torch.Tensor:
    """IWAE bound on ``log p(x)``, ``[N]`` nats, of frames ``x`` ``[N, C, H, W]``, with ``k`` samples of ``q(z | x)``.

    ``p(z) = N(0, I)``, ``p(x | z) = Bernoulli(Dec(z))`` per pixel. ``chunk`` samples are decoded at a time
    (default: about 4096 images per pass), so ``k = 1000`` fits in memory.
    """
    x = check_tensor(x, "x", ndim=4)
    N = x.shape[0]
    chunk = chunk or max(1, 4096 // N)
    _check_k(k, chunk)
    mu, log_var = model.encode(x)
    q = Normal(mu[:, None], (0.5 * log_var).exp()[:, None])                         # [N, 1, D]

    def log_weights(n):
        z = q.loc + q.scale * torch.randn(N, n, q.loc.shape[-1], device=x.device, dtype=q.loc.dtype)   # [N, n, D]
        log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
        logits = model.decoder(z.flatten(0, 1)).reshape(N, n, *x.shape[1:])
        return _bernoulli_log_lik(logits, x[:, None]) + log_prior - q.log_prob(z).sum(-1)

    return iwae(log_weights, k, chunk)


@torch.no_grad()
def sequence_log_likelihood(model, frames: torch.Tensor, k: int = 1, chunk: int | None = None) -> torch.Tensor:
    """IWAE bound on ``log p(x_0, ..., x_T)`` per sequence, ``[B]`` nats, for ``frames`` ``[B, T + 1, C, H, W]``.

    For STA the latent variables are ``z_0``, the spikes ``y`` and the slabs ``s`` (chapter 5; ``z_t``
    is then a deterministic function of them), sampled from ``q(z_0 | x_0) q(y, s | x)`` with *hard* Bernoulli
    spikes; the weight is ``sum_t log p(x_t | z_t) + log p(z_0) + log p(y, s) - log q(z_0) - log q(y, s)``. With
    ``k = 1`` this is the tight ELBO, which has no flow-density terms (chapter 5). For dense speeds ``g`` is
    Gaussian. For a :class:`FrameVAE` frames are independent, so the bound is the sum of the frame bounds.
    """
    frames = check_tensor(frames, "frames", ndim=5)
    B, T1 = frames.shape[:2]
    chunk = chunk or max(1, 4096 // (B * T1))
    _check_k(k, chunk)
    if not is_sta(model):
        per_frame = frame_log_likelihood(model, frames.flatten(0, 1), k, chunk)
        return per_frame.reshape(B, T1).sum(1)
    c = model.config
    mu, log_var = model.encode(frames[:, 0])
    q0 = Normal(mu[:, None], (0.5 * log_var).exp()[:, None])                       # [B, 1, D]
    post = model.posterior(frames)                                                   # [B, T, M]
    dense = c.speeds == "dense"
    q_slab = Normal(post.mu[:, None], post.log_sigma.exp()[:, None])                # log-slab (or speed) [B, 1, T, M]
    q_spike = Bernoulli(probs=post.rho[:, None])

    def log_weights(n):
        z0 = q0.loc + q0.scale * torch.randn(B, n, q0.loc.shape[-1], device=mu.device, dtype=mu.dtype)  # [B, n, D]
        log_w = Normal(0.0, 1.0).log_prob(z0).sum(-1) - q0.log_prob(z0).sum(-1)
        a = q_slab.loc + q_slab.scale * torch.randn(B, n, *post.mu.shape[1:], device=mu.device, dtype=mu.dtype)
        if dense:
            g = a
            log_w = log_w + (Normal(0.0, c.dense_sigma).log_prob(g) - q_slab.log_prob(g)).sum((2, 3))
        else:
            y = (torch.rand_like(a) < q_spike.probs).to(a)                          # [B, n, T, M]
            s = a.exp()
            # log q(s) = log q(log s) - log s, and likewise for the prior: the Jacobians cancel in the ratio
            log_q = q_spike.log_prob(y).sum((2, 3)) + q_slab.log_prob(a).sum((2, 3))
            log_p = model.prior.log_prob(y.flatten(0, 1), s.flatten(0, 1)).reshape(B, n) + a.sum((2, 3))
            log_w = log_w + log_p - log_q
            g = y * s
        z = flowlib.flow(model.fields, z0.flatten(0, 1), g.flatten(0, 1), c.h, c.n_sub, logdet=None).z
        logits = model.decoder(z.flatten(0, 1)).reshape(B, n, T1, *frames.shape[2:])
        return log_w + _bernoulli_log_lik(logits, frames[:, None]).sum(-1)

    return iwae(log_weights, k, chunk)


def bits_per_dim(nats: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """``-nats / (dims ln 2)``: a log-likelihood in nats as bits per dimension (lower is better)."""
    if dims < 1:
        raise ValueError(f"dims must be >= 1, got {dims}")
    return -nats / (dims * math.log(2))


# ----------------------------------------------------------------------------------------------- equivariance


@torch.no_grad()
def rollout(model, frames: torch.Tensor, speeds: torch.Tensor | None = None, period: int | None = None):
    """Predict frames ``[B, T + 1, C, H, W]`` from ``x_0`` alone plus speeds ``[B, T, M]`` (default: the hard
    speeds inferred from consecutive frames): flow the encoder mean and decode. Returns ``(x_hat, speeds, x_id)``,
    ``x_id`` being the identity baseline (``z_0`` decoded at every step).

    Transition ``t`` uses field time ``t``; with ``period`` the field time restarts every ``period`` transitions
    (``1, ..., period, 1, ...``), so that a flow longer than training never asks a time-dependent field about a
    time it was not trained at."""
    frames = check_tensor(frames, "frames", ndim=5)
    B, T1 = frames.shape[:2]
    mu, _ = model.encode(frames[:, 0])
    if speeds is None:
        speeds = model.infer_speeds(frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)).reshape(B, T1 - 1, -1)
    speeds = check_tensor(speeds, "speeds", ndim=3, last=model.M)
    c = model.config
    if period is not None and (not isinstance(period, int) or period < 1):
        raise ValueError(f"period must be a positive int or None, got {period!r}")
    chunk = period or speeds.shape[1]
    path = [mu[:, None]]
    for start in range(0, speeds.shape[1], chunk):                                  # one pass without a period
        part = flowlib.flow(model.fields, path[-1][:, -1], speeds[:, start:start + chunk].to(mu), c.h, c.n_sub,
                            logdet=None).z
        path.append(part[:, 1:])
    z = torch.cat(path, 1)                                                           # [B, T + 1, D]
    x_hat = model.decode(z.flatten(0, 1)).reshape(frames.shape)
    x_id = model.decode(mu)[:, None].expand_as(frames)
    return x_hat, speeds, x_id


@torch.no_grad()
def direction_rollout(model, frames: torch.Tensor, direction: torch.Tensor):
    """The VAE's prediction along one latent ``direction`` ``[D]``: speeds read from consecutive frames,
    ``a_t = (mu(x_t) - mu(x_{t-1})) . d``, and ``z_t = z_{t-1} + a_t d`` from ``z_0 = mu(x_0)``. Returns
    ``(x_hat, speeds [B, T, 1], x_id)`` like :func:`rollout`."""
    frames = check_tensor(frames, "frames", ndim=5)
    B, T1 = frames.shape[:2]
    mu, _ = model.encode(frames.flatten(0, 1))
    mu = mu.reshape(B, T1, -1)
    d = direction.to(mu) / direction.norm()
    a = (mu[:, 1:] - mu[:, :-1]) @ d                                                # [B, T]
    z = mu[:, :1] + torch.cat([a.new_zeros(B, 1), a.cumsum(1)], 1)[..., None] * d
    x_hat = model.decode(z.flatten(0, 1)).reshape(frames.shape)
    x_id = model.decode(mu[:, 0])[:, None].expand_as(frames)
    return x_hat, a[..., None], x_id


def stepwise_error(x_hat: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per pixel at every step, ``[T + 1]`` (step 0 is the reconstruction of ``x_0``)."""
    if x_hat.shape != frames.shape:
        raise ValueError(f"x_hat and frames must have the same shape, got {tuple(x_hat.shape)} and "
                         f"{tuple(frames.shape)}")
    return (x_hat - frames).abs().flatten(2).mean(-1).mean(0)


def equivariance_error(model, frames: torch.Tensor, direction: torch.Tensor | None = None) -> dict[str, float]:
    """Errors of predicting frames 1..T from ``x_0`` and the inferred speeds, for ``frames`` ``[B, T + 1, C, H, W]``.

    ``mae``: mean absolute error per pixel, averaged over steps 1..T and sequences; ``identity_mae``: the same
    for decoding ``z_0`` at every step; ``identity_x0_mae``: the same for the true identity, predicting
    ``x_t = x_0``; ``floor_mae``: the model's own floor, the error of decoding the encoding of ``x_0`` (step 0);
    ``released_form``: pixel-summed L1 summed over steps, averaged over
    sequences (the authors' released code's form). A VAE needs its ``direction`` for this transformation.
    """
    if is_sta(model):
        x_hat, _, x_id = rollout(model, frames)
    elif direction is None:
        raise ValueError("a model without fields (a FrameVAE) needs direction=, from baselines.fit_directions")
    else:
        x_hat, _, x_id = direction_rollout(model, frames, direction)
    return _errors(x_hat, x_id, frames)


def _errors(x_hat, x_id, frames) -> dict[str, float]:
    """The numbers of :func:`equivariance_error` from a rollout's predictions."""
    err = (x_hat[:, 1:] - frames[:, 1:]).abs()
    return {"mae": err.mean().item(), "identity_mae": (x_id[:, 1:] - frames[:, 1:]).abs().mean().item(),
            "released_form": err.sum((1, 2, 3, 4)).mean().item(),
            "identity_x0_mae": (frames[:, :1] - frames[:, 1:]).abs().mean().item(),
            "floor_mae": (x_hat[:, 0] - frames[:, 0]).abs().mean().item()}


def best_decoding(model, frames: torch.Tensor, z_init: torch.Tensor, steps: int = 300, lr: float = 0.02):
    """The latents from which the decoder draws each frame best, found by gradient descent from ``z_init``.

    ``frames`` ``[B, T+1, C, H, W]``, ``z_init`` ``[B, T+1, D]`` (e.g. a rollout's latents). Minimises the mean
    absolute error per frame, ``mean |decode(z_t) - x_t|``, over each ``z_t`` with Adam (``steps``, ``lr``), the
    decoder's weights fixed. Returns the latents ``[B, T+1, D]`` and their errors per frame ``[B, T+1]``. The
    errors are a floor for any model with this decoder that predicts frame by frame: a rollout's error above
    them is the encoder's and the flow's, and their growth from ``x_0`` to later frames says how much harder
    the decoder finds transformed digits. The search is local, so the floor is an upper estimate of the best."""
    frames = check_images(frames, "frames", ndim=5)
    z_init = check_tensor(z_init, "z_init", ndim=3)
    if z_init.shape[:2] != frames.shape[:2]:
        raise ValueError(f"z_init must have shape [B, T+1, D] with B, T+1 = {tuple(frames.shape[:2])}, got "
                         f"{tuple(z_init.shape)}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps: expected an integer >= 1, got {steps!r}")

    def errors(z):                                              # [B, T+1]
        x = model.decode(z.flatten(0, 1)).reshape(frames.shape)
        return (x - frames).abs().mean((2, 3, 4))

    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    z = z_init.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    try:
        for param in params:                                     # no gradients for the weights: they stay fixed
            param.requires_grad_(False)
        with torch.enable_grad():
            for _ in range(steps):
                optimizer.zero_grad()
                errors(z).sum().backward()
                optimizer.step()
    finally:
        for param, flag in zip(params, flags, strict=True):
            param.requires_grad_(flag)
    with torch.no_grad():
        return z.detach(), errors(z)


# ---------------------------------------------------------------------------------------------- disentanglement


def disentanglement(shares: torch.Tensor, dominant: torch.Tensor) -> dict:
    """Score a ``[K, M]`` matrix of speed shares (row k: how transformation k's inferred speed mass spreads over
    the M fields) with the per-step dominant fields ``dominant`` ``[K, N]`` (argmax field per step, -1 if none).

    The best one-to-one matching of transformations to fields maximises the total share (Hungarian algorithm).
    ``score``: how often the matched field is the dominant one on a step; ``matched_share``: the mean share of
    the matched fields, which also drops when a transformation borrows a second field part of the time.
    """
    shares = check_tensor(shares, "shares", ndim=2)
    dominant = check_tensor(dominant, "dominant", ndim=2, floating=False)
    K, M = shares.shape
    if K > M:
        raise ValueError(f"need at least as many fields as transformations, got shares of shape {tuple(shares.shape)}")
    if dominant.shape[0] != K:
        raise ValueError(f"dominant must have {K} rows (one per transformation), got {tuple(dominant.shape)}")
    rows, cols = linear_sum_assignment(-shares.detach().cpu().double().numpy())
    match = {int(r): int(c) for r, c in zip(rows, cols, strict=True)}
    hits = torch.stack([(dominant[k] == match[k]).float().mean() for k in range(K)])
    matched = torch.stack([shares[k, match[k]] for k in range(K)])
    return {"matrix": shares.tolist(), "matching": match, "per_transformation": hits.tolist(),
            "score": hits.mean().item(), "matched_share": matched.mean().item()}


def _shares(speeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Speed shares ``[M]`` averaged over steps and the dominant field per step (-1 where nothing moves)."""
    mass = speeds.abs().flatten(0, 1)                                               # [N T, M]
    total = mass.sum(-1)
    share = (mass / total[:, None].clamp_min(1e-12)).mean(0)
    return share, torch.where(total > 0, mass.argmax(-1), torch.full_like(total, -1, dtype=torch.long))


# ------------------------------------------------------------------------------------- composition, extrapolation


@torch.no_grad()
def typical_speeds(model, generator: SequenceGenerator, name: str, n: int = 64, seed: int = 0, device=None):
    """The mean inferred speed vector ``[M]`` of steps in which ``name`` alone acts at unit data speed."""
    frames = _unit_sequences(generator, (name,), n, seed, device)
    _, speeds, _ = rollout(model, frames)
    return speeds.mean((0, 1))


def _unit_sequences(generator: SequenceGenerator, names, n, seed, device, T=None):
    """Sequences in which every transformation in ``names`` acts at every step with data speed exactly 1."""
    T = generator.T if T is None else T
    idx = torch.randint(0, generator.images.shape[0], (n,), generator=torch.Generator().manual_seed(seed))
    speeds = torch.zeros(n, T, generator.K)
    for name in names:
        if name not in generator.transformations:
            raise ValueError(f"unknown transformation {name!r}: expected one of {generator.transformations}")
        speeds[..., generator.transformations.index(name)] = 1.0
    device = device if device is not None else generator.images.device
    return generator.render(generator.images[idx.to(generator.images.device)].to(device), speeds.to(device))


@torch.no_grad()
def composition(model, generator: SequenceGenerator, pair=("rotate", "hue"), n: int = 64, seed: int = 0,
                T: int | None = None) -> dict:
    """Both transformations of ``pair`` at once, at unit speed, against the model's fields applied at once.

    ``summed``: speeds fixed to the sum of the two transformations' :func:`typical_speeds` (fields combine by
    adding velocities, no frame of the combined sequence is looked at after ``x_0``); ``inferred``: speeds inferred
    from the combined sequence's frames; ``single``: only the first transformation's typical speeds;
    ``identity``: ``z_0`` at every step. Values are mean absolute errors per pixel over steps 1..T, plus the
    per-step curves, the mean speed vectors (typical per transformation, and inferred on the combined
    sequences) and the frames for a figure.
    """
    device = next(model.parameters()).device
    frames = _unit_sequences(generator, pair, n, seed, device, T)
    B, T1 = frames.shape[:2]
    typical = [typical_speeds(model, generator, name, n, seed + 1 + i, device) for i, name in enumerate(pair)]
    summed = (typical[0] + typical[1]).expand(B, T1 - 1, -1)
    inferred, inferred_speeds, identity = rollout(model, frames)
    preds = {"summed": rollout(model, frames, summed)[0], "inferred": inferred,
             "single": rollout(model, frames, typical[0].expand(B, T1 - 1, -1))[0], "identity": identity}
    curves = {key: stepwise_error(value, frames) for key, value in preds.items()}
    return {"pair": list(pair), "mae": {key: curve[1:].mean().item() for key, curve in curves.items()},
            "curves": {key: curve.tolist() for key, curve in curves.items()},
            "typical_speeds": [t.tolist() for t in typical], "inferred_speeds": inferred_speeds.mean((0, 1)).tolist(),
            "frames": frames, "predictions": preds}


@torch.no_grad()
def extrapolation(model, generator: SequenceGenerator, name: str, T: int = 16, n: int = 64, seed: int = 0,
                  period: int | None = None) -> dict:
    """Flow further than training went: test sequences of ``T`` steps in which ``name`` alone acts, speeds inferred
    from consecutive frames. Returns the per-step mean absolute errors ``[T + 1]`` of the model and of the identity
    baseline, and their ratio per step (steps 1..T). ``period``: see :func:`rollout`."""
    device = next(model.parameters()).device
    frames = generator.sample(n, generator=torch.Generator().manual_seed(seed), only=name, T=T,
                              device=device).frames
    x_hat, _, x_id = rollout(model, frames, period=period)
    model_curve, identity_curve = stepwise_error(x_hat, frames), stepwise_error(x_id, frames)
    return {"name": name, "T": T, "model": model_curve.tolist(), "identity": identity_curve.tolist(),
            "ratio": (model_curve[1:] / identity_curve[1:].clamp_min(1e-12)).tolist()}


# ------------------------------------------------------------------------------------------------------ evaluate


@torch.no_grad()
def likelihoods(model, images: torch.Tensor, generator: SequenceGenerator, ks=(1, 100), n_frames: int = 256,
                n_sequences: int = 64, seed: int = 0) -> dict:
    """IWAE bounds for ``k`` in ``ks``: of ``n_frames`` untransformed test images (nats per image and bits per
    dimension) and of ``n_sequences`` test sequences from ``generator`` (nats per sequence)."""
    device = next(model.parameters()).device
    x = images[:n_frames].to(device)
    seqs = generator.sample(n_sequences, generator=torch.Generator().manual_seed(seed), device=device).frames
    dims = x[0].numel()
    out = {"frame": {}, "sequence": {}, "n_frames": x.shape[0], "n_sequences": n_sequences, "dims": dims}
    for k in ks:
        # seeded draws that leave the caller's random state as it was
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed + k)
            f = frame_log_likelihood(model, x, k).mean().item()
            torch.manual_seed(seed + k)
            s = sequence_log_likelihood(model, seqs, k).mean().item()
        out["frame"][str(k)] = {"nats": f, "bits_per_dim": bits_per_dim(f, dims)}
        out["sequence"][str(k)] = {"nats": s, "bits_per_dim": bits_per_dim(s, dims * seqs.shape[1])}
    return out


def evaluate(model, images: torch.Tensor, transformations=("rotate", "scale", "hue"), n: int = 128, T: int = 8,
             seed: int = 0, device=None, val_images: torch.Tensor | None = None, ks=()) -> dict:
    """Everything of chapter 7 on test ``images``: equivariance errors per transformation, the disentanglement
    matrix and scores (STA only), and IWAE bounds for ``k`` in ``ks`` (e.g. ``(1, 100)``; empty: none).
    A :class:`FrameVAE` needs ``val_images`` to choose its directions."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    gen = SequenceGenerator(images.to(device), transformations=tuple(transformations), T=T)
    was_training = model.training
    model.eval()
    directions = None
    if not is_sta(model):
        if val_images is None:
            raise ValueError("evaluating a model without fields (a FrameVAE) needs val_images to choose directions")
        val = SequenceGenerator(val_images.to(device), transformations=tuple(transformations), T=T)
        directions = _fit_directions(model, val, n, seed + 500, device)
    result = {"model": "sta" if is_sta(model) else "vae", "equivariance": {}}
    shares, dominant = [], []
    for k, name in enumerate(gen.transformations):
        batch = gen.sample(n, generator=torch.Generator().manual_seed(seed + k), only=name, device=device)
        if directions is None:                       # one rollout serves the errors and the speed shares
            x_hat, speeds, x_id = rollout(model, batch.frames)
            result["equivariance"][name] = _errors(x_hat, x_id, batch.frames)
            share, dom = _shares(speeds)
            shares.append(share)
            dominant.append(dom)
        else:
            result["equivariance"][name] = equivariance_error(model, batch.frames, directions[name])
    result["equivariance_ratio"] = {name: v["mae"] / max(v["identity_mae"], 1e-12)
                                    for name, v in result["equivariance"].items()}
    result["disentanglement"] = (disentanglement(torch.stack(shares), torch.stack(dominant)) if shares else None)
    if ks:
        result["likelihood"] = likelihoods(model, images, gen, ks, seed=seed + 100)
    model.train(was_training)
    return result


def _fit_directions(model, generator, n, seed, device):
    rng = torch.Generator().manual_seed(seed)
    return fit_directions(model, {name: generator.sample(n, generator=rng, only=name, device=device).frames
                                  for name in generator.transformations})


def difference_verdict(a_mean: float, a_std: float, a_n: int, b_mean: float, b_std: float, b_n: int,
                       threshold: float = 2.0) -> dict:
    """Whether the difference of two means over seeds is a finding: ``|a - b| > threshold * SE``, with
    ``SE = sqrt(a_std^2 / a_n + b_std^2 / b_n)`` the standard error of the difference (``*_std``: standard
    deviations over seeds, ``ddof = 1``, as :func:`stabook.compare.summarise` gives them).

    Returns ``{"difference": a - b, "se": SE, "z": (a - b) / SE, "finding": bool, "verdict": "finding" or
    "not a finding"}``. Each side needs at least two seeds (one seed says nothing about the spread). With two
    exactly repeatable sides (both standard deviations 0) any difference is a finding.
    """
    for name, n in (("a_n", a_n), ("b_n", b_n)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"{name} must be an integer >= 2 (seeds), got {n!r}")
    for name, value in (("a_std", a_std), ("b_std", b_std), ("threshold", threshold)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    difference = a_mean - b_mean
    se = math.sqrt(a_std**2 / a_n + b_std**2 / b_n)
    z = difference / se if se > 0 else (0.0 if difference == 0 else math.copysign(math.inf, difference))
    finding = abs(difference) > threshold * se if se > 0 else difference != 0
    return {"difference": difference, "se": se, "z": z, "finding": bool(finding),
            "verdict": "finding" if finding else "not a finding"}
