"""The model at a glance: STA's graphical model and its computation as a pipeline, drawn with matplotlib.

:func:`graphical_model` draws the generative model (solid arrows) and the inference model (dashed arrows) for
the first transitions of a sequence; :func:`pipeline` draws one forward pass, from frames to the terms of the
bound, with the tensor shapes at each stage (``B`` sequences, ``T`` transitions, ``D`` latent size, ``M``
fields). Both draw into a given ``Axes`` and return it.
"""

from __future__ import annotations

from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

__all__ = ["graphical_model", "pipeline"]

_OBSERVED = "#c9d6e8"
_LATENT = "white"
_DETERMINISTIC = "#f3e3c3"


def _node(ax, xy, text, kind="latent", r=0.32, fontsize=12):
    x, y = xy
    if kind == "deterministic":
        ax.add_patch(Rectangle((x - r, y - r), 2 * r, 2 * r, facecolor=_DETERMINISTIC, edgecolor="black", lw=1.2,
                               zorder=2))
    else:
        ax.add_patch(Circle(xy, r, facecolor=_OBSERVED if kind == "observed" else _LATENT, edgecolor="black",
                            lw=1.2, zorder=2))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, zorder=3)


def _arrow(ax, a, b, r=0.34, dashed=False, colour="black", rad=0.0, r_end=None):
    (x0, y0), (x1, y1) = a, b
    length = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    r_end = r if r_end is None else r_end
    start, end = (x0 + r * ux, y0 + r * uy), (x1 - r_end * ux, y1 - r_end * uy)
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=13, lw=1.3, color=colour,
                                 linestyle=(0, (4, 3)) if dashed else "solid", connectionstyle=f"arc3,rad={rad}",
                                 zorder=1))


def graphical_model(ax, T: int = 3):
    """STA's generative model for ``x_0 .. x_T`` (solid) and its inference model (dashed, blue).

    Rows, top to bottom: spikes ``y_t`` (a Markov chain per field), slabs ``s_t``, speeds ``g_t = y_t * s_t``
    (deterministic, square), latents ``z_t`` (``z_0 ~ N(0, I)``, then one flow step per transition) and the
    observed frames ``x_t`` (shaded).
    """
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be an int >= 1, got {T!r}")
    gap = 2.0
    rows = {"y": 4.4, "s": 3.3, "g": 2.2, "z": 1.1, "x": 0.0}
    blue = "#2b6cb0"
    for t in range(T + 1):
        x = gap * t
        _node(ax, (x, rows["z"]), f"$z_{t}$")
        _node(ax, (x, rows["x"]), f"$x_{t}$", "observed")
        _arrow(ax, (x, rows["z"]), (x, rows["x"]))
        if t == 0:                  # the encoder reads x_0
            _arrow(ax, (x, rows["x"]), (x, rows["z"]), dashed=True, colour=blue, rad=-0.9)
            continue
        _node(ax, (x, rows["y"]), f"$y_{t}$")
        _node(ax, (x, rows["s"]), f"$s_{t}$")
        _node(ax, (x, rows["g"]), f"$g_{t}$", "deterministic")
        _arrow(ax, (x, rows["y"]), (x, rows["g"]), rad=0.35)
        _arrow(ax, (x, rows["s"]), (x, rows["g"]))
        _arrow(ax, (x, rows["g"]), (x, rows["z"]))
        _arrow(ax, (x - gap, rows["z"]), (x, rows["z"]))
        if t > 1:
            _arrow(ax, (x - gap, rows["y"]), (x, rows["y"]))
        # the pair network reads (x_{t-1}, x_t) and gives q(y_t, s_t)
        pair = (x + 0.75, rows["g"] - 0.55)
        for src in (x - gap, x):
            _arrow(ax, (src, rows["x"]), pair, dashed=True, colour=blue, r_end=0.08)
        ax.add_patch(Circle(pair, 0.06, color=blue, zorder=2))
        for dst in ("y", "s"):
            _arrow(ax, pair, (x, rows[dst]), dashed=True, colour=blue, rad=0.25, r=0.08, r_end=0.34)
    ax.text(-0.9, rows["y"], "spikes", ha="right", va="center", fontsize=10)
    ax.text(-0.9, rows["s"], "slabs", ha="right", va="center", fontsize=10)
    ax.text(-0.9, rows["g"], "speeds", ha="right", va="center", fontsize=10)
    ax.text(-0.9, rows["z"], "latents", ha="right", va="center", fontsize=10)
    ax.text(-0.9, rows["x"], "frames", ha="right", va="center", fontsize=10)
    ax.text(gap * T / 2, -0.9, "solid: generative model p;   dashed: inference model q (encoder, pair network)",
            ha="center", va="center", fontsize=10, color="black")
    ax.set_xlim(-2.4, gap * T + 0.8)
    ax.set_ylim(-1.2, 5.0)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


