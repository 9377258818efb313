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
from scipy.optimize import linear_sum_assignment
from torch.distributions import Normal

from ._checks import check_images, check_tensor
from .baselines import fit_directions
from .data import SequenceGenerator

__all__ = ["best_decoding", "iwae", "frame_log_likelihood", "sequence_log_likelihood", "bits_per_dim",
           "equivariance_error", "stepwise_error", "disentanglement", "typical_speeds", "composition",
           "extrapolation", "likelihoods", "evaluate", "difference_verdict", "own_fields"]


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
        return model.log_likelihood(z, x[:, None]) + log_prior - q.log_prob(z).sum(-1)

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
    if model.kind == "vae":
        per_frame = frame_log_likelihood(model, frames.flatten(0, 1), k, chunk)
        return per_frame.reshape(B, T1).sum(1)
    return iwae(lambda n: model.sequence_log_weights(frames, n), k, chunk)


def bits_per_dim(nats: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """``-nats / (dims ln 2)``: a log-likelihood in nats as bits per dimension (lower is better)."""
    if dims < 1:
        raise ValueError(f"dims must be >= 1, got {dims}")
    return -nats / (dims * math.log(2))


# ----------------------------------------------------------------------------------------------- equivariance


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
    if model.kind == "sta":
        result = model.rollout(frames)
    elif direction is None:
        raise ValueError("a model without fields (a FrameVAE) needs direction=, from baselines.fit_directions")
    else:
        result = model.rollout(frames, direction)
    return _errors(result.frames, result.z0_frames, frames)


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


def own_fields(disentanglement: dict) -> bool:
    """Does every transformation have its own field? True when each transformation's largest share of speed lies
    on its matched field and those fields are distinct. (The matching alone is one-to-one by construction, so it
    cannot tell this apart from fields that transformations share.) ``disentanglement``: the dict of
    :func:`disentanglement`, or the same read back from JSON (string keys)."""
    shares = torch.as_tensor(disentanglement["matrix"])
    largest = shares.argmax(1).tolist()
    matching = {int(k): int(v) for k, v in disentanglement["matching"].items()}
    matched = [matching[k] for k in range(len(largest))]
    return largest == matched and len(set(matched)) == len(matched)


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
    return model.rollout(frames).speeds.mean((0, 1))


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
    inferred = model.rollout(frames)
    preds = {"summed": model.rollout(frames, summed).frames, "inferred": inferred.frames,
             "single": model.rollout(frames, typical[0].expand(B, T1 - 1, -1)).frames, "identity": inferred.z0_frames}
    curves = {key: stepwise_error(value, frames) for key, value in preds.items()}
    return {"pair": list(pair), "mae": {key: curve[1:].mean().item() for key, curve in curves.items()},
            "curves": {key: curve.tolist() for key, curve in curves.items()},
            "typical_speeds": [t.tolist() for t in typical], "inferred_speeds": inferred.speeds.mean((0, 1)).tolist(),
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
    result = model.rollout(frames, period=period)
    model_curve, identity_curve = stepwise_error(result.frames, frames), stepwise_error(result.z0_frames, frames)
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
             seed: int = 0, device=None, val_images: torch.Tensor | None = None, ks=(), floor_steps: int = 0) -> dict:
    """Everything of chapter 7 on test ``images``: equivariance errors per transformation, the disentanglement
    matrix and scores of speed and of displacement (STA only), and IWAE bounds for ``k`` in ``ks`` (e.g.
    ``(1, 100)``; empty: none). A :class:`FrameVAE` needs ``val_images`` to choose its directions.

    With ``floor_steps`` > 0 every transformation also gets the per-frame floor (:func:`best_decoding` with that
    many steps, from the rollout's latents): ``per_frame_floor_mae`` over steps 1..T and ``x0_best_mae`` at
    step 0."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (sequences per transformation), got {n!r}")
    if isinstance(floor_steps, bool) or not isinstance(floor_steps, int) or floor_steps < 0:
        raise ValueError(f"floor_steps must be an integer >= 0, got {floor_steps!r}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    gen = SequenceGenerator(images.to(device), transformations=tuple(transformations), T=T)
    was_training = model.training
    model.eval()
    directions = None
    if model.kind == "vae":
        if val_images is None:
            raise ValueError("evaluating a model without fields (a FrameVAE) needs val_images to choose directions")
        val = SequenceGenerator(val_images.to(device), transformations=tuple(transformations), T=T)
        directions = _fit_directions(model, val, n, seed + 500, device)
    result = {"model": model.kind, "equivariance": {}}
    shares, dominant, moved = [], [], []
    for k, name in enumerate(gen.transformations):
        batch = gen.sample(n, generator=torch.Generator().manual_seed(seed + k), only=name, device=device)
        roll = model.rollout(batch.frames) if directions is None else model.rollout(batch.frames, directions[name])
        errors = _errors(roll.frames, roll.z0_frames, batch.frames)
        if floor_steps:
            _, best = best_decoding(model, batch.frames, roll.z, steps=floor_steps)          # [B, T + 1]
            errors["per_frame_floor_mae"] = best[:, 1:].mean().item()
            errors["x0_best_mae"] = best[:, 0].mean().item()
        result["equivariance"][name] = errors
        if directions is None:                       # one rollout serves the errors and the shares
            share, dom = _shares(roll.speeds)
            shares.append(share)
            dominant.append(dom)
            moved.append(_shares(roll.displacement)[0])
    result["equivariance_ratio"] = {name: v["mae"] / max(v["identity_mae"], 1e-12)
                                    for name, v in result["equivariance"].items()}
    result["disentanglement"] = None
    if shares:
        result["disentanglement"] = d = disentanglement(torch.stack(shares), torch.stack(dominant))
        # displacement: speed times the field's velocity norm, what actually moves the latent, on the same matching
        moved = torch.stack(moved)                                                            # [K, M]
        d["displacement_matrix"] = moved.tolist()
        d["matched_displacement_share"] = torch.stack([moved[k, m] for k, m in d["matching"].items()]).mean().item()
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
