"""Probabilistic PCA and factor analysis: closed form, EM and SVI through ``probgen.fit``.

References: scikit-learn's ``PCA.score`` (the PPCA log-likelihood, Tipping & Bishop 1999) and
``FactorAnalysis.score``, scipy's ``multivariate_normal`` and ``subspace_angles``, and Tipping &
Bishop's posterior formulas written out in NumPy.
"""

import math

import numpy as np
import pytest
import torch
from scipy import linalg, stats
from sklearn.decomposition import PCA, FactorAnalysis

import probgen
from models.ppca import LOADINGS, LOC, NOISE, PPCA
from probgen.core import NotFittedError

N, D, Q = 400, 8, 2
#: Log-likelihoods of the same parameters computed two ways (Woodbury vs LAPACK): float64
#: round-off on sums of ~N * 15 nats.
EXACT_RTOL = 1e-10
#: Principal angles (radians) between two computations of one subspace: eigen-solver round-off.
ANGLE_ATOL = 1e-6
#: EM run to tol=1e-12 vs the closed-form optimum, nats per point: EM's geometric convergence
#: leaves an error of the order of the last change divided by (1 - rate), far below this.
EM_VS_CLOSED_FORM_ATOL = 1e-8
#: EM factor analysis vs scikit-learn's SVD-based iteration, nats per point: both stop at
#: tol=1e-12-level changes near the same local optimum (same PCA-like start).
FA_VS_SKLEARN_ATOL = 1e-6
#: SVI vs the ML log-likelihood, nats per point. With the exact posterior as guide, every ELBO
#: draw equals log p(x | theta) (zero gradient variance), so the only error is Adam's jitter at a
#: constant learning rate: measured 1e-7 .. 5e-5 after 400-1000 steps (lr 0.05 / 0.1).
SVI_VS_ML_ATOL = 1e-3
#: Standard errors allowed for sample moments: P(|Z| > 6) ~ 2e-9 per entry.
Z_MAX = 6.0


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    """``[N, D]`` float64 draws from a factor model with unequal noise and a clear eigengap."""
    g = torch.Generator().manual_seed(1)
    w = 2.0 * torch.randn(D, Q, generator=g, dtype=torch.float64)
    psi = 0.2 + torch.rand(D, generator=g, dtype=torch.float64)
    z = torch.randn(N, Q, generator=g, dtype=torch.float64)
    eps = torch.randn(N, D, generator=g, dtype=torch.float64) * psi.sqrt()
    return z @ w.T + eps + 3.0


@pytest.fixture(scope="module")
def closed(x) -> PPCA:
    model = PPCA(Q)
    model.fit_closed_form(x)
    return model


@pytest.fixture(scope="module")
def fa(x) -> PPCA:
    model = PPCA(Q, noise="diagonal")
    probgen.fit(model, x, method="em", tol=1e-12, max_iter=5000, progress=False)
    return model


def _total(model: PPCA, x: torch.Tensor) -> float:
    return model.log_prob(x).sum().item()


# ----------------------------------------------------------------------------- closed form
def test_closed_form_matches_sklearn_pca_likelihood_and_subspace(closed, x):
    sk = PCA(n_components=Q, svd_solver="full").fit(x.numpy())
    # sklearn's covariance is c = N/(N-1) times the ML one (unbiased S); since tr(C^-1 S) = D at
    # the PPCA optimum, the ML log-likelihood exceeds sklearn's by N D (log c + 1/c - 1) / 2.
    c = N / (N - 1)
    gap = 0.5 * N * D * (math.log(c) + 1 / c - 1)
    assert _total(closed, x) == pytest.approx(sk.score(x.numpy()) * N + gap, rel=EXACT_RTOL)
    angles = linalg.subspace_angles(closed.components_.T.numpy(), sk.components_.T)
    np.testing.assert_allclose(angles, 0.0, atol=ANGLE_ATOL)
    assert closed.noise_variance_.item() == pytest.approx(sk.noise_variance_ / c, rel=1e-10)


