import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from stabook.fields import VectorField


def available_devices():
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


@pytest.fixture(params=available_devices())
def device(request):
    return torch.device(request.param)


def digit_sequences(batch: int, T: int = 3, seed: int = 0) -> torch.Tensor:
    """``batch`` short digit sequences ``[B, T + 1, 3, 28, 28]`` from the embedded digits (seeded)."""
    from stabook import data

    images, _ = data.load_digits()
    gen = data.SequenceGenerator(images[:64], T=T)
    return gen.sample(batch, generator=torch.Generator().manual_seed(seed)).frames


class LinearField(VectorField):
    """v(z) = A z: for symmetric A the gradient of u = z^T A z / 2, whose Jacobian is A everywhere."""

    def __init__(self, A):
        super().__init__()
        self.dim = A.shape[0]
        self.register_buffer("A", A)

    def velocity(self, z, t):
        return z @ self.A.T


#: the settings of a run the command-line tests train in a second or two
SMALL = ["latent_dim=4", "n_potential=2", "n_rotational=1", "field_hidden=8", "net_width=8", "net_hidden=32",
         "posterior_width=8", "posterior_hidden=32", "T=2", "batch_size=4", "eval_sequences=4", "eval_k=1",
         "log_every=1", "device=cpu"]
SETS = [x for s in SMALL for x in ("--set", s)]


def file_hashes(folder, skip=()) -> dict:
    """Every file under ``folder`` (but those named in ``skip``) by its SHA-256: equal dicts, byte-identical files."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name not in skip}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-step run, made once per test module; tests work on copies (:func:`run`)."""
    from stabook.__main__ import main

    run = tmp_path_factory.mktemp("runs") / "finished"
    assert main(["train", "--quiet", "--steps", "2", "--run-dir", str(run), *SETS]) == 0
    return run


@pytest.fixture
def run(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy
