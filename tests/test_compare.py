"""``probgen.compare``: one model, several inference methods, one table and a set of figures.

The table's numbers are checked against independent references (scipy densities, scikit-learn's
EM, the conjugate Normal posterior), its renderings against the rows, and its inputs against
the documented forms and errors.
"""

from __future__ import annotations

import csv
import importlib
import io
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.special
import scipy.stats
import torch
from matplotlib.figure import Figure
from pyro.optim.clipped_adam import ClippedAdam
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

import probgen
from models.gmm import GaussianMixture
from probgen.compare import COLUMNS

compare_module = importlib.import_module("probgen.compare")  # `probgen.compare` is the function

METHODS = ["em", "map", "svi"]
GMM_OPTIONS = {
    "map": {"steps": 300, "lr": 0.05},
    "svi": {"steps": 300, "lr": 0.05, "num_draws": 100},
}
KHAT_DRAWS = 100  # k-hat fits the largest min(0.2 S, 3 sqrt(S)) = 20 ratios (>= 10 needed)
# The MAP optimum differs from the maximum-likelihood one by the weak data-scaled prior's pull,
# O(1/N) in the parameters and so second order in the log-likelihood; measured ~6e-5 nats/pt.
EM_MAP_LL_ATOL = 1e-3
# EM stops when the mean log-likelihood changes by < tol = 1e-3 per iteration; the remaining
# climb to the optimum is of that order (measured 4e-5 against scikit-learn at tol 1e-10).
EM_SKLEARN_LL_ATOL = 1e-3
# Same parameters, two float64 implementations of the mixture density: rounding only.
LOGLIK_RTOL = 1e-10

# The conjugate model: x_n ~ Normal(loc, 1), loc ~ Normal(0, PRIOR_SD).
PRIOR_SD = 10.0
CONJ_N = 50
CONJ_TRUE_LOC = 2.0
CONJ_OPTIONS = {
    # Adam's step size decays (x0.99 per step) so that the stochastic-gradient jitter of the
    # variational parameters has died down by the end: a constant lr leaves loc jittering by ~lr.
    "map": {"steps": 300, "lr": 0.1, "optimizer": lambda p, lr: ClippedAdam(p, lr=lr, lrd=0.99)},
    "svi": {
        "steps": 300,
        "lr": 0.1,
        "optimizer": lambda p, lr: ClippedAdam(p, lr=lr, lrd=0.99),
        "num_draws": 400,
    },
    "nuts": {"num_samples": 100, "warmup_steps": 100, "num_chains": 2, "jit_compile": False},
}
# The mean-field Normal guide contains the exact posterior, so SVI's optimum is exact. What is
# left: the 400-draw Monte Carlo error of the mean (0.05 sd) and the residual optimisation
# error (measured <= 0.21 sd over seeds 0-3): 0.5 posterior sd bounds both with room.
SVI_MEAN_TOL_SD = 0.5
# The guide's scale after 300 decaying steps: measured within 9% of the exact posterior sd.
SVI_SD_RTOL = 0.25
# Deterministic gradients and a decaying step size: MAP lands on the mode (measured < 1e-3 sd).
MAP_TOL_SD = 0.05
# NUTS: 4 Monte Carlo standard errors (sd / sqrt(ESS), ESS as the fit reports it).
NUTS_MCSE_FACTOR = 4.0


