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
# (ch-results-detail)=
# # Results in detail
#
# This appendix holds the tables behind two short passages of the book: the ablation study at the small
# preset (chapter 7, {ref}`sec-ablation-study`) at both of its budgets, with every verdict, and the validation
# log from which the `book` preset was chosen (chapter 6, {ref}`sec-book-preset`). It reads results files only;
# the standard of evidence is chapter 7's ({ref}`sec-evidence`).

# %%
# On Colab, install this book's package and fetch the files this page reads
# (elsewhere this cell does nothing).
import importlib
import importlib.util
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    if not importlib.util.find_spec("stabook"):
        url = "git+https://github.com/stabook-project/stabook@main"
        pip = [sys.executable, "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"stabook @ {url}"], check=True)
        importlib.invalidate_caches()
    if not os.path.exists("results"):
        repo = "https://github.com/stabook-project/stabook"
        clone = ["git", "clone", "-q", "--depth", "1", repo, "/content/stabook-book"]
        subprocess.run(clone, check=True)
        os.chdir("/content/stabook-book/book")

# %%
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display
from myst_nb import glue

from stabook import baselines, compare, report, train, viz

viz.use_book_style()
stat, pm, verdict = report.stat, report.pm, report.verdict
results = json.loads(Path("results/tiny.json").read_text())            # short budget
results_full = json.loads(Path("results/tiny-5000.json").read_text())  # tiny's own
names = results["variants"]["sta"]["config"]["transformations"]
for res in (results, results_full):
    print(f"made by: {res['command']}")
    print(f"    created {res['created']}; {res['steps']:,} steps per run; "
          f"seeds {res['seeds']}")

# %% [markdown]
# (sec-ablation-tables)=
# ## The ablation study: tables
#
# Five models (chapter 7's table), three seeds each, at the `tiny` preset: scikit-learn's 8 × 8 digits on the
# 28-pixel canvas, an encoder head and decoder 128 units wide. The short budget, 2,000 steps, is less than the
# preset's own 5,000; the temperature is annealed over the first 80% of the steps. Each budget gets three
# tables: the errors over decoded $z_0$ (1 means no better than standing still; for the VAE, decoding $z_0$
# *is* its baseline) with the two disentanglement summaries; the errors themselves (mean absolute error per
# pixel) beside decoding $z_0$; and the likelihood bounds in nats (higher is better), per untransformed test
# digit and per test sequence with all three transformations switched by the Markov chain of chapter 1. The
# VAE treats a sequence's frames as independent, so its sequence bound is the sum of its frame bounds.

# %%
for res in (results, results_full):
    display(Markdown(f"**{res['steps']:,} steps**"))
    display(Markdown(compare.comparison_table(res, {
        "ratio_rotate": "rotate", "ratio_scale": "scale", "ratio_hue": "hue",
        "score": "dominance score", "matched_share": "matched share"}, digits=2)))
    display(Markdown(compare.comparison_table(res, {
        "equivariance_rotate": "rotate", "identity_rotate": "rotate, decoded $z_0$",
        "equivariance_scale": "scale", "identity_scale": "scale, decoded $z_0$",
        "equivariance_hue": "hue", "identity_hue": "hue, decoded $z_0$"}, digits=4)))
    display(Markdown(compare.comparison_table(res, {
        "frame_nats_k1": "frame ELBO", "frame_nats_k100": "frame IWAE k=100",
        "sequence_nats_k1": "sequence ELBO",
        "sequence_nats_k100": "sequence IWAE k=100"}, digits=1)))
viz.plot_comparison_panels(results, names, baselines.LABELS,
                           f"{results['steps']:,} steps")
plt.show()

# %% [markdown]
# Which fields carry rotation? The speed shares of rotation over STA's six fields, three potential then three
# rotational, for every seed at both budgets:

# %%
small_model = results_full["variants"]["sta"]["config"]["model"]
kinds = ["pot"] * small_model["n_potential"] + ["rot"] * small_model["n_rotational"]
on_potential = {}          # (budget, seed): rotation carried by potential fields alone?
for res in (results, results_full):
    for seed, run in res["variants"]["sta"]["per_seed"].items():
        rotation = run["disentanglement"]["matrix"][0]
        pot = sum(s for kind, s in zip(kinds, rotation, strict=True) if kind == "pot")
        on_potential[res["steps"], seed] = pot > 0.99
        shares = " ".join(f"{kind} {i} {share:.2f}"
                          for i, (kind, share) in enumerate(zip(kinds, rotation,
                                                                strict=True)))
        print(f"{res['steps']:,} steps, seed {seed}: {shares}")
for res, key in ((results, "short"), (results_full, "full")):
    glue(f"on_pot_{key}", sum(v for (steps, _), v in on_potential.items()
                              if steps == res["steps"]), display=False)

# %% [markdown]
# (sec-verdict-tables)=
# ## Every verdict
#
# Differences of means, STA minus each other model, in standard errors of the difference; findings (beyond two
# standard errors) in bold.

# %%
METRICS = {"ratio_rotate": "rotate ratio (lower is better)",
           "ratio_scale": "scale ratio (lower)", "ratio_hue": "hue ratio (lower)",
           "score": "dominance score (higher)",
           "matched_share": "matched share (higher)",
           "frame_nats_k100": "frame IWAE (higher)",
           "sequence_nats_k1": "sequence ELBO (higher)",
           "sequence_nats_k100": "sequence IWAE (higher)"}
OTHERS = [v for v in results["variants"] if v != "sta"]
FLOW = [v for v in results["variants"] if v != "vae"]
for res in (results, results_full):
    display(Markdown(f"**{res['steps']:,} steps**\n\n" + report.verdict_table(
        res, OTHERS, METRICS, baselines.LABELS)))

# %%
RATIOS = ["ratio_rotate", "ratio_scale", "ratio_hue"]
LIKELIHOODS = ["frame_nats_k1", "frame_nats_k100", "sequence_nats_k1",
               "sequence_nats_k100"]


def findings(res, others, keys):
    # the comparisons of STA with others on keys that are findings, as (model, key, z)
    return [(o, k, verdict(res, "sta", o, k)["z"]) for o in others for k in keys
            if k in res["variants"][o]["summary"]
            and verdict(res, "sta", o, k)["finding"]]


def vae_ahead(res, key):
    # the flow models the VAE beats on key, each by a finding
    better = (lambda a, b: a > b) if "nats" in key else (lambda a, b: a < b)
    return [v for v in FLOW if verdict(res, "vae", v, key)["finding"]
            and better(stat(res, "vae", key)["mean"], stat(res, v, key)["mean"])]


def glue_sparsity(res, prefix, share, score):
    # STA's and dense speeds' matched share and dominance score, and the two verdicts
    for key in ("matched_share", "score"):
        for variant in ("sta", "dense"):
            glue(f"{prefix}_{variant}_{key}", pm(res, variant, key), display=False)
    glue(f"{prefix}_share_z", round(share["z"], 1), display=False)
    glue(f"{prefix}_score_z", round(score["z"], 1), display=False)


def z_from_one(res, variant, key):
    # how many standard errors a mean ratio lies below 1 (its own standard error)
    s = stat(res, variant, key)
    return (1 - s["mean"]) / (s["std"] / math.sqrt(s["n"]))


r = results
flow_ratios = {(v, k): stat(r, v, k)["mean"] for v in FLOW for k in RATIOS}
below_one = {(v, k): z_from_one(r, v, k) for v in FLOW for k in RATIOS}
weak = [(v, k) for (v, k), z in below_one.items() if z <= 2]
ablation_findings = findings(r, ["dense", "potential_only", "rotational_only"], RATIOS)
vae_wins = {k: vae_ahead(r, k) for k in RATIOS + LIKELIHOODS}
gaps = {k: [stat(r, "vae", k)["mean"] - stat(r, v, k)["mean"] for v in FLOW]
        for k in LIKELIHOODS}
frame_gaps = gaps["frame_nats_k1"] + gaps["frame_nats_k100"]
sequence_gaps = gaps["sequence_nats_k1"] + gaps["sequence_nats_k100"]
gap_z = min(abs(verdict(r, "vae", v, k)["z"]) for v in FLOW for k in LIKELIHOODS)
shares_flow = [stat(r, v, "matched_share")["mean"] for v in FLOW]
v_share = verdict(r, "sta", "dense", "matched_share")
v_score = verdict(r, "sta", "dense", "score")
kinds_short = findings(r, ["potential_only", "rotational_only"], list(METRICS))
(o_found, k_found, z_found), = ablation_findings
glue("short_steps", f"{r['steps']:,}", display=False)
glue("flow_low", round(min(flow_ratios.values()), 2), display=False)
glue("flow_high", round(max(flow_ratios.values()), 2), display=False)
glue("weak", " and ".join(f"{baselines.LABELS[v]} ({pm(r, v, k)}, "
                          f"{below_one[v, k]:.1f} SE)" for v, k in weak), display=False)
glue("abl_model", baselines.LABELS[o_found], display=False)
glue("abl_other", pm(r, o_found, k_found), display=False)
glue("abl_sta", pm(r, "sta", k_found), display=False)
glue("abl_z", round(abs(z_found), 1), display=False)
glue("frame_gap_low", round(min(frame_gaps)), display=False)
glue("frame_gap_high", round(max(frame_gaps)), display=False)
glue("sequence_gap_low", round(min(sequence_gaps)), display=False)
glue("sequence_gap_high", round(max(sequence_gaps)), display=False)
glue("gap_z", round(gap_z, 1), display=False)
glue("share_low", round(min(shares_flow), 2), display=False)
glue("share_high", round(max(shares_flow), 2), display=False)
glue_sparsity(r, "short", v_share, v_score)
glue("kinds_short", len(kinds_short), display=False)
dense_model = r["variants"]["dense"]["config"]["model"]
glue("dense_sigma", f"{dense_model['dense_sigma']:g}", display=False)

# %% [markdown]
# (sec-ablation-reading)=
# ## Reading the study
#
# **At {glue:text}`short_steps` steps STA does not win**, in four ways.
#
# * **Equivariance.** Every flow model's mean error over decoded $z_0$ is below 1 on every transformation
#   (mean ratios {glue:text}`flow_low:.2f` to {glue:text}`flow_high:.2f`), each by more than two standard
#   errors except on rotation for {glue:text}`weak`: these two are not findings. Between STA and its ablations there is little: one of the nine differences in the
#   three ratios is a finding ({glue:text}`abl_model` on the scale ratio, {glue:text}`abl_other` against STA's
#   {glue:text}`abl_sta`, {glue:text}`abl_z:.1f` SE). The VAE beats every flow model on scale and hue, each a
#   finding, and on rotation it is within two standard errors of every flow model. It has two advantages by
#   construction: it is told which transformation acts, and its prediction at step $t$ is the projection of the
#   encoding of $x_t$ itself onto a line through $z_0$, so its errors do not accumulate along the sequence.
# * **Likelihood.** The VAE's bounds are higher than every flow model's, by {glue:text}`frame_gap_low` to
#   {glue:text}`frame_gap_high` nats per digit and by {glue:text}`sequence_gap_low` to
#   {glue:text}`sequence_gap_high` nats per sequence (IWAE and ELBO), every gap a finding
#   ({glue:text}`gap_z:.1f` SE or more). A VAE has one task, this bound; STA's decoder must also draw every
#   latent the flow reaches. On sequences STA predicts the frames after $x_0$ from $z_0$ and the speeds where
#   the VAE encodes each frame afresh, so a sequence model wins this comparison only once its predictions cost
#   fewer nats than a fresh encoding.
# * **Disentanglement.** No variant has disentangled the transformations: the matched shares lie between
#   {glue:text}`share_low:.2f` and {glue:text}`share_high:.2f`. STA's matched share is
#   {glue:text}`short_sta_matched_share` against {glue:text}`short_dense_matched_share` with dense speeds
#   ({glue:text}`short_share_z:.1f` SE), its dominance score {glue:text}`short_sta_score` against
#   {glue:text}`short_dense_score` ({glue:text}`short_score_z:.1f` SE): the direction sparsity should push,
#   but not a finding. Dense speeds change more than sparsity: their speed is a signed Gaussian with the prior
#   $\mathcal N(0, $ {glue:text}`dense_sigma`$)$, where STA's is a spike times a positive LogNormal slab. A
#   difference between the two is the effect of that bundle, not of sparsity alone.
# * **Kinds of field.** Six fields of either kind alone do as well as STA's three of each: the number of
#   findings among their 16 differences from STA is {glue:text}`kinds_short`. Nothing requires a rotation of
#   the image to be a rotational field in latent space: {glue:text}`on_pot_short` of the three STA runs at this
#   budget and {glue:text}`on_pot_full` of the three at the full budget carry rotation on potential fields
#   alone (the lines printed above).

# %%
f = results_full
rot = {v: verdict(f, v, "vae", "ratio_rotate") for v in FLOW}
scale_vae = vae_ahead(f, "ratio_scale")
hue_findings = [v for v in FLOW if verdict(f, "vae", v, "ratio_hue")["finding"]]
hue_means = [stat(f, v, "ratio_hue")["mean"] for v in f["variants"]]
sp_score = verdict(f, "sta", "dense", "score")
sp_share = verdict(f, "sta", "dense", "matched_share")
worst = {"ratio_rotate": max(FLOW, key=lambda v: stat(f, v, "ratio_rotate")["mean"]),
         "sequence_nats_k100": min(
             FLOW, key=lambda v: stat(f, v, "sequence_nats_k100")["mean"])}
worst_vs_sta = {k: verdict(f, "sta", worst[k], k) for k in worst}
kinds_full = findings(f, ["potential_only", "rotational_only"], list(METRICS))
seq = {v: verdict(f, v, "vae", "sequence_nats_k100") for v in FLOW}
seq_elbo = {v: verdict(f, v, "vae", "sequence_nats_k1") for v in FLOW}
gain = {v: stat(f, v, "sequence_nats_k100")["mean"]
        - stat(f, v, "sequence_nats_k1")["mean"] for v in ("sta", "vae")}
frame_gap = verdict(f, "vae", "sta", "frame_nats_k100")
n_kinds = sum(k in res["variants"][o]["summary"] for res in (results, results_full)
              for o in ("potential_only", "rotational_only") for k in METRICS)
kind_expected, kind_chance = report.by_chance(len(kinds_short) + len(kinds_full),
                                              n_kinds)
glue("full_steps", f"{f['steps']:,}", display=False)
for v in FLOW + ["vae"]:
    glue(f"full_{v}_rotate", pm(f, v, "ratio_rotate"), display=False)
    if v in rot:
        glue(f"full_{v}_rotate_z", round(abs(rot[v]["z"]), 1), display=False)
glue("full_vae_scale", pm(f, "vae", "ratio_scale"), display=False)
glue("hue_low", round(min(hue_means), 2), display=False)
glue("hue_high", round(max(hue_means), 2), display=False)
glue_sparsity(f, "full", sp_share, sp_score)
glue("worst_rotate_z", round(abs(worst_vs_sta["ratio_rotate"]["z"]), 1), display=False)
glue("worst_seq_z", round(abs(worst_vs_sta["sequence_nats_k100"]["z"]), 1),
     display=False)
glue("kinds_full", len(kinds_full), display=False)
glue("kinds_n", n_kinds, display=False)
glue("kinds_expected", round(kind_expected, 1), display=False)
for v in ("sta", "vae"):
    glue(f"full_{v}_seq", pm(f, v, "sequence_nats_k100", 0), display=False)
    glue(f"full_{v}_elbo", pm(f, v, "sequence_nats_k1", 0), display=False)
    glue(f"gain_{v}", round(gain[v]), display=False)
glue("seq_z", round(seq["sta"]["z"], 1), display=False)
glue("elbo_z", round(seq_elbo["sta"]["z"], 1), display=False)
glue("dense_elbo_z", round(abs(seq_elbo["dense"]["z"]), 1), display=False)
glue("full_frame_gap", round(frame_gap["difference"], 1), display=False)
glue("full_frame_gap_z", round(frame_gap["z"], 1), display=False)

# %% [markdown]
# **At the preset's own {glue:text}`full_steps` steps the picture changes.**
#
# * **Rotation.** Every flow model now beats the VAE on rotation, each a finding: STA
#   {glue:text}`full_sta_rotate` ({glue:text}`full_sta_rotate_z:.1f` SE), dense speeds
#   {glue:text}`full_dense_rotate` ({glue:text}`full_dense_rotate_z:.1f` SE), potential only
#   {glue:text}`full_potential_only_rotate` ({glue:text}`full_potential_only_rotate_z:.1f` SE) and rotational
#   only {glue:text}`full_rotational_only_rotate` ({glue:text}`full_rotational_only_rotate_z:.1f` SE), against
#   the VAE's {glue:text}`full_vae_rotate`. On scaling the VAE ({glue:text}`full_vae_scale`) is still ahead of
#   every flow model, each by a finding; on hue all models lie between {glue:text}`hue_low:.2f` and
#   {glue:text}`hue_high:.2f`, with no finding.
# * **Sparsity.** Dense speeds separate from STA on disentanglement: dominance score
#   {glue:text}`full_dense_score` and matched share {glue:text}`full_dense_matched_share` against STA's
#   {glue:text}`full_sta_score` and {glue:text}`full_sta_matched_share` ({glue:text}`full_score_z:.1f` and
#   {glue:text}`full_share_z:.1f` SE, both findings), with the caveat above on what dense speeds change. They
#   also have the worst mean of the flow models on rotation and on the sequence likelihood, but neither
#   difference from STA is a finding ({glue:text}`worst_rotate_z:.1f` and {glue:text}`worst_seq_z:.1f` SE).
# * **Kinds of field.** The number of findings between STA and six fields of one kind is
#   {glue:text}`kinds_full` of 16 at this budget, and {glue:text}`kinds_expected:.1f` would be expected by
#   chance alone over the {glue:text}`kinds_n` comparisons at both budgets: these metrics find no effect of the
#   Helmholtz mix on this data. What the kind of field changes is how the flow moves probability mass
#   (chapters 2 and 3), which enters the flow KL, not these metrics.
# * **Likelihood.** On sequences the flow models and the VAE are now close: STA's IWAE bound is
#   {glue:text}`full_sta_seq` nats against the VAE's {glue:text}`full_vae_seq` ({glue:text}`seq_z:+.1f` SE),
#   its ELBO {glue:text}`full_sta_elbo` against {glue:text}`full_vae_elbo` ({glue:text}`elbo_z:+.1f` SE), and
#   of the other flow models only the ELBO of dense speeds lies below the VAE's by a finding
#   ({glue:text}`dense_elbo_z:.1f` SE). Importance sampling gains more for STA ({glue:text}`gain_sta` nats from
#   ELBO to IWAE, against {glue:text}`gain_vae` for the VAE): its posterior over spikes and slabs is looser. On
#   single frames the VAE stays ahead, by {glue:text}`full_frame_gap:.1f` nats
#   ({glue:text}`full_frame_gap_z:.1f` SE).
#
# So the ranking at the short budget says as much about training time as about the models. These are small
# models trained for minutes on a CPU; whether the verdicts carry over to the book preset or to the released
# code's scale (the `mnist` preset and `python -m stabook compare --preset mnist --device cuda`, on a GPU) is
# not tested here. What to look for there: whether the fields end up disentangled, and whether the flow's
# predictions cost fewer nats than a fresh encoding, since only then can the sequence likelihood favour the
# flow over a plain VAE by a finding.

# %% [markdown]
# (sec-validation-log)=
# ## The validation log of the book preset
#
# The `book` preset was chosen by a handful of trials, each scored on the validation digits
# (`python -m stabook eval --split val`), never on the test digits, which were read once per final run.
# Training is unsupervised, but the choice was not: the scores need labels (which transformation acts, which
# digit is drawn). Every trial is logged in `results/book-preset-validation.json`, including those that did not
# help. Each triple is rotate / scale / hue; the last column is the KL of the first latent over the last 1,000
# training steps.

# %%
trials = json.loads(Path("results/book-preset-validation.json").read_text())["trials"]
display(Markdown(report.validation_table(trials, names)))
by_run = {t["run"]: t for t in trials}
glue("kl_beta1", round(by_run["book-seed0-beta1"]["train_kl_z0"], 1), display=False)
glue("rec_beta1", round(sum(by_run["book-seed0-beta1"]["equivariance"][n]
                            ["recognition_ratio"] for n in names) / len(names), 2),
     display=False)

# %% [markdown]
# The first trials widened the networks and trained longer: more steps helped, with diminishing returns; a
# larger latent and a cosine learning rate did not lower the error or raise recognition. The run made with them, `book-seed0-beta1` (an earlier
# preset with the flow KLs weighted 1, 24,000 steps), learned one field per transformation but lost the digit:
# its first latent carried about {glue:text}`kl_beta1:.0f` nats, and the classifier read the digit in its
# predictions only {glue:text}`rec_beta1:.2f` times as often as in the truth. Chapter 6 says why and how the
# weight 0.1 was chosen. The first seed-1 trial at that weight was continued to the preset's 14,000 steps as
# the final seed-1 run (its `history.jsonl` records the change of the step budget), and read the test digits
# once, at its end.

# %% [markdown]
# ## The claims of this page, checked

# %%
# short budget: every flow ratio below 1, all but two by more than 2 SE; one ablation
# finding in the ratios; the VAE wins scale and hue against every flow model and no
# flow model on rotation; every likelihood gap the VAE's, each a finding; sparsity's
# edge in the right direction but not a finding; no finding between the kinds of field
assert max(flow_ratios.values()) < 1 and len(weak) == 2
assert all(k == "ratio_rotate" for _, k in weak)
assert len(ablation_findings) == 1 and ablation_findings[0][1] == "ratio_scale"
assert all(len(vae_wins[k]) == len(FLOW) for k in ("ratio_scale", "ratio_hue"))
assert not vae_wins["ratio_rotate"]
assert all(len(vae_wins[k]) == len(FLOW) for k in LIKELIHOODS) and gap_z > 2
assert v_share["difference"] > 0 and v_score["difference"] > 0
assert not v_share["finding"] and not v_score["finding"] and not kinds_short
# full budget: every flow model wins rotation, the VAE scale; no finding on hue;
# sparsity separates; dense speeds' worst means are not findings; the sequence bounds
# are close, and only dense speeds' ELBO differs from the VAE's
assert all(v["finding"] and v["difference"] < 0 for v in rot.values())
assert len(scale_vae) == len(FLOW) and not hue_findings
assert sp_score["finding"] and sp_share["finding"] and sp_share["difference"] > 0
assert all(worst[k] == "dense" and not worst_vs_sta[k]["finding"] for k in worst)
assert [v for v in FLOW if seq[v]["finding"]] == []
assert [v for v in FLOW if seq_elbo[v]["finding"]] == ["dense"]
assert seq_elbo["dense"]["difference"] < 0 and gain["sta"] > gain["vae"]
assert frame_gap["finding"] and frame_gap["difference"] > 0
# the kinds of field: as many findings as chance alone gives at two SE
assert kind_chance and n_kinds == 2 * 2 * len(METRICS)
assert on_potential and any(on_potential.values())
# the settings the text names: the tiny preset at 2,000 and 5,000 steps, 128 units wide;
# the earlier book preset's 24,000 steps and the final preset's 14,000
tiny = train.preset("tiny")
assert (results["steps"], results_full["steps"]) == (2000, 5000) == (2000, tiny.steps)
assert results["variants"]["sta"]["config"]["model"]["net_hidden"] == 128
assert by_run["book-seed0-beta1"]["steps"] == 24000
assert train.preset("book").steps == 14000
# the validation log: validation digits only; the earlier preset lost the digit
assert all(t["split"] == "val" for t in trials)
assert by_run["book-seed0-beta1"]["train_kl_z0"] < 10
assert train.preset("book").model.beta_flow == 0.1
print("all checks passed")
