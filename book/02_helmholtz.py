# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# (ch-helmholtz)=
# # Two kinds of motion: the Helmholtz decomposition
#
# ```{admonition} This chapter
# :class: tip
# **Teaches** the two kinds of vector field STA uses, potential (curl-free) and rotational (divergence-free), how to
# build each so that it is exactly what it claims, how divergence is computed and estimated, and the continuity
# equation that says what a field does to a density.
#
# **Assumes** multivariable calculus (gradient, divergence, Jacobian) and a little linear algebra (symmetric and
# antisymmetric matrices).
# ```
#
# STA moves a probability distribution over latents $z \in \R^D$ along learned vector fields
# {cite}`song2024sta`. Each field is one of two kinds, and this chapter is about why those two kinds, and
# how to build each one so that it is *exactly* what it claims to be.
#
# The **Helmholtz decomposition** says that a smooth vector field $v$ (on a periodic domain, or decaying fast
# enough) splits into three parts {cite}`bhatia2013helmholtz`:
#
# $$
# v \;=\; \underbrace{\nabla \phi}_{\text{curl-free}} \;+\; \underbrace{r}_{\text{divergence-free},\ \nabla\cdot r = 0} \;+\; \underbrace{c}_{\text{harmonic}} .
# $$
#
# * A **potential** (curl-free) field $\nabla\phi$ pushes mass downhill or uphill on a landscape: it
#   concentrates or spreads probability.
# * A **rotational** (divergence-free) field $r$ stirs mass around without compressing it: it keeps volumes,
#   and therefore densities, along its paths.
# * The **harmonic** part is both curl- and divergence-free; on a periodic grid it is just the mean flow.
#
# STA gives each of its $M$ learned fields one of the first two characters; {ref}`ch-flow` then moves a
# probability distribution along them, with the speeds that {ref}`ch-sparse` infers from the frames of
# {ref}`ch-sequences`. The code for this chapter is `stabook.fields`.

# %%
# On Colab, install this book's package first (elsewhere this cell does nothing).
import importlib
import importlib.util
import subprocess
import sys

if "google.colab" in sys.modules and not importlib.util.find_spec("stabook"):
    url = "git+https://github.com/stabook-project/stabook@main"
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"stabook @ {url}"], check=True)
    importlib.invalidate_caches()

# %%
import math
import time

import matplotlib.pyplot as plt
import torch

from stabook import fields, get_device, seed_everything, viz

viz.use_book_style()
seed_everything(0)
torch.set_default_dtype(torch.float64)  # this chapter checks at float64 precision
print("stabook will train on:", get_device(),
      "| the 2-D demonstrations below run on the CPU")

# %% [markdown]
# ## Two fields on a torus
#
# Take the periodic square $[0, 2\pi)^2$ and two scalar functions: a potential $\phi$ and a stream function
# $\psi$,
#
# $$
# \phi(x, y) = \sin x \cos 2y, \qquad \psi(x, y) = \cos 3x \sin y + \tfrac12 \sin(x + y).
# $$
#
# The potential gives the curl-free field $\nabla\phi = (\partial_x\phi, \partial_y\phi)$. The stream function
# gives the divergence-free field $(\partial_y\psi, -\partial_x\psi)$: its divergence is
# $\partial_x\partial_y\psi - \partial_y\partial_x\psi = 0$. Add a constant drift $c = (0.3, -0.2)$ and we
# have a field with all three parts.

# %%
n = 48
x = torch.arange(n) * 2 * math.pi / n
Y, X = torch.meshgrid(x, x, indexing="ij")
phi = torch.sin(X) * torch.cos(2 * Y)
psi = torch.cos(3 * X) * torch.sin(Y) + 0.5 * torch.sin(X + Y)
grad_part = torch.stack([torch.cos(X) * torch.cos(2 * Y),
                         -2 * torch.sin(X) * torch.sin(2 * Y)])
rot_part = torch.stack([
    torch.cos(3 * X) * torch.cos(Y) + 0.5 * torch.cos(X + Y),       # d psi / dy
    3 * torch.sin(3 * X) * torch.sin(Y) - 0.5 * torch.cos(X + Y),   # -d psi / dx
])
drift = torch.tensor([0.3, -0.2])
v = grad_part + rot_part + drift[:, None, None]

