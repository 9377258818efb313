"""Cost of the field constructions on the current device: python benchmarks/bench_fields.py [--device cpu]

Reports milliseconds per call for velocity, exact divergence (Laplacian) and its Hutchinson estimate, at
the book's latent size (D = 16) and the released code's (D = 324), batch 128.
"""

import argparse
import time

import torch

from stabook import fields, get_device


def timed(fn, repeats=20):
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default=None)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    device = get_device(args.device)
    print(f"device {device}, batch {args.batch}, torch {torch.__version__}")
    for dim in (16, 324):
        z = torch.randn(args.batch, dim, device=device)
        pot = fields.PotentialField(dim, hidden=128).to(device)
        rot = fields.RotationalField(dim, hidden=128).to(device)
        rows = {
            "PotentialField velocity": lambda: pot(z, 1.0),
            "PotentialField Laplacian (closed form)": lambda: pot.laplacian(z, 1.0),
            "PotentialField Laplacian (Hutchinson, 1 probe)": lambda: pot.laplacian(z, 1.0, "hutchinson"),
            "RotationalField velocity": lambda: rot(z),
            "divergence() by autograd, RotationalField": lambda: fields.divergence(rot, z),
        }
        if dim <= 16:
            ncl = fields.ConservationLawField(dim).to(device)
            rows["ConservationLawField velocity"] = lambda: ncl(z)
        for name, fn in rows.items():
            print(f"D={dim:4d}  {name:48s} {timed(fn):9.3f} ms")


if __name__ == "__main__":
    main()
