"""flow.step_invertibility: the smallest singular value and determinant sign of an Euler step's Jacobian."""

import pytest
import torch
from conftest import LinearField

from stabook import flow


def _z(n, d):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_a_small_linear_step_is_invertible_with_the_known_singular_values():
    A = torch.diag(torch.tensor([0.5, -0.3, 0.1], dtype=torch.float64))
    out = flow.step_invertibility([LinearField(A)], _z(4, 3), torch.ones(4, 1, dtype=torch.float64), 0.0, h=1.0)
    # I + A = diag(1.5, 0.7, 1.1): smallest singular value 0.7, determinant 1.155 > 0, at every z
    torch.testing.assert_close(out["sigma_min"], torch.full((4,), 0.7, dtype=torch.float64))
    torch.testing.assert_close(out["sign"], torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(out["logabsdet"], torch.full((4,), 1.155, dtype=torch.float64).log())


def test_a_folding_step_is_flagged_that_slogdet_alone_would_hide():
    # I + h A with an eigenvalue 1 - 1.5 * 2 = -2: the step turns space inside out along the first axis;
    # |det| = 2 * 1 is a perfectly ordinary number, only the sign shows the fold
    A = torch.diag(torch.tensor([-1.5, 0.0], dtype=torch.float64))
    out = flow.step_invertibility([LinearField(A)], _z(3, 2), torch.ones(3, 1, dtype=torch.float64), 0.0, h=2.0)
    torch.testing.assert_close(out["sign"], -torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(out["logabsdet"], torch.full((3,), 2.0, dtype=torch.float64).log())
    torch.testing.assert_close(out["sigma_min"], torch.ones(3, dtype=torch.float64))
    # at h = 1 / 1.5 the eigenvalue is exactly 0: a singular step, smallest singular value 0
    out = flow.step_invertibility([LinearField(A)], _z(3, 2), torch.ones(3, 1, dtype=torch.float64), 0.0,
                                  h=1 / 1.5)
    assert out["sigma_min"].abs().max() < 1e-12


def test_speeds_scale_the_jacobian():
    A = torch.tensor([[0.2, 0.1], [0.1, -0.4]], dtype=torch.float64)
    speeds = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    out = flow.step_invertibility([LinearField(A)], _z(3, 2), speeds, 0.0)
    expected = torch.stack([torch.linalg.svdvals(torch.eye(2, dtype=torch.float64) + g * A)[-1] for g in (0, 1, 3)])
    torch.testing.assert_close(out["sigma_min"], expected)
    # at speed 3 the eigenvalue 1 + 3 * (-0.42) of I + 3A is negative
    assert out["sign"].tolist() == [1.0, 1.0, -1.0]


@pytest.mark.parametrize("n_pot,n_rot", [(2, 2), (1, 0), (0, 1)])
def test_field_bank_agrees_with_the_autograd_jacobian_of_the_step(n_pot, n_rot):
    torch.manual_seed(0)
    bank = flow.FieldBank(4, n_pot, n_rot, hidden=8).double()
    z, g = _z(5, 4), torch.rand(5, bank.M, dtype=torch.float64)
    out = flow.step_invertibility(bank, z, g, 1.0, h=0.7)
    J = torch.autograd.functional.jacobian(lambda zz: flow.flow_step(bank, zz, g, 1.0, 0.7, logdet=None).z.sum(0), z)
    J = J.permute(1, 0, 2)
    torch.testing.assert_close(out["sigma_min"], torch.linalg.svdvals(J)[:, -1])
    torch.testing.assert_close(out["sign"], torch.linalg.slogdet(J).sign)
    torch.testing.assert_close(out["logabsdet"], flow.step_logdet(bank, z, 1.0, g, h=0.7))


def test_bad_inputs_are_refused():
    bank = flow.FieldBank(3, 1, 1, hidden=4)
    with pytest.raises(ValueError):
        flow.step_invertibility(bank, torch.zeros(2, 3), torch.zeros(2, 3), 0.0)
    with pytest.raises(ValueError):
        flow.step_invertibility(bank, torch.zeros(2, 3), torch.zeros(2, 2), 0.0, h=0.0)
