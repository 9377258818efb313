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
