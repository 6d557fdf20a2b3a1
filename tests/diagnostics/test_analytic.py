"""Divergences between distribution objects against independent references.

References: textbook closed forms written out in numpy float64, scipy.stats entropies and
densities, scipy.integrate quadrature, and a fine numpy grid for a 2-D mixture. Monte Carlo
estimates must lie within ``Z_MC`` standard errors of the reference.
"""

from __future__ import annotations

import math

import numpy as np
import pyro.distributions as pdist
import pytest
import torch
import torch.distributions as D
from scipy import integrate, stats
from scipy.spatial.distance import jensenshannon
from scipy.special import logsumexp

from probgen.diagnostics import analytic as A
from probgen.diagnostics.grid import grid_supported

#: Closed form vs closed form in float64: only rounding differs.
RTOL_CLOSED = 1e-9
#: scipy.integrate.quad is asked for ~1e-11; this leaves room for its error.
ATOL_QUAD = 1e-8
#: Monte Carlo checks: |estimate - reference| < 4 standard errors, a two-sided false-failure
#: rate of 6.3e-5 per check for a normal estimate (Rényi and Hellinger add an O(1/n) bias,
#: below 1% of a standard error at the sample sizes used).
Z_MC = 4.0
#: The 1000 x 1000 numpy reference grid for the 2-D mixture agrees with a 3000 x 3000 one to
#: 1.3e-7 (TV) and 1e-15 (Hellinger); this allows ~8x that.
ATOL_FINE_GRID = 1e-6
#: A grid estimate's error estimate must be this small for the default grid.
MAX_GRID_ERROR = 1e-3
#: Rényi at 1 -+ 1e-4 differs from KL by O(1e-4) times its derivative in alpha.
ATOL_ALPHA_TO_ONE = 1e-3

F64 = torch.float64
N_MC = 20_000


def t(x: object) -> torch.Tensor:
    return torch.as_tensor(x, dtype=F64)


def quad(f, lo: float = -np.inf, hi: float = np.inf) -> float:
    return integrate.quad(f, lo, hi, epsabs=1e-12, epsrel=1e-11, limit=500)[0]


def assert_mc(estimate: A.Estimate, reference: float) -> None:
    value, se = float(estimate.value), float(estimate.stderr)
    assert estimate.estimator == "monte-carlo"
    assert 0 < se < 0.1
    assert abs(value - reference) < Z_MC * se, (value, reference, se)


# ------------------------------------------------------------------ numpy references


def np_gauss_kl(m0, s0, m1, s1) -> float:
    """KL(N(m0, s0) || N(m1, s1)), the textbook formula."""
    inv = np.linalg.inv(s1)
    dm = m1 - m0
    return 0.5 * (
        np.trace(inv @ s0)
        + dm @ inv @ dm
        - len(m0)
        + np.linalg.slogdet(s1)[1]
        - np.linalg.slogdet(s0)[1]
    )


def np_normal_renyi(m1, s1, m2, s2, a) -> float:
    """Gil, Alajaji & Linder (2013), Table 2: D_a(N(m1, s1^2) || N(m2, s2^2))."""
    var_a = a * s2**2 + (1 - a) * s1**2
    if var_a <= 0:
        return math.inf
    return (
        math.log(s2 / s1)
        + math.log(s2**2 / var_a) / (2 * (a - 1))
        + a * (m1 - m2) ** 2 / (2 * var_a)
    )


def np_gauss_renyi(m0, s0, m1, s1, a) -> float:
    """Multivariate Gaussian Rényi divergence (Gil et al. 2013 / van Erven & Harremoës)."""
    sa = a * s1 + (1 - a) * s0
    if np.linalg.eigvalsh(sa).min() <= 0:
        return math.inf
    dm = m0 - m1
    logdet = lambda m: np.linalg.slogdet(m)[1]  # noqa: E731
    return a / 2 * dm @ np.linalg.solve(sa, dm) - (
        logdet(sa) - (1 - a) * logdet(s0) - a * logdet(s1)
    ) / (2 * (a - 1))


def np_bhattacharyya_hellinger(m0, s0, m1, s1) -> float:
    """H = sqrt(1 - exp(-D_B)), D_B the Bhattacharyya distance of two Gaussians."""
    s = (s0 + s1) / 2
    dm = m0 - m1
    d_b = dm @ np.linalg.solve(s, dm) / 8 + 0.5 * (
        np.linalg.slogdet(s)[1] - 0.5 * (np.linalg.slogdet(s0)[1] + np.linalg.slogdet(s1)[1])
    )
    return math.sqrt(1 - math.exp(-d_b))


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    m = rng.normal(size=(d, d))
    return m @ m.T + d * np.eye(d) * 0.5


# Three representations of Gaussians with the same parameters: full, low-rank, mean-field.
def as_mvn(loc, cov):
    return D.MultivariateNormal(t(loc), covariance_matrix=t(cov))


def as_lowrank(loc, factor, diag):
    return D.LowRankMultivariateNormal(t(loc), t(factor), t(diag))


def as_meanfield(loc, var):
    return D.Independent(D.Normal(t(loc), t(var).sqrt()), 1)


# ------------------------------------------------------------------ KL


def _gauss_forms(rng: np.random.Generator, d: int = 3):
    loc_f, cov_f = rng.normal(size=d), random_spd(rng, d)
    loc_l, factor, diag = rng.normal(size=d), rng.normal(size=(d, 2)), rng.uniform(0.5, 2, d)
    loc_m, var_m = rng.normal(size=d), rng.uniform(0.3, 3, d)
    return {
        "full": (as_mvn(loc_f, cov_f), loc_f, cov_f),
        "lowrank": (as_lowrank(loc_l, factor, diag), loc_l, factor @ factor.T + np.diag(diag)),
        "meanfield": (as_meanfield(loc_m, var_m), loc_m, np.diag(var_m)),
    }


@pytest.mark.parametrize(
    ("kind_p", "kind_q"),
    [("full", "meanfield"), ("meanfield", "full"), ("lowrank", "meanfield"),
     ("meanfield", "lowrank"), ("full", "lowrank"), ("meanfield", "meanfield")],
)  # fmt: skip
def test_kl_between_gaussian_forms_is_analytic_and_textbook(kind_p, kind_q):
    forms = _gauss_forms(np.random.default_rng(1))
    p, mp, sp = forms[kind_p]
    q, mq, sq = forms[kind_q]
    est = A.kl(p, q, num_samples=10)
    assert est.estimator == "analytic" and est.exact and est.shape == ()
    assert float(est.stderr) == 0.0
    np.testing.assert_allclose(float(est), np_gauss_kl(mp, sp, mq, sq), rtol=RTOL_CLOSED)


def test_kl_mvn_to_meanfield_is_batched_and_works_for_pyro_types():
    rng = np.random.default_rng(2)
    covs = np.stack([random_spd(rng, 2) for _ in range(3)])
    locs = rng.normal(size=(3, 2))
    p = pdist.MultivariateNormal(t(locs), covariance_matrix=t(covs), validate_args=True)
    q = pdist.Normal(t([0.5, -1.0]), t([1.5, 0.7])).to_event(1)
    est = A.kl(p, q, num_samples=10)
    assert est.shape == (3,) and est.estimator == "analytic"
    ref = [
        np_gauss_kl(locs[i], covs[i], np.array([0.5, -1.0]), np.diag([2.25, 0.49]))
        for i in range(3)
    ]
    np.testing.assert_allclose(est.value.numpy(), ref, rtol=RTOL_CLOSED)


def test_kl_vonmises_and_weibull_against_quadrature():
    p, q = D.VonMises(t(0.3), t(2.0)), D.VonMises(t(-1.0), t(0.7))
    fp, fq = stats.vonmises(2.0, loc=0.3).pdf, stats.vonmises(0.7, loc=-1.0).pdf
    ref = quad(lambda x: fp(x) * math.log(fp(x) / fq(x)), -math.pi, math.pi)
    est = A.kl(p, q, 10)
    assert est.estimator == "analytic"
    assert abs(float(est) - ref) < ATOL_QUAD

    p, q = D.Weibull(t(1.5), t(2.0)), D.Weibull(t(0.8), t(1.3))
    fp, fq = stats.weibull_min(2.0, scale=1.5).pdf, stats.weibull_min(1.3, scale=0.8).pdf
    ref = quad(lambda x: fp(x) * math.log(fp(x) / fq(x)) if fp(x) > 0 else 0.0, 0, np.inf)
    est = A.kl(p, q, 10)
    assert est.estimator == "analytic"
    assert abs(float(est) - ref) < ATOL_QUAD


def test_kl_finite_discrete_of_different_kinds_and_sizes():
    p_probs, q_probs = np.array([0.2, 0.5, 0.3]), np.array([0.6, 0.4])
    ref = float(np.sum(p_probs[:2] * np.log(p_probs[:2] / q_probs))) + math.inf  # p_2 > 0 = q_2
    assert float(A.kl(D.Categorical(t(p_probs)), D.Categorical(t(q_probs)), 10)) == ref
    ref = float(np.sum(q_probs * np.log(q_probs / p_probs[:2])))
    est = A.kl(D.Categorical(t(q_probs)), D.Categorical(t(p_probs)), 10)
    np.testing.assert_allclose(float(est), ref, rtol=RTOL_CLOSED)
    est = A.kl(D.Bernoulli(t(0.4)), D.Categorical(t([0.6, 0.4])), 10)
    assert float(est) == 0.0


