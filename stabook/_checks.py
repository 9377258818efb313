"""Input validation shared by the modules: clear errors that name the argument."""

from __future__ import annotations

import torch


def check_tensor(x, name: str, ndim: int | tuple[int, ...] | None = None, last: int | None = None,
                 finite: bool = True, floating: bool = True) -> torch.Tensor:
    """Check that ``x`` is a tensor with the given rank, last dimension and finite values."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.dim() not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if last is not None and x.shape[-1] != last:
        raise ValueError(f"{name} must have last dimension {last}, got shape {tuple(x.shape)}")
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, but it holds NaN or infinite values")
    return x


def check_positive(value, name: str, allow_zero: bool = False) -> float:
    """Check that a scalar is a positive (or non-negative) finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    ok = value >= 0 if allow_zero else value > 0
    if not ok or value != value or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return float(value)


def check_probability(value, name: str, open_interval: bool = False) -> float:
    """Check that a scalar lies in [0, 1] (or (0, 1))."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if open_interval and not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def check_images(x, name: str, ndim: int | tuple[int, ...], dtype: torch.dtype | None = None,
                 tol: float = 1e-4) -> torch.Tensor:
    """Check images (or frames) for a Bernoulli decoder: a non-empty floating tensor of the given rank, finite, with
    pixel values in [0, 1] (within ``tol``). Integer images (say uint8 in 0..255) are refused with a hint; a
    floating tensor of another precision (float64, float16) is converted to ``dtype`` when one is given."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype} "
                        f"(for 8-bit images use x.float() / 255)")
    x = check_tensor(x, name, ndim=ndim, finite=False)
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    lo, hi = torch.aminmax(x.detach())
    lo, hi = lo.item(), hi.item()
    if lo != lo or hi != hi or abs(lo) == float("inf") or abs(hi) == float("inf"):
        raise ValueError(f"{name} must be finite, but it holds NaN or infinite values")
    if lo < -tol or hi > 1 + tol:
        raise ValueError(f"{name} must hold pixel values in [0, 1], got values in [{lo:.4g}, {hi:.4g}]"
                         + (" (for 8-bit images divide by 255)" if hi > 1.5 else ""))
    return x


def check_number(value, name: str) -> float:
    """Check that a scalar is a finite real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)
