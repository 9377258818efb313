"""What the flow costs over a plain VAE at the paper's latent size (D = 324), on the same frames.

python benchmarks/bench_flow_cost.py [--device cpu] [--batch 8] [--T 2] [--output benchmarks/results/flow_cost.json]

Times one training iteration's forward and backward pass (no data generation, no optimiser) of STA with the
``mnist`` preset's networks and of :class:`stabook.baselines.FrameVAE` with the same encoder and decoder, and
reports STA / VAE for each way of computing the log-determinant:

* ``exact, dense``: slogdet of the D x D step Jacobian (formed as U diag(d) V, cost D^2 R + D^3 per sample);
* ``exact, structured``: what ``logdet="exact"`` does by default: the same determinant as an R x R one,
  R = M H (Sylvester's identity) when R < D (here at H = 32, R = 192), else, with hard spikes, the block of the
  fields that move (the active set); an untrained posterior switches about half of the fields on, so this row
  is the least the active set gives;
* ``hutchinson`` and ``first_order`` (not exact; for reference).

A second table times the exact step log-determinant alone (forward and backward) at the preset's shape
(D = 324, M = 6, H = 128, batch 64) for two patterns of hard spikes: every field on with probability 1/2 (an
untrained posterior), and a trained model's pattern, one field per transformation with the data's spike chain
over three transformations (three fields never move). The dense form against the active-set form, which
drops the fields that do not move (exact in value and gradient; :meth:`stabook.flow.FieldBank.active_logdet`).
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from stabook import data, flow
from stabook.baselines import FrameVAE
from stabook.config import apply_overrides, preset
from stabook.model import STA


def _time(model, frames, repeats):
    def once():
        out = model(frames, 0.5)
        model.zero_grad(set_to_none=True)
        out.loss.backward()

    once()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        once()
        times.append(time.perf_counter() - tic)
    return sorted(times)[len(times) // 2]          # the median


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--T", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    frames = torch.rand(args.batch, args.T + 1, 3, 28, 28, generator=torch.Generator().manual_seed(0)).to(device)
    rows = []
    for hidden in (128, 32):
        base = apply_overrides(preset("mnist"), [f"field_hidden={hidden}"]).model
        torch.manual_seed(0)
        vae = FrameVAE(base).to(device)
        t_vae = _time(vae, frames, args.repeats)
        for label, logdet, lowrank in (("exact, dense", "exact", False), ("exact, structured", "exact", True),
                                       ("hutchinson", "hutchinson", True), ("first_order", "first_order", True)):
            model_config = apply_overrides(preset("mnist"), [f"field_hidden={hidden}", f"logdet={logdet}"]).model
            torch.manual_seed(0)
            sta = STA(model_config).to(device)
            flow.USE_LOWRANK = lowrank
            t_sta = _time(sta, frames, args.repeats)
            flow.USE_LOWRANK = True
            rows.append({"field_hidden": hidden, "R": sta.fields.jacobian_rank, "D": sta.config.latent_dim,
                         "logdet": label, "sta_ms": 1000 * t_sta, "vae_ms": 1000 * t_vae, "ratio": t_sta / t_vae})
            print(f"H {hidden:3d} (R {rows[-1]['R']:3d}), {label:16s} STA {1000 * t_sta:7.1f} ms, VAE "
                  f"{1000 * t_vae:6.1f} ms, ratio {t_sta / t_vae:5.2f}", flush=True)
    logdets = []
    torch.manual_seed(0)
    bank = flow.FieldBank(324, 3, 3, hidden=128).to(device)
    n = 64
    z = torch.randn(n, 324, device=device)
    t = torch.ones(n, device=device)
    patterns = {"half of the fields on": (torch.rand(n, 6) < 0.5).float(),
                "one field per transformation": torch.cat([data.sample_spike_chain(
                    n // 8, 8, 3, generator=torch.Generator().manual_seed(0)).flatten(0, 1), torch.zeros(n, 3)], 1)}
    for pattern, spikes in patterns.items():
        g = (spikes * (1 + 0.1 * torch.rand(n, 6))).to(device).requires_grad_(True)
        for label, fn in (("dense", lambda g=g: torch.linalg.slogdet(
                              torch.eye(324, device=device) + bank.weighted_jacobian(z, t, g)).logabsdet),
                          ("active set", lambda g=g: bank.active_logdet(z, t, g, 1.0))):
            def once(fn=fn):
                bank.zero_grad(set_to_none=True)
                fn().sum().backward()
            once()
            times = []
            for _ in range(args.repeats):
                tic = time.perf_counter()
                once()
                times.append(time.perf_counter() - tic)
            ms = 1000 * sorted(times)[len(times) // 2]
            logdets.append({"pattern": pattern, "form": label, "ms": ms, "mean_fields_on": spikes.sum(1).mean().item()})
            print(f"log-det, {pattern:30s} ({spikes.sum(1).mean():.2f} fields on), {label:10s} {ms:7.1f} ms "
                  f"for {n} samples, forward and backward", flush=True)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({
            "command": "python benchmarks/bench_flow_cost.py " + " ".join(
                f"--{k} {v}" for k, v in vars(args).items() if v is not None and k != "output"),
            "device": str(device), "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": args.threads, "batch": args.batch, "T": args.T, "rows": rows, "logdet_alone": logdets},
            indent=1))


if __name__ == "__main__":
    main()
