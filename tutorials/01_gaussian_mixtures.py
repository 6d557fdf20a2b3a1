# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---
# ruff: noqa: E402

# %% [markdown]
# # Gaussian mixtures three ways: EM, SVI and NUTS from one Pyro program
#
# A Gaussian mixture is the "hello world" of latent-variable generative models: every data
# point comes from one of $K$ Gaussian components, and we do not observe which. In `probgen`
# the model is written **once**, as a Pyro program, and the same program is then fitted by
#
# * **EM**: closed-form expectation-maximisation, the maximum-likelihood classic;
# * **MAP** and **SVI**: gradient-based optimisation of an evidence lower bound, with a point-mass
#   guide (MAP) or a Gaussian guide (a variational posterior);
# * **NUTS**: Hamiltonian Monte Carlo, i.e. (asymptotically) exact posterior samples.
#
# We fit all of them to the Old Faithful geyser data, compare them on held-out data, and hand
# the Bayesian fits to [ArviZ](https://python.arviz.org) for diagnostics and model comparison.
#
# Run it as a script (`python tutorials/01_gaussian_mixtures.py`) or open it as a notebook with
# jupytext. With `PROBGEN_SMOKE=1` every budget shrinks so that the whole tutorial runs in
# well under a minute (the numbers are then not worth reading; that mode exists for tests).

# %%
import inspect
import os
import sys
import warnings
from pathlib import Path

import matplotlib

SMOKE = os.environ.get("PROBGEN_SMOKE") == "1"
IN_NOTEBOOK = "ipykernel" in sys.modules
HAS_DISPLAY = sys.platform in ("darwin", "win32") or bool(
    os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
)
if SMOKE or not (IN_NOTEBOOK or HAS_DISPLAY):
    matplotlib.use("Agg")

import arviz as az
import matplotlib.pyplot as plt
import torch
from pyro import poutine

import probgen
from models.gmm import GaussianMixture
from probgen.infer.mcmc import convergence_diagnostics

SEED = 0
FEATURES = ["eruptions", "waiting"]  # Old Faithful's two columns, both in minutes

# Budgets. The full run takes a few minutes on two CPU cores; the smoke run well under one.
if SMOKE:
    EM_N_INIT = 1
    MAP_STEPS, SVI_STEPS, SVI_DRAWS, KHAT_DRAWS = 100, 100, 100, 100
    NUTS_MAIN = {"warmup_steps": 30, "num_samples": 30, "num_chains": 2, "max_tree_depth": 5}
    NUTS_EXTRA = {"warmup_steps": 30, "num_samples": 30, "num_chains": 2, "max_tree_depth": 5}
else:
    EM_N_INIT = 5
    MAP_STEPS, SVI_STEPS, SVI_DRAWS, KHAT_DRAWS = 500, 1500, 1000, 500
    NUTS_MAIN = {"warmup_steps": 150, "num_samples": 150, "num_chains": 4}
    NUTS_EXTRA = {"warmup_steps": 100, "num_samples": 100, "num_chains": 2, "max_tree_depth": 6}

# The tensors in this tutorial are tiny (a few hundred rows): intra-op threads only add
# synchronisation, which on a busy machine can cost more than the arithmetic itself.
torch.set_num_threads(1)
torch.set_printoptions(precision=3, sci_mode=False)

FIGURE_DIR = Path(os.environ.get("PROBGEN_FIGURE_DIR", "tutorial_figures"))


def show(fig, name):
    """Shows a figure (inline in a notebook, as a PNG file from a script), then closes it."""
    if IN_NOTEBOOK:
        from IPython.display import display

        display(fig)
    else:
        FIGURE_DIR.mkdir(parents=True, exist_ok=True)
        path = FIGURE_DIR / f"01_{name}.png"
        fig.savefig(path, dpi=60 if SMOKE else 100)
        print(f"[figure saved to {path}]")
    plt.close(fig)