MIX_W, MIX_LOC, MIX_SCALE = [0.3, 0.7], [-1.0, 2.0], [1.0, 0.5]


def mixture_1d() -> D.MixtureSameFamily:
    return D.MixtureSameFamily(D.Categorical(t(MIX_W)), D.Normal(t(MIX_LOC), t(MIX_SCALE)))


def mixture_logpdf(x: float) -> float:
    terms = [
        math.log(w) + stats.norm.logpdf(x, m, s)
        for w, m, s in zip(MIX_W, MIX_LOC, MIX_SCALE, strict=True)
    ]
    return float(logsumexp(terms))


def mixture_pdf(x: float) -> float:
    return math.exp(mixture_logpdf(x))


def test_kl_monte_carlo_fallback_matches_quadrature():
    p, q = mixture_1d(), D.Normal(t(0.0), t(2.0))
    lq = stats.norm(0, 2).logpdf
    ref = quad(lambda x: mixture_pdf(x) * (mixture_logpdf(x) - lq(x)))
    est = A.kl(p, q, N_MC)
    assert_mc(est, ref)
    assert est.num_samples == N_MC


def test_monte_carlo_kl_is_differentiable_by_reparameterisation():
    """A reverse-KL fit needs gradients: draws of p are reparameterised where p allows it.

    q is N(0, 1) dressed as a one-component mixture (no closed form registered), so
    KL(N(m, 1) || q) = m^2 / 2 is estimated by Monte Carlo; its pathwise gradient in m is the
    mean of (m + eps) over the draws, within Z_MC standard errors 1/sqrt(n) of the true m.
    """
    n, m0 = 20_000, 0.7
    m = torch.tensor(m0, dtype=torch.float64, requires_grad=True)
    q = D.MixtureSameFamily(
        D.Categorical(probs=torch.ones(1, dtype=torch.float64)),
        D.Normal(torch.zeros(1, dtype=torch.float64), 1.0),
    )
    est = A.kl(D.Normal(m, 1.0), q, n)
    assert est.estimator == "monte-carlo"
    (grad,) = torch.autograd.grad(est.value, m)
    assert abs(grad.item() - m0) < Z_MC / math.sqrt(n)


def test_infinite_divergences_are_inf_never_nan():
    est = A.kl(D.Uniform(t(0.0), t(1.0)), D.Uniform(t(0.0), t(0.5)), 10)
    assert est.exact and float(est) == math.inf
    # Monte Carlo with draws outside q's support, q validating its arguments.
    p, q = D.StudentT(t(3.0)), D.Uniform(t(-1.0), t(1.0), validate_args=True)
    for est in (A.kl(p, q, 1000), A.cross_entropy(p, q, 1000), A.renyi(p, q, 2.0, 1000)):
        assert est.estimator == "monte-carlo" and float(est) == math.inf
    for est in (A.renyi(p, q, 0.5, 1000), A.js(p, q, 1000), A.hellinger(p, q, 1000, None)):
        assert math.isfinite(float(est)) and math.isfinite(float(est.stderr))
    # Disjoint supports: KL and Rényi infinite, JS = log 2, TV = H = 1.
    p, q = D.Uniform(t(0.0), t(1.0)), D.Uniform(t(2.0), t(3.0))
    assert float(A.renyi(p, q, 0.5, 10)) == math.inf
    assert float(A.total_variation(p, q, 10, None)) == 1.0
    assert float(A.hellinger(p, q, 10, None)) == 1.0
    p, q = D.Beta(t(2.0), t(2.0)), D.Uniform(t(2.0), t(3.0), validate_args=True)
    js = A.js(p, q, 1000)
    assert float(js) == pytest.approx(math.log(2), abs=1e-12)
    # Discrete draws outside a validating q's support (counts above total_count).
    p = pdist.Poisson(t(4.0), validate_args=True)
    q = pdist.Binomial(total_count=5, probs=t(0.6), validate_args=True)
    assert float(A.kl(p, q, 10)) == math.inf
    for est in (A.js(p, q, 1000), A.total_variation(p, q, 1000, None)):
        assert est.estimator == "monte-carlo" and math.isfinite(float(est))
    assert float(A.cross_entropy(p, q, 1000)) == math.inf


# ------------------------------------------------------------------ Rényi


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 0.9, 2.0, 3.0])
@pytest.mark.parametrize(("m1", "s1", "m2", "s2"), [(0.0, 1.0, 1.0, 2.0), (0.5, 2.0, -1.0, 1.0)])
def test_renyi_normal_matches_gil_et_al(alpha, m1, s1, m2, s2):
    est = A.renyi(D.Normal(t(m1), t(s1)), D.Normal(t(m2), t(s2)), alpha, 10)
    ref = np_normal_renyi(m1, s1, m2, s2, alpha)
    assert est.estimator == "analytic"
    if math.isinf(ref):  # s1 = 2, s2 = 1, alpha = 2 and 3: S_alpha < 0
        assert float(est) == math.inf
    else:
        np.testing.assert_allclose(float(est), ref, rtol=RTOL_CLOSED, atol=1e-15)


