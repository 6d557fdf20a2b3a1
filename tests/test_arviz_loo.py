"""``probgen.arviz.loo`` and ``compare_models``: PSIS-LOO for draws and for guides.

Accuracy is checked against the exact leave-one-out predictive of a conjugate Normal mean
(closed form, scipy), for exact posterior draws (the NUTS path) and for a fitted mean-field
guide (the importance-corrected path); a deliberately poor guide must show high Pareto k's
and a correction towards the exact value; model comparison of Gaussian mixtures on Old
Faithful must prefer two or three components to one.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import arviz as az
import matplotlib
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from matplotlib.figure import Figure

import probgen
from models.gmm import GaussianMixture
from probgen import GenerativeModel
from probgen.arviz import (
    ParetoKWarning,
    compare_models,
    loo,
    pareto_k_summary,
    plot_compare,
    plot_pareto_k,
    to_arviz,
)
from probgen.diagnostics.vi import KHAT_GOOD, KHAT_OK

matplotlib.use("Agg")

# ----------------------------------------------------------------------------- the conjugate model
# y_i ~ N(mu, SIGMA^2), mu ~ N(PRIOR_LOC, PRIOR_SCALE^2), SIGMA known.
PRIOR_LOC, PRIOR_SCALE, SIGMA = 0.0, 2.0, 1.0
N, TRUE_MEAN = 40, 0.7
LOO_DRAWS = 2000
EXACT_CHAINS, EXACT_DRAWS = 2, LOO_DRAWS // 2

# Tolerances. elpd_loo = lppd - p_loo, and p_loo (about 1 nat here: one parameter) is the
# posterior variance of the log-likelihood summed over points, estimated from S draws with the
# relative error of a sample variance, sqrt(2/S): Monte Carlo sd ~ sqrt(2/S) nats, 0.032 at
# S = 2000 (a 300-seed simulation of the estimator gave 0.033). Exact draws: 4 sd.
LOO_ATOL_EXACT = 4 * math.sqrt(2 / LOO_DRAWS)
# Guide draws are importance-weighted; the fitted guide (its k-hat is asserted < 0.5) keeps at
# least half the draws' efficiency, so S_eff >= S/2: 4 sd of sqrt(2 / (S/2)).
LOO_ATOL_GUIDE = 4 * math.sqrt(2 / (LOO_DRAWS // 2))
# The same, for S = 100 guide draws.
SMALL_DRAWS = 100
LOO_ATOL_SMALL = 4 * math.sqrt(2 / (SMALL_DRAWS // 2))
# The plain function and the family are the same program fitted from the same seed: their
# guides, draws and densities agree up to float64 rounding of sums over 40 points.
SAME_FIT_ATOL = 1e-8
# Largest error of one observation's elpd_loo_i: the same simulation gave 0.04 (99.5% quantile
# over seeds, exact draws, S = 2000) and 0.06 (a guide 10% too wide and 0.1 sd off, S = 1000).
POINTWISE_ATOL = 0.1
# The poor guide: POOR_NARROW times too narrow and POOR_SHIFT posterior sds off. Its ratios
# p/q under q have a Pareto tail with k = 1 - 1/POOR_NARROW^2 = 0.89. A 200-seed simulation of
# the estimator (S = 2000, exact densities) put the 0.5% quantiles of the estimated k's above
# 0.7: 0.74 (max over observations), 0.72 (median), 0.73 (the guide's own k); and the corrected
# elpd's error was at most 0.57 times the uncorrected one's.
POOR_NARROW, POOR_SHIFT = 3.0, 3.0
POOR_MAX_ERROR_RATIO = 0.75

# Old Faithful: few SVI steps and few draws suffice, K >= 2 beats K = 1 by hundreds of nats.
GMM_SVI: dict[str, Any] = {"steps": 100, "lr": 0.1, "num_draws": 1, "seed": 0, "progress": False}
GMM_LOO_DRAWS = 200
ARVIZ_COLUMNS = [
    "rank",
    "elpd_loo",
    "p_loo",
    "elpd_diff",
    "weight",
    "se",
    "dse",
    "warning",
    "scale",
]


def normal_mean(x: torch.Tensor | None, n: int | None = None) -> torch.Tensor:
    loc = torch.tensor(PRIOR_LOC, dtype=torch.float64)
    mu = pyro.sample("mu", dist.Normal(loc, PRIOR_SCALE))
    with pyro.plate("data", x.shape[0] if x is not None else n):
        return pyro.sample("obs", dist.Normal(mu.expand(1), SIGMA).to_event(1), obs=x)


class NormalMean(GenerativeModel):
    """``normal_mean`` as a family with the closed-form ``log p(y_i | mu)`` (batched over
    draws), as families write it: the generic per-draw path is ~3x slower."""

    def model(self, x=None, *, n=None):
        return normal_mean(x, n)

    def log_likelihood(self, x, params=None):
        mu = self._point(params)["mu"]
        return dist.Normal(mu.unsqueeze(-1), SIGMA).log_prob(x[:, 0])


@pytest.fixture(scope="module")
def y() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return TRUE_MEAN + SIGMA * torch.randn(N, 1, generator=g, dtype=torch.float64)


def _posterior(y: np.ndarray) -> tuple[float, float]:
    """Mean and sd of the conjugate posterior of mu given ``y``."""
    precision = 1 / PRIOR_SCALE**2 + y.size / SIGMA**2
    return (PRIOR_LOC / PRIOR_SCALE**2 + y.sum() / SIGMA**2) / precision, precision**-0.5


@pytest.fixture(scope="module")
def exact(y: torch.Tensor) -> dict[str, np.ndarray | float]:
    """Exact elpd_loo_i = log N(y_i | m_{-i}, SIGMA^2 + s_{-i}^2), its sum, and p_loo."""
    v = y[:, 0].numpy()
    loo_i = np.empty(N)
    for i in range(N):
        m, s = _posterior(np.delete(v, i))
        loo_i[i] = scipy.stats.norm.logpdf(v[i], m, math.hypot(SIGMA, s))
    m, s = _posterior(v)
    lppd = scipy.stats.norm.logpdf(v, m, math.hypot(SIGMA, s)).sum()
    return {"loo_i": loo_i, "elpd": loo_i.sum(), "p_loo": lppd - loo_i.sum()}


def _fit(model, draws, guide=None, method="svi") -> probgen.Fit:
    """A Fit holding known draws (the record an ideal sampler or guide would produce)."""
    return probgen.Fit(
        method=method,
        options={},
        objective="",
        history=[],
        final_objective=0.0,
        wall_time=0.0,
        n_iter=0,
        converged=True,
        params={k: v.mean((0, 1)) for k, v in draws.items()},
        draws=draws,
        model=model,
        guide=guide,
        data_size=N,
    )


@pytest.fixture(scope="module")
def exact_fit(y: torch.Tensor) -> probgen.Fit:
    """Independent exact posterior draws in two chains, as a NUTS fit."""
    m, s = _posterior(y[:, 0].numpy())
    g = torch.Generator().manual_seed(2)
    mu = m + s * torch.randn(EXACT_CHAINS, EXACT_DRAWS, generator=g, dtype=torch.float64)
    return _fit(NormalMean(), {"mu": mu}, method="nuts")


SVI_OPTIONS: dict[str, Any] = {
    "steps": 300,
    "lr": 0.05,
    "num_draws": 100,
    "seed": 0,
    "progress": False,
}


@pytest.fixture(scope="module")
def svi_fit(y: torch.Tensor) -> probgen.Fit:
    """Mean-field (AutoNormal) SVI of the family: the vectorised guide path."""
    return probgen.fit(NormalMean(), y, method="svi", **SVI_OPTIONS)


@pytest.fixture(scope="module")
def program_fit(y: torch.Tensor) -> probgen.Fit:
    """The same fit of the plain Pyro function: generic pointwise densities."""
    return probgen.fit(normal_mean, y, method="svi", **SVI_OPTIONS)


# ----------------------------------------------------------------------------- accuracy
def test_posterior_draws_match_closed_form(exact_fit, y, exact):
    result = loo(exact_fit, y)
    assert isinstance(result, az.ELPDData)
    assert result["elpd_loo"] == pytest.approx(exact["elpd"], abs=LOO_ATOL_EXACT)
    assert result["p_loo"] == pytest.approx(exact["p_loo"], abs=LOO_ATOL_EXACT)
    np.testing.assert_allclose(result["loo_i"].values, exact["loo_i"], atol=POINTWISE_ATOL)
    assert (result["n_samples"], result["n_data_points"], result["scale"]) == (LOO_DRAWS, N, "log")
    assert result["approximation"] == "posterior draws"
    # The NUTS path is ArviZ's own PSIS-LOO of to_arviz's pointwise log-likelihood.
    reference = az.loo(to_arviz(exact_fit, y, posterior_predictive=False), pointwise=True)
    for key in ("elpd_loo", "se", "p_loo"):
        assert result[key] == reference[key]
    np.testing.assert_array_equal(result["pareto_k"].values, reference["pareto_k"].values)


@pytest.fixture(scope="module")
def svi_loo(svi_fit: probgen.Fit, y: torch.Tensor):
    return loo(svi_fit, y, num_draws=LOO_DRAWS)


def test_svi_guide_matches_closed_form(svi_loo, exact):
    result = svi_loo
    assert result["approximation"] == "importance-corrected guide draws"
    # The posterior is Gaussian, so the mean-field guide is near exact: a good proposal.
    assert result["guide_pareto_k"] < KHAT_GOOD
    assert pareto_k_summary(result)["max"] < KHAT_GOOD
    assert result["elpd_loo"] == pytest.approx(exact["elpd"], abs=LOO_ATOL_GUIDE)
    assert result["p_loo"] == pytest.approx(exact["p_loo"], abs=LOO_ATOL_GUIDE)
    np.testing.assert_allclose(result["loo_i"].values, exact["loo_i"], atol=POINTWISE_ATOL)
    assert result["se"] == pytest.approx(math.sqrt(N * result["loo_i"].values.var()))
    assert result["warning"] is False
    assert result["pareto_k"].dims == ("obs_id",)


def test_exact_guide_is_exact_posterior_draws(y, exact):
    """A hand-written guide equal to the posterior (drawn one pass per draw): flat weights,
    guide k-hat -inf, and the elpd of exact draws."""
    m, s = _posterior(y[:, 0].numpy())

    def posterior_guide(x, n=None):
        pyro.sample("mu", dist.Normal(torch.tensor(m, dtype=torch.float64), s))

    fit = _fit(NormalMean(), {"mu": torch.zeros(1, 1)}, posterior_guide)
    result = loo(fit, y, num_draws=LOO_DRAWS)
    assert result["guide_pareto_k"] == -math.inf
    assert result["elpd_loo"] == pytest.approx(exact["elpd"], abs=LOO_ATOL_EXACT)
    np.testing.assert_allclose(result["loo_i"].values, exact["loo_i"], atol=POINTWISE_ATOL)


def test_poor_guide_has_high_k_and_correction_helps(y, exact):
    m, s = _posterior(y[:, 0].numpy())
    loc, scale = m + POOR_SHIFT * s, s / POOR_NARROW

    def poor_guide(x, n=None):
        pyro.sample("mu", dist.Normal(torch.tensor(loc, dtype=torch.float64), scale))

    g = torch.Generator().manual_seed(3)
    draws = loc + scale * torch.randn(1, LOO_DRAWS, generator=g, dtype=torch.float64)
    fit = _fit(NormalMean(), {"mu": draws}, poor_guide)
    with pytest.warns(ParetoKWarning, match="Pareto k above"):
        corrected = loo(fit, y, num_draws=LOO_DRAWS)
    k = corrected["pareto_k"].values
    summary = pareto_k_summary(corrected)
    assert summary["max"] > KHAT_OK
    assert np.median(k) > KHAT_GOOD
    assert corrected["guide_pareto_k"] > KHAT_OK
    assert corrected["warning"] is True
    assert summary["above_0.7"] == int((k > 0.7).sum()) > 0
    assert summary["above_0.5"] >= summary["above_0.7"] >= summary["above_1"]
    # Uncorrected: the guide's draws taken as posterior draws.
    naive = az.loo(to_arviz(fit, y, posterior_predictive=False), pointwise=True)
    error, naive_error = (
        abs(corrected["elpd_loo"] - exact["elpd"]),
        abs(naive["elpd_loo"] - exact["elpd"]),
    )
    assert error < POOR_MAX_ERROR_RATIO * naive_error


@pytest.mark.filterwarnings("ignore::probgen.arviz.ParetoKWarning")  # S = 100: good_k is 0.5
def test_plain_function_seeded_and_leaves_global_rng_alone(program_fit, svi_fit, y, exact):
    state = torch.get_rng_state()
    a = loo(program_fit, y, num_draws=SMALL_DRAWS, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    b = loo(program_fit, y, num_draws=SMALL_DRAWS, seed=5)
    c = loo(program_fit, y, num_draws=SMALL_DRAWS, seed=6)
    # The generic densities of the plain function give the family's closed-form result.
    family = loo(svi_fit, y, num_draws=SMALL_DRAWS, seed=5)
    assert a["elpd_loo"] == pytest.approx(family["elpd_loo"], abs=SAME_FIT_ATOL)
    assert a["elpd_loo"] == pytest.approx(exact["elpd"], abs=LOO_ATOL_SMALL)
    np.testing.assert_array_equal(a["loo_i"].values, b["loo_i"].values)
    assert a["elpd_loo"] != c["elpd_loo"]


# ----------------------------------------------------------------------------- comparison
@pytest.fixture(scope="module")
def gmm_fits(faithful: torch.Tensor) -> dict[str, probgen.Fit]:
    pyro.set_rng_seed(0)
    return {
        f"K={k}": probgen.fit(GaussianMixture(k, "diag"), faithful, method="svi", **GMM_SVI)
        for k in (1, 2, 3)
    }


@pytest.fixture(scope="module")
def gmm_table(gmm_fits, faithful):
    # Few SVI steps leave the guides rough: high k's are expected and not what is tested here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParetoKWarning)
        return compare_models(gmm_fits, faithful, num_draws=GMM_LOO_DRAWS)


def test_compare_models_prefers_two_or_three_components(gmm_table):
    assert list(gmm_table.columns) == ARVIZ_COLUMNS
    assert set(gmm_table.index) == {"K=1", "K=2", "K=3"}
    assert gmm_table.index[0] in ("K=2", "K=3")
    assert gmm_table.index[-1] == "K=1"
    assert list(gmm_table["rank"]) == [0, 1, 2]
    # Old Faithful is plainly bimodal: K=1 loses by far more than the difference's sd.
    assert gmm_table.loc["K=1", "elpd_diff"] > 4 * gmm_table.loc["K=1", "dse"]
    assert gmm_table["weight"].sum() == pytest.approx(1.0)
    assert (gmm_table["scale"] == "log").all()


def test_compare_models_uses_loo(gmm_table, gmm_fits, faithful):
    """The table's elpd is loo()'s (same seed), and precomputed ELPDData are accepted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParetoKWarning)
        elpd = loo(gmm_fits["K=1"], faithful, num_draws=GMM_LOO_DRAWS)
    assert gmm_table.loc["K=1", "elpd_loo"] == elpd["elpd_loo"]
    assert gmm_table.loc["K=1", "p_loo"] == elpd["p_loo"]
    again = compare_models({"a": elpd, "b": elpd}, faithful)
    assert again["elpd_diff"].tolist() == [0.0, 0.0]


