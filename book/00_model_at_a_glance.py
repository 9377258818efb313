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
# (ch-glance)=
# # The model at a glance
#
# ```{admonition} This chapter
# :class: tip
# **Teaches** the whole model in one page: what STA assumes generated a sequence of frames, how it infers the latents and
# speeds back, and the bound it maximises, with a map of which chapter builds each part.
#
# **Assumes** basic probability (densities, expectations, the KL divergence) and what a variational autoencoder is.
# ```
#
# This page states the whole model before the chapters build it piece by piece: what STA assumes generated
# the data, how it reads the data back, and what it maximises. Every symbol is in the notation table at the
# end of the page, and each part names the chapter that builds it.

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

from stabook import data, diagrams, seed_everything
from stabook.model import STA, STAConfig

_ = seed_everything(0)

# %% [markdown]
# (sec-generative)=
# ## The generative model
#
# A sequence $x_0, x_1, \dots, x_T$ shows one object under a few transformations at a time. STA explains it
# with a latent $z_t \in \mathbb{R}^D$ per frame and $M$ learned vector fields $v_1, \dots, v_M$ on the
# latent space:
#
# * **The first latent** is standard normal: $p(z_0) = \mathcal N(0, I_D)$.
# * **Spikes** $y_t^m \in \{0, 1\}$ say which fields move at step $t$. Each field's spikes form a Markov
#   chain ({ref}`ch-sequences`, {ref}`ch-sparse`):
#   $p(y_1^m = 1) = \pi_0$, and $p(y_t^m = 1 \mid y_{t-1}^m) = \alpha$ if the field was on, $\beta$ if it
#   was off.
# * **Slabs** $s_t^m > 0$ say how fast: $s_t^m \sim \operatorname{LogNormal}(\mu_0, \sigma_0)$, independent
#   across steps and fields.
# * **Speeds** are their product, $g_t^m = y_t^m s_t^m$: a field that is off does not move at all.
# * **The flow.** Each field is either a *potential* field $v_m = \nabla u_m$ (curl-free) or a *rotational*
#   field $v_m = S_m \nabla H_m$ with $S_m = -S_m^\top$ (divergence-free by construction), the two halves of
#   a Helmholtz decomposition ({ref}`ch-helmholtz`). One explicit Euler step of size $h$ moves the latent:
#
#   $$
#   z_t = \Phi_t(z_{t-1}) = z_{t-1} + h \sum_{m=1}^{M} g_t^m\, v_m(z_{t-1}, t).
#   $$ (eq-glance-step)
#
# * **The decoder** gives every pixel a Bernoulli probability: $p(x_t \mid z_t) =
#   \operatorname{Bernoulli}(\operatorname{Dec}(z_t))$.
#
# Given $z_0$, the spikes and the slabs, every later latent is determined: the randomness of a sequence is in
# its first latent and in which fields move, how fast.

# %% [markdown]
# (sec-inference)=
# ## The inference model
#
# Reading a sequence back means inferring $z_0$ and the speeds:
#
# * **An encoder** sees the first frame only: $q(z_0 \mid x_0) = \mathcal N(\mu(x_0),
#   \operatorname{diag}\sigma^2(x_0))$, sampled as $z_0 = \mu + \sigma \epsilon$.
# * **A pair network** sees two consecutive frames $(x_{t-1}, x_t)$ and gives, for every field, a spike
#   probability $\rho_t^m$ and the parameters of a LogNormal slab ({ref}`ch-sparse`). Training draws relaxed
#   spikes $\tilde y_t^m \sim \operatorname{RelaxedBernoulli}(\tau, \rho_t^m)$ at a temperature $\tau$ that
#   is annealed, optionally rounded to 0 or 1 in the forward pass (straight-through).
# * **The flowed posterior** $q_t(\cdot \mid g)$ is $q(z_0 \mid x_0)$ pushed through the steps
#   $\Phi_1, \dots, \Phi_t$ with the sampled speeds $g$; its density follows from the change of variables,
#   which needs each step to be invertible ({ref}`ch-flow`):
#   $\log q_t(z_t) = \log q_{t-1}(z_{t-1}) - \log\lvert\det(I + h J_{w}(z_{t-1}))\rvert$, with $J_w$ the
#   Jacobian of the weighted field $\sum_m g_t^m v_m$.
#
# The figure draws both models for the first two transitions: on the left the generative model (solid arrows;
# squares are determined by their parents), on the right the inference model (dashed arrows), in which the
# encoder reads the first frame and a pair network reads each pair of consecutive frames.

