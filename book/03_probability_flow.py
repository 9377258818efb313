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
# (ch-flow)=
# # Moving probability: the flow and its density
#
# ```{admonition} This chapter
# :class: tip
# **Teaches** how a distribution is moved along the fields and how its density follows by the change of variables (three
# ways to compute the log-determinant), what happens when a step folds space, what the Hamilton-Jacobi
# regulariser does, and diffusion as one more probability flow.
#
# **Assumes** the fields of chapter 2 ({ref}`ch-helmholtz`) and the change-of-variables formula for densities.
# ```
#
# STA does not move single latent points: it moves a *distribution*. The encoder gives
# $q(z_0 \mid x_0)$, and each transition pushes it along the fields of {ref}`ch-helmholtz`, with the
# speeds $g_t$ that {ref}`ch-sparse` infers from the frames,
#
# $$
# z_t = \Phi_t(z_{t-1}) = z_{t-1} + h \sum_m g_t^m\, v_m(z_{t-1}, t), \qquad q_t = (\Phi_t)_\# q_{t-1}.
# $$ (eq-flow-step)
#
# To train the model ({ref}`ch-elbo`) we need the density of the pushed distribution at the pushed
# samples. This chapter computes it three ways, checks it against particles, shows what goes wrong when
# a step folds space, explains what the Hamilton-Jacobi regulariser of FFRL and STA does (and does not
# do) for optimal transport, and writes the heat equation, FFRL's prior {cite}`song2023ffrl`, as one
# more probability flow. The code is `stabook.flow`.

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

import matplotlib.pyplot as plt
import torch

from stabook import fields, flow, seed_everything, train, viz

viz.use_book_style()
torch.set_default_dtype(torch.float64)
_ = seed_everything(0)     # the returned generator is not needed here

# %% [markdown]
# ## The density along a flow
#
# For an invertible map $z' = \Phi(z)$ the change of variables gives
# $\log q'(z') = \log q(z) - \log\lvert\det \partial\Phi/\partial z\rvert$. One Euler step has Jacobian
# $I + h J_w$, with $J_w = \sum_m g^m J_{v_m}$, so
#
# $$
# \log q_t(z_t) = \log q_{t-1}(z_{t-1}) - \log\left\lvert \det\left(I + h J_w(z_{t-1})\right)\right\rvert .
# $$ (eq-change-of-variables)
#
# The formula assumes that the step is invertible: $I + hJ_w$ non-singular, and no two points sent to
# the same place. `torch.linalg.slogdet` returns the sign of the determinant and the logarithm of its
# absolute value; only the second enters {eq}`eq-change-of-variables`, so nothing in the formula warns
# when a step stops being invertible. {ref}`sec-folding` shows what happens then.
#
# `stabook.flow` computes the log-determinant three ways:
#
# * **exact**: `torch.linalg.slogdet` of the $D \times D$ matrix, $O(D^3)$;
# * **first order**: $\log\det(I + hJ) = h \operatorname{tr} J + O(h^2)$, and $\operatorname{tr} J_w =
#   \sum_m g^m \nabla\cdot v_m = \sum_{m\ \text{potential}} g^m \Delta u_m$, because rotational fields have
#   zero divergence by construction ({ref}`ch-helmholtz`): the code never computes their term;
# * **Hutchinson**: each $\Delta u_m$ replaced by $\varepsilon^\top \nabla^2 u_m\, \varepsilon$
#   {cite}`hutchinson1989trace`, one Hessian-vector product, for large $D$.
#
# This is the discrete form of the continuity equation {eq}`eq-continuity`,
# $\tfrac{d}{dt}\log q = -\nabla\cdot v$.
#
# We push 20,000 samples of $\mathcal N(0, I)$ in 2-D through four transitions of a potential field and,
# separately, of a rotational field, and compare the predicted $\log q_T$ at the particles with a kernel
# density estimate made from the particles alone. The fields live in a `stabook.flow.FieldBank`: a bank
# of $M$ potential and rotational fields evaluated together. Here it holds one of each, and the speeds
# $g = (1, 0)$ or $(0, 1)$ switch on one of them.

# %%
bank = flow.FieldBank(dim=2, n_potential=1, n_rotational=1, hidden=32)
with torch.no_grad():  # stronger fields than at initialisation, to see the motion
    bank.potential.u.w.mul_(5.0)
    bank.rotational.H.w.mul_(3.0)

