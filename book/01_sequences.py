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
# (ch-sequences)=
# # Sequences of transformations
#
# ```{admonition} This chapter
# :class: tip
# **Teaches** how the training sequences are made (digits rotated, scaled and recoloured by a few transformations at a
# time), their statistics, and why sparsity in time lets a model separate transformations without labels.
#
# **Assumes** nothing beyond the overview ({ref}`ch-glance`); a little PyTorch.
# ```
#
# STA learns from sequences $x_0, x_1, \dots, x_T$ in which an object undergoes a few transformations at a
# time {cite}`song2024sta`: a digit rotates for a few frames, then rotates and grows, then changes colour. This
# chapter builds those sequences, looks at their statistics, and explains why *sparsity in time* (few
# transformations at once, each persisting for a while) is what lets a model pull the transformations apart
# without labels. The code is `stabook.data`.

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

from stabook import data, seed_everything, viz

viz.use_book_style()
_ = seed_everything(0)     # the returned generator is not needed here

# %% [markdown]
# ## Base images
#
# The embedded default is the set of 1,797 handwritten 8x8 digits that ships inside scikit-learn: real
# handwriting, no download. `data.load_digits` upsamples each digit to 14x14, centres it on a 28x28 canvas
# (so that it can grow and rotate without leaving the frame) and colours it red on black, as the authors'
# released code coloured MNIST. A colour is needed for the hue transformation to mean anything.
#
# For GPU-scale runs `data.load_mnist()` downloads the four MNIST files once, checks their SHA-256 and caches
# them (in `$STABOOK_DATA`, default `~/.cache/stabook`); offline, it stops at once and says which files to put
# where. `data.make_sprites()` draws a second, download-free family of shapes.

# %%
digits, labels = data.load_digits()
sprites, shapes = data.make_sprites(16, generator=torch.Generator().manual_seed(0))
per_class = torch.bincount(labels)
lo, hi = digits.min().item(), digits.max().item()
print(f"digits: {tuple(digits.shape)}, values in [{lo:.0f}, {hi:.0f}], "
      f"labels 0-9 with {per_class.min().item()} to {per_class.max().item()} each")
viz.show_sequences(torch.stack([digits[:8], sprites[:8]]),
                   row_labels=["digits", "sprites"], size=1.0)
plt.show()

# %% [markdown]
# ## Four transformations
#
# Each transformation is a batched tensor operation with one magnitude per image: rotation about the centre
# (counter-clockwise, 20 degrees per unit of speed), isotropic scaling (x1.07), a hue shift (20 degrees
# around the colour wheel) and translation (0.75 pixels to the right). The geometric ones are one
# `F.affine_grid`/`F.grid_sample` resampling; the hue shift rotates the hue in HSV space, so saturated
# colours stay in gamut and 360 degrees is exactly the identity.
#
# Transformations are cumulative, $x_t = T_t(x_{t-1})$. To avoid blurring the image a little more at every
# step, the generator composes the affine maps and resamples $x_0$ once per frame: the same map, one
# interpolation. Below, the evaluation sets: a single named transformation acting at every step.

# %%
four = ("rotate", "scale", "hue", "translate")
gen = data.SequenceGenerator(digits, transformations=four, T=8)
rng = torch.Generator().manual_seed(1)
index = torch.tensor([3, 3, 3, 3])
single = [gen.sample(1, generator=rng, only=name, index=index[:1]).frames[0]
          for name in gen.transformations]
viz.show_sequences(torch.stack(single), row_labels=list(gen.transformations))
plt.show()

# %% [markdown]
# (sec-spike-chain)=
# ## Which transformations act: a Markov spike chain
#
# Each transformation $k$ has its own on/off switch $y_t^k \in \{0, 1\}$, a two-state Markov chain:
#
# $$
# P(y_1^k = 1) = \pi_0, \qquad P(y_t^k = 1 \mid y_{t-1}^k = 1) = \alpha, \qquad P(y_t^k = 1 \mid y_{t-1}^k = 0) = \beta,
# $$ (eq-spike-chain)
#
# with the released code's values $\pi_0 = 0.1$, $\alpha = 0.9$ (an active transformation stays on) and
# $\beta = 0.1$ (an idle one rarely switches on). A step in which nothing would act is redrawn, so every
# frame pair shows some change. How far each active transformation moves is the *slab*, a speed
# $s \sim |\text{Laplace}(1, 0.1)|$ times the transformation's step size; the speed is $g_t^k = y_t^k s_t^k$.
#
# This spike-and-slab structure is what the prior of {ref}`ch-sparse` assumes about the speeds.
# From here on we use the three transformations of the book's experiments: rotation, scaling and hue.