fig, axes = plt.subplots(1, 3, figsize=(7.0, 2.8))
viz.plot_field(axes[0], X, Y, *grad_part, phi, "potential $\\nabla\\phi$",
               background_label="$\\phi$")
viz.plot_field(axes[1], X, Y, *rot_part, psi,
               "rotational $(\\partial_y\\psi, -\\partial_x\\psi)$",
               background_label="$\\psi$")
viz.plot_field(axes[2], X, Y, *v, None, "sum, plus drift $c$")
plt.tight_layout()
plt.show()

# %% [markdown]
# Given only the sum, can we get the parts back? On a periodic grid the answer is exact and takes two FFTs.
# In Fourier space a field is a set of vectors $\hat v(k)$, one per wave vector $k$. Differentiation is
# multiplication by $ik$, so the divergence is $ik\cdot\hat v$ and the vorticity $ik\times\hat v$. The
# gradient part is the projection of $\hat v(k)$ onto $k$, the divergence-free part is what is orthogonal to
# $k$, and the $k = 0$ mode is the mean:
#
# $$
# \widehat{\nabla\phi}(k) = \frac{k\,(k\cdot\hat v(k))}{|k|^2}, \qquad
# \hat r(k) = \hat v(k) - \widehat{\nabla\phi}(k) \quad (k \neq 0), \qquad h = \hat v(0)/N .
# $$
#
# `stabook.fields.helmholtz_hodge_2d` implements this, and also returns $\phi$ and $\psi$ (each up to its
# constant, fixed by a zero mean).

# %%
parts = fields.helmholtz_hodge_2d(v[0], v[1], spacing=2 * math.pi / n)
errors = {
    "gradient part": (parts.gradient - grad_part).abs().max().item(),
    "divergence-free part": (parts.solenoidal - rot_part).abs().max().item(),
    "mean flow": (parts.harmonic[:, 0, 0] - drift).abs().max().item(),
    "potential phi": (parts.potential - phi).abs().max().item(),
    "stream function psi": (parts.stream - psi).abs().max().item(),
}
for name, err in errors.items():
    print(f"max error of the recovered {name:22s}: below 1e-12? {err < 1e-12}")

fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.2))
viz.plot_field(axes[0], X, Y, *parts.gradient, parts.potential,
               "recovered gradient part", background_label="$\\phi$")
viz.plot_field(axes[1], X, Y, *parts.solenoidal, parts.stream,
               "recovered divergence-free part", background_label="$\\psi$")
plt.tight_layout()
plt.show()

# %% [markdown]
# (sec-neural-fields)=
# ## Neural fields with the right character by construction
#
# A latent space has $D$ dimensions (16 to 324 in this book), not two, and there is no grid. STA therefore
# learns its fields as neural networks, and each kind needs a construction that guarantees its character for
# *every* value of the weights:
#
# **Potential fields.** $v(z, t) = \nabla_z u(z, t)$ for a smooth scalar network $u$. The Jacobian of $v$ is
# the Hessian of $u$, which is symmetric, so the field has no curl; its divergence is the Laplacian $\Delta u$.
# In `stabook`, $u$ is a one-hidden-layer tanh network whose gradient, Hessian, Laplacian and time derivative
# are written in closed form (`fields.TanhScalarNet`).
#
# **Rotational fields, Hamiltonian form.** $v(z) = S\,\nabla H(z)$ with $S = -S^\top$ a learnable
# antisymmetric matrix {cite}`greydanus2019hamiltonian`. Then
#
# $$
# \nabla\cdot v = \sum_{ij} S_{ij}\, \frac{\partial^2 H}{\partial z_i \partial z_j} = 0,
# $$ (eq-hamiltonian-div)
#
# because a sum of an antisymmetric matrix against a symmetric one vanishes. One gradient per evaluation, so it
# is cheap at $D = 324$. It also conserves $H$: $\tfrac{d}{dt}H = \nabla H^\top S \nabla H = 0$.
# In 2-D, $S = s\begin{pmatrix}0 & 1\\ -1 & 0\end{pmatrix}$ and $v = s(\partial_2 H, -\partial_1 H)$: exactly
# the stream-function form above, with $\psi = sH$.
#
# The authors' released code takes a different route: its "rotational" network is a plain MLP pushed towards
# zero divergence by a penalty (see the appendix on the reference code). A penalty leaves a small divergence
# that the density computation of {ref}`ch-flow` then ignores; a construction leaves none.
#
# Here are two freshly initialised fields in 2-D, with their divergence as the background, on one colour
# scale: the rotational field's divergence (rounding error only) does not show.

