import math

import pytest
import torch
from conftest import LinearField

from stabook import fields, flow


def _bank(seed=0, dim=4, n_pot=2, n_rot=2):
    torch.manual_seed(seed)
    return flow.FieldBank(dim, n_pot, n_rot, hidden=16).double()


def _z(n, d, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_exact_logdet_matches_autograd_jacobian_of_the_step():
    bank = _bank()
    z, g = _z(5, 4), torch.rand(5, 4, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda zz: flow.flow_step(bank, zz, g, 1.0, 0.3, logdet=None).z.sum(0), z)
    expected = torch.linalg.slogdet(J.permute(1, 0, 2)).logabsdet
    torch.testing.assert_close(flow.step_logdet(bank, z, 1.0, g, h=0.3), expected)


def test_first_order_logdet_is_second_order_accurate():
    bank = _bank()
    z, g = _z(32, 4), torch.rand(32, 4, dtype=torch.float64)
    hs = torch.tensor([0.2, 0.1, 0.05, 0.025, 0.0125], dtype=torch.float64)
    err = torch.stack([(flow.step_logdet(bank, z, 1.0, g, float(h)) -
                        flow.step_logdet(bank, z, 1.0, g, float(h), "first_order")).abs().mean() for h in hs])
    design = torch.stack([torch.log(hs), torch.ones_like(hs)], 1)
    slope = torch.linalg.lstsq(design, torch.log(err)[:, None]).solution[0]
    assert 1.9 < slope.item() < 2.1


def test_linear_field_pushes_a_gaussian_to_the_closed_form_gaussian():
    A = torch.tensor([[0.3, 0.1], [0.1, -0.2]], dtype=torch.float64)
    field, h = LinearField(A), 0.5
    z0 = _z(200, 2)
    log_q0 = -0.5 * (z0**2).sum(-1) - math.log(2 * math.pi)
    res = flow.flow([field], z0, torch.ones(200, 1, 1, dtype=torch.float64), h=h, log_q0=log_q0)
    M = torch.eye(2, dtype=torch.float64) + h * A
    pushed = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), M @ M.T)
    torch.testing.assert_close(res.z[:, 1], z0 @ M.T)
    torch.testing.assert_close(res.log_q[:, 1], pushed.log_prob(res.z[:, 1]))


def test_rotational_fields_leave_log_q_unchanged():
    bank = _bank(n_pot=0, n_rot=3)
    z, g = _z(16, 4), torch.rand(16, 3, dtype=torch.float64)
    assert (flow.step_logdet(bank, z, 1.0, g, 0.5, "first_order") == 0).all()
    assert (flow.step_logdet(bank, z, 1.0, g, 0.5, "hutchinson") == 0).all()
    # the exact log-determinant of an Euler step is zero only to second order (tr J = 0, J^2 terms remain)
    small = flow.step_logdet(bank, z, 1.0, g, 1e-3).abs().max()
    assert small < 1e-5
    # mixing in potential fields: only they change the first-order density
    mixed = _bank(n_pot=2, n_rot=3)
    gm = torch.rand(16, 5, dtype=torch.float64)
    only_pot = gm.clone()
    only_pot[:, 2:] = 0
    torch.testing.assert_close(flow.step_logdet(mixed, z, 1.0, gm, 0.5, "first_order"),
                               flow.step_logdet(mixed, z, 1.0, only_pot, 0.5, "first_order"))


def test_hutchinson_logdet_is_unbiased_for_the_first_order_term():
    bank = _bank(n_rot=0)
    z0, g0 = _z(1, 4), torch.rand(1, 2, dtype=torch.float64)
    n = 4000
    est = flow.step_logdet(bank, z0.expand(n, 4), 1.0, g0.expand(n, 2), 0.2, "hutchinson",
                           generator=torch.Generator().manual_seed(0))
    exact = flow.step_logdet(bank, z0, 1.0, g0, 0.2, "first_order").item()
    assert abs(est.mean().item() - exact) < 3 * est.std().item() / math.sqrt(n)


