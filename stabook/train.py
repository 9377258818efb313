"""Chapter 6: training STA on CPU, one GPU or several (``torchrun``), with exact resume.

``python -m stabook train --preset tiny`` (digits, CPU, minutes) or ``--preset mnist --device cuda`` (the
released code's scale). Several GPUs or nodes: ``torchrun --nproc_per_node=N -m stabook train ...``
(DistributedDataParallel; every process generates the same global batch and keeps its shard, and the model's
noise is drawn for the global batch, so N processes compute what one process would).

A run directory holds ``config.json``, ``metrics.jsonl`` (one line per logged step), ``checkpoint.pt``
(written atomically: a temporary file, then a rename) and, at the end, ``eval.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
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
           "load_model", "export_run"]

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """How to train: data, optimisation, schedule, logging. ``model`` holds the :class:`STAConfig`."""

    preset: str = "tiny"
    model_kind: str = "sta"        # "sta", or "vae" (the baseline of chapter 7, stabook.baselines.FrameVAE)
    dataset: str = "digits"
    transformations: tuple = ("rotate", "scale", "hue")
    T: int = 8
    batch_size: int = 32
    steps: int = 5000
    lr: float = 1e-3
    grad_clip: float = 1000.0
    temperature_start: float = 1.0
    temperature_end: float = 0.1
    temperature_steps: int = 4000
    seed: int = 0
    device: str | None = None
    amp: bool = False              # bf16 autocast (CUDA only)
    log_every: int = 10
    ckpt_every: int = 500
    eval_sequences: int = 128
    eval_k: tuple = (1, 100)       # IWAE sample counts of the final evaluation (empty: no likelihoods)
    run_dir: str = "runs/tiny"
    model: STAConfig = field(default_factory=STAConfig)

    def __post_init__(self):
        if self.model_kind not in MODEL_KINDS:
            raise ValueError(f"model_kind must be one of {MODEL_KINDS}, got {self.model_kind!r}")
        self.eval_k = tuple(int(k) for k in self.eval_k)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["transformations"] = list(self.transformations)
        d["eval_k"] = list(self.eval_k)
        return d

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
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


def _parse_value(text: str, current):
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, tuple):
        return tuple(part for part in text.split(",") if part)
    if current is None:
        return None if text.lower() == "none" else text
    return text


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``key=value`` overrides; a key names a :class:`TrainConfig` field or a model field
    (``latent_dim=32`` or ``model.latent_dim=32``)."""
    train_values, model_values = config.to_dict(), config.model.to_dict()
    train_values.pop("model")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"an override must look like key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.removeprefix("model.")
        if key in train_values and key != "model":
            current = config.__dict__[key]
            train_values[key] = _parse_value(text, current if current is not None else "")
        elif key in model_values:
            model_values[key] = _parse_value(text, model_values[key])
        else:
            raise ValueError(f"unknown setting {key!r}: not a field of TrainConfig or STAConfig")
    return TrainConfig.from_dict({**train_values, "model": model_values})


