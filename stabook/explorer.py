"""A field explorer for a static HTML page: one slider per field, the decoded digit redrawn as a slider moves.

No kernel, server or widget library is needed: every frame is computed beforehand (:func:`explorer_frames`) and
embedded in the page as one sprite-sheet PNG per digit (rows: fields, columns: speeds), and a short inline script
shows the frame of the chosen digit, field and speed (:func:`field_explorer_html`). Without scripts the page shows
the sprite sheets themselves. :func:`frames_from_html` reads the frames back out of a page.

The frame of digit ``i``, field ``m`` and speed ``s`` is

    x[i, m, s] = decode(z_K),   z_0 = mu(x_i) (the encoder mean),   z_k = transition of z_{k-1} along v_m alone
                                                                     at speed s (``STA.traverse``), k = 1..K,

quantised to 8 bits as ``round(255 x)``. At ``s = 0`` the latent stays put, so the frame is the reconstruction.
"""

from __future__ import annotations

import base64
import html as htmllib
import io
import itertools
import json
import re
import uuid

import numpy as np
import torch

from ._checks import check_images, check_tensor

__all__ = ["explorer_frames", "field_explorer_html", "frames_from_html"]

_COUNTER = itertools.count()
_SPRITE = re.compile(r'<img class="sta-sprite" data-sprite="([\w-]+):(\d+)"[^>]*?src="data:image/png;base64,'
                     r'([A-Za-z0-9+/=]+)"')
_SHAPE = re.compile(r'<div class="sta-explorer" id="([\w-]+)" data-shape="([\d,]+)"')