def test_plot_compare(gmm_table):
    import matplotlib.pyplot as plt

    try:
        fig = plot_compare(gmm_table)
        assert isinstance(fig, Figure)
        ax = fig.axes[0]
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert sorted(labels) == sorted(gmm_table.index)
        # The best model sits on top (largest y).
        top = labels[int(np.argmax(ax.get_yticks()))]
        assert top == gmm_table.index[0]
    finally:
        plt.close("all")


def test_plot_pareto_k(svi_loo):
    import matplotlib.pyplot as plt

    result = svi_loo
    try:
        fig = plot_pareto_k(result)
        assert isinstance(fig, Figure)
        ax = fig.axes[0]
        offsets = ax.collections[0].get_offsets()
        np.testing.assert_array_equal(np.asarray(offsets)[:, 0], np.arange(N))
        np.testing.assert_allclose(np.asarray(offsets)[:, 1], result["pareto_k"].values)
        levels = sorted(line.get_ydata()[0] for line in ax.get_lines())
        assert levels == [KHAT_GOOD, KHAT_OK]
    finally:
        plt.close("all")


# ----------------------------------------------------------------------------- bad input
def test_point_fits_are_rejected(faithful, y):
    em = probgen.fit(GaussianMixture(2), faithful, method="em", seed=0, progress=False)
    with pytest.raises(ValueError, match=r"posterior draws.*'em' fit has none.*point estimate"):
        loo(em, faithful)
    map_fit = probgen.fit(normal_mean, y, method="map", steps=20, seed=0, progress=False)
    with pytest.raises(ValueError, match=r"'map' fit has none.*'svi' or 'nuts'"):
        loo(map_fit, y)
    delta = probgen.fit(
        normal_mean, y, method="svi", guide="delta", steps=20, num_draws=2, progress=False
    )
    with pytest.raises(ValueError, match="point mass"):
        loo(delta, y)