@pytest.fixture(scope="module")
def split(faithful: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Old Faithful with every fifth point held out."""
    test = torch.arange(faithful.shape[0]) % 5 == 0
    return faithful[~test], faithful[test]


@pytest.fixture(scope="module")
def gmm_comparison(split) -> probgen.Comparison:
    train, test = split
    return probgen.compare(
        GaussianMixture(2), train, METHODS, test, options=GMM_OPTIONS, khat_draws=KHAT_DRAWS
    )


def _scipy_mixture_ll(x: torch.Tensor, params: dict[str, torch.Tensor]) -> np.ndarray:
    """``log sum_k w_k N(x_n | mu_k, Sigma_k)`` by scipy, full covariance from scales and
    Cholesky factor of the correlation."""
    weights, locs = params["weights"].numpy(), params["locs"].numpy()
    scales, corr = params["scales"].numpy(), params["corr_chol"].numpy()
    logs = []
    for k in range(len(weights)):
        tril = scales[k][:, None] * corr[k]
        dens = scipy.stats.multivariate_normal(locs[k], tril @ tril.T).logpdf(x.numpy())
        logs.append(np.log(weights[k]) + dens)
    return scipy.special.logsumexp(np.stack(logs), axis=0)


# ----------------------------------------------------------------------------- the table
def test_rows_have_the_documented_columns(gmm_comparison):
    assert gmm_comparison.columns == tuple(COLUMNS)
    assert [r["method"] for r in gmm_comparison.rows] == METHODS
    assert list(gmm_comparison.fits) == METHODS
    for row in gmm_comparison.rows:
        assert set(row) == set(COLUMNS)
        fit = gmm_comparison.fits[row["method"]]
        assert row["objective"] == fit.objective
        assert row["final_objective"] == fit.final_objective
        assert row["wall_time"] == fit.wall_time > 0
        assert row["n_iter"] == fit.n_iter
        assert isinstance(row["converged"], bool)
        for column in ("train_ll", "test_ll"):
            assert isinstance(row[column], float)
            assert math.isfinite(row[column])
        # R-hat and ESS belong to NUTS rows only.
        assert row["r_hat"] is None
        assert row["ess"] is None
    objectives = {r["method"]: r["objective"] for r in gmm_comparison.rows}
    assert objectives == {
        "em": "-log-likelihood per point",
        "map": "-ELBO per point",
        "svi": "-ELBO per point",
    }


def test_em_log_likelihoods_match_scipy(gmm_comparison, split):
    train, test = split
    em = next(r for r in gmm_comparison.rows if r["method"] == "em")
    params = dict(gmm_comparison.fits["em"].params)
    assert em["train_ll"] == pytest.approx(_scipy_mixture_ll(train, params).mean(), rel=LOGLIK_RTOL)
    assert em["test_ll"] == pytest.approx(_scipy_mixture_ll(test, params).mean(), rel=LOGLIK_RTOL)


def test_em_reaches_sklearn_maximum_likelihood(gmm_comparison, split):
    train, _ = split
    reference = SklearnGaussianMixture(
        2, tol=1e-10, max_iter=2000, reg_covar=1e-6, n_init=3, random_state=0
    ).fit(train.numpy())
    best = reference.score(train.numpy())
    em = next(r for r in gmm_comparison.rows if r["method"] == "em")
    assert em["train_ll"] == pytest.approx(best, abs=EM_SKLEARN_LL_ATOL)


def test_em_and_map_train_ll_agree(gmm_comparison):
    ll = {r["method"]: r["train_ll"] for r in gmm_comparison.rows}
    assert ll["map"] == pytest.approx(ll["em"], abs=EM_MAP_LL_ATOL)


def test_khat_reported_for_svi_rows_only(gmm_comparison):
    for row in gmm_comparison.rows:
        if row["method"] == "svi":
            assert isinstance(row["khat"], float)
            assert math.isfinite(row["khat"])
        else:
            assert row["khat"] is None


# ----------------------------------------------------------------------------- renderings
def test_to_text(gmm_comparison):
    lines = gmm_comparison.to_text().splitlines()
    assert len(lines) == 2 + len(METHODS)  # header, rule, one line per method
    header = lines[0]
    for printed in ("method", "objective", "time [s]", "train LL/pt", "test LL/pt", "k-hat"):
        assert printed in header
    # Columns empty in every row (R-hat, ESS without NUTS) are left out.
    assert "R-hat" not in header
    assert "ESS" not in header
    assert set(lines[1]) <= {"-", " "}
    for line, method in zip(lines[2:], METHODS, strict=True):
        assert line.split()[0] == method
    assert str(gmm_comparison) == gmm_comparison.to_text()


def test_to_markdown(gmm_comparison):
    lines = gmm_comparison.to_markdown().splitlines()
    assert len(lines) == 2 + len(METHODS)
    cells = [line.strip("|").split("|") for line in lines]
    assert all(line.startswith("|") and line.endswith("|") for line in lines)
    assert len({len(c) for c in cells}) == 1
    assert [c.strip() for c in cells[0]][:2] == ["method", "objective"]
    assert set(lines[1]) <= {"|", ":", "-"}
    assert [c[0].strip() for c in cells[2:]] == METHODS
    train_col = [c.strip() for c in cells[0]].index("train LL/pt")
    for c, row in zip(cells[2:], gmm_comparison.rows, strict=True):
        assert float(c[train_col]) == pytest.approx(row["train_ll"], abs=5e-5)  # 4 decimals


def test_to_csv_round_trips_the_numbers(gmm_comparison):
    reader = csv.DictReader(io.StringIO(gmm_comparison.to_csv()))
    assert reader.fieldnames == list(COLUMNS)
    parsed = list(reader)
    assert len(parsed) == len(gmm_comparison.rows)
    for got, row in zip(parsed, gmm_comparison.rows, strict=True):
        for column, value in row.items():
            if value is None:
                assert got[column] == ""
            elif isinstance(value, bool):
                assert got[column] == str(value)
            elif isinstance(value, int):
                assert int(got[column]) == value
            elif isinstance(value, float):
                assert float(got[column]) == value  # raw values: exact round trip
            else:
                assert got[column] == value


def test_figures_for_two_dimensional_data(gmm_comparison):
    figs = gmm_comparison.figures()
    # k-hat of the SVI guide, and the posterior draws of the methods that have them
    assert set(figs) == {"loss", "density", "khat", "posterior"}
    assert all(isinstance(f, Figure) for f in figs.values())
    loss_axes = [ax for ax in figs["loss"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in loss_axes] == METHODS
    for ax, method in zip(loss_axes, METHODS, strict=True):
        np.testing.assert_array_equal(ax.lines[0].get_ydata(), gmm_comparison.fits[method].history)
    density_axes = [ax for ax in figs["density"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in density_axes] == METHODS


@pytest.mark.parametrize(("dim", "names"), [(1, {"loss", "density"}), (3, {"loss"})])
def test_figures_depend_on_dimension(dim, names):
    x = probgen.data.blobs(n=120, centers=2, dim=dim, seed=0)
    figs = probgen.compare(GaussianMixture(2), x, ["em"]).figures()
    assert set(figs) == names


# ----------------------------------------------------------------------------- model forms
def test_accepts_an_instance_and_leaves_it_unfitted(faithful):
    gmm = GaussianMixture(2, "diag")
    result = probgen.compare(gmm, faithful, ["em", "map"], options={"map": {"steps": 20}})
    em_model, map_model = (result.fits[m].model for m in ("em", "map"))
    assert em_model is not gmm and map_model is not gmm and em_model is not map_model
    assert gmm.params_ is None
    assert em_model.covariance_type == map_model.covariance_type == "diag"


def test_accepts_a_class(faithful):
    result = probgen.compare(GaussianMixture, faithful, ["em"])
    model = result.fits["em"].model
    assert type(model) is GaussianMixture
    assert model.n_components == 2  # the class's default


def test_accepts_a_zero_argument_factory(faithful):
    result = probgen.compare(lambda: GaussianMixture(3, "spherical"), faithful, ["em"])
    model = result.fits["em"].model
    assert (model.n_components, model.covariance_type) == (3, "spherical")
    assert model.weights_.shape == (3,)


def normal_location_model(x):
    """x_n ~ Normal(loc, 1) with loc ~ Normal(0, PRIOR_SD): conjugate."""
    loc = pyro.sample("loc", dist.Normal(x.new_zeros(()), PRIOR_SD))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=x)


@pytest.fixture(scope="module")
def conjugate():
    g = torch.Generator().manual_seed(1)
    x = CONJ_TRUE_LOC + torch.randn(CONJ_N, generator=g, dtype=torch.float64)
    precision = 1 / PRIOR_SD**2 + CONJ_N  # posterior precision: prior + N unit-variance points
    mean, sd = x.sum().item() / precision, precision**-0.5
    result = probgen.compare(
        normal_location_model,
        x,
        ["map", "svi", "nuts"],
        options=CONJ_OPTIONS,
        khat_draws=KHAT_DRAWS,
    )
    return x, mean, sd, result


def test_plain_pyro_model_matches_conjugate_posterior(conjugate):
    _, mean, sd, result = conjugate
    map_loc = result.fits["map"].params["loc"].item()
    assert abs(map_loc - mean) < MAP_TOL_SD * sd  # Gaussian posterior: mode = mean
    svi = result.fits["svi"].draws["loc"]
    assert svi.shape == (1, CONJ_OPTIONS["svi"]["num_draws"])
    assert abs(svi.mean().item() - mean) < SVI_MEAN_TOL_SD * sd
    assert svi.std().item() == pytest.approx(sd, rel=SVI_SD_RTOL)
    nuts = result.fits["nuts"]
    assert nuts.draws["loc"].shape == (2, CONJ_OPTIONS["nuts"]["num_samples"])
    mcse = sd / math.sqrt(nuts.diagnostics["ess"])
    assert abs(nuts.draws["loc"].mean().item() - mean) < NUTS_MCSE_FACTOR * mcse


def test_plain_pyro_model_rows(conjugate):
    x, _, _, result = conjugate
    rows = {r["method"]: r for r in result.rows}
    assert list(rows) == ["map", "svi", "nuts"]
    # MAP's train LL/pt is log N(x_n | loc_hat, 1) averaged: check it with scipy.
    loc = result.fits["map"].params["loc"].item()
    expected = scipy.stats.norm(loc, 1.0).logpdf(x.numpy()).mean()
    assert rows["map"]["train_ll"] == pytest.approx(expected, rel=LOGLIK_RTOL)
    # NUTS's is the posterior predictive log mean_s N(x_n | loc_s, 1), averaged.
    draws = result.fits["nuts"].draws["loc"].reshape(-1).numpy()
    logp = scipy.stats.norm(draws[:, None], 1.0).logpdf(x.numpy()[None, :])
    lppd = scipy.special.logsumexp(logp, axis=0) - math.log(len(draws))
    assert rows["nuts"]["train_ll"] == pytest.approx(lppd.mean(), rel=LOGLIK_RTOL)
    # k-hat for SVI only; R-hat and ESS for NUTS only.
    assert isinstance(rows["svi"]["khat"], float) and math.isfinite(rows["svi"]["khat"])
    assert rows["map"]["khat"] is None and rows["nuts"]["khat"] is None
    assert math.isfinite(rows["nuts"]["r_hat"]) and math.isfinite(rows["nuts"]["ess"])
    assert rows["map"]["r_hat"] is None and rows["svi"]["ess"] is None


# ----------------------------------------------------------------------------- errors
def test_options_for_a_method_not_run(faithful):
    message = r"options given for method\(s\) \['svi'\].*not in methods"
    with pytest.raises(ValueError, match=message):
        probgen.compare(GaussianMixture(2), faithful, ["em"], options={"svi": {"steps": 10}})


def test_empty_methods(faithful):
    with pytest.raises(ValueError, match="at least one method"):
        probgen.compare(GaussianMixture(2), faithful, [])


def test_unknown_method(faithful):
    with pytest.raises(ValueError, match=r"unknown method 'bogus'.*allowed: em, map, laplace"):
        probgen.compare(GaussianMixture(2), faithful, ["bogus"])


def test_unknown_method_fails_before_any_fit(faithful, monkeypatch):
    calls = []
    real_fit = compare_module.fit
    monkeypatch.setattr(compare_module, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    with pytest.raises(ValueError, match="bogus"):
        probgen.compare(GaussianMixture(2), faithful, ["em", "bogus"])
    assert calls == []


def test_unknown_option(faithful):
    with pytest.raises(ValueError, match=r"unknown option\(s\) steps for method 'em'"):
        probgen.compare(GaussianMixture(2), faithful, ["em"], options={"em": {"steps": 10}})


def test_em_on_a_model_without_em(faithful):
    x = faithful[:, 0].contiguous()
    with pytest.raises(ValueError, match="method='em' needs a family with closed-form EM"):
        probgen.compare(normal_location_model, x, ["em"])


@pytest.mark.parametrize("bad", [42, "gmm"])
def test_rejects_a_non_model(bad, faithful):
    with pytest.raises(TypeError, match="model must be"):
        probgen.compare(bad, faithful, ["em"])


@pytest.mark.parametrize(
    ("argument", "kwargs"),
    [
        ("data", {"data": torch.tensor([[1.0, float("nan")], [2.0, 3.0]])}),
        ("test_data", {"test_data": torch.tensor([[1.0, float("inf")]])}),
    ],
)
def test_rejects_non_finite_data(argument, kwargs, faithful):
    call = {"data": faithful, "test_data": None, **kwargs}
    with pytest.raises(ValueError, match=rf"^{argument} contains 1 NaN/inf"):
        probgen.compare(GaussianMixture(2), call["data"], ["em"], call["test_data"])