@pytest.mark.parametrize("alpha", [0.5, 2.0, 5.0])
@pytest.mark.parametrize(("kind_p", "kind_q"), [("full", "lowrank"), ("meanfield", "full")])
def test_renyi_gaussian_forms_match_numpy(alpha, kind_p, kind_q):
    forms = _gauss_forms(np.random.default_rng(3))
    p, mp, sp = forms[kind_p]
    q, mq, sq = forms[kind_q]
    est = A.renyi(p, q, alpha, 10)
    ref = np_gauss_renyi(mp, sp, mq, sq, alpha)
    assert est.estimator == "analytic"
    if math.isinf(ref):
        assert float(est) == math.inf
    else:
        np.testing.assert_allclose(float(est), ref, rtol=RTOL_CLOSED)


def test_renyi_mvn_against_double_integral_and_non_pd_order_is_inf():
    m0, s0 = np.array([0.3, -0.2]), np.array([[1.0, 0.6], [0.6, 2.0]])
    m1, s1 = np.array([-0.5, 0.4]), np.array([[1.5, -0.3], [-0.3, 0.8]])
    p, q = as_mvn(m0, s0), as_mvn(m1, s1)
    fp, fq = stats.multivariate_normal(m0, s0).pdf, stats.multivariate_normal(m1, s1).pdf
    a = 0.5
    integral = integrate.dblquad(
        lambda y, x: fp([x, y]) ** a * fq([x, y]) ** (1 - a), -12, 12, -12, 12, epsabs=1e-11
    )[0]
    np.testing.assert_allclose(float(A.renyi(p, q, a, 10)), math.log(integral) / (a - 1), rtol=1e-7)
    # S_a = 3 S_q - 2 S_p is indefinite for S_p = 4 I, S_q = I.
    est = A.renyi(as_mvn([0, 0], 4 * np.eye(2)), as_mvn([0, 0], np.eye(2)), 3.0, 10)
    assert float(est) == math.inf and est.estimator == "analytic"


def test_renyi_independent_sums_over_reinterpreted_dims():
    loc_p, scale_p = np.array([[0.0, 1.0], [2.0, -1.0]]), np.array([[1.0, 0.5], [2.0, 1.5]])
    loc_q, scale_q = np.array([[0.5, 0.0], [1.0, 1.0]]), np.array([[1.2, 0.7], [1.0, 1.0]])
    p = D.Independent(D.Normal(t(loc_p), t(scale_p)), 2)
    q = D.Independent(D.Normal(t(loc_q), t(scale_q)), 2)
    ref = sum(
        np_normal_renyi(loc_p[i, j], scale_p[i, j], loc_q[i, j], scale_q[i, j], 0.7)
        for i in range(2)
        for j in range(2)
    )
    np.testing.assert_allclose(float(A.renyi(p, q, 0.7, 10)), ref, rtol=RTOL_CLOSED)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 2.0])
def test_renyi_finite_discrete_exact(alpha):
    pp, qq = np.array([[0.2, 0.3, 0.5], [0.0, 0.4, 0.6]]), np.array([0.1, 0.0, 0.9])
    est = A.renyi(D.Categorical(t(pp)), D.Categorical(t(qq)), alpha, 10)
    assert est.estimator == "exact" and est.shape == (2,)
    for i in range(2):
        s = pp[i] > 0
        with np.errstate(divide="ignore"):
            inner = np.sum(pp[i][s] ** alpha * qq[s] ** (1 - alpha))
            ref = math.log(inner) / (alpha - 1) if inner < np.inf else math.inf
        if math.isinf(ref):  # p puts mass where q has none and alpha > 1
            assert float(est.value[i]) == math.inf
        else:
            np.testing.assert_allclose(float(est.value[i]), ref, rtol=RTOL_CLOSED, atol=1e-15)
    est = A.renyi(D.Bernoulli(t(0.3)), D.Bernoulli(t(0.6)), alpha, 10)
    ref = math.log(0.7**alpha * 0.4 ** (1 - alpha) + 0.3**alpha * 0.6 ** (1 - alpha)) / (alpha - 1)
    np.testing.assert_allclose(float(est), ref, rtol=RTOL_CLOSED)


