"""Chapter 2: the two kinds of latent motion (Helmholtz decomposition).

Every field maps latents ``z`` of shape ``[B, D]`` and times ``t`` (a scalar or ``[B]``) to velocities
``[B, D]``.

* :class:`PotentialField` -- curl-free, ``v = grad_z u(z, t)``. Its Jacobian is the Hessian of ``u``
  (symmetric) and ``div v = Laplacian u``.
* :class:`RotationalField` -- divergence-free by construction, ``v = S grad_z H(z, t)`` with ``S`` a
  learnable antisymmetric matrix: ``div v = sum_ij S_ij d^2H/dz_i dz_j = 0`` because ``S`` is antisymmetric
  and the Hessian symmetric. One gradient per evaluation, cheap at ``D = 324``.
* :class:`ConservationLawField` -- the antisymmetric-matrix potential of Neural Conservation Laws,
  ``v_i = sum_j dA_ij/dz_j`` with ``A = J_F - J_F^T``: general, but it needs the second derivatives of ``F``,
  ``O(D^3)`` per sample; for teaching.

The scalar networks ``u`` and ``H`` are one-hidden-layer tanh networks (:class:`TanhScalarNet`), whose
gradient, Hessian, Laplacian and time derivative are written in closed form. They agree with
``torch.func`` to float precision (see the tests) and are several times faster than nested autograd.

Generic tools for any field: :func:`jacobian`, :func:`divergence` (exact or Hutchinson), :func:`curl`
(antisymmetric part of the Jacobian) and :func:`helmholtz_hodge_2d` (FFT decomposition on a periodic grid).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from einops import einsum
from torch import nn
from torch.func import jacfwd, jacrev, jvp, vmap

from ._checks import check_positive, check_tensor

__all__ = [
    "TanhScalarNet",
    "VectorField",
    "PotentialField",
    "RotationalField",
    "ConservationLawField",
    "jacobian",
    "divergence",
    "curl",
    "rademacher",
    "helmholtz_hodge_2d",
    "HelmholtzHodge2D",
    "integrate",
    "cell_log_areas",
]


def _as_time(t, z: torch.Tensor) -> torch.Tensor:
    """Broadcast ``t`` (None, a number, a 0-d tensor or ``[B]``) to a ``[B]`` tensor like ``z``."""
    batch = z.shape[0]
    if t is None:
        return z.new_zeros(batch)
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        return z.new_full((batch,), float(t))
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be None, a number or a tensor, got {type(t).__name__}")
    if t.dim() == 0:
        return t.to(z).expand(batch)
    if t.dim() == 1 and t.shape[0] == batch:
        return t.to(z)
    raise ValueError(f"t must be a scalar or have shape [B] = [{batch}], got shape {tuple(t.shape)}")


def rademacher(shape, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random signs (+1/-1) of the given shape, dtype and device of ``like``.

    Drawn on the CPU from ``generator`` so that seeded runs repeat on every device.
    """
    signs = torch.randint(0, 2, tuple(shape), generator=generator).to(like) * 2 - 1
    return signs


