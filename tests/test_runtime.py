import numpy as np
import pytest
import torch

import stabook
from stabook import get_device, seed_everything


def test_version_and_exports():
    assert isinstance(stabook.__version__, str) and stabook.__version__.count(".") == 2


def test_get_device_order(monkeypatch):
    monkeypatch.delenv("STABOOK_DEVICE", raising=False)
    mps = torch.backends.mps.is_available()
    expected = "cuda" if torch.cuda.is_available() else ("mps" if mps else "cpu")
    assert get_device().type == expected


def test_get_device_forced(monkeypatch):
    monkeypatch.setenv("STABOOK_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    assert get_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_get_device_unavailable_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        get_device("cuda")


def test_seed_everything_repeats():
    g1 = seed_everything(3)
    a = (torch.randn(4), np.random.rand(3), torch.randn(2, generator=g1))
    g2 = seed_everything(3)
    b = (torch.randn(4), np.random.rand(3), torch.randn(2, generator=g2))
    torch.testing.assert_close(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    torch.testing.assert_close(a[2], b[2])


@pytest.mark.parametrize("bad, err", [(-1, ValueError), (1.5, TypeError), ("3", TypeError)])
def test_seed_everything_bad_input(bad, err):
    with pytest.raises(err, match="seed"):
        seed_everything(bad)