# %%
seed_everything(1)
pot2, rot2 = fields.PotentialField(2, hidden=32), fields.RotationalField(2, hidden=32)
with torch.no_grad():  # scale the random fields up, to make their motion visible
    pot2.u.w.mul_(6.0)
    rot2.H.w.mul_(3.0)

Xg, Yg, pts = viz.grid_points(25, 2.5)
fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.1))
panels = [(axes[0], pot2, "PotentialField"), (axes[1], rot2, "RotationalField")]
for ax, field, name in panels:
    with torch.no_grad():
        vel = field(pts)
    div = fields.divergence(field, pts).detach()
    viz.plot_field(ax, Xg, Yg, vel[:, 0].reshape(25, 25), vel[:, 1].reshape(25, 25),
                   div.reshape(25, 25), name, background_label="div v", vlim=1.0)
plt.tight_layout()
plt.show()

# %% [markdown]
# The divergence of the rotational field is zero to float precision, at any point and in any dimension.
# `fields.divergence` computes it numerically, as the trace of the autograd Jacobian, so this is a real check
# of the construction, not of a formula. The potential field's Jacobian is symmetric, and its antisymmetric
# part (`fields.curl`) vanishes.

# %%
for dim in (2, 16, 64):
    rot = fields.RotationalField(dim)
    pot = fields.PotentialField(dim)
    z = 2 * torch.randn(256, dim)
    div_rot = fields.divergence(rot, z).abs().max().item()
    jac = fields.jacobian(pot, z, t=1.0)
    asym = (jac - jac.transpose(-1, -2)).abs().max().item()
    speed = rot(z).norm(dim=-1).mean().item()
    print(f"D = {dim:3d}: mean |v_rot| = {speed:.2f}, "
          f"max |div v_rot| < 1e-12: {div_rot < 1e-12}, "
          f"max |J_pot - J_pot^T| < 1e-12: {asym < 1e-12}")

# %% [markdown]
# For large $D$, the exact divergence of a general field needs $D$ backward passes. Hutchinson's estimator
# {cite}`hutchinson1989trace` replaces it by $\varepsilon^\top J \varepsilon$ with random signs $\varepsilon$:
# unbiased because $\E[\varepsilon\varepsilon^\top] = I$, at the cost of one Jacobian-vector product. For a
# potential field, $J$ is the Hessian of $u$ and the quadratic form is again closed form.

# %%
pot16 = fields.PotentialField(16)
z0 = torch.randn(1, 16)
exact = pot16.laplacian(z0).item()
g = torch.Generator().manual_seed(0)
estimates = pot16.laplacian(z0.expand(20000, 16), method="hutchinson", generator=g)
stderr = estimates.std().item() / math.sqrt(len(estimates))
print(f"exact Laplacian {exact:.4f}; Hutchinson mean of 20000 probes "
      f"{estimates.mean().item():.4f} +- {stderr:.4f} "
      f"(one probe: std {estimates.std().item():.3f})")

# %% [markdown]
# ## What each kind does to a cloud of particles
#
# Mass moves with the field. The density obeys the continuity equation, and following one particle
# $z(t)$ its log-density changes at the rate $-\nabla\cdot v$:
#
# $$
# \partial_t q + \nabla\cdot(q\, v) = 0, \qquad \frac{d}{dt} \log q\big(z(t), t\big) = -\nabla\cdot v\big(z(t), t\big).
# $$ (eq-continuity)
#
# This is the equation that {ref}`ch-flow` discretises to follow STA's latent density. Equivalently, a small patch of particles changes its area at
# the rate $\tfrac{d}{dt}\log(\text{area}) = \nabla\cdot v$. So:
#
# * under a **rotational** field every patch keeps its area, and the density along each path stays the same;
# * under a **potential** field patches shrink where $\Delta u < 0$ (mass concentrates) and grow where
#   $\Delta u > 0$ (mass spreads).
#
# We push a lattice of particles with each field (classical Runge-Kutta, `fields.integrate`), measure the area
# of every lattice cell (`fields.cell_log_areas`), and compare the change of log-area with the divergence
# integrated along the path of the cell's centre.