class TanhScalarNet(nn.Module):
    """Scalar network ``f(z, t) = sum_k w_k tanh(a_k)``, ``a = W z + b + W_t phi(t)``, or a stack of ``M``.

    (No output bias: a constant shifts the potential without changing any velocity, so it could never be
    trained.)

    ``phi(t)`` holds sines and cosines of ``t`` at fixed frequencies (a smooth time embedding). With
    ``n_fields=M`` the parameters carry a leading field axis and every output gains an ``M`` axis after the
    batch axis (all ``M`` networks are evaluated by one ``einsum``, no loop over fields); with
    ``n_fields=None`` that axis is dropped. All derivatives in ``z`` and ``t`` are closed form:

    * gradient ``W^T (w * tanh'(a))`` -> ``[B, (M,) D]``
    * Hessian ``W^T diag(w * tanh''(a)) W`` -> ``[B, (M,) D, D]``
    * Laplacian ``sum_k w_k tanh''(a_k) |W_k|^2`` -> ``[B, (M,)]``
    * time derivative ``sum_k w_k tanh'(a_k) (W_t phi'(t))_k`` -> ``[B, (M,)]``

    Its Hessian is bounded by ``max|tanh''| sum_k |w_k| |W_k|^2`` (:meth:`hessian_bound`).
    """

    def __init__(self, dim: int, hidden: int = 64, time_dependent: bool = True, n_fields: int | None = None,
                 n_freq: int = 8):
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden must be a positive int, got {hidden!r}")
        if n_fields is not None and (not isinstance(n_fields, int) or n_fields < 1):
            raise ValueError(f"n_fields must be None or a positive int, got {n_fields!r}")
        self.dim, self.hidden, self.time_dependent, self.n_fields = dim, hidden, time_dependent, n_fields
        M = n_fields or 1
        uniform = lambda *shape, fan_in: nn.Parameter((torch.rand(*shape) * 2 - 1) / math.sqrt(fan_in))  # noqa: E731
        self.W = uniform(M, hidden, dim, fan_in=dim)           # like nn.Linear's initialisation
        self.b = uniform(M, hidden, fan_in=dim)
        self.w = uniform(M, hidden, fan_in=hidden)
        if time_dependent:
            self.W_t = uniform(M, hidden, 2 * n_freq, fan_in=2 * n_freq)
            freqs = torch.exp(torch.linspace(math.log(0.05), math.log(2.0), n_freq))
            self.register_buffer("freqs", freqs)

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.n_fields is not None else x.squeeze(1)

    def _flat(self, x, weight):
        """``x [B, K] @ weight [M, H, K]`` -> ``[B, M, H]`` as one matrix product."""
        M, H, K = weight.shape
        return (x @ weight.reshape(M * H, K).T).reshape(x.shape[0], M, H)

    def _pre(self, z, t):                                       # [B, M, H]
        a = self._flat(z, self.W) + self.b
        if self.time_dependent:
            angle = t[:, None] * self.freqs
            a = a + self._flat(torch.cat([angle.sin(), angle.cos()], -1), self.W_t)
        return a

    def _slopes(self, z, t):
        th = torch.tanh(self._pre(z, t))
        d1 = 1 - th**2                                          # tanh'(a)
        return th, self.w * d1, self.w * (-2 * th * d1)          # tanh''(a) = -2 tanh(a) tanh'(a)

    def value(self, z, t):
        """``f(z, t)``, ``[B, (M,)]``."""
        return self._out((torch.tanh(self._pre(z, t)) * self.w).sum(-1))

    def grad(self, z, t):
        """``grad_z f``, ``[B, (M,) D]``."""
        _, wd1, _ = self._slopes(z, t)
        return self._out(torch.einsum("bmh,mhd->bmd", wd1, self.W))

    def hessian(self, z, t):
        """``d^2 f / dz dz``, ``[B, (M,) D, D]``."""
        _, _, wd2 = self._slopes(z, t)
        return self._out(einsum(wd2, self.W, self.W, "b m h, m h i, m h j -> b m i j"))

    def laplacian(self, z, t):
        """``sum_i d^2 f / dz_i^2``, ``[B, (M,)]``."""
        _, _, wd2 = self._slopes(z, t)
        return self._out(torch.einsum("bmh,mh->bm", wd2, (self.W**2).sum(-1)))

    def hessian_quadratic_form(self, z, t, eps):
        """``eps^T Hess f eps`` for probes ``eps`` of shape ``[..., B, D]`` -> ``[..., B, (M,)]``."""
        _, _, wd2 = self._slopes(z, t)
        proj = torch.einsum("...bd,mhd->...bmh", eps, self.W)
        q = (proj**2 * wd2).sum(-1)
        return q if self.n_fields is not None else q.squeeze(-1)

    def time_derivative(self, z, t):
        """``d f / dt``, ``[B, (M,)]`` (zero for a time-independent network)."""
        if not self.time_dependent:
            return self._out(z.new_zeros(z.shape[0], self.W.shape[0]))
        _, wd1, _ = self._slopes(z, t)
        angle = t[:, None] * self.freqs
        dphi = torch.cat([self.freqs * angle.cos(), -self.freqs * angle.sin()], dim=-1)
        return self._out((wd1 * self._flat(dphi, self.W_t)).sum(-1))

    def hessian_bound(self) -> torch.Tensor:
        """An upper bound on the spectral norm of the Hessian, ``[(M,)]``: ``max|tanh''| sum_k |w_k||W_k|^2``
        with ``max|tanh''| = 4 / (3 sqrt 3)``."""
        bound = 4 / (3 * math.sqrt(3)) * (self.w.abs() * (self.W**2).sum(-1)).sum(-1)
        return bound if self.n_fields is not None else bound.squeeze(0)


