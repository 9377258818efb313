"""The model at a glance: STA's graphical model and its computation as a pipeline, drawn with matplotlib.

:func:`graphical_model` draws the generative model (solid arrows) and :func:`inference_model` the inference
model (dashed arrows) for the first transitions of a sequence; :func:`pipeline` draws one forward pass, from
frames to the terms of the bound, with the tensor shapes at each stage (``B`` sequences, ``T`` transitions,
``D`` latent size, ``M`` fields). Both draw into a given ``Axes`` and return it.
"""

from __future__ import annotations

from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

__all__ = ["graphical_model", "inference_model", "pipeline"]

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


def _check_T(T):
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T must be an int >= 1, got {T!r}")


_ROWS = {"y": 4.4, "s": 3.3, "g": 2.2, "z": 1.1, "x": 0.0}
_GAP = 2.0
_BLUE = "#2b6cb0"


def _frame(ax, T, caption):
    for name, label in (("y", "spikes"), ("s", "slabs"), ("g", "speeds"), ("z", "latents"), ("x", "frames")):
        ax.text(-0.6, _ROWS[name], label, ha="right", va="center", fontsize=11)
    ax.text(_GAP * T / 2 - 0.6, -1.0, caption, ha="center", va="center", fontsize=11)
    ax.set_xlim(-2.5, _GAP * T + 0.5)
    ax.set_ylim(-1.4, 5.0)
    ax.set_aspect("equal")
    ax.axis("off")


def graphical_model(ax, T: int = 2):
    """STA's generative model ``p`` for ``x_0 .. x_T`` (solid arrows).

    Rows, top to bottom: spikes ``y_t`` (a Markov chain per field), slabs ``s_t``, speeds ``g_t = y_t * s_t``
    (deterministic, square), latents ``z_t`` (``z_0 ~ N(0, I)``, then one flow step per transition, square:
    determined by ``z_{t-1}`` and ``g_t``) and the observed frames ``x_t`` (shaded).
    """
    _check_T(T)
    for t in range(T + 1):
        x = _GAP * t
        _node(ax, (x, _ROWS["z"]), f"$z_{t}$", "latent" if t == 0 else "deterministic")
        _node(ax, (x, _ROWS["x"]), f"$x_{t}$", "observed")
        _arrow(ax, (x, _ROWS["z"]), (x, _ROWS["x"]))
        if t == 0:
            continue
        _node(ax, (x, _ROWS["y"]), f"$y_{t}$")
        _node(ax, (x, _ROWS["s"]), f"$s_{t}$")
        _node(ax, (x, _ROWS["g"]), f"$g_{t}$", "deterministic")
        _arrow(ax, (x, _ROWS["y"]), (x, _ROWS["g"]), rad=0.75)
        _arrow(ax, (x, _ROWS["s"]), (x, _ROWS["g"]))
        _arrow(ax, (x, _ROWS["g"]), (x, _ROWS["z"]))
        _arrow(ax, (x - _GAP, _ROWS["z"]), (x, _ROWS["z"]))
        if t > 1:
            _arrow(ax, (x - _GAP, _ROWS["y"]), (x, _ROWS["y"]))
    _frame(ax, T, "generative model $p$")
    return ax


def inference_model(ax, T: int = 2):
    """STA's inference model ``q`` for ``x_0 .. x_T`` (dashed, blue): the encoder reads ``x_0`` and gives
    ``q(z_0 | x_0)``; for each transition a pair network (a small box between the frames it reads) reads
    ``(x_{t-1}, x_t)`` and gives ``q(y_t, s_t)``. The later latents are not drawn: given ``z_0`` and the speeds
    the flow determines them, as in the generative model.
    """
    _check_T(T)
    _node(ax, (0.0, _ROWS["z"]), "$z_0$")
    for t in range(T + 1):
        x = _GAP * t
        _node(ax, (x, _ROWS["x"]), f"$x_{t}$", "observed")
        if t == 0:
            _arrow(ax, (x, _ROWS["x"]), (x, _ROWS["z"]), dashed=True, colour=_BLUE)
            continue
        _node(ax, (x, _ROWS["y"]), f"$y_{t}$")
        _node(ax, (x, _ROWS["s"]), f"$s_{t}$")
        pair = (x - _GAP / 2, _ROWS["g"])
        ax.add_patch(FancyBboxPatch((pair[0] - 0.42, pair[1] - 0.22), 0.84, 0.44, boxstyle="round,pad=0.02",
                                    facecolor="#eaf5ea", edgecolor=_BLUE, lw=1.2, zorder=2))
        ax.text(*pair, "pair", ha="center", va="center", fontsize=10, zorder=3)
        for src in (x - _GAP, x):
            _arrow(ax, (src, _ROWS["x"]), pair, dashed=True, colour=_BLUE, r_end=0.3)
        for dst in ("y", "s"):
            _arrow(ax, pair, (x, _ROWS[dst]), dashed=True, colour=_BLUE, r=0.3, r_end=0.34)
    _frame(ax, T, "inference model $q$")
    return ax