n, T = 20_000, 4
z0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
log_q0 = torch.distributions.Normal(0.0, 1.0).log_prob(z0).sum(-1)
pushed = {}
with torch.no_grad():
    for name, g in [("potential", [1.0, 0.0]), ("rotational", [0.0, 1.0])]:
        speeds = torch.tensor(g).expand(n, T, 2)
        result = flow.flow(bank, z0, speeds, h=0.25, n_sub=4, log_q0=log_q0)
        kde = flow.kde_log_density(result.z[:1000, -1], result.z[:, -1])
        gap = kde - result.log_q[:1000, -1]
        pushed[name] = dict(result=result, kde=kde, gap=gap)
        change = (result.log_q[:, -1] - log_q0).abs().max().item()
        print(f"{name:10s}: largest |change of log q| along a path {change:.3f}; "
              f"median |KDE - predicted| {gap.abs().median().item():.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.2), layout="constrained")
for ax, name in zip(axes, ["potential", "rotational"], strict=True):
    r = pushed[name]["result"]
    sc = ax.scatter(r.z[:4000, -1, 0], r.z[:4000, -1, 1], c=r.log_q[:4000, -1], s=2,
                    cmap="viridis", vmin=-6, vmax=-0.5)
    ax.set_title(f"{name} flow, coloured by $\\log q_T$")
    ax.set_aspect("equal")
    ax.set_xlim(-4, 4)
    ax.set_ylim(-4, 4)
fig.colorbar(sc, ax=axes, label="$\\log q_T$")
plt.show()
fig, ax = plt.subplots(figsize=(5.5, 4.0))
for name in ["potential", "rotational"]:
    p = pushed[name]
    ax.scatter(p["result"].log_q[:1000, -1], p["kde"], s=3, label=name)
ax.plot([-7, 0], [-7, 0], "k--", lw=0.8)
ax.set_xlabel("$\\log q_T$ predicted along the flow")
ax.set_ylabel("$\\log q_T$, kernel density estimate")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The predicted densities agree with the particles' own density to within the kernel estimate's noise. Under
# the rotational field the density along each path hardly changes. It changes a little, because an Euler
# step of a divergence-free field preserves volume only to second order: $\det(I + hJ) = 1 +
# O(h^2)$ when $\operatorname{tr} J = 0$. The continuous flow preserves it exactly, and so does the
# first-order formula.
#
# ## Exact against first order as the step grows
#
# The first-order log-determinant drops terms of order $h^2$: $\log\det(I + hJ) = h\operatorname{tr}J -
# \tfrac{h^2}{2}\operatorname{tr}(J^2) + \dots$. We measure the gap over a range of step sizes and fit its
# slope on a log-log scale.

# %%
zs = torch.randn(256, 2, generator=torch.Generator().manual_seed(2))
gs = torch.rand(256, 2, generator=torch.Generator().manual_seed(3))
hs = torch.logspace(-3, 0, 10)
gaps = []
for h in hs:
    exact = flow.step_logdet(bank, zs, 1.0, gs, h=h.item(), method="exact")
    first = flow.step_logdet(bank, zs, 1.0, gs, h=h.item(), method="first_order")
    gaps.append((exact - first).abs().mean().detach())
gaps = torch.stack(gaps)
small = hs < 0.1
design = torch.stack([hs[small].log(), torch.ones(int(small.sum()))], 1)
slope = torch.linalg.lstsq(design, gaps[small].log()[:, None]).solution[0].item()
print(f"slope of log |exact - first order| against log h (h < 0.1): {slope:.2f}")
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.loglog(hs, gaps, "o-", label="mean |exact - first order|")
ax.loglog(hs, gaps[0] * (hs / hs[0]) ** 2, "k--", lw=0.8, label="slope 2")
ax.set_xlabel("step size h")
ax.set_ylabel("error of the log-determinant")
ax.legend()
plt.show()

# %% [markdown]
# (sec-folding)=
# ## When a step folds space
#
# The first-order formula is linear in the curvature of the potentials; the true log-determinant is
# not. The flow KL of {ref}`ch-elbo` contains $-\log\lvert\det\rvert$, so it rewards expansion, and an
# optimiser can exploit the first-order formula: growing a potential's Laplacian where it spreads mass
# buys an unlimited reward, while the real map gains only logarithmically. The cell below scales one
# field's speed up at a point where the potential spreads mass and compares the two formulas.

# %%
candidates = 2 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(10))
with torch.no_grad():
    laplacians = bank.potential.laplacian(candidates, 1.0)[:, 0]
probe = candidates[laplacians.argmax()][None]            # a point that spreads mass
for scale in [1, 4, 16, 64, 256]:
    g_probe = torch.tensor([[scale, 0.0]])
    with torch.no_grad():
        exact = flow.step_logdet(bank, probe, 1.0, g_probe, h=0.25,
                                 method="exact").item()
        first = flow.step_logdet(bank, probe, 1.0, g_probe, h=0.25,
                                 method="first_order").item()
    print(f"speed x{scale:3d}: exact log|det| {exact:+8.3f}, first order {first:+8.3f}")
growth_exact, growth_first = exact, first