# %%
side, T_end, steps = 61, 2.0, 100
axis = torch.linspace(-1.5, 1.5, side)
Yl, Xl = torch.meshgrid(axis, axis, indexing="ij")
lattice = torch.stack([Xl, Yl], -1)                         # [side, side, 2]
corners = lattice.reshape(-1, 2)
centres = ((lattice[:-1, :-1] + lattice[1:, 1:]) / 2).reshape(-1, 2)

results = {}
with torch.no_grad():
    for name, field in [("potential", pot2), ("rotational", rot2)]:
        path = fields.integrate(field, corners, 0.0, T_end, steps)
        path = path.reshape(steps + 1, side, side, 2)
        log_area = fields.cell_log_areas(path)
        change = (log_area[-1] - log_area[0]).reshape(-1)
        centre_path = fields.integrate(field, centres, 0.0, T_end, steps)
        h = T_end / steps
        # the divergence at the cell centres along their paths, [steps + 1, cells]
        div_along = torch.stack([fields.divergence(field, zc, t=k * h)
                                 for k, zc in enumerate(centre_path)])
        integral = h * (div_along[1:-1].sum(0) + 0.5 * (div_along[0] + div_along[-1]))
        results[name] = dict(path=path, change=change, integral=integral)
        agree = (change - integral).abs().max().item()
        print(f"{name:10s}: log-area change in "
              f"[{change.min().item():+.3f}, {change.max().item():+.3f}], "
              f"max |change - integral of div v| = {agree:.4f}")