# %% [markdown]
# ## 1. The model, as maths and as a Pyro program
#
# For $K$ components in $D$ dimensions (here $D = 2$) the generative story is
#
# $$
# \begin{aligned}
# \pi &\sim \mathrm{Dirichlet}(\alpha \mathbf{1}_K) && \text{mixture weights} \\
# \mu_k &\sim \mathcal{N}\big(m_0, \operatorname{diag}(2 s_0)^2\big) && k = 1..K
#   \text{ (component means)} \\
# \sigma_{kd} &\sim \mathrm{LogNormal}\big(\log(s_{0d}/4), 1\big)
#   && \text{(component standard deviations)} \\
# L_k &\sim \mathrm{LKJCholesky}(D, \eta)
#   && \text{(Cholesky factor of a correlation matrix)} \\
# \Sigma_k &= \operatorname{diag}(\sigma_k)\, L_k L_k^\top \operatorname{diag}(\sigma_k) \\
# z_n &\sim \mathrm{Categorical}(\pi) && n = 1..N \text{ (which component)} \\
# x_n \mid z_n &\sim \mathcal{N}(\mu_{z_n}, \Sigma_{z_n})
# \end{aligned}
# $$
#
# where $m_0$ and $s_0$ are the mean and standard deviation of the training data (set once by
# `GaussianMixture.setup`), so the priors are weak on the data's own scale; $\alpha = \eta = 1$
# by default. The Pyro program below is this list line by line. Its sample sites are
# `weights` ($\pi$), `locs` ($\mu$), `scales` ($\sigma$), `corr_chol` ($L$), `assignment`
# ($z$) and `obs` ($x$, observed); the `components` plate indexes $k$ and the `data` plate
# indexes $n$.

# %%
print(inspect.getsource(GaussianMixture.model))

# %% [markdown]
# ### Why the assignment is enumerated
#
# The `assignment` site carries `infer={"enumerate": "parallel"}`. Instead of *sampling* $z_n$,
# Pyro evaluates the model at **all** $K$ values of $z_n$ at once, in a new tensor dimension to
# the left of the data plate, and the inference engines then sum that dimension out:
#
# $$ p(x_n \mid \theta) = \sum_{k=1}^K \pi_k\, \mathcal{N}(x_n \mid \mu_k, \Sigma_k). $$
#
# This is exact, costs $K$ density evaluations per point, and removes the only discrete latent
# variable from the problem, which matters for every method: EM's E-step computes exactly
# these $K$ terms; gradient-based SVI cannot reparameterise a discrete sample (a
# score-function estimator would be far noisier); and NUTS can only move continuous variables.
#
# We can watch it happen by tracing the program under `poutine.enum` with parameters drawn from
# the prior (`demo` is an unfitted model):

# %%
x = probgen.data.faithful()
perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED))
n_test = round(0.2 * len(x))
x_test, x_train = x[perm[:n_test]], x[perm[n_test:]]

demo = GaussianMixture(n_components=2)
demo.setup(x_train)
with torch.no_grad():
    trace = poutine.trace(poutine.enum(demo.model, first_available_dim=-2)).get_trace(x_train)
z_site, obs_site = trace.nodes["assignment"], trace.nodes["obs"]
log_prior_z = z_site["fn"].log_prob(z_site["value"])  # log pi_k, one row per value of z
log_obs = obs_site["fn"].log_prob(obs_site["value"])  # log N(x_n | mu_k, Sigma_k)
print(
    "enumerated values of z:",
    z_site["value"].flatten().tolist(),
    "with shape",
    tuple(z_site["value"].shape),
)
print("log p(x_n | z_n = k, theta) has shape", tuple(log_obs.shape), "= [K, N]")
theta = {name: trace.nodes[name]["value"] for name in ("weights", "locs", "scales", "corr_chol")}
summed_out = (log_prior_z + log_obs).logsumexp(0)
closed_form = demo.log_likelihood(x_train, theta)
print(
    f"max |logsumexp over k - closed-form log p(x_n | theta)| = "
    f"{(summed_out - closed_form).abs().max().item():.2e}"
)

# %% [markdown]
# ## 2. Data: Old Faithful
#
# 272 eruptions of the Old Faithful geyser: eruption duration and waiting time to the next
# eruption, both in minutes. We hold out a random 20% as a test set and fit on the rest.

# %%
print(
    f"{len(x)} eruptions x {x.shape[1]} columns ({', '.join(FEATURES)}); "
    f"train {len(x_train)}, test {len(x_test)}"
)
fig, ax = plt.subplots(figsize=(4.5, 3.5), layout="constrained")
ax.scatter(x_train[:, 0], x_train[:, 1], s=10, label="train")
ax.scatter(x_test[:, 0], x_test[:, 1], s=10, marker="x", label="test")
ax.set(xlabel="eruption duration [min]", ylabel="waiting time [min]", title="Old Faithful")
ax.legend()
show(fig, "data")

