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
# (ch-elbo)=
# # The bound we maximise
#
# ```{admonition} This chapter
# :class: tip
# **Teaches** how the pieces become one model and one objective: the ELBO term by term, the flow KLs and why they keep a
# bound, and the whole forward pass written from scratch and checked against the package.
#
# **Assumes** chapters 2 to 4 ({ref}`ch-helmholtz`, {ref}`ch-flow`, {ref}`ch-sparse`) and the evidence lower bound of a
# variational autoencoder.
# ```
#
# The previous chapters built the pieces: the sequences ({ref}`ch-sequences`), the two kinds of latent
# fields ({ref}`ch-helmholtz`), the flow of a distribution with its exact log-determinants ({ref}`ch-flow`),
# and the spike-and-slab speeds ({ref}`ch-sparse`). This chapter puts them together into one model,
# `stabook.model.STA`, derives the objective it is trained on term by term, each next to the statement of
# `stabook` that computes it, and then writes the whole forward pass again from scratch in one function,
# checking that every term agrees with the package to rounding.
#
# **Generative model.** $z_0 \sim \mathcal N(0, I)$; spikes $y_t$ from the Markov chains and slabs $s_t$ from
# the LogNormal ({ref}`ch-sparse`); $z_t = z_{t-1} + h\sum_m y_t^m s_t^m v_m(z_{t-1}, t)$ ({ref}`ch-flow`);
# each frame $x_t \sim \text{Bernoulli}(\text{Dec}(z_t))$ per pixel.
#
# **Inference model.** $q(z_0 \mid x_0) = \mathcal N(\mu(x_0), \operatorname{diag}\sigma^2(x_0))$;
# $q(y_t, s_t \mid x_{t-1}, x_t)$ from the pair network; the later latents are the flowed samples, and their
# density $q_t$ follows from the change of variables.

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
import ast
import copy
import dataclasses
import inspect
import math
import textwrap

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from stabook import data, flow, seed_everything, viz
from stabook.fields import RotationalField, TanhScalarNet
from stabook.model import (
    STA,
    STAConfig,
    bernoulli_log_likelihood,
    gaussian_toy_bound,
    gaussian_toy_posterior,
)

viz.use_book_style()
_ = seed_everything(0)
FORWARD = textwrap.dedent(inspect.getsource(STA.forward))
FORWARD_LINES = FORWARD.splitlines()


def show_statement(fragment):
    """Print the whole statement of STA.forward (all its lines) whose first line holds
    `fragment`."""
    for node in ast.walk(ast.parse(FORWARD)):
        if isinstance(node, ast.stmt) and fragment in FORWARD_LINES[node.lineno - 1]:
            lines = FORWARD_LINES[node.lineno - 1:node.end_lineno]
            print(textwrap.dedent("\n".join(lines)))
            return
    raise ValueError(f"no statement of STA.forward starts with {fragment!r}")


# %% [markdown]
# (sec-elbo-why)=
# ## Why a bound
#
# The likelihood $\log p(x) = \log \int p(x, w)\, dw$ of a latent-variable model (here $w$ collects $z_0$, the
# spikes and the slabs) has no closed form. For any distribution $q(w \mid x)$, Jensen's inequality gives
# {cite}`kingma2014vae`
#
# $$
# \log p(x) = \log \E_q\!\left[\frac{p(x, w)}{q(w \mid x)}\right] \;\ge\; \E_q\!\left[\log \frac{p(x, w)}{q(w\mid x)}\right]
# = \E_q[\log p(x \mid w)] - \KL\big(q(w \mid x) \,\|\, p(w)\big),
# $$ (eq-elbo)
#
# and the gap is exactly $\KL(q(w\mid x) \,\|\, p(w \mid x))$: the bound is tight when $q$ is the true
# posterior. A linear-Gaussian toy shows both facts, because everything in it is closed form:
# $z \sim \mathcal N(0, 1)$, $x \mid z \sim \mathcal N(az, s^2)$, so $p(x) = \mathcal N(0, a^2 + s^2)$ and
# $p(z \mid x) = \mathcal N\!\big(\tfrac{a x}{a^2 + s^2}, \tfrac{s^2}{a^2 + s^2}\big)$.

# %%
a, s, x_obs = 1.5, 0.7, torch.tensor([1.2], dtype=torch.float64)
post_mean, post_var = gaussian_toy_posterior(x_obs, a, s)
means = torch.linspace(-0.5, 1.5, 201, dtype=torch.float64)
fig, ax = plt.subplots(figsize=(7.0, 3.2))
exact_log_px = None
for scale in [0.25, 1.0, 3.0]:
    var = (scale * post_var).expand_as(means)
    toy = gaussian_toy_bound(x_obs.expand_as(means), a, s, means, var)
    ax.plot(means, toy["bound"], label=f"bound, q variance = {scale:g} x posterior's")
    exact_log_px = toy["log_px"][0].item()
ax.axhline(exact_log_px, color="k", lw=1, label="log p(x), exact")
ax.axvline(post_mean.item(), color="gray", ls=":", lw=1, label="posterior mean")
ax.set_xlabel("mean of q(z | x)")
ax.set_ylabel("nats")
ax.set_ylim(exact_log_px - 2, exact_log_px + 0.3)
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1))
plt.tight_layout()
plt.show()
tight = gaussian_toy_bound(x_obs, a, s, post_mean, post_var)
print(f"log p(x) = {exact_log_px:.4f}; "
      f"bound at the exact posterior = {tight['bound'].item():.4f}")

# %% [markdown]
# (sec-elbo-terms)=
# ## The terms of STA's bound
#
# The latent variables of one sequence are $w = (z_0, y_{1:T}, s_{1:T})$. Given them, every later latent is
# fixed: $z_t = z_{t-1} + h\sum_m g_t^m v_m(z_{t-1}, t)$ with $g_t^m = y_t^m s_t^m$. The posterior factorises
# as $q(z_0 \mid x_0)\prod_t q(y_t \mid x_{t-1}, x_t)\, q(s_t \mid x_{t-1}, x_t)$ and the prior as
# $\mathcal N(z_0; 0, I)\, p(y_{1:T})\, p(s_{1:T})$, so {eq}`eq-elbo` becomes
#
# $$
# \mathcal L_{\text{ELBO}} = \sum_{t=0}^{T} \E_q[\log p(x_t \mid z_t)]
# - \KL\big(q(z_0 \mid x_0) \,\|\, \mathcal N(0, I)\big)
# - \sum_{t, m} \KL_{\text{spike}}(t, m)
# - \sum_{t, m} \KL\big(q(s_t^m) \,\|\, p(s)\big) .
# $$ (eq-tight-bound)
#
# There is no term for $z_1, \dots, z_T$: they are deterministic functions of $w$, not latent variables of
# their own. This is the plain ELBO of the generative model, {eq}`eq-elbo` with nothing added; like every
# ELBO it equals $\log p(x)$ only when $q$ is the exact posterior. STA subtracts one more KL per transition,
#
# $$
# \mathcal L = \mathcal L_{\text{ELBO}} - \sum_{t=1}^{T} \KL_t^{\text{flow}},
# \qquad \KL_t^{\text{flow}} = \E_{q(y, s)}\Big[\KL\big(q_t(\cdot \mid g) \,\|\, \mathcal N(0, I)\big)\Big],
# $$ (eq-sta-bound)
#
# where $q_t(\cdot \mid g)$ is the density of the flowed latent $z_t$ given the sampled speeds $g = y \cdot s$:
# the code pushes $q(z_0 \mid x_0)$ through the flow for the drawn spikes and slabs. Each
# $\KL_t^{\text{flow}}$ is a KL, so it is $\ge 0$, provided every step is invertible (the change of
# variables of {ref}`ch-flow` needs it, and {ref}`ch-training` checks it for the trained model). Then
# $\mathcal L \le \mathcal L_{\text{ELBO}} \le \log p(x)$: $\mathcal L$ is still a bound, a
# looser one, with a modelling preference added: every frame's latent should stay a typical draw of
# $\mathcal N(0, I)$, the region the decoder is trained on. **`STAOutput.bound` is $\mathcal L$, flow KLs
# included, and training maximises the weighted version of $\mathcal L$ below**; this chapter reports both
# $\mathcal L$ and $\mathcal L_{\text{ELBO}}$ (the latter is `bound + kl_flow.sum(1)`). The authors' released
# code uses a different, softmax-based surrogate (see the appendix on the reference code).
#
# **When it is a bound.** {eq}`eq-elbo` needs the decoder to see a *draw* of the posterior whose KL is
# subtracted. With straight-through spikes (`straight_through=True`, {ref}`ch-sparse`) the forward pass uses
# $\mathbb 1[\tilde y > \tfrac12]$, which is exactly a Bernoulli($\rho$) draw, so both $\mathcal L$ and
# $\mathcal L_{\text{ELBO}}$ are bounds on $\log p(x)$. With relaxed spikes the decoder sees a number in
# $(0, 1)$ that is not a draw of Bernoulli($\rho$), while the KL subtracted is the Bernoulli one: the
# objective is then a surrogate that nothing keeps below $\log p(x)$. The trained preset of
# {ref}`ch-training` uses straight-through spikes; the untrained model of this chapter uses relaxed ones at
# first, so its numbers illustrate the terms, not a bound.
#
# Here is each term, with the whole statement of `STA.forward` that computes it.
#
# **Reconstruction.** Every frame is decoded from its latent; a Bernoulli likelihood per pixel is the negative
# binary cross-entropy, summed over pixels. The function is shared by training, `STA.log_likelihood` and the
# evaluation of chapter 7, so every number in nats means the same thing:

# %%
show_statement("recon = bernoulli_log_likelihood")
print()
print(inspect.getsource(bernoulli_log_likelihood))

# %% [markdown]
# **Initial KL.** Both distributions are Gaussian, so `torch.distributions` gives it in closed form,
# $\tfrac12\sum_d(\mu_d^2 + \sigma_d^2 - 1 - \log\sigma_d^2)$. The sample $z_0 = \mu + \sigma\varepsilon$ is
# reparameterised (`_sharded` matters only in a data-parallel run, {ref}`ch-training`: it draws the noise for
# the whole global batch and keeps this process's rows, so that several processes together reproduce the
# draws of one; in one process it simply draws):

# %%
show_statement("eps = _sharded")
show_statement("z0 = mu")
show_statement("kl_z0 = kl_divergence")

# %% [markdown]
# **The speeds $g = y \cdot s$.** The pair network gives, per pair of frames and field, a spike logit and the
# slab's $(\mu, \log\sigma)$. The spike is a relaxed (Concrete) draw at the current temperature, straight-through
# if the configuration asks for it ({ref}`ch-sparse`); the slab is a reparameterised LogNormal draw
# $s = \exp(\mu + \sigma n)$, $n \sim \mathcal N(0, 1)$; the speed is their product. The spikes are drawn
# before the slabs' normals, and both after $\varepsilon$: the order matters for the from-scratch check below.

# %%
show_statement("def draw_spikes")
show_statement("def draw_normal")
show_statement("y = _sharded(draw_spikes")
show_statement("g = y * torch.exp")

# %% [markdown]
# **Flow KL.** For the drawn speeds $g$,
# $\KL(q_t(\cdot \mid g) \,\|\, \mathcal N(0, I)) = \E[\log q_t(z_t \mid g) - \log\mathcal N(z_t; 0, I)]$, with
# $\log q_t(z_t \mid g) = \log q(z_0\mid x_0) - \sum_{s \le t}\log\lvert\det(I + hJ_{w_s})\rvert$ from
# {ref}`ch-flow` (exact log-determinants by default), the density of $z_t$ only while every step is
# invertible. The model estimates it, together with the outer expectation over $q(y, s)$, with the same
# single sample of $z_0$ and of the speeds that feeds the decoder, so one estimate can be negative; its
# expectation cannot.

# %%
show_statement("result = flowlib.flow(")
show_statement("log_prior = ")
show_statement("kl_flow = ")

# %% [markdown]
# **Spike and slab KLs** are {ref}`ch-sparse`'s: exact under the Markov prior, and closed form for the
# LogNormal. Both take the posterior's parameters, not the sampled spikes and slabs.

# %%
show_statement("kl_spike = spike_kl")
show_statement("kl_slab = slab_kl")

# %% [markdown]
# **Weights and the regulariser.** Training maximises a weighted version,
#
# $$
# \sum_t \E\log p(x_t\mid z_t) - \KL_{z_0} - \beta_{\text{flow}}\sum_t\KL_t^{\text{flow}} -
# \beta_{\text{spike}}\KL_{\text{spike}} - \beta_{\text{slab}}\KL_{\text{slab}} - \lambda_{HJ} R_{HJ} .
# $$ (eq-objective)
#
# With every weight 1 and $\lambda_{HJ} = 0$ it is $\mathcal L$ of {eq}`eq-sta-bound`; with weights
# $\beta \ge 1$ and $\lambda_{HJ} \ge 0$ it is below $\mathcal L$ in expectation, so still a bound.
# $R_{HJ}$ is the Hamilton-Jacobi residual of {ref}`ch-flow`, $\sum_t \sum_{m\ \text{potential}} y_t^m
# \big(\partial_t u_m + \tfrac12\lvert\nabla u_m\rvert^2\big)^2$ at $(z_{t-1}, t)$, weighted by each field's
# spike. It is a regulariser, not part of either bound.
#
# What it does and does not do. One Euler step along potential fields,
# $z \mapsto z + h \nabla u(z)$ with $u = \sum_m g^m u_m$, is the gradient of
# $\tfrac12\lvert z\rvert^2 + h\, u(z)$. That function is convex when $I + h \nabla^2 u$ is positive
# semi-definite everywhere on (the convex hull of) the support of $q_{t-1}$, and then, by Brenier's theorem,
# the step is the optimal-transport map from $q_{t-1}$ to $q_t$ on its own; the HJ term does not make it
# one. Nor does the term act within a transition: `flow.flow_step` keeps the field time fixed over the
# substeps, and the residual is evaluated only at the integer times $t$, at $z_{t-1}$. What it asks is that
# the potential change *across* transitions, from $t$ to $t + 1$, the way a solution of the Hamilton-Jacobi
# equation does, so that consecutive transitions of the same field continue one straight, constant-speed
# path ({ref}`sec-hj-does`). That holds exactly when $hg = 1$ (particles move with velocity $hg\nabla u$),
# and approximately here, with $h = 1$ and slab speeds near 1. It does not make a step invertible either. The trained preset of {ref}`ch-training` (`tiny`) turns it off ($\lambda_{HJ} = 0$); this
# chapter keeps $\lambda_{HJ} = 1$ only to show the term. The result object reports the weighted objective and
# the unweighted bound separately:

# %%
show_statement("hj = self._hj")
print()
print(textwrap.dedent(inspect.getsource(STA._hj)))
show_statement("bound = recon.sum(1)")
show_statement("objective = (recon.sum(1)")

# %% [markdown]
# (sec-elbo-forward)=
# ## One forward pass
#
# An untrained model on a batch of eight sequences of {ref}`ch-sequences`; every term in nats per sequence
# (batch means). The spikes are relaxed here (the default `straight_through=False`).

# %%
digits, _ = data.load_digits()
generator = data.SequenceGenerator(digits, T=8)
batch = generator.sample(8, generator=torch.Generator().manual_seed(1))
_ = seed_everything(2)
model = STA(STAConfig(latent_dim=16, net_width=16, net_hidden=128, decoder="mlp",
                      posterior_width=16, posterior_hidden=128, lambda_hj=1.0))
out = model(batch.frames, temperature=1.0)
for name, value in out.summary().items():
    print(f"{name:9s} {value:10.1f}")
plain_elbo = out.bound + out.kl_flow.sum(1)            # L_ELBO: no flow KLs
print(f"{'ELBO':9s} {plain_elbo.mean().item():10.1f}   (bound + flow KLs)")
print("shapes: recon", tuple(out.recon.shape), "| kl_flow", tuple(out.kl_flow.shape),
      "| z", tuple(out.z.shape), "| speeds", tuple(out.speeds.shape))
