"""The DDPM forward process and its Gaussian algebra (:mod:`models.diffusion_process`).

References written here, independently of the module's formulas: numpy's ``linspace`` and the
Nichol & Dhariwal (2021) cosine formula, the one-step Gaussian chain composed by recursion,
Gaussian conditioning of the bivariate normal ``(x_{t-1}, x_t) | x_0``, torch's and scipy
(``integrate.quad``) KL divergences, and scipy's normal CDF / log-CDF / log-SF for the
discretised decoder of Ho et al. (2020, Sec. 3.3).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from models.diffusion_process import (
    DiscretizedGaussian,
    Process,
    beta_schedule,
    check_betas,
    check_steps,
    discretized_gaussian_log_likelihood,
    normal_kl,
)

#: Schedules vs numpy: the same float64 formula evaluated by two libraries; linear differs by
#: 1 ulp (measured 2.2e-16), the cosine betas ``1 - abar_t / abar_{t-1}`` amplify ulp-level cos
#: differences by ``1 / beta_1`` (~2.5e4 at T = 1000; measured 3.2e-14, bound ~1e-11).
SCHEDULE_RTOL = 1e-9
#: ``1 - prod(1 - beta)`` in numpy float64 vs the module's expm1/log1p form: numpy's direct
#: subtraction loses ~eps / beta_1 (measured 3.2e-13 at T = 1000, beta_1 = 1e-4).
ONE_MINUS_ABAR_RTOL = 1e-12
#: Closed-form q(x_t | x_0) vs composing T = 20 one-step kernels: ~T float64 roundings.
COMPOSE_RTOL = 1e-12
#: Posterior from the module vs Gaussian conditioning in numpy: the conditioning formula
#: ``v1 - cov^2 / v2`` cancels up to ~2 digits (``1 - 0.98``) on ~1e-16 inputs.
POSTERIOR_TOL = 1e-10
#: Recovering x0 / noise through a parameterisation: division by ``sqrt(abar_T)`` (~5e-5 for
#: the cosine schedule at T = 1000) amplifies 1e-16 rounding to ~1e-12.
PARAM_TOL = 1e-10
#: KL closed form vs torch's closed form: a few float64 roundings of O(1) numbers.
KL_EXACT_TOL = 1e-12
#: KL vs scipy quad (its default epsabs 1.5e-8 on smooth Gaussian integrands).
KL_QUAD_TOL = 1e-7
#: Sum of the probabilities of all L levels vs 1 (the brief's 1e-6).
PROB_SUM_TOL = 1e-6
#: Each bin's probability vs scipy CDF differences, relative, where the probability > 1e-30
#: (the brief's 1e-6; float64 log_ndtr is accurate to ~1e-14 relative).
BIN_RTOL = 1e-6
BIN_MIN_PROB = 1e-30
#: Far-tail log probabilities (~-800 nats and below) vs scipy's logcdf/logsf computation,
#: relative in log space: both use asymptotic expansions good to many digits.
LOG_TAIL_RTOL = 1e-8
#: Standard errors allowed for Monte Carlo moments: P(|Z| > 5) ~ 6e-7 per moment (seeded).
Z_MAX = 5.0
#: Monte Carlo sample size for moment checks (the brief's 200k).
N_MC = 200_000
#: Chi-square goodness-of-fit p-value below which the sampler is rejected (seeded run).
CHI2_MIN_P = 1e-4
#: log sigma^2 vs numpy logs of the same float64 quantities.
LOGVAR_TOL = 1e-10

SEED = 0


# ----------------------------------------------------------------------------- references
def np_linear(steps: int) -> np.ndarray:
    scale = 1000.0 / steps
    return np.linspace(1e-4 * scale, min(0.02 * scale, 0.999), steps)


def np_cosine(steps: int, s: float = 0.008) -> np.ndarray:
    t = np.arange(steps + 1, dtype=np.float64)
    f = np.cos(((t / steps) + s) / (1 + s) * np.pi / 2) ** 2
    abar = f / f[0]
    return np.minimum(1 - abar[1:] / abar[:-1], 0.999)


def np_abar(betas: np.ndarray) -> np.ndarray:
    """``abar_t`` for t = 0..T (``abar_0 = 1``) by a plain cumulative product."""
    return np.concatenate([[1.0], np.cumprod(1 - betas)])


def np_btilde(betas: np.ndarray) -> np.ndarray:
    """``btilde_t`` for t = 0..T via conditioning (entries 0 and 1 are 0)."""
    abar = np_abar(betas)
    out = np.zeros(betas.size + 1)
    for t in range(2, betas.size + 1):
        v1 = 1 - abar[t - 1]
        a2, b = 1 - betas[t - 1], betas[t - 1]
        v2 = a2 * v1 + b
        out[t] = v1 - a2 * v1**2 / v2
    return out


def process(kind: str, steps: int) -> tuple[Process, np.ndarray]:
    betas = beta_schedule(kind, steps)
    return Process.from_betas(betas), betas.numpy()


def ref_log_probs(mean: float, scale: float, levels: int) -> np.ndarray:
    """log P(level k), k = 0..L-1, from scipy's logcdf/logsf (outer bins open)."""
    y = -1 + 2 * np.arange(levels) / (levels - 1)
    half = 1 / (levels - 1)
    lo = np.where(np.arange(levels) == 0, -np.inf, (y - half - mean) / scale)
    hi = np.where(np.arange(levels) == levels - 1, np.inf, (y + half - mean) / scale)
    out = np.empty(levels)
    for k in range(levels):
        if lo[k] >= 0:  # above the mean: difference of survival functions, no cancellation
            a, b = stats.norm.logsf(lo[k]), stats.norm.logsf(hi[k])
        else:
            a, b = stats.norm.logcdf(hi[k]), stats.norm.logcdf(lo[k])
        out[k] = a + np.log1p(-np.exp(b - a)) if np.isfinite(b) else a
    return out