# %% [markdown]
# ## 3. EM, and choosing K with BIC
#
# `probgen.fit(model, data, method="em")` runs closed-form EM
# (Dempster, Laird & Rubin 1977) through the family's E and M steps:
#
# * **initialisation**: k-means++ seeding followed by Lloyd's k-means iterations, then one M
#   step (the same start is used by MAP, SVI and NUTS below);
# * **`n_init`**: independent restarts from different seeds; the one with the highest final
#   log-likelihood is kept;
# * **`tol`**: stop when the mean log-likelihood *per point* changes by less than `tol`
#   (default `1e-3`), or after `max_iter` iterations (default 100) with a `ConvergenceWarning`.
#
# EM maximises the likelihood, so more components always fit the *training* data at least as
# well. The Bayesian information criterion $\mathrm{BIC} = -2 \log L + p \log N$ (lower is
# better) penalises the $p$ free parameters; we fit $K = 1..4$ and take the $K$ with the lowest
# BIC. The held-out log-likelihood per point is printed alongside as an independent check.

# %%
em_fits = {}
print(" K  iters  train LL/pt  test LL/pt  params      BIC")
for k in range(1, 5):
    em_k = probgen.fit(
        GaussianMixture(n_components=k),
        x_train,
        method="em",
        n_init=EM_N_INIT,
        tol=1e-3,
        seed=SEED,
    )
    em_fits[k] = em_k
    gmm_k = em_k.model
    print(
        f"{k:2d}  {em_k.n_iter:5d}  {em_k.log_likelihood(x_train).mean().item():11.4f}  "
        f"{em_k.log_likelihood(x_test).mean().item():10.4f}  {gmm_k.n_parameters():6d}  "
        f"{gmm_k.bic(x_train):7.1f}"
    )
bic = {k: f.model.bic(x_train) for k, f in em_fits.items()}
K = min(bic, key=bic.get)
print(f"lowest BIC at K = {K}")

# %% [markdown]
# The selected EM fit. `weights_`, `means_` and `covariances_` follow scikit-learn's names and
# shapes; components are in a canonical order (ascending mean of the first column, eruption
# duration; see section 5).

# %%
em = em_fits[K]
gmm = em.model
print(em.summary())
print(
    "final log-likelihood per point of each restart:",
    [round(v, 4) for v in em.diagnostics["restart_log_likelihoods"]],
)
print("weights_     ", gmm.weights_)
print("means_       ", gmm.means_)
print("covariances_ ", gmm.covariances_)
sizes = torch.bincount(gmm.predict(x_train), minlength=K)
print("training points per component (most probable assignment):", sizes.tolist())

# %%
fig, ax = plt.subplots(figsize=(4.5, 3.5), layout="constrained")
ax.scatter(x_train[:, 0], x_train[:, 1], s=10, c=gmm.predict(x_train), cmap="coolwarm")
ax.scatter(gmm.means_[:, 0], gmm.means_[:, 1], s=120, marker="*", c="black", label="means_")
ax.set(
    xlabel="eruption duration [min]",
    ylabel="waiting time [min]",
    title=f"EM, K = {K}: most probable component",
)
ax.legend()
show(fig, "em_assignments")

# %% [markdown]
# ## 4. The same program, four ways: `probgen.compare`
#
# `probgen.compare(model, data, methods, test_data, options=...)` fits a fresh copy of the
# model by each method (that is, `probgen.fit(copy, data, method=m, seed=seed, **options[m])`)
# and tabulates the results. The options we pass:
#
# * **EM**: as above.
# * **MAP** (`method="map"`): SVI with an `AutoDelta` guide, a point mass at $\hat\theta$.
#   The objective is then $-[\log p(\hat\theta) + \sum_n \log p(x_n \mid \hat\theta)] / N$,
#   the negative log *joint* per point: maximum likelihood plus the (weak) prior.
# * **SVI** (`method="svi"`): an `AutoNormal` guide $q_\phi(\theta)$, an independent Normal
#   for every unconstrained coordinate of `weights`, `locs`, `scales` and `corr_chol`
#   (constrained values are reached through bijections such as `exp` for the scales).
#   SVI maximises the evidence lower bound
#   $\mathrm{ELBO}(\phi) = \mathbb{E}_{q_\phi}[\log p(x, \theta) - \log q_\phi(\theta)]
#   \le \log p(x)$ by Adam on single-sample Monte Carlo estimates; the assignment is summed out
#   inside $\log p(x, \theta)$ by `TraceEnum_ELBO`. The loss reported is **−ELBO per point**,
#   in expectation an upper bound on $-\log p(x) / N$, the negative log evidence per point.
# * **NUTS** (`method="nuts"`): several independent chains, each from its own k-means++ start
#   and with its own warm-up (step-size and diagonal mass-matrix adaptation), run one after
#   another.

