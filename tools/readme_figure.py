"""Make the figure shown in README.md (book/figures/helmholtz.png): python tools/readme_figure.py"""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from stabook import fields, seed_everything, viz  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "book" / "figures" / "helmholtz.png"


def main(path: Path = OUT):
    seed_everything(0)
    n = 48
    x = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    Y, X = torch.meshgrid(x, x, indexing="ij")
    grad = torch.stack([torch.cos(X) * torch.cos(2 * Y), -2 * torch.sin(X) * torch.sin(2 * Y)])
    sol = torch.stack([torch.cos(3 * X) * torch.cos(Y), 3 * torch.sin(3 * X) * torch.sin(Y)])
    v = grad + sol
    parts = fields.helmholtz_hodge_2d(v[0], v[1], spacing=2 * math.pi / n)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), dpi=80)
    viz.plot_field(axes[0], X, Y, *v, None, "a latent flow ...")
    viz.plot_field(axes[1], X, Y, *parts.gradient, parts.potential, "... = potential part (curl-free)")
    viz.plot_field(axes[2], X, Y, *parts.solenoidal, parts.stream, "+ rotational part (divergence-free)")
    plt.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