def ref_probs(mean: float, scale: float, levels: int) -> np.ndarray:
    """P(level k) as plain scipy CDF differences (SF differences above the mean)."""
    y = -1 + 2 * np.arange(levels) / (levels - 1)
    half = 1 / (levels - 1)
    lo = np.append(-np.inf, (y[1:] - half - mean) / scale)
    hi = np.append((y[:-1] + half - mean) / scale, np.inf)
    cdf = stats.norm.cdf(hi) - stats.norm.cdf(lo)
    sf = stats.norm.sf(lo) - stats.norm.sf(hi)
    return np.where(lo >= 0, sf, cdf)


def module_log_probs(mean: float, log_scale: float, levels: int) -> np.ndarray:
    y = -1 + 2 * torch.arange(levels, dtype=torch.float64) / (levels - 1)
    m = torch.full_like(y, mean)
    ls = torch.full_like(y, log_scale)
    return discretized_gaussian_log_likelihood(y, m, ls, levels).numpy()


# ----------------------------------------------------------------------------- 1. schedules
@pytest.mark.parametrize("steps", [1000, 100, 10])
def test_linear_schedule_matches_numpy(steps):
    np.testing.assert_allclose(
        beta_schedule("linear", steps).numpy(), np_linear(steps), rtol=SCHEDULE_RTOL, atol=0
    )


@pytest.mark.parametrize("steps", [1000, 50])
def test_cosine_schedule_matches_nichol_dhariwal(steps):
    betas = beta_schedule("cosine", steps)
    assert betas.dtype == torch.float64
    np.testing.assert_allclose(betas.numpy(), np_cosine(steps), rtol=SCHEDULE_RTOL, atol=0)


