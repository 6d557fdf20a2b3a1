"""Simulation-based calibration: the simultaneous ECDF band against closed forms, Monte Carlo
and ArviZ's implementation of the same paper, then SBC end to end on conjugate models."""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from scipy import stats

from probgen import PyroProgram
from probgen.calibration import SBCResult, ecdf_band, sbc

#: Uniform rank sets simulated to check exact probabilities; a rate's standard error is then
#: at most sqrt(0.25 / 20000) = 0.0035 (0.0015 near 0.05).
MC_REPS = 20_000
#: Allowed distance of a Monte Carlo rate from its exact value, in standard errors: a
#: two-sided 4.5-sigma miss happens with probability 7e-6.
MC_SIGMAS = 4.5
#: The band check of the brief: repetitions, and the probability of the binomial interval
#: the number of exceedances must fall in (false failure 1e-4).
EXCEED_REPS = 200
EXCEED_LEVEL = 1 - 1e-4
#: A calibrated method "passes" when no p-value is below this: a correct method fails it with
#: probability at most 1e-3 per parameter (p-values are valid under uniformity).
PASS_P = 1e-3
#: A miscalibrated method must be caught with p-values far below the 5% band level.
FAIL_P = 1e-4


def _min_tail(band, counts: np.ndarray) -> np.ndarray:
    """Smallest two-sided binomial tail probability of each ECDF (``[R, K]`` counts)."""
    return band.tails[np.arange(len(band.points)), counts].min(-1)


def _uniform_ranks(shape: tuple[int, ...], num_draws: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_draws + 1, size=shape)


# ----------------------------------------------------------------------- the band


def test_single_point_band_is_the_central_binomial_interval():
    # With one interior evaluation point (L = 1, z = 1/2) simultaneous = pointwise: the band is
    # the narrowest central interval of Binomial(20, 1/2) with mass >= 0.95.
    band = ecdf_band(20, 1)
    assert band.points.tolist() == [0.5]
    lo, hi = stats.binom.interval(0.95, 20, 0.5)
    assert (band.lower[0], band.upper[0]) == (lo, hi) == (6, 14)
    mass = stats.binom.cdf(hi, 20, 0.5) - stats.binom.cdf(lo - 1, 20, 0.5)
    assert band.coverage == pytest.approx(mass, rel=1e-12)
    assert band.gamma == pytest.approx(2 * stats.binom.cdf(lo, 20, 0.5), rel=1e-12)


@pytest.mark.parametrize(("n", "num_draws"), [(50, 19), (100, 99)])
def test_band_coverage_is_exact_and_gamma_is_the_simulated_quantile(n, num_draws):
    # The paper's simulation method: gamma is the 5% quantile of min_i p_i over uniform ECDFs.
    band = ecdf_band(n, num_draws)
    assert 0.95 <= band.coverage < 0.96
    counts = band.counts(_uniform_ranks((MC_REPS, n), num_draws, seed=n))
    inside, min_p = band.contains(counts), _min_tail(band, counts)
    assert np.array_equal(inside, min_p >= band.gamma)  # the band is {min_i p_i >= gamma}
    se = np.sqrt(0.05 * 0.95 / MC_REPS)
    assert abs(inside.mean() - band.coverage) < MC_SIGMAS * se
    # gamma is the largest such level: the next attainable one would exclude more than 5%.
    assert np.mean(min_p <= band.gamma) > 0.05 - MC_SIGMAS * se


def test_band_matches_arviz_implementation_of_the_paper():
    from arviz.stats.ecdf_utils import ecdf_confidence_band

    for n, num_draws in [(100, 99), (50, 19), (30, 9)]:
        band = ecdf_band(n, num_draws)
        lo, hi = ecdf_confidence_band(n, band.points, band.points, prob=0.95, method="optimized")
        lower, upper = np.round(lo * n).astype(int), np.round(hi * n).astype(int)
        # ArviZ minimises |coverage - 0.95| over a step function with Brent's method, so it may
        # stop one attainable level short of the narrowest band; never more than one count.
        assert np.abs(lower - band.lower).max() <= 1
        assert np.abs(upper - band.upper).max() <= 1
        if (n, num_draws) == (100, 99):
            assert np.array_equal(lower, band.lower) and np.array_equal(upper, band.upper)