pixels = batch.frames[0, 0].numel()
print(f"reconstruction per pixel: {-out.recon.mean().item() / pixels:.3f} nats "
      f"(log 2 = {math.log(2):.3f})")

# %% [markdown]
# Reconstruction dominates at the start: nine frames of $3 \times 28 \times 28$ pixels each, at close to
# $\log 2$ nats per pixel for an untrained decoder that outputs about $\tfrac12$ everywhere. The flow KL
# printed above comes from one draw of $z_0$ and of the speeds per sequence, averaged over only eight
# sequences, so it is noisy: the mean over 100 draws below can differ from it considerably, and the cell
# prints the range of single-pass values too. Averaged over many draws it estimates a KL and is positive:

# %%
with torch.no_grad():
    # [draws, B]
    draws = torch.stack([model(batch.frames).kl_flow.sum(1) for _ in range(100)])
mean_flow_kl = draws.mean().item()
print(f"flow KL over 100 draws: mean {mean_flow_kl:.2f} nats per sequence, "
      f"share of single draws below zero {(draws < 0).float().mean().item():.2f}")
pass_means = draws.mean(1)                    # batch mean of each forward pass
print(f"batch mean of one forward pass: from {pass_means.min().item():.2f} "
      f"to {pass_means.max().item():.2f} over the 100 draws "
      f"(the pass above: {out.kl_flow.sum(1).mean().item():.2f})")

# %% [markdown]
# **Without the flow KL ($\beta_{\text{flow}} = 0$)**, nothing ties the later latents to the prior: the fields could carry
# $z_t$ far from where $z_0$ lives, and the decoder would have to learn a separate region of latent space for
# every step. The cell below moves the posterior means $\mu$ with speeds 1, 3 and 10 along one field and shows how
# $\log q_t - \log\mathcal N(z_t; 0, I)$, the integrand of the flow KL, grows with the distance travelled.
# It evaluates $\log q_0$ at the mean, not at a sample, so it checks how the formula behaves along one
# path; it is not an estimate of the KL.

# %%
D = model.config.latent_dim
with torch.no_grad():
    mu, log_var = model.encode(batch.frames[:, 0])
    log_q0 = torch.distributions.Normal(mu, (0.5 * log_var).exp()).log_prob(mu).sum(-1)
    for speed in [1.0, 3.0, 10.0]:
        g = torch.zeros(8, 8, model.M)
        g[..., 0] = speed
        res = flow.flow(model.fields, mu, g, logdet="exact", log_q0=log_q0)
        prior = -0.5 * (res.z[:, 1:] ** 2).sum(-1) - D / 2 * math.log(2 * math.pi)
        end = res.z[:, -1].norm(dim=-1).mean().item()
        kl = (res.log_q[:, 1:] - prior).sum(1).mean().item()
        print(f"speed {speed:4.1f}: |z_8| = {end:5.2f}, "
              f"log q - log N at the mean, summed over steps {kl:8.1f}")


# %% [markdown]
# (sec-elbo-networks)=
# ## The networks
#
# Four parts carry all the weights; the table below is read off the model itself.
#
# * **Encoder** $q(z_0 \mid x_0)$ (`stabook.nets.Encoder`): two stride-2 $4\times4$ convolutions
#   ($28 \to 14 \to 7$ pixels, widths $w$ and $2w$), a $3\times3$ convolution at $7\times7$, then a hidden
#   layer and a linear head with $2D$ outputs, the mean and the log-variance (clipped to $[-12, 6]$). SiLU
#   activations throughout.
# * **Decoder** $p(x_t \mid z_t)$: here the fully connected `MLPDecoder` ($D \to$ hidden $\to$ hidden
#   $\to C \cdot H \cdot W$ Bernoulli logits), which the CPU preset of {ref}`ch-training` uses because it runs
#   on all $B(T+1)$ frames of a batch; the default `Decoder` mirrors the encoder with two stride-2 transposed
#   convolutions.
# * **Pair network** $q(y_t, s_t \mid x_{t-1}, x_t)$ (`stabook.sparse.SpeedPosterior`): the two frames
#   concatenated along the channels ($2C$ inputs), three stride-2 convolutions ($28 \to 14 \to 7 \to 4$,
#   widths $w, 2w, 4w$), a hidden layer and a linear head with $3M$ outputs: spike logits, slab means (clipped
#   to $\pm 8$) and slab log-scales (clipped to $[-6, 2]$), so that $\exp(\mu + \sigma n)$ stays finite.
# * **Fields** ({ref}`ch-helmholtz`): $M$ one-hidden-layer tanh networks, the potentials $u_m$
#   (time-dependent) and the Hamiltonians $H_m$ of the rotational fields with their antisymmetric matrices
#   $S_m = L_m - L_m^\top$.

# %%
def describe(layer):
    if isinstance(layer, TanhScalarNet):
        kind = "time-dependent" if layer.time_dependent else "static"
        n = layer.W.shape[0]
        return f"{n} x tanh net {layer.dim} -> {layer.hidden} -> 1, {kind}"
    if isinstance(layer, RotationalField):
        return f"antisymmetric S = L - L^T, L of shape {tuple(layer.L.shape)}"
    return repr(layer)


parts = {"encoder": model.encoder, "decoder": model.decoder,
         "pair network": model.posterior, "fields": model.fields}
