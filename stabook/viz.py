"""Figures and animations shared by the chapters (matplotlib only, no kernel needed to view them)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation

__all__ = ["use_book_style", "grid_points", "plot_field", "plot_field_mix", "animate_paths", "show_animation"]


def use_book_style(dpi: int = 72):
    """Matplotlib settings shared by the chapters: modest resolution (small notebooks), clean axes."""
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "font.size": 10,
                         "axes.spines.top": False, "axes.spines.right": False})


def grid_points(n: int = 25, lim: float = 2.5, dtype=None):
    """A square ``n x n`` grid on ``[-lim, lim]^2``: returns ``(X, Y, points)`` with points ``[n*n, 2]``."""
    axis = torch.linspace(-lim, lim, n, dtype=dtype or torch.get_default_dtype())
    Y, X = torch.meshgrid(axis, axis, indexing="ij")
    return X, Y, torch.stack([X.reshape(-1), Y.reshape(-1)], dim=-1)


def plot_field(ax, X, Y, vx, vy, background=None, title: str = "", cmap: str = "RdBu_r",
               background_label: str | None = None, density: float = 1.1, vlim: float | None = None):
    """Streamlines of ``(vx, vy)`` on the grid ``(X, Y)`` over an optional scalar ``background``.

    All arrays ``[Ny, Nx]`` (tensors or arrays). Streamline width follows the speed. The colour scale is
    symmetric, ``[-vlim, vlim]`` (default: the background's largest magnitude).
    """
    to_np = lambda a: a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)  # noqa: E731
    X, Y, vx, vy = map(to_np, (X, Y, vx, vy))
    if background is not None:
        bg = to_np(background)
        lim = vlim if vlim is not None else (np.abs(bg).max() or 1.0)
        mesh = ax.pcolormesh(X, Y, bg, cmap=cmap, shading="auto", vmin=-lim, vmax=lim)
        cbar = plt.colorbar(mesh, ax=ax, fraction=0.046, pad=0.04)
        if background_label:
            cbar.set_label(background_label)
    speed = np.hypot(vx, vy)
    width = 0.4 + 1.6 * speed / (speed.max() + 1e-12)
    ax.streamplot(X[0], Y[:, 0], vx, vy, color="k", linewidth=width, density=density, arrowsize=0.8)
    ax.set_aspect("equal")
    ax.set_xlim(X.min(), X.max())
    ax.set_ylim(Y.min(), Y.max())
    ax.set_title(title)
    return ax


def animate_paths(paths: torch.Tensor, colors=None, titles=None, lim: float = 3.0, interval: int = 120,
                  size: float = 3.0, dpi: int = 60):
    """Animate particle clouds, one panel each: ``paths`` ``[P, T, N, 2]`` (P panels, T frames).

    Returns a ``matplotlib.animation.FuncAnimation``; show it with :func:`show_animation`.
    """
    paths = paths.detach().cpu().numpy()
    n_panels, n_frames = paths.shape[:2]
    fig, axes = plt.subplots(1, n_panels, figsize=(size * n_panels, size), squeeze=False, dpi=dpi)
    scatters = []
    for p, ax in enumerate(axes[0]):
        sc = ax.scatter(paths[p, 0, :, 0], paths[p, 0, :, 1], s=4, c=colors, cmap="viridis")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_title(titles[p])
        scatters.append(sc)

    def update(frame):
        for p, sc in enumerate(scatters):
            sc.set_offsets(paths[p, frame])
        return scatters

    anim = animation.FuncAnimation(fig, update, frames=n_frames, interval=interval, blit=True)
    plt.close(fig)
    return anim


def show_animation(anim):
    """An animation as self-contained HTML (JavaScript player), viewable in the static book."""
    from IPython.display import HTML

    return HTML(anim.to_jshtml(default_mode="loop"))


def plot_field_mix(ax, potential, rotational, mix: float, n: int = 25, lim: float = 2.5):
    """Streamlines of ``(1 - mix) * potential + mix * rotational`` over its divergence (2-D fields).

    The background is ``div v``: only the potential part contributes to it, so it fades as ``mix -> 1``.
    """
    from .fields import divergence

    X, Y, pts = grid_points(n, lim, dtype=next(potential.parameters()).dtype)
    with torch.no_grad():
        v = (1 - mix) * potential(pts) + mix * rotational(pts)
    div = divergence(lambda z, t: (1 - mix) * potential.velocity(z, t) + mix * rotational.velocity(z, t),
                     pts).detach()
    shape = X.shape
    return plot_field(ax, X, Y, v[:, 0].reshape(shape), v[:, 1].reshape(shape), div.reshape(shape),
                      title=f"mix = {mix:.2f}", background_label="div v")