def _check_speeds(speeds, name: str = "speeds") -> torch.Tensor:
    """Speeds as a 1-D float64 tensor ``[S]`` of distinct finite numbers, 0 among them."""
    if isinstance(speeds, torch.Tensor):
        speeds = speeds.detach().cpu().to(torch.float64)
    else:
        try:
            speeds = torch.as_tensor(speeds, dtype=torch.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a 1-D sequence or tensor of numbers, got {speeds!r}") from err
    speeds = check_tensor(speeds, name, ndim=1)
    if speeds.numel() == 0:
        raise ValueError(f"{name} must not be empty")
    if not bool((speeds == 0).any()):
        raise ValueError(f"{name} must contain 0 exactly (the reconstruction), got {speeds.tolist()}; a float32 "
                         "linspace can miss it: round the grid, e.g. torch.linspace(-2, 2, 13).round(decimals=4)")
    if speeds.unique().numel() != speeds.numel():
        raise ValueError(f"{name} must not repeat a value, got {speeds.tolist()}")
    return speeds


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def explorer_frames(model, images: torch.Tensor, speeds, steps: int = 4) -> torch.Tensor:
    """The explorer's frames: uint8 ``[N, M, S, C, H, W]`` for images ``[N, C, H, W]`` in [0, 1] and speeds ``[S]``.

    Frame ``[i, m, j]`` decodes the encoder mean of image ``i`` moved ``steps`` transitions along field ``m`` alone
    at the constant speed ``speeds[j]``: ``model.decode(model.traverse(z0, m, steps, speeds[j])[:, -1])``, as
    ``round(255 x)``. One call to ``traverse`` per field moves all digits at all speeds together. The model is
    evaluated in eval mode (its mode is restored) and without gradients.
    """
    for attr in ("encode", "decode", "traverse", "M"):
        if not hasattr(model, attr):
            raise TypeError(f"model must be an STA model (with {attr}), got {type(model).__name__}")
    param = next(model.parameters())
    images = check_images(images, "images", ndim=4, dtype=param.dtype).to(param.device)
    speeds = _check_speeds(speeds)
    steps = _check_int(steps, "steps", 1)
    N, S = images.shape[0], speeds.numel()
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            z0 = model.encode(images)[0]
            z = z0.repeat(S, 1)                                          # [S * N, D], speed-major
            g = speeds.to(z).repeat_interleave(N)[:, None]               # [S * N, 1], one speed per row
            per_field = [model.decode(model.traverse(z, m, steps=steps, speed=g)[:, -1]) for m in range(model.M)]
    finally:
        model.train(training)
    x = torch.stack(per_field)                                           # [M, S * N, C, H, W]
    x = x.reshape(model.M, S, N, *x.shape[2:]).permute(2, 0, 1, 3, 4, 5)
    return (x.float() * 255).round().clamp(0, 255).to(torch.uint8).cpu().contiguous()


def _check_frames(frames) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
        got = frames.dtype if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise TypeError(f"frames must be a uint8 torch.Tensor [N, M, S, C, H, W] (from explorer_frames), got {got}")
    if frames.dim() != 6:
        raise ValueError(f"frames must have 6 dimensions [N, M, S, C, H, W], got shape {tuple(frames.shape)}")
    if frames.numel() == 0:
        raise ValueError(f"frames must not be empty, got shape {tuple(frames.shape)}")
    if frames.shape[3] not in (1, 3):
        raise ValueError(f"frames must have 1 or 3 channels (dimension 3), got shape {tuple(frames.shape)}")
    return frames.cpu()


def _check_names(names, n: int, name: str) -> list[str]:
    if isinstance(names, (str, bytes)) or not hasattr(names, "__len__"):
        raise TypeError(f"{name} must be a sequence of {n} labels, got {type(names).__name__}")
    if len(names) != n:
        raise ValueError(f"{name} must hold {n} labels, got {len(names)}")
    return [str(x.item() if isinstance(x, torch.Tensor) else x) for x in names]


def _sprite_png(frames: torch.Tensor) -> str:
    """One digit's frames ``[M, S, C, H, W]`` as a base64 PNG: rows are fields, columns speeds."""
    from PIL import Image  # Pillow ships with matplotlib

    M, S, C, H, W = frames.shape
    sheet = frames.permute(0, 3, 1, 4, 2).reshape(M * H, S * W, C).numpy()
    image = Image.fromarray(sheet[..., 0] if C == 1 else sheet, mode="L" if C == 1 else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def field_explorer_html(frames: torch.Tensor, speeds, field_names, digit_labels=None, title: str | None = None,
                        scale: int = 4, steps: int | None = None) -> str:
    """A self-contained ``<div>`` (inline style and script, no external file) exploring ``frames``.

    ``frames``: uint8 ``[N, M, S, C, H, W]`` from :func:`explorer_frames`; ``speeds``: the ``S`` speeds of its
    columns (0 among them); ``field_names``: ``M`` slider labels; ``digit_labels``: ``N`` button labels (default
    ``digit 1 .. N``); ``scale``: on-screen enlargement of a frame; ``steps``: the number of transitions, named in
    the caption when given. The reader picks a digit and drags one field's slider; moving a slider resets the
    others to 0. Without scripts the page shows every digit's sprite sheet (rows: fields, columns: speeds).
    Opened with the address ending in ``#explorer-selftest``, the script drags a slider, switches the digit and
    writes what it then shows into ``data-selftest-*`` attributes of the container (for a headless check).
    """
    frames = _check_frames(frames)
    N, M, S, C, H, W = frames.shape
    speeds = _check_speeds(speeds)
    if speeds.numel() != S:
        raise ValueError(f"speeds must hold S = {S} values (frames' dimension 2), got {speeds.numel()}")
    fields = _check_names(field_names, M, "field_names")
    digits = _check_names(digit_labels, N, "digit_labels") if digit_labels is not None else \
        [f"digit {i + 1}" for i in range(N)]
    scale = _check_int(scale, "scale", 1)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a string, got {type(title).__name__}")
    if steps is not None:
        steps = _check_int(steps, "steps", 1)
    uid = f"sta-explorer-{next(_COUNTER)}-{uuid.uuid4().hex[:8]}"
    zero = int((speeds == 0).nonzero()[0, 0])
    labels = [_speed_text(s) for s in speeds.tolist()]
    config = {"id": uid, "shape": [N, M, S, C, H, W], "scale": scale, "fields": fields, "digits": digits,
              "speeds": labels, "zero": zero}
    sprites = [_sprite_png(frames[i]) for i in range(N)]
    return "\n".join([
        f'<div class="sta-explorer" id="{uid}" data-shape="{",".join(map(str, frames.shape))}" '
        f'data-zero="{zero}" data-scale="{scale}">',
        _style(uid), f'<div class="sta-title">{htmllib.escape(title)}</div>' if title else "",
        _view(frames.shape, fields, digits, labels, zero, scale, steps),
        _static(uid, sprites, fields, digits, labels), _script(config), "</div>"])


def _style(uid: str) -> str:
    return f"""<style>
#{uid} {{font-family: sans-serif; font-size: 14px; margin: 0.5em 0;}}
#{uid} [hidden] {{display: none !important;}}
#{uid} .sta-title {{font-weight: bold; margin-bottom: 0.4em;}}
#{uid} img.sta-sprite {{image-rendering: pixelated; display: block;}}
#{uid} .sta-static figure {{display: inline-block; margin: 0 1em 0.6em 0;}}
#{uid} .sta-view {{display: flex; gap: 1.5em; align-items: flex-start; flex-wrap: wrap;}}
#{uid} .sta-frame {{image-rendering: pixelated; background-repeat: no-repeat; border: 1px solid #888;
  box-sizing: content-box;}}
#{uid} .sta-digits button {{margin: 0 0.3em 0.3em 0; padding: 0.2em 0.6em; cursor: pointer;}}
#{uid} .sta-digits button.sta-on {{font-weight: bold; outline: 2px solid #36c;}}
#{uid} .sta-slider {{display: grid; grid-template-columns: 10em 14em 4em; align-items: center; gap: 0.5em;}}
#{uid} .sta-slider output {{font-variant-numeric: tabular-nums; text-align: right;}}
#{uid} .sta-caption {{color: #444; font-size: 0.9em; margin-top: 0.5em; max-width: 46em;}}
</style>"""


def _view(shape, fields, digits, labels, zero: int, scale: int, steps) -> str:
    """The interactive view, hidden until the script shows it: the frame, digit buttons, one slider per field."""
    N, M, S, C, H, W = shape
    frame = (f'<div class="sta-frame" style="width: {W * scale}px; height: {H * scale}px; '
             f'background-size: {S * W * scale}px {M * H * scale}px;"></div>')
    buttons = "".join(f'<button type="button" data-digit="{i}">{htmllib.escape(d)}</button>'
                      for i, d in enumerate(digits))
    sliders = "\n".join(
        f'<label class="sta-slider"><span>{htmllib.escape(f)}</span><input type="range" min="0" max="{S - 1}" '
        f'step="1" value="{zero}" data-field="{m}" aria-label="{htmllib.escape(f)}: speed"><output>0</output></label>'
        for m, f in enumerate(fields))
    k = f" for {steps} steps" if steps else ""
    caption = (f"Each picture decodes the digit's latent moved along one field alone at a constant speed{k}. One "
               "field at a time: moving one slider resets the others to 0. Speed 0 shows the reconstruction.")
    return (f'<div class="sta-live" hidden>\n<div class="sta-view">\n<div>{frame}<div class="sta-now"></div></div>\n'
            f'<div><div class="sta-digits">{buttons}</div>\n{sliders}\n<div class="sta-caption">speed {labels[0]} '
            f'(left) to {labels[-1]} (right)</div></div>\n</div>\n<p class="sta-caption">{caption}</p>\n</div>')


def _static(uid: str, sprites, fields, digits, labels) -> str:
    """The page without scripts: every digit's sprite sheet, each row one field and each column one speed."""
    figures = [f'<figure><img class="sta-sprite" data-sprite="{uid}:{i}" alt="{htmllib.escape(d)}: rows are '
               f'fields, columns speeds" src="data:image/png;base64,{png}"><figcaption>{htmllib.escape(d)}'
               "</figcaption></figure>" for i, (png, d) in enumerate(zip(sprites, digits, strict=True))]
    order = ", ".join(htmllib.escape(f) for f in fields)
    note = (f'<p class="sta-caption">Each row one field (top to bottom: {order}), each column one speed '
            f'({labels[0]} to {labels[-1]}, left to right; the column of speed 0 is the reconstruction).</p>')
    return '<div class="sta-static">\n' + "\n".join(figures) + f"\n{note}\n</div>"


def _speed_text(s: float) -> str:
    return "0" if s == 0 else f"{s:+.3g}"


def _script(config: dict) -> str:
    data = json.dumps(config).replace("</", "<\\/")
    return f"<script>\n(function () {{\nvar cfg = {data};\n{_JS}\n}})();\n</script>"


_JS = r"""
var root = document.getElementById(cfg.id);
if (!root || root.getAttribute("data-built")) { return; }
var M = cfg.shape[1], N = cfg.shape[0], H = cfg.shape[4], W = cfg.shape[5], k = cfg.scale, S = cfg.shape[2];
var live = root.querySelector(".sta-live"), fixed = root.querySelector(".sta-static");
var frame = root.querySelector(".sta-frame"), now = root.querySelector(".sta-now");
var sprites = Array.from(root.querySelectorAll("img.sta-sprite"), function (i) { return i.src; });
var buttons = root.querySelectorAll(".sta-digits button"), sliders = root.querySelectorAll("input[type=range]");
var state = {digit: 0, field: 0, index: cfg.zero};
function show() {
  frame.style.backgroundImage = 'url("' + sprites[state.digit] + '")';
  frame.style.backgroundPosition = (-state.index * W * k) + "px " + (-state.field * H * k) + "px";
  sliders.forEach(function (s) { s.nextElementSibling.textContent = cfg.speeds[parseInt(s.value, 10)]; });
  buttons.forEach(function (b, i) { b.className = i === state.digit ? "sta-on" : ""; });
  now.textContent = cfg.digits[state.digit] + ": " + (state.index === cfg.zero ? "reconstruction (speed 0)" :
    cfg.fields[state.field] + " at speed " + cfg.speeds[state.index]);
}
buttons.forEach(function (b, i) { b.addEventListener("click", function () { state.digit = i; show(); }); });
sliders.forEach(function (s, m) {
  s.addEventListener("input", function () {
    state.field = m; state.index = parseInt(s.value, 10);
    sliders.forEach(function (t, n) { if (n !== m) { t.value = cfg.zero; } });
    show();
  });
});
fixed.hidden = true;
live.hidden = false;
root.setAttribute("data-built", "1");
show();
if (window.location.hash === "#explorer-selftest") {
  var f = Math.min(1, M - 1), j = S - 1 === cfg.zero ? 0 : S - 1, other = f === 0 ? M - 1 : 0;
  var drag = function (m, value) {
    sliders[m].value = value;
    sliders[m].dispatchEvent(new Event("input", {bubbles: true}));
  };
  drag(other, 0);
  drag(f, j);
  buttons[Math.min(1, N - 1)].dispatchEvent(new MouseEvent("click", {bubbles: true}));
  var rest = [], drawn = frame.style.backgroundImage.replace(/^url\("?/, "").replace(/"?\)$/, "");
  sliders.forEach(function (s, n) { if (n !== f) { rest.push(s.value); } });
  var record = {field: state.field, index: state.index, digit: state.digit, sprite: sprites.indexOf(drawn),
    position: frame.style.backgroundPosition, size: frame.style.backgroundSize, others: rest.join(","),
    "static": getComputedStyle(fixed).display, live: getComputedStyle(live).display, sliders: sliders.length,
    width: frame.clientWidth, now: now.textContent};
  Object.keys(record).forEach(function (key) { root.setAttribute("data-selftest-" + key, String(record[key])); });
  root.setAttribute("data-selftest", "done");
}
"""


def frames_from_html(html: str, index: int = 0) -> torch.Tensor:
    """The frames uint8 ``[N, M, S, C, H, W]`` embedded in a page by :func:`field_explorer_html` (the
    ``index``-th explorer on the page), decoded from its sprite sheets."""
    if not isinstance(html, str):
        raise TypeError(f"html must be a string, got {type(html).__name__}")
    index = _check_int(index, "index", 0)
    found = _SHAPE.findall(html)
    if len(found) <= index:
        raise ValueError(f"html holds {len(found)} field explorer(s), so there is none at index {index}")
    uid, shape = found[index]
    N, M, S, C, H, W = (int(n) for n in shape.split(","))
    pngs = {int(i): png for u, i, png in _SPRITE.findall(html) if u == uid}
    if sorted(pngs) != list(range(N)):
        raise ValueError(f"html: explorer {uid} should embed {N} sprite sheets, found {len(pngs)}")
    return torch.stack([_read_sprite(pngs[i], M, S, C, H, W) for i in range(N)])


def _read_sprite(png: str, M: int, S: int, C: int, H: int, W: int) -> torch.Tensor:
    from PIL import Image

    sheet = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("L" if C == 1 else "RGB"))
    if sheet.shape[:2] != (M * H, S * W):
        raise ValueError(f"html: a sprite sheet is {sheet.shape[1]}x{sheet.shape[0]} pixels, "
                         f"expected {S * W}x{M * H}")
    sheet = sheet.reshape(M, H, S, W, C)
    return torch.from_numpy(np.ascontiguousarray(sheet.transpose(0, 2, 4, 1, 3)))
