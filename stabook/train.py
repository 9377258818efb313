"""Chapter 6: the training loop of STA on CPU, one GPU or several (``torchrun``), with exact resume.

``python -m stabook train --preset tiny`` (digits, CPU, minutes) or ``--preset mnist --device cuda`` (the
released code's scale). Several GPUs or nodes: ``torchrun --nproc_per_node=N -m stabook train ...``
(DistributedDataParallel; every process generates the same global batch and keeps its shard, and the model's
noise is drawn for the global batch, so N processes compute what one process would).

One optimisation step is :func:`train_step`; the trainer, ``stabook doctor`` and the benchmarks all use it.
Settings and presets live in :mod:`stabook.config`, run folders and checkpoints in :mod:`stabook.runs`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import __version__, data, metrics
from .baselines import build_model
from .config import AMP_DEVICES, PRESETS, TrainConfig, apply_overrides, preset
from .model import STAOutput
from .runs import (
    CHECKPOINT,
    COMMAND,
    HISTORY,
    METRICS,
    RUN_FILES,
    RunError,
    folder_contents,
    folder_kind,
    holds_run,
    load_checked,
    load_model,
    read_config,
    read_metrics,
    require_keys,
    resume_changes,
    resume_command,
    run_lock,
    save_checkpoint,
    start_command,
    sweep_temporaries,
    wall_time,
    write_atomic,
)
from .runtime import get_device, seed_everything
from .sparse import TemperatureSchedule

__all__ = ["train", "train_step", "StepResult", "TrainConfig", "PRESETS", "preset", "apply_overrides",
           "load_model", "RunError"]


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


class StepResult(NamedTuple):
    """What one :func:`train_step` did."""

    output: STAOutput          # every term of the objective (a FrameVAE's output has the same fields)
    grad_norm: torch.Tensor    # the gradient's norm before clipping, a scalar
    updated: bool              # False: the gradient was not finite and the update was skipped


def train_step(net, optimizer: torch.optim.Optimizer, frames: torch.Tensor, temperature: float, *,
               amp: bool = False, grad_clip: float = math.inf, **forward) -> StepResult:
    """One optimisation step on ``frames`` ``[B, T + 1, C, H, W]``: the forward pass (under bf16 autocast when
    ``amp`` and the device supports it; the model keeps its flow in float32), the gradient of ``out.loss``
    (the negative weighted objective), clipping of its norm to ``grad_clip``, and the optimiser's update.

    A non-finite gradient (the log-determinant's gradient where an Euler step nearly folds space) would poison
    every weight: the update is then skipped, as mixed-precision loss scaling does, and ``updated`` is False.
    A non-finite loss raises ``FloatingPointError``. ``forward`` goes to the model (``noise_batch``, ...)."""
    device_type = frames.device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp and device_type in AMP_DEVICES):
        out = net(frames, temperature, **forward)
    if not torch.isfinite(out.loss):
        raise FloatingPointError(f"the loss became {out.loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    updated = bool(torch.isfinite(grad_norm))
    if updated:
        optimizer.step()
    return StepResult(out, grad_norm, updated)


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

    A fresh start refuses a folder that already holds a run unless ``overwrite=True`` (which deletes that run;
    a folder that is not a run is refused even then), and takes over a run that stopped before its first
    checkpoint. ``resume=True`` continues a run exactly, applying any changed learning rate, step budget,
    schedule or logging setting (recorded in ``config.json`` and ``history.jsonl`` with the first checkpoint
    it produces, so a failed resume leaves both as they were), and refusing changes of the model, preset, data,
    transformations or seed. Every check (the checkpoint against its settings and its folder's
    ``config.json`` included) happens before a file is written. A lock keeps out a second process.
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

    # --- every check before any file is written
    if resume:
        state, changes = _check_resume(config, device, max_steps)
        replaced, note = [], None
    else:
        state, changes = None, {}
        replaced, note = _check_fresh(run_dir, overwrite)
    images, splits = _images(config)                # a missing dataset fails here too

    with contextlib.ExitStack() as stack:
        if rank == 0:
            stack.enter_context(run_lock(run_dir))
            swept = sweep_temporaries(run_dir)
            if swept:
                _say(f"removed {len(swept)} temporary file(s) left by an interrupted write: {', '.join(swept)}",
                     progress)
            if note:
                _say(note, progress)
            for name in replaced:
                shutil.rmtree(run_dir / name) if (run_dir / name).is_dir() else (run_dir / name).unlink()
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
                                                                      for k, (a, b) in changes.items())
                         + " (recorded with the first checkpoint they produce)", progress)
            event = {"event": "resume" if resume else "start", "step": start, "changed": changes,
                     "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            # a fresh start records its settings now; a resume's, with the first checkpoint that uses them, so
            # that a resume that fails leaves config.json and history.jsonl as they were
            record = _Record(run_dir, config, event)
            if not resume:
                record()
        else:
            record = None
        return _train_loop(config, state, images, splits, device, rank, world, progress, max_steps, stack, record)


class _Record:
    """Writes a start's or resume's settings to ``config.json`` and its event to ``history.jsonl``, once."""

    def __init__(self, run_dir: Path, config: TrainConfig, event: dict):
        self.run_dir, self.config, self.event, self.done = run_dir, config, event, False

    def __call__(self):
        if not self.done:
            write_atomic(self.run_dir / "config.json", json.dumps(self.config.to_dict(), indent=2))
            with open(self.run_dir / HISTORY, "a") as fh:
                fh.write(json.dumps(self.event) + "\n")
            self.done = True


def _check_resume(config: TrainConfig, device, max_steps) -> tuple[dict, dict]:
    """The checkpoint to resume from and the settings the resume changes; refuses anything that does not fit."""
    run_dir = Path(config.run_dir)
    ckpt_path = run_dir / CHECKPOINT
    if not ckpt_path.exists():
        if folder_kind(run_dir) == "unstarted":
            raise RunError(f"{run_dir} holds a run that stopped before its first checkpoint: there is nothing to "
                           f"resume; start it again (a fresh start takes over such a folder) with: "
                           f"{start_command(read_config(run_dir))}")
        raise FileNotFoundError(f"no checkpoint at {ckpt_path}: nothing to resume (start a fresh run without "
                                f"resume)")
    state, saved = load_checked(ckpt_path, map_location=device)
    require_keys(state, ckpt_path)
    if "optimizer" not in state:
        raise RunError(f"{ckpt_path} is a weights-only export (no optimiser or random state): it can be "
                       f"evaluated but not resumed")
    changes = resume_changes(saved, config)
    step = int(state["step"])
    if step > config.steps:
        raise RunError(f"cannot resume {run_dir} with steps={config.steps}: its checkpoint is already at step {step}")
    if max_steps is not None and max_steps <= step:
        raise RunError(f"cannot resume {run_dir} with max_steps={max_steps}: its checkpoint is already at step "
                       f"{step}, so nothing would train; give a larger --max-steps or leave it out")
    read_metrics(run_dir)                       # a damaged metrics file fails here, before any change
    return state, changes


def _check_fresh(run_dir: Path, overwrite: bool) -> tuple[list[str], str | None]:
    """The files a fresh start in ``run_dir`` replaces (a run with ``overwrite``, an unstarted run always) and
    what to say about it; refuses a folder that holds a run without ``overwrite``, and one that holds a run's
    files but no run."""
    kind = folder_kind(run_dir)
    contents = [name.rstrip("/") for name in folder_contents(run_dir)]
    ours = [name for name in contents if name in (*RUN_FILES, COMMAND, "tensorboard")]
    if kind == "unstarted":
        return ours, (f"taking over {run_dir}: it holds a run that stopped before its first checkpoint; "
                      f"replacing {', '.join(ours)}")
    if kind in ("run", "export"):
        if not overwrite:
            raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir} (resume=True), "
                           f"replace it with --overwrite (overwrite=True), or choose another --run-dir")
        return ours, f"--overwrite: replacing the run in {run_dir}: {', '.join(ours)}"
    if kind == "other" and (overwrite or holds_run(run_dir)):
        why = "--overwrite replaces only a run, and" if overwrite else "a fresh start would write over its files:"
        raise RunError(f"{why} {run_dir} is not a run (it holds {', '.join(contents)[:300]} and no checkpoint "
                       f"with a run's config.json); choose another --run-dir")
    return [], None


def _train_loop(config, state, images, splits, device, rank, world, progress, max_steps, stack, record) -> dict:
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
        if record is not None:                       # a resume's settings go on record with its first checkpoint
            record()

    bar = tqdm(range(start, end), initial=start, total=config.steps, disable=not progress or rank != 0,
               desc=f"{config.model_kind.upper()} {config.preset}", dynamic_ncols=True)
    if rank == 0:
        _say(f"run directory: {run_dir.resolve()}\nresume with: {resume_command(run_dir)}", progress)
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
            try:
                out, grad_norm, updated = train_step(
                    net, optimizer, frames, temperature, amp=config.amp, grad_clip=config.grad_clip,
                    noise_batch=config.batch_size if world > 1 else None, noise_offset=rank * local)
            except FloatingPointError as err:
                last = f"the last good checkpoint is {ckpt_path}" if ckpt_path.exists() else \
                    "no checkpoint was saved yet (the run stopped before its first one; check the settings)"
                raise FloatingPointError(f"{err} at step {step}; {last}") from None
            skipped += not updated
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
            _say(f"stopped by {interrupted} at step {done}; checkpoint saved; resume with: "
                 f"{resume_command(run_dir)}", True)
    elif rank == 0 and end == config.steps:
        result = metrics.evaluate(model, images[splits["test"]], config.transformations, n=config.eval_sequences,
                                  T=config.T, seed=config.seed + 1000, device=device,
                                  val_images=images[splits["val"]], ks=config.eval_k)
        try:
            result["wall_time"] = wall_time(run_dir)
        except ValueError:                   # no step was logged (steps below log_every)
            pass
        write_atomic(run_dir / "eval.json", json.dumps(result, indent=2))
        if record is not None:               # a resume that trained no step records what it evaluated with
            record()
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