# %%
gen = data.SequenceGenerator(digits)            # rotate, scale, hue; T = 8
batch = gen.sample(512, generator=torch.Generator().manual_seed(2))
print("frames", tuple(batch.frames.shape),
      "| spikes and speeds", tuple(batch.spikes.shape))

fig, axes = plt.subplots(2, 2, figsize=(7.0, 3.1))
for i, ax in enumerate(axes.flat):
    viz.plot_spike_raster(ax, batch.spikes[i], batch.names, speeds=batch.speeds[i],
                          title=f"sequence {i}")
plt.tight_layout()
plt.show()
viz.show_sequences(batch.frames[:4], row_labels=[f"sequence {i}" for i in range(4)])
plt.show()

# %% tags=["nbval-ignore-output"]
seq_labels = [f"seq {i}" for i in range(6)]
viz.show_animation(viz.animate_sequences(batch.frames[:6], labels=seq_labels))

# %% [markdown]
# ## The chain in closed form
#
# Without the rejection the $K$ chains would be independent, and $P(y_t^k = 1)$ would follow
# $p_t = \beta + (\alpha - \beta)\,p_{t-1}$. Rejecting all-off steps couples them: at each step the joint
# switch vector $y_t \in \{0,1\}^K$ moves with the product of the individual transitions, *conditioned on
# $y_t \neq 0$*. With $K = 3$ the joint chain has only $2^3 = 8$ states, so we propagate its distribution
# exactly (`data.spike_chain_marginals`):
#
# $$
# P(y_t = j) = \sum_i P(y_{t-1} = i)\, \frac{\prod_k P(y_t^k = j_k \mid y_{t-1}^k = i_k)}{1 - \prod_k P(y_t^k = 0 \mid y_{t-1}^k = i_k)}
# \quad (j \neq 0).
# $$ (eq-joint-chain)
#
# The rejection raises the on-probability a lot: at the first step it is
# $\pi_0 / (1 - (1 - \pi_0)^3) = 0.1 / (1 - 0.9^3) \approx 0.369$, not $\pi_0 = 0.1$, because the
# draws in which nothing would switch on (a share $0.9^3 = 0.729$ of them) are redrawn.

# %%
T, K = 8, 3
on, count = data.spike_chain_marginals(T, K)
chain_rng = torch.Generator().manual_seed(3)
sim = data.sample_spike_chain(100_000, T, K, generator=chain_rng).double()
sim_on = sim.mean(dim=(0, 2))
sim_count = torch.stack([(sim.sum(-1) == n).double().mean(0) for n in range(K + 1)], -1)
print("step  P(on) exact  simulated   P(0, 1, 2, 3 act) exact")
for t in range(T):
    print(f"{t + 1:4d}  {on[t].mean():11.4f}  {sim_on[t]:9.4f}   "
          + "  ".join(f"{p:.3f}" for p in count[t]))

fig, axes = plt.subplots(2, 1, figsize=(6.5, 5.6))
steps = range(1, T + 1)
axes[0].plot(steps, on.mean(1), "o-", label="exact, with rejection")
axes[0].plot(steps, sim_on, "x", ms=9, label="simulated (100,000 sequences)")
plain = [0.1]
for _ in range(T - 1):
    plain.append(0.1 + 0.8 * plain[-1])
axes[0].plot(steps, plain, "s--", label="without rejection")
axes[0].set_xlabel("step t")
axes[0].set_ylabel("P(on)")
axes[0].set_title("a given transformation is on")
axes[0].legend(loc="lower right")
axes[0].set_ylim(0, 0.7)
bottom = torch.zeros(T, dtype=torch.float64)
for n in range(1, K + 1):
    axes[1].bar(steps, count[:, n], bottom=bottom, label=f"{n} at once")
    axes[1].plot(steps, bottom + sim_count[:, n], "k_", ms=14)
    bottom += count[:, n]
axes[1].set_xlabel("step t")
axes[1].set_ylabel("share of sequences")
axes[1].set_title("how many act at once (bars exact, ticks simulated)")
axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What the slab does
#
# When a transformation is on, its speed is drawn from $|\text{Laplace}(1, 0.1)|$: between 0.8 and 1.2
# step sizes with probability $1 - e^{-2} \approx 0.86$ (two Laplace scales on either side of 1). Across a sequence the speeds add up, so the total rotation of a sequence is a sum of a
# random number of near-constant steps. The left panel shows the speeds of active steps; the right one the
# total rotation after 8 steps, whose peaks sit at multiples of 20 degrees, one peak per number of rotating
# steps.

