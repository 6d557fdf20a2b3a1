"""``probgen.to_arviz``: InferenceData for NUTS, SVI, EM and MAP fits of a Gaussian mixture.

Shapes and groups are checked against the documented layout, the pointwise log-likelihood
against an independent scipy computation of the mixture density, and the ArviZ functions the
issue names (``summary``, ``loo``, ``compare``, ``plot_trace``, netCDF I/O) are run on the
outputs.
"""

from __future__ import annotations

import ast
import importlib
import math
import subprocess
import sys
import warnings
from pathlib import Path

import arviz as az
import matplotlib
import numpy as np
import pyro
import pytest
import scipy.special
import scipy.stats
import torch

import probgen
from models.gmm import GaussianMixture

matplotlib.use("Agg")

PROBGEN_DIR = Path(probgen.__file__).resolve().parent

# Small budgets: these tests check the conversion, not the samplers' accuracy.
NUTS_DRAWS = 50
NUTS_CHAINS = 2
NUTS_OPTIONS = {
    "num_samples": NUTS_DRAWS,
    "warmup_steps": NUTS_DRAWS,
    "num_chains": NUTS_CHAINS,
    "seed": 0,
    "progress": False,
}
SVI_DRAWS = 100
SVI_OPTIONS = {"steps": 300, "lr": 0.05, "num_draws": SVI_DRAWS, "seed": 0, "progress": False}
MAP_OPTIONS = {"steps": 300, "lr": 0.05, "seed": 0, "progress": False}
# (chains, draws) each fit must come out as.
LAYOUT = {
    "nuts": (NUTS_CHAINS, NUTS_DRAWS),
    "nuts_k1": (NUTS_CHAINS, NUTS_DRAWS),
    "svi": (1, SVI_DRAWS),
    "em": (1, 1),
    "map": (1, 1),
}
# float64 data, float64 parameters: the two log-density computations differ only by rounding.
LOGLIK_RTOL = 1e-9
# Free parameters of a 2-D, K=2 mixture: diag covariance 1 + 4 + 4, full covariance 1 + 4 + 6.
N_PARAMS = {"nuts": 9, "svi": 11}

# ArviZ warns when some observations' Pareto k-hat exceeds its threshold; with 100 draws a
# handful of Old Faithful's outlying points do. The k-hats are reported in the result; they are
# not what these tests check.
IGNORE_PARETO = "ignore:Estimated shape parameter of Pareto:UserWarning"
# ArviZ 0.23's az.compare calls DataFrame.sort_values(inplace=True), deprecated in pandas 3.1.
IGNORE_PANDAS_INPLACE = "ignore:The inplace keyword:DeprecationWarning"
# ArviZ 0.23's trace plot passes a dict to matplotlib's normalize_kwargs, deprecated in 3.11.
IGNORE_MPL_ALIAS_MAPPING = (
    "ignore:Passing a dict or None as alias_mapping:matplotlib.MatplotlibDeprecationWarning"
)


def _nuts(model: GaussianMixture, x: torch.Tensor) -> probgen.Fit:
    with warnings.catch_warnings():
        # torch >= 2.9 deprecates torch.jit.trace, which Pyro's NUTS(jit_compile=True) uses;
        # it still works and halves the sampling time of these models.
        warnings.filterwarnings("ignore", r"`torch\.jit\.trace` is deprecated", DeprecationWarning)
        return probgen.fit(model, x, method="nuts", **NUTS_OPTIONS)


@pytest.fixture(scope="module")
def fits(faithful: torch.Tensor) -> dict[str, probgen.Fit]:
    """One fit per method on Old Faithful. NUTS fits use diagonal covariances (no constant
    Cholesky entries, whose R-hat is undefined, and ~2x faster); the others full covariances,
    so the scipy check below covers both parameterisations."""
    return {
        "nuts": _nuts(GaussianMixture(2, "diag"), faithful),
        "nuts_k1": _nuts(GaussianMixture(1, "diag"), faithful),
        "svi": probgen.fit(GaussianMixture(2), faithful, method="svi", **SVI_OPTIONS),
        "em": probgen.fit(GaussianMixture(2), faithful, method="em", seed=0, progress=False),
        "map": probgen.fit(GaussianMixture(2), faithful, method="map", **MAP_OPTIONS),
    }


@pytest.fixture(scope="module")
def idatas(fits: dict[str, probgen.Fit], faithful: torch.Tensor) -> dict[str, az.InferenceData]:
    pyro.set_rng_seed(0)  # posterior predictive simulation draws from Pyro's global RNG
    return {name: probgen.to_arviz(f, faithful) for name, f in fits.items()}