@pytest.mark.parametrize(
    ("kind", "steps"),
    [
        ("linear", 1000),
        ("linear", 100),
        ("linear", 10),
        ("linear", 1),
        ("cosine", 1000),
        ("cosine", 50),
        ("cosine", 1),
    ],
)
def test_schedule_ranges_and_one_minus_abar(kind, steps):
    proc, b = process(kind, steps)
    assert b.shape == (steps,)
    assert np.all((b > 0) & (b < 1))
    assert np.all(np.diff(proc.abar.numpy()) < 0)
    assert proc.abar[0] == 1.0 and proc.one_minus_abar[0] == 0.0
    ref = 1 - np.cumprod(1 - b)
    np.testing.assert_allclose(
        proc.one_minus_abar[1:].numpy(), ref, rtol=ONE_MINUS_ABAR_RTOL, atol=0
    )
    np.testing.assert_allclose(
        float(proc.one_minus_abar[1]), b[0], rtol=ONE_MINUS_ABAR_RTOL, atol=0
    )


# ----------------------------------------------------------------------------- 2. forward
def test_q_marginal_is_composition_of_q_step():
    steps, n, d = 20, 7, 3
    proc, b = process("linear", steps)
    g = torch.Generator().manual_seed(SEED)
    x0 = torch.randn(n, d, generator=g, dtype=torch.float64)
    mean, var = x0.numpy().copy(), np.zeros((n, d))
    ones = torch.ones(n, d, dtype=torch.float64)
    for t in range(1, steps + 1):
        tt = torch.full((n,), t)
        # one step's kernel N(a x, s): read a and s off q_step, check them against numpy
        a, s = (v.numpy() for v in proc.q_step(ones, tt))
        np.testing.assert_allclose(a, np.sqrt(1 - b[t - 1]), rtol=COMPOSE_RTOL, atol=0)
        np.testing.assert_allclose(s, b[t - 1], rtol=COMPOSE_RTOL, atol=0)
        mean = proc.q_step(torch.from_numpy(mean), tt)[0].numpy()
        var = a**2 * var + s
        m_t, v_t = proc.q_marginal(x0, tt)
        np.testing.assert_allclose(m_t.numpy(), mean, rtol=COMPOSE_RTOL, atol=0)
        np.testing.assert_allclose(v_t.numpy(), var, rtol=COMPOSE_RTOL, atol=0)


def test_q_step_chain_monte_carlo_matches_q_marginal():
    steps = 20
    proc, _ = process("linear", steps)
    g = torch.Generator().manual_seed(SEED)
    x0 = torch.tensor([[-1.5, 0.2, 2.0]], dtype=torch.float64)
    x = x0.expand(N_MC, 3)
    for t in range(1, steps + 1):
        m, v = proc.q_step(x, torch.full((N_MC,), t))
        x = m + v.sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
    mean, var = proc.q_marginal(x0, torch.tensor([steps]))
    mean, var = mean[0].numpy(), var[0].numpy()
    xs = x.numpy()
    assert np.all(np.abs(xs.mean(0) - mean) <= Z_MAX * np.sqrt(var / N_MC))
    assert np.all(np.abs(xs.var(0, ddof=1) - var) <= Z_MAX * var * np.sqrt(2 / (N_MC - 1)))


# ----------------------------------------------------------------------------- 3. posterior
@pytest.mark.parametrize(("kind", "steps"), [("linear", 1000), ("cosine", 50), ("linear", 10)])
def test_q_posterior_equals_gaussian_conditioning(kind, steps):
    proc, b = process(kind, steps)
    abar = np_abar(b)
    g = torch.Generator().manual_seed(SEED)
    ts = torch.arange(2, steps + 1)
    x0 = torch.randn(ts.numel(), 4, generator=g, dtype=torch.float64)
    xt = torch.randn(ts.numel(), 4, generator=g, dtype=torch.float64)
    mean, var = proc.q_posterior(x0, xt, ts)
    t = ts.numpy()[:, None]
    # joint of (x_{t-1}, x_t) | x0, per coordinate
    m1, v1 = np.sqrt(abar[t - 1]) * x0.numpy(), 1 - abar[t - 1]
    a, beta = np.sqrt(1 - b[t - 1]), b[t - 1]
    m2, v2, cov = a * m1, a**2 * v1 + beta, a * v1
    ref_mean = m1 + cov / v2 * (xt.numpy() - m2)
    ref_var = np.broadcast_to(v1 - cov**2 / v2, ref_mean.shape)
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=POSTERIOR_TOL, atol=POSTERIOR_TOL)
    np.testing.assert_allclose(var.numpy(), ref_var, rtol=POSTERIOR_TOL, atol=0)
    assert proc.post_var[1] == 0.0
    # at t = 1, x_0 is known: the posterior mean is x0 itself
    m_1, v_1 = proc.q_posterior(x0[:1], xt[:1], torch.tensor([1]))
    np.testing.assert_allclose(m_1.numpy(), x0[:1].numpy(), rtol=POSTERIOR_TOL, atol=0)
    assert torch.all(v_1 == 0)


