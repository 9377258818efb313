"""Chapter 3: the probability flow (moving a distribution along the fields).

One transition pushes latents ``z`` ``[B, D]`` along a weighted sum of ``M`` fields, with speeds ``g``
``[B, M]``, in ``n_sub`` explicit Euler substeps of size ``h / n_sub``:

    z <- z + (h / n_sub) * sum_m g^m v_m(z, t).

By the change of variables, the density of the pushed samples changes by the log-determinant of each
substep's Jacobian: ``log q'(z') = log q(z) - log|det(I + (h / n_sub) J_w(z))|``. It is computed three ways:

* ``"exact"``: ``slogdet`` of the ``D x D`` step Jacobian; when the fields have fewer hidden units in all
  (``R = M H``) than ``D``, the same determinant as an ``R x R`` one (Sylvester's identity,
  :meth:`FieldBank.lowrank_logdet`);
* ``"first_order"``: ``(h / n_sub) sum_{m potential} g^m Laplacian u_m``; rotational fields contribute
  nothing, by construction (their terms are never computed, not estimated to be zero);
* ``"hutchinson"``: the same with each Laplacian replaced by ``eps^T Hess(u_m) eps`` (Rademacher ``eps``).

Also here: the Hamilton-Jacobi residual ``d_t u + |grad u|^2 / 2`` of dynamic optimal transport, and the
heat equation's probability flow (FFRL's prior), ``v = -D grad log p``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ._checks import check_positive, check_tensor
from .fields import PotentialField, RotationalField, VectorField, _as_time, divergence, jacobian, rademacher

__all__ = ["FieldBank", "as_field_bank", "drift", "step_logdet", "flow_step", "flow", "FlowStep", "FlowResult",
           "hj_residual", "fit_hamilton_jacobi", "path_statistics", "kde_log_density", "HeatFlow", "LOGDET_METHODS",
           "step_invertibility"]

LOGDET_METHODS = ("exact", "first_order", "hutchinson")
#: let ``"exact"`` use :meth:`FieldBank.lowrank_logdet` when the Jacobian's rank bound ``R`` is below ``D`` (same
#: numbers; set to False to time the dense form)
USE_LOWRANK = True


class FieldBank(nn.Module):
    """``n_potential`` potential fields followed by ``n_rotational`` rotational ones, evaluated together.

    Each kind is one stacked network (``PotentialField(n_fields=...)``, ``RotationalField(n_fields=...)``), so
    velocities, Laplacians and Jacobians of all fields come from a few ``einsum`` calls, not a loop over fields.
    """

    def __init__(self, dim: int, n_potential: int, n_rotational: int, hidden: int = 64,
                 rotational_rank: int | None = None, time_dependent_rotational: bool = False):
        super().__init__()
        if n_potential < 0 or n_rotational < 0 or n_potential + n_rotational < 1:
            raise ValueError(f"need at least one field, got n_potential={n_potential}, n_rotational={n_rotational}")
        self.dim, self.n_potential, self.n_rotational = dim, n_potential, n_rotational
        self.potential = PotentialField(dim, hidden, True, n_fields=n_potential) if n_potential else None
        self.rotational = (RotationalField(dim, hidden, time_dependent_rotational, rotational_rank,
                                           n_fields=n_rotational) if n_rotational else None)

    @property
    def M(self) -> int:
        return self.n_potential + self.n_rotational

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("potential",) * self.n_potential + ("rotational",) * self.n_rotational

    def _cat(self, pot, rot):
        parts = [p for p in (pot, rot) if p is not None]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def velocities(self, z, t):
        """``[B, M, D]`` (unchecked inputs: ``z`` ``[B, D]``, ``t`` ``[B]``)."""
        return self._cat(self.potential.velocity(z, t) if self.potential else None,
                         self.rotational.velocity(z, t) if self.rotational else None)

    def divergences(self, z, t, method: str = "exact", eps: torch.Tensor | None = None):
        """``[B, M]``: Laplacians of the potentials (exact, or Hutchinson with probes ``eps`` ``[P, B, D]``);
        zeros for the rotational fields, by construction."""
        pot = None
        if self.potential:
            u = self.potential.u
            pot = u.laplacian(z, t) if method == "exact" else u.hessian_quadratic_form(z, t, eps).mean(0)
        rot = z.new_zeros(z.shape[0], self.n_rotational) if self.rotational else None
        return self._cat(pot, rot)

    def jacobians(self, z, t):
        """``[B, M, D, D]``."""
        return self._cat(self.potential.u.hessian(z, t) if self.potential else None,
                         self.rotational.S @ self.rotational.H.hessian(z, t) if self.rotational else None)

    def weighted_jacobian(self, z, t, speeds):
        """``J_w = sum_m g^m J_m``, ``[B, D, D]``, without forming the ``[B, M, D, D]`` stack: for a potential
        ``J = W^T diag(w tanh'') W`` and for a rotational field ``J = (S W^T) diag(w tanh'') W``."""
        J = z.new_zeros(z.shape[0], self.dim, self.dim)
        if self.potential:
            u = self.potential.u
            _, _, wd2 = u._slopes(z, t)
            scaled = (speeds[:, : self.n_potential, None] * wd2).flatten(1)           # [B, Mp * H]
            W = u.W.flatten(0, 1)                                                     # [Mp * H, D]
            J = J + W.T @ (scaled[:, :, None] * W)
        if self.rotational:
            H = self.rotational.H
            _, _, wd2 = H._slopes(z, t)
            scaled = (speeds[:, self.n_potential:, None] * wd2).flatten(1)           # [B, Mr * H]
            SW = torch.einsum("mij,mhj->imh", self.rotational.S, H.W).flatten(1)     # S_m W_m^T, [D, Mr * H]
            J = J + SW @ (scaled[:, :, None] * H.W.flatten(0, 1))
        return J

    @property
    def jacobian_rank(self) -> int:
        """``R = M H``: the step Jacobian ``J_w = U diag(d) V`` has rank at most ``R`` (``H`` hidden units per
        field), whatever the speeds and the point."""
        ranks = [f.W.shape[0] * f.W.shape[1] for f in (self.potential and self.potential.u,
                                                       self.rotational and self.rotational.H) if f]
        return sum(ranks)

    def _factors(self):
        """The sample-independent factors of ``J_w = U diag(d(z, g)) V``: ``U`` ``[D, R]`` (``W_m^T`` for a
        potential, ``S_m W_m^T`` for a rotational field) and ``V`` ``[R, D]`` (the stacked ``W_m``)."""
        Us, Vs = [], []
        if self.potential:
            W = self.potential.u.W.flatten(0, 1)                                        # [Mp H, D]
            Us.append(W.T)
            Vs.append(W)
        if self.rotational:
            H = self.rotational.H
            Us.append(torch.einsum("mij,mhj->imh", self.rotational.S, H.W).flatten(1))  # [D, Mr H]
            Vs.append(H.W.flatten(0, 1))
        return torch.cat(Us, 1), torch.cat(Vs, 0)

    def _curvatures(self, z, t):
        """``w tanh''`` of every hidden unit of every field at ``z``, ``[B, M, H]``."""
        nets = (self.potential and self.potential.u, self.rotational and self.rotational.H)
        parts = [f._slopes(z, t)[2] for f in nets if f]
        return torch.cat(parts, 1)

    def _weights(self, z, t, speeds):
        """``d`` ``[B, R]``: each field's speed times its ``w tanh''`` at ``z``, so that ``J_w = U diag(d) V``."""
        return (speeds[:, :, None] * self._curvatures(z, t)).flatten(1)

    def lowrank_logdet(self, z, t, speeds, step: float) -> torch.Tensor:
        """``log|det(I_D + step J_w)|`` ``[B]``, exactly, in the ``R``-dimensional space of the hidden units:
        with ``J_w = U diag(d) V``, Sylvester's determinant identity gives
        ``det(I_D + step U diag(d) V) = det(I_R + step K diag(d))``, ``K = V U`` ``[R, R]``. ``K`` does not
        depend on the sample, so a sample costs an ``R x R`` determinant instead of forming a ``D x D`` Jacobian
        (``D^2 R``) and its determinant: cheaper whenever ``R < D``."""
        U, V = self._factors()
        K = V @ U                                                                       # [R, R], once
        d = self._weights(z, t, speeds)                                                 # [B, R]
        eye = torch.eye(K.shape[0], dtype=z.dtype, device=z.device)
        return torch.linalg.slogdet(eye + step * K * d[:, None, :]).logabsdet

    def active_logdet(self, z, t, speeds, step: float) -> torch.Tensor:
        """``log|det(I_D + step J_w)|`` ``[B]``, exactly, in the space of the hidden units of the fields that move.

        A field whose speed is exactly zero (a spike that is off: straight-through or hard spikes) adds nothing
        to ``J_w``: in Sylvester's form ``det(I_R + step K diag(d))`` its columns are unit vectors, and the
        determinant is that of the active fields' ``kH x kH`` block. Samples are grouped by their number ``k`` of
        moving fields; the groups for which this block is cheaper take it, the others the dense ``D x D`` form
        (in one batch). The gradient is
        exact too: an inactive field's speed still receives ``d logdet / d g_j = step sum_r w tanh''_r
        [G^{-1} K]_rr`` over its hidden units ``r`` (a straight-through spike needs it), added by a term whose
        value is zero."""
        B, M, D = z.shape[0], self.M, self.dim
        active = speeds != 0
        counts = active.sum(1)
        present = counts.unique().tolist()
        R = self.jacobian_rank
        H = R // M
        saved = sum(int((counts == k).sum()) * (self._dense_cost() - self._active_cost(k))
                    for k in present if k and self._active_form_pays(k))
        if saved <= R * R * D:              # what the active form saves does not pay for K = V U: the dense form
            return torch.linalg.slogdet(_step_matrix(self, z, t, speeds, step)).logabsdet
        curv = self._curvatures(z, t)                                                   # [B, M, H]
        U, V = self._factors()
        K = V @ U                                                                       # [R, R], R = M H
        out = z.new_zeros(B)
        units = torch.arange(H, device=z.device)
        dense = torch.tensor([k > 0 and not self._active_form_pays(k) for k in range(M + 1)], device=z.device)
        if bool(dense[counts].any()):                      # every sample the dense form suits, in one batch
            rows = dense[counts].nonzero().squeeze(1)
            matrix = _step_matrix(self, z[rows], t[rows], speeds[rows], step)
            out = out.index_put((rows,), torch.linalg.slogdet(matrix).logabsdet)
        for k in present:
            if k > 0 and not self._active_form_pays(k):
                continue
            rows = (counts == k).nonzero().squeeze(1)
            n, gs, cs = rows.numel(), speeds[rows], curv[rows]
            if k == 0:                  # the identity: log det = 0, d/dg_j = step tr(J_j) = step sum_r K_rr w tanh''_r
                if speeds.requires_grad:
                    with torch.no_grad():
                        c = step * (K.diagonal().reshape(M, H) * cs).sum(-1)            # [n, M]
                    out = out.index_put((rows,), ((gs - gs.detach()) * c).sum(1))
                continue
            on = active[rows].float().argsort(dim=1, descending=True, stable=True)[:, :k]   # [n, k] moving
            on = on.sort(1).values
            idx = (on[:, :, None] * H + units).flatten(1)                               # [n, k H] hidden units
            d = (gs.gather(1, on)[:, :, None] * cs.gather(1, on[:, :, None].expand(n, k, H))).flatten(1)
            K_aa = K[idx[:, :, None], idx[:, None, :]]                                  # [n, kH, kH]
            G = torch.eye(k * H, dtype=z.dtype, device=z.device) + step * K_aa * d[:, None, :]
            value = torch.linalg.slogdet(G).logabsdet
            if k < M and speeds.requires_grad:
                value = value + self._inactive_speed_gradient(K, G, d, idx, on, gs, cs, step, k)
            out = out.index_put((rows,), value)
        return out

    def _active_form_pays(self, k: int) -> bool:
        """Whether a sample with ``k`` moving fields is clearly cheaper in the active block (a ``kH`` determinant
        and, for the gradient, a solve against the other fields' units) than in the dense ``D x D`` form: the
        active form runs more and smaller operations (gathers, a solve), so it must count under half the dense
        form's multiply-adds (measured: at the mnist preset's shape it is slower at ``k = 3``)."""
        return self._active_cost(k) < 0.5 * self._dense_cost()

    def _dense_cost(self) -> int:
        """Multiply-adds of one sample's dense form: ``J_w = U diag(d) V`` (``D^2 R``) and its determinant."""
        return self.dim ** 2 * self.jacobian_rank + self.dim ** 3

    def _active_cost(self, k: int) -> int:
        """Multiply-adds of one sample's active block with ``k`` moving fields: its determinant and the solve that
        gives the other fields' speed gradients."""
        H, M = self.jacobian_rank // self.M, self.M
        return (k * H) ** 3 + (k * H) ** 2 * (M - k) * H

    @staticmethod
    def _inactive_speed_gradient(K, G, d, idx, on, gs, cs, step, k):
        """``sum_j (g_j - g_j.detach()) c_j`` over the fields ``j`` that do not move: zero in value, with the
        exact derivative ``c_j = d logdet / d g_j`` of a determinant that does not contain them."""
        n, M, H = cs.shape
        mask = torch.ones(n, M, dtype=torch.bool, device=gs.device)
        mask[torch.arange(n, device=gs.device)[:, None], on] = False
        off = mask.nonzero()[:, 1].reshape(n, M - k)                                   # [n, M - k]
        with torch.no_grad():
            units = torch.arange(H, device=gs.device)
            ridx = (off[:, :, None] * H + units).flatten(1)                             # [n, (M - k) H]
            X = torch.linalg.solve(G, K[idx[:, :, None], ridx[:, None, :]])            # G^{-1} K_{A,I}
            K_ia = K[ridx[:, :, None], idx[:, None, :]]                                 # [n, (M-k)H, kH]
            diag_k = K.diagonal()[ridx]                                                 # K_rr
            q = diag_k - step * torch.einsum("nra,na,nar->nr", K_ia, d, X)              # [G^{-1} K]_rr, r off
            curv_off = cs.gather(1, off[:, :, None].expand(n, M - k, H)).flatten(1)
            c = step * (q * curv_off).reshape(n, M - k, H).sum(-1)                      # [n, M - k]
        g_off = gs.gather(1, off)
        return ((g_off - g_off.detach()) * c).sum(1)


