"""Chapter 7: does the digit survive? A digit classifier as a judge of predicted frames.

A model can lower its pixel error by predicting a blurry average digit. To tell a transformed digit apart from
a blob, a small convolutional classifier, trained once on *transformed* frames of the training digits (a
classifier fit on upright digits recognises few rotated ones), reads the model's predicted frames: the
**recognition ratio** is how often it names the right digit in the predicted frames, divided by how often it
does in the true frames at the same steps (1 means the prediction is as recognisable as the truth).

The classifier is fixed before any model is trained: its training depends only on the base images, their
labels, the transformations and a seed (:func:`train_digit_classifier`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_images, check_tensor
from .data import SequenceGenerator

__all__ = ["DigitClassifier", "train_digit_classifier", "accuracy", "recognition"]


class DigitClassifier(nn.Module):
    """Two strided convolutions and a linear layer: frames ``[N, C, 28, 28]`` in [0, 1] -> logits ``[N, 10]``."""

    def __init__(self, channels: int = 3, n_classes: int = 10, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.SiLU(),          # 14 x 14
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),         # 7 x 7
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 128), nn.SiLU(), nn.Linear(128, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_images(x, "x", ndim=4, dtype=self.net[0].weight.dtype)
        if tuple(x.shape[-2:]) != (28, 28):
            raise ValueError(f"x must hold 28 x 28 frames, got shape {tuple(x.shape)}")
        return self.net(x)


def train_digit_classifier(images: torch.Tensor, labels: torch.Tensor, transformations=("rotate", "scale", "hue"),
                           steps: int = 1500, batch_size: int = 16, T: int = 8, lr: float = 2e-3,
                           seed: int = 0) -> DigitClassifier:
    """Fit a :class:`DigitClassifier` on every frame of sequences made from ``images`` ``[N, C, 28, 28]`` (the
    training digits) with ``labels`` ``[N]``; each step draws ``batch_size`` sequences of ``T + 1`` frames from
    the data's spike chain, so the classifier sees upright and transformed digits. Seeded and deterministic on
    the CPU; returns the classifier in eval mode."""
    images = check_images(images, "images", ndim=4)
    labels = check_tensor(labels, "labels", ndim=1, floating=False)
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must have one entry per image ({images.shape[0]}), got {labels.shape[0]}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    generator = SequenceGenerator(images, tuple(transformations), T=T)
    rng = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitClassifier(images.shape[1], int(labels.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        batch = generator.sample(batch_size, generator=rng)
        x = batch.frames.flatten(0, 1)                                               # [B (T + 1), C, H, W]
        y = labels[batch.index].repeat_interleave(T + 1)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(classifier: DigitClassifier, frames: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``frames`` ``[N, C, H, W]`` whose predicted class is ``labels`` ``[N]``."""
    return (classifier(frames).argmax(-1) == labels).float().mean().item()


@torch.no_grad()
def recognition(classifier: DigitClassifier, predicted: torch.Tensor, frames: torch.Tensor,
                labels: torch.Tensor) -> dict[str, float]:
    """How recognisable predicted frames are: ``predicted`` and the true ``frames``, both ``[B, T + 1, C, H, W]``,
    of sequences whose digits are ``labels`` ``[B]``; steps 1..T are scored. Returns the accuracy on the
    predictions, on the truth, and their ratio; and the same for step 0, the reconstruction of ``x_0`` against
    ``x_0`` itself (``floor_*``): the recognition the autoencoder alone keeps, before any flow."""
    if predicted.shape != frames.shape:
        raise ValueError(f"predicted and frames must have the same shape, got {tuple(predicted.shape)} and "
                         f"{tuple(frames.shape)}")
    T1 = frames.shape[1]
    y = labels.repeat_interleave(T1 - 1)
    on_predicted = accuracy(classifier, predicted[:, 1:].flatten(0, 1).clamp(0, 1), y)
    on_true = accuracy(classifier, frames[:, 1:].flatten(0, 1), y)
    floor_predicted = accuracy(classifier, predicted[:, 0].clamp(0, 1), labels)
    floor_true = accuracy(classifier, frames[:, 0], labels)
    return {"predicted": on_predicted, "true": on_true, "ratio": on_predicted / max(on_true, 1e-12),
            "floor_predicted": floor_predicted, "floor_true": floor_true,
            "floor_ratio": floor_predicted / max(floor_true, 1e-12)}
