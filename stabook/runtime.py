"""Device selection and seeding, shared by every chapter and the training code."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["get_device", "seed_everything"]


def get_device(prefer: str | None = None) -> torch.device:
    """Return the best available device: CUDA, then Apple MPS, then the CPU.

    ``prefer`` (or the environment variable ``STABOOK_DEVICE``) forces a device such as ``"cpu"``;
    asking for one that is not available raises a ``ValueError`` instead of failing later.
    """
    prefer = prefer if prefer is not None else os.environ.get("STABOOK_DEVICE")
    if prefer:
        try:
            device = torch.device(prefer)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be a torch device such as cpu, cuda, cuda:1 or mps, "
                             f"got {prefer!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={prefer!r} was requested but CUDA is not available")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device={prefer!r} was requested but only {torch.cuda.device_count()} CUDA device(s) "
                             f"are present")
        if device.type in ("cpu", "mps") and device.index not in (None, 0):
            raise ValueError(f"device={prefer!r} does not exist: there is one {device.type} device, "
                             f"{device.type} (or {device.type}:0)")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device={prefer!r} was requested but MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices) and return a CPU ``torch.Generator``.

    With ``deterministic=True`` cuDNN autotuning is switched off so that seeded CUDA runs repeat too.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)
