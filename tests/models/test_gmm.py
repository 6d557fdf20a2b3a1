"""The Gaussian mixture family: one Pyro program fitted by EM, MAP, SVI and NUTS.

References: scikit-learn's ``GaussianMixture`` (log-likelihood, predict, BIC/AIC), scipy's
normal densities, known generating parameters, and Pyro's own ``Predictive`` and ``MCMC``.
"""

import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import MCMC, NUTS, Predictive
from scipy import stats
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import probgen
from models.gmm import GaussianMixture
from probgen.infer.em import ConvergenceWarning

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
#: SVI-MAP vs EM mean log-likelihood per point (the acceptance criterion): MAP's weak prior
#: moves the optimum by O(1/N) nats per point, far below this.
MAP_VS_EM_ATOL = 1e-2


@pytest.fixture(scope="module")
def x():
    return probgen.data.faithful()


@pytest.fixture(scope="module")
def em_fits(x):
    fits = {}
    for cov in COVARIANCE_TYPES:
        gmm = GaussianMixture(2, cov)
        fits[cov] = (gmm, probgen.fit(gmm, x, method="em", tol=1e-8, max_iter=500, progress=False))
    return fits


@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_closed_form_log_likelihood_matches_scipy(em_fits, x, cov):
    gmm, _ = em_fits[cov]
    w, mu, covs = gmm.weights_, gmm.means_, gmm.covariances_
    full = {
        "full": covs,
        "tied": covs.expand(2, 2, 2),
        "diag": torch.diag_embed(covs),
        "spherical": covs[:, None, None] * torch.eye(2, dtype=covs.dtype),
    }[cov]
    dens = sum(
        w[k].item() * stats.multivariate_normal(mu[k].numpy(), full[k].numpy()).pdf(x.numpy())
        for k in range(2)
    )
    np.testing.assert_allclose(gmm.log_prob(x).numpy(), np.log(dens), rtol=1e-10)


@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_predict_bic_aic_match_sklearn(em_fits, x, cov):
    gmm, fit = em_fits[cov]
    sk = SkGaussianMixture(
        2,
        covariance_type=cov,
        tol=1e-10,
        max_iter=1000,
        means_init=gmm.means_.numpy(),
        random_state=0,
    ).fit(x.numpy())
    assert fit.converged
    assert -fit.final_objective == pytest.approx(sk.score(x.numpy()), abs=1e-6)
    # Same optimum, so the same labels (both canonically ordered by the means' first coordinate).
    order = np.argsort(sk.means_[:, 0])
    np.testing.assert_array_equal(np.argsort(order)[sk.predict(x.numpy())], gmm.predict(x).numpy())
    # Both stop once the log-likelihood moves < 1e-8 per point; parameters then still differ by
    # ~sqrt(1e-8) = 1e-4 along flat directions (spherical converges slowest), so 1e-4 on probas.
    np.testing.assert_allclose(
        gmm.predict_proba(x).numpy(), sk.predict_proba(x.numpy())[:, order], atol=1e-4
    )
    assert gmm.bic(x) == pytest.approx(sk.bic(x.numpy()), rel=1e-8, abs=1e-4)
    assert gmm.aic(x) == pytest.approx(sk.aic(x.numpy()), rel=1e-8, abs=1e-4)


def test_bic_prefers_two_components_on_old_faithful(x):
    bics = []
    for k in (1, 2, 3):
        gmm = GaussianMixture(k)
        probgen.fit(gmm, x, method="em", n_init=3, progress=False)
        bics.append(gmm.bic(x))
    assert int(np.argmin(bics)) == 1


def test_em_restarts_keep_the_best_and_warn_when_not_converged(x):
    gmm = GaussianMixture(3)
    fit = probgen.fit(gmm, x, method="em", n_init=4, progress=False, seed=1)
    restarts = fit.diagnostics["restart_log_likelihoods"]
    assert len(restarts) == 4 and -fit.final_objective == pytest.approx(max(restarts))
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        fit = probgen.fit(GaussianMixture(3), x, method="em", max_iter=2, tol=0.0, progress=False)
    assert not fit.converged and fit.n_iter == 2


@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_svi_map_reaches_em_log_likelihood(em_fits, x, cov):
    _, em = em_fits[cov]
    gmm = GaussianMixture(2, cov)
    fit = probgen.fit(gmm, x, method="map", steps=250, lr=0.05, progress=False)
    assert fit.draws is None and fit.diagnostics["objective_name"] == "enum"
    em_ll, map_ll = -em.final_objective, gmm.log_prob(x).mean().item()
    assert abs(map_ll - em_ll) < MAP_VS_EM_ATOL
    torch.testing.assert_close(
        gmm.means_, em.params["locs"], atol=0.05 * x.std(0).max().item(), rtol=0
    )


