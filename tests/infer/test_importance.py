"""Importance sampling from a fitted guide (``probgen.infer.importance``, ``fit(method="is")``).

References: the conjugate Normal-Normal posterior and evidence (``conjugate.py``); the
conjugate Bayesian linear regression posterior ``N(A^-1 Phi^T y / sigma^2, A^-1)``,
``A = I / s0^2 + Phi^T Phi / sigma^2``; ArviZ's ``psislw`` (an independent NumPy
implementation of PSIS); the defining property of systematic resampling (each draw is kept
``floor(n w)`` or ``ceil(n w)`` times); the true parameters of simulated mixture data.
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from conjugate import M0, S0, SIGMA, data, model, posterior
from scipy import stats

import probgen
from probgen import GenerativeModel
from probgen.diagnostics.vi import KHAT_OK
from probgen.infer.importance import ImportanceResult, importance_sample, pareto_smooth

#: Monte Carlo errors are compared in standard errors: P(|Z| > 4) = 6e-5 per comparison.
Z = 4.0
#: PSIS vs ArviZ: the same float64 algorithm; the Zhang-Stephens grid drops weights below
#: 1e-30 (Pyro) vs 2e-15 (ArviZ), which moves k by far less than this (measured: 9e-16).
PSIS_ATOL = 1e-9
#: An exact proposal: log p(x, mu) - log p(mu | x) = log p(x) for every draw, up to the float64
#: rounding of a sum of 50 log-densities of order 1.
EXACT_ATOL = 1e-9
#: Draws of the importance-sampling tests (each runs model and guide once on 50 points).
S = 1000


def _misscaled(mean: float, sd: float):
    """A fixed Gaussian guide one posterior sd off, twice as wide: a usable but poor proposal."""

    def guide(x):
        pyro.sample("mu", dist.Normal(torch.tensor(mean + sd, dtype=torch.float64), 2.0 * sd))

    return guide


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return data(n=50)


@pytest.fixture(scope="module")
def misscaled(x) -> ImportanceResult:
    mean, sd = posterior(x)
    pyro.set_rng_seed(1)
    return importance_sample(model, _misscaled(mean, sd), x, S)


def _weighted_se(result: ImportanceResult, value: torch.Tensor) -> float:
    """Delta-method standard error of a self-normalised IS mean: sqrt(sum w^2 (f - mean)^2)
    (Owen 2013, "Monte Carlo theory, methods and examples", eq. 9.8)."""
    w = result.smoothed_log_weights.exp()
    centred = value - (w * value).sum()
    return float((w.square() * centred.square()).sum().sqrt())


def test_weighted_mean_corrects_a_misscaled_guide(x, misscaled):
    mean, sd = posterior(x)
    mu = misscaled.draws["mu"]
    is_mean = misscaled.mean()["mu"].item()
    se = _weighted_se(misscaled, mu)
    # The IS estimate is unbiased up to O(1/S) and within Z of its own standard error...
    assert abs(is_mean - mean) < Z * se
    # ...which is far below the guide's own error (one posterior sd, +- 2 sd / sqrt(S)).
    guide_error = abs(mu.mean().item() - mean)
    assert guide_error > 1.0 * sd - Z * 2.0 * sd / math.sqrt(S)
    assert Z * se < 0.25 * guide_error
    # The weighted second moment recovers the posterior sd (error ~ sd / sqrt(2 ESS) ~ 3%).
    w = misscaled.smoothed_log_weights.exp()
    is_sd = (w * (mu - is_mean).square()).sum().sqrt().item()
    assert is_sd == pytest.approx(sd, rel=Z / math.sqrt(2 * misscaled.ess))
    # A usable proposal (2x too wide, 1 sd off) has a light tail and many effective draws.
    assert misscaled.khat < KHAT_OK
    assert 0.1 * S < misscaled.ess < S
    assert misscaled.draws["mu"].shape == (S,) and misscaled.log_weights.shape == (S,)


def test_exact_guide_gives_equal_weights_equal_to_the_evidence(x):
    mean, sd = posterior(x)

    def exact(x):
        pyro.sample("mu", dist.Normal(torch.tensor(mean, dtype=torch.float64), sd))

    result = importance_sample(model, exact, x, 200)
    # p(x) = N(x | M0 1, SIGMA^2 I + S0^2 1 1^T): the exact evidence.
    n = len(x)
    cov = SIGMA**2 * np.eye(n) + S0**2 * np.ones((n, n))
    log_evidence = stats.multivariate_normal(np.full(n, M0), cov).logpdf(x.numpy())
    torch.testing.assert_close(
        result.log_weights,
        torch.full((200,), log_evidence, dtype=torch.float64),
        atol=EXACT_ATOL,
        rtol=0.0,
    )
    assert result.khat == -math.inf
    assert result.ess == pytest.approx(200, abs=1e-6)
    torch.testing.assert_close(
        result.smoothed_log_weights, torch.full((200,), -math.log(200), dtype=torch.float64)
    )


def _heavy(seed: int, s: int) -> np.ndarray:
    """log t_2(z) - log N(z) at z ~ N(0, 1): a Student-t target, a normal proposal (k ~ 0.5+)."""
    z = np.random.default_rng(seed).standard_normal(s)
    return stats.t(2).logpdf(z * 1.5) - stats.norm.logpdf(z)


@pytest.mark.parametrize(
    "log_weights",
    [
        pytest.param(_heavy(0, 1000), id="student-t-target"),
        pytest.param(_heavy(1, 60), id="small-S"),
        pytest.param(np.random.default_rng(2).normal(0.0, 2.0, 4000), id="lognormal-ratios"),
        pytest.param(np.where(np.arange(500) % 7 == 0, -np.inf, _heavy(3, 500)), id="zero-ratios"),
    ],
)
def test_smoothing_matches_arviz_psislw(log_weights):
    arviz = pytest.importorskip("arviz")
    expected, k = arviz.psislw(log_weights.copy(), reff=1.0)
    smoothed, khat = pareto_smooth(torch.as_tensor(log_weights))
    assert khat == pytest.approx(float(k), abs=PSIS_ATOL)
    np.testing.assert_allclose(smoothed.numpy(), expected, atol=PSIS_ATOL, rtol=0.0)
    assert smoothed.logsumexp(0).item() == pytest.approx(0.0, abs=1e-12)


def test_smoothing_of_the_guide_weights_matches_arviz(misscaled):
    arviz = pytest.importorskip("arviz")
    expected, k = arviz.psislw(misscaled.log_weights.numpy().copy(), reff=1.0)
    np.testing.assert_allclose(
        misscaled.smoothed_log_weights.numpy(), expected, atol=PSIS_ATOL, rtol=0.0
    )
    assert misscaled.khat == pytest.approx(float(k), abs=PSIS_ATOL)


def test_systematic_resampling_keeps_each_draw_floor_or_ceil_of_n_w():
    g = torch.Generator().manual_seed(0)
    log_w = torch.randn(50, generator=g, dtype=torch.float64) * 1.5
    smoothed = log_w - log_w.logsumexp(0)
    result = ImportanceResult({"i": torch.arange(50)}, log_w, smoothed, 0.0, 1.0)
    n = 173
    counts = torch.bincount(result.resample(n, g)["i"], minlength=50).double()
    expected = n * smoothed.exp()
    assert counts.sum() == n
    assert bool(((counts >= expected.floor() - 1e-9) & (counts <= expected.ceil() + 1e-9)).all())


def test_resampled_draws_have_the_weighted_mean(x, misscaled):
    _, sd = posterior(x)
    draws = misscaled.resample(S, torch.Generator().manual_seed(3))["mu"]
    # Systematic resampling adds at most multinomial noise: sd / sqrt(n).
    assert abs(draws.mean().item() - misscaled.mean()["mu"].item()) < Z * sd / math.sqrt(S)
    again = misscaled.resample(S, torch.Generator().manual_seed(3))["mu"]
    assert torch.equal(draws, again)
    # Copies of a draw are shuffled apart: the sequence is not sorted by draw index.
    assert not bool((draws[1:] == draws[:-1]).all())


def test_mean_in_the_unconstrained_space_stays_in_the_support():
    g = torch.Generator().manual_seed(0)
    corr = dist.LKJCholesky(3, 0.5).sample((40,))
    simplex = torch.distributions.Dirichlet(torch.ones(3)).sample((40,))
    real = torch.randn(40, 2, generator=g)
    log_w = torch.randn(40, generator=g, dtype=torch.float64)
    result = ImportanceResult(
        {"c": corr, "p": simplex, "r": real}, log_w, log_w - log_w.logsumexp(0), 0.0, 1.0
    )
    supports = {
        "c": dist.constraints.corr_cholesky,
        "p": dist.constraints.simplex,
        "r": dist.constraints.real,
    }
    mean = result.mean(supports)
    assert bool(dist.constraints.corr_cholesky.check(mean["c"]).all())
    assert bool(dist.constraints.simplex.check(mean["p"]))
    # On the real line the bijection is the identity: the plain weighted mean.
    torch.testing.assert_close(mean["r"], result.mean()["r"])


def test_fit_is_end_to_end_matches_the_conjugate_posterior(x):
    mean, sd = posterior(x)
    fit = probgen.fit(model, x, method="is", steps=200, lr=0.05, num_draws=400, progress=False)
    assert fit.method == "is" and fit.n_iter == 200 and fit.guide is not None
    assert fit.draws is not None and fit.draws["mu"].shape == (1, 400)
    assert {"khat", "ess", "objective_name"} <= set(fit.diagnostics)
    # A Gaussian guide on a Gaussian posterior: a good proposal.
    assert fit.diagnostics["khat"] < KHAT_OK
    ess = fit.diagnostics["ess"]
    assert abs(fit.params["mu"].item() - mean) < Z * sd / math.sqrt(ess)
    draws = fit.draws["mu"].flatten()
    assert abs(draws.mean().item() - mean) < Z * sd * math.sqrt(1 / ess + 1 / 400)
    assert draws.std().item() == pytest.approx(sd, rel=Z / math.sqrt(2 * ess))
    assert torch.equal(fit.model.params_["mu"], fit.params["mu"])


class _Regression(GenerativeModel):
    """y_n ~ N(w0 + w1 t_n, SIGMA), w ~ N(0, S0^2 I): covariates t as a ``context``."""

    def model(self, x=None, *, n=None, t=None):
        w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=torch.float64), S0).to_event(1))
        with pyro.plate("data", len(x)):
            return pyro.sample("obs", dist.Normal(w[..., 0] + w[..., 1] * t, SIGMA), obs=x)


def test_importance_sampling_with_context_matches_bayesian_regression():
    g = torch.Generator().manual_seed(0)
    t = 0.5 + torch.randn(30, generator=g, dtype=torch.float64)
    y = 1.0 - 0.5 * t + SIGMA * torch.randn(30, generator=g, dtype=torch.float64)
    phi = torch.stack([torch.ones_like(t), t], -1)
    cov = torch.linalg.inv(torch.eye(2, dtype=torch.float64) / S0**2 + phi.T @ phi / SIGMA**2)
    mean = cov @ phi.T @ y / SIGMA**2
    sd = cov.diag().sqrt()

    def wide(x, t=None):  # mean-field, 1.5x too wide, shifted by half a posterior sd
        pyro.sample("w", dist.Normal(mean + 0.5 * sd, 1.5 * sd).to_event(1))

    pyro.set_rng_seed(2)
    result = importance_sample(_Regression(), wide, y, 600, context={"t": t})
    is_mean = result.mean()["w"]
    for j in range(2):
        se = _weighted_se(result, result.draws["w"][:, j])
        assert abs(is_mean[j].item() - mean[j].item()) < Z * se
    # The posterior correlation, which the mean-field proposal lacks, is recovered.
    w = result.smoothed_log_weights.exp()
    centred = result.draws["w"] - is_mean
    is_cov = (w[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0)
    corr = cov[0, 1] / sd.prod()
    assert (is_cov[0, 1] / is_cov.diag().sqrt().prod()).item() == pytest.approx(
        corr.item(), abs=Z / math.sqrt(result.ess)
    )


def test_fit_is_on_a_gaussian_mixture_recovers_the_components():
    from models.gmm import LOCS, WEIGHTS, GaussianMixture

    g = torch.Generator().manual_seed(4)
    z = torch.arange(80) % 2
    x = (torch.where(z == 1, 2.0, -2.0) + 0.5 * torch.randn(80, generator=g)).double()[:, None]
    gmm = GaussianMixture(2, "spherical")
    # The costliest test here (~8 s of CPU: enumerated SVI steps and 150 passes of the model).
    fit = probgen.fit(gmm, x, method="is", steps=200, lr=0.05, num_draws=150, progress=False)
    locs = fit.draws[LOCS][0, :, :, 0]  # [S, K]
    # Canonical labelling: components ordered by their mean, in every draw.
    assert bool((locs[:, 0] < locs[:, 1]).all())
    # Each mean's posterior has sd 0.5 / sqrt(40) ~ 0.08 around a point within ~0.08 of the
    # truth (Bernstein-von Mises), and the IS estimate adds sd / sqrt(ESS).
    torch.testing.assert_close(
        fit.params[LOCS][:, 0], torch.tensor([-2.0, 2.0], dtype=x.dtype), atol=Z * 0.08, rtol=0
    )
    assert bool(dist.constraints.simplex.check(fit.params[WEIGHTS]))
    assert math.isfinite(fit.diagnostics["khat"]) and 1.0 <= fit.diagnostics["ess"] <= 150


# --------------------------------------------------------------------------- bad input
def _local_only(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), dtype=torch.float64), 1.0))
        pyro.sample("obs", dist.Normal(z, 1.0), obs=x)


def _local_guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x / 2, 0.7))


def test_a_model_without_global_sites_is_refused_before_fitting(x):
    with pytest.raises(ValueError, match="every latent site of this model is per datum"):
        importance_sample(_local_only, _local_guide, x, 10)
    with pytest.raises(ValueError, match=r"method='is' samples the global latent sites"):
        # steps would take minutes if the check came after SVI
        probgen.fit(_local_only, x, method="is", guide=_local_guide, steps=10**6, progress=False)


def test_point_mass_guides_are_refused(x):
    with pytest.raises(ValueError, match="guide='delta' is a point mass"):
        probgen.fit(model, x, method="is", guide="delta", progress=False)

    def delta(x):
        pyro.sample("mu", dist.Delta(torch.tensor(1.0, dtype=torch.float64)))

    with pytest.raises(ValueError, match="the guide is a point mass"):
        importance_sample(model, delta, x, 5)


def test_a_guide_missing_a_global_site_is_named():
    def two(x):
        a = pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Normal(a + b, 1.0), obs=x)

    def only_a(x):
        pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))

    with pytest.raises(ValueError, match=r"does not sample the global latent site\(s\) \['b'\]"):
        importance_sample(two, only_a, data(n=5), 5)


@pytest.mark.parametrize(
    ("log_weights", "message"),
    [
        (torch.zeros(3, 2), "must be a 1-D tensor of >= 2 entries"),
        (torch.zeros(1), "must be a 1-D tensor of >= 2 entries"),
        (torch.tensor([0.0, math.nan, 1.0]), r"must not contain NaN or \+inf; entry 1 is nan"),
        (torch.tensor([0.0, math.inf]), r"must not contain NaN or \+inf; entry 1 is inf"),
        (torch.full((4,), -math.inf), "every log-weight is -inf"),
    ],
)
def test_bad_log_weights_are_named(log_weights, message):
    with pytest.raises(ValueError, match=message):
        pareto_smooth(log_weights)


def test_bad_draw_counts_are_named(x, misscaled):
    mean, sd = posterior(x)
    with pytest.raises(ValueError, match="num_draws must be an integer >= 2; got 1"):
        importance_sample(model, _misscaled(mean, sd), x, 1)
    with pytest.raises(ValueError, match="num_draws must be an integer >= 1; got 0"):
        misscaled.resample(0)


def test_guide_is_an_option_of_svi_and_is_only(x):
    with pytest.raises(
        ValueError, match="guide= is an option of method 'svi' and 'is', not 'nuts'"
    ):
        probgen.fit(model, x, method="nuts", guide="normal", progress=False)


def test_unconstrained_mean_of_a_correlation_cholesky_factor():
    # Its unconstrained value is a vector ([S, 1] for 2 x 2), not [S, 2, 2]: the weights must
    # be shaped by it (a regression: they were shaped by the matrix and broadcast to [S, S, 1]).
    s = 50
    draws = pyro.distributions.LKJCholesky(2, 1.0).sample((s,)).double()
    log_w = torch.zeros(s, dtype=torch.float64) - math.log(s)
    result = ImportanceResult(
        draws={"corr_chol": draws},
        log_weights=log_w,
        smoothed_log_weights=log_w,
        khat=-math.inf,
        ess=float(s),
    )
    support = pyro.distributions.LKJCholesky(2, 1.0).support
    mean = result.mean({"corr_chol": support})["corr_chol"]
    assert mean.shape == (2, 2)
    torch.testing.assert_close(mean.norm(dim=-1), torch.ones(2, dtype=torch.float64))
    t = torch.distributions.biject_to(support)
    torch.testing.assert_close(mean, t(t.inv(draws).mean(0)))