# %% [markdown]
# Where a potential concentrates mass instead, its Hessian has negative eigenvalues $\lambda$, and the
# eigenvalue $1 + hg\lambda$ of $I + hJ$ reaches zero once the speed $g$ passes $-1/(h\lambda)$: the step
# *folds* space. Past that speed the map is not injective. A fold lays one region of space over
# another, the density at a landing point is a sum over several preimages, and
# {eq}`eq-change-of-variables`, which follows one preimage, is wrong. Nothing in the log-determinant
# announces it: `logabsdet` discards the sign and is finite everywhere except exactly at the fold. In
# the cell below the sign flips at the first fold and back at the second, and beyond it the exact
# log-determinant even reports *expansion* at a point where the potential concentrates mass, while the
# first-order formula falls without limit. For a step of potential fields alone the condition to watch
# is that the smallest eigenvalue of $I + hJ$ stays positive. {ref}`ch-training` trains with exact
# log-determinants and checks that the trained model's steps stay invertible.

# %%
with torch.no_grad():
    # a point where the potential concentrates mass (its most negative Laplacian)
    squeeze = candidates[laplacians.argmin()][None]
    fold_rows = []
    for scale in [1, 2, 4, 8, 16, 32]:
        g_fold = torch.tensor([[scale, 0.0]])
        J_fold = bank.weighted_jacobian(squeeze, torch.ones(1), g_fold)[0]
        step_matrix = torch.eye(2) + 0.25 * J_fold     # symmetric: one potential field
        sign, logabs = torch.linalg.slogdet(step_matrix)
        lowest = torch.linalg.eigvalsh(step_matrix).min().item()
        first = flow.step_logdet(bank, squeeze, 1.0, g_fold, h=0.25,
                                 method="first_order").item()
        fold_rows.append((scale, lowest, sign.item(), logabs.item(), first))
        print(f"speed x{scale:2d}: smallest eigenvalue of I + hJ {lowest:+6.3f}, "
              f"sign {sign.item():+.0f}, log|det| {logabs.item():+7.3f}, "
              f"first order {first:+8.3f}")

# %% [markdown]
# (sec-ot)=
# ## Optimal transport: straight paths at constant speed
#
# Among all velocity fields that carry one density to another in unit time, the one with the least kinetic
# energy $\int_0^1\!\!\int \tfrac12 |v|^2 q\, dz\, dt$ is a gradient field $v = \nabla u$ whose potential solves
# the Hamilton-Jacobi equation (Benamou and Brenier {cite}`benamou2000computational`):
#
# $$
# \partial_t u + \tfrac12 \lvert \nabla_z u \rvert^2 = 0 .
# $$ (eq-hj)
#
# Along a particle path, $\tfrac{d}{dt}\nabla u = \nabla(\partial_t u + \tfrac12|\nabla u|^2) = 0$: the velocity
# never changes, so every particle moves on a straight line at constant speed. FFRL and STA add the squared
# residual of this equation, weighted by $\lambda_{HJ}$, to their objective as a regulariser on the
# potential fields. What that does, and does not do, for STA is the subject of {ref}`sec-hj-does`.
#
# Below, take the time-independent potential $u_0(z) = z_2 - a z_1^2$ ($a = 0.3$). Its gradient flow
# $\dot z = \nabla u_0 = (-2a z_1, 1)$ climbs at unit speed in $z_2$ while $z_1$ decays exponentially: curved
# paths whose speed changes. The Hamilton-Jacobi solution with the same initial velocity is known in closed
# form,
#
# $$
# u(z, t) = z_2 - \frac t2 - \frac{a z_1^2}{1 - 2at}, \qquad \nabla u(z, t) = \left(\frac{-2a z_1}{1 - 2at},\ 1\right),
# $$
#
# and its particles move on the straight lines $z_1(t) = z_1(0)(1 - 2at)$, $z_2(t) = z_2(0) + t$. We train a
# neural potential $u(z, t)$ on nothing but the equation and the initial velocity (`flow.fit_hamilton_jacobi`)
# and compare the paths of both fields with those straight lines.

# %%
a = 0.3


def gradient_of_u0(z, t):
    return torch.stack([-2 * a * z[:, 0], torch.ones_like(z[:, 0])], -1)


def u0(z, t):
    return z[:, 1] - a * z[:, 0] ** 2


seed_everything(4)
ot = fields.PotentialField(2, hidden=64)
history = flow.fit_hamilton_jacobi(ot, gradient_of_u0, steps=1000,
                                   generator=torch.Generator().manual_seed(5))