def test_renyi_uniform_against_quadrature():
    p, q = D.Uniform(t(0.0), t(2.0)), D.Uniform(t(1.0), t(4.0))
    a = 0.6
    ref = math.log(quad(lambda x: 0.5**a * (1 / 3) ** (1 - a), 1.0, 2.0)) / (a - 1)
    np.testing.assert_allclose(float(A.renyi(p, q, a, 10)), ref, rtol=RTOL_CLOSED)
    assert float(A.renyi(p, q, 1.5, 10)) == math.inf  # p outside q and alpha > 1
    inner = D.Uniform(t(1.5), t(2.5))
    ref = math.log(quad(lambda x: 1.0**2 * (1 / 3) ** -1, 1.5, 2.5)) / (2 - 1)
    np.testing.assert_allclose(float(A.renyi(inner, q, 2.0, 10)), ref, rtol=RTOL_CLOSED)


@pytest.mark.parametrize("alpha", [0.4, 2.0])
def test_renyi_gamma_and_exponential_against_quadrature(alpha):
    cases = [
        (D.Gamma(t(2.0), t(1.5)), stats.gamma(2.0, scale=1 / 1.5), D.Gamma(t(3.0), t(1.0)),
         stats.gamma(3.0, scale=1.0)),
        (D.Exponential(t(0.7)), stats.expon(scale=1 / 0.7), D.Gamma(t(1.5), t(0.5)),
         stats.gamma(1.5, scale=2.0)),
    ]  # fmt: skip
    for p, sp, q, sq in cases:
        integral = quad(
            lambda x, sp=sp, sq=sq: math.exp(alpha * sp.logpdf(x) + (1 - alpha) * sq.logpdf(x)), 0
        )
        est = A.renyi(p, q, alpha, 10)
        assert est.estimator == "analytic"
        np.testing.assert_allclose(float(est), math.log(integral) / (alpha - 1), rtol=1e-8)
    # k_a = 2 * 1 - 3 < 0: the integral of p^2 / q diverges at 0.
    assert float(A.renyi(D.Exponential(t(1.0)), D.Gamma(t(3.0), t(1.0)), 2.0, 10)) == math.inf


def test_renyi_approaches_kl_as_alpha_tends_to_one():
    forms = _gauss_forms(np.random.default_rng(4))
    cases = [
        (forms["full"][0], forms["lowrank"][0]),
        (D.Categorical(t([0.2, 0.3, 0.5])), D.Categorical(t([0.4, 0.4, 0.2]))),
    ]
    for p, q in cases:
        kl = float(A.kl(p, q, 10))
        for alpha in (1 - 1e-4, 1 + 1e-4):
            assert abs(float(A.renyi(p, q, alpha, 10)) - kl) < ATOL_ALPHA_TO_ONE
        assert float(A.renyi(p, q, 1.0, 10)) == kl


@pytest.mark.parametrize("alpha", [0.5, 2.0])
def test_renyi_monte_carlo_matches_quadrature(alpha):
    p, q = mixture_1d(), D.Normal(t(0.5), t(2.0))
    lq = stats.norm(0.5, 2).logpdf
    integral = quad(lambda x: math.exp(alpha * mixture_logpdf(x) + (1 - alpha) * lq(x)))
    ref = math.log(integral) / (alpha - 1)
    assert_mc(A.renyi(p, q, alpha, N_MC), ref)


# ------------------------------------------------------------------ Hellinger, TV, JS


@pytest.mark.parametrize(("m1", "s1", "m2", "s2"), [(0.0, 1.0, 1.0, 2.0), (0.0, 1.0, 0.0, 1.0)])
def test_hellinger_normals_against_quadrature(m1, s1, m2, s2):
    fp, fq = stats.norm(m1, s1).pdf, stats.norm(m2, s2).pdf
    ref = math.sqrt(quad(lambda x: (math.sqrt(fp(x)) - math.sqrt(fq(x))) ** 2 / 2))
    est = A.hellinger(D.Normal(t(m1), t(s1)), D.Normal(t(m2), t(s2)), 10, None)
    assert est.estimator == "analytic" and est.unit == ""
    assert abs(float(est) - ref) < ATOL_QUAD


def test_hellinger_full_covariance_and_categorical_closed_forms():
    forms = _gauss_forms(np.random.default_rng(5))
    (p, mp, sp), (q, mq, sq) = forms["full"], forms["meanfield"]
    np.testing.assert_allclose(
        float(A.hellinger(p, q, 10, None)), np_bhattacharyya_hellinger(mp, sp, mq, sq), rtol=1e-9
    )
    pp, qq = np.array([0.1, 0.6, 0.3]), np.array([0.3, 0.3, 0.4])
    est = A.hellinger(D.Categorical(t(pp)), D.Categorical(t(qq)), 10, None)
    ref = math.sqrt(0.5 * np.sum((np.sqrt(pp) - np.sqrt(qq)) ** 2))
    assert est.estimator == "exact"
    np.testing.assert_allclose(float(est), ref, rtol=RTOL_CLOSED)