counts = {name: sum(p.numel() for p in part.parameters())
          for name, part in parts.items()}
total = sum(p.numel() for p in model.parameters())
print(f"{'part':14s} {'parameters':>11s} {'share':>7s}")
for name, n in counts.items():
    print(f"{name:14s} {n:11,d} {n / total:7.1%}")
print(f"{'total':14s} {total:11,d}")
for name, part in parts.items():
    print(f"\n{name}:")
    for sub, layer in part.named_modules():
        own = sum(p.numel() for p in layer.parameters(recurse=False))
        if own or not list(layer.children()):
            print(f"  {sub:12s} {describe(layer):66s} {own:8,d}")


# %% [markdown]
# (sec-elbo-scratch)=
# ## The forward pass from scratch
#
# `STA.forward` hides each term behind a helper. Here is the whole of it again in one function, using only
# torch and the model's networks: `model.encoder`, `model.posterior`, `model.decoder`, and the fields'
# velocities and Jacobians from {ref}`ch-helmholtz` (`model.fields.velocities`, `model.fields.jacobians`).
# Every KL is written in closed form, the flow is the Euler step of {ref}`ch-flow` with a dense `slogdet`,
# and the reconstruction is the Bernoulli log-likelihood $x\,l - \operatorname{softplus}(l)$ of a logit $l$.
# It draws its random numbers in the order `STA.forward` draws them: $\varepsilon$ for $z_0$ (`[B, D]`), then
# the uniforms of the spikes (`[B, T, M]`, inside `RelaxedBernoulli.rsample`), then the normals of the slabs
# (`[B, T, M]`). Seeding torch before each call therefore gives both the same noise.
#
# The speeds are sampled in step 3: the Concrete spike $\tilde y = \sigma\big((\ell + \log u - \log(1-u))/\tau\big)$
# with $u \sim \mathcal U(0, 1)$ and logit $\ell$ (made exactly 0 or 1 in the forward pass when straight-through),
# times the slab $s = \exp(\mu + \sigma n)$.

# %%
def kl_bernoulli(p, q):
    """KL(Bernoulli(p) || Bernoulli(q)), elementwise."""
    return torch.xlogy(p, p / q) + torch.xlogy(1 - p, (1 - p) / (1 - q))