# ----------------------------------------------------------------------------- 4. params
@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_parameterisations_round_trip(kind, param):
    proc, _ = process(kind, 1000)
    g = torch.Generator().manual_seed(SEED)
    n = 64
    x0 = torch.randn(n, 5, generator=g, dtype=torch.float64)
    noise = torch.randn(n, 5, generator=g, dtype=torch.float64)
    t = torch.randint(1, 1001, (n,), generator=g)
    t[:2] = torch.tensor([1, 1000])  # both ends: sqrt(1 - abar_1) and sqrt(abar_T) are smallest
    xt = proc.q_sample(x0, t, noise)
    out = proc.target(x0, noise, t, param)
    np.testing.assert_allclose(
        proc.x0_from(out, xt, t, param).numpy(), x0.numpy(), rtol=0, atol=PARAM_TOL
    )
    np.testing.assert_allclose(
        proc.eps_from(out, xt, t, param).numpy(), noise.numpy(), rtol=0, atol=PARAM_TOL
    )


def test_v_target_is_salimans_ho():
    proc, b = process("linear", 100)
    abar = np_abar(b)
    g = torch.Generator().manual_seed(SEED)
    x0, noise = (torch.randn(8, 3, generator=g, dtype=torch.float64) for _ in range(2))
    t = torch.arange(1, 100, 14)  # 8 timesteps, one per row
    v = proc.target(x0, noise, t, "v").numpy()
    at = abar[t.numpy()][:, None]
    ref = np.sqrt(at) * noise.numpy() - np.sqrt(1 - at) * x0.numpy()
    np.testing.assert_allclose(v, ref, rtol=0, atol=PARAM_TOL)


@pytest.mark.parametrize("method", ["x0_from", "eps_from"])
def test_unknown_parameterisation_raises(method):
    proc, _ = process("linear", 10)
    x = torch.zeros(2, 3, dtype=torch.float64)
    t = torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"unknown parameterization 'score'.*eps, x0, v"):
        getattr(proc, method)(x, x, t, "score")


def test_unknown_parameterisation_raises_in_target():
    proc, _ = process("linear", 10)
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"unknown parameterization 'score'.*eps, x0, v"):
        proc.target(x, x, torch.tensor([1, 2]), "score")


# ----------------------------------------------------------------------------- 5. normal_kl
KL_PAIRS = [
    (0.0, 0.0, 1.0, 0.5),
    (0.3, -1.0, -0.2, 0.7),
    (2.0, 1.2, 0.0, -0.5),
    (-1.0, -3.0, -1.0, -3.0),
]


@pytest.mark.parametrize(("m1", "lv1", "m2", "lv2"), KL_PAIRS)
def test_normal_kl_matches_torch_and_quadrature(m1, lv1, m2, lv2):
    args = [torch.tensor(v, dtype=torch.float64) for v in (m1, lv1, m2, lv2)]
    kl = float(normal_kl(*args))
    p = torch.distributions.Normal(args[0], (args[1] / 2).exp())
    q = torch.distributions.Normal(args[2], (args[3] / 2).exp())
    assert kl == pytest.approx(float(torch.distributions.kl_divergence(p, q)), abs=KL_EXACT_TOL)
    sp, sq = math.exp(lv1 / 2), math.exp(lv2 / 2)

    def integrand(x: float) -> float:
        lp = stats.norm.logpdf(x, m1, sp)
        return math.exp(lp) * (lp - stats.norm.logpdf(x, m2, sq))

    quad, _ = integrate.quad(integrand, m1 - 40 * sp, m1 + 40 * sp, points=[m1], limit=200)
    assert kl == pytest.approx(quad, abs=KL_QUAD_TOL)


# ----------------------------------------------------------------------------- 6. discretised
DISC_CASES = [
    (0.0, 0.0),
    (0.3, math.log(0.05)),
    (-0.7, -3.0),
    (0.123, -8.0),
    (1.0, -8.0),
    (5.0, 0.0),
    (-4.0, -1.0),
    (1.7, -8.0),
    (-30.0, 2.0),
]


@pytest.mark.parametrize("levels", [256, 2])
@pytest.mark.parametrize(("mean", "log_scale"), DISC_CASES)
def test_discretized_bins_match_scipy(levels, mean, log_scale):
    logp = module_log_probs(mean, log_scale, levels)
    assert np.all(np.isfinite(logp))
    assert abs(np.exp(logp).sum() - 1) <= PROB_SUM_TOL
    ref = ref_probs(mean, math.exp(log_scale), levels)
    keep = ref > BIN_MIN_PROB
    np.testing.assert_allclose(np.exp(logp[keep]), ref[keep], rtol=BIN_RTOL, atol=0)
    # log-space reference for every bin, including those underflowing in probability space
    ref_log = ref_log_probs(mean, math.exp(log_scale), levels)
    np.testing.assert_allclose(logp, ref_log, rtol=LOG_TAIL_RTOL, atol=BIN_RTOL)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_discretized_far_tail_is_finite(dtype):
    levels, scale = 256, 0.01
    logp = module_log_probs(0.0, math.log(scale), levels)
    y = -1 + 2 * np.arange(levels) / (levels - 1)
    z_near = (np.abs(y) - 1 / (levels - 1)) / scale
    assert z_near.max() > 90 and np.sum(z_near > 40) > 50  # bins tens of sds out exist
    ref_log = ref_log_probs(0.0, scale, levels)
    np.testing.assert_allclose(logp, ref_log, rtol=LOG_TAIL_RTOL, atol=BIN_RTOL)
    yt = torch.tensor(y, dtype=dtype)
    lp = discretized_gaussian_log_likelihood(
        yt, torch.zeros_like(yt), torch.full_like(yt, math.log(scale)), levels
    )
    assert torch.all(torch.isfinite(lp))
    far = z_near > 40
    assert torch.all(lp[torch.from_numpy(far)] < -800)


@pytest.mark.parametrize("levels", [256, 2])
@pytest.mark.parametrize(("mean", "log_scale"), [(0.1, math.log(0.05)), (0.3, 0.0)])
def test_discretized_gaussian_distribution(levels, mean, log_scale):
    dist = DiscretizedGaussian(
        torch.tensor(mean, dtype=torch.float64),
        torch.tensor(log_scale, dtype=torch.float64),
        levels,
    )
    data = torch.arange(levels, dtype=torch.float64) / (levels - 1)
    logp = dist.log_prob(data).numpy()
    np.testing.assert_allclose(
        logp, ref_log_probs(mean, math.exp(log_scale), levels), rtol=LOG_TAIL_RTOL, atol=BIN_RTOL
    )
    torch.manual_seed(SEED)
    x = dist.sample(torch.Size([N_MC])).numpy()
    k = x * (levels - 1)
    assert np.all((x >= 0) & (x <= 1))
    np.testing.assert_allclose(k, np.round(k), rtol=0, atol=1e-9)
    counts = np.bincount(np.round(k).astype(int), minlength=levels)
    expected = N_MC * np.exp(logp)
    # pool the sparse tails so every cell has >= 5 expected counts (chi-square validity)
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] < 5:
        obs, exp = obs[:-1], exp[:-1]
        exp = exp * obs.sum() / exp.sum()
    assert obs.size >= 2
    assert stats.chisquare(obs, exp).pvalue > CHI2_MIN_P