def _box(ax, xy, w, h, title, detail="", colour="#eef2f7"):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04,rounding_size=0.12", facecolor=colour,
                                edgecolor="#334155", lw=1.2, zorder=2))
    ax.text(x + w / 2, y + h - 0.22, title, ha="center", va="top", fontsize=11, weight="bold", zorder=3)
    if detail:
        ax.text(x + w / 2, y + h / 2 - 0.22, detail, ha="center", va="center", fontsize=9, zorder=3,
                linespacing=1.35)


def _link(ax, a, b, text=""):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, lw=1.4, color="#334155", zorder=1))
    if text:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.14, text, ha="center", va="bottom", fontsize=9)


def pipeline(ax):
    """One forward pass of STA, from frames ``[B, T + 1, C, H, W]`` to the terms of the bound (chapter 5)."""
    w, h = 3.0, 1.7
    top, bottom = 2.5, 0.0
    _box(ax, (0.0, top), w, h, "encoder", "first frame $x_0$\n$\\to\\ \\mu, \\sigma$  [B, D]")
    _box(ax, (3.6, top), w, h, "sample $z_0$", "$z_0 = \\mu + \\sigma\\,\\epsilon$\n[B, D]")
    _box(ax, (0.0, bottom), w, h, "pair network", "$(x_{t-1}, x_t)$\n$\\to \\rho,\\ \\mu_s, \\sigma_s$  [B, T, M]",
         colour="#eaf5ea")
    _box(ax, (3.6, bottom), w, h, "spikes and slabs", "$y \\sim$ RelaxedBernoulli$(\\rho, \\tau)$\n"
         "$s \\sim$ LogNormal$(\\mu_s, \\sigma_s)$\n$g = y \\cdot s$  [B, T, M]", colour="#eaf5ea")
    _box(ax, (7.3, 1.25), w + 0.6, h, "flow", "$z_t = z_{t-1} + h\\,\\Sigma_m\\, g_t^m v_m$\n"
         "$M$ potential or rotational\nfields; $\\log|\\det(I + hJ)|$", colour="#fdf1dc")
    _box(ax, (11.5, 1.25), w, h, "decoder", "$z_0, \\dots, z_T$  [B, T+1, D]\n$\\to$ pixel probabilities")
    _box(ax, (15.1, 1.25), w + 0.2, h, "terms of the bound", "reconstruction\nKL($z_0$), flow KLs\n"
         "spike KL, slab KL", colour="#f6e8ef")
    _link(ax, (w, top + h / 2), (3.6, top + h / 2))
    _link(ax, (w, bottom + h / 2), (3.6, bottom + h / 2))
    _link(ax, (3.6 + w, top + h / 2), (7.3, 1.25 + h * 0.75))
    _link(ax, (3.6 + w, bottom + h / 2), (7.3, 1.25 + h * 0.25))
    _link(ax, (7.3 + w + 0.6, 1.25 + h / 2), (11.5, 1.25 + h / 2))
    _link(ax, (11.5 + w, 1.25 + h / 2), (15.1, 1.25 + h / 2))
    ax.text(-0.15, top + h / 2, "frames\n[B, T+1, C, H, W]", ha="right", va="center", fontsize=9)
    ax.set_xlim(-2.3, 18.5)
    ax.set_ylim(-0.3, top + h + 0.3)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax
