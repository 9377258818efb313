"""Training speed per preset on the current device: python benchmarks/bench_train.py [--preset tiny] [--device cpu]

Reports iterations per second (data generation, forward, backward and Adam step) and how the forward time
splits between the encoder/decoder, the pair network (posterior) and the flow (fields,
log-determinants, HJ term), from torch.profiler's record_function ranges in STA.forward.
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from stabook import data, get_device
from stabook.config import apply_overrides, preset
from stabook.model import STA
from stabook.sparse import TemperatureSchedule
from stabook.train import train_step


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--device", default=None)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    config = apply_overrides(preset(args.preset), args.set)
    device = get_device(args.device)
    if config.dataset == "mnist":           # speed does not depend on the images: avoid the download
        images = torch.rand(256, 3, 28, 28)
    else:
        images, _ = data.load_images(config.dataset)
    gen = data.SequenceGenerator(images.to(device), config.transformations, T=config.T)
    model = STA(config.model).to(device)
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
    print(f"preset {args.preset}, device {device}, batch {config.batch_size}, T {config.T}, "
          f"D {config.model.latent_dim}, M {model.M}, logdet {config.model.logdet}, amp {amp}")
    print(f"{per_iter:.3f} s per iteration, {1 / per_iter:.2f} iterations per second")
    for name in ("sta.encoder", "sta.decoder", "sta.posterior", "sta.flow"):
        print(f"  {name:14s} {100 * parts.get(name, 0.0) / total:5.1f}% of the forward time in the model's ranges")


if __name__ == "__main__":
    main()