def test_uniform_ranks_leave_the_band_about_five_percent_of_the_time():
    num_draws, n = 19, 50
    ranks = _uniform_ranks((EXCEED_REPS, n), num_draws, seed=7)
    results = [SBCResult.from_ranks(r, num_draws) for r in ranks]
    fails = np.array([r.fails["0"] for r in results])
    p_values = np.array([r.p_values["0"] for r in results])
    rate = 1 - results[0].band.coverage  # exact, 0.048
    lo, hi = stats.binom.interval(EXCEED_LEVEL, EXCEED_REPS, rate)
    assert lo <= fails.sum() <= hi
    # Leaving the band is the p-value test at level 1 - coverage.
    assert np.array_equal(fails, p_values <= rate + 1e-12)


def test_p_value_matches_monte_carlo():
    num_draws, n = 99, 100
    band = ecdf_band(n, num_draws)
    skewed = (np.random.default_rng(3).random(n) ** 1.25 * (num_draws + 1)).astype(int)
    counts = band.counts(skewed)
    p = band.p_value(counts)
    observed = _min_tail(band, counts[None])[0]
    min_p = _min_tail(band, band.counts(_uniform_ranks((MC_REPS, n), num_draws, seed=11)))
    mc = np.mean(min_p <= observed)
    assert 0.001 < p < 0.5  # an informative case, neither trivial nor extreme
    assert abs(mc - p) < MC_SIGMAS * np.sqrt(p * (1 - p) / MC_REPS)


# ----------------------------------------------------------------------- SBC end to end


def normal_mean(x, n=None):
    """mu ~ N(0, I_2), x_n ~ N(mu, I_2): p(mu | x) = N(sum x / (N + 1), I / (N + 1))."""
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", n if x is None else len(x)):
        return pyro.sample("obs", dist.Normal(mu, 1.0).to_event(1), obs=x)