start = torch.randn(400, 2, generator=torch.Generator().manual_seed(6))
with torch.no_grad():
    z_check = 2 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(7))
    t_check = torch.rand(2000, generator=torch.Generator().manual_seed(8))
    hj_ot = flow.hj_residual(ot, z_check, t_check).pow(2).mean().item()
    hj_u0 = flow.hj_residual(u0, z_check, t_check).pow(2).mean().item()
    exact_v1 = torch.stack([-2 * a * start[:, 0] / (1 - 2 * a), torch.ones(400)], -1)
    velocity_error = (ot(start, 1.0) - exact_v1).norm(dim=-1).mean().item()
    straight_end = start + gradient_of_u0(start, 0.0)
    stats = {}
    compared = [("Hamilton-Jacobi (trained)", ot),
                ("gradient flow of u0", gradient_of_u0)]
    for name, field in compared:
        paths = fields.integrate(field, start, 0.0, 1.0, 40)
        s = flow.path_statistics(paths)
        stats[name] = dict(paths=paths,
                           miss=(paths[-1] - straight_end).norm(dim=-1).mean().item(),
                           excess=s["excess_length"].mean().item(),
                           speed=s["speed_variation"].mean().item())
print(f"mean squared HJ residual: trained {hj_ot:.4f}, u0 {hj_u0:.4f}; "
      f"trained velocity at t = 1 against the exact solution: "
      f"mean error {velocity_error:.3f}")