def test_field_bank_agrees_with_a_list_of_single_fields():
    bank = _bank()
    pots = [fields.PotentialField(4, 16).double() for _ in range(2)]
    rots = [fields.RotationalField(4, 16).double() for _ in range(2)]
    with torch.no_grad():
        for m, p in enumerate(pots):
            for name in ("W", "b", "w", "W_t"):
                getattr(p.u, name).copy_(getattr(bank.potential.u, name)[m])
        for m, r in enumerate(rots):
            for name in ("W", "b", "w"):
                getattr(r.H, name).copy_(getattr(bank.rotational.H, name)[m])
            r.L.copy_(bank.rotational.L[m])
    z, g = _z(7, 4), torch.rand(7, 4, dtype=torch.float64)
    for method in ("exact", "first_order"):
        torch.testing.assert_close(flow.step_logdet(bank, z, 2.0, g, 0.3, method),
                                   flow.step_logdet(pots + rots, z, 2.0, g, 0.3, method))
    torch.testing.assert_close(flow.drift(bank, z, 2.0, g), flow.drift(pots + rots, z, 2.0, g))


def test_substeps_converge_to_the_ode_and_sum_logdets():
    bank = _bank()
    z, g = _z(8, 4), torch.rand(8, 4, dtype=torch.float64)
    fine = flow.flow_step(bank, z, g, 1.0, h=1.0, n_sub=400).z
    errs = [(flow.flow_step(bank, z, g, 1.0, h=1.0, n_sub=n).z - fine).abs().max().item() for n in (10, 20)]
    assert 1.7 < errs[0] / errs[1] < 2.3          # Euler: first order in the substep
    one = flow.flow_step(bank, z, g, 1.0, h=1.0, n_sub=2)
    a = flow.flow_step(bank, z, g, 1.0, h=0.5, n_sub=1)
    b = flow.flow_step(bank, a.z, g, 1.0, h=0.5, n_sub=1)
    torch.testing.assert_close(one.logdet, a.logdet + b.logdet)
    torch.testing.assert_close(one.z, b.z)


def test_hj_residual_zero_for_analytic_solution_and_not_for_a_perturbed_one():
    c = 1.5
    u = lambda z, t: (z**2).sum(-1) / (2 * (t + c))  # noqa: E731
    z, t = _z(32, 3), torch.rand(32, dtype=torch.float64) * 3
    assert flow.hj_residual(u, z, t).abs().max() < 1e-12
    perturbed = lambda z, t: u(z, t) + 0.1 * torch.sin(z[:, 0])  # noqa: E731
    assert (flow.hj_residual(perturbed, z, t) ** 2).mean() > 1e-4


def test_hj_residual_closed_form_matches_autograd():
    torch.manual_seed(2)
    pf = fields.PotentialField(3, 16).double()
    z, t = _z(10, 3), torch.rand(10, dtype=torch.float64)
    torch.testing.assert_close(flow.hj_residual(pf, z, t), flow.hj_residual(lambda zz, tt: pf.u.value(zz, tt), z, t))
    bank = _bank(dim=3)
    assert flow.hj_residual(bank.potential, z, t).shape == (10, 2)


def test_heat_flow_carries_the_heat_equation_marginals():
    heat = flow.HeatFlow(2, diffusion=0.5, var0=0.25).double()
    z0 = 0.5 * _z(20000, 2)
    path = fields.integrate(heat, z0, 0.0, 2.0, 200)
    var = path[-1].var(0).mean().item()
    assert abs(var - heat.variance(2.0)) < 0.05
    # the log-density along paths follows d/dt log p = -div v
    z = _z(5, 2)
    t = torch.full((5,), 1.0, dtype=torch.float64)
    lp = lambda zz, tt: heat.log_density(zz, tt)  # noqa: E731
    zz, tt = z.clone().requires_grad_(), t.clone().requires_grad_()
    gz, gt = torch.autograd.grad(lp(zz, tt).sum(), (zz, tt))
    total = gt + (gz * heat(z, t)).sum(-1)
    torch.testing.assert_close(total, -heat.divergence(z, t))


def test_device_and_dtype(device):
    bank = flow.FieldBank(4, 1, 1, hidden=8).to(device)
    z, g = torch.randn(3, 4, device=device), torch.rand(3, 2, device=device)
    step = flow.flow_step(bank, z, g, 1.0)
    assert step.z.device.type == device.type and step.logdet.dtype == torch.float32