class _FieldList(nn.Module):
    """Adapter: a sequence of single :class:`VectorField` s (any construction) used as a bank."""

    def __init__(self, fields: Sequence[VectorField]):
        super().__init__()
        self.fields = nn.ModuleList(fields)
        dims = {f.dim for f in fields}
        if len(dims) != 1:
            raise ValueError(f"all fields must have the same dim, got {sorted(dims)}")
        self.dim = dims.pop()
        self.M = len(fields)
        self.kinds = tuple("potential" if isinstance(f, PotentialField) else
                           "rotational" if isinstance(f, RotationalField) else "other" for f in fields)

    def velocities(self, z, t):
        return torch.stack([f.velocity(z, t) for f in self.fields], 1)

    def divergences(self, z, t, method="exact", eps=None):
        out = []
        for f, kind in zip(self.fields, self.kinds, strict=True):
            if kind == "rotational":
                out.append(z.new_zeros(z.shape[0]))
            elif kind == "potential":
                out.append(f.u.laplacian(z, t) if method == "exact" else f.u.hessian_quadratic_form(z, t, eps).mean(0))
            elif method == "exact":
                out.append(divergence(f, z, t))
            else:
                jv = torch.stack([torch.func.jvp(lambda zz, f=f: f.velocity(zz, t), (z,), (e,))[1] for e in eps])
                out.append((eps * jv).sum(-1).mean(0))
        return torch.stack(out, 1)

    def jacobians(self, z, t):
        return torch.stack([jacobian(f, z, t) for f in self.fields], 1)