def _mixture_logpdf(
    x: np.ndarray, posterior: az.InferenceData, chain: int, draw: int
) -> np.ndarray:
    """``log sum_k w_k N(x_n | mu_k, Sigma_k)`` by scipy, from one draw of the posterior group."""
    post = posterior.posterior
    weights = post["weights"].values[chain, draw]
    locs = post["locs"].values[chain, draw]
    scales = post["scales"].values[chain, draw]
    per_component = []
    for k in range(len(weights)):
        if "corr_chol" in post:
            tril = scales[k][:, None] * post["corr_chol"].values[chain, draw, k]
            cov = tril @ tril.T
        else:
            cov = np.diag(scales[k] ** 2)
        dens = scipy.stats.multivariate_normal(locs[k], cov).logpdf(x)
        per_component.append(np.log(weights[k]) + dens)
    return scipy.special.logsumexp(np.stack(per_component), axis=0)


# ----------------------------------------------------------------------------- layout
@pytest.mark.parametrize("name", list(LAYOUT))
def test_groups_and_shapes(name, fits, idatas, faithful):
    fit, idata = fits[name], idatas[name]
    chains, draws = LAYOUT[name]
    n, d = faithful.shape
    assert {"posterior", "log_likelihood", "posterior_predictive", "observed_data"} <= set(
        idata.groups()
    )
    assert (idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]) == (chains, draws)
    assert idata.posterior.attrs["inference_method"] == fit.method
    # Posterior values are the fit's draws (point fits: the estimate as one chain, one draw).
    for site, value in fit.posterior().items():
        np.testing.assert_array_equal(idata.posterior[site].values, value.numpy())
    if fit.draws is None:
        for site, value in fit.params.items():
            np.testing.assert_array_equal(idata.posterior[site].values[0, 0], value.numpy())
    loglik = idata.log_likelihood["obs"]
    assert loglik.dims == ("chain", "draw", "obs_id")
    assert loglik.shape == (chains, draws, n)
    pred = idata.posterior_predictive["obs"]
    assert pred.dims[:3] == ("chain", "draw", "obs_id")
    assert pred.shape == (chains, draws, n, d)
    np.testing.assert_array_equal(idata.observed_data["obs"].values, faithful.numpy())


def test_svi_posterior_is_guide_draws(fits, idatas):
    """SVI draws are independent guide draws (they vary), not copies of the point estimate."""
    locs = idatas["svi"].posterior["locs"].values[0]
    assert locs.shape[0] == SVI_DRAWS
    assert (locs.std(axis=0) > 0).all()