def test_bad_inputs():
    bank = _bank()
    z = _z(4, 4)
    with pytest.raises(ValueError, match=r"speeds must have last dimension 4"):
        flow.flow_step(bank, z, torch.rand(4, 3, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match=r"speeds must have shape \[B, M\]"):
        flow.flow_step(bank, z, torch.rand(5, 4, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="h must be finite and > 0"):
        flow.flow_step(bank, z, torch.rand(4, 4, dtype=torch.float64), 1.0, h=-0.1)
    with pytest.raises(ValueError, match="z must be finite"):
        flow.flow_step(bank, torch.full((4, 4), float("inf"), dtype=torch.float64), torch.rand(4, 4), 1.0)
    with pytest.raises(ValueError, match="n_sub must be a positive int"):
        flow.flow_step(bank, z, torch.rand(4, 4, dtype=torch.float64), 1.0, n_sub=0)
    with pytest.raises(ValueError, match="logdet must be one of"):
        flow.flow_step(bank, z, torch.rand(4, 4, dtype=torch.float64), 1.0, logdet="trace")
    with pytest.raises(ValueError, match=r"speeds must have 3 dimensions"):
        flow.flow(bank, z, torch.rand(4, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="fields must be a FieldBank"):
        flow.drift("fields", z, 1.0, torch.rand(4, 4))
    with pytest.raises(ValueError, match="need at least one field"):
        flow.FieldBank(4, 0, 0)


@pytest.mark.parametrize("dim, hidden, rank", [(24, 2, None), (24, 3, 4), (6, 4, None)])
def test_lowrank_logdet_equals_the_dense_slogdet_with_its_gradients(dim, hidden, rank):
    """Sylvester's identity det(I_D + h U diag(d) V) = det(I_R + h V U diag(d)), for R = M H below and above D."""
    torch.manual_seed(0)
    bank = flow.FieldBank(dim, 2, 2, hidden=hidden, rotational_rank=rank).double()
    z = torch.randn(7, dim, dtype=torch.float64, requires_grad=True)
    g = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    t = torch.full((7,), 2.0, dtype=torch.float64)
    eye = torch.eye(dim, dtype=torch.float64)
    dense = torch.linalg.slogdet(eye + 0.6 * bank.weighted_jacobian(z, t, g)).logabsdet
    low = bank.lowrank_logdet(z, t, g, 0.6)
    torch.testing.assert_close(low, dense, rtol=0, atol=1e-12)
    grads = lambda out: torch.autograd.grad(out.sum(), [z, g, *bank.parameters()])  # noqa: E731
    for a, b in zip(grads(low), grads(dense), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert bank.jacobian_rank == 4 * hidden
    # the exact log-determinant of a flow step takes the cheaper form by itself when R < D
    auto = flow.step_logdet(bank, z, 2.0, g, h=0.6, method="exact")
    torch.testing.assert_close(auto, dense, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dim, hidden, rank", [(40, 3, None), (30, 4, 5)])
def test_active_logdet_is_exact_in_value_and_gradient_when_spikes_are_off(dim, hidden, rank):
    """Fields whose speed is exactly zero drop out of the determinant; their speeds keep their exact gradient."""
    torch.manual_seed(0)
    bank = flow.FieldBank(dim, 3, 3, hidden=hidden, rotational_rank=rank).double()
    z = torch.randn(12, dim, dtype=torch.float64, requires_grad=True)
    on = torch.rand(12, 6) < 0.4
    on[0], on[1] = False, True                          # a sample with no field moving, one with all six
    g = (torch.randn(12, 6, dtype=torch.float64) * on).requires_grad_(True)
    t = torch.full((12,), 1.0, dtype=torch.float64)
    dense = torch.linalg.slogdet(torch.eye(dim, dtype=torch.float64) + 0.6 * bank.weighted_jacobian(z, t, g))
    active = bank.active_logdet(z, t, g, 0.6)
    torch.testing.assert_close(active, dense.logabsdet, rtol=0, atol=1e-12)
    wrt = [z, g, *bank.parameters()]
    for a, b in zip(torch.autograd.grad(active.sum(), wrt), torch.autograd.grad(dense.logabsdet.sum(), wrt),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert all(bank._active_form_pays(k) for k in range(1, 7))


def test_the_flow_takes_the_active_form_only_where_it_pays():
    torch.manual_seed(0)
    small = flow.FieldBank(16, 3, 3, hidden=64)                   # the tiny preset's shape: dense is cheaper
    assert not any(small._active_form_pays(k) for k in range(1, 7))
    big = flow.FieldBank(324, 3, 3, hidden=128)                   # the mnist preset's shape
    assert [big._active_form_pays(k) for k in range(1, 7)] == [True, True, False, False, False, False]
    z, g = torch.randn(4, 16), torch.rand(4, 6) * (torch.rand(4, 6) < 0.5)
    ref = torch.linalg.slogdet(torch.eye(16) + small.weighted_jacobian(z, torch.ones(4), g)).logabsdet
    torch.testing.assert_close(flow.step_logdet(small, z, 1.0, g, method="exact"), ref)