def as_field_bank(fields):
    """A :class:`FieldBank` as it is, or a sequence of single fields wrapped to behave like one."""
    if isinstance(fields, (FieldBank, _FieldList)):
        return fields
    if isinstance(fields, VectorField):
        return _FieldList([fields])
    if isinstance(fields, Sequence) and fields and all(isinstance(f, VectorField) for f in fields):
        return _FieldList(list(fields))
    raise TypeError(f"fields must be a FieldBank or a non-empty sequence of VectorField, got {type(fields).__name__}")


def _check_step_inputs(bank, z, speeds, h, n_sub):
    z = check_tensor(z, "z", ndim=2, last=bank.dim)
    speeds = check_tensor(speeds, "speeds", ndim=2, last=bank.M)
    if speeds.shape[0] != z.shape[0]:
        raise ValueError(f"speeds must have shape [B, M] = [{z.shape[0]}, {bank.M}], got {tuple(speeds.shape)}")
    check_positive(h, "h")
    if not isinstance(n_sub, int) or isinstance(n_sub, bool) or n_sub < 1:
        raise ValueError(f"n_sub must be a positive int, got {n_sub!r}")
    return z, speeds


def drift(fields, z: torch.Tensor, t, speeds: torch.Tensor) -> torch.Tensor:
    """``w(z) = sum_m g^m v_m(z, t)``, ``[B, D]`` for speeds ``[B, M]``."""
    bank = as_field_bank(fields)
    z, speeds = _check_step_inputs(bank, z, speeds, 1.0, 1)
    return torch.einsum("bm,bmd->bd", speeds, bank.velocities(z, _as_time(t, z)))