@pytest.mark.parametrize(
    ("m1", "s1", "m2", "s2"),
    [(0.0, 1.0, 1.0, 2.0), (0.0, 3.0, 0.5, 0.4), (1.0, 1.0, -1.0, 1.0), (0.0, 1.0, 0.0, 2.0),
     (0.0, 1.0, 0.3, 1.0 + 1e-10)],
)  # fmt: skip
def test_total_variation_normals_against_quadrature(m1, s1, m2, s2):
    fp, fq = stats.norm(m1, s1).pdf, stats.norm(m2, s2).pdf
    ref = quad(lambda x: abs(fp(x) - fq(x)) / 2)
    est = A.total_variation(D.Normal(t(m1), t(s1)), D.Normal(t(m2), t(s2)), 10, None)
    assert est.estimator == "analytic" and est.unit == ""
    assert abs(float(est) - ref) < ATOL_QUAD


def test_total_variation_exact_discrete_and_uniform():
    pp, qq = np.array([[0.1, 0.6, 0.3], [0.5, 0.5, 0.0]]), np.array([0.3, 0.3, 0.4])
    est = A.total_variation(D.Categorical(t(pp)), D.Categorical(t(qq)), 10, None)
    np.testing.assert_allclose(est.value.numpy(), 0.5 * np.abs(pp - qq).sum(-1), rtol=RTOL_CLOSED)
    p, q = D.Uniform(t(0.0), t(2.0)), D.Uniform(t(1.0), t(4.0))
    ref = quad(lambda x: abs(0.5 * (0 <= x < 2) - (1 <= x < 4) / 3) / 2, -1.0, 5.0)
    est = A.total_variation(p, q, 10, None)
    assert est.estimator == "exact"
    assert abs(float(est) - ref) < ATOL_QUAD


def test_js_exact_against_scipy_and_monte_carlo_against_quadrature():
    pp, qq = np.array([0.1, 0.6, 0.3]), np.array([0.3, 0.0, 0.7])
    est = A.js(D.Categorical(t(pp)), D.Categorical(t(qq)), 10)
    assert est.estimator == "exact"
    np.testing.assert_allclose(float(est), jensenshannon(pp, qq) ** 2, rtol=RTOL_CLOSED)
    est = A.js(D.OneHotCategorical(t(pp)), D.OneHotCategorical(t(qq)), 10)
    assert est.estimator == "exact"
    np.testing.assert_allclose(float(est), jensenshannon(pp, qq) ** 2, rtol=RTOL_CLOSED)
    est = A.js(D.Bernoulli(t(0.2)), D.Bernoulli(t(0.7)), 10)
    np.testing.assert_allclose(
        float(est), jensenshannon([0.8, 0.2], [0.3, 0.7]) ** 2, rtol=RTOL_CLOSED
    )

    fp, fq = stats.norm(0, 1).pdf, stats.norm(1.5, 0.7).pdf

    def integrand(x: float) -> float:
        a, b = fp(x), fq(x)
        m = (a + b) / 2
        return 0.5 * (a * math.log(a / m) if a > 0 else 0) + 0.5 * (
            b * math.log(b / m) if b > 0 else 0
        )

    est = A.js(D.Normal(t(0.0), t(1.0)), D.Normal(t(1.5), t(0.7)), N_MC)
    assert_mc(est, quad(integrand))
    assert est.num_samples == 2 * N_MC


# ------------------------------------------------------------------ grid integration


def test_grid_tv_and_hellinger_of_1d_mixture_against_quadrature():
    p, q = mixture_1d(), D.Normal(t(0.5), t(2.0))
    fq = stats.norm(0.5, 2).pdf
    tv_ref = quad(lambda x: abs(mixture_pdf(x) - fq(x)) / 2)
    h_ref = math.sqrt(quad(lambda x: (math.sqrt(mixture_pdf(x)) - math.sqrt(fq(x))) ** 2 / 2))
    for fn, ref in ((A.total_variation, tv_ref), (A.hellinger, h_ref)):
        est = fn(p, q, 5000, None)
        assert est.estimator == "grid" and est.unit == "" and est.num_samples is None
        err = float(est.stderr)
        assert 0 < err < MAX_GRID_ERROR
        assert abs(float(est) - ref) <= err + ATOL_QUAD, (fn.__name__, float(est), ref, err)
    # Event shape [1] is the same integral.
    p1 = D.MixtureSameFamily(
        D.Categorical(t(MIX_W)),
        D.Independent(D.Normal(t(MIX_LOC)[:, None], t(MIX_SCALE)[:, None]), 1),
    )
    q1 = D.Independent(D.Normal(t([0.5]), t([2.0])), 1)
    assert grid_supported(p1, q1)
    est = A.total_variation(p1, q1, 5000, None)
    assert est.estimator == "grid" and abs(float(est) - tv_ref) <= float(est.stderr) + ATOL_QUAD


