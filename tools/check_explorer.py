"""Drive a field explorer (stabook.explorer) in headless Chromium and check what it shows.

    python tools/check_explorer.py                      # an explorer of a small untrained model
    python tools/check_explorer.py PAGE.html            # the first explorer on a page (say, of the built book)
    python tools/check_explorer.py --screenshot out.png # also save a screenshot of the self-test page

The page is opened at ``#explorer-selftest``: the explorer's script then drags one slider, switches the digit and
records what it shows in ``data-selftest-*`` attributes, read here from the dumped DOM. The page as written is what
a reader without scripts sees: every digit's sprite sheet, checked from the markup. Exits 1 on a failed check;
prints "SKIPPED: no chromium" and exits 0 when no browser is installed.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars")


def build_page(folder: Path) -> Path:
    """A page holding two explorers of a small untrained model on scikit-learn digits."""
    import torch

    from stabook import data, explorer
    from stabook.model import STA, STAConfig

    torch.manual_seed(0)
    model = STA(STAConfig(latent_dim=4, n_potential=2, n_rotational=1, field_hidden=8, net_width=8,
                          net_hidden=32, posterior_width=8, posterior_hidden=32))
    images, labels = data.load_digits()
    speeds = torch.linspace(-2, 2, 13).round(decimals=4)
    frames = explorer.explorer_frames(model, images[:3], speeds, steps=4)
    names = [f"{kind[:3]} {m} ({kind})" for m, kind in enumerate(model.fields.kinds)]
    parts = [explorer.field_explorer_html(frames, speeds, names, labels[:3], title=f"Explorer {i}", steps=4)
             for i in range(2)]
    page = folder / "explorer.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body>\n" + "\n".join(parts)
                    + "\n</body></html>\n", encoding="utf-8")
    return page


def run_browser(browser: str, url: str, profile: Path, *extra: str) -> str:
    cmd = [browser, *FLAGS, f"--user-data-dir={profile}", *extra, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise SystemExit(f"FAILED: {browser} exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def container(dom: str, uid: str) -> dict[str, str]:
    """The attributes of the explorer's container element ``uid`` in a dumped DOM."""
    tag = re.search(rf'<div class="sta-explorer" id="{re.escape(uid)}"[^>]*>', dom)
    if tag is None:
        raise SystemExit(f"FAILED: the dumped DOM has no explorer {uid}")
    return {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', tag.group(0))}


def check(ok: bool, message: str, verified: list[str]) -> None:
    if not ok:
        raise SystemExit(f"FAILED: {message}")
    verified.append(message)


def expected(attrs: dict[str, str]) -> dict[str, object]:
    """What the self-test should end on: field min(1, M-1) at the last speed, digit min(1, N-1)."""
    N, M, S, C, H, W = (int(n) for n in attrs["data-shape"].split(","))
    zero, k = int(attrs["data-zero"]), int(attrs["data-scale"])
    field, index, digit = min(1, M - 1), (0 if S - 1 == zero else S - 1), min(1, N - 1)
    return {"M": M, "N": N, "zero": zero, "field": field, "index": index, "digit": digit, "width": W * k,
            "position": f"{-index * W * k}px {-field * H * k}px", "size": f"{S * W * k}px {M * H * k}px"}


def check_selftest(attrs: dict[str, str], verified: list[str]) -> None:
    want, mark = expected(attrs), len(verified)
    got = lambda key: attrs.get(f"data-selftest-{key}")
    check(attrs.get("data-built") == "1" and attrs.get("data-selftest") == "done",
          "the script built the widget and ran its self-test", verified)
    check(got("static") == "none", f"the static fallback is hidden (display {got('static')})", verified)
    check(got("live") not in (None, "none"), f"the interactive view is shown (display {got('live')})", verified)
    check(got("sliders") == str(want["M"]), f"one slider per field: {got('sliders')} of M = {want['M']}", verified)
    check((got("field"), got("index")) == (str(want["field"]), str(want["index"])),
          f"after the drag the shown cell is field {got('field')}, speed index {got('index')} "
          f"(expected {want['field']}, {want['index']})", verified)
    check(got("position") == want["position"], f"background-position {got('position')} picks that cell "
          f"(expected {want['position']})", verified)
    check(got("size") == want["size"], f"background-size {got('size')} scales the whole sheet", verified)
    check(got("digit") == str(want["digit"]) and got("sprite") == str(want["digit"]),
          f"after the digit switch digit {got('digit')}'s sprite sheet is drawn (sprite {got('sprite')})", verified)
    rest = got("others").split(",") if got("others") else []
    check(rest == [str(want["zero"])] * (want["M"] - 1),
          f"the other sliders were reset to speed 0 (index {want['zero']}): {rest}", verified)
    check(abs(float(got("width")) - want["width"]) < 0.5, f"the frame is {got('width')} px wide "
          f"({want['width']} expected)", verified)
    verified[mark:] = [f"{attrs['id']}: {line}" for line in verified[mark:]]


def check_static(source: str, uid: str, n: int, verified: list[str]) -> None:
    """The page as written, which is what a reader without scripts sees: the sprite sheets shown, the view hidden."""
    part = source[source.index(f'id="{uid}"'):]
    static = re.search(r'<div class="sta-static"( hidden)?[^>]*>', part)
    live = re.search(r'<div class="sta-live"( hidden)?[^>]*>', part)
    check(static is not None and static.group(1) is None and live is not None and live.group(1) is not None,
          "as written (scripts off) the static fallback is visible and the interactive view hidden", verified)
    sprites = re.findall(rf'<img class="sta-sprite" data-sprite="{re.escape(uid)}:\d+"', part)
    check(len(sprites) == n and "each row one field" in part.lower(),
          f"the fallback holds {len(sprites)} sprite sheets (N = {n}) captioned 'each row one field'", verified)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", nargs="?", help="an HTML file holding an explorer (default: build one)")
    parser.add_argument("--screenshot", help="save a 900x700 screenshot of the self-test page here")
    args = parser.parse_args(argv)
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        print("SKIPPED: no chromium (tried " + ", ".join(BROWSERS) + ")")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        page = Path(args.page).resolve() if args.page else build_page(tmp)
        source = page.read_text(encoding="utf-8")
        uids = re.findall(r'<div class="sta-explorer" id="([\w-]+)"', source)
        if not uids:
            raise SystemExit(f"FAILED: {page} holds no field explorer")
        from stabook.explorer import frames_from_html

        verified = []
        frames = frames_from_html(source)
        check(True, f"{page.name}: {len(uids)} explorer(s); the first one's frames {list(frames.shape)} decode",
              verified)
        check(len(set(uids)) == len(uids), "the explorers' element ids are distinct", verified)
        url = page.as_uri() + "#explorer-selftest"
        dom = run_browser(browser, url, tmp / "profile", "--dump-dom")
        for uid in uids:
            check_selftest(container(dom, uid), verified)
        check_static(source, uids[0], frames.shape[0], verified)
        if args.screenshot:
            run_browser(browser, url, tmp / "profile", f"--screenshot={Path(args.screenshot).resolve()}",
                        "--window-size=900,700")
            verified.append(f"screenshot saved to {args.screenshot}")
    print(f"OK, checked in {Path(browser).name}:" + "\n  ".join(["", *verified]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
