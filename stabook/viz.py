"""Figures and animations shared by the chapters (matplotlib only, no kernel needed to view them)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation

from .fields import divergence
from .report import flatten_metrics
from .sparse import relaxed_spikes

__all__ = ["use_book_style", "grid_points", "plot_field", "plot_field_mix", "animate_paths", "show_animation",
           "show_sequences", "plot_spike_raster", "animate_sequences", "plot_relaxed_spikes", "plot_share_matrix",
           "plot_training_curves", "plot_step_errors", "plot_comparison", "plot_comparison_panels",
           "show_readings"]


#: the widest figure a chapter draws, in inches: at :func:`use_book_style`'s 96 dpi (672 px) it fits the book's page
#: column (about 690 px on a 1280 px wide screen)
#: without being scaled down, so a 10-point label is read at 10 points
PAGE_WIDTH = 7.0

#: the smallest font size (points) of any text in a figure
MIN_FONT = 10


def use_book_style(dpi: int = 96):
    """Matplotlib settings shared by the chapters: figures drawn at the page's own scale (96 dpi, at most
    :data:`PAGE_WIDTH` inches wide), text at least :data:`MIN_FONT` points, clean axes."""
    plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "font.size": 10,
                         "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": MIN_FONT,
                         "ytick.labelsize": MIN_FONT, "legend.fontsize": MIN_FONT,
                         "figure.titlesize": 11, "axes.spines.top": False, "axes.spines.right": False})


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

    X, Y, pts = grid_points(n, lim, dtype=next(potential.parameters()).dtype)
    with torch.no_grad():
        v = (1 - mix) * potential(pts) + mix * rotational(pts)
    div = divergence(lambda z, t: (1 - mix) * potential.velocity(z, t) + mix * rotational.velocity(z, t),
                     pts).detach()
    shape = X.shape
    return plot_field(ax, X, Y, v[:, 0].reshape(shape), v[:, 1].reshape(shape), div.reshape(shape),
                      title=f"mix = {mix:.2f}", background_label="div v")


def _to_hwc(img: torch.Tensor) -> np.ndarray:
    """``[C, H, W]`` in [0, 1] to an ``[H, W, C]`` (or ``[H, W]``) array for ``imshow``."""
    img = img.detach().cpu().clamp(0, 1)
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def show_sequences(frames: torch.Tensor, row_labels=None, size: float = 0.9, title: str | None = None):
    """Image grid of sequences ``[B, T + 1, C, H, W]``: one row per sequence, one column per frame."""
    B, T1 = frames.shape[:2]
    size = min(size, (PAGE_WIDTH - 1.4) / T1)          # room for the row labels within the page width
    fig, axes = plt.subplots(B, T1, figsize=(size * T1, size * B), squeeze=False)
    for b in range(B):
        for t in range(T1):
            ax = axes[b, t]
            ax.imshow(_to_hwc(frames[b, t]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if b == 0:
                ax.set_title(f"t={t}", fontsize=10)
        if row_labels is not None:
            axes[b, 0].set_ylabel(row_labels[b], fontsize=10, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return fig


def show_readings(rows, row_labels, readings, truths, size: float = 0.95, title: str | None = None):
    """A grid of single frames with a classifier's reading over each: ``rows`` is a list of ``[N, C, H, W]``
    frames (one row each, e.g. the true and the predicted last frame of N sequences), ``readings`` and ``truths``
    the matching lists of ``[N]`` predicted and true classes; a right reading is written in black, a wrong one in
    bold red."""
    if not len(rows) == len(row_labels) == len(readings) == len(truths):
        raise ValueError(f"rows, row_labels, readings and truths must have the same length, got {len(rows)}, "
                         f"{len(row_labels)}, {len(readings)} and {len(truths)}")
    n = rows[0].shape[0]
    size = min(size, (PAGE_WIDTH - 1.4) / n)           # room for the row labels within the page width
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n, 1.2 * size * len(rows)), squeeze=False)
    for r, (frames, reading, truth) in enumerate(zip(rows, readings, truths, strict=True)):
        for i in range(n):
            ax = axes[r, i]
            ax.imshow(_to_hwc(frames[i].clamp(0, 1)), vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            right = int(reading[i]) == int(truth[i])
            ax.set_title(str(int(reading[i])), fontsize=11, color="black" if right else "C3",
                         fontweight="normal" if right else "bold", pad=2)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=10, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(wspace=0.06, hspace=0.35)
    return fig


def plot_spike_raster(ax, spikes: torch.Tensor, names, speeds: torch.Tensor | None = None, title: str = ""):
    """Raster of spikes ``[T, K]`` (steps across, transformations down); shade by ``speeds`` if given."""
    values = (speeds if speeds is not None else spikes).detach().cpu().numpy().T
    ax.imshow(values, aspect="auto", cmap="Greys", vmin=0, vmax=max(1.0, float(values.max())),
              interpolation="nearest", extent=(0.5, values.shape[1] + 0.5, values.shape[0] - 0.5, -0.5))
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.set_xlabel("step t")
    ax.set_title(title)
    return ax


def animate_sequences(frames: torch.Tensor, labels=None, size: float = 1.4, interval: int = 300, dpi: int = 60,
                      columns: int = 6):
    """Animate sequences ``[B, T + 1, C, H, W]`` in a grid of at most ``columns`` per row; returns a
    ``FuncAnimation``."""
    B, T1 = frames.shape[:2]
    cols = min(B, columns)
    rows = -(-B // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * 1.2 * rows), squeeze=False, dpi=dpi)
    images = []
    for b, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if b >= B:
            ax.axis("off")
            continue
        images.append(ax.imshow(_to_hwc(frames[b, 0]), cmap="gray", vmin=0, vmax=1))
        if labels is not None:
            ax.set_title(labels[b], fontsize=10)

    def update(t):
        for b, im in enumerate(images):
            im.set_data(_to_hwc(frames[b, t]))
        return images

    anim = animation.FuncAnimation(fig, update, frames=T1, interval=interval, blit=True)
    plt.close(fig)
    return anim


def plot_relaxed_spikes(ax, prob: float, temperature: float, n: int = 20_000, seed: int = 0, bins: int = 40):
    """Histogram of ``RelaxedBernoulli(temperature, probs=prob)`` samples, with the share above 1/2."""

    with torch.random.fork_rng(devices=[]):          # seeded draws without touching the global stream
        torch.manual_seed(seed)
        y = relaxed_spikes(torch.full((n,), float(np.log(prob / (1 - prob)))), temperature).numpy()
    ax.hist(y, bins=bins, range=(0, 1), density=True, color="tab:purple")
    # the share above 1/2 goes in the title, where no bar can cover it
    ax.set_title(f"$\\rho$ = {prob:.2f}, $\\tau$ = {temperature:.2f}\n$P(y > 1/2)$ = {(y > 0.5).mean():.2f}",
                 fontsize=10)
    ax.set_yticks([])
    return ax


def plot_share_matrix(ax, matrix, row_names, col_names, title: str = ""):
    """Heat map of a ``[K, M]`` matrix of shares (rows: ground-truth transformations, columns: fields); shares of
    at least 0.05 are written in their cells with one decimal (smaller ones are left blank, so the cells stay
    legible at page width)."""
    values = np.asarray(matrix, dtype=float)
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(values.shape[1]))
    ax.set_xticklabels(col_names, rotation=30, ha="right", fontsize=10)
    ax.set_yticks(range(values.shape[0]))
    ax.set_yticklabels(row_names)
    for (i, j), v in np.ndenumerate(values):
        if v >= 0.05:
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=10, color="white" if v > 0.6 else "black")
    ax.set_title(title)
    return im


def plot_training_curves(axes, log: list[dict], keys=("recon", "kl_flow", "kl_spike", "kl_slab")):
    """One panel per logged quantity against the step; ``log`` is a list of ``metrics.jsonl`` entries."""
    steps = [entry["step"] for entry in log]
    for ax, key in zip(np.ravel(axes), keys, strict=False):
        ax.plot(steps, [entry[key] for entry in log], lw=0.8)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
    return axes


def plot_step_errors(ax, curves: dict, first: int = 1, mark: int | None = None, title: str = "",
                     legend: bool = True):
    """Per-step error curves (``{label: [T + 1] values}``) from step ``first``; ``mark`` draws a dashed line at
    a step (e.g. the longest training sequence)."""
    for label, values in curves.items():
        values = np.asarray(values, dtype=float)
        ax.plot(np.arange(first, len(values)), values[first:], marker="o", ms=3, lw=1, label=label)
    if mark is not None:
        ax.axvline(mark, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("step t")
    ax.set_ylabel("mean |error| per pixel")
    ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(fontsize=10, frameon=False)
    return ax


def plot_comparison(ax, results: dict, key: str, labels: dict | None = None, title: str = "",
                    reference: float | None = None, names: bool = True):
    """Horizontal bars of ``mean +- std`` over seeds of the summary metric ``key`` for each variant of a
    comparison, with each seed's value as a dot, variants top to bottom in the results' order (labelled unless
    ``names`` is False). A variant without ``key`` keeps its row, empty, so panels side by side line up;
    ``reference`` draws a vertical line (e.g. 1 for a ratio to a baseline)."""
    variants = list(results["variants"].items())
    for row, (_, entry) in enumerate(variants):
        stat = entry["summary"].get(key)
        if stat is None:
            continue
        ax.barh(row, stat["mean"], xerr=stat["std"], color="#9ecae1", edgecolor="#3182bd", capsize=3)
        seeds = _per_seed_values(entry, key)
        ax.plot(seeds, [row] * len(seeds), "k.", ms=5, zorder=3)
    ax.set_yticks(range(len(variants)))
    ax.set_yticklabels([(labels or {}).get(v, v) for v, _ in variants] if names else [], fontsize=10)
    ax.set_ylim(len(variants) - 0.5, -0.5)                  # the first variant on top
    if reference is not None:
        ax.axvline(reference, color="grey", ls="--", lw=0.8)
    ax.set_title(title or key, fontsize=11)
    return ax


def _per_seed_values(entry: dict, key: str) -> list[float]:

    return [row[key] for row in map(flatten_metrics, entry["per_seed"].values()) if key in row]


def plot_comparison_panels(results: dict, transformations, labels: dict | None = None, title: str = ""):
    """One :func:`plot_comparison` panel per transformation (the error over decoded ``z_0``, the model standing
    still) and one for the matched share, two panels to a row: the figure of a comparison's results."""
    n = len(transformations) + 1
    rows = -(-n // 2)
    fig, axes = plt.subplots(rows, 2, figsize=(PAGE_WIDTH, 2.6 * rows), squeeze=False)
    panels = list(axes.flat)
    for i, (ax, name) in enumerate(zip(panels, transformations, strict=False)):
        plot_comparison(ax, results, f"ratio_{name}", labels, f"{name}: error over decoded $z_0$", reference=1,
                        names=i % 2 == 0)
    plot_comparison(panels[n - 1], results, "matched_share", labels, "matched share", names=(n - 1) % 2 == 0)
    for ax in panels[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