def _mixture_2d():
    w = np.array([0.4, 0.6])
    locs = np.array([[-1.0, 0.0], [1.5, 1.0]])
    covs = np.array([[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 0.8]]])
    p = D.MixtureSameFamily(
        D.Categorical(t(w)), D.MultivariateNormal(t(locs), covariance_matrix=t(covs))
    )
    return p, w, locs, covs


def test_grid_tv_and_hellinger_of_2d_mixture_against_fine_numpy_grid():
    p, w, locs, covs = _mixture_2d()
    mq, sq = np.array([0.0, 0.5]), np.array([[2.0, 0.3], [0.3, 1.5]])
    q = as_mvn(mq, sq)
    # Reference: midpoint rule with 1000 x 1000 cells on [-10, 10]^2 (over 6 sd of every
    # component), in numpy with scipy densities.
    n, lo, hi = 1000, -10.0, 10.0
    h = (hi - lo) / n
    axis = lo + (np.arange(n) + 0.5) * h
    xy = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    dp = sum(
        wk * stats.multivariate_normal(m, c).pdf(xy) for wk, m, c in zip(w, locs, covs, strict=True)
    )
    dq = stats.multivariate_normal(mq, sq).pdf(xy)
    tv_ref = 0.5 * np.abs(dp - dq).sum() * h * h
    h_ref = math.sqrt(0.5 * ((np.sqrt(dp) - np.sqrt(dq)) ** 2).sum() * h * h)
    for fn, ref in ((A.total_variation, tv_ref), (A.hellinger, h_ref)):
        est = fn(p, q, 5000, None)
        err = float(est.stderr)
        assert est.estimator == "grid" and 0 < err < MAX_GRID_ERROR
        assert abs(float(est) - ref) <= err + ATOL_FINE_GRID, (fn.__name__, float(est), ref, err)


def test_grid_respects_bounded_supports():
    p, q = D.Beta(t(2.0), t(5.0)), D.Gamma(t(2.0), t(3.0))
    fp, fq = stats.beta(2, 5).pdf, stats.gamma(2, scale=1 / 3).pdf
    ref = quad(lambda x: abs(fp(x) - fq(x)) / 2, 0, 1) + quad(lambda x: fq(x) / 2, 1, np.inf)
    est = A.total_variation(p, q, 5000, None)
    assert est.estimator == "grid" and float(est.stderr) < MAX_GRID_ERROR
    assert abs(float(est) - ref) <= float(est.stderr) + ATOL_QUAD


def test_monte_carlo_tv_and_hellinger_above_two_dimensions():
    # Equal covariances: TV = 2 Phi(Delta / 2) - 1, Delta the Mahalanobis distance.
    cov = random_spd(np.random.default_rng(6), 3)
    m0, m1 = np.zeros(3), np.array([0.5, -0.3, 0.8])
    delta = math.sqrt((m1 - m0) @ np.linalg.solve(cov, m1 - m0))
    est = A.total_variation(as_mvn(m0, cov), as_mvn(m1, cov), N_MC, None)
    assert_mc(est, 2 * stats.norm.cdf(delta / 2) - 1)
    # Product densities: the Bhattacharyya coefficient is the product of 1-D ones.
    df, locs, scales = 4.0, [0.0, 0.5, -0.5], [1.0, 1.5, 0.8]
    p = D.Independent(D.StudentT(t(df), t([0.0, 0.0, 0.0]), t([1.0, 1.0, 1.0])), 1)
    q = D.Independent(D.Normal(t(locs), t(scales)), 1)
    bc = 1.0
    for m, s in zip(locs, scales, strict=True):
        bc *= quad(lambda x, m=m, s=s: math.sqrt(stats.t(df).pdf(x) * stats.norm(m, s).pdf(x)))
    assert_mc(A.hellinger(p, q, N_MC, None), math.sqrt(1 - bc))


# ------------------------------------------------------------------ entropy, cross-entropy


def test_entropy_analytic_against_scipy():
    cov = np.array([[1.0, 0.3], [0.3, 2.0]])
    cases = [
        (D.Normal(t(0.3), t(1.7)), stats.norm(0.3, 1.7).entropy()),
        (D.Gamma(t(2.5), t(0.5)), stats.gamma(2.5, scale=2.0).entropy()),
        (as_mvn([0.0, 1.0], cov), stats.multivariate_normal([0.0, 1.0], cov).entropy()),
        (D.Categorical(t([0.2, 0.3, 0.5])), stats.entropy([0.2, 0.3, 0.5])),
    ]
    for d, ref in cases:
        est = A.entropy(d, 10)
        assert est.estimator == "analytic"
        np.testing.assert_allclose(float(est), ref, rtol=RTOL_CLOSED)