def test_guide_over_local_latents_is_rejected():
    def model(x, n=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("obs", dist.Normal(z.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x, n=None):
        pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    x = torch.zeros(5, 1)
    fit = _fit(probgen.PyroProgram(model, guide), {"mu": torch.zeros(1, 3)}, guide)
    fit = probgen.Fit(**{**fit.__dict__, "data_size": 5})
    with pytest.raises(ValueError, match=r"global sites only.*\['z'\].*'data'"):
        loo(fit, x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_draws": 10}, "num_draws"),
        ({"num_draws": 100.5}, "num_draws"),
    ],
)
def test_bad_num_draws(svi_fit, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        loo(svi_fit, y, **kwargs)


def test_bad_fit_and_data(svi_fit, y):
    with pytest.raises(TypeError, match=r"probgen\.Fit"):
        loo({"mu": torch.zeros(3)}, y)
    with pytest.raises(ValueError, match="data has 39 rows but the fit was trained on 40"):
        loo(svi_fit, y[1:])
    with pytest.raises(ValueError, match="NaN"):
        loo(svi_fit, torch.full((N, 1), math.nan))


def test_bad_compare_arguments(svi_fit, y, gmm_table):
    with pytest.raises(ValueError, match="ic must be 'loo'"):
        compare_models({"a": svi_fit, "b": svi_fit}, y, ic="waic")
    with pytest.raises(ValueError, match="at least two"):
        compare_models({"a": svi_fit}, y)
    with pytest.raises(ValueError, match="at least two"):
        compare_models([svi_fit, svi_fit], y)
    with pytest.raises(ValueError, match="method must be one of stacking"):
        compare_models({"a": svi_fit, "b": svi_fit}, y, method="bma")
    with pytest.raises(ValueError, match="lacks"):
        plot_compare(gmm_table.drop(columns=["dse"]))
    with pytest.raises(ValueError, match=r"result of loo\(\)"):
        plot_pareto_k(gmm_table)


def test_model_comparison_report_embeds_table_and_figures():
    from probgen.arviz import model_comparison_report

    x = torch.randn(30, generator=torch.Generator().manual_seed(3)).double()
    fits = {}
    for name, scale in (("narrow", 0.2), ("wide", 2.0)):

        def model(data, n=None, scale=scale):
            loc = pyro.sample("loc", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 5.0))
            with pyro.plate("data", len(data) if data is not None else n):
                return pyro.sample("obs", dist.Normal(loc, scale), obs=data)

        fits[name] = probgen.fit(model, x, method="svi", guide="normal", steps=200, lr=0.05)
    html = model_comparison_report(fits, x, num_draws=200).to_html()
    # the true scale is 1: per point, log N(x | 0, 2) ~ -1.7 beats log N(x | 0, 0.2) ~ -11.8
    assert html.index(">wide<") < html.index(">narrow<")
    assert html.count("data:image/png;base64,") == 3  # compare plot + two Pareto k plots