for name, s in stats.items():
    print(f"{name:26s}: distance from the straight-line endpoint {s['miss']:.3f}, "
          f"excess path length {s['excess']:.4f}, speed variation {s['speed']:.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.6))
for ax, (name, s) in zip(axes, stats.items(), strict=True):
    p = s["paths"][:, :60]
    ax.plot(torch.stack([start[:60, 0], straight_end[:60, 0]]),
            torch.stack([start[:60, 1], straight_end[:60, 1]]), "r:", lw=1.0)
    ax.plot(p[:, :, 0], p[:, :, 1], lw=0.9, color="tab:blue")
    ax.scatter(p[::10, :, 0].reshape(-1), p[::10, :, 1].reshape(-1), s=4, color="k",
               zorder=3)
    ax.set_title(name)
    ax.set_aspect("equal")
axes[0].plot([], [], "r:", label="straight line at the initial velocity")
axes[0].plot([], [], "k.", label="positions at t = 0, 0.25, ..., 1")
axes[0].legend(loc="lower left")
plt.show()

# %% [markdown]
# The trained potential's particles follow the straight lines at constant speed (the dots are evenly
# spaced), while the gradient flow of $u_0$ bends toward $z_1 = 0$ and slows down sideways. The regulariser
# does not decide *where* mass goes, only *how*: given the same start and end distributions, it picks the
# cheapest path, which makes the latent trajectories of a transformation short and regular.

# %% [markdown]
# (sec-hj-does)=
# ## What the Hamilton-Jacobi term does in STA
#
# Look again at the red dotted endpoints: they are $z + \nabla u_0(z)$, exactly where *one* Euler step
# of $u_0$'s own field with $h = 1$ lands. The curved paths come from following $\nabla u_0$ in 40
# small steps; a single step goes straight there. This is general. One step of the potential fields
# alone, $z \mapsto z + h\,g\,\nabla u(z)$, is the gradient of
#
# $$
# \varphi(z) = \tfrac12 \lvert z\rvert^2 + h\,g\,u(z), \qquad \nabla^2\varphi = I + h\,g\,\nabla^2 u .
# $$
#
# By Brenier's theorem, the gradient of a convex function is the optimal-transport map (for the squared
# distance) from its input distribution to its output distribution. Convexity is a global condition:
# $I + hg\nabla^2 u$ must be positive semi-definite *everywhere* on the support of $q_{t-1}$ (on its
# convex hull), not just at some points; positive definite there, it also keeps the step from folding
# ({ref}`sec-folding`). When it holds, the step of the potential fields is *already* an
# optimal-transport map between $q_{t-1}$ and $q_t$, with or without the Hamilton-Jacobi term. (A step in
# which rotational fields act is not a gradient map, but the term does not touch those fields.) For $u_0$ with $h = g = 1$, $\nabla^2\varphi = \operatorname{diag}(1 - 2a, 1)$
# at every $z$: its eigenvalues are printed below.
#
# What the residual acts on is the change of the potential *across* transitions. Within a transition
# `flow.flow_step` keeps the field time fixed: the `n_sub` substeps are Euler steps of the frozen field
# $\nabla u(\cdot, t)$, a gradient flow whose paths can bend like the 40-step flow of $u_0$. The model
# (`STA._hj`) evaluates the residual only at the integer times $t$, at the points $z_{t-1}$ where
# transition $t$ starts. It asks the potential to change from $t$ to $t + 1$ the way a solution of
# {eq}`eq-hj` does, so that consecutive transitions of the same field continue one straight path at
# constant speed, $z_{t+1} - z_t = z_t - z_{t-1}$, instead of turning at every frame (Exercise 3.4).
# This holds exactly only when $hg = 1$: particles move with velocity $hg\nabla u$, and their characteristics
# are straight when $\partial_t u + \tfrac{hg}{2}\lvert\nabla u\rvert^2 = 0$, which is {eq}`eq-hj`
# for $hg = 1$ (approximately the case here, with $h = 1$ and slab speeds near 1). The term does not act
# within a transition's substeps, it does not make a single step optimal (a step with
# $I + hg\nabla^2 u$ positive semi-definite on the support already is one), and it does not make a step
# invertible. The model trained in {ref}`ch-training` (the `tiny` preset) trains without it, $\lambda_{HJ} = 0$; the GPU-scale `mnist`
# preset keeps the term. Both weights are printed below.

# %%
hess_phi = torch.eye(2) + torch.diag(torch.tensor([-2 * a, 0.0]))   # h = g = 1
print("eigenvalues of the Hessian of phi for u0:",
      [round(e, 3) for e in torch.linalg.eigvalsh(hess_phi).tolist()])
lambda_hj = {name: train.preset(name).model.lambda_hj for name in ("tiny", "mnist")}
print("lambda_HJ of the presets:", lambda_hj)

# %% [markdown]
# ## The heat equation as a probability flow
#
# FFRL's prior moves the prior density by diffusion, $\partial_t p = \kappa\,\Delta p$ (diffusion constant $\kappa$). Diffusion is random, but its
# marginals are also carried by a deterministic flow, the *probability flow*: writing
# $\kappa\Delta p = \nabla\cdot(\kappa\nabla p) = -\nabla\cdot(p\, v)$ gives $v = -\kappa\,\nabla\log p$, a potential flow with
# potential $-\kappa\log p$. Started at $\mathcal N(0, \sigma_0^2 I)$ it stays Gaussian with variance
# $\sigma_0^2 + 2\kappa t$, and $v = \kappa z / (\sigma_0^2 + 2\kappa t)$: particles move outward, more slowly as the
# distribution spreads. `flow.HeatFlow` implements it; we integrate particles and compare.

# %%
heat = flow.HeatFlow(dim=2, diffusion=0.5, var0=0.25)
particles = 0.5 * torch.randn(20_000, 2, generator=torch.Generator().manual_seed(9))
times = torch.linspace(0, 2, 41)
with torch.no_grad():
    heat_paths = fields.integrate(heat, particles, 0.0, 2.0, 40)
measured = heat_paths.var(dim=1).mean(-1)
predicted = heat.var0 + 2 * heat.diffusion * times
# density along a path: log p_t(z_t) = log p_0(z_0) - integral of div v dt
div_along = torch.stack([heat.divergence(heat_paths[k], times[k].item())
                         for k in range(41)])
integral = 0.05 * (div_along[1:-1].sum(0) + 0.5 * (div_along[0] + div_along[-1]))
along = heat.log_density(particles, 0.0) - integral
density_gap = (along - heat.log_density(heat_paths[-1], 2.0)).abs().max().item()
print(f"variance at t = 2: particles {measured[-1]:.3f}, "
      f"heat equation {predicted[-1]:.3f}; "
      f"max |log p along the path - exact log p_2| = {density_gap:.4f}")
fig, ax = plt.subplots(figsize=(5, 3.3))
ax.plot(times, predicted, "k-", label="heat equation: var0 + 2 D t")
ax.plot(times[::4], measured[::4], "o", label="particles moved by v = -D grad log p")
ax.set_xlabel("t")
ax.set_ylabel("variance per coordinate")
ax.legend()
plt.show()

# %% [markdown]
# ## What this chapter claims, checked

# %%
# the density predicted along the flow matches the particles' own (kernel estimate noise
# is about 0.05)
for name in pushed:
    assert pushed[name]["gap"].abs().median() < 0.1
    assert pushed[name]["gap"].mean().abs() < 0.05
# the rotational flow barely changes log q (second order in h only); the potential flow
# changes it a lot
log_q_T = {name: pushed[name]["result"].log_q[:, -1] for name in pushed}
assert (log_q_T["rotational"] - log_q0).abs().max() < 0.05
assert (log_q_T["potential"] - log_q0).abs().max() > 0.5
# the first-order log-determinant is second-order accurate
assert 1.8 < slope < 2.2
# the first-order log-determinant outgrows the exact one without limit
assert growth_first > 3 * growth_exact > 0
# folding: the smallest eigenvalue of I + hJ turns negative, slogdet's sign flips and
# flips back, and past the second fold log|det| reports expansion where mass
# concentrates
lowest, signs = [r[1] for r in fold_rows], [r[2] for r in fold_rows]
assert lowest[0] > 0 > lowest[-1] and signs[0] > 0 and -1.0 in signs and signs[-1] > 0
assert fold_rows[-1][3] > 0 > fold_rows[-1][4]
# the Hamilton-Jacobi potential moves particles on straighter paths at steadier speed
hj, gf = stats["Hamilton-Jacobi (trained)"], stats["gradient flow of u0"]
assert hj_ot < 0.1 * hj_u0 and velocity_error < 0.1
assert hj["miss"] < 0.2 * gf["miss"] and hj["speed"] < 0.5 * gf["speed"]
assert hj["excess"] < 0.5 * gf["excess"]
# one Euler step of u0 is the gradient of a convex function; the book's model trains
# without the Hamilton-Jacobi term
assert torch.linalg.eigvalsh(hess_phi).min() > 0 and lambda_hj["tiny"] == 0
# the heat equation's probability flow reproduces its variance and its density
# (trapezoid rule, 40 steps)
assert abs(measured[-1] - predicted[-1]) < 0.05 and density_gap < 0.01
print("all checks passed")


# %% [markdown]
# ## What this chapter showed
#
# * The density of a pushed distribution follows the change of variables,
#   {eq}`eq-change-of-variables`: every Euler step subtracts $\log\lvert\det(I + hJ_w)\rvert$, the
#   discrete continuity equation of {ref}`ch-helmholtz`. Densities predicted this way agree with kernel
#   estimates made from the particles alone.
# * The log-determinant can be computed exactly, to first order ($h\sum_m g^m \Delta u_m$: the
#   rotational fields contribute nothing), or with Hutchinson probes; the first-order error shrinks as
#   $h^2$, with the slope measured above.
# * The change of variables needs invertible steps. The first-order formula can be exploited, and a
#   step that folds space breaks the density formula while `logabsdet` hides the fold
#   ({ref}`sec-folding`); {ref}`ch-training` trains with exact log-determinants and checks invertibility.
# * A potential that solves the Hamilton-Jacobi equation {eq}`eq-hj` moves particles on straight lines
#   at constant speed. A single Euler step of potential fields with $I + hg\nabla^2 u$ positive
#   semi-definite on the whole support is already an optimal-transport map (Brenier). STA's
#   Hamilton-Jacobi residual, evaluated at integer times only, acts across transitions: it asks
#   consecutive transitions of one field to continue one straight path (exactly when $hg = 1$). It does
#   nothing within a transition's substeps, where the field time is frozen, and the book's trained
#   model does without it ({ref}`sec-hj-does`).
# * The heat equation is a probability flow with potential $-D\log p$: particles moved by
#   $v = -D\nabla\log p$ reproduce its variance and its density.
# * {ref}`ch-elbo` puts the log-determinant of every transition into the flow term of the bound.

# %% [markdown]
# ## Exercises
#
# The solutions are hidden: click to reveal them. Code solutions run with the rest of the chapter and
# check their answer with `assert`.

# %% [markdown]
# **Exercise 3.1** *(change a number and predict)* The exact and first-order log-determinants differ
# by $-\tfrac{h^2}{2}\operatorname{tr}(J^2) + O(h^3)$. At the 256 points of the slope experiment
# (`zs`, `gs`), measure the mean gap at $h = 0.02$; predict it at $h = 0.04$ before computing it. Then
# predict the gap at each point from $J_w$ itself (`bank.weighted_jacobian`) and compare.

# %% tags=["hide-cell"]
# Solution 3.1. Doubling h multiplies the gap by 2^2 = 4; its leading term is
# -h^2 tr(J^2) / 2.
def logdet_gap(h):
    exact_h = flow.step_logdet(bank, zs, 1.0, gs, h=h, method="exact")
    first_h = flow.step_logdet(bank, zs, 1.0, gs, h=h, method="first_order")
    return (exact_h - first_h).detach()


gap_1, gap_2 = logdet_gap(0.02), logdet_gap(0.04)
ratio = (gap_2.abs().mean() / gap_1.abs().mean()).item()
print(f"mean gap: h = 0.02 {gap_1.abs().mean().item():.2e}, "
      f"h = 0.04 {gap_2.abs().mean().item():.2e}, ratio {ratio:.2f} (predicted 4)")
assert 3.8 < ratio < 4.2
with torch.no_grad():
    J_w = bank.weighted_jacobian(zs, torch.ones(len(zs)), gs)
leading = -0.5 * 0.02**2 * torch.einsum("bij,bji->b", J_w, J_w)
rel_err = ((gap_1 - leading).abs().max() / gap_1.abs().max()).item()
print(f"largest deviation from -h^2 tr(J^2) / 2, relative to the largest gap: "
      f"{rel_err:.2f}")
assert rel_err < 0.2

# %% [markdown]
# **Exercise 3.2** *(implement)* At the concentrating point `squeeze` of {ref}`sec-folding`, predict
# the speeds at which the step folds from the eigenvalues of $J$ at speed 1 (the step's Jacobian is
# proportional to the speed). Confirm that just below the first of them the smallest eigenvalue of
# $I + hJ$ is positive and the sign of the determinant $+1$, and just above it both are negative, and
# that the number of folds below each speed of the table explains every sign in it.

# %% tags=["hide-cell"]
# Solution 3.2. J at speed g is g J_1, so the eigenvalue 1 + h g lambda of I + h J
# vanishes at g = -1 / (h lambda), once for each negative eigenvalue lambda of J_1.
with torch.no_grad():
    J_unit = bank.weighted_jacobian(squeeze, torch.ones(1),
                                    torch.tensor([[1.0, 0.0]]))[0]
eigenvalues = torch.linalg.eigvalsh(J_unit)
folds = sorted((-1 / (0.25 * eigenvalues[eigenvalues < 0])).tolist())
print("speeds at which the step folds:", [round(f, 3) for f in folds])


def smallest_and_sign(speed):
    step_matrix = torch.eye(2) + 0.25 * speed * J_unit
    lowest_eig = torch.linalg.eigvalsh(step_matrix)[0].item()
    return lowest_eig, torch.linalg.slogdet(step_matrix)[0].item()


below, above = smallest_and_sign(0.999 * folds[0]), smallest_and_sign(1.001 * folds[0])
for where, (eig, sgn) in [("just below the first fold", below),
                         ("just above it", above)]:
    print(f"{where:25s}: smallest eigenvalue {eig:+.4f}, sign {sgn:+.0f}")
assert below[0] > 0 > above[0] and below[1] == 1.0 and above[1] == -1.0
# every sign of the table is (-1) to the number of folds passed
for scale, _, sign, _, _ in fold_rows:
    assert sign == (-1) ** sum(f < scale for f in folds)

# %% [markdown]
# **Exercise 3.3** *(derive)* Let $v(z) = Az$ with a constant matrix $A$ whose eigenvalues are $\mu_i$.
# (a) Show that one Euler step has
# $\log\lvert\det(I + hA)\rvert = \sum_i \log\lvert 1 + h\mu_i\rvert = h\operatorname{tr}A - \tfrac{h^2}{2}\operatorname{tr}(A^2) + O(h^3)$,
# while the exact flow over a time $h$, $z \mapsto e^{hA}z$, has log-determinant exactly $h\operatorname{tr}A$.
# (b) For the 2-D rotation $A = \omega\begin{pmatrix}0 & 1\\ -1 & 0\end{pmatrix}$, compute
# $\det(I + hA)$ and explain why the rotational flow of this chapter changed $\log q$ a little.
# (c) When is the Euler step of a linear field invertible?
#
# ```{admonition} Solution
# :class: dropdown
#
# (a) Triangularise, $A = P\,T\,P^{-1}$ with $T$ upper triangular and the $\mu_i$ on its diagonal (Schur
# or Jordan form). Then $I + hA = P(I + hT)P^{-1}$ and $I + hT$ is triangular with diagonal
# $1 + h\mu_i$, so $\det(I + hA) = \prod_i (1 + h\mu_i)$. For small $h$,
# $\log(1 + x) = x - x^2/2 + O(x^3)$ and $\sum_i \mu_i^k = \operatorname{tr}(A^k)$ give
#
# $$
# \log\lvert\det(I + hA)\rvert = h\operatorname{tr}A - \frac{h^2}{2}\operatorname{tr}(A^2) + O(h^3)
# $$
#
# (complex eigenvalues come in conjugate pairs, so the sums are real). In the same basis $e^{hA}$ is
# triangular with diagonal $e^{h\mu_i}$, so $\det e^{hA} = e^{h\operatorname{tr}A}$ (Jacobi's formula).
# The first-order formula is therefore the *exact* log-determinant of the continuous flow over a time
# $h$; the Euler step differs from it by $-\tfrac{h^2}{2}\operatorname{tr}(A^2)$: the slope 2 measured
# in this chapter.
#
# (b) The eigenvalues are $\pm i\omega$, so $\det(I + hA) = (1 + ih\omega)(1 - ih\omega) = 1 + h^2\omega^2 > 1$,
# and $\log\det = \log(1 + h^2\omega^2) \approx h^2\omega^2 = -\tfrac{h^2}{2}\operatorname{tr}(A^2)$,
# since $\operatorname{tr}(A^2) = -2\omega^2$. An Euler step of a rotation spirals outwards and
# expands areas at second order, while the true rotation $e^{hA}$ keeps them. A divergence-free field
# has $\operatorname{tr}J = 0$ but $\operatorname{tr}(J^2) \neq 0$ in general, hence the small change
# of $\log q$ under the rotational field in the first experiment, which shrinks like $h^2$.
#
# (c) $\det(I + hA) = \prod_i (1 + h\mu_i)$ vanishes exactly when some $\mu_i = -1/h$. For a linear map
# non-singular means injective, so the step is invertible unless $h$ hits $-1/\mu_i$ for a real
# negative eigenvalue. Beyond that value it is invertible again: for symmetric $A$ (a potential
# $u = \tfrac12 z^\top A z$) the factor $1 + h\mu_i$ is negative, so the step reverses orientation along
# that eigenvector and the sign of the determinant flips, but no two points land in the same place (the
# step is no longer the gradient of a convex function, though). A linear map cannot fold: overlapping
# preimages, as in {ref}`sec-folding`, need a nonlinear map whose Jacobian determinant changes sign
# from one region of space to another. For a nonlinear field, $\det \neq 0$ at every point is necessary but not sufficient for injectivity; for a
# step of potential fields, $I + hg\nabla^2u$ positive definite everywhere is sufficient, because the
# gradient of a strictly convex function is injective.
# ```

# %% [markdown]
# **Exercise 3.4** *(derive)* (a) Show that a step $z \mapsto z + h\nabla u(z)$ with
# $I + h\nabla^2 u$ positive definite is the gradient of a convex function, and hence (Brenier) the
# optimal-transport map between its input and output distributions. (b) Take two linear potential
# steps, $z \mapsto (I + hA)z$ and then $z \mapsto (I + hB)z$, with symmetric $A$, $B$ and both
# $I + hA$ and $I + hB$ positive definite. Show that the composed map is again the gradient of a
# function if and only if $AB = BA$. What does this say about the substeps of one transition (where
# `flow.flow_step` freezes the field time), about several transitions of one transformation, and about
# what the Hamilton-Jacobi term is for?
#
# ```{admonition} Solution
# :class: dropdown
#
# (a) With $\varphi(z) = \tfrac12\lvert z\rvert^2 + h\,u(z)$ we have $\nabla\varphi(z) = z + h\nabla u(z)$,
# the step itself, and $\nabla^2\varphi = I + h\nabla^2 u$, positive definite, so $\varphi$ is convex.
# Brenier's theorem: for an input distribution with a density, the optimal-transport map for the
# squared distance exists, is unique, and is the gradient of a convex function; and any gradient of a
# convex function is optimal between a distribution and its own push-forward. So the step is the
# optimal map from $q_{t-1}$ to $q_t$, whatever $u$ is, as long as $I + h\nabla^2 u$ is positive
# semi-definite on the whole (convex hull of the) support; a step that merely does not fold is not
# enough (Exercise 3.3(c)).
#
# (b) The composition is $z \mapsto Mz$ with $M = (I + hB)(I + hA) = I + h(A + B) + h^2 BA$. A linear
# map is a gradient, $Mz = \nabla\big(\tfrac12 z^\top M z\big)$, exactly when $M$ is symmetric (the
# Jacobian of a gradient is a Hessian). $M^\top = I + h(A + B) + h^2 AB$, so $M$ is symmetric if and only
# if $AB = BA$. When the two Hessians do not commute, the composition is not a gradient map, so it is
# not the optimal-transport map between the first and the last distribution (that map is unique and is
# a gradient): each step is optimal, the whole is not.
#
# Within a transition the field time is frozen, so the substeps follow one field $\nabla u(\cdot, t)$.
# For a quadratic $u$ its Hessian is the same everywhere, $B = A$, the two commute, and the composition
# is again a gradient map; for a general $u$ the Hessians at successive points differ, and the
# substeps are Euler steps of the gradient flow of the frozen $u$, whose paths bend like the 40-step
# flow of $u_0$. The Hamilton-Jacobi residual cannot change that: it is evaluated only at the integer
# times where transitions start. Across transitions, $A = A(t)$ and $B = A(t + 1)$ come from one
# potential at two times. For $u = \tfrac12 z^\top A(t) z$, {eq}`eq-hj` reads $\dot A = -A^2$, solved by
# $A(t) = A_0(I + tA_0)^{-1}$: all the $A(t)$ commute, $A(t + 1) = A(t)(I + A(t))^{-1}$, and with
# $h = g = 1$ two transitions compose to $(I + A(t + 1))(I + A(t)) = I + 2A(t)$, the first step
# continued along the same straight lines for twice the time. That is what the term is for: it asks
# the potential to change across transitions so that consecutive transitions of one field continue
# one straight, constant-speed path (exactly when $hg = 1$). It does not make a single step optimal,
# part (a) already does, and with $\lambda_{HJ} = 0$, as in the book's trained model, nothing asks for
# it.
# ```