def test_entropy_and_cross_entropy_monte_carlo_against_quadrature():
    p = mixture_1d()
    ref = -quad(lambda x: mixture_pdf(x) * mixture_logpdf(x))
    assert_mc(A.entropy(p, N_MC), ref)
    q = D.Normal(t(0.5), t(2.0))
    ref = -quad(lambda x: mixture_pdf(x) * stats.norm(0.5, 2).logpdf(x))
    assert_mc(A.cross_entropy(p, q, N_MC), ref)
    est = A.cross_entropy(D.Normal(t(0.0), t(1.0)), q, 10)
    ref = -quad(lambda x: stats.norm.pdf(x) * stats.norm(0.5, 2).logpdf(x))
    assert est.estimator == "analytic" and abs(float(est) - ref) < ATOL_QUAD


# ------------------------------------------------------------------ batching, dtype, errors


def test_batch_shapes_broadcast_and_match_elementwise_results():
    p = D.Normal(t([[0.0], [1.0], [-2.0]]), t([[1.0], [0.5], [2.0]]))
    q = D.Normal(t([0.0, 0.5, 1.0, 3.0]), t([1.0, 2.0, 0.7, 1.0]))
    for fn in (
        lambda a, b: A.kl(a, b, 10),
        lambda a, b: A.renyi(a, b, 2.0, 10),
        lambda a, b: A.total_variation(a, b, 10, None),
        lambda a, b: A.hellinger(a, b, 10, None),
        lambda a, b: A.cross_entropy(a, b, 10),
    ):
        est = fn(p, q)
        assert est.shape == (3, 4) and est.stderr.shape == (3, 4)
        for i in range(3):
            for j in range(4):
                pij = D.Normal(p.loc[i, 0], p.scale[i, 0])
                qij = D.Normal(q.loc[j], q.scale[j])
                assert float(est.value[i, j]) == pytest.approx(float(fn(pij, qij)), rel=1e-12)
    # Monte Carlo and grid paths: shapes only (values are checked above).
    mix = D.MixtureSameFamily(
        D.Categorical(t([0.5, 0.5]).expand(3, 1, 2)),
        D.Normal(t([-1.0, 1.0]).expand(3, 1, 2), t(1.0)),
    )
    assert mix.batch_shape == (3, 1)
    for est in (
        A.kl(mix, q, 100),
        A.js(mix, q, 100),
        A.renyi(mix, q, 0.5, 100),
        A.total_variation(mix, q, 100, 64),
    ):
        assert est.shape == (3, 4) and est.stderr.shape == (3, 4)
        assert torch.isfinite(est.value).all() and torch.isfinite(est.stderr).all()


def test_dtype_follows_the_distributions():
    f32 = torch.float32
    p = D.Normal(torch.tensor(0.0, dtype=f32), torch.tensor(1.0, dtype=f32))
    q = D.StudentT(torch.tensor(3.0, dtype=f32))
    for est in (A.kl(p, q, 100), A.total_variation(p, q, 100, 64), A.kl(p, p, 10)):
        assert est.value.dtype == f32 and est.stderr.dtype == f32


def test_bad_input_raises_value_error_naming_p_and_q():
    normal, mvn = D.Normal(t(0.0), t(1.0)), as_mvn([0.0, 0.0], np.eye(2))
    poisson = D.Poisson(t(2.0))
    calls = (
        lambda a, b: A.kl(a, b, 10),
        lambda a, b: A.renyi(a, b, 0.5, 10),
        lambda a, b: A.js(a, b, 10),
        lambda a, b: A.total_variation(a, b, 10, None),
        lambda a, b: A.hellinger(a, b, 10, None),
        lambda a, b: A.cross_entropy(a, b, 10),
    )
    for call in calls:
        with pytest.raises(ValueError, match=r"p and q have different event shapes"):
            call(normal, mvn)
        with pytest.raises(ValueError, match=r"p is discrete but q is continuous"):
            call(poisson, normal)
    with pytest.raises(ValueError, match=r"p .* and q .* cannot be broadcast"):
        A.kl(D.Normal(t([0.0, 1.0]), t(1.0)), D.Normal(t([0.0, 1.0, 2.0]), t(1.0)), 10)
    with pytest.raises(ValueError, match="num_samples"):
        A.kl(normal, D.StudentT(t(3.0)), 1)
    with pytest.raises(ValueError, match="alpha"):
        A.renyi(normal, normal, -0.5, 10)
    with pytest.raises(ValueError, match="grid_points"):
        A.total_variation(normal, D.StudentT(t(3.0)), 100, 2)