# %%
big = gen.sample(4096, generator=torch.Generator().manual_seed(4))
active = big.speeds[big.spikes > 0]
total_rotation = 20.0 * big.speeds[..., 0].sum(1)
print(f"active speeds: mean {active.mean():.3f}, "
      f"mean |speed - 1| {(active - 1).abs().mean():.3f} (Laplace scale 0.1)")
fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.5))
axes[0].hist(active.numpy(), bins=60, density=True)
axes[0].set_xlabel("speed of an active step (units of the step size)")
axes[1].hist(total_rotation.numpy(), bins=100)
axes[1].set_xlabel("total rotation after 8 steps (degrees)")
plt.tight_layout()
plt.show()

# %% [markdown]
# (sec-identifiability)=
# ## Why sparsity in time makes the transformations identifiable
#
# STA will explain each frame pair $(x_{t-1}, x_t)$ by a speed vector $g_t \in \R^M$ that weights $M$ learned
# fields (built in {ref}`ch-helmholtz`, moving the latent distribution as in {ref}`ch-flow`). Suppose a model found fields that are *mixtures* of the true transformations, say field 1 = rotation
# + scaling and field 2 = rotation - scaling. With the right speeds it can reproduce every sequence just as
# well: if the columns of a matrix $A$ express the mixed fields in terms of the true transformations, the
# speeds are just the true ones in another basis, $g' = A^{-1} g$. Reconstruction alone cannot tell the two
# models apart.
#
# The prior can. In the true basis, most steps have only one or two transformations on, and an active one
# moves at nearly the same speed: the speed vectors lie on the coordinate axes and planes. In any mixed basis
# they leave the axes and every field is busy at every step. A spike-and-slab prior that expects few active
# fields ({ref}`ch-sparse`) therefore scores the true basis higher, and training moves the fields toward it. This is
# the same argument that makes sparse coding and ICA identifiable, with time added: because an active
# transformation stays on for several steps ($\alpha = 0.9$), many frame pairs show one transformation alone. Whether training actually finds the true basis is
# measured in {ref}`ch-evaluation`.
#
# Below, the true speeds of rotation and scaling, and the same speeds in a basis rotated by 45 degrees. That
# rotation is the simplest mixing to draw, and it gives some steps negative speeds; STA's speeds are
# $g = y \cdot s \geq 0$, so its prior rules such a basis out at once. A mixing with non-negative weights keeps
# the speeds positive but, as in the figure, still moves them off the axes, where the sparse prior scores them
# lower.

# %%
g = big.speeds.reshape(-1, 3)
angle = torch.tensor(torch.pi / 4)
cos_a, sin_a = torch.cos(angle), torch.sin(angle)
mix = torch.eye(3)
mix[:2, :2] = torch.tensor([[cos_a, -sin_a], [sin_a, cos_a]])
g_mixed = g @ mix.T
active_true = (g.abs() > 1e-6).float().sum(-1).mean().item()
active_mixed = (g_mixed.abs() > 1e-6).float().sum(-1).mean().item()
alone = (big.spikes.sum(-1) == 1).float().mean().item()
print(f"fields active per step: true basis {active_true:.2f}, "
      f"mixed basis {active_mixed:.2f}")
print(f"share of frame pairs in which exactly one transformation acts: {alone:.2f}")

fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.4))
panels = [(axes[0], g, "true basis"), (axes[1], g_mixed, "mixed basis (45 degrees)")]
for ax, values, name in panels:
    ax.scatter(values[:3000, 0], values[:3000, 1], s=3, alpha=0.3)
    ax.set_xlabel("speed of field 1")
    ax.set_ylabel("speed of field 2")
    ax.set_title(name)
    ax.set_aspect("equal")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What this chapter claims, checked

# %%
# the closed-form chain agrees with simulation (within 4 standard errors at every step)
se = (on.mean(1) * (1 - on.mean(1)) / (100_000 * K)).sqrt()
assert ((sim_on - on.mean(1)).abs() < 4 * se).all()
assert (sim_count - count).abs().max() < 0.01
# the rejection makes the first on-probability 0.1 / (1 - 0.9^3) = 0.369, not 0.1
assert abs(on[0, 0].item() - 0.1 / (1 - 0.9**3)) < 1e-12
# every step has at least one transformation, and speeds are positive exactly where
# spikes are on
assert (batch.spikes.sum(-1) >= 1).all()
assert ((batch.speeds > 0) == (batch.spikes > 0)).all()
# the slab: mean absolute deviation of a Laplace(1, 0.1) is its scale, 0.1
assert abs((active - 1).abs().mean().item() - 0.1) < 0.005
# sparsity: in the true basis fewer fields act per step than in a mixed one
assert active_true < 2.0 < active_mixed
# a full turn in 18 steps of 20 degrees returns the first frame
rotator = data.SequenceGenerator(digits[:4], transformations=("rotate",), T=18)
full_turn = rotator.render(digits[:4], torch.ones(4, 18, 1))
assert (full_turn[:, -1] - digits[:4]).abs().max() < 1e-4
print("all checks passed")