# ----------------------------------------------------------------------------- 7. log var
@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_log_variance(kind):
    proc, b = process(kind, 1000)
    btilde = np_btilde(b)
    t = torch.tensor([1, 2, 3, 10, 500, 999, 1000])
    like = torch.zeros(t.numel(), 3, dtype=torch.float64)
    tn = t.numpy()
    log_beta = np.log(b[tn - 1])[:, None] * np.ones((1, 3))
    log_tilde = np.log(np.where(tn == 1, btilde[2], btilde[tn]))[:, None] * np.ones((1, 3))
    got = proc.log_variance(t, like, "beta", None).numpy()
    np.testing.assert_allclose(got, log_beta, rtol=0, atol=LOGVAR_TOL)
    got = proc.log_variance(t, like, "beta_tilde", None).numpy()
    np.testing.assert_allclose(got, log_tilde, rtol=0, atol=LOGVAR_TOL)
    for f in (0.0, 1.0, 0.5):
        frac = torch.full_like(like, f)
        got = proc.log_variance(t, like, "learned", frac).numpy()
        np.testing.assert_allclose(got, f * log_beta + (1 - f) * log_tilde, rtol=0, atol=LOGVAR_TOL)


def test_log_variance_beta_tilde_non_monotone_schedule():
    b = np.array([0.5, 0.4, 0.01, 0.001])
    proc = Process.from_betas(torch.from_numpy(b))
    t = torch.arange(1, 5)
    like = torch.zeros(4, 1, dtype=torch.float64)
    btilde = np_btilde(b)
    ref = np.log(np.append(btilde[2], btilde[2:]))[:, None]
    got = proc.log_variance(t, like, "beta_tilde", None).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=LOGVAR_TOL)


# ----------------------------------------------------------------------------- 8. bad input
@pytest.mark.parametrize("steps", [0, -3, 2.5, 10.0, "10", True, None])
def test_bad_steps(steps):
    with pytest.raises(ValueError, match=r"number of diffusion steps T must be an integer >= 1"):
        check_steps(steps)
    with pytest.raises(ValueError, match=r"number of diffusion steps T must be an integer >= 1"):
        beta_schedule("linear", steps)


@pytest.mark.parametrize(
    ("betas", "match"),
    [
        ([0.1, 0.0, 0.2], r"strictly inside \(0, 1\); beta_2 = 0\.0"),
        ([0.1, 1.0], r"strictly inside \(0, 1\); beta_2 = 1\.0"),
        ([-0.1, 0.2], r"strictly inside \(0, 1\); beta_1 = -0\.1"),
        ([0.2, 1.5], r"strictly inside \(0, 1\); beta_2 = 1\.5"),
        ([0.2, 0.3, float("nan")], r"strictly inside \(0, 1\); beta_3 = nan"),
        (torch.full((2, 3), 0.1), r"1-D with T >= 1 entries, got shape \(2, 3\)"),
        (torch.tensor([]), r"1-D with T >= 1 entries, got shape \(0,\)"),
        ([], r"1-D with T >= 1 entries, got shape \(0,\)"),
        ("abc", r"betas must be a 1-D sequence of floats"),
    ],
)
def test_bad_betas(betas, match):
    with pytest.raises(ValueError, match=match):
        check_betas(betas)
    with pytest.raises(ValueError, match=match):
        Process.from_betas(betas)


def test_bad_schedule_options():
    with pytest.raises(ValueError, match=r"unknown schedule 'quadratic'; allowed: linear, cosine"):
        beta_schedule("quadratic", 10)
    for opt in ("beta_start", "beta_end"):
        with pytest.raises(ValueError, match=r"beta_start/beta_end are options of the linear"):
            beta_schedule("cosine", 10, **{opt: 1e-4})
