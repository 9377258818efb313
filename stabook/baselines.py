"""Chapter 7: the baselines STA is compared with, trained by the same code (:func:`stabook.train.train`).

* :class:`FrameVAE`: a plain VAE on single frames, with STA's encoder and decoder. It has no notion of
  transformations; it predicts ``x_t`` by decoding ``z_0`` (the identity baseline) or by moving along one latent
  direction per transformation, chosen on validation data (:func:`fit_directions`).
* Ablations of STA, as configuration overrides (:data:`VARIANTS`): dense speeds (no spike and slab),
  potential fields only (FFRL-like, but unsupervised) and rotational fields only, each with the same number
  of fields ``M`` as STA.

:func:`build_model` makes the model a :class:`stabook.train.TrainConfig` asks for (``model_kind``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

from ._checks import check_tensor
from .model import STA, STAConfig
from .nets import Encoder, make_decoder

__all__ = ["FrameVAE", "VAEOutput", "VARIANTS", "MODEL_KINDS", "build_model", "fit_directions", "summarise",
           "run_comparison", "comparison_table", "LABELS"]

#: the comparison of chapter 7: variant name -> ``--set`` overrides of a training preset
VARIANTS: dict[str, tuple[str, ...]] = {
    "sta": (),
    "dense": ("speeds=dense",),
    "potential_only": ("n_potential=6", "n_rotational=0"),
    "rotational_only": ("n_potential=0", "n_rotational=6"),
    "vae": ("model_kind=vae",),
}

MODEL_KINDS = ("sta", "vae")


class VAEOutput(NamedTuple):
    """The frame-wise ELBO of a sequence ``[B, T + 1, C, H, W]``, in nats (frames are independent under a VAE)."""

    recon: torch.Tensor        # [B, T + 1], log p(x_t | z_t)
    kl: torch.Tensor           # [B, T + 1], KL(q(z_t | x_t) || N(0, I))
    objective: torch.Tensor    # [B], sum_t (recon - kl)
    bound: torch.Tensor        # [B], the same (a VAE has no weights)
    x_hat: torch.Tensor        # [B, T + 1, C, H, W], decoder means

    @property
    def loss(self) -> torch.Tensor:
        return -self.objective.mean()

    def summary(self) -> dict[str, float]:
        """Batch means (nats per sequence), with the keys of :meth:`stabook.model.STAOutput.summary`."""
        zero = 0.0
        return {"loss": self.loss.item(), "bound": self.bound.mean().item(), "recon": self.recon.sum(1).mean().item(),
                "kl_z0": self.kl.sum(1).mean().item(), "kl_flow": zero, "kl_spike": zero, "kl_slab": zero, "hj": zero}


class FrameVAE(nn.Module):
    """A VAE on single frames with the encoder and decoder an :class:`STAConfig` describes (the other fields of
    the configuration are ignored): ``z ~ N(0, I)``, ``x | z ~ Bernoulli(Dec(z))``, ``q(z | x) = N(mu(x), sigma^2(x))``.
    """

    def __init__(self, config: STAConfig | None = None):
        super().__init__()
        self.config = c = config or STAConfig()
        self.encoder = Encoder(c.latent_dim, c.channels, c.image_size, c.net_width, c.net_hidden)
        self.decoder = make_decoder(c)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, log_var)`` of ``q(z | x)``, each ``[N, D]``, for images ``[N, C, H, W]``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder means ``[N, C, H, W]`` for latents ``[N, D]``."""
        z = check_tensor(z, "z", ndim=2, last=self.config.latent_dim)
        return torch.sigmoid(self.decoder(z))

    def forward(self, frames: torch.Tensor, temperature: float = 1.0, noise_batch: int | None = None,
                noise_offset: int = 0) -> VAEOutput:
        """The ELBO of every frame of ``frames`` ``[B, T + 1, C, H, W]``. ``temperature`` is ignored (it keeps the
        signature of :meth:`STA.forward`); ``noise_batch``/``noise_offset`` shard the noise as in STA."""
        c = self.config
        frames = check_tensor(frames, "frames", ndim=5)
        if tuple(frames.shape[2:]) != (c.channels, c.image_size, c.image_size):
            raise ValueError(f"frames must have shape [B, T + 1, {c.channels}, {c.image_size}, {c.image_size}], "
                             f"got {tuple(frames.shape)}")
        B, T1 = frames.shape[:2]
        x = frames.flatten(0, 1)
        mu, log_var = self.encoder(x)
        q = Normal(mu, (0.5 * log_var).exp())
        shape = (T1, c.latent_dim)
        if noise_batch is None:
            eps = torch.randn(B, *shape, device=mu.device, dtype=mu.dtype)
        else:
            eps = torch.randn(noise_batch, *shape, device=mu.device, dtype=mu.dtype)[noise_offset:noise_offset + B]
        z = mu + q.stddev * eps.flatten(0, 1)
        logits = self.decoder(z)
        recon = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3)).reshape(B, T1)
        kl = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1).reshape(B, T1)
        objective = (recon - kl).sum(1)
        return VAEOutput(recon, kl, objective, objective, torch.sigmoid(logits).reshape(frames.shape))


def build_model(kind: str, config: STAConfig) -> nn.Module:
    """``STA(config)`` for ``kind="sta"``, ``FrameVAE(config)`` for ``kind="vae"``."""
    if kind == "sta":
        return STA(config)
    if kind == "vae":
        return FrameVAE(config)
    raise ValueError(f"model_kind must be one of {MODEL_KINDS}, got {kind!r}")