def _step_matrix(bank, z, t, speeds, step):
    """The Jacobian ``I + step J_w`` of an Euler step, ``[B, D, D]``, formed densely."""
    if isinstance(bank, FieldBank):
        J = bank.weighted_jacobian(z, t, speeds)
    else:
        J = torch.einsum("bm,bmij->bij", speeds, bank.jacobians(z, t))
    return torch.eye(z.shape[-1], dtype=z.dtype, device=z.device) + step * J


def _logdet(bank, z, t, speeds, step, method, n_probes, generator):
    if method == "exact":
        if USE_LOWRANK and isinstance(bank, FieldBank) and bank.jacobian_rank < bank.dim:   # cheaper, as exact
            return bank.lowrank_logdet(z, t, speeds, step)
        if USE_LOWRANK and isinstance(bank, FieldBank) and bool((speeds == 0).any()):
            return bank.active_logdet(z, t, speeds, step)
        return torch.linalg.slogdet(_step_matrix(bank, z, t, speeds, step)).logabsdet
    if method == "first_order":
        return step * (speeds * bank.divergences(z, t)).sum(-1)
    if method == "hutchinson":
        eps = rademacher((n_probes, *z.shape), z, generator)
        return step * (speeds * bank.divergences(z, t, "hutchinson", eps)).sum(-1)
    raise ValueError(f"logdet must be one of {LOGDET_METHODS} or None, got {method!r}")