# %%
fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.6))
diagrams.graphical_model(axes[0], T=2)
diagrams.inference_model(axes[1], T=2)
plt.tight_layout()
plt.show()

# %% [markdown]
# (sec-objective)=
# ## What training maximises
#
# For one sequence the model's variational lower bound on $\log p(x_{0:T})$ is the plain ELBO
# ({ref}`ch-elbo`):
#
# $$
# \mathcal L_{\text{ELBO}} = \sum_{t=0}^{T} \mathbb E_q\left[\log p(x_t \mid z_t)\right]
# - \operatorname{KL}\left(q(z_0 \mid x_0) \,\|\, \mathcal N(0, I)\right)
# - \sum_{t, m} \operatorname{KL}_{\text{spike}}(t, m)
# - \sum_{t, m} \operatorname{KL}\left(q(s_t^m) \,\|\, p(s_t^m)\right).
# $$ (eq-glance-elbo)
#
# It has no flow terms because, given $z_0$, the spikes and the slabs, every later latent is determined. The
# package also subtracts, for every step, the flow KL $\operatorname{KL}_t^{\text{flow}} =
# \mathbb E_{q(y, s)}\left[\operatorname{KL}(q_t(\cdot \mid g) \,\|\, \mathcal N(0, I))\right]$, where
# $q_t(\cdot \mid g)$ is $q(z_0 \mid x_0)$ pushed through the steps with the sampled speeds. It keeps every
# frame's latent a typical one. A KL is never negative (when every step is invertible, so that $q_t$ is a
# density: {ref}`ch-flow` and {ref}`ch-training` check this), so subtracting the flow KLs keeps a bound, a
# looser one:
#
# $$
# \mathcal L = \mathcal L_{\text{ELBO}} - \sum_{t=1}^{T} \operatorname{KL}_t^{\text{flow}},
# $$ (eq-glance-bound)
#
# which the package reports as `bound`. Training maximises a weighted version of it, the objective
#
# $$
# \mathcal J = \sum_{t} \mathbb E_q\left[\log p(x_t \mid z_t)\right] - \operatorname{KL}(q(z_0 \mid x_0)
# \,\|\, \mathcal N(0, I)) - \beta_{\text{flow}} \sum_t \operatorname{KL}_t^{\text{flow}}
# - \beta_{\text{spike}} \sum_{t,m} \operatorname{KL}_{\text{spike}}
# - \beta_{\text{slab}} \sum_{t,m} \operatorname{KL}_{\text{slab}} - \lambda_{\text{HJ}} R_{\text{HJ}},
# $$ (eq-glance-objective)
#
# with the Hamilton-Jacobi regulariser $R_{\text{HJ}}$ of {ref}`ch-flow`; the weights of the two training
# presets, `tiny` (the tests' and quick experiments') and `book` (the book's reference run, {ref}`ch-training`),
# are printed below. With every weight 1 and $\lambda_{\text{HJ}} = 0$, $\mathcal J = \mathcal L$. One more
# condition: with relaxed (soft) spikes in the forward pass the spike term is not the KL of the distribution
# that was sampled, so these are bounds only with hard or straight-through spikes, which is what the training
# presets use ({ref}`ch-training`).

# %%
from stabook.train import preset

for name in ("tiny", "book"):
    weights = preset(name).model
    print(f"the {name} preset: beta_flow {weights.beta_flow}, "
          f"beta_spike {weights.beta_spike}, beta_slab {weights.beta_slab}, "
          f"lambda_HJ {weights.lambda_hj}, "
          f"straight-through spikes {weights.straight_through}")

# %% [markdown]
# One forward pass computes all of it. The diagram follows the tensors, with their shapes ($B$ sequences of
# $T$ transitions, latent size $D$, $M$ fields):

# %%
fig, ax = plt.subplots(figsize=(7.0, 4.8))
diagrams.pipeline(ax)
plt.tight_layout()
plt.show()

# %% [markdown]
# The shapes in the diagram are those of the package's model. A small model on two digit sequences
# shows them:

# %%
images, _ = data.load_digits()
frames = data.SequenceGenerator(images[:64], T=3).sample(
    2, generator=torch.Generator().manual_seed(0)).frames
model = STA(STAConfig(latent_dim=8, n_potential=2, n_rotational=2))
out = model(frames, temperature=0.5)
B, T1 = frames.shape[:2]
print(f"frames {tuple(frames.shape)} -> z_0 .. z_T {tuple(out.z.shape)}, "
      f"speeds {tuple(out.speeds.shape)}")