# %% [markdown]
# ## What this chapter showed
#
# * A training sequence applies a few of four batched transformations (rotation, scaling, hue,
#   translation) step after step. `data.SequenceGenerator` composes each frame's maps and resamples
#   $x_0$ once, so the frames do not blur, and a full turn returns the first frame (checked above).
# * Which transformations act follows one two-state Markov chain per transformation,
#   {eq}`eq-spike-chain`, with all-off steps redrawn. The redraw couples the chains; the exact
#   marginals of the joint $2^K$-state chain, {eq}`eq-joint-chain`, agree with simulated sequences and
#   put the first on-probability at $\pi_0 / (1 - (1 - \pi_0)^K)$, not $\pi_0$.
# * How far an active transformation moves is a slab of speeds close to one step size. The
#   spike-and-slab pair (on or off, then how fast) is what the prior and the posterior of
#   {ref}`ch-sparse` model, and what the bound of {ref}`ch-elbo` scores.
# * Reconstruction alone cannot tell the true transformations from mixtures of them; sparsity in time
#   can ({ref}`sec-identifiability`): in the true basis fewer fields act per step than in a rotated one,
#   and most frame pairs show a single transformation.
# * The model only ever sees frames. The true spikes and speeds are kept for evaluation:
#   {ref}`ch-evaluation` uses single-transformation sequences like the ones above to ask which learned
#   field carries which transformation, after {ref}`ch-training` has trained on the digit sequences
#   made here.

# %% [markdown]
# ## Exercises
#
# The solutions are hidden: click to reveal them. Code solutions run with the rest of the chapter and
# check their answer with `assert`.

# %% [markdown]
# **Exercise 1.1** *(change a number and predict)* Raise the first-step on-probability from
# $\pi_0 = 0.1$ to $\pi_0 = 0.3$, keeping $K = 3$, $\alpha = 0.9$ and $\beta = 0.1$. Before computing
# anything, predict $P(y_1^k = 1)$ with the rejection of all-off steps (the formula in the checks
# above generalises). Then predict what the rejection does to a *single* transformation ($K = 1$) at
# every step. Check both predictions with `data.spike_chain_marginals`.

# %% tags=["hide-cell"]
# Solution 1.1. The rejection divides pi0 by the probability that something is on,
# 1 - (1 - pi0)^K: here 0.3 / (1 - 0.7^3).
pi0 = 0.3
predicted = pi0 / (1 - (1 - pi0) ** K)
on_03, _ = data.spike_chain_marginals(T, K, pi0=pi0)
print(f"P(on) at step 1: predicted {predicted:.4f}, "
      f"exact chain {on_03[0, 0].item():.4f}")
assert abs(on_03[0, 0].item() - predicted) < 1e-12
# With one transformation, "not all off" means "on": it acts at every step,
# whatever pi0.
on_k1, _ = data.spike_chain_marginals(T, 1, pi0=pi0)
print("K = 1, P(on) at steps 1-8:", [round(p, 3) for p in on_k1[:, 0].tolist()])
assert torch.allclose(on_k1, torch.ones_like(on_k1))


# %% [markdown]
# **Exercise 1.2** *(explore)* The persistence $\alpha$ trades two things against each other. Predict
# how, as $\alpha$ goes through $0.5, 0.7, 0.9, 0.97$ (with $\pi_0 = \beta = 0.1$, $K = 3$, $T = 8$),
# (a) the share of frame pairs in which exactly one transformation acts, (b) the mean number of
# transformations acting and (c) the mean length of a run of consecutive active steps change.
# Compute (a) and (b) exactly with `data.spike_chain_marginals` and (c) from spikes drawn with
# `data.sample_spike_chain`. Which of these does the identifiability argument of
# {ref}`sec-identifiability` want large?
#
# ```{admonition} Solution
# :class: dropdown
#
# A smaller $\alpha$ switches active transformations off sooner, so they overlap less: more frame pairs
# show one transformation alone and fewer act at once, but the runs are short. A larger $\alpha$ gives
# long runs (on an unbounded time axis the mean run is $1/(1-\alpha)$ steps; here runs are cut at
# $T = 8$) and more overlap. The hidden cell below computes all three. Identifiability wants both many
# single-transformation pairs and persistence: the first shows each transformation alone, the second
# lets the posterior of {ref}`ch-sparse` pool evidence over several steps. The book's $\alpha = 0.9$
# keeps a majority of pairs single while a transformation typically lasts most of a sequence.
# ```