# %%
OPTIONS = {
    "em": {"n_init": EM_N_INIT},
    "map": {"steps": MAP_STEPS, "lr": 0.05},
    "svi": {"guide": "normal", "steps": SVI_STEPS, "lr": 0.05, "num_draws": SVI_DRAWS},
    "nuts": NUTS_MAIN,
}
comparison = probgen.compare(
    GaussianMixture(n_components=K),
    x_train,
    methods=("em", "map", "svi", "nuts"),
    test_data=x_test,
    options=OPTIONS,
    seed=SEED,
    khat_draws=KHAT_DRAWS,
)
print(comparison)

# %% [markdown]
# Reading the table:
#
# * **objective / final**: what each method minimised, and its final value. They are *different
#   quantities* (−log-likelihood, −log joint, −ELBO, and the mean −log joint over the NUTS
#   draws), so they are not comparable across rows.
# * **train / test LL/pt**: the quantity that *is* comparable: the mean log predictive density
#   per point, $\log p(x_n \mid \hat\theta)$ for point fits (EM, MAP) and the posterior
#   predictive $\log \frac1S \sum_s p(x_n \mid \theta_s)$ for SVI and NUTS.
# * **R-hat, ESS** (NUTS): the worst split-$\hat R$ and the smallest effective sample size
#   over every scalar parameter (section 5).
# * **k-hat** (SVI): the Pareto-smoothed importance-sampling diagnostic of the guide
#   (Yao et al. 2018): with draws $\theta_s \sim q$, the tail of the ratios
#   $p(x, \theta_s) / q(\theta_s)$ is fitted by a generalised Pareto distribution; its shape
#   $\hat k < 0.5$ means the guide is a good importance proposal for the posterior,
#   $\hat k > 0.7$ that it is not.
#
# Every method gets the same seed, so fitting one of them alone should reproduce its row.
# Here is MAP by itself, through the single-method entry point; compare the two numbers:

# %%
map_fit = probgen.fit(
    GaussianMixture(n_components=K), x_train, method="map", seed=SEED, **OPTIONS["map"]
)
print(map_fit.summary())
print(
    f"compare's MAP final objective: {comparison.fits['map'].final_objective:.6f}; "
    f"the standalone run: {map_fit.final_objective:.6f}"
)

# %% [markdown]
# ### MAP and SVI up close
#
# A MAP fit is a point; an SVI fit is a distribution. `Fit.params` holds a point estimate for
# every method (for SVI, the guide's median) and, for SVI and NUTS, `Fit.draws` holds posterior
# draws shaped `[chain, draw, ...]`. With a weak prior and a couple of hundred points, MAP
# should land close to EM's maximum-likelihood estimate (we measure how close); the SVI guide
# adds an uncertainty to each parameter.

# %%
svi = comparison.fits["svi"]
guide = svi.guide
n_var = sum(p.numel() for p in guide.parameters())
print(
    f"AutoNormal guide: {n_var} variational parameters (a loc and a scale per unconstrained "
    f"coordinate of theta)"
)
em_means = comparison.fits["em"].params["locs"]
for name in ("map", "svi"):
    diff = (comparison.fits[name].params["locs"] - em_means).abs().max().item()
    print(f"max |means({name}) - means(em)| = {diff:.4f} min")
svi_locs = svi.draws["locs"].flatten(0, 1)  # [S, K, D]
print("SVI posterior mean of locs:\n", svi_locs.mean(0))
print("SVI posterior sd of locs:\n", svi_locs.std(0))