class VectorField(nn.Module, abc.ABC):
    """Base class: a velocity field on ``R^D``. ``field(z, t)`` checks its input, ``[B, D] -> [B, D]``."""

    dim: int

    def forward(self, z: torch.Tensor, t=None) -> torch.Tensor:
        z = check_tensor(z, "z", ndim=2, last=self.dim)
        return self.velocity(z, _as_time(t, z))

    @abc.abstractmethod
    def velocity(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Unchecked velocity for ``z`` ``[B, D]`` and ``t`` ``[B]`` (safe under ``torch.func.vmap``)."""

    def check(self, z, t=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate ``z`` and broadcast ``t``; returns ``(z, t)`` with ``t`` of shape ``[B]``."""
        z = check_tensor(z, "z", ndim=2, last=self.dim)
        return z, _as_time(t, z)


class PotentialField(VectorField):
    """Curl-free field ``v(z, t) = grad_z u(z, t)`` with ``u`` a :class:`TanhScalarNet`.

    >>> field = PotentialField(dim=4)
    >>> field(torch.randn(8, 4), t=1.0).shape
    torch.Size([8, 4])

    ``n_fields=M`` holds ``M`` independent potentials evaluated together: every output gains an ``M`` axis
    after the batch axis (``[B, M, D]`` velocities). The generic tools (:func:`divergence`, :func:`jacobian`)
    take single fields.
    """

    def __init__(self, dim: int, hidden: int = 64, time_dependent: bool = True, n_fields: int | None = None):
        super().__init__()
        self.dim, self.n_fields = dim, n_fields
        self.u = TanhScalarNet(dim, hidden, time_dependent, n_fields)

    def velocity(self, z, t):
        return self.u.grad(z, t)

    def potential(self, z, t=None):
        """``u(z, t)``, ``[B, (M,)]``."""
        z, t = self.check(z, t)
        return self.u.value(z, t)

    def jacobian(self, z, t=None):
        """``J_v = Hess u``, symmetric, ``[B, (M,) D, D]``."""
        z, t = self.check(z, t)
        return self.u.hessian(z, t)

    def time_derivative(self, z, t=None):
        """``d_t u(z, t)``, ``[B, (M,)]`` (used by the Hamilton-Jacobi residual)."""
        z, t = self.check(z, t)
        return self.u.time_derivative(z, t)

    def laplacian(self, z, t=None, method: str = "exact", n_probes: int = 1,
                  generator: torch.Generator | None = None):
        """``div v = Laplacian u``, ``[B, (M,)]``.

        ``method="exact"`` sums the Hessian diagonal in closed form; ``"hutchinson"`` averages
        ``eps^T Hess(u) eps`` over ``n_probes`` Rademacher probes (unbiased, for large ``D``).
        """
        z, t = self.check(z, t)
        if method == "exact":
            return self.u.laplacian(z, t)
        if method == "hutchinson":
            eps = rademacher((_check_probes(n_probes), *z.shape), z, generator)
            return self.u.hessian_quadratic_form(z, t, eps).mean(0)
        raise ValueError(f"method must be 'exact' or 'hutchinson', got {method!r}")

    divergence = laplacian


class RotationalField(VectorField):
    """Divergence-free field ``v(z, t) = S grad_z H(z, t)``, ``S = -S^T`` learnable.

    ``rank=None`` uses a full ``S = L - L^T``; an integer ``rank`` uses ``S = A B^T - B A^T`` with
    ``A, B`` of shape ``[D, rank]`` (fewer parameters for large ``D``). In 2-D, ``S = s [[0, 1], [-1, 0]]``
    and ``v = s (dH/dz_2, -dH/dz_1)``: the stream-function form, complete for 2-D divergence-free fields.
    """

    def __init__(self, dim: int, hidden: int = 64, time_dependent: bool = False, rank: int | None = None,
                 n_fields: int | None = None):
        super().__init__()
        if dim < 2:
            raise ValueError(f"dim must be >= 2 for a rotational field (in 1-D only constants are "
                             f"divergence-free), got {dim}")
        self.dim, self.n_fields = dim, n_fields
        self.H = TanhScalarNet(dim, hidden, time_dependent, n_fields)
        self.rank = rank
        M = n_fields or 1
        if rank is None:
            self.L = nn.Parameter(torch.randn(M, dim, dim) / math.sqrt(dim))
        else:
            if not isinstance(rank, int) or rank < 1:
                raise ValueError(f"rank must be None or a positive int, got {rank!r}")
            self.A = nn.Parameter(torch.randn(M, dim, rank) / math.sqrt(dim))
            self.B = nn.Parameter(torch.randn(M, dim, rank) / math.sqrt(dim))

    @property
    def S(self) -> torch.Tensor:
        """The antisymmetric matrices ``[(M,) D, D]`` (``n_fields=M`` stacks ``M`` fields)."""
        L = self.L if self.rank is None else self.A @ self.B.transpose(-1, -2)
        S = L - L.transpose(-1, -2)
        return S if self.n_fields is not None else S[0]

    def velocity(self, z, t):
        grad = self.H.grad(z, t)
        if self.n_fields is None:
            return grad @ self.S.T
        return torch.einsum("bmj,mij->bmi", grad, self.S)

    def hamiltonian(self, z, t=None):
        """``H(z, t)``, ``[B, (M,)]``; conserved along the field's flow (``v . grad H = 0``)."""
        z, t = self.check(z, t)
        return self.H.value(z, t)

    def jacobian(self, z, t=None):
        """``J_v = S Hess H``, ``[B, (M,) D, D]`` (traceless)."""
        z, t = self.check(z, t)
        return self.S @ self.H.hessian(z, t)

    def divergence(self, z, t=None):
        """Exactly zero by construction, ``[B, (M,)]``."""
        z, _ = self.check(z, t)
        return z.new_zeros(z.shape[0], *(() if self.n_fields is None else (self.n_fields,)))


class ConservationLawField(VectorField):
    """Divergence-free field of Neural Conservation Laws (Richter-Powell et al., 2022).

    ``A(z) = J_F(z) - J_F(z)^T`` is antisymmetric for any network ``F: R^D -> R^D`` and
    ``v_i = sum_j d A_ij / d z_j = Laplacian F_i - d_i (div F)``, so ``div v = sum_ij d_i d_j A_ij = 0``.
    Evaluating ``v`` needs the second derivatives of ``F``: the ``[D, D, D]`` tensor ``d^2 F_i / dz_j dz_k``
    (the Hessian of every output of ``F``, one derivative beyond the Jacobian ``J_F``), taken with nested
    ``torch.func`` Jacobians, ``O(D^3)`` per sample: use it for ``D <= 32``.
    Time-independent.
    """

    def __init__(self, dim: int, hidden: int = 32):
        super().__init__()
        if dim < 2:
            raise ValueError(f"dim must be >= 2 for a divergence-free field, got {dim}")
        self.dim = dim
        self.F = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def _single(self, z1: torch.Tensor) -> torch.Tensor:
        T = jacfwd(jacrev(self.F))(z1)  # T[i, j, k] = d^2 F_i / dz_j dz_k, [D, D, D]
        return torch.einsum("ijj->i", T) - torch.einsum("jij->i", T)

    def velocity(self, z, t):
        return vmap(self._single)(z)


def _velocity_fn(field) -> Callable:
    if isinstance(field, VectorField):
        return field.velocity
    if callable(field):
        return field
    raise TypeError(f"field must be a VectorField or a callable (z, t) -> v, got {type(field).__name__}")


def _check_probes(n_probes) -> int:
    if not isinstance(n_probes, int) or isinstance(n_probes, bool) or n_probes < 1:
        raise ValueError(f"n_probes must be a positive int, got {n_probes!r}")
    return n_probes


def _check_field_input(field, z, t):
    dim = getattr(field, "dim", None)
    z = check_tensor(z, "z", ndim=2, last=dim)
    return z, _as_time(t, z)


def jacobian(field, z: torch.Tensor, t=None) -> torch.Tensor:
    """Jacobian ``dv_i / dz_j`` of any field by ``torch.func``, ``[B, D, D]``.

    ``field`` is a :class:`VectorField` or any batched callable ``(z [B, D], t [B]) -> [B, D]`` that treats
    rows independently.
    """
    z, t = _check_field_input(field, z, t)
    f = _velocity_fn(field)
    return vmap(jacrev(lambda zi, ti: f(zi[None], ti[None])[0]))(z, t)


def divergence(field, z: torch.Tensor, t=None, method: str = "exact", n_probes: int = 1,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Divergence ``sum_i dv_i/dz_i`` of any field, ``[B]``, computed numerically.

    ``method="exact"``: trace of the autograd Jacobian (``O(D)`` backward passes).
    ``method="hutchinson"``: mean of ``eps^T J eps`` over ``n_probes`` Rademacher probes, one
    Jacobian-vector product each; unbiased because ``E[eps eps^T] = I``.
    """
    z, t = _check_field_input(field, z, t)
    if method == "exact":
        return torch.diagonal(jacobian(field, z, t), dim1=-2, dim2=-1).sum(-1)
    if method == "hutchinson":
        f = _velocity_fn(field)
        eps = rademacher((_check_probes(n_probes), *z.shape), z, generator)
        z, t = z.contiguous(), t.contiguous()
        jv = vmap(lambda e: jvp(lambda zz: f(zz, t), (z,), (e,))[1])(eps)
        return (eps * jv).sum(-1).mean(0)
    raise ValueError(f"method must be 'exact' or 'hutchinson', got {method!r}")


def curl(field, z: torch.Tensor, t=None) -> torch.Tensor:
    """Antisymmetric part of the Jacobian, ``(J - J^T) / 2``, ``[B, D, D]``.

    It vanishes exactly for a gradient field. In 2-D its entry ``[1, 0]`` is half the scalar vorticity
    ``dv_2/dz_1 - dv_1/dz_2``.
    """
    J = jacobian(field, z, t)
    return 0.5 * (J - J.transpose(-1, -2))


class HelmholtzHodge2D(NamedTuple):
    """Parts of a periodic 2-D field; vector parts have shape ``[..., 2, Ny, Nx]`` (x then y component)."""

    gradient: torch.Tensor      # curl-free part, grad phi
    solenoidal: torch.Tensor    # divergence-free part, (d_y psi, -d_x psi)
    harmonic: torch.Tensor      # the constant mean flow, broadcast to the grid
    potential: torch.Tensor     # phi, [..., Ny, Nx], zero mean
    stream: torch.Tensor        # psi, [..., Ny, Nx], zero mean


def helmholtz_hodge_2d(vx: torch.Tensor, vy: torch.Tensor, spacing=1.0) -> HelmholtzHodge2D:
    """Exact FFT Helmholtz-Hodge decomposition of a periodic field sampled on a grid.

    ``vx``, ``vy``: ``[..., Ny, Nx]`` samples on a grid with ``x`` along the last axis. ``spacing``: ``dx``,
    or ``(dy, dx)``. In Fourier space with wave vector ``k``, the gradient part is
    ``k (k . v_hat) / |k|^2``, the constant part is the ``k = 0`` mode, and the rest is divergence-free:
    ``v = grad phi + (d_y psi, -d_x psi) + c``.
    """
    vx = check_tensor(vx, "vx", ndim=None)
    vy = check_tensor(vy, "vy", ndim=None)
    if vx.dim() < 2:
        raise ValueError(f"vx must have at least 2 dimensions [..., Ny, Nx], got shape {tuple(vx.shape)}")
    if vx.shape != vy.shape:
        raise ValueError(f"vx and vy must have the same shape, got {tuple(vx.shape)} and {tuple(vy.shape)}")
    if isinstance(spacing, (tuple, list)):
        if len(spacing) != 2:
            raise ValueError(f"spacing must be a number or a pair (dy, dx), got {spacing!r}")
        dy, dx = (check_positive(s, "spacing") for s in spacing)
    else:
        dy = dx = check_positive(spacing, "spacing")
    ny, nx = vx.shape[-2:]
    kx = 2 * math.pi * torch.fft.fftfreq(nx, d=dx, dtype=vx.dtype, device=vx.device)
    ky = 2 * math.pi * torch.fft.fftfreq(ny, d=dy, dtype=vx.dtype, device=vx.device)
    KY, KX = torch.meshgrid(ky, kx, indexing="ij")
    k2 = KX**2 + KY**2
    inv_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, torch.ones_like(k2)), torch.zeros_like(k2))
    fx, fy = torch.fft.fft2(vx), torch.fft.fft2(vy)
    div_hat = KX * fx + KY * fy                 # (k . v_hat); i k . v_hat is the divergence
    rot_hat = KX * fy - KY * fx                 # (k x v_hat); i (k x v_hat) is the vorticity
    phi_hat = -1j * div_hat * inv_k2            # grad phi <-> i k phi_hat
    psi_hat = 1j * rot_hat * inv_k2             # vorticity = -Laplacian psi
    real = lambda h: torch.fft.ifft2(h).real  # noqa: E731
    gx, gy = real(1j * KX * phi_hat), real(1j * KY * phi_hat)
    sx, sy = real(1j * KY * psi_hat), real(-1j * KX * psi_hat)
    mean = torch.stack([vx.mean(dim=(-2, -1)), vy.mean(dim=(-2, -1))], dim=-1)
    harmonic = mean[..., :, None, None].expand(*vx.shape[:-2], 2, ny, nx)
    return HelmholtzHodge2D(
        gradient=torch.stack([gx, gy], dim=-3),
        solenoidal=torch.stack([sx, sy], dim=-3),
        harmonic=harmonic,
        potential=real(phi_hat),
        stream=real(psi_hat),
    )


def integrate(field, z0: torch.Tensor, t0: float = 0.0, t1: float = 1.0, n_steps: int = 100,
              method: str = "rk4") -> torch.Tensor:
    """Particle paths of ``dz/dt = v(z, t)`` from ``t0`` to ``t1``, ``[n_steps + 1, B, D]``.

    ``method`` is ``"rk4"`` (classical Runge-Kutta, error ``O(h^4)``) or ``"euler"``. All particles move
    together (no loop over samples). Used by chapter 2 to watch how each kind of field moves mass.
    """
    z, _ = _check_field_input(field, z0, None)
    if not isinstance(n_steps, int) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    if method not in ("rk4", "euler"):
        raise ValueError(f"method must be 'rk4' or 'euler', got {method!r}")
    f = _velocity_fn(field)
    h = (t1 - t0) / n_steps
    path = [z]
    for i in range(n_steps):
        t = z.new_full((z.shape[0],), t0 + i * h)
        if method == "euler":
            z = z + h * f(z, t)
        else:
            k1 = f(z, t)
            k2 = f(z + 0.5 * h * k1, t + 0.5 * h)
            k3 = f(z + 0.5 * h * k2, t + 0.5 * h)
            k4 = f(z + h * k3, t + h)
            z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        path.append(z)
    return torch.stack(path)


def cell_log_areas(points: torch.Tensor) -> torch.Tensor:
    """Log-areas of the quadrilateral cells of a deformed 2-D lattice (shoelace formula).

    ``points``: ``[..., Ny, Nx, 2]``, a lattice of particles (corner ``[i, j]``) after any motion.
    Returns ``[..., Ny - 1, Nx - 1]``. By the continuity equation, ``d/dt log(area) = div v`` and
    ``d/dt log q = -div v`` along each cell: a cell that keeps its area keeps its density.
    """
    points = check_tensor(points, "points", ndim=None, last=2)
    if points.dim() < 3:
        raise ValueError(f"points must have shape [..., Ny, Nx, 2], got {tuple(points.shape)}")
    a, b = points[..., :-1, :-1, :], points[..., :-1, 1:, :]
    c, d = points[..., 1:, 1:, :], points[..., 1:, :-1, :]
    quad = torch.stack([a, b, c, d], dim=-2)                # [..., Ny-1, Nx-1, 4, 2]
    x, y = quad[..., 0], quad[..., 1]
    area = 0.5 * (x * y.roll(-1, dims=-1) - x.roll(-1, dims=-1) * y).sum(-1)
    return area.abs().log()