def test_point_fits_documented_as_single_draw():
    doc = " ".join(importlib.import_module("probgen.arviz").__doc__.split())
    assert "EM and MAP fits: the point estimate as a single chain with a single draw" in doc


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("name", ["nuts", "svi", "em", "map"])
def test_log_likelihood_matches_scipy_mixture(name, idatas, faithful):
    idata = idatas[name]
    chains, draws = LAYOUT[name]
    x = faithful.numpy()
    for chain, draw in {(0, 0), (chains - 1, draws - 1), (chains - 1, draws // 2)}:
        expected = _mixture_logpdf(x, idata, chain, draw)
        actual = idata.log_likelihood["obs"].values[chain, draw]
        np.testing.assert_allclose(actual, expected, rtol=LOGLIK_RTOL)


@pytest.mark.parametrize("name", list(LAYOUT))
def test_log_likelihood_averages_to_fit_lppd(name, fits, idatas, faithful):
    """``log mean_s exp(loglik[s, n])`` is the fit's own log predictive density per point."""
    loglik = idatas[name].log_likelihood["obs"].values
    flat = loglik.reshape(-1, loglik.shape[-1])
    lppd = scipy.special.logsumexp(flat, axis=0) - math.log(flat.shape[0])
    np.testing.assert_allclose(lppd, fits[name].log_likelihood(faithful).numpy(), rtol=LOGLIK_RTOL)


@pytest.mark.parametrize("name", ["nuts", "svi", "em"])
def test_posterior_predictive_matches_data_moments(name, idatas, faithful):
    """Replicated data sets look like the data: per coordinate, the replicate mean is within
    ``5 sd / sqrt(N)`` of the data mean (one replicate's mean deviates by about
    ``sqrt(2) sd / sqrt(N)``: sampling noise plus posterior uncertainty; averaging over draws
    only shrinks that) and the replicate standard deviation within 10% of the data's (its
    relative sampling error is about ``1 / sqrt(2N)`` = 4% for one replicate)."""
    pred = idatas[name].posterior_predictive["obs"].values
    x = faithful.numpy()
    n = x.shape[0]
    assert np.isfinite(pred).all()
    flat = pred.reshape(-1, x.shape[1])
    sd = x.std(axis=0)
    np.testing.assert_array_less(np.abs(flat.mean(axis=0) - x.mean(axis=0)), 5 * sd / math.sqrt(n))
    np.testing.assert_allclose(pred.std(axis=2).mean(axis=(0, 1)), sd, rtol=0.10)


# ----------------------------------------------------------------------------- ArviZ on the outputs
def test_summary_of_nuts_has_finite_diagnostics(fits, idatas):
    summary = az.summary(idatas["nuts"], round_to="none")
    for column in ("r_hat", "ess_bulk", "ess_tail"):
        assert np.isfinite(summary[column].to_numpy()).all(), column
    # 2 x 50 draws: R-hat well below 1.2 and ESS above 10 show the chains are kept apart and
    # in draw order (shuffled or interleaved chains inflate R-hat or ESS accordingly).
    assert (summary["r_hat"] < 1.2).all()
    assert (summary["ess_bulk"] > 10).all()
    locs = fits["nuts"].draws["locs"].numpy()
    for k in range(2):
        for j in range(2):
            assert summary.loc[f"locs[{k}, {j}]", "mean"] == pytest.approx(
                locs[..., k, j].mean(), rel=1e-12
            )


@pytest.mark.filterwarnings(IGNORE_PARETO)
@pytest.mark.parametrize("name", ["nuts", "svi"])
def test_loo(name, fits, idatas, faithful):
    """LOO works and agrees with the fit: ArviZ's ``lppd = elpd_loo + p_loo`` is the fit's own
    train log predictive density, and the LOO penalty ``p_loo`` (about the number of free
    parameters, Gelman et al. 2014) is positive and below 3x that number, i.e. elpd_loo per
    point is within ``3 p / N`` (0.1-0.12 nats) of the fit's train LL per point."""
    n = faithful.shape[0]
    loo = az.loo(idatas[name], pointwise=True)
    lppd = fits[name].log_likelihood(faithful).sum().item()
    assert loo["elpd_loo"] + loo["p_loo"] == pytest.approx(lppd, rel=LOGLIK_RTOL)
    assert 0 < loo["p_loo"] < 3 * N_PARAMS[name]
    assert abs(loo["elpd_loo"] / n - lppd / n) < 3 * N_PARAMS[name] / n
    assert loo["loo_i"].shape == (n,)
    assert np.isfinite(loo["pareto_k"].values).all()


@pytest.mark.filterwarnings(IGNORE_PARETO)
@pytest.mark.filterwarnings(IGNORE_PANDAS_INPLACE)
def test_compare_ranks_two_components_above_one(idatas):
    table = az.compare({"k1": idatas["nuts_k1"], "k2": idatas["nuts"]})
    assert list(table.index) == ["k2", "k1"]
    # Old Faithful is plainly bimodal: K=2 wins by far more than the difference's standard error.
    assert table.loc["k1", "elpd_diff"] > 4 * table.loc["k1", "dse"]


@pytest.mark.filterwarnings(IGNORE_MPL_ALIAS_MAPPING)
def test_plot_trace(idatas):
    import matplotlib.pyplot as plt

    try:
        axes = az.plot_trace(idatas["nuts"])
        # Compact layout: one row per site (weights, locs, scales), density and trace columns.
        assert axes.shape == (3, 2)
        titles = {ax.get_title() for ax in axes[:, 0]}
        assert titles == {"weights", "locs", "scales"}
    finally:
        plt.close("all")


@pytest.mark.parametrize("name", ["nuts", "em"])
def test_netcdf_round_trip(name, idatas, tmp_path):
    idata = idatas[name]
    path = tmp_path / f"{name}.nc"
    idata.to_netcdf(str(path))
    loaded = az.from_netcdf(str(path))
    assert set(loaded.groups()) == set(idata.groups())
    for group in idata.groups():
        before, after = idata[group], loaded[group]
        assert set(after.data_vars) == set(before.data_vars)
        for var in before.data_vars:
            assert after[var].dims == before[var].dims
            np.testing.assert_array_equal(after[var].values, before[var].values)
    assert loaded.posterior.attrs["inference_method"] == idata.posterior.attrs["inference_method"]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("not_a_fit", [None, {"locs": torch.zeros(2, 2)}, "em"])
def test_rejects_non_fit(not_a_fit, faithful):
    with pytest.raises(TypeError, match=r"probgen\.Fit"):
        probgen.to_arviz(not_a_fit, faithful)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(torch.tensor([[1.0, float("nan")], [2.0, 60.0]]), id="nan"),
        pytest.param(torch.tensor([[1.0, float("inf")], [2.0, 60.0]]), id="inf"),
        pytest.param(torch.zeros(0, 2), id="empty"),
        pytest.param(torch.ones(5, 3, dtype=torch.float64), id="three-features"),
        pytest.param(torch.ones(5, dtype=torch.float64), id="one-dimensional"),
        pytest.param([["a", "b"], ["c", "d"]], id="strings"),
    ],
)
def test_rejects_bad_data(bad, fits):
    with pytest.raises(ValueError, match=r"data|x "):
        probgen.to_arviz(fits["em"], bad)


# ----------------------------------------------------------------------------- module boundary
def _imports_arviz(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(name == "arviz" or name.startswith("arviz.") for name in names):
            return True
    return False


def test_only_probgen_arviz_imports_arviz():
    importers = sorted(
        p.relative_to(PROBGEN_DIR).as_posix()
        for p in PROBGEN_DIR.rglob("*.py")
        if _imports_arviz(p)
    )
    assert importers == ["arviz.py"]


def test_import_probgen_does_not_load_arviz():
    """``probgen.to_arviz`` imports ArviZ lazily, so ``import probgen`` stays light."""
    code = "import sys, probgen; print(sorted(m for m in ('arviz', 'xarray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