def sta_forward(model, frames, temperature):
    """Every term of STA's objective, computed in the open.

    The random numbers are drawn in the order STA.forward draws them: eps for z_0, then
    the spikes' uniforms, then the slabs' normals."""
    c = model.config
    B, T = frames.shape[0], frames.shape[1] - 1
    D, M, Mp = c.latent_dim, model.M, c.n_potential
    dtype, fields = frames.dtype, model.fields

    # 1. q(z_0 | x_0) = N(mu, diag sigma^2), one reparameterised sample, KL to N(0, I)
    mu, log_var = model.encoder(frames[:, 0])                          # each [B, D]
    sigma = (0.5 * log_var).exp()
    eps = torch.randn(B, D, dtype=dtype)                               # draw 1
    z0 = mu + sigma * eps
    kl_z0 = 0.5 * (mu**2 + sigma**2 - 1 - log_var).sum(-1)
    log_q = (-0.5 * eps**2 - sigma.log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    # 2. the pair network: per pair (x_{t-1}, x_t) and field, a spike logit and the
    #    slab's (mu, log sigma); each [B, T, M]
    logits, s_mu, s_log_sigma = model.posterior(frames)
    rho = torch.sigmoid(logits)

    # 3. the speeds g = y * s. Spike: a Concrete (relaxed Bernoulli) sample, what
    #    RelaxedBernoulli(temperature, logits=logits).rsample() computes;
    #    straight-through: exactly 0 or 1 forward, the relaxed gradient backward
    tiny = torch.finfo(dtype).eps
    u = torch.rand(B, T, M, dtype=dtype).clamp(tiny, 1 - tiny)         # draw 2
    y = torch.sigmoid((logits + u.log() - (-u).log1p()) / temperature)
    if c.straight_through:
        y = (y > 0.5).to(dtype) + (y - y.detach())
    # slab: s = exp(mu + sigma n), n ~ N(0, 1), a LogNormal(mu, sigma) sample
    n = torch.randn(B, T, M, dtype=dtype)                              # draw 3
    s = torch.exp(s_mu + s_log_sigma.exp() * n)
    g = y * s

    # 4. the flow: T transitions of n_sub Euler steps z <- z + h' sum_m g^m v_m(z, t);
    #    each step lowers log q by log|det(I + h' sum_m g^m J_m(z, t))| (chapter 3)
    step, eye = c.h / c.n_sub, torch.eye(D, dtype=dtype)
    z, path, log_qs = z0, [z0], []
    for t in range(1, T + 1):
        time, g_t = torch.full((B,), float(t), dtype=dtype), g[:, t - 1]
        for _ in range(c.n_sub):
            J = torch.einsum("bm,bmij->bij", g_t, fields.jacobians(z, time))
            log_q = log_q - torch.linalg.slogdet(eye + step * J).logabsdet
            z = z + step * torch.einsum("bm,bmd->bd", g_t, fields.velocities(z, time))
        path.append(z)
        log_qs.append(log_q)
    z = torch.stack(path, 1)                                           # [B, T + 1, D]
    log_prior = -0.5 * (z[:, 1:] ** 2).sum(-1) - 0.5 * D * math.log(2 * math.pi)
    kl_flow = torch.stack(log_qs, 1) - log_prior                       # [B, T]

    # 5. decode every z_t; Bernoulli log-likelihood x l - softplus(l) for logits l,
    #    i.e. minus the binary cross-entropy, summed over pixels
    logits_x = model.decoder(z.flatten(0, 1)).reshape(frames.shape)
    recon = (frames * logits_x - F.softplus(logits_x)).sum((2, 3, 4))  # [B, T + 1]

    # 6. spike KL under the Markov prior (chapter 4), exact
    prev = rho[:, :-1]
    kl_first = kl_bernoulli(rho[:, :1], c.pi0)
    kl_later = (prev * kl_bernoulli(rho[:, 1:], c.alpha)
                + (1 - prev) * kl_bernoulli(rho[:, 1:], c.beta))
    kl_spike = torch.cat([kl_first, kl_later], 1).sum((1, 2))

    # 7. slab KL: LogNormal to LogNormal is the KL of the underlying normals
    kl_slab = (math.log(c.slab_sigma) - s_log_sigma - 0.5
               + (s_log_sigma.exp() ** 2 + (s_mu - c.slab_mu) ** 2)
               / (2 * c.slab_sigma**2)).sum((1, 2))

    # 8. Hamilton-Jacobi regulariser: y_t^m (d_t u_m + |grad u_m|^2 / 2)^2 at z_{t-1}, t
    hj = torch.zeros(B, dtype=dtype)
    if Mp and c.lambda_hj > 0:
        pot = fields.potential.u
        z_prev = z[:, :-1].flatten(0, 1)
        times = torch.arange(1, T + 1, dtype=dtype).repeat(B)
        residual = pot.time_derivative(z_prev, times) + 0.5 * (
            pot.grad(z_prev, times) ** 2).sum(-1)                        # [B T, Mp]
        hj = (y[..., :Mp].flatten(0, 1) * residual**2).reshape(B, -1).sum(1)

    # 9. the bounds and the weighted objective
    elbo = recon.sum(1) - kl_z0 - kl_spike - kl_slab                # the plain ELBO
    bound = elbo - kl_flow.sum(1)
    objective = (recon.sum(1) - kl_z0 - c.beta_flow * kl_flow.sum(1)
                 - c.beta_spike * kl_spike - c.beta_slab * kl_slab - c.lambda_hj * hj)
    return dict(recon=recon, kl_z0=kl_z0, kl_flow=kl_flow, kl_spike=kl_spike,
                kl_slab=kl_slab, hj=hj, objective=objective, bound=bound, elbo=elbo,
                z=z, speeds=g, rho=rho, spikes=y, slabs=s)


# %% [markdown]
# The comparison runs in double precision, on a copy of the model's weights (`.double()`), so that the only
# differences left are rounding (in float32 the two functions sum thousands of pixel terms in different
# orders and agree only to float32 rounding). Both spike modes are checked, relaxed (this chapter's model)
# and straight-through (the trained preset), and so are the gradients of the objective with respect to every
# weight.

# %%
model64 = copy.deepcopy(model).double()
frames64 = batch.frames.double()
TERMS = ("recon", "kl_z0", "kl_flow", "kl_spike", "kl_slab", "hj", "objective", "bound",
         "z", "speeds", "rho")
weights = list(model64.parameters())
scratch = {}
for straight in (False, True):
    model64.config = dataclasses.replace(model.config, straight_through=straight)
    torch.manual_seed(3)
    ref = model64(frames64, temperature=0.5)
    ref_grads = torch.autograd.grad(ref.objective.sum(), weights)
    torch.manual_seed(3)
    mine = sta_forward(model64, frames64, temperature=0.5)
    my_grads = torch.autograd.grad(mine["objective"].sum(), weights)
    for name in TERMS:
        torch.testing.assert_close(mine[name], getattr(ref, name), msg=name)
    for mine_grad, ref_grad in zip(my_grads, ref_grads, strict=True):
        torch.testing.assert_close(mine_grad, ref_grad)
    scratch[straight] = mine, ref
    print(f"straight_through={straight}: every term and every gradient agrees")
    print(f"  {'term':10s} {'STA':>10s} {'scratch':>10s}")
    for name in TERMS[:8]:
        value, by_hand = getattr(ref, name), mine[name]
        if value.dim() == 2:
            value, by_hand = value.sum(1), by_hand.sum(1)
        print(f"  {name:10s} {value.mean().item():10.2f} {by_hand.mean().item():10.2f}")
    print(f"  {'ELBO':10s} {(ref.bound + ref.kl_flow.sum(1)).mean().item():10.2f} "
          f"{mine['elbo'].mean().item():10.2f}")

# %% [markdown]
# How $g = y \cdot s$ comes out, for the first sequence: the spike probabilities $\rho$ from the pair network,
# the relaxed and the straight-through spikes drawn from them with the same uniforms, the slabs and the
# speeds (straight-through). A relaxed spike is rarely exactly 0, so with relaxed spikes every field moves a
# little at every step; a straight-through spike switches a field off completely.

# %%
relaxed, hard = scratch[False][0], scratch[True][0]
panels = [("spike probability rho", relaxed["rho"], 1.0),
          ("relaxed spike y", relaxed["spikes"], 1.0),
          ("straight-through spike y", hard["spikes"], 1.0),
          ("slab s", hard["slabs"], None),
          ("speed g = y s", hard["speeds"], None)]
fig, axes = plt.subplots(2, 3, figsize=(7.0, 4.6))
axes = axes.flat
axes[5].axis("off")
for ax, (title, values, top) in zip(axes, panels, strict=False):
    low = None if top is None else 0.0
    image = ax.imshow(values[0].detach().T, aspect="auto", vmin=low, vmax=top)
    fig.colorbar(image, ax=ax, fraction=0.08)
    ax.set_title(title)
    ax.set_xlabel("transition t")
    ax.set_xticks(range(8), [str(t) for t in range(1, 9)])
for ax in (axes[0], axes[3]):
    ax.set_ylabel("field m")
plt.tight_layout()
plt.show()
print("field 0, t = 1..8")
for name, values in [("rho", relaxed["rho"]), ("relaxed y", relaxed["spikes"]),
                     ("hard y", hard["spikes"]), ("slab s", hard["slabs"]),
                     ("g = y s", hard["speeds"])]:
    print(f"{name:10s}", " ".join(f"{v:5.2f}" for v in values[0, :, 0].tolist()))

# %% [markdown]
# ## What this chapter claims, checked

# %%
# the bound is below log p(x) for every q, and tight at the exact posterior
for scale in [0.25, 1.0, 3.0]:
    var = (scale * post_var).expand_as(means)
    toy = gaussian_toy_bound(x_obs.expand_as(means), a, s, means, var)
    assert (toy["bound"] <= toy["log_px"] + 1e-12).all()
assert abs(tight["gap"].item()) < 1e-12
# the result object's terms add up to the objective and the bound (flow KLs included)
c = model.config
kls = out.kl_z0 + out.kl_flow.sum(1) + out.kl_spike + out.kl_slab
torch.testing.assert_close(out.bound, out.recon.sum(1) - kls)
weighted = (out.kl_z0 + c.beta_flow * out.kl_flow.sum(1) + c.beta_spike * out.kl_spike
            + c.beta_slab * out.kl_slab + c.lambda_hj * out.hj)
torch.testing.assert_close(out.objective, out.recon.sum(1) - weighted)
# every closed-form KL is non-negative, and the flow KL is non-negative in expectation
# (for invertible steps), so the plain ELBO (no flow KLs) lies above the reported bound
# on average
assert (out.kl_z0 >= 0).all() and (out.kl_spike >= 0).all() and (out.kl_slab >= 0).all()
assert mean_flow_kl > 0
# the from-scratch forward pass equals STA's, term by term, in both spike modes
for mine, ref in scratch.values():
    for name in TERMS:
        torch.testing.assert_close(mine[name], getattr(ref, name))
    torch.testing.assert_close(mine["elbo"], ref.bound + ref.kl_flow.sum(1))
# straight-through spikes are exactly binary in the forward pass; relaxed ones are not
hard_y, soft_y = scratch[True][0]["spikes"], scratch[False][0]["spikes"]
binary = lambda y: ((y == 0) | (y == 1)).all().item()  # noqa: E731
assert binary(hard_y) and not binary(soft_y)
# both modes draw the same uniforms: the hard spike is the relaxed one rounded
assert torch.equal(hard_y, (soft_y > 0.5).to(hard_y))
print("all checks passed")

# %% [markdown]
# ## What this chapter showed
#
# * The plain ELBO of STA's generative model, {eq}`eq-tight-bound`, has four terms: the Bernoulli
#   reconstruction of every frame, the Gaussian KL of $z_0$, and the spike and slab KLs of {ref}`ch-sparse`;
#   it equals $\log p(x)$ only when $q$ is the exact posterior.
#   $z_1, \dots, z_T$ are deterministic given $z_0$ and the speeds, so they add no KL of their own.
# * STA subtracts one flow KL per transition ({eq}`eq-sta-bound`): the KL from $\mathcal N(0, I)$ of the
#   density of $z_t$ given the sampled speeds, averaged over the speeds, computed with the exact
#   log-determinants of {ref}`ch-flow`. Each is $\ge 0$ when every step is invertible, so the result is a looser bound that keeps every frame's
#   latent typical under $\mathcal N(0, I)$. `STAOutput.bound` is this looser bound, and training maximises
#   its weighted version {eq}`eq-objective`.
# * It is a bound only when the decoder sees binary spikes (straight-through, as in {ref}`ch-training`); with
#   relaxed spikes the objective is a surrogate.
# * The Hamilton-Jacobi term is a regulariser, not part of the bound: it asks the potentials to change across
#   transitions so that consecutive transitions continue one straight path (exactly when $hg = 1$), and does
#   not act within a transition's substeps. One Euler step along potential fields is already an
#   optimal-transport map when $I + h\nabla^2 u$ is positive semi-definite on the whole support.
# * The whole forward pass fits in one readable function ({ref}`sec-elbo-scratch`). With the same weights and
#   the same seed it reproduces every term of `STA.forward` and every gradient, for relaxed and for
#   straight-through spikes.
# * The networks around the flow are small convolutional and fully connected nets; their sizes are printed
#   in {ref}`sec-elbo-networks`. {ref}`ch-training` trains them, and {ref}`ch-evaluation` measures the
#   result.

# %% [markdown]
# ## Exercises

# %% [markdown]
# **Exercise 5.1** *(change a number and predict)* In the Gaussian toy of {ref}`sec-elbo-why`, keep $q$'s
# variance at the exact posterior's but move its mean $0.5$ above the posterior mean. Predict the sign of
# $\log p(x) - \text{bound}$, and its size: the gap is $\KL(q \,\|\, p(z \mid x))$, and for two Gaussians with
# the same variance $v$ that is $(\Delta\mu)^2 / (2v)$. The hidden cell checks it.

# %% tags=["hide-cell"]
worse_mean = post_mean + 0.5
worse = gaussian_toy_bound(x_obs, a, s, worse_mean, post_var)
gap = worse["gap"].item()
predicted = 0.5**2 / (2 * post_var.item())          # KL(q || exact posterior)
print(f"gap log p(x) - bound = {gap:.4f} nats; predicted (mean shift)^2 / (2 v) "
      f"= {predicted:.4f}")
assert gap > 0 and abs(gap - predicted) < 1e-12


# %% [markdown]
# **Exercise 5.2** *(derive)* (a) Starting from {eq}`eq-elbo` with $w = (z_0, y_{1:T}, s_{1:T})$, derive
# {eq}`eq-tight-bound` and explain why it has no flow terms. (b) Show that subtracting the flow KLs keeps a
# bound, {eq}`eq-sta-bound`, and say why a single-sample estimate of $\KL_t^{\text{flow}}$ may be negative
# without breaking the argument.
#
# ```{admonition} Solution
# :class: dropdown
#
# (a) Given $w$, the latents $z_t$ are fixed by the recursion $z_t = z_{t-1} + h\sum_m y_t^m s_t^m
# v_m(z_{t-1}, t)$, so $p(x \mid w) = \prod_{t=0}^T p(x_t \mid z_t(w))$ and
# $\E_q[\log p(x \mid w)] = \sum_t \E_q[\log p(x_t \mid z_t)]$. The posterior and the prior factorise into a
# $z_0$ part, a spike part and a slab part, and the KL of a product of independent factors is the sum of
# their KLs: $\KL(q(z_0 \mid x_0) \| \mathcal N(0, I)) + \KL(q(y) \| p(y)) + \KL(q(s) \| p(s))$. The spike
# KL under the Markov prior is {ref}`ch-sparse`'s closed form. No $z_t$ with $t \ge 1$ is a latent variable:
# there is no density of it in $q(w \mid x)$ or $p(w)$ to compare, so no flow term appears.
#
# (b) For fixed speeds $g$,
# $\KL(q_t(\cdot \mid g) \,\|\, \mathcal N(0, I)) = \E_{q_t(\cdot \mid g)}[\log q_t(z \mid g) - \log \mathcal N(z; 0, I)]$
# is a KL divergence, hence $\ge 0$ (Gibbs' inequality: $-\KL = \E_{q}[\log(p/q)] \le \log \E_q[p/q] = 0$
# by Jensen), and so is its average over $q(y, s)$, $\KL_t^{\text{flow}}$. This needs the computed
# $\log q_t(z_t \mid g)$ to be the true density of $z_t$, which the change of variables of {ref}`ch-flow`
# gives only when every step is invertible: a folding step lands several preimages on one point, the true
# density is the sum over them, the formula follows one and underestimates it, and the computed term can
# then be negative even in expectation ({ref}`ch-training` checks the trained model's steps). With
# invertible steps, subtracting non-negative numbers from $\mathcal L_{\text{ELBO}} \le \log p(x)$ can only
# lower it: $\mathcal L = \mathcal L_{\text{ELBO}} - \sum_t \KL_t^{\text{flow}} \le \log p(x)$. The bound is a
# statement about expectations under $q$; a one-sample estimate $\log q_t(z_t) - \log\mathcal N(z_t; 0, I)$
# is an unbiased estimate of the KL and can fall below zero for an unlucky draw of $z_0$ and the speeds, but its mean cannot (the
# cell after {ref}`sec-elbo-forward` measures it). The price of the extra terms is looseness: maximising
# $\mathcal L$ over $q$ trades reconstruction against keeping every $z_t$ typical.
# ```

# %% [markdown]
# **Exercise 5.3** *(implement)* Write `weighted_objective(terms, c)` that builds {eq}`eq-objective` from
# the dictionary `sta_forward` returns and the weights of a configuration `c`. Check it against `STA` with
# $\beta_{\text{spike}} = 2$, $\beta_{\text{slab}} = 3$ and $\lambda_{HJ} = 1$ on the same seed. Before
# running: is that objective above or below the bound $\mathcal L$, for every sequence or only on average?

# %% tags=["hide-cell"]
def weighted_objective(terms, c):
    return (terms["recon"].sum(1) - terms["kl_z0"]
            - c.beta_flow * terms["kl_flow"].sum(1)
            - c.beta_spike * terms["kl_spike"] - c.beta_slab * terms["kl_slab"]
            - c.lambda_hj * terms["hj"])


model64.config = dataclasses.replace(model.config, straight_through=True,
                                     beta_spike=2.0, beta_slab=3.0, lambda_hj=1.0)
torch.manual_seed(4)
ref = model64(frames64, temperature=0.5)
torch.manual_seed(4)
terms = sta_forward(model64, frames64, temperature=0.5)
torch.testing.assert_close(weighted_objective(terms, model64.config), ref.objective)
# beta_flow = 1, and the extra weights multiply exact KLs and R_HJ, all >= 0: the
# objective is below the bound for every sequence, not only on average
below = (ref.objective <= ref.bound).all().item()
difference = (ref.objective - ref.bound).mean().item()
print(f"objective - bound, batch mean: {difference:.2f} nats; "
      f"below for every sequence: {below}")
assert below