growth = results["potential"]["change"].exp()
print(f"potential field: cell areas change by factors from {growth.min().item():.2f} "
      f"to {growth.max().item():.1f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.2), layout="constrained")
for ax, name in zip(axes, ["potential", "rotational"], strict=True):
    end = results[name]["path"][-1]
    cells = results[name]["change"].reshape(side - 1, side - 1)
    mesh = ax.pcolormesh(end[..., 0], end[..., 1], cells, cmap="RdBu_r",
                         vmin=-1.5, vmax=1.5, edgecolors="none")
    ax.set_title(f"{name} field: lattice at t = {T_end:g}")
    ax.set_aspect("equal")
fig.colorbar(mesh, ax=axes, label="change of log cell area")
plt.show()
fig, ax = plt.subplots(figsize=(5.5, 3.8))
for name, marker in [("potential", "o"), ("rotational", "x")]:
    ax.scatter(results[name]["integral"], results[name]["change"], s=4,
               marker=marker, label=name)
ax.plot([-1.5, 1.5], [-1.5, 1.5], "k--", lw=0.8)
ax.set_xlabel("integral of div v along the path")
ax.set_ylabel("change of log cell area")
ax.legend()
ax.set_title("continuity equation, checked")
plt.tight_layout()
plt.show()

# %% [markdown]
# The two agree to the precision printed above: what remains is the error of measuring a curved cell
# as a straight-edged quadrilateral, which shrinks with the square of the lattice spacing. The
# rotational field's cells keep their areas to the same precision, while the potential field's change
# by the factors printed above: the colour scale of the left panel saturates at $\pm 1.5$. (A change of log
# cell area is minus the change of log density.)
#
# The same clouds, moving. Colours mark where each particle started, so the rotational field's stirring is
# visible even though it never compresses the cloud.

# %% tags=["nbval-ignore-output"]
paths = torch.stack([results["potential"]["path"], results["rotational"]["path"]])
paths = paths[:, ::10, ::3, ::3]
paths = paths.reshape(2, paths.shape[1], -1, 2)     # [panels, frames, particles, 2]
colour = corners.reshape(side, side, 2)[::3, ::3, 0].reshape(-1).numpy()
anim = viz.animate_paths(paths, colors=colour, titles=["potential", "rotational"],
                         lim=2.5)
viz.show_animation(anim)

# %% [markdown]
# ## Two exact divergence-free constructions
#
# Neural Conservation Laws {cite}`richterpowell2022ncl` build divergence-free fields from an antisymmetric
# *matrix* field $A(z)$: with $v_i = \sum_j \partial A_{ij}/\partial z_j$,
#
# $$
# \nabla\cdot v = \sum_{ij} \frac{\partial^2 A_{ij}}{\partial z_i \partial z_j} = 0 .
# $$
#
# Taking $A = J_F - J_F^\top$ for a network $F:\R^D\to\R^D$ gives
# $v_i = \sum_j \big(\partial_j\partial_j F_i - \partial_i\partial_j F_j\big)$, that is
# $v = \Delta F - \nabla(\nabla\cdot F)$. The construction is general (it reaches every divergence-free
# field on $\R^D$ under mild conditions), but evaluating $v$ needs the *second* derivatives of $F$: the
# $D\times D\times D$ tensor $\partial_j\partial_k F_i$, the Hessian of every output of $F$ (one derivative
# beyond its Jacobian $J_F$), per sample. The Hamiltonian form needs one gradient of a scalar. The timings below (one forward pass, batch of 64, on this machine's CPU) show the difference.

# %% tags=["nbval-ignore-output"]
dims = [2, 4, 8, 16, 32]
cost = {"RotationalField (Hamiltonian)": [], "ConservationLawField (NCL)": []}
for dim in dims:
    z = torch.randn(64, dim)
    constructions = [("RotationalField (Hamiltonian)", fields.RotationalField(dim)),
                     ("ConservationLawField (NCL)", fields.ConservationLawField(dim))]
    for name, field in constructions:
        field(z)  # warm up
        start = time.perf_counter()
        for _ in range(5):
            field(z)
        cost[name].append((time.perf_counter() - start) / 5 * 1e3)
for name, ms in cost.items():
    cells = [f"D={d}: {m:7.2f} ms" for d, m in zip(dims, ms, strict=True)]
    print(f"{name:30s}", "  ".join(cells))
fig, ax = plt.subplots(figsize=(5, 3.5))
for name, ms in cost.items():
    ax.loglog(dims, ms, "o-", label=name)
ax.set_xlabel("latent dimension D")
ax.set_ylabel("ms per forward pass (batch 64)")
ax.legend()
plt.show()

# %% [markdown]
# In 2-D both constructions are complete, and they describe the same fields. The NCL field is a stream-function
# field whose stream function is $a = \partial_2 F_1 - \partial_1 F_2$ (because $A = \begin{pmatrix}0 & a\\ -a &
# 0\end{pmatrix}$), so a Hamiltonian field with $sH = a$ reproduces it. We check the identity exactly, and then
# fit a `RotationalField` to a random `ConservationLawField` by regression.

# %%
seed_everything(2)
ncl = fields.ConservationLawField(2, hidden=16)
zs = (4 * torch.rand(512, 2) - 2).requires_grad_()
J_F = torch.func.vmap(torch.func.jacrev(ncl.F))(zs)
a = J_F[:, 0, 1] - J_F[:, 1, 0]
grad_a = torch.autograd.grad(a.sum(), zs)[0]
torch.testing.assert_close(ncl(zs), torch.stack([grad_a[:, 1], -grad_a[:, 0]], -1))
print("NCL field == stream-function field of a = d2 F1 - d1 F2: checked")

zs = zs.detach()
target = ncl(zs).detach()
ham = fields.RotationalField(2, hidden=64)
opt = torch.optim.Adam(ham.parameters(), lr=1e-2)
for _step in range(400):
    opt.zero_grad()
    loss = (ham(zs) - target).pow(2).sum(-1).mean()
    loss.backward()
    opt.step()
rel = ((ham(zs) - target).norm() / target.norm()).item()
print(f"relative error of the fitted Hamiltonian field: {rel:.2f}")


# %% [markdown]
# ## Mixing the two kinds
#
# A general field is a mix. Below, $v = (1-\lambda)\,v_{\text{pot}} + \lambda\,v_{\text{rot}}$ over its
# divergence, computed numerically from the mixed field. Only the potential part has any, so the
# divergence is $(1-\lambda)\,\Delta u$. All panels share one colour scale, set by the largest
# $\lvert\nabla\cdot v\rvert$ at $\lambda = 0$, so the background fades linearly as $\lambda \to 1$; at
# $\lambda = 1$ only rounding error is left, far below the first step of the scale. The static figure
# is for readers of the HTML book; in a running notebook the slider redraws it on the same scale.

# %%
def draw_mix(ax, mix, vlim):
    """(1 - mix) v_pot + mix v_rot over its divergence, colour scale [-vlim, vlim]."""
    def mixed(z, t):
        return (1 - mix) * pot2.velocity(z, t) + mix * rot2.velocity(z, t)

    with torch.no_grad():
        vel = mixed(pts, torch.zeros(len(pts)))
    div = fields.divergence(mixed, pts).detach()
    viz.plot_field(ax, Xg, Yg, vel[:, 0].reshape(25, 25), vel[:, 1].reshape(25, 25),
                   div.reshape(25, 25), f"$\\lambda$ = {mix:.2f}",
                   background_label="div v", vlim=vlim)
    return div


shared_vlim = fields.divergence(pot2, pts).abs().max().item()   # largest at lambda = 0
fig, axes = plt.subplots(1, 3, figsize=(7.0, 2.5))
mix_div = {mix: draw_mix(ax, mix, shared_vlim)
           for ax, mix in zip(axes, [0.0, 0.5, 1.0], strict=True)}
plt.tight_layout()
plt.show()

# %% tags=["nbval-ignore-output"]
import ipywidgets as widgets


def redraw(mix=0.5):
    fig, ax = plt.subplots(figsize=(5, 4))
    draw_mix(ax, mix, shared_vlim)
    plt.show()


slider = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05)
_ = widgets.interact(redraw, mix=slider)