def test_svi_full_posterior_has_draws_and_khat(x):
    gmm = GaussianMixture(2, "diag")
    fit = probgen.fit(gmm, x, method="svi", steps=500, lr=0.05, num_draws=300, progress=False)
    assert fit.draws["locs"].shape == (1, 300, 2, 2)
    # Canonical order: component 0 has the smaller first coordinate in every draw.
    assert (fit.draws["locs"][..., 0, 0] < fit.draws["locs"][..., 1, 0]).all()
    assert fit.log_likelihood(x).shape == (272,)


@pytest.fixture(scope="module")
def one_d():
    """500 points from 0.3 N(-2, 0.5^2) + 0.7 N(2, 1)."""
    g = torch.Generator().manual_seed(0)
    z = torch.rand(500, generator=g) < 0.3
    x = torch.where(z, -2 + 0.5 * torch.randn(500, generator=g), 2 + torch.randn(500, generator=g))
    return x.double().unsqueeze(-1)


def test_nuts_recovers_known_one_dimensional_mixture(one_d):
    gmm = GaussianMixture(2, "diag")
    fit = probgen.fit(
        gmm, one_d, method="nuts", num_samples=200, warmup_steps=200, num_chains=2, progress=False
    )
    draws = fit.draws
    truth = {"weights": [0.3, 0.7], "locs": [-2.0, 2.0], "scales": [0.5, 1.0]}
    for site, values in truth.items():
        d = draws[site].reshape(-1, 2)
        for k, true in enumerate(values):
            # The truth lies within 4 posterior sd of the posterior mean (plus a 0.02 floor for
            # the sampling variability of this one data set's MLE vs the generating value).
            assert abs(d[:, k].mean().item() - true) < 4 * d[:, k].std().item() + 0.02, (site, k)
    assert fit.diagnostics["r_hat"] < 1.05
    assert fit.diagnostics["divergences"] == 0


def test_model_runs_unchanged_under_pyro_predictive_and_mcmc(one_d):
    gmm = GaussianMixture(2, "diag")
    gmm.setup(one_d)
    prior = Predictive(gmm.model, num_samples=7)(None, n=20)
    assert prior["obs"].shape == (7, 20, 1) and prior["assignment"].shape == (7, 20)
    pyro.set_rng_seed(0)
    mcmc = MCMC(
        NUTS(gmm.model, max_plate_nesting=1), num_samples=30, warmup_steps=30, disable_progbar=True
    )
    mcmc.run(one_d)
    samples = mcmc.get_samples()
    assert samples["locs"].shape == (30, 2, 1)
    assert torch.isfinite(samples["scales"]).all()


def test_sample_matches_the_mixture_moments(em_fits):
    gmm, _ = em_fits["full"]
    torch.manual_seed(0)
    s = gmm.sample(20000)
    w, mu, cov = gmm.weights_, gmm.means_, gmm.covariances_
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    covariance = second - mean[:, None] * mean[None, :]
    # Monte Carlo error of 20000 draws: se(mean) = sd/141; 5 se bounds a 1e-6 false failure.
    sd = covariance.diagonal().sqrt()
    assert ((s.mean(0) - mean).abs() < 5 * sd / math.sqrt(20000)).all()
    torch.testing.assert_close(s.T.cov(), covariance, rtol=0.05, atol=0.0)


def test_two_fitted_mixtures_coexist(x):
    a, b = GaussianMixture(2), GaussianMixture(3)
    probgen.fit(a, x, method="map", steps=50, progress=False)
    probgen.fit(b, probgen.data.blobs(), method="map", steps=50, progress=False)
    assert a.means_.shape == (2, 2) and b.means_.shape == (3, 2)
    assert len(pyro.get_param_store()) == 0


@pytest.mark.parametrize(
    ("build", "data", "message"),
    [
        (lambda: GaussianMixture(0), None, "n_components must be an integer >= 1, got 0"),
        (lambda: GaussianMixture(2, "banded"), None, "covariance_type must be one of full"),
        (lambda: GaussianMixture(2, reg_covar=-1.0), None, "reg_covar must be >= 0"),
        (
            lambda: GaussianMixture(5),
            torch.randn(3, 2, dtype=torch.float64),
            "data has 3 points, fewer than n_components=5",
        ),
        (
            lambda: GaussianMixture(2),
            torch.randn(10, dtype=torch.float64),
            "data must be 2-dimensional",
        ),
        (
            lambda: GaussianMixture(2, means_init=torch.zeros(3, 2)),
            torch.randn(10, 2),
            "means_init must have shape (2, 2)",
        ),
    ],
)
def test_bad_input_is_named(build, data, message):
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        probgen.fit(build(), data, method="em", progress=False)


def test_dimension_mismatch_and_unfitted_model(em_fits):
    gmm, _ = em_fits["full"]
    with pytest.raises(ValueError, match="x has 3 features per row; the model was fitted with 2"):
        gmm.predict(torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(probgen.NotFittedError, match="not fitted"):
        GaussianMixture(2).sample(3)
