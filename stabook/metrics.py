"""Evaluation of a trained STA model (MODEL.md section 7): equivariance error and transformation
disentanglement, on test sequences in which a single ground-truth transformation acts at every step.

(The likelihood bounds and baselines of the evaluation chapter build on these.)
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from .data import SequenceGenerator

__all__ = ["rollout", "equivariance_error", "disentanglement", "evaluate"]


@torch.no_grad()
def rollout(model, frames: torch.Tensor):
    """Predict frames ``[B, T + 1, C, H, W]`` from ``x_0`` alone plus the speeds inferred from consecutive frames.

    Infer hard speeds from consecutive frames, flow the encoder mean, decode: ``(x_hat, speeds, x_id)``."""
    B, T1 = frames.shape[:2]
    mu, _ = model.encode(frames[:, 0])
    speeds = model.infer_speeds(frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)).reshape(B, T1 - 1, -1)
    z = [mu]
    for t in range(T1 - 1):
        z.append(model.transform(z[-1], speeds[:, t], t + 1))
    z = torch.stack(z, 1)
    x_hat = model.decode(z.flatten(0, 1)).reshape(frames.shape)
    x_id = model.decode(mu)[:, None].expand_as(frames)         # the identity baseline: z_0 at every step
    return x_hat, speeds, x_id


def equivariance_error(model, frames: torch.Tensor) -> dict[str, float]:
    """Errors of predicting frames 1..T from ``x_0`` and the inferred speeds, for ``frames`` ``[B, T + 1, C, H, W]``.

    ``mae``: mean absolute error per pixel, averaged over steps 1..T and sequences; ``identity_mae``: the same
    for decoding ``z_0`` at every step; ``released_form``: pixel-summed L1 summed over steps, averaged over
    sequences (the authors' released code's form).
    """
    x_hat, _, x_id = rollout(model, frames)
    err = (x_hat[:, 1:] - frames[:, 1:]).abs()
    return {"mae": err.mean().item(), "identity_mae": (x_id[:, 1:] - frames[:, 1:]).abs().mean().item(),
            "released_form": err.sum((1, 2, 3, 4)).mean().item()}


def disentanglement(shares: torch.Tensor, dominant: torch.Tensor) -> dict:
    """Score a ``[K, M]`` matrix of speed shares (row k: how transformation k's inferred speed mass spreads over
    the M fields) with the per-step dominant fields ``dominant`` ``[K, N]`` (argmax field per step).

    The best one-to-one matching of transformations to fields maximises the total share (Hungarian
    algorithm); the score is how often the matched field is the dominant one.
    """
    rows, cols = linear_sum_assignment(-shares.cpu().numpy())
    match = {int(r): int(c) for r, c in zip(rows, cols, strict=True)}
    hits = torch.stack([(dominant[k] == match[k]).float().mean() for k in range(shares.shape[0])])
    return {"matrix": shares.tolist(), "matching": match, "per_transformation": hits.tolist(),
            "score": hits.mean().item()}


def evaluate(model, images: torch.Tensor, transformations=("rotate", "scale", "hue"), n: int = 128, T: int = 8,
             seed: int = 0, device=None) -> dict:
    """Equivariance errors per transformation and the disentanglement matrix and score on ``n`` test
    sequences per transformation made from ``images`` (use the test split)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    gen = SequenceGenerator(images.to(device), transformations=tuple(transformations), T=T)
    was_training = model.training
    model.eval()
    result, shares, dominant = {"equivariance": {}}, [], []
    for k, name in enumerate(gen.transformations):
        batch = gen.sample(n, generator=torch.Generator().manual_seed(seed + k), only=name, device=device)
        result["equivariance"][name] = equivariance_error(model, batch.frames)
        _, speeds, _ = rollout(model, batch.frames)
        mass = speeds.abs().flatten(0, 1)                                         # [n * T, M]
        shares.append((mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)).mean(0))
        dominant.append(torch.where(mass.sum(-1) > 0, mass.argmax(-1), torch.full_like(mass[:, 0], -1).long()))
    result["disentanglement"] = disentanglement(torch.stack(shares), torch.stack(dominant))
    result["equivariance_ratio"] = {name: v["mae"] / max(v["identity_mae"], 1e-12)
                                    for name, v in result["equivariance"].items()}
    model.train(was_training)
    return result