# %% tags=["hide-cell"]
# Solution 1.2. Exact shares from the joint chain; run lengths from simulated spikes.
def mean_run_length(spikes):
    """Mean length of the runs of consecutive on-steps in spikes [B, T, K]."""
    y = spikes.transpose(1, 2).reshape(-1, spikes.shape[1])       # [B * K, T]
    runs = y[:, 0].sum() + (y[:, 1:] * (1 - y[:, :-1])).sum()     # number of run starts
    return (y.sum() / runs).item()


rows = []
for alpha in (0.5, 0.7, 0.9, 0.97):
    _, count_a = data.spike_chain_marginals(T, K, alpha=alpha)
    spikes_a = data.sample_spike_chain(20_000, T, K, alpha=alpha,
                                       generator=torch.Generator().manual_seed(11))
    n_acting = (count_a * torch.arange(K + 1)).sum(-1).mean().item()
    one_alone = count_a[:, 1].mean().item()
    rows.append((alpha, one_alone, n_acting, mean_run_length(spikes_a)))
print("alpha  one alone  mean acting  mean run (steps)")
for alpha, one_alone, n_acting, run in rows:
    print(f"{alpha:5.2f}  {one_alone:9.3f}  {n_acting:11.3f}  {run:16.2f}")
one_alone, n_acting, run = (torch.tensor([r[i] for r in rows]) for i in (1, 2, 3))
assert (one_alone.diff() < 0).all() and (n_acting.diff() > 0).all()
assert (run.diff() > 0).all()

# %% [markdown]
# **Exercise 1.3** *(derive)* (a) Derive the first-step on-probability under the rejection,
# $P(y_1^k = 1 \mid y_1 \neq 0) = \pi_0 / (1 - (1 - \pi_0)^K)$. (b) Without the rejection, show that
# $p_t = \beta + (\alpha - \beta)\,p_{t-1}$ converges to $p^\ast = \beta / (1 - \alpha + \beta)$, and
# how fast. (c) Show that, without the rejection and on an unbounded time axis, an active
# transformation stays on for a geometric number of steps with mean $1/(1 - \alpha)$, and argue that
# the rejection can only lengthen these runs.
#
# ```{admonition} Solution
# :class: dropdown
#
# (a) Before the rejection the $K$ switches are independent Bernoulli($\pi_0$) variables. The
# rejection conditions on the event $y_1 \neq 0$, of probability $1 - (1 - \pi_0)^K$. Since
# $y_1^k = 1$ implies $y_1 \neq 0$,
#
# $$
# P(y_1^k = 1 \mid y_1 \neq 0) = \frac{P(y_1^k = 1)}{P(y_1 \neq 0)} = \frac{\pi_0}{1 - (1 - \pi_0)^K}.
# $$
#
# With $\pi_0 = 0.1$ and $K = 3$ this is $0.1 / 0.271 \approx 0.369$, the value asserted in the checks.
#
# (b) By total probability, $p_t = \alpha\,p_{t-1} + \beta\,(1 - p_{t-1}) = \beta + (\alpha - \beta)\,p_{t-1}$.
# Its fixed point solves $p^\ast = \beta + (\alpha - \beta)\,p^\ast$, so $p^\ast = \beta / (1 - \alpha + \beta)$,
# and subtracting the two equations gives $p_t - p^\ast = (\alpha - \beta)(p_{t-1} - p^\ast)$: the gap
# shrinks geometrically by the factor $\alpha - \beta$ per step. With $\alpha = 0.9$, $\beta = 0.1$:
# $p^\ast = 1/2$ and the factor is $0.8$, which is the dashed "without rejection" curve of the figure.
#
# (c) Once on, each further step stays on with probability $\alpha$, independently of the past (the
# Markov property), so the run length $L$ has $P(L = n) = \alpha^{n-1}(1 - \alpha)$, a geometric law
# with mean $1/(1 - \alpha)$, ten steps for $\alpha = 0.9$: longer than the eight transitions of a
# sequence. The rejection redraws a step conditioned on $y_t \neq 0$; because $\{y_t^k = 1\}$ is part
# of that event, conditioning can only raise $P(y_t^k = 1)$, so it never shortens a run.
# ```