@torch.no_grad()
def fit_directions(model: nn.Module, sequences: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """For each transformation, the single latent direction that best explains its steps: the top right singular
    vector of the encoded step displacements ``mu(x_t) - mu(x_{t-1})`` (``[N T, D]``), i.e. the unit vector ``d``
    minimising ``sum ||delta - (delta . d) d||^2``. ``sequences`` maps a name to frames ``[N, T + 1, C, H, W]`` in
    which only that transformation acts (validation data). Returns unit vectors ``[D]``, oriented so the mean
    step moves along ``+d``."""
    directions = {}
    for name, frames in sequences.items():
        frames = check_tensor(frames, f"sequences[{name!r}]", ndim=5)
        mu, _ = model.encode(frames.flatten(0, 1))
        mu = mu.reshape(*frames.shape[:2], -1)
        delta = (mu[:, 1:] - mu[:, :-1]).flatten(0, 1)                      # [N T, D]
        _, _, vh = torch.linalg.svd(delta, full_matrices=False)
        d = vh[0]
        directions[name] = d if (delta @ d).mean() >= 0 else -d
    return directions


# ------------------------------------------------------------------------------------------------- comparison


def _flatten_metrics(result: dict) -> dict[str, float]:
    """The numbers of an evaluation (:func:`stabook.metrics.evaluate`) that the comparison table reports."""
    row = {}
    for name, v in result["equivariance"].items():
        row[f"equivariance_{name}"] = v["mae"]
        row[f"identity_{name}"] = v["identity_mae"]
        row[f"ratio_{name}"] = result["equivariance_ratio"][name]
    if result.get("disentanglement"):
        row["score"] = result["disentanglement"]["score"]
        row["matched_share"] = result["disentanglement"]["matched_share"]
    for kind in ("frame", "sequence"):
        for k, v in result.get("likelihood", {}).get(kind, {}).items():
            row[f"{kind}_nats_k{k}"] = v["nats"]
            row[f"{kind}_bpd_k{k}"] = v["bits_per_dim"]
    return row


def summarise(per_seed: dict[int, dict]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation (``ddof = 1``; 0 for one seed) and count of every metric over seeds."""
    rows = [_flatten_metrics(r) for r in per_seed.values()]
    keys = sorted(set().union(*rows)) if rows else []
    out = {}
    for key in keys:
        values = torch.tensor([r[key] for r in rows if key in r], dtype=torch.float64)
        out[key] = {"mean": values.mean().item(), "std": values.std().item() if len(values) > 1 else 0.0,
                    "n": len(values)}
    return out


def run_comparison(preset_name: str = "tiny", seeds=(0, 1, 2), variants=None, steps: int | None = None,
                   runs_dir="runs/compare", out=None, device=None, progress: bool = True, overrides=(),
                   command: str = "") -> dict:
    """Train and evaluate every variant of :data:`VARIANTS` (or those named) for every seed with the same
    preset, data and budget, and summarise. ``steps`` overrides the preset's budget (the temperature is then
    annealed over the first 80% of it). Each run lives in ``runs_dir/<variant>-seed<s>``: a finished run
    (``eval.json`` present) is reused, an interrupted one resumed, so the command can be repeated until done
    and split over processes. Writes ``out`` (JSON) if given; returns the results."""
    import datetime
    import json
    from pathlib import Path

    from .train import CHECKPOINT, TrainConfig, apply_overrides, preset, train

    variants = list(VARIANTS) if variants is None else list(variants)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}: expected names from {list(VARIANTS)}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    results = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": command, "preset": preset_name, "seeds": seeds, "variants": {}}
    for variant in variants:
        per_seed, configs = {}, None
        for seed in seeds:
            run_dir = Path(runs_dir) / f"{variant}-seed{seed}"
            settings = [*VARIANTS[variant], *overrides, f"seed={seed}", f"run_dir={run_dir}"]
            if device is not None:
                settings.append(f"device={device}")
            if steps is not None:
                settings += [f"steps={steps}", f"temperature_steps={max(1, int(0.8 * steps))}"]
            config = apply_overrides(preset(preset_name), settings)
            eval_path = run_dir / "eval.json"
            done = eval_path.exists() and (run_dir / "config.json").exists() and \
                TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text())).to_dict() == config.to_dict()
            if not done:
                resume = (run_dir / CHECKPOINT).exists()
                if resume:
                    saved = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
                    if saved.to_dict() != config.to_dict():
                        raise ValueError(f"{run_dir} holds a run with another configuration; move it away or "
                                         f"choose another runs_dir")
                train(config, resume=resume, progress=progress)
            per_seed[seed] = json.loads(eval_path.read_text())
            configs = config.to_dict()
        results["variants"][variant] = {"overrides": list(VARIANTS[variant]), "config": configs,
                                        "per_seed": {str(s): r for s, r in per_seed.items()},
                                        "summary": summarise(per_seed)}
        results["steps"] = configs["steps"]
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(results, indent=1))
    return results


#: how the chapter names the variants
LABELS = {"sta": "STA", "dense": "dense speeds", "potential_only": "potential only",
          "rotational_only": "rotational only", "vae": "VAE (one direction)"}


def comparison_table(results: dict, columns: dict[str, str], digits: int = 3) -> str:
    """A Markdown table of ``mean +- std`` over seeds, one row per variant of a :func:`run_comparison` result.

    ``columns`` maps a summary key (e.g. ``"ratio_rotate"``) to its column header; a variant without that
    metric (the VAE has no fields, so no disentanglement score) shows a dash."""
    lines = ["| model | " + " | ".join(columns.values()) + " |", "|---" * (len(columns) + 1) + "|"]
    for variant, entry in results["variants"].items():
        cells = []
        for key in columns:
            stat = entry["summary"].get(key)
            cells.append("-" if stat is None else f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}")
        lines.append(f"| {LABELS.get(variant, variant)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
