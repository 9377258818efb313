import re
from pathlib import Path

import numpy as np
import pytest
import torch

import stabook
from stabook import get_device, seed_everything


def test_the_version_is_the_one_pyproject_declares():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE)      # tomllib needs Python 3.11
    assert declared and stabook.__version__ == declared.group(1)


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (True, False, "cuda"),
                                                 (False, True, "mps"), (False, False, "cpu")])
def test_get_device_prefers_cuda_then_mps_then_cpu(cuda, mps, expected, monkeypatch):
    monkeypatch.delenv("STABOOK_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert get_device() == torch.device(expected)
    monkeypatch.setenv("STABOOK_DEVICE", "cpu")          # the environment overrides the order
    assert get_device() == torch.device("cpu")


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