def conjugate_posterior(scale: float = 1.0):
    """Draws from the exact posterior of :func:`normal_mean`, its scale multiplied by ``scale``."""

    def draw(x: torch.Tensor, num_draws: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        precision = 1.0 + len(x)
        noise = torch.randn(num_draws, 2, generator=gen, dtype=x.dtype)
        return {"mu": x.sum(0) / precision + scale * precision**-0.5 * noise}

    return draw


def scalar_mean(x, n=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", n if x is None else len(x)):
        return pyro.sample("obs", dist.Normal(mu, 1.0), obs=x)


def ridge(x, n=None):
    """y ~ N(a + b, 1), a, b ~ N(0, 1): with N points corr(a, b | y) = -N / (N + 1), marginal
    posterior sd sqrt((N + 1) / (2N + 1)) ~ 0.71, while the mean-field optimum has sd
    1 / sqrt(N + 1) (0.03 for N = 1000)."""
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    with pyro.plate("data", n if x is None else len(x)):
        return pyro.sample("obs", dist.Normal(a + b, 1.0), obs=x)


def test_exact_posterior_passes():
    result = sbc(
        PyroProgram(normal_mean),
        5,
        conjugate_posterior(),
        num_simulations=100,
        num_draws=19,
        seed=0,
    )
    assert result.parameters == ("mu[0]", "mu[1]")
    assert result.ranks.shape == (100, 2) and result.ranks.min() >= 0 and result.ranks.max() <= 19
    assert result.passed
    assert min(result.p_values.values()) > PASS_P
    assert "mu[1]" in result.summary()


def test_under_dispersed_posterior_fails_with_ranks_at_both_ends():
    # The exact posterior mean with a third of its spread: about half the truths fall outside
    # all 19 draws (p-values ~1e-12 over seeds 0-3).
    result = sbc(
        normal_mean, 5, conjugate_posterior(scale=1 / 3), num_simulations=100, num_draws=19, seed=0
    )
    assert not result.passed and all(result.fails.values())
    assert max(result.p_values.values()) < FAIL_P
    ranks = result.ranks
    assert ((ranks == 0).mean(0) > 3 / 20).all() and ((ranks == 19).mean(0) > 3 / 20).all()


def test_discrete_global_ties_are_broken_uniformly():
    def switch(x, n=None):
        k = pyro.sample("k", dist.Bernoulli(0.5))
        with pyro.plate("data", n if x is None else len(x)):
            return pyro.sample("obs", dist.Normal(2.0 * k, 1.0), obs=x)

    def exact(x, num_draws, gen):
        p1 = torch.sigmoid((2 * x - 2).sum())  # log N(x | 2, 1) - log N(x | 0, 1) summed
        return {"k": torch.bernoulli(p1.expand(num_draws), generator=gen)}

    result = sbc(switch, 2, exact, num_simulations=100, num_draws=9, seed=1)
    assert result.p_values["k"] > PASS_P


def test_nuts_passes_on_a_conjugate_model():
    # A smoke run of the sampler path (few simulations: it has little power; the slow test
    # below has more). Five of 50 draws are kept: NUTS's ESS here is 8-37 per 40 draws.
    result = sbc(
        scalar_mean,
        5,
        "nuts",
        num_simulations=6,
        num_draws=5,
        seed=0,
        num_samples=50,
        warmup_steps=40,
        num_chains=1,
    )
    assert result.method == "nuts"
    assert (result.min_ess >= 5).all()
    assert result.ranks.min() >= 0 and result.ranks.max() <= 5
    assert result.passed and result.p_values["mu"] > PASS_P


def test_mean_field_svi_puts_ranks_at_the_ends():
    result = sbc(
        ridge,
        10_000,
        "svi",
        num_simulations=4,
        num_draws=9,
        seed=0,
        guide="normal",
        steps=50,
        lr=0.1,
    )
    # A smoke run of the variational path (the slow test below runs the band test). Calibrated
    # draws put a rank at 0 or 9 with probability 0.2 (six of eight: probability 1e-3); the
    # mean-field draws (sd 0.01 against a posterior sd of 0.71) miss the truth in ~98% of runs.
    assert np.isin(result.ranks, [0, 9]).sum() >= 6


@pytest.mark.slow
def test_mean_field_svi_fails_on_a_correlated_posterior():
    result = sbc(
        ridge,
        1000,
        "svi",
        num_simulations=40,
        num_draws=19,
        seed=0,
        guide="normal",
        steps=300,
        lr=0.05,
    )
    assert all(result.fails.values()) and max(result.p_values.values()) < FAIL_P


@pytest.mark.slow
def test_laplace_passes_on_the_same_correlated_posterior():
    # The posterior is Gaussian, so the Laplace approximation (MAP + inverse Hessian) is exact.
    result = sbc(
        ridge,
        1000,
        "svi",
        num_simulations=40,
        num_draws=19,
        seed=0,
        guide="laplace",
        steps=300,
        lr=0.05,
    )
    assert result.passed and min(result.p_values.values()) > PASS_P


@pytest.mark.slow
def test_nuts_passes_with_many_simulations():
    result = sbc(
        scalar_mean,
        5,
        "nuts",
        num_simulations=100,
        num_draws=19,
        seed=0,
        num_samples=150,
        warmup_steps=150,
        num_chains=1,
    )
    assert (result.min_ess >= 19).all()
    assert result.passed and result.p_values["mu"] > PASS_P


def test_plot_draws_one_panel_per_parameter():
    ranks = np.stack([_uniform_ranks((40,), 9, 0), np.r_[np.zeros(20, int), np.full(20, 9)]], 1)
    result = SBCResult.from_ranks(ranks, 9, ["ok", "bad"])
    assert result.fails == {"ok": False, "bad": True}
    fig = result.plot()
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    for ax, column in zip(axes, ranks.T, strict=True):
        assert any(isinstance(c, PolyCollection) for c in ax.collections)
        counts = result.band.counts(column)
        expected = np.r_[0.0, counts / 40 - result.band.points, 0.0]
        steps = [line.get_ydata() for line in ax.lines if len(line.get_ydata()) == len(expected)]
        assert any(np.allclose(y, expected) for y in steps)


# ----------------------------------------------------------------------- bad input


def test_improper_prior_is_named():
    def flat(x, n=None):
        mu = pyro.sample("mu_flat", dist.ImproperUniform(dist.constraints.real, (), ()))
        with pyro.plate("data", n if x is None else len(x)):
            return pyro.sample("obs", dist.Normal(mu, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"site 'mu_flat'.*ImproperUniform"):
        sbc(flat, 5, conjugate_posterior(), num_simulations=2, num_draws=3)


def test_prior_without_sampler_is_named():
    class NoSampler(dist.Normal):
        def rsample(self, sample_shape=()):
            raise NotImplementedError("no sampler")

    def model(x, n=None):
        mu = pyro.sample("mu_custom", NoSampler(0.0, 1.0))
        with pyro.plate("data", n if x is None else len(x)):
            return pyro.sample("obs", dist.Normal(mu, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"site 'mu_custom'.*NoSampler"):
        sbc(model, 5, "nuts", num_simulations=2, num_draws=3)


def test_param_without_prior_is_named():
    def model(x, n=None):
        mu = pyro.param("mu_param", torch.tensor(0.0))
        s = pyro.sample("s", dist.Normal(0.0, 1.0))
        with pyro.plate("data", n if x is None else len(x)):
            return pyro.sample("obs", dist.Normal(mu + s, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"site 'mu_param' is a pyro.param"):
        sbc(model, 5, "nuts", num_simulations=2, num_draws=3)


def test_model_that_cannot_generate_is_rejected():
    def no_n(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            return pyro.sample("obs", dist.Normal(mu, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"cannot generate data.*keyword argument n"):
        sbc(no_n, 5, "nuts")
    with pytest.raises(ValueError, match="cannot generate data"):
        sbc(PyroProgram(no_n), 5, "nuts")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_simulations": 0}, "num_simulations must be an integer >= 1; got 0"),
        ({"num_draws": 0}, "num_draws must be an integer >= 1; got 0"),
        ({"num_draws": True}, "num_draws must be an integer >= 1; got True"),
        ({"n_data": 0}, "n_data must be an integer >= 1; got 0"),
        ({"conf_level": 1.0}, r"conf_level must lie in \(0, 1\)"),
        ({"method": "map"}, "point estimate"),
        ({"method": "em"}, "point estimate"),
        ({"method": "hmc"}, "unknown method 'hmc'; allowed: "),
        ({"context": {}}, "fit option 'context' is not supported by sbc"),
        ({"num_samples": 10, "num_chains": 1}, "num_samples x num_chains = 10 .* num_draws=100"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sbc(scalar_mean, **{"n_data": 5, "method": "nuts", **kwargs})


def test_from_ranks_checks_its_input():
    with pytest.raises(ValueError, match=r"ranks must lie in 0..num_draws=9"):
        SBCResult.from_ranks(np.array([0, 10]), 9)
    with pytest.raises(ValueError, match="integers"):
        SBCResult.from_ranks(np.array([0.5, 1.0]), 9)
    with pytest.raises(ValueError, match="1 parameter names for 2 columns"):
        SBCResult.from_ranks(np.zeros((4, 2), int), 9, ["a"])


def test_posterior_function_is_checked():
    with pytest.raises(ValueError, match="method must return 3 draws of site 'mu'"):
        sbc(
            normal_mean,
            5,
            lambda x, n, g: {"mu": torch.zeros(2, 2)},
            num_simulations=1,
            num_draws=3,
        )
    with pytest.raises(ValueError, match=r"fit options \['steps'\] need a method name"):
        sbc(normal_mean, 5, conjugate_posterior(), num_draws=3, steps=10)
