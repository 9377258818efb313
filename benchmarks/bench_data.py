"""Sequence generation speed: python benchmarks/bench_data.py [--device cpu] [--batch 128] [--T 8]

The target (issue 3): 128 sequences of 9 frames at 3x28x28 in under 50 ms on a 2-core CPU.
"""

import argparse
import time

import torch

from stabook import data, get_device


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--T", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    device = get_device(args.device)
    images, _ = data.load_digits()
    gen = data.SequenceGenerator(images.to(device), T=args.T)
    rng = torch.Generator().manual_seed(0)
    for _ in range(3):
        gen.sample(args.batch, generator=rng)
    times = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        gen.sample(args.batch, generator=rng)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch} x {args.T + 1} frames "
          f"x 3x28x28: median {times[len(times) // 2]:.1f} ms, best {times[0]:.1f} ms")


if __name__ == "__main__":
    main()