# %% [markdown]
# ## What this chapter claims, checked
#
# Each line below fails the notebook (and the test suite, which runs every chapter) if a claim is wrong.

# %%
# 1. the FFT decomposition recovers the analytic parts
assert max(errors.values()) < 1e-10
# 2. the rotational field is divergence-free by construction, in any dimension
for dim in (3, 32):
    div_check = fields.divergence(fields.RotationalField(dim), torch.randn(64, dim))
    assert div_check.abs().max() < 1e-10
# 3. the potential field has a symmetric Jacobian (no curl)
assert fields.curl(pot2, torch.randn(64, 2)).abs().max() < 1e-12
# 4. Hutchinson's estimate is within 3 standard errors of the exact Laplacian
assert abs(estimates.mean().item() - exact) < 3 * stderr
# 5. rotational flow preserves cell areas; potential flow changes them; both obey the
#    continuity equation (cells are measured as straight-edged quadrilaterals: an
#    O(spacing^2) error of a few 1e-3)
assert results["rotational"]["change"].abs().max() < 1e-2
assert results["potential"]["change"].abs().max() > 0.3
for name in results:
    assert (results[name]["change"] - results[name]["integral"]).abs().max() < 1e-2
# 6. in 2-D the Hamiltonian form fits the NCL field
assert rel < 0.1
# 7. mixing: the divergence is (1 - lambda) times the potential's; at lambda = 1 it is
#    rounding error, invisible on the shared colour scale
torch.testing.assert_close(mix_div[0.5], 0.5 * mix_div[0.0])
assert mix_div[1.0].abs().max() < 1e-12 * shared_vlim + 1e-12
print("all checks passed")

