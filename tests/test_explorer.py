import re

import pytest
import torch

from stabook import data
from stabook.explorer import explorer_frames, field_explorer_html, frames_from_html
from stabook.model import STA, STAConfig

SMALL = dict(latent_dim=4, n_potential=2, n_rotational=1, field_hidden=8, net_width=8, net_hidden=32,
             posterior_width=8, posterior_hidden=32)
SPEEDS = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
NAMES = ["pot 0", "pot 1", "rot 2"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return STA(STAConfig(**SMALL))


@pytest.fixture(scope="module")
def images():
    return data.load_digits()[0][:3]


@pytest.fixture(scope="module")
def frames(model, images):
    return explorer_frames(model, images, SPEEDS, steps=3)


def _quantised(x):
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def _close(a, b):
    return (a.int() - b.int()).abs().max().item() <= 1


def test_frames_shape_and_dtype(frames):
    assert frames.shape == (3, 3, 5, 3, 28, 28) and frames.dtype == torch.uint8 and not frames.requires_grad


def test_speed_zero_is_the_reconstruction(model, images, frames):
    with torch.no_grad():
        recon = _quantised(model.decode(model.encode(images)[0]))
    for m in range(model.M):
        assert _close(frames[:, m, 2], recon)


@pytest.mark.parametrize("j", [0, 4])
def test_frames_follow_traverse_at_a_nonzero_speed(model, images, frames, j):
    with torch.no_grad():
        z0 = model.encode(images)[0]
        for m in range(model.M):
            x = model.decode(model.traverse(z0, m, steps=3, speed=SPEEDS[j].item())[:, -1])
            assert _close(frames[:, m, j], _quantised(x))
    assert not torch.equal(frames[:, :, j], frames[:, :, 2])


def test_frames_leave_the_model_mode_alone(images):
    model = STA(STAConfig(**SMALL)).train()
    explorer_frames(model, images[:1], [0.0, 1.0], steps=1)
    assert model.training


@pytest.mark.parametrize("channels", [3, 1])
def test_html_round_trips_the_frames_exactly(frames, channels):
    frames = frames if channels == 3 else torch.randint(0, 256, (2, 3, 5, 1, 6, 7), dtype=torch.uint8)
    page = field_explorer_html(frames, SPEEDS, NAMES, digit_labels=["a", "b", "c"][:frames.shape[0]])
    assert torch.equal(frames_from_html(page), frames)


def test_html_is_self_contained_with_a_static_fallback(frames):
    page = field_explorer_html(frames, SPEEDS, NAMES, digit_labels=torch.tensor([4, 7, 1]), title="Fields")
    assert not re.search(r"https?://", page) and "<link" not in page and "src=\"data:image/png;base64," in page
    static = re.search(r'<div class="sta-static">(.*?)</div>', page, re.S).group(1)
    assert static.count("<img") == 3 and "each row one field" in static.lower()
    assert re.search(r'<div class="sta-live" hidden>', page)
    assert len(re.findall(r'<input type="range"', page)) == 3
    assert all(f"<span>{name}</span>" in page for name in NAMES) and "resets the others to 0" in page
    assert "#explorer-selftest" in page and "image-rendering: pixelated" in page


def test_two_calls_use_different_ids(frames):
    ids = [re.search(r'id="(sta-explorer-[\w-]+)"', field_explorer_html(frames, SPEEDS, NAMES)).group(1)
           for _ in range(2)]
    assert ids[0] != ids[1]
    page = "\n".join(field_explorer_html(frames[:i + 1], SPEEDS, NAMES) for i in range(2))
    assert frames_from_html(page, index=1).shape[0] == 2


@pytest.mark.parametrize("kwargs, name", [
    (dict(images=torch.zeros(0, 3, 28, 28)), "images"),
    (dict(images=torch.zeros(3, 28, 28)), "images"),
    (dict(speeds=[1.0, 2.0]), "speeds"),
    (dict(speeds=[[0.0, 1.0]]), "speeds"),
    (dict(speeds=[]), "speeds"),
    (dict(steps=0), "steps"),
    (dict(steps=1.5), "steps"),
])
def test_bad_frame_inputs_name_the_argument(model, images, kwargs, name):
    args = {"images": images, "speeds": SPEEDS, "steps": 2, **kwargs}
    with pytest.raises((ValueError, TypeError), match=name):
        explorer_frames(model, **args)


@pytest.mark.parametrize("kwargs, name", [
    (dict(frames=torch.zeros(3, 3, 5, 3, 28, 28)), "frames"),
    (dict(frames=torch.zeros(3, 5, 3, 28, 28, dtype=torch.uint8)), "frames"),
    (dict(speeds=[-1.0, 0.0, 1.0]), "speeds"),
    (dict(speeds=[-2.0, -1.0, 0.5, 1.0, 2.0]), "speeds"),
    (dict(field_names=["a", "b"]), "field_names"),
    (dict(field_names="abc"), "field_names"),
    (dict(digit_labels=["x"]), "digit_labels"),
    (dict(scale=0), "scale"),
    (dict(title=3), "title"),
])
def test_bad_html_inputs_name_the_argument(frames, kwargs, name):
    args = {"frames": frames, "speeds": SPEEDS, "field_names": NAMES, **kwargs}
    with pytest.raises((ValueError, TypeError), match=name):
        field_explorer_html(**args)


def test_frames_from_html_refuses_a_page_without_an_explorer():
    with pytest.raises(ValueError, match="html"):
        frames_from_html("<p>no explorer</p>")
    with pytest.raises(TypeError, match="html"):
        frames_from_html(b"<p></p>")