# %% [markdown]
# ## 5. NUTS up close: R-hat, ESS and label switching
#
# NUTS gives draws from $p(\theta \mid x) \propto p(\theta) \prod_n \sum_k \pi_k
# \mathcal{N}(x_n \mid \mu_k, \Sigma_k)$. Two standard checks (Vehtari et al. 2021):
#
# * **split-$\hat R$** compares the variance between (halves of) chains with the variance
#   within them; values near 1 (below 1.01) mean the chains agree with each other;
# * **effective sample size** (ESS) is the number of independent draws the autocorrelated chain
#   is worth for estimating a posterior mean.
#
# `Fit.diagnostics` holds the worst $\hat R$ and the smallest ESS over all scalars (Pyro's
# split-$\hat R$ and ESS estimators; ArviZ's `az.summary` in section 7 reports the
# rank-normalised bulk and tail versions, so its numbers differ slightly), and the number of
# divergent transitions (a sign that the sampler could not follow the posterior's geometry).

# %%
nuts = comparison.fits["nuts"]
diag = nuts.diagnostics
print(nuts.summary())
print(
    f"{NUTS_MAIN['num_chains']} chains x {NUTS_MAIN['num_samples']} draws "
    f"(after {NUTS_MAIN['warmup_steps']} warm-up steps each)"
)
print(
    f"worst split R-hat {diag['r_hat']:.3f}, smallest ESS {diag['ess']:.0f}, "
    f"divergences {diag['divergences']}"
)

# %% [markdown]
# **Label switching.** The likelihood does not change if we permute the component labels, so
# the posterior has $K!$ identical modes. One chain may call the short eruptions "component 0"
# and another "component 1"; each chain is fine, but averaging or comparing them across chains
# mixes two different things. Let us check both facts on the fitted model: relabelling the
# point estimate leaves every log-likelihood unchanged, and relabelling the draws of one chain
# makes $\hat R$ explode.

# %%
COMPONENT_AXIS = {"weights": -1, "locs": -2, "scales": -2, "corr_chol": -3}  # full covariance


def relabel(values):
    """Reverses the order of the components (for K = 2: swaps the two labels)."""
    return {name: v.flip(COMPONENT_AXIS[name]) for name, v in values.items()}


point = dict(nuts.params)
ll_change = (
    (nuts.model.log_likelihood(x_train, relabel(point)) - nuts.model.log_likelihood(x_train, point))
    .abs()
    .max()
    .item()
)
print(f"max change of log p(x_n | theta) under relabelling: {ll_change:.2e}")

draws = dict(nuts.draws)
switched = {name: v.clone() for name, v in draws.items()}
for name, v in relabel({n: d[0] for n, d in draws.items()}).items():
    switched[name][0] = v  # chain 0 now uses the other labelling
print(f"R-hat, canonical labels:            {convergence_diagnostics(draws)['r_hat']:.3f}")
print(f"R-hat, chain 0 relabelled:          {convergence_diagnostics(switched)['r_hat']:.3f}")
restored = nuts.model.canonicalize(switched)
print(f"R-hat, after canonicalize() again:  {convergence_diagnostics(restored)['r_hat']:.3f}")

# %% [markdown]
# `GaussianMixture.canonicalize` fixes a labelling per draw: components sorted by ascending
# mean of the first column (eruption duration). `probgen.fit` applies it to every NUTS and SVI
# draw, and EM's estimates use the same order, so "component 0" means the same cluster (here:
# short eruptions) everywhere in this tutorial. Sorting is a simple identifiability constraint
# that works when the components are well separated along that coordinate (the gap printed
# below, in within-component standard deviations, should be large); with overlapping
# components a relabelling algorithm (e.g. Stephens 2000) is the more careful choice.

# %%
eruption_means = point["locs"][:, 0]
eruption_sds = point["scales"][:, 0]
gaps = eruption_means.diff() / eruption_sds.max()
print(
    "gaps between consecutive component means along eruption duration, in units of the "
    "largest within-component sd:",
    [round(g, 1) for g in gaps.tolist()],
)

# %% [markdown]
# ## 6. The figures: loss curves and fitted densities
#
# `Comparison.figures()` returns matplotlib figures: each method's objective per iteration
# (per draw of the first chain for NUTS; note the different y-axes and meanings) and each
# fit's (posterior predictive) density over the training data.

# %%
for name, fig in comparison.figures().items():
    show(fig, f"compare_{name}")

# %% [markdown]
# ## 7. ArviZ: summaries, trace plots, LOO and model comparison
#
# `probgen.to_arviz(fit, data)` converts any `Fit` to `arviz.InferenceData` with the groups
# `posterior`, `log_likelihood` (one $\log p(x_n \mid \theta_s)$ per point and draw, with the
# assignment summed out), `posterior_predictive` and `observed_data`. Naming the dimensions
# makes the summaries readable.