# %% [markdown]
# ## What this chapter showed
#
# * A smooth field splits into a curl-free (potential) part, a divergence-free (rotational) part and a
#   harmonic part; on a periodic grid two FFTs recover all three exactly
#   (`fields.helmholtz_hodge_2d`).
# * Each of STA's fields has one character *by construction* ({ref}`sec-neural-fields`): a potential
#   field $\nabla u$ has a symmetric Jacobian, and a Hamiltonian field $S\nabla H$ with antisymmetric
#   $S$ has zero divergence, {eq}`eq-hamiltonian-div`, for every value of the weights, checked
#   numerically up to $D = 64$.
# * Divergence is what changes densities, {eq}`eq-continuity`: rotational flows keep every cell's area
#   and the density along every path; potential flows concentrate or spread mass, and the measured
#   change of log-area matches the integrated divergence. {ref}`ch-flow` turns this into the density
#   of STA's latent distribution. To first order in the step $h$ only the potentials' Laplacians
#   enter it; the exact log-determinant, which training uses, sees the rotational fields too.
# * Hutchinson's estimator replaces a divergence by one random quadratic form, unbiased, for large
#   $D$; {ref}`ch-flow` uses it as one of its log-determinant methods.
# * The Neural Conservation Laws construction is more general but needs second derivatives of a
#   vector network; in 2-D it describes the same fields as the Hamiltonian form, which is what STA
#   uses ({ref}`ch-training` trains three of each kind).

# %% [markdown]
# ## Exercises
#
# The solutions are hidden: click to reveal them. Code solutions run with the rest of the chapter and
# check their answer with `assert`.

# %% [markdown]
# **Exercise 2.1** *(change a number and predict)* The Hutchinson estimate of the Laplacian above
# averaged 20000 probes. Predict the standard error of the mean with 5000 probes instead, then check.
# Then predict the standard deviation of a *single* probe from the Hessian $B$ alone, using the formula
# $\operatorname{Var}(\varepsilon^\top B \varepsilon) = 2\sum_{i \neq j} B_{ij}^2$ for Rademacher probes
# (derived in Exercise 2.3).

# %% tags=["hide-cell"]
# Solution 2.1. The standard error falls as 1 / sqrt(number of probes): four times fewer
# probes, twice the error.
few = pot16.laplacian(z0.expand(5000, 16), method="hutchinson",
                      generator=torch.Generator().manual_seed(1))
stderr_few = few.std().item() / math.sqrt(len(few))
print(f"standard error: 20000 probes {stderr:.4f}, 5000 probes {stderr_few:.4f}, "
      f"ratio {stderr_few / stderr:.2f} (predicted 2)")
assert 1.8 < stderr_few / stderr < 2.2
# One probe: only the off-diagonal entries of the Hessian make it random.
hess16 = pot16.jacobian(z0)[0]                                 # Hessian of u, [16, 16]
off_diagonal = hess16.pow(2).sum() - hess16.diagonal().pow(2).sum()
predicted_std = (2 * off_diagonal).sqrt().item()
print(f"one probe: std {few.std().item():.3f}, predicted from the Hessian "
      f"{predicted_std:.3f}")
assert abs(few.std().item() / predicted_std - 1) < 0.05

# %% [markdown]
# **Exercise 2.2** *(implement)* Take the Hamiltonian network $H$ of a fresh
# `fields.RotationalField(4)` and build two fields from its gradient: $v = S\nabla H$ with the field's
# own antisymmetric $S$, and $v = S_{\text{sym}}\nabla H$ with a random *symmetric* matrix
# $S_{\text{sym}}$. Compute both divergences numerically with `fields.divergence` (it accepts any
# batched callable `(z, t) -> v`) and check that the first is zero to rounding error while the second
# is not, and that the second equals $\sum_{ij} (S_{\text{sym}})_{ij}\, \partial_i\partial_j H$.

# %% tags=["hide-cell"]
# Solution 2.2. Only the antisymmetric part of S gives a divergence-free field.
torch.manual_seed(0)
rot4 = fields.RotationalField(4)
S_anti = rot4.S.detach()
B_rand = torch.randn(4, 4)
S_sym = B_rand + B_rand.T


def v_anti(z, t):
    return rot4.H.grad(z, t) @ S_anti.T


def v_sym(z, t):
    return rot4.H.grad(z, t) @ S_sym.T