def _box(ax, xy, w, h, title, detail="", colour="#eef2f7"):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04,rounding_size=0.12", facecolor=colour,
                                edgecolor="#334155", lw=1.2, zorder=2))
    ax.text(x + w / 2, y + h - 0.18, title, ha="center", va="top", fontsize=11, weight="bold", zorder=3)
    if detail:
        ax.text(x + w / 2, y + h / 2 - 0.22, detail, ha="center", va="center", fontsize=10, zorder=3,
                linespacing=1.3)


def _link(ax, a, b):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, lw=1.4, color="#334155", zorder=1))


def pipeline(ax):
    """One forward pass of STA, from frames ``[B, T + 1, C, H, W]`` to the terms of the bound (chapter 5), in
    three rows: the first frame's encoding, the speeds read off frame pairs, then the flow, the decoder and the
    terms."""
    w, h, col = 3.3, 1.8, 3.9
    top, mid, bottom = 4.6, 2.3, 0.0
    _box(ax, (0.0, top), w, h, "encoder", "first frame $x_0$\n$\\to\\ \\mu, \\sigma$  [B, D]")
    _box(ax, (col, top), w, h, "sample $z_0$", "$z_0 = \\mu + \\sigma\\,\\epsilon$\n[B, D]")
    _box(ax, (0.0, mid), w, h, "pair network", "$(x_{t-1}, x_t)$ $\\to$\n$\\rho,\\ \\mu_s, \\sigma_s$  [B, T, M]",
         colour="#eaf5ea")
    _box(ax, (col, mid), w, h, "spikes and slabs", "$y \\sim$ RelaxedBern.$(\\rho, \\tau)$\n"
         "$s \\sim$ LogNormal$(\\mu_s, \\sigma_s)$\n$g = y \\cdot s$  [B, T, M]", colour="#eaf5ea")
    _box(ax, (2 * col, mid), w, h, "flow", "$z_t = z_{t-1} + h\\,\\Sigma_m\\, g_t^m v_m$\n"
         "$M$ fields, $\\log|\\det(I + hJ)|$", colour="#fdf1dc")
    _box(ax, (2 * col, bottom), w, h, "decoder", "$z_0, \\dots, z_T$  [B, T+1, D]\n$\\to$ pixel probabilities")
    _box(ax, (col, bottom), w, h, "terms of the bound", "reconstruction\nKL($z_0$), flow KLs\n"
         "spike KL, slab KL", colour="#f6e8ef")
    _link(ax, (w, top + h / 2), (col, top + h / 2))
    _link(ax, (w, mid + h / 2), (col, mid + h / 2))
    _link(ax, (col + w, top + h / 2), (2 * col + w / 2, mid + h + 0.05))
    _link(ax, (col + w, mid + h / 2), (2 * col, mid + h / 2))
    _link(ax, (2 * col + w / 2, mid - 0.05), (2 * col + w / 2, bottom + h + 0.05))
    _link(ax, (2 * col, bottom + h / 2), (col + w, bottom + h / 2))
    ax.text(0.0, top + h + 0.35, "frames [B, T+1, C, H, W]: the first to the encoder, each pair to the pair network",
            ha="left", va="bottom", fontsize=10)
    ax.set_xlim(-0.2, 2 * col + w + 0.2)
    ax.set_ylim(-0.2, top + h + 0.8)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax
