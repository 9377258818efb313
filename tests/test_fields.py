import math

import pytest
import torch
from torch.func import hessian, vmap

from stabook.fields import (
    ConservationLawField,
    PotentialField,
    RotationalField,
    cell_log_areas,
    curl,
    divergence,
    helmholtz_hodge_2d,
    integrate,
    jacobian,
)

DTYPES = [torch.float32, torch.float64]


def _points(n, d, dtype=torch.float64, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(n, d, generator=g, dtype=dtype)).to(device)


@pytest.mark.parametrize("dim", [2, 3, 8, 16])
def test_rotational_field_is_divergence_free(dim):
    torch.manual_seed(dim)
    for field in (RotationalField(dim), RotationalField(dim, rank=2, time_dependent=True)):
        field = field.double()
        z = _points(64, dim)
        div = divergence(field, z, t=0.7)
        assert div.abs().max() < 1e-6
        # the field is not trivially zero
        assert field(z, 0.7).abs().mean() > 1e-3


@pytest.mark.parametrize("dim", [2, 3, 6])
def test_conservation_law_field_is_divergence_free(dim):
    torch.manual_seed(dim)
    field = ConservationLawField(dim).double()
    z = _points(32, dim)
    assert divergence(field, z).abs().max() < 1e-6
    assert field(z).abs().mean() > 1e-3


def test_conservation_law_field_in_2d_is_a_stream_function_field():
    # in 2-D, A = [[0, a], [-a, 0]] with a = dF1/dz2 - dF2/dz1, and v = (d_2 a, -d_1 a)
    torch.manual_seed(0)
    field = ConservationLawField(2).double()
    z = _points(16, 2).requires_grad_()
    J = vmap(torch.func.jacrev(field.F))(z)
    a = J[:, 0, 1] - J[:, 1, 0]
    grad_a = torch.autograd.grad(a.sum(), z)[0]
    torch.testing.assert_close(field(z), torch.stack([grad_a[:, 1], -grad_a[:, 0]], dim=-1))


@pytest.mark.parametrize("dim", [3, 5])
def test_conservation_law_field_needs_only_second_derivatives_of_F(dim):
    # v = Laplacian F - grad(div F): built from the Hessians of F's outputs, d^2 F_i / dz_j dz_k
    torch.manual_seed(dim)
    field = ConservationLawField(dim).double()
    z = _points(8, dim)
    hess = vmap(hessian(field.F))(z)                      # [B, D, D, D], hess[b, i, j, k]
    laplacian_F = torch.einsum("bijj->bi", hess)
    grad_div_F = torch.einsum("bjij->bi", hess)           # d_i sum_j d_j F_j
    torch.testing.assert_close(field(z), laplacian_F - grad_div_F)


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_potential_field_jacobian_is_symmetric_hessian(dim):
    torch.manual_seed(1)
    field = PotentialField(dim).double()
    z, t = _points(20, dim), torch.linspace(0, 3, 20, dtype=torch.float64)
    J = jacobian(field, z, t)
    torch.testing.assert_close(J, J.transpose(-1, -2), atol=1e-12, rtol=0)
    torch.testing.assert_close(J, field.jacobian(z, t), atol=1e-12, rtol=0)
    H = vmap(hessian(lambda zi, ti: field.u.value(zi[None], ti[None])[0]))(z, t)
    torch.testing.assert_close(field.jacobian(z, t), H, atol=1e-12, rtol=0)
    assert curl(field, z, t).abs().max() < 1e-12


def test_potential_field_closed_forms_match_autograd():
    torch.manual_seed(2)
    field = PotentialField(4).double()
    z = _points(10, 4).requires_grad_()
    t = torch.linspace(0.5, 4.0, 10, dtype=torch.float64, requires_grad=True)
    u = field.potential(z, t)
    gz, gt = torch.autograd.grad(u.sum(), (z, t))
    torch.testing.assert_close(field(z, t), gz)
    torch.testing.assert_close(field.time_derivative(z, t), gt)
    torch.testing.assert_close(field.laplacian(z, t), divergence(field, z, t))


def test_rotational_field_closed_form_jacobian_and_conserved_hamiltonian():
    torch.manual_seed(3)
    field = RotationalField(5).double()
    z = _points(10, 5)
    torch.testing.assert_close(field.jacobian(z), jacobian(field, z))
    torch.testing.assert_close(field.S, -field.S.T)
    # v . grad H = grad H^T S grad H = 0
    zz = z.clone().requires_grad_()
    gH = torch.autograd.grad(field.hamiltonian(zz).sum(), zz)[0]
    assert (gH * field(z)).sum(-1).abs().max() < 1e-12
    assert field.divergence(z).abs().max() == 0


def test_hutchinson_is_unbiased():
    torch.manual_seed(4)
    field = PotentialField(6).double()
    z0, t0 = _points(1, 6), torch.tensor([1.3], dtype=torch.float64)
    exact = field.laplacian(z0, t0).item()
    n = 4000
    z, t = z0.expand(n, 6), t0.expand(n)
    g = torch.Generator().manual_seed(0)
    for est in (divergence(field, z, t, method="hutchinson", generator=g),
                field.laplacian(z, t, method="hutchinson", generator=g)):
        se = est.std().item() / math.sqrt(n)
        assert abs(est.mean().item() - exact) < 3 * se
        assert se > 0  # a real estimator, not the exact value


def test_hutchinson_probes_average():
    field = PotentialField(3).double()
    z = _points(5, 3)
    g = torch.Generator().manual_seed(1)
    many = field.laplacian(z, method="hutchinson", n_probes=20000, generator=g)
    torch.testing.assert_close(many, field.laplacian(z), atol=0.02, rtol=0)


def _analytic_periodic(n, dtype=torch.float64):
    x = torch.arange(n, dtype=dtype) * 2 * math.pi / n
    Y, X = torch.meshgrid(x, x, indexing="ij")
    phi = torch.sin(X) * torch.cos(2 * Y)
    psi = torch.cos(3 * X) * torch.sin(Y) + 0.5 * torch.sin(X + Y)
    grad = torch.stack([torch.cos(X) * torch.cos(2 * Y), -2 * torch.sin(X) * torch.sin(2 * Y)])
    sol = torch.stack([torch.cos(3 * X) * torch.cos(Y) + 0.5 * torch.cos(X + Y),
                       3 * torch.sin(3 * X) * torch.sin(Y) - 0.5 * torch.cos(X + Y)])
    return phi, psi, grad, sol


@pytest.mark.parametrize("n", [32, 33])
def test_helmholtz_hodge_recovers_analytic_parts(n):
    phi, psi, grad, sol = _analytic_periodic(n)
    mean = torch.tensor([0.3, -0.2], dtype=torch.float64)
    v = grad + sol + mean[:, None, None]
    parts = helmholtz_hodge_2d(v[0], v[1], spacing=2 * math.pi / n)
    for got, want in [(parts.gradient, grad), (parts.solenoidal, sol), (parts.potential, phi),
                      (parts.stream, psi), (parts.harmonic[:, 0, 0], mean)]:
        assert (got - want).abs().max() < 1e-8
    torch.testing.assert_close(parts.gradient + parts.solenoidal + parts.harmonic, v)


def test_helmholtz_hodge_batched_and_anisotropic_spacing():
    n = 32
    phi, psi, grad, sol = _analytic_periodic(n)
    # the same field on a domain stretched by 2 in y: spacing (dy, dx)
    h = 2 * math.pi / n
    v = torch.stack([grad + sol, 2 * (grad + sol)])        # [2, 2, n, n]
    parts = helmholtz_hodge_2d(v[:, 0], v[:, 1], spacing=(h, h))
    assert parts.gradient.shape == (2, 2, n, n)
    assert (parts.gradient[1] - 2 * grad).abs().max() < 1e-8
    stretched = helmholtz_hodge_2d(v[0, 0], v[0, 1], spacing=(2 * h, h))
    torch.testing.assert_close(stretched.gradient + stretched.solenoidal + stretched.harmonic, v[0])


def test_integrate_rotational_flow_preserves_cell_areas():
    torch.manual_seed(5)
    axis = torch.linspace(-1, 1, 21, dtype=torch.float64)
    Y, X = torch.meshgrid(axis, axis, indexing="ij")
    lattice = torch.stack([X, Y], -1).reshape(-1, 2)
    rot, pot = RotationalField(2).double(), PotentialField(2).double()
    with torch.no_grad():
        pot.u.w.mul_(8)
        la_rot = cell_log_areas(integrate(rot, lattice, 0, 3, 100).reshape(101, 21, 21, 2))
        la_pot = cell_log_areas(integrate(pot, lattice, 0, 3, 100).reshape(101, 21, 21, 2))
    assert (la_rot[-1] - la_rot[0]).abs().max() < 1e-3
    assert (la_pot[-1] - la_pot[0]).abs().max() > 0.05


def test_integrate_rk4_is_fourth_order():
    # dz/dt = S z with S a rotation generator: exact solution is a rotation
    field = lambda z, t: torch.stack([z[:, 1], -z[:, 0]], -1)  # noqa: E731
    z0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    exact = torch.tensor([[math.cos(1.0), -math.sin(1.0)]], dtype=torch.float64)
    e1 = (integrate(field, z0, 0, 1, 10)[-1] - exact).norm()
    e2 = (integrate(field, z0, 0, 1, 20)[-1] - exact).norm()
    assert 14 < e1 / e2 < 18


@pytest.mark.parametrize("dtype", DTYPES)
def test_device_and_dtype_round_trip(device, dtype):
    torch.manual_seed(6)
    for field in (PotentialField(4), RotationalField(4), ConservationLawField(4)):
        field = field.to(device=device, dtype=dtype)
        z = _points(8, 4, dtype=dtype, device=device)
        v = field(z, 1.0)
        assert v.shape == (8, 4) and v.dtype == dtype and v.device.type == device.type
        div = divergence(field, z, 1.0)
        assert div.dtype == dtype and div.device.type == device.type
    parts = helmholtz_hodge_2d(torch.randn(8, 8, dtype=dtype, device=device),
                               torch.randn(8, 8, dtype=dtype, device=device))
    assert parts.gradient.dtype == dtype and parts.gradient.device.type == device.type


def test_bad_inputs_raise_clear_errors():
    field = PotentialField(3)
    with pytest.raises(ValueError, match="z must have 2 dimensions"):
        field(torch.randn(3))
    with pytest.raises(ValueError, match="z must have last dimension 3"):
        field(torch.randn(5, 4))
    with pytest.raises(ValueError, match="z must be finite"):
        field(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        field([[0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \[B\]"):
        field(torch.randn(5, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="z must have last dimension 3"):
        divergence(field, torch.randn(5, 2))
    with pytest.raises(ValueError, match="method must be"):
        divergence(field, torch.randn(5, 3), method="sampling")
    with pytest.raises(ValueError, match="n_probes must be a positive int"):
        field.laplacian(torch.randn(5, 3), method="hutchinson", n_probes=0)
    with pytest.raises(ValueError, match="spacing must be finite and > 0"):
        helmholtz_hodge_2d(torch.zeros(4, 4), torch.zeros(4, 4), spacing=-1.0)
    with pytest.raises(ValueError, match="vx and vy must have the same shape"):
        helmholtz_hodge_2d(torch.zeros(4, 4), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="vx must have at least 2 dimensions"):
        helmholtz_hodge_2d(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match="dim must be >= 2"):
        RotationalField(1)
    with pytest.raises(TypeError, match="field must be a VectorField or a callable"):
        divergence(3, torch.randn(2, 2))
