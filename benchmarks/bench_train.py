"""Training speed per preset on the current device: python benchmarks/bench_train.py [--preset tiny] [--device cpu]
[--threads 1] [--output results.json]

Reports iterations per second (data generation, forward, backward and Adam step) and how the forward time
splits between the encoder/decoder, the pair network (posterior) and the flow (fields,
log-determinants, HJ term), from torch.profiler's record_function ranges in STA.forward. With ``--output`` the
numbers, the machine and the projected minutes of a full run (seconds per iteration times the preset's steps) are
written as JSON; measure on a quiet machine (nothing else running), for that is the cost of a run.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from stabook import __version__, data, get_device
from stabook.baselines import build_model
from stabook.config import apply_overrides, preset
from stabook.sparse import TemperatureSchedule
from stabook.train import train_step


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default=None)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", help="write the measurement as JSON to this file")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = apply_overrides(preset(args.preset), args.set)
    device = get_device(args.device)
    if config.dataset == "mnist":           # speed does not depend on the images: avoid the download
        images = torch.rand(256, 3, 28, 28)
    else:
        images, _ = data.load_images(config.dataset)
    gen = data.SequenceGenerator(images.to(device), config.transformations, T=config.T)
    model = build_model(config.model_kind, config.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = TemperatureSchedule(config.temperature_start, config.temperature_end, config.temperature_steps)
    rng = torch.Generator().manual_seed(0)
    amp = config.amp and device.type == "cuda"

    def step(i):
        frames = gen.sample(config.batch_size, generator=rng, device=device).frames
        train_step(model, opt, frames, schedule(i), amp=amp, grad_clip=config.grad_clip)

    for i in range(3):
        step(i)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for i in range(args.iters):
        step(i)
    sync()
    per_iter = (time.perf_counter() - start) / args.iters
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(3):
            step(i)
        sync()
    key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    parts = {e.key: getattr(e, key) for e in prof.key_averages() if e.key.startswith("sta.")}
    total = sum(parts.values()) or 1.0
    print(f"preset {args.preset} ({config.model_kind}), device {device}, batch {config.batch_size}, T {config.T}, "
          f"D {config.model.latent_dim}, logdet {config.model.logdet}, amp {amp}, threads {torch.get_num_threads()}")
    print(f"{per_iter:.3f} s per iteration, {1 / per_iter:.2f} iterations per second; "
          f"{config.steps:,} steps take {per_iter * config.steps / 60:.1f} min")
    if args.output:
        record = {"command": "python benchmarks/bench_train.py " + " ".join(os.sys.argv[1:]), "preset": args.preset,
                  "overrides": args.set, "model_kind": config.model_kind, "device": str(device),
                  "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                  "threads": torch.get_num_threads(), "torch": torch.__version__, "stabook": __version__,
                  "iters": args.iters, "seconds_per_iteration": per_iter, "steps": config.steps,
                  "minutes_per_run": per_iter * config.steps / 60,
                  "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.output}")
    for name in ("sta.encoder", "sta.decoder", "sta.posterior", "sta.flow"):
        print(f"  {name:14s} {100 * parts.get(name, 0.0) / total:5.1f}% of the forward time in the model's ranges")


if __name__ == "__main__":
    main()
