"""Tests of the closed-form Gaussian-mixture EM numerics against scikit-learn and scipy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import _estimate_gaussian_parameters

from models import gmm_em

FAITHFUL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "faithful.csv"
REG_COVAR = 1e-6
EM_TOL = 1e-10
MAX_ITER = 1000
# Both fits run the same EM map from the same start, differing only by rounding (~1e-14),
# so the converged mean log-likelihood per point must agree far below this.
LOGLIK_ATOL = 1e-6
# Near convergence EM moves the parameters by ~sqrt(loglik change / curvature) per step;
# with EM_TOL = 1e-10 the two fits may stop one step apart, i.e. up to ~1e-5 in parameter
# units (measured: <= 1e-12, because both stop on the same iteration). Relative to the
# data scale for the means; absolute for the weights, which live in [0, 1].
MEANS_RTOL = 1e-5
WEIGHTS_ATOL = 1e-6
# One M-step or one E-step from the same inputs: only rounding differs.
STEP_RTOL = 1e-9
DT = torch.float64


def _faithful() -> np.ndarray:
    return np.loadtxt(FAITHFUL, delimiter=",", skiprows=1)


def _blobs() -> np.ndarray:
    rng = np.random.default_rng(12345)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 6.0, 4.0]])
    scales = [1.0, 0.5, 1.5]
    parts = [rng.normal(c, s, size=(200, 3)) for c, s in zip(centres, scales, strict=True)]
    return np.concatenate(parts)


DATASETS = {"faithful": (_faithful, 2), "blobs": (_blobs, 3)}


def _precisions(cov: np.ndarray, covariance_type: str) -> np.ndarray:
    return np.linalg.inv(cov) if covariance_type in ("full", "tied") else 1.0 / cov


def _our_em(
    prep: gmm_em.Prepared, params: gmm_em.GMMParams, max_iter: int = MAX_ITER
) -> tuple[gmm_em.GMMParams, list[float]]:
    """EM as sklearn runs it: stop when the mean log-likelihood changes by < EM_TOL."""
    history: list[float] = []
    for _ in range(max_iter):
        log_resp, loglik = gmm_em.e_step(prep, params)
        params = gmm_em.m_step(prep, log_resp, REG_COVAR)
        history.append(float(loglik))
        if len(history) > 1 and abs(history[-1] - history[-2]) < EM_TOL:
            break
    return params, history


@pytest.mark.parametrize("covariance_type", gmm_em.COVARIANCE_TYPES)
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_em_matches_sklearn(dataset: str, covariance_type: str) -> None:
    make, k = DATASETS[dataset]
    x_np = make()
    x = torch.tensor(x_np, dtype=DT)
    prep = gmm_em.prepare(x, covariance_type)
    gen = torch.Generator().manual_seed(0)
    init = gmm_em.initialize(prep, k, REG_COVAR, gen, means_init=gmm_em.kmeans_plusplus(x, k, gen))

    ref = GaussianMixture(
        n_components=k,
        covariance_type=covariance_type,
        tol=EM_TOL,
        max_iter=MAX_ITER,
        reg_covar=REG_COVAR,
        weights_init=init.weights.numpy(),
        means_init=init.means.numpy(),
        precisions_init=_precisions(init.covariances.numpy(), covariance_type),
    ).fit(x_np)
    assert ref.converged_

    params, _ = _our_em(prep, init)
    loglik = float(gmm_em.e_step(prep, params)[1])
    assert loglik == pytest.approx(ref.score(x_np), abs=LOGLIK_ATOL)
    scale = np.abs(x_np).max()
    np.testing.assert_allclose(params.means.numpy(), ref.means_, rtol=0, atol=MEANS_RTOL * scale)
    np.testing.assert_allclose(params.weights.numpy(), ref.weights_, rtol=0, atol=WEIGHTS_ATOL)
    assert params.covariances.shape == ref.covariances_.shape
    for t in params:
        assert t.dtype == DT


@pytest.mark.parametrize("covariance_type", gmm_em.COVARIANCE_TYPES)
def test_single_steps_match_sklearn(covariance_type: str) -> None:
    """One M-step and one E-step from identical inputs agree to rounding."""
    x_np = _blobs()
    x = torch.tensor(x_np, dtype=DT)
    prep = gmm_em.prepare(x, covariance_type)
    rng = np.random.default_rng(1)
    resp = rng.dirichlet(np.ones(3), size=x_np.shape[0])
    params = gmm_em.m_step(prep, torch.tensor(np.log(resp), dtype=DT), REG_COVAR)
    nk, means, covs = _estimate_gaussian_parameters(x_np, resp, REG_COVAR, covariance_type)
    np.testing.assert_allclose(params.weights.numpy(), nk / nk.sum(), rtol=STEP_RTOL)
    np.testing.assert_allclose(params.means.numpy(), means, rtol=STEP_RTOL, atol=1e-12)
    np.testing.assert_allclose(params.covariances.numpy(), covs, rtol=STEP_RTOL, atol=1e-12)

    ref = GaussianMixture(3, covariance_type=covariance_type, reg_covar=REG_COVAR)
    ref.weights_, ref.means_, ref.covariances_ = nk / nk.sum(), means, covs
    ref.precisions_cholesky_ = _precision_cholesky(covs, covariance_type)
    log_resp, loglik = gmm_em.e_step(prep, params)
    np.testing.assert_allclose(float(loglik), ref.score(x_np), rtol=STEP_RTOL)
    np.testing.assert_allclose(log_resp.numpy(), np.log(ref.predict_proba(x_np)), atol=1e-9)


def _precision_cholesky(cov: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type == "full":
        return np.stack([np.linalg.inv(np.linalg.cholesky(c)).T for c in cov])
    if covariance_type == "tied":
        return np.linalg.inv(np.linalg.cholesky(cov)).T
    return 1.0 / np.sqrt(cov)


@pytest.mark.parametrize("covariance_type", gmm_em.COVARIANCE_TYPES)
def test_component_log_prob_matches_scipy(covariance_type: str) -> None:
    x = torch.tensor(_faithful(), dtype=DT)
    prep = gmm_em.prepare(x, covariance_type)
    params = gmm_em.initialize(prep, 3, REG_COVAR, torch.Generator().manual_seed(3))
    got = gmm_em.component_log_prob(x, params, covariance_type).numpy()
    cov = params.covariances.numpy()
    d = x.shape[1]
    for j, mean in enumerate(params.means.numpy()):
        sigma = {
            "full": lambda j: cov[j],
            "tied": lambda j: cov,
            "diag": lambda j: np.diag(cov[j]),
            "spherical": lambda j: cov[j] * np.eye(d),
        }[covariance_type](j)
        want = scipy.stats.multivariate_normal(mean, sigma).logpdf(x.numpy())
        np.testing.assert_allclose(got[:, j], want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("covariance_type", gmm_em.COVARIANCE_TYPES)
def test_m_step_chunked_gram_matches_single_gemm(covariance_type: str) -> None:
    """The multi-threaded M-step splits resp^T @ Phi over row chunks; same result."""
    rng = np.random.default_rng(2)
    n = 3 * 8192 + 7  # large enough to take the chunked path, with a remainder
    x = torch.tensor(rng.normal(size=(n, 3)), dtype=DT)
    log_resp = torch.tensor(np.log(rng.dirichlet(np.ones(4), size=n)), dtype=DT)
    prep = gmm_em.prepare(x, covariance_type)
    single = gmm_em.m_step(prep, log_resp, REG_COVAR)  # module fixture: one thread
    torch.set_num_threads(3)
    try:
        chunked = gmm_em.m_step(prep, log_resp, REG_COVAR)
    finally:
        torch.set_num_threads(1)
    for a, b in zip(single, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_e_step_log_resp_rows_normalise() -> None:
    x = torch.tensor(_blobs(), dtype=DT)
    prep = gmm_em.prepare(x, "full")
    params = gmm_em.initialize(prep, 4, REG_COVAR, torch.Generator().manual_seed(0))
    log_resp, loglik = gmm_em.e_step(prep, params)
    assert log_resp.shape == (x.shape[0], 4)
    assert loglik.ndim == 0
    torch.testing.assert_close(log_resp.exp().sum(1), torch.ones(x.shape[0], dtype=DT))
    # Mean log-likelihood is the mean of logsumexp of the weighted component densities.
    weighted = gmm_em.component_log_prob(x, params, "full") + params.weights.log()
    torch.testing.assert_close(loglik, torch.logsumexp(weighted, 1).mean())


@pytest.mark.parametrize("covariance_type", gmm_em.COVARIANCE_TYPES)
def test_em_loglik_is_monotone(covariance_type: str) -> None:
    x = torch.tensor(_faithful(), dtype=DT)
    prep = gmm_em.prepare(x, covariance_type)
    params = gmm_em.initialize(prep, 3, REG_COVAR, torch.Generator().manual_seed(7))
    _, history = _our_em(prep, params, max_iter=150)  # tied converges slowly here
    assert len(history) > 3
    # EM never decreases the likelihood; allow only rounding noise.
    assert np.all(np.diff(history) >= -1e-12)


def test_kmeans_plusplus_distinct_and_reproducible() -> None:
    x = torch.tensor(_blobs(), dtype=DT)
    seeds = gmm_em.kmeans_plusplus(x, 10, torch.Generator().manual_seed(42))
    again = gmm_em.kmeans_plusplus(x, 10, torch.Generator().manual_seed(42))
    assert seeds.shape == (10, 3)
    assert torch.equal(seeds, again)
    # Every seed is a data point, and no point is chosen twice.
    matches = (seeds[:, None, :] == x[None, :, :]).all(-1)
    assert torch.all(matches.sum(1) == 1)
    assert len(set(matches.float().argmax(1).tolist())) == 10


def test_initialize_keeps_means_init_exactly() -> None:
    x = torch.tensor(_faithful(), dtype=DT)
    means_init = torch.tensor([[2.0, 55.0], [4.5, 80.0]], dtype=DT)
    for covariance_type in gmm_em.COVARIANCE_TYPES:
        prep = gmm_em.prepare(x, covariance_type)
        params = gmm_em.initialize(prep, 2, REG_COVAR, torch.Generator(), means_init=means_init)
        assert torch.equal(params.means, means_init)
        assert float(params.weights.sum()) == pytest.approx(1.0, abs=1e-14)


def test_initialize_is_reproducible() -> None:
    x = torch.tensor(_blobs(), dtype=DT)
    prep = gmm_em.prepare(x, "diag")
    a = gmm_em.initialize(prep, 3, REG_COVAR, torch.Generator().manual_seed(5))
    b = gmm_em.initialize(prep, 3, REG_COVAR, torch.Generator().manual_seed(5))
    for s, t in zip(a, b, strict=True):
        assert torch.equal(s, t)


@pytest.mark.parametrize("covariance_type", gmm_em.COVARIANCE_TYPES)
def test_n_parameters_matches_sklearn(covariance_type: str) -> None:
    for k, d in [(1, 1), (3, 2), (5, 7)]:
        ref = GaussianMixture(k, covariance_type=covariance_type)
        ref.means_ = np.zeros((k, d))
        assert gmm_em.n_parameters(k, d, covariance_type) == ref._n_parameters()


def test_bad_covariance_type_raises() -> None:
    x = torch.zeros(4, 2, dtype=DT)
    with pytest.raises(ValueError, match="covariance_type"):
        gmm_em.prepare(x, "banana")
    with pytest.raises(ValueError, match="covariance_type"):
        gmm_em.n_parameters(2, 2, "banana")


def test_not_positive_definite_mentions_reg_covar() -> None:
    x = torch.tensor(_blobs(), dtype=DT)
    prep = gmm_em.prepare(x, "full")
    params = gmm_em.initialize(prep, 2, REG_COVAR, torch.Generator().manual_seed(0))
    bad = params._replace(covariances=-params.covariances)
    with pytest.raises(ValueError, match="reg_covar"):
        gmm_em.e_step(prep, bad)


def test_float32_in_float32_out() -> None:
    x = torch.tensor(_faithful(), dtype=torch.float32)
    prep = gmm_em.prepare(x, "full")
    params = gmm_em.initialize(prep, 2, 1e-4, torch.Generator().manual_seed(0))
    log_resp, loglik = gmm_em.e_step(prep, params)
    params = gmm_em.m_step(prep, log_resp, 1e-4)
    assert all(t.dtype == torch.float32 for t in (*params, log_resp, loglik))
    assert math.isfinite(float(loglik))
