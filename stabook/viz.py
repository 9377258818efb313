"""Figures and animations shared by the chapters (matplotlib only, no kernel needed to view them)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation

__all__ = ["grid_points", "plot_field", "animate_paths", "show_animation"]


def grid_points(n: int = 25, lim: float = 2.5, dtype=torch.float32):
    """A square ``n x n`` grid on ``[-lim, lim]^2``: returns ``(X, Y, points)`` with points ``[n*n, 2]``."""
    axis = torch.linspace(-lim, lim, n, dtype=dtype)
    Y, X = torch.meshgrid(axis, axis, indexing="ij")
    return X, Y, torch.stack([X.reshape(-1), Y.reshape(-1)], dim=-1)


def plot_field(ax, X, Y, vx, vy, background=None, title: str = "", cmap: str = "RdBu_r",
               background_label: str | None = None, density: float = 1.1):
    """Streamlines of ``(vx, vy)`` on the grid ``(X, Y)`` over an optional scalar ``background``.

    All arrays ``[Ny, Nx]`` (tensors or arrays). Streamline width follows the speed.
    """
    to_np = lambda a: a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)  # noqa: E731
    X, Y, vx, vy = map(to_np, (X, Y, vx, vy))
    if background is not None:
        bg = to_np(background)
        lim = np.abs(bg).max() or 1.0
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


def animate_paths(paths: torch.Tensor, colors=None, titles=None, lim: float = 3.0, interval: int = 80,
                  size: float = 3.2):
    """Animate particle clouds, one panel each: ``paths`` ``[P, T, N, 2]`` (P panels, T frames).

    Returns a ``matplotlib.animation.FuncAnimation``; show it with :func:`show_animation`.
    """
    paths = paths.detach().cpu().numpy()
    n_panels, n_frames = paths.shape[:2]
    fig, axes = plt.subplots(1, n_panels, figsize=(size * n_panels, size), squeeze=False)
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