z4 = torch.randn(128, 4)
div_anti = fields.divergence(v_anti, z4).detach()
div_sym = fields.divergence(v_sym, z4).detach()
hess_H = rot4.H.hessian(z4, torch.zeros(128)).detach()          # [128, 4, 4]
formula = (S_sym * hess_H).sum((-1, -2))                        # sum_ij S_ij d_i d_j H
print(f"antisymmetric S: max |div v| < 1e-12: {div_anti.abs().max().item() < 1e-12}")
print(f"symmetric S: mean |div v| = {div_sym.abs().mean().item():.3f}, "
      f"equal to sum_ij S_ij d_i d_j H: {torch.allclose(div_sym, formula)}")
assert div_anti.abs().max() < 1e-12 and div_sym.abs().mean() > 1e-2
assert torch.allclose(div_sym, formula)

# %% [markdown]
# **Exercise 2.3** *(derive)* (a) Show that $\nabla\cdot(S\nabla H) = 0$ for every constant
# antisymmetric matrix $S$ and smooth $H$, that $H$ is conserved along the flow of $S\nabla H$, and that
# for a general $S$ only the symmetric part of $S$ contributes to the divergence. (b) Show that in 2-D
# the fields $S\nabla H$ are exactly the stream-function fields $(\partial_2\psi, -\partial_1\psi)$.
# (c) For Rademacher probes $\varepsilon$ (independent random signs) and a symmetric matrix $B$, show
# that $\E[\varepsilon^\top B\varepsilon] = \operatorname{tr} B$ and
# $\operatorname{Var}(\varepsilon^\top B\varepsilon) = 2\sum_{i\neq j} B_{ij}^2$.
#
# ```{admonition} Solution
# :class: dropdown
#
# (a) With $v_i = \sum_j S_{ij}\,\partial_j H$,
#
# $$
# \nabla\cdot v = \sum_i \partial_i v_i = \sum_{ij} S_{ij}\,\partial_i\partial_j H .
# $$
#
# Write $M_{ij} = \partial_i\partial_j H$, symmetric. Swapping the names of the summation indices,
# $\sum_{ij} S_{ij} M_{ij} = \sum_{ij} S_{ji} M_{ji} = -\sum_{ij} S_{ij} M_{ij}$, so the sum equals minus
# itself and is zero. Along a path, $\tfrac{d}{dt} H(z(t)) = \nabla H^\top \dot z = \nabla H^\top S \nabla H$,
# a scalar equal to its own transpose $\nabla H^\top S^\top \nabla H = -\nabla H^\top S\nabla H$, hence
# zero. For a general $S = \tfrac12(S + S^\top) + \tfrac12(S - S^\top)$ the antisymmetric half drops out
# by the same argument, leaving $\nabla\cdot v = \operatorname{tr}\big(\tfrac12(S + S^\top)\,\nabla^2 H\big)$:
# this is what Exercise 2.2 measured.
#
# (b) In 2-D every antisymmetric matrix is $S = s\begin{pmatrix}0 & 1\\ -1 & 0\end{pmatrix}$, so
# $S\nabla H = s(\partial_2 H, -\partial_1 H)$, the stream-function field with $\psi = sH$. Conversely
# any stream-function field is of this form with $s = 1$, $H = \psi$.
#
# (c) $\varepsilon^\top B \varepsilon = \sum_i B_{ii}\varepsilon_i^2 + \sum_{i\neq j} B_{ij}\varepsilon_i\varepsilon_j$.
# Since $\varepsilon_i^2 = 1$, the first sum is exactly $\operatorname{tr} B$, and each term of the
# second has mean zero, which gives the mean. The variance is that of the second sum,
#
# $$
# \E\Big[\Big(\sum_{i\neq j} B_{ij}\varepsilon_i\varepsilon_j\Big)^2\Big]
# = \sum_{i\neq j}\sum_{k\neq l} B_{ij}B_{kl}\,\E[\varepsilon_i\varepsilon_j\varepsilon_k\varepsilon_l] ,
# $$
#
# and the expectation is $1$ when $\{k, l\} = \{i, j\}$ and $0$ otherwise: two terms per pair,
# $2\sum_{i\neq j}B_{ij}^2$. The diagonal never adds noise, which is why random signs beat Gaussian
# probes (whose variance is $2\sum_{ij}B_{ij}^2$, diagonal included).
# ```