# %%
def arviz_names(k):
    coords = {"component": list(range(k)), "feature": FEATURES, "row": FEATURES, "col": FEATURES}
    dims = {
        "weights": ["component"],
        "locs": ["component", "feature"],
        "scales": ["component", "feature"],
        "corr_chol": ["component", "row", "col"],
    }
    return {"coords": coords, "dims": dims}


idata = probgen.to_arviz(nuts, x_train, **arviz_names(K))
print(idata)

# %% [markdown]
# `az.summary` gives posterior means, standard deviations, 94% highest-density intervals,
# Monte Carlo standard errors, ESS (bulk and tail) and $\hat R$ per scalar. The correlation of
# component $k$ is the entry `corr_chol[k, waiting, eruptions]` of the Cholesky factor (for a
# $2 \times 2$ correlation matrix, $L_{21} = \rho$); the other entries are fixed (0 and 1, or a
# function of $\rho$), so we select that one.

# %%
print(az.summary(idata, var_names=["weights", "locs", "scales"]).to_string())
corr_summary = az.summary(
    idata, var_names=["corr_chol"], coords={"row": ["waiting"], "col": ["eruptions"]}
)
print(corr_summary.to_string())

# %%
axes = az.plot_trace(idata, var_names=["weights", "locs"], compact=False)
trace_fig = axes.ravel()[0].figure
trace_fig.set_layout_engine("constrained")
show(trace_fig, "trace")

# %% [markdown]
# ### Leave-one-out cross-validation
#
# `az.loo` estimates the expected log predictive density of a *new* point,
# $\mathrm{elpd}_{\mathrm{loo}} = \sum_n \log p(x_n \mid x_{-n})$, from the posterior draws by
# Pareto-smoothed importance sampling (PSIS-LOO, Vehtari, Gelman & Gabry 2017), without
# refitting $N$ times. `p_loo` is the effective number of parameters.
#
# Each point gets its own Pareto $\hat k$. A large $\hat k$ (above
# $\min(1 - 1/\log_{10} S, 0.7)$ for $S$ draws, which ArviZ reports as `good_k`) means that
# removing that point changes the posterior too much for importance sampling to be reliable:
# the point is very influential (an outlier for the model), or there are too few draws. ArviZ
# then warns; we catch the warning and count the points instead. Remedies are more draws, or
# refitting without the flagged points (exact LOO for those), or K-fold cross-validation.

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loo = az.loo(idata, pointwise=True)
print(loo)
n_bad = int((loo.pareto_k > loo.good_k).sum())
print(
    f"{n_bad} of {loo.n_data_points} points have Pareto k > {loo.good_k:.2f}; "
    f"warnings caught: {len(caught)}"
)

# %% [markdown]
# ### Comparing K = 1, 2, 3 by LOO
#
# BIC chose $K$ from point estimates; LOO compares the *Bayesian* models by their predictive
# accuracy. The $K$ chosen by BIC reuses the NUTS fit above; the other values of $K$ are
# sampled with fewer draws, and with `max_tree_depth=6` (at most 63 leapfrog steps per draw,
# against 1023 by default) to bound the cost. `az.compare` then ranks them: `elpd_diff` is
# the difference to the best model and `dse` its standard error; a difference of several `dse`
# is a clear preference.
#
# One subtlety. $\hat R$ of the *parameters* depends on the labelling, and sorting by eruption
# duration is a poor labelling when two components overlap along it, which a superfluous
# component may well do. LOO only uses $\log p(x_n \mid \theta_s)$, which does not depend on
# the labels at all, so we also print the worst $\hat R$ of those pointwise log-likelihoods:
# that is the convergence check that matters for LOO.

# %%
nuts_by_k = {K: nuts}
for k in (1, 2, 3):
    if k not in nuts_by_k:
        nuts_by_k[k] = probgen.fit(
            GaussianMixture(n_components=k), x_train, method="nuts", seed=SEED, **NUTS_EXTRA
        )
loglik_rhat = {}
for k in (1, 2, 3):
    d = nuts_by_k[k].diagnostics
    pointwise = nuts_by_k[k].log_likelihood(x_train, pointwise_draws=True)  # [chain, draw, N]
    loglik_rhat[k] = convergence_diagnostics({"loglik": pointwise})["r_hat"]
    print(
        f"K={k}: worst R-hat of the parameters {d['r_hat']:.3f}, of log p(x_n | theta) "
        f"{loglik_rhat[k]:.3f}; smallest ESS {d['ess']:.0f}, divergences {d['divergences']}, "
        f"{nuts_by_k[k].wall_time:.0f} s"
    )