print(f"terms per sequence: recon {tuple(out.recon.shape)}, "
      f"flow KL {tuple(out.kl_flow.shape)}, bound {tuple(out.bound.shape)}")

# %% [markdown]
# (sec-notation)=
# ## Notation
#
# | symbol | meaning | chapter |
# |---|---|---|
# | $x_t$, $t = 0, \dots, T$ | the frames of a sequence ($C \times H \times W$ pixel values in $[0, 1]$) | {ref}`ch-sequences` |
# | $T$ | number of transitions (frames minus one) | {ref}`ch-sequences` |
# | $D$ | latent size; $z_t \in \mathbb{R}^D$ the latent of frame $t$ | {ref}`ch-elbo` |
# | $M = M_{\text{pot}} + M_{\text{rot}}$ | number of fields: potential plus rotational | {ref}`ch-helmholtz` |
# | $u_m(z, t)$ | scalar potential of a potential field, $v_m = \nabla_z u_m$ | {ref}`ch-helmholtz` |
# | $H_m(z)$, $S_m$ | scalar function and antisymmetric matrix of a rotational field, $v_m = S_m \nabla H_m$ | {ref}`ch-helmholtz` |
# | $v_m$ | the velocity field $m$ | {ref}`ch-helmholtz` |
# | $h$, $n_{\text{sub}}$ | step size of a transition; Euler substeps per transition | {ref}`ch-flow` |
# | $\Phi_t$ | the map of transition $t$, {eq}`eq-glance-step` | {ref}`ch-flow` |
# | $J_w$ | Jacobian of the weighted field $\sum_m g^m v_m$ | {ref}`ch-flow` |
# | $q_t(\cdot \mid g)$ | the density of $z_t$: $q(z_0 \mid x_0)$ pushed through the steps with speeds $g$ | {ref}`ch-flow` |
# | $y_t^m \in \{0, 1\}$ | spike: does field $m$ move at step $t$ | {ref}`ch-sparse` |
# | $\pi_0, \alpha, \beta$ | spike chain: first on-probability, stay-on, switch-on | {ref}`ch-sequences` |
# | $s_t^m > 0$ | slab: the speed of field $m$ if it moves; prior $\operatorname{LogNormal}(\mu_0, \sigma_0)$ | {ref}`ch-sparse` |
# | $g_t^m = y_t^m s_t^m$ | speed of field $m$ at step $t$ | {ref}`ch-sparse` |
# | $\rho_t^m$ | inferred spike probability | {ref}`ch-sparse` |
# | $\tau$ | temperature of the relaxed spikes | {ref}`ch-sparse` |
# | $\mu(x_0)$, $\sigma(x_0)$ | encoder outputs: mean and scale of $q(z_0 \mid x_0)$ | {ref}`ch-elbo` |
# | $\operatorname{KL}_t^{\text{flow}}$ | $\operatorname{KL}(q_t \,\|\, \mathcal N(0, I))$ | {ref}`ch-elbo` |
# | $R_{\text{HJ}}$, $\lambda_{\text{HJ}}$ | Hamilton-Jacobi residual of the potentials and its weight | {ref}`ch-elbo` |
# | $\beta_{\text{flow}}, \beta_{\text{spike}}, \beta_{\text{slab}}$ | weights of the KL terms in the training objective {eq}`eq-glance-objective` (with a subscript; $\beta$ alone is the chain's switch-on probability) | {ref}`ch-training` |
# | $\mathcal L_{\text{ELBO}}$, $\mathcal L$, $\mathcal J$ | the plain ELBO, the bound with flow KLs (`bound`), the weighted objective | {ref}`ch-elbo` |
# | $k$ | number of importance samples of a likelihood bound (IWAE) | {ref}`ch-evaluation` |
#
# The {doc}`glossary <glossary>` explains the terms in words.

# %%
# the figure's shapes are the model's, and the bound is the sum of its terms
assert out.z.shape == (B, T1, 8) and out.speeds.shape == (B, T1 - 1, model.M)
assert out.recon.shape == (B, T1) and out.kl_flow.shape == (B, T1 - 1)
terms = (out.recon.sum(1) - out.kl_z0 - out.kl_flow.sum(1) - out.kl_spike
         - out.kl_slab)
torch.testing.assert_close(out.bound, terms)
# speeds g = y * s are never negative: spikes lie in [0, 1], slabs are positive
assert bool((out.speeds >= 0).all())
print("checks passed")