def step_logdet(fields, z, t, speeds, h: float = 1.0, method: str = "exact", n_probes: int = 1,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``log|det(I + h J_w(z))|`` of one Euler step, ``[B]``, by ``method`` (see the module docstring)."""
    bank = as_field_bank(fields)
    z, speeds = _check_step_inputs(bank, z, speeds, h, 1)
    return _logdet(bank, z, _as_time(t, z), speeds, h, method, n_probes, generator)


class FlowStep(NamedTuple):
    z: torch.Tensor        # [B, D], the latents after the transition
    logdet: torch.Tensor   # [B], sum over substeps of log|det(I + (h / n_sub) J_w)| (zeros if not asked for)


class FlowResult(NamedTuple):
    z: torch.Tensor        # [B, T + 1, D], z_0 .. z_T
    logdet: torch.Tensor   # [B, T], per transition
    log_q: torch.Tensor | None  # [B, T + 1], log q_t(z_t) when log_q0 was given


def flow_step(fields, z: torch.Tensor, speeds: torch.Tensor, t, h: float = 1.0, n_sub: int = 1,
              logdet: str | None = "exact", n_probes: int = 1, generator: torch.Generator | None = None) -> FlowStep:
    """One transition: ``n_sub`` Euler substeps of ``z <- z + (h / n_sub) sum_m g^m v_m(z, t)``.

    ``z`` ``[B, D]``, ``speeds`` ``[B, M]``, ``t`` a number or ``[B]`` (the field time, constant within the
    transition). Returns the new latents and the summed log-determinant of the substeps.
    """
    bank = as_field_bank(fields)
    z, speeds = _check_step_inputs(bank, z, speeds, h, n_sub)
    t = _as_time(t, z)
    step = h / n_sub
    total = z.new_zeros(z.shape[0])
    for _ in range(n_sub):
        if logdet is not None:
            total = total + _logdet(bank, z, t, speeds, step, logdet, n_probes, generator)
        z = z + step * torch.einsum("bm,bmd->bd", speeds, bank.velocities(z, t))
    return FlowStep(z, total)


def flow(fields, z0: torch.Tensor, speeds: torch.Tensor, h: float = 1.0, n_sub: int = 1,
         logdet: str | None = "exact", log_q0: torch.Tensor | None = None, t0: float = 0.0, n_probes: int = 1,
         generator: torch.Generator | None = None) -> FlowResult:
    """Push ``z0`` ``[B, D]`` through ``T`` transitions with speeds ``[B, T, M]``; transition ``t`` (1..T) uses
    field time ``t0 + t``. With ``log_q0`` ``[B]`` (the log-density of ``z0``) it also returns
    ``log q_t(z_t) = log q_0(z_0) - sum_{s <= t} logdet_s``."""
    bank = as_field_bank(fields)
    speeds = check_tensor(speeds, "speeds", ndim=3, last=bank.M)
    z = check_tensor(z0, "z0", ndim=2, last=bank.dim)
    if speeds.shape[0] != z.shape[0]:
        raise ValueError(f"speeds must have shape [B, T, M] with B = {z.shape[0]}, got {tuple(speeds.shape)}")
    path, logdets = [z], []
    for t in range(speeds.shape[1]):                     # a loop over time steps only
        z, ld = flow_step(bank, z, speeds[:, t], t0 + t + 1, h, n_sub, logdet, n_probes, generator)
        path.append(z)
        logdets.append(ld)
    logdets = torch.stack(logdets, 1) if logdets else z.new_zeros(z.shape[0], 0)
    log_q = None
    if log_q0 is not None:
        log_q0 = check_tensor(log_q0, "log_q0", ndim=1)
        log_q = torch.cat([log_q0[:, None], log_q0[:, None] - logdets.cumsum(1)], 1)
    return FlowResult(torch.stack(path, 1), logdets, log_q)


def hj_residual(potential, z: torch.Tensor, t) -> torch.Tensor:
    """Hamilton-Jacobi residual ``d_t u + |grad_z u|^2 / 2`` per sample (the squared norm sums over ``D``).

    ``potential``: a :class:`PotentialField` (closed form; ``[B, (M,)]``) or a callable ``u(z, t) -> [B]``
    (autograd; ``[B]``). Zero exactly when ``u`` solves the equation of dynamic optimal transport
    (Benamou-Brenier), whose characteristics are straight lines travelled at constant speed.
    """
    if isinstance(potential, PotentialField):
        z, t = potential.check(z, t)
        u = potential.u
        return u.time_derivative(z, t) + 0.5 * (u.grad(z, t) ** 2).sum(-1)
    if not callable(potential):
        raise TypeError(f"potential must be a PotentialField or a callable u(z, t), got {type(potential).__name__}")
    z = check_tensor(z, "z", ndim=2)
    t = _as_time(t, z)
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        tt = t.detach().clone().requires_grad_(True)
        u = potential(zz, tt)
        gz, gt = torch.autograd.grad(u.sum(), (zz, tt), create_graph=keep_graph, allow_unused=True)
    gz = torch.zeros_like(zz) if gz is None else gz
    gt = torch.zeros_like(tt) if gt is None else gt
    return gt + 0.5 * (gz**2).sum(-1)


def fit_hamilton_jacobi(field: PotentialField, initial, steps: int = 1000, batch: int = 512, t_max: float = 1.0,
                        spread: float = 2.0, lr: float = 3e-3, ic_weight: float = 10.0,
                        generator: torch.Generator | None = None) -> list[float]:
    """Train ``field`` (a time-dependent :class:`PotentialField`) to solve the Hamilton-Jacobi equation with
    initial velocity ``initial`` (a field): minimise ``E[(d_t u + |grad u|^2 / 2)^2]`` over
    ``z ~ N(0, spread^2 I)``, ``t ~ U(0, t_max)``, plus ``ic_weight * E|grad u(z, 0) - initial(z)|^2``.
    Returns the loss per step. The solution moves every particle on a straight line at constant speed
    (until paths cross)."""
    if not isinstance(field, PotentialField) or not field.u.time_dependent:
        raise TypeError("field must be a time-dependent PotentialField")
    opt = torch.optim.Adam(field.parameters(), lr=lr)
    param = next(field.parameters())
    history = []
    for _ in range(steps):
        z = spread * torch.randn(batch, field.dim, generator=generator).to(param)
        t = t_max * torch.rand(batch, generator=generator).to(param)
        with torch.no_grad():
            target = initial(z, 0.0)
        loss = hj_residual(field, z, t).pow(2).mean() + ic_weight * (field(z, 0.0) - target).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    return history


def path_statistics(paths: torch.Tensor) -> dict[str, torch.Tensor]:
    """How straight and steady particle paths ``[T + 1, N, D]`` are, per particle ``[N]``.

    ``excess_length``: path length over end-to-end distance, minus 1 (0 for a straight path).
    ``speed_variation``: standard deviation over mean of the step lengths (0 for constant speed).
    """
    paths = check_tensor(paths, "paths", ndim=3)
    steps = (paths[1:] - paths[:-1]).norm(dim=-1)                      # [T, N]
    chord = (paths[-1] - paths[0]).norm(dim=-1).clamp_min(1e-12)
    return {"excess_length": steps.sum(0) / chord - 1, "speed_variation": steps.std(0) / steps.mean(0).clamp_min(1e-12)}


def kde_log_density(points: torch.Tensor, samples: torch.Tensor, bandwidth: float | None = None,
                    chunk: int = 1024) -> torch.Tensor:
    """Gaussian kernel density estimate of ``log q`` at ``points`` ``[N, D]`` from ``samples`` ``[S, D]``.

    ``bandwidth`` defaults to Scott's rule per coordinate, ``std * S^(-1/(D+4))``. Chunked over points.
    """
    points = check_tensor(points, "points", ndim=2)
    samples = check_tensor(samples, "samples", ndim=2, last=points.shape[-1])
    S, D = samples.shape
    bw = samples.std(0) * S ** (-1 / (D + 4)) if bandwidth is None else torch.full((D,), bandwidth).to(samples)
    norm = math.log(S) + 0.5 * D * math.log(2 * math.pi) + bw.log().sum()
    out = []
    for part in points.split(chunk):
        d2 = (((part[:, None, :] - samples[None]) / bw) ** 2).sum(-1)
        out.append(torch.logsumexp(-0.5 * d2, dim=1) - norm)
    return torch.cat(out)


class HeatFlow(VectorField):
    """The heat equation ``d_t p = diffusion * Laplacian p`` from ``N(0, var0 I)``, as a probability flow.

    Its solution stays Gaussian, ``p_t = N(0, (var0 + 2 diffusion t) I)``, and the same marginals are carried
    by the deterministic velocity ``v = -diffusion * grad log p_t = diffusion * z / var_t``: a potential flow
    with potential ``-diffusion * log p_t`` (FFRL's prior flow). ``div v = diffusion * D / var_t``.
    """

    def __init__(self, dim: int, diffusion: float = 0.5, var0: float = 1.0):
        super().__init__()
        self.dim = dim
        self.diffusion = check_positive(diffusion, "diffusion")
        self.var0 = check_positive(var0, "var0")

    def variance(self, t):
        """``var0 + 2 diffusion t`` (same type as ``t``)."""
        return self.var0 + 2 * self.diffusion * t

    def velocity(self, z, t):
        return self.diffusion * z / self.variance(t)[:, None]

    def divergence(self, z, t=None):
        """``diffusion * D / var_t``, ``[B]``."""
        z, t = self.check(z, t)
        return self.diffusion * self.dim / self.variance(t)

    def log_density(self, z, t=None):
        """``log p_t(z)``, ``[B]``."""
        z, t = self.check(z, t)
        var = self.variance(t)
        return -0.5 * ((z**2).sum(-1) / var + self.dim * torch.log(2 * math.pi * var))


def step_invertibility(fields, z: torch.Tensor, speeds: torch.Tensor, t, h: float = 1.0) -> dict[str, torch.Tensor]:
    """How far one Euler step ``z -> z + h w(z)`` is from folding space, per sample: its Jacobian
    ``I + h J_w(z)``, with ``J_w = sum_m g^m J_m``, for ``z`` ``[B, D]``, speeds ``[B, M]`` and field time ``t``
    (a number or ``[B]``). ``h`` is the size of one Euler step (``h / n_sub`` for a model with substeps).

    Returns a dict of ``[B]`` tensors:

    * ``"sigma_min"``: the smallest singular value of ``I + h J_w`` (0 where the step folds space);
    * ``"sign"``: the sign of its determinant (+1, -1, or 0 for an exactly singular matrix);
    * ``"logabsdet"``: ``log|det(I + h J_w)|``, what the exact log-determinant uses.

    The change of variables behind :func:`flow` needs ``sigma_min > 0`` (the step is locally one-to-one) and,
    for a step that can be reached continuously from the identity (``h -> 0``) without folding, ``sign > 0``.
    ``slogdet(...).logabsdet`` alone discards the sign, so a step that has turned space inside out looks fine.
    """
    bank = as_field_bank(fields)
    z, speeds = _check_step_inputs(bank, z, speeds, h, 1)
    t = _as_time(t, z)
    with torch.no_grad():
        step = _step_matrix(bank, z, t, speeds, h)
        sign, logabsdet = torch.linalg.slogdet(step)
        sigma_min = torch.linalg.svdvals(step)[..., -1]
    return {"sigma_min": sigma_min, "sign": sign, "logabsdet": logabsdet}
