"""Cost of chapter 7's evaluation: python benchmarks/bench_metrics.py [--device cpu] [--preset tiny]

Seconds for the IWAE bound of single frames (64 test digits, k = 1, 100, 1000) and of sequences
(16 sequences of 9 frames, k = 1, 100), and for the full `metrics.evaluate` of one run, with a freshly
initialised model of the preset's size (the cost does not depend on the weights).
"""

import argparse
import time

import torch

from stabook import data, get_device, metrics
from stabook.baselines import build_model
from stabook.config import preset


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default=None)
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()
    device = get_device(args.device)
    config = preset(args.preset)
    torch.manual_seed(0)
    model = build_model("sta", config.model).to(device).eval()
    images, _ = data.load_digits()
    if config.model.image_size != 28:
        raise SystemExit("this benchmark uses the embedded 28-pixel digits")
    x = images[:64].to(device)
    seqs = data.SequenceGenerator(images[:64], T=config.T).sample(16, generator=torch.Generator().manual_seed(0),
                                                                  device=device).frames
    print(f"device {device}, preset {args.preset} (latent {config.model.latent_dim}), torch {torch.__version__}")
    for k in (1, 100, 1000):
        print(f"frame IWAE, 64 images, k = {k:4d}: {timed(lambda: metrics.frame_log_likelihood(model, x, k)):.3f} s")
    for k in (1, 100):
        print(f"sequence IWAE, 16 x 9 frames, k = {k:3d}: "
              f"{timed(lambda: metrics.sequence_log_likelihood(model, seqs, k)):.3f} s")
    test = images[data.split_indices(len(images))["test"]]
    seconds = timed(lambda: metrics.evaluate(model, test, n=128, ks=(1, 100)))
    print(f"metrics.evaluate (128 sequences per transformation, k = 1 and 100): {seconds:.2f} s")


if __name__ == "__main__":
    main()