# ---------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` atomically: a temporary file in the same folder, then ``os.replace``. An interruption
    leaves either the old checkpoint or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_model(run_dir, device="cpu") -> tuple[STA, dict]:
    """The trained model of a run directory (or a checkpoint file): an :class:`STA`, or a
    :class:`stabook.baselines.FrameVAE` for ``model_kind="vae"``; and the checkpoint's contents."""
    path = Path(run_dir)
    state = load_checkpoint(path / CHECKPOINT if path.is_dir() else path, map_location=device)
    kind = state.get("train_config", {}).get("model_kind", "sta")
    model = build_model(kind, STAConfig.from_dict(state["model_config"])).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def export_run(run_dir, out_dir, command: str) -> Path:
    """Copy a finished run into ``out_dir`` for publishing: a weights-only checkpoint (no optimiser or random
    states, so a fraction of the size) with the command that made it, plus ``metrics.jsonl``, ``eval.json`` and
    ``config.json``."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    state = load_checkpoint(run_dir / CHECKPOINT)
    out_dir.mkdir(parents=True, exist_ok=True)
    slim = {key: state[key] for key in ("format", "version", "step", "model", "model_config", "train_config")}
    slim["command"] = command
    save_checkpoint(out_dir / CHECKPOINT, slim)
    for name in ("metrics.jsonl", "eval.json", "config.json"):
        if (run_dir / name).exists():
            (out_dir / name).write_text((run_dir / name).read_text())
    (out_dir / "COMMAND").write_text(command + "\n")
    return out_dir


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


def train(config: TrainConfig, resume: bool = False, progress: bool = True, max_steps: int | None = None) -> dict:
    """Train (or, with ``resume``, continue) the run in ``config.run_dir``; returns the final summary.

    ``max_steps`` stops early (the run can be resumed later, e.g. to test exact resumption).
    """
    rank, world = _distributed()
    if config.batch_size % world:
        raise ValueError(f"batch_size ({config.batch_size}) must be divisible by the number of processes ({world})")
    device = get_device(config.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    seed_everything(config.seed)
    run_dir = Path(config.run_dir)
    images, splits = _images(config)
    generator = data.SequenceGenerator(images[splits["train"]].to(device), config.transformations, T=config.T)
    data_rng = torch.Generator().manual_seed(config.seed + 1)

    model = build_model(config.model_kind, config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = TemperatureSchedule(config.temperature_start, config.temperature_end, config.temperature_steps)
    start = 0
    ckpt_path = run_dir / CHECKPOINT
    if resume:
        state = load_checkpoint(ckpt_path, map_location=device)
        saved = STAConfig.from_dict(state["model_config"]).to_dict()        # fields added since: their defaults
        saved_kind = state.get("train_config", {}).get("model_kind", "sta")
        if saved != config.model.to_dict() or saved_kind != config.model_kind:
            raise ValueError(f"the checkpoint in {run_dir} was made with another model configuration: "
                             f"{saved_kind} {saved} != {config.model_kind} {config.model.to_dict()}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_torch"])
        data_rng.set_state(state["rng_data"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu())
        start = int(state["step"])
        metrics_file = run_dir / "metrics.jsonl"
        if rank == 0 and metrics_file.exists():       # drop entries logged after the checkpoint we resume from
            kept = [line for line in metrics_file.read_text().splitlines() if json.loads(line)["step"] <= start]
            metrics_file.write_text("".join(line + "\n" for line in kept))
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    net = DistributedDataParallel(model) if world > 1 else model
    local = config.batch_size // world
    writer = _tensorboard(run_dir) if rank == 0 else None
    end = config.steps if max_steps is None else min(config.steps, max_steps)
    bar = tqdm(range(start, end), initial=start, total=config.steps, disable=not progress or rank != 0,
               desc=f"{config.model_kind.upper()} {config.preset}", dynamic_ncols=True)
    if rank == 0 and progress:
        print(f"run directory: {run_dir.resolve()}\nresume with: python -m stabook train --resume {run_dir}")
    log = []
    skipped = 0
    tic = time.perf_counter()
    for step in bar:
        batch = generator.sample(config.batch_size, generator=data_rng, device=device)
        frames = batch.frames[rank * local:(rank + 1) * local]
        temperature = schedule(step)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda"):
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
            with open(run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(entry) + "\n")
            if writer is not None:
                for key, value in entry.items():
                    writer.add_scalar(key, value, done)
            bar.set_postfix(loss=f"{entry['loss']:.0f}", kl_flow=f"{entry['kl_flow']:.1f}",
                            spike=f"{entry['kl_spike']:.1f}", tau=f"{temperature:.2f}")
        if rank == 0 and (done % config.ckpt_every == 0 or done == end):
            save_checkpoint(ckpt_path, {
                "format": 1, "version": __version__, "step": done, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "model_config": config.model.to_dict(),
                "train_config": config.to_dict(), "rng_torch": torch.get_rng_state(),
                "rng_data": data_rng.get_state(),
                **({"rng_cuda": torch.cuda.get_rng_state()} if device.type == "cuda" else {})})
    bar.close()
    summary = {"step": end, "last": log[-1] if log else None}
    if rank == 0 and end == config.steps:
        result = metrics.evaluate(model, images[splits["test"]], config.transformations, n=config.eval_sequences,
                                  T=config.T, seed=config.seed + 1000, device=device,
                                  val_images=images[splits["val"]], ks=config.eval_k)
        (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
        summary["eval"] = result
    if writer is not None:
        writer.close()
    if world > 1:
        dist.barrier()
    return summary


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:          # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
