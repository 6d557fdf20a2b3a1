"""kNN estimators: exact agreement with scipy/sklearn neighbour searches, closed forms, errors.

Tolerances against closed forms are ``5 sd + |bias|`` of the estimator at the stated size,
with sd and bias measured over 30 seeds (so a false failure needs a > 5 sd deviation).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln
from scipy.stats import multivariate_normal
from sklearn.feature_selection import mutual_info_regression
from torch.distributions import MultivariateNormal, kl_divergence

from probgen.diagnostics import knn
from probgen.diagnostics._base import Samples
from probgen.diagnostics.knn import knn_entropy, knn_kl_divergence, ksg_mutual_information

#: Same neighbours as a KD-tree search: only the rounding of distances and sums differs.
EXACT_RTOL = 1e-10
#: KL-entropy of a 3-D Gaussian, k = 3: bias -0.043, sd 0.054 at N = 500.
ENTROPY_TOL_N500 = 0.32
#: ... and bias -0.018, sd 0.019 at N = 8000: the tolerance shrinks with N like the error.
ENTROPY_TOL_N8000 = 0.12
#: Uniform box, N = 2000, k = 3: boundary bias +0.025, sd 0.017.
UNIFORM_TOL = 0.11
#: WKV KL between 2-D Gaussians, N = M = 4000, k = 3: bias -0.031, sd 0.023.
KL_TOL = 0.15
#: KSG, N = 2000, k = 3, 1-D or 2-D marginals: |bias| <= 0.007, sd <= 0.026 (rho <= 0.9).
KSG_TOL = 0.14
#: sklearn perturbs the standardised data by 1e-10 noise, far below neighbour-distance gaps.
SKLEARN_ATOL = 1e-9


def _gaussian(n: int, cov: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, cov.shape[0], generator=gen, dtype=torch.float64)
    return z @ torch.linalg.cholesky(cov).T


def _correlated(n: int, rho: float, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x, y in R^dim with corr(x_j, y_j) = rho per coordinate: I = -dim/2 log(1 - rho^2)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2 * dim, generator=gen, dtype=torch.float64)
    x = z[:, :dim]
    return x, rho * x + math.sqrt(1 - rho**2) * z[:, dim:]


COV3 = torch.tensor([[1.0, 0.5, 0.2], [0.5, 2.0, 0.3], [0.2, 0.3, 0.5]], dtype=torch.float64)


# --- exact agreement with KD-tree implementations of the same formulas ---------------------


def test_entropy_matches_kdtree_formula():
    x = _gaussian(1500, COV3, 1).numpy()
    n, d, k = *x.shape, 4
    eps = cKDTree(x).query(x, k=k + 1)[0][:, -1]
    log_vd = d / 2 * math.log(math.pi) - gammaln(d / 2 + 1)
    ref = digamma(n) - digamma(k) + log_vd + d * np.mean(np.log(eps))
    est = knn_entropy(Samples(torch.from_numpy(x)), k=k)
    assert est.estimator == "knn" and est.unit == "nats" and est.num_samples == n
    assert float(est) == pytest.approx(ref, rel=EXACT_RTOL)


def test_kl_matches_kdtree_formula():
    x = _gaussian(1200, COV3, 2).numpy()
    y = _gaussian(900, 2 * COV3, 3).numpy() + 0.3
    n, d, k = *x.shape, 2
    rho = cKDTree(x).query(x, k=k + 1)[0][:, -1]
    nu = cKDTree(y).query(x, k=k)[0][:, -1]
    ref = d * np.mean(np.log(nu / rho)) + math.log(len(y) / (n - 1))
    est = knn_kl_divergence(torch.from_numpy(x), torch.from_numpy(y), k=k)
    assert float(est) == pytest.approx(ref, rel=EXACT_RTOL)


def test_ksg_matches_kdtree_counts():
    x, y = _correlated(1500, 0.7, 2, 4)
    xn, yn, k = x.numpy(), y.numpy(), 3
    joint = np.hstack([xn, yn])
    radius = np.nextafter(cKDTree(joint).query(joint, k=k + 1, p=np.inf)[0][:, -1], 0)
    nx = cKDTree(xn).query_ball_point(xn, radius, p=np.inf, return_length=True) - 1
    ny = cKDTree(yn).query_ball_point(yn, radius, p=np.inf, return_length=True) - 1
    ref = digamma(k) + digamma(len(xn)) - np.mean(digamma(nx + 1) + digamma(ny + 1))
    est = ksg_mutual_information(x, y, k=k)
    assert est.estimator == "ksg"
    assert float(est) == pytest.approx(ref, rel=EXACT_RTOL)


def test_ksg_matches_sklearn_mutual_info_regression():
    # sklearn scales each variable to unit variance (KSG's max-norm is not scale-invariant)
    # and adds 1e-10 noise; on the same standardised data the neighbour counts coincide.
    x, y = _correlated(800, 0.5, 1, 5)
    x, y = 3.0 * x, y - 1.0
    ref = mutual_info_regression(x.numpy(), y.squeeze(1).numpy(), n_neighbors=3, random_state=0)
    est = ksg_mutual_information(x / x.std(unbiased=False), y / y.std(unbiased=False), k=3)
    assert float(est) == pytest.approx(float(ref[0]), abs=SKLEARN_ATOL)


def test_blocking_does_not_change_results(monkeypatch):
    x, y = _correlated(300, 0.6, 2, 6)
    full = [knn_entropy(x), knn_kl_divergence(x, y + 0.5), ksg_mutual_information(x, y)]
    monkeypatch.setattr(knn, "BLOCK_BYTES", 7 * 300 * 8)  # 7-row blocks, ragged last block
    blocked = [knn_entropy(x), knn_kl_divergence(x, y + 0.5), ksg_mutual_information(x, y)]
    for a, b in zip(full, blocked, strict=True):
        assert float(a) == pytest.approx(float(b), rel=EXACT_RTOL)


# --- closed forms --------------------------------------------------------------------------


def test_entropy_gaussian_error_shrinks_with_n():
    truth = multivariate_normal(np.zeros(3), COV3.numpy()).entropy()
    small = knn_entropy(_gaussian(500, COV3, 7))
    large = knn_entropy(_gaussian(8000, COV3, 8))
    assert abs(float(small) - truth) < ENTROPY_TOL_N500
    assert abs(float(large) - truth) < ENTROPY_TOL_N8000
    # The plug-in standard error falls like 1/sqrt(N): a factor 4 from 500 to 8000.
    assert 2.5 < float(small.stderr) / float(large.stderr) < 6.0


def test_entropy_uniform_box():
    gen = torch.Generator().manual_seed(9)
    x = torch.rand(2000, 2, generator=gen, dtype=torch.float64) * torch.tensor([2.0, 3.0])
    assert float(knn_entropy(x)) == pytest.approx(math.log(6.0), abs=UNIFORM_TOL)


def test_entropy_follows_float32():
    x = _gaussian(500, COV3, 10)
    est32 = knn_entropy(x.float())
    assert est32.value.dtype == torch.float32 and est32.stderr.dtype == torch.float32
    assert float(est32) == pytest.approx(float(knn_entropy(x)), abs=1e-4)


def test_kl_between_gaussians():
    p = MultivariateNormal(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    q = MultivariateNormal(
        torch.tensor([0.5, -0.3], dtype=torch.float64),
        torch.tensor([[1.5, 0.4], [0.4, 0.8]], dtype=torch.float64),
    )
    truth = float(kl_divergence(p, q))
    est = knn_kl_divergence(p.sample((4000,)), q.sample((4000,)), k=3)
    assert float(est) == pytest.approx(truth, abs=KL_TOL)
    same = knn_kl_divergence(p.sample((4000,)), p.sample((4000,)), k=3)
    assert abs(float(same)) < KL_TOL


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_ksg_correlated_gaussians(rho):
    x, y = _correlated(2000, rho, 1, 11)
    assert float(ksg_mutual_information(x, y)) == pytest.approx(
        -0.5 * math.log(1 - rho**2), abs=KSG_TOL
    )


def test_ksg_multivariate_marginals():
    x, y = _correlated(2000, 0.6, 2, 12)
    assert float(ksg_mutual_information(x, y)) == pytest.approx(-math.log(1 - 0.36), abs=KSG_TOL)


def test_ksg_independent_is_near_zero_and_not_clamped():
    gen = torch.Generator().manual_seed(13)
    xy = torch.randn(2000, 2, generator=gen, dtype=torch.float64)
    values = [float(ksg_mutual_information(xy[:, 0], xy[:, 1].roll(s))) for s in range(6)]
    assert all(abs(v) < KSG_TOL for v in values)
    assert min(values) < 0  # the raw estimate scatters around 0; nothing clamps it


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k(k):
    x = _gaussian(50, COV3, 14)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        knn_entropy(x, k=k)


def test_too_few_points():
    x = _gaussian(3, COV3, 15)
    with pytest.raises(ValueError, match="needs at least 4"):
        knn_entropy(x, k=3)
    with pytest.raises(ValueError, match="needs at least 4"):
        ksg_mutual_information(x[:, 0], x[:, 1], k=3)
    with pytest.raises(ValueError, match="y has 3 points; k=4 needs at least 4"):
        knn_kl_divergence(_gaussian(10, COV3, 16), x, k=4)


def test_mismatched_shapes():
    x = _gaussian(20, COV3, 17)
    with pytest.raises(ValueError, match="same dimension"):
        knn_kl_divergence(x, x[:, :2])
    with pytest.raises(ValueError, match="same N"):
        ksg_mutual_information(x, x[:15])


def test_duplicates_raise_with_noise_hint():
    x = _gaussian(20, COV3, 18)
    dup = torch.cat([x, x[:3]])
    with pytest.raises(ValueError, match=r"repeated points.*add tiny noise"):
        knn_entropy(dup, k=1)
    with pytest.raises(ValueError, match="repeated points"):
        knn_kl_divergence(dup, x + 1.0, k=1)
    with pytest.raises(ValueError, match="coincide with"):
        knn_kl_divergence(x, x[:5], k=1)
    with pytest.raises(ValueError, match="repeated pairs"):
        ksg_mutual_information(torch.cat([x[:, 0], x[:4, 0]]), torch.cat([x[:, 1], x[:4, 1]]), 1)


def test_invalid_draws():
    with pytest.raises(TypeError, match="x must be a Tensor of draws"):
        knn_entropy([[0.0, 1.0], [1.0, 2.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="x: Samples holds NaN"):
        knn_entropy(torch.tensor([0.0, math.nan, 1.0]), k=1)