def test_em_converges_to_the_closed_form(closed, x):
    em = PPCA(Q, init="random")
    fit = probgen.fit(em, x, method="em", tol=1e-12, max_iter=5000, progress=False)
    assert fit.converged
    # EM never decreases the likelihood (history holds -log-likelihood per point).
    assert all(b <= a + 1e-12 for a, b in zip(fit.history, fit.history[1:], strict=False))
    assert _total(em, x) / N == pytest.approx(_total(closed, x) / N, abs=EM_VS_CLOSED_FORM_ATOL)
    angles = linalg.subspace_angles(em.components_.T.numpy(), closed.components_.T.numpy())
    np.testing.assert_allclose(angles, 0.0, atol=1e-4)
    # W W^T is rotation invariant, so EM must recover the closed-form covariance itself.
    np.testing.assert_allclose(em.covariance_.numpy(), closed.covariance_.numpy(), rtol=1e-4)


def test_factor_analysis_em_matches_sklearn(fa, x):
    sk = FactorAnalysis(n_components=Q, tol=1e-12, max_iter=10000, svd_method="lapack")
    sk.fit(x.numpy())
    assert fa.log_prob(x).mean().item() == pytest.approx(
        sk.score(x.numpy()), abs=FA_VS_SKLEARN_ATOL
    )
    np.testing.assert_allclose(fa.noise_variance_.numpy(), sk.noise_variance_, rtol=1e-3)
    angles = linalg.subspace_angles(fa.components_.T.numpy(), sk.components_.T)
    np.testing.assert_allclose(angles, 0.0, atol=1e-3)


def test_factor_analysis_beats_ppca_on_heteroscedastic_noise(fa, closed, x):
    # FA nests PPCA (psi_d = sigma^2 for all d), so its ML log-likelihood cannot be lower.
    assert _total(fa, x) > _total(closed, x)


@pytest.mark.parametrize("noise", ["isotropic", "diagonal"])
def test_svi_reaches_the_maximum_likelihood(noise, closed, fa, x):
    reference = closed if noise == "isotropic" else fa
    model = PPCA(Q, noise=noise, init="random")
    fit = probgen.fit(model, x, method="svi", steps=600, lr=0.05, num_draws=2, progress=False)
    assert set(model.params_) == {LOADINGS, LOC, NOISE}
    ll = model.log_prob(x).mean().item()
    assert ll == pytest.approx(reference.log_prob(x).mean().item(), abs=SVI_VS_ML_ATOL)
    # The exact-posterior guide makes the negative ELBO equal -log p(x | theta) at every step.
    assert fit.history[-1] == pytest.approx(-ll, abs=SVI_VS_ML_ATOL)


# ----------------------------------------------------------------------------- densities
@pytest.mark.parametrize("which", ["closed", "fa"])
def test_log_prob_matches_scipy(which, closed, fa, x):
    model = closed if which == "closed" else fa
    expected = stats.multivariate_normal(model.mean_.numpy(), model.covariance_.numpy()).logpdf(
        x.numpy()
    )
    np.testing.assert_allclose(model.log_prob(x).numpy(), expected, rtol=EXACT_RTOL)


def test_log_likelihood_accepts_batched_params(closed, x):
    p = closed.params_
    batched = {k: torch.stack([v, v]) for k, v in p.items()}
    batched[NOISE] = torch.stack([p[NOISE], 2 * p[NOISE]])
    out = closed.log_likelihood(x, batched)
    assert out.shape == (2, N)
    np.testing.assert_allclose(out[0].numpy(), closed.log_prob(x).numpy(), rtol=EXACT_RTOL)
    assert out[1].sum() < out[0].sum()  # the ML noise beats twice the noise