idatas = {
    f"K={k}": idata
    if k == K
    else probgen.to_arviz(nuts_by_k[k], x_train, posterior_predictive=False, **arviz_names(k))
    for k in (1, 2, 3)
}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loo_table = az.compare(idatas, ic="loo")
print(loo_table.to_string())
print(f"warnings caught (Pareto k): {len(caught)}")

# %% [markdown]
# ## 8. What to take away
#
# The numbers below are read off the results above (rerun the tutorial and they update).

# %%
rows = {row["method"]: row for row in comparison.rows}
best_loo = str(loo_table.index[0])
second_loo = str(loo_table.index[1])
khat = rows["svi"]["khat"]
khat_verdict = (
    "good (< 0.5)" if khat < 0.5 else "usable (0.5-0.7)" if khat < 0.7 else "unreliable (>= 0.7)"
)
w = gmm.weights_
mu = gmm.means_
print(
    f"* BIC picks K = {K} (BIC {bic[K]:.1f}; "
    + ", ".join(f"K = {k}: {bic[k]:.1f}" for k in bic if k != K)
    + ")."
)
print(
    f"* EM, K = {K}: weights {', '.join(f'{v:.2f}' for v in w.tolist())}; component means "
    + "; ".join(f"({m[0]:.2f} min, {m[1]:.1f} min)" for m in mu.tolist())
    + " (eruption duration, waiting time)."
)
test_lls = {m: r["test_ll"] for m, r in rows.items()}
print(
    "* Held-out log predictive density per point: "
    + ", ".join(f"{m} {v:.4f}" for m, v in test_lls.items())
    + f" (best minus worst: {max(test_lls.values()) - min(test_lls.values()):.4f} nats)."
)
print("* Wall time: " + ", ".join(f"{m} {rows[m]['wall_time']:.1f} s" for m in rows) + ".")
print(f"* SVI's guide: PSIS k-hat {khat:.2f}, {khat_verdict}.")
print(
    f"* NUTS ({NUTS_MAIN['num_chains']} chains): worst R-hat {diag['r_hat']:.3f}, smallest ESS "
    f"{diag['ess']:.0f}, {diag['divergences']} divergences; relabelling one chain would have "
    f"given R-hat {convergence_diagnostics(switched)['r_hat']:.2f}."
)
elpd_diff = float(loo_table.loc[second_loo, "elpd_diff"])
dse = float(loo_table.loc[second_loo, "dse"])
loo_verdict = (
    "more than two standard errors: a clear preference"
    if elpd_diff > 2 * dse
    else "within two standard errors: LOO cannot tell them apart"
)
print(
    f"* LOO ranks {best_loo} first; {second_loo} is behind by {elpd_diff:.1f} elpd "
    f"(dse {dse:.1f}), {loo_verdict}. {n_bad} training points had Pareto k above "
    f"{loo.good_k:.2f} for K = {K}."
)
unconverged = [k for k in (1, 2, 3) if nuts_by_k[k].diagnostics["r_hat"] >= 1.01]
if unconverged:
    print(
        "* Parameter R-hat is 1.01 or more for "
        + ", ".join(
            f"K = {k} ({nuts_by_k[k].diagnostics['r_hat']:.2f}; "
            f"R-hat of log p(x_n | theta): {loglik_rhat[k]:.2f})"
            for k in unconverged
        )
        + ": trust those LOO numbers only as far as the log-likelihood R-hat is near 1, and "
        "sample longer before drawing conclusions."
    )

# %% [markdown]
# In words: one Pyro program, with its discrete assignment summed out exactly, served four
# inference methods. Their own objectives measure different things; the held-out log
# predictive density is the column to compare them on. EM and MAP give a point; SVI gives a
# posterior restricted to the guide's family, and its k-hat says whether that restriction
# matters; NUTS is the reference posterior, to be trusted once R-hat, ESS and divergences say
# so. Model size can be chosen from point estimates (BIC) or from the Bayesian models'
# predictive accuracy (LOO), and whichever method you use, a mixture's draws need one fixed
# labelling before chains can be summarised together.