def test_posterior_matches_tipping_bishop(closed, x):
    # A rotated optimum W R (same likelihood) makes M = W^T W + sigma^2 I non-diagonal.
    angle = 0.7
    rot = torch.tensor(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
        dtype=torch.float64,
    )
    model = PPCA(Q)
    model.setup(x)
    model.params_ = {**closed.params_, LOADINGS: closed.params_[LOADINGS] @ rot}
    np.testing.assert_allclose(
        model.log_prob(x).numpy(), closed.log_prob(x).numpy(), rtol=EXACT_RTOL
    )
    w, mu, s2 = (model.params_[k].numpy() for k in (LOADINGS, LOC, NOISE))
    m = w.T @ w + s2 * np.eye(Q)
    mean = np.linalg.solve(m, w.T @ (x.numpy() - mu).T).T
    np.testing.assert_allclose(model.encode(x).numpy(), mean, rtol=EXACT_RTOL)
    post = model.posterior(x[:3])
    assert post.batch_shape == (3,) and post.event_shape == (Q,)
    np.testing.assert_allclose(post.mean.numpy(), mean[:3], rtol=EXACT_RTOL)
    np.testing.assert_allclose(
        post.covariance_matrix[1].numpy(), s2 * np.linalg.inv(m), rtol=EXACT_RTOL
    )


@pytest.mark.parametrize("which", ["closed", "fa"])
def test_sample_moments_match_the_model(which, closed, fa):
    model = closed if which == "closed" else fa
    n = 100_000
    draws = model.sample(n)
    assert draws.shape == (n, D) and draws.dtype == torch.float64
    cov = model.covariance_
    var = cov.diagonal()
    mean_z = (draws.mean(0) - model.mean_) / (var / n).sqrt()
    assert mean_z.abs().max() < Z_MAX
    # Var of a sample covariance entry of a Gaussian: (C_ii C_jj + C_ij^2) / n.
    se = ((var[:, None] * var[None, :] + cov.square()) / n).sqrt()
    assert ((torch.cov(draws.T, correction=0) - cov) / se).abs().max() < Z_MAX


# ----------------------------------------------------------------------------- plumbing, errors
def test_family_is_registered():
    assert probgen.get_family("ppca") is PPCA


def test_em_restarts_and_refits(x):
    model = PPCA(Q, noise="diagonal", init="random")
    fit = probgen.fit(model, x, method="em", n_init=3, tol=1e-10, max_iter=5000, progress=False)
    assert len(fit.diagnostics["restart_log_likelihoods"]) == 3
    first = _total(model, x)
    probgen.fit(model, x[: N // 2], method="em", tol=1e-10, max_iter=5000, progress=False)
    assert _total(model, x) < first  # refitted on half the data: worse on all of it


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_components": 0}, "n_components must be an integer >= 1"),
        ({"n_components": 1.5}, "n_components must be an integer >= 1"),
        ({"n_components": True}, "n_components must be an integer >= 1"),
        ({"noise": "full"}, "noise must be one of isotropic, diagonal"),
        ({"init": "kmeans"}, "init must be one of pca, random"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PPCA(**kwargs)


def test_bad_data(closed, x):
    with pytest.raises(ValueError, match="must be smaller than the data dimension D=8"):
        PPCA(D).fit_closed_form(x)
    with pytest.raises(ValueError, match="must be smaller than the data dimension"):
        probgen.fit(PPCA(D + 1), x, method="em", progress=False)
    with pytest.raises(ValueError, match=r"data must be 2-dimensional"):
        PPCA(1).fit_closed_form(x[:, 0])
    with pytest.raises(ValueError, match="at least 2 rows"):
        PPCA(1).fit_closed_form(x[:1])
    with pytest.raises(ValueError, match="NaN/inf"):
        PPCA(1).fit_closed_form(torch.full((5, 3), math.nan, dtype=torch.float64))
    with pytest.raises(ValueError, match="x has 3 features per row; the model was fitted with 8"):
        closed.log_prob(x[:, :3])
    with pytest.raises(ValueError, match="noise='isotropic'"):
        PPCA(Q, noise="diagonal").fit_closed_form(x)


def test_unfitted_model_says_so(x):
    model = PPCA(Q)
    model.setup(x)
    with pytest.raises(NotFittedError, match="not fitted"):
        model.log_prob(x)
