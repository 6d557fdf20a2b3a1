"""Pyro versions of posteriordb posteriors: each model's log density equals the Stan program's,
recomputed independently with scipy; its special priors sample and normalise correctly; and
NUTS through ``probgen.fit`` recovers posteriordb's reference posterior means.

References: the Stan programs of stan-dev/posteriordb (``posterior_database/models/stan``),
written out below with ``scipy.stats``; posteriordb's reference draws and published means with
their Monte Carlo standard errors (Magnusson et al. 2024, arXiv:2407.04967).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pytest
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from scipy import integrate, special, stats
from torch import Tensor

import probgen
from models import posteriordb as pm
from probgen.data import posteriordb as pdb

ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "posteriordb"

#: Log densities are sums of up to 1000 float64 terms of size <= 10 (a forward pass of 100
#: steps for the HMM): round-off is ~1e-12; the scipy quadrature of the HMM prior's normalising
#: constant is good to 1e-13. Anything above these bounds is a modelling difference.
LOG_DENSITY_RTOL, LOG_DENSITY_ATOL = 1e-12, 1e-9
#: Reference draws whose parameter values the log densities are compared at (chain, draw).
CHECK_DRAWS = ((0, 0), (3, 500), (9, 999))
#: The posterior means of NUTS and of posteriordb must agree within this many combined Monte
#: Carlo standard errors, sqrt(mcse_ref^2 + mcse_nuts^2), per scalar (mcse_nuts: ArviZ's
#: ``mcse(method="mean")``, i.e. sd / sqrt(bulk ESS)). P(|Z| > 4) = 6e-5, so over the 21
#: scalars checked the false-failure rate is ~1e-3 per run when the MCSEs are right.
Z_MAX = 4.0
#: Sampling checks of the custom priors: z-scores of Monte Carlo means; P(|Z| > 6) = 2e-9.
SAMPLE_Z = 6.0
NUM_PRIOR_DRAWS = 100_000
#: Grid integrals of the priors' densities (midpoint rule, spacing 0.02-0.04, diagonal cells
#: half-weighted, +-12 scales): O(h^2) error, measured at 1.4e-5 and 1.4e-7.
GRID_ATOL = 1e-4
#: NUTS lengths. Default run: 2 chains of 100 draws after 50 warm-up steps (the models start
#: near the posterior, see ``init_values``), ~6 s (eight schools) and ~10 s (mixture) of CPU;
#: the z-scores account for the short chains through their MCSE (worst |z| measured over
#: seeds 0-4: 1.8). Slow run: 300 + 300.
SHORT: dict[str, Any] = {"num_samples": 100, "warmup_steps": 50, "num_chains": 2}
LONG: dict[str, Any] = {"num_samples": 300, "warmup_steps": 300, "num_chains": 2}


def _require() -> None:
    if not (ROOT / "posterior_database" / "posteriors").is_dir():
        pytest.skip(f"shared posteriordb data not found at {ROOT}")


def _posterior(model_name: str) -> pm.Posterior:
    _require()
    data = pdb.load_data(ROOT, pm.POSTERIORS[model_name])
    post = pm.posterior(model_name, data)
    post.model.setup(post.data)
    return post


def _reference_point(post: pm.Posterior, chain: int, draw: int) -> dict[str, Tensor]:
    ref = post.reference_draws(ROOT)
    return {k: v[chain, draw] for k, v in ref.items()}


def _log_joint(model: Any, x: Tensor, params: Mapping[str, Tensor]) -> float:
    """``log p(params, x)`` of the Pyro program in the constrained space (no Jacobians)."""
    trace = poutine.trace(poutine.condition(model.model, data=dict(params))).get_trace(x)
    return float(trace.log_prob_sum())


def _np(params: Mapping[str, Tensor]) -> dict[str, Any]:
    return {k: v.numpy() for k, v in params.items()}


# ----------------------------------------------------------------- the Stan programs, in scipy
def _eight_schools_centered(p: dict[str, Any], y: np.ndarray, sigma: np.ndarray) -> float:
    return float(
        stats.norm.logpdf(p["mu"], 0, 5)
        + stats.halfcauchy.logpdf(p["tau"], scale=5)
        + stats.norm.logpdf(p["theta"], p["mu"], p["tau"]).sum()
        + stats.norm.logpdf(y, p["theta"], sigma).sum()
    )


def _eight_schools_noncentered(p: dict[str, Any], y: np.ndarray, sigma: np.ndarray) -> float:
    theta = p["theta_trans"] * p["tau"] + p["mu"]
    return float(
        stats.norm.logpdf(p["mu"], 0, 5)
        + stats.halfcauchy.logpdf(p["tau"], scale=5)
        + stats.norm.logpdf(p["theta_trans"], 0, 1).sum()
        + stats.norm.logpdf(y, theta, sigma).sum()
    )


def _low_dim_gauss_mix(p: dict[str, Any], y: np.ndarray) -> float:
    mu, sigma, theta = p["mu"], p["sigma"], p["theta"]
    # ordered[2] mu ~ normal(0, 2): two iid normals restricted to mu_1 < mu_2, normalised by 2!.
    prior = math.log(2) + stats.norm.logpdf(mu, 0, 2).sum()
    prior += stats.halfnorm.logpdf(sigma, scale=2).sum() + stats.beta.logpdf(theta, 5, 5)
    log_mix = np.logaddexp(
        math.log(theta) + stats.norm.logpdf(y, mu[0], sigma[0]),
        math.log1p(-theta) + stats.norm.logpdf(y, mu[1], sigma[1]),
    )
    return float(prior + log_mix.sum())


def _positive_ordered_mass(loc: tuple[float, float], scale: tuple[float, float]) -> float:
    """P(0 < A < B) for independent normals, by adaptive quadrature."""

    def integrand(a: float) -> float:
        return float(stats.norm.pdf(a, loc[0], scale[0]) * stats.norm.sf(a, loc[1], scale[1]))

    value, _ = integrate.quad(integrand, 0, np.inf, epsabs=1e-14, epsrel=1e-13)
    return float(value)


def _stan_forward(y: np.ndarray, theta: np.ndarray, mu: np.ndarray) -> float:
    """hmm_example.stan's forward pass, loop for loop (gamma_1(k) = log N(y_1 | mu_k, 1))."""
    k = len(mu)
    gamma = stats.norm.logpdf(y[0], mu, 1)
    for t in range(1, len(y)):
        acc = gamma[:, None] + np.log(theta) + stats.norm.logpdf(y[t], mu, 1)[None, :]
        gamma = special.logsumexp(acc, axis=0)
        assert gamma.shape == (k,)
    return float(special.logsumexp(gamma))


def _hmm_example(p: dict[str, Any], y: np.ndarray) -> float:
    prior = stats.dirichlet.logpdf(p["theta1"], [1, 1]) + stats.dirichlet.logpdf(
        p["theta2"], [1, 1]
    )
    prior += stats.norm.logpdf(p["mu"], [3, 10], 1).sum()
    prior -= math.log(_positive_ordered_mass((3, 10), (1, 1)))
    theta = np.stack([p["theta1"], p["theta2"]])
    # Stan starts the forward pass without an initial distribution (weight 1 per state); the
    # Pyro model's first state is uniform (weight 1/K): the densities differ by log K.
    return float(prior + _stan_forward(y, theta, p["mu"]) - math.log(2))


# ----------------------------------------------------------------- log densities
@pytest.mark.parametrize(("chain", "draw"), CHECK_DRAWS)
def test_eight_schools_centered_log_density(chain: int, draw: int) -> None:
    post = _posterior("eight_schools_centered")
    point = _reference_point(post, chain, draw)
    y, sigma = post.data[:, 0].numpy(), post.model.sigma.numpy()
    expected = _eight_schools_centered(_np(point), y, sigma)
    actual = _log_joint(post.model, post.data, point)
    assert actual == pytest.approx(expected, rel=LOG_DENSITY_RTOL, abs=LOG_DENSITY_ATOL)
    # Pointwise log-likelihood: one term per school, log N(y_j | theta_j, sigma_j).
    loglik = post.model.log_likelihood(post.data, point)
    expected_ll = stats.norm.logpdf(y, point["theta"].numpy(), sigma)
    np.testing.assert_allclose(loglik.numpy(), expected_ll, rtol=LOG_DENSITY_RTOL)


@pytest.mark.parametrize(("chain", "draw"), CHECK_DRAWS)
def test_eight_schools_noncentered_log_density(chain: int, draw: int) -> None:
    post = _posterior("eight_schools_noncentered")
    ref = _reference_point(post, chain, draw)
    point = {
        "mu": ref["mu"],
        "tau": ref["tau"],
        "theta_trans": (ref["theta"] - ref["mu"]) / ref["tau"],
    }
    y, sigma = post.data[:, 0].numpy(), post.model.sigma.numpy()
    expected = _eight_schools_noncentered(_np(point), y, sigma)
    actual = _log_joint(post.model, post.data, point)
    assert actual == pytest.approx(expected, rel=LOG_DENSITY_RTOL, abs=LOG_DENSITY_ATOL)
    # theta is recorded as a deterministic site and mapped back by stan_parameters.
    trace = poutine.trace(poutine.condition(post.model.model, data=point)).get_trace(post.data)
    torch.testing.assert_close(trace.nodes["theta"]["value"], ref["theta"])
    torch.testing.assert_close(post.stan_parameters(point)["theta"], ref["theta"])


@pytest.mark.parametrize(("chain", "draw"), CHECK_DRAWS)
def test_low_dim_gauss_mix_log_density(chain: int, draw: int) -> None:
    post = _posterior("low_dim_gauss_mix")
    point = _reference_point(post, chain, draw)
    expected = _low_dim_gauss_mix(_np(point), post.data[:, 0].numpy())
    actual = _log_joint(post.model, post.data, point)
    assert actual == pytest.approx(expected, rel=LOG_DENSITY_RTOL, abs=LOG_DENSITY_ATOL)


@pytest.mark.parametrize(("chain", "draw"), CHECK_DRAWS)
def test_hmm_example_log_density(chain: int, draw: int) -> None:
    post = _posterior("hmm_example")
    point = _reference_point(post, chain, draw)
    y = post.data[0].numpy()
    expected = _hmm_example(_np(point), y)
    actual = _log_joint(post.model, post.data, point)
    assert actual == pytest.approx(expected, rel=LOG_DENSITY_RTOL, abs=LOG_DENSITY_ATOL)
    # The whole sequence is one datum: its log-likelihood is the forward pass.
    theta = np.stack([point["theta1"].numpy(), point["theta2"].numpy()])
    forward = _stan_forward(y, theta, point["mu"].numpy()) - math.log(2)
    loglik = post.model.log_likelihood(post.data, point)
    assert loglik.shape == (1,)
    assert float(loglik[0]) == pytest.approx(forward, rel=LOG_DENSITY_RTOL)


# ----------------------------------------------------------------- priors and generation
def _grid_mass(log_prob: Any, lo: float, hi: float, step: float = 0.02) -> float:
    """Midpoint-rule integral of ``exp(log_prob)`` over ordered pairs in ``[lo, hi]^2``.

    Cells on the diagonal are half inside the region: they count with weight 1/2 (evaluated
    just off the diagonal), which keeps the rule second order."""
    mid = torch.arange(lo + step / 2, hi, step, dtype=torch.float64)
    a, b = torch.meshgrid(mid, mid, indexing="ij")
    above = torch.stack([a[a < b], b[a < b]], -1)
    diagonal = torch.stack([mid - step / 4, mid + step / 4], -1)
    total = log_prob(above).exp().sum() + 0.5 * log_prob(diagonal).exp().sum()
    return float(total * step**2)


def test_sorted_normal_is_normalised_and_samples_order_statistics() -> None:
    loc, scale = torch.tensor(1.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    prior = pm.SortedNormal(loc, scale, 2)
    assert _grid_mass(prior.log_prob, -23.0, 25.0, 0.04) == pytest.approx(1.0, abs=GRID_ATOL)
    draws = prior.sample((NUM_PRIOR_DRAWS,))
    assert bool((draws[:, 0] < draws[:, 1]).all())
    # E[max(Z1, Z2)] = 1 / sqrt(pi) for iid standard normals (David & Nagaraja 2003, 3.2).
    expected = torch.tensor([1 - 2 / math.sqrt(math.pi), 1 + 2 / math.sqrt(math.pi)])
    se = draws.std(0) / math.sqrt(NUM_PRIOR_DRAWS)
    assert bool(((draws.mean(0) - expected).abs() < SAMPLE_Z * se).all())


def test_positive_ordered_normal_is_normalised_and_samples_the_truncation() -> None:
    loc_, scale_ = (1.0, 2.0), (1.0, 1.5)
    loc, scale = torch.tensor(loc_, dtype=torch.float64), torch.tensor(scale_, dtype=torch.float64)
    prior = pm.PositiveOrderedNormal(loc, scale)
    mass = _positive_ordered_mass(loc_, scale_)
    assert prior.log_normalizer == pytest.approx(math.log(mass), abs=1e-12)
    assert _grid_mass(prior.log_prob, 0.0, 20.0) == pytest.approx(1.0, abs=GRID_ATOL)
    draws = prior.sample((NUM_PRIOR_DRAWS,))
    assert bool((draws[:, 0] > 0).all() and (draws[:, 0] < draws[:, 1]).all())

    def first(a: float) -> float:
        return a * stats.norm.pdf(a, loc_[0], scale_[0]) * stats.norm.sf(a, loc_[1], scale_[1])

    def second(b: float) -> float:
        inside = stats.norm.cdf(b, loc_[0], scale_[0]) - stats.norm.cdf(0, loc_[0], scale_[0])
        return b * stats.norm.pdf(b, loc_[1], scale_[1]) * inside

    expected = torch.tensor([integrate.quad(f, 0, np.inf)[0] / mass for f in (first, second)])
    se = draws.std(0) / math.sqrt(NUM_PRIOR_DRAWS)
    assert bool(((draws.mean(0) - expected).abs() < SAMPLE_Z * se).all())


def test_hmm_generates_uniform_first_state_and_row_transitions() -> None:
    model = pm.HMMExample(num_steps=2)
    theta1, theta2 = (0.8, 0.2), (0.3, 0.7)
    params = {
        "theta1": torch.tensor(theta1, dtype=torch.float64),
        "theta2": torch.tensor(theta2, dtype=torch.float64),
        "mu": torch.tensor([1.0, 40.0], dtype=torch.float64),  # 39 sd apart: states readable
    }
    n = 20_000
    y = model.sample(n, params)
    assert y.shape == (n, 2)
    state = (y > 20.5).double()
    first = state[:, 0]
    checks = [
        (first.mean(), 0.5, n),  # z_1 uniform, as in Stan's forward pass
        (state[first == 0, 1].mean(), theta1[1], int((first == 0).sum())),  # theta1 = row 1
        (state[first == 1, 1].mean(), theta2[1], int((first == 1).sum())),
    ]
    for freq, p, count in checks:
        assert abs(float(freq) - p) < SAMPLE_Z * math.sqrt(p * (1 - p) / count)


def test_models_generate_data_shaped_like_theirs() -> None:
    for name in pm.POSTERIORS:
        post = _posterior(name)
        trace = poutine.trace(post.model.model).get_trace(post.data)
        prior_draw = {
            k: site["value"]
            for k, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
        }
        assert post.model.sample(post.data.shape[0], prior_draw).shape == post.data.shape


def test_init_values_lie_in_the_support_near_the_reference_mean() -> None:
    for name in ("low_dim_gauss_mix", "hmm_example"):
        post = _posterior(name)
        init = post.model.init_values(post.data, torch.Generator().manual_seed(0))
        means = pdb.reference_summary(ROOT, post.name)["mean_value"]
        ref = pdb.to_sites({k: np.full((1, 1), v) for k, v in means.items()}, post.reference_shapes)
        for site, value in init.items():
            assert value.shape == post.reference_shapes[site]
            # A starting point, not an estimate: within 0.25 of the posterior mean.
            assert torch.allclose(value, ref[site][0, 0], atol=0.25), (site, value)
        trace = poutine.trace(poutine.condition(post.model.model, data=init)).get_trace(post.data)
        assert math.isfinite(float(trace.log_prob_sum()))


# ----------------------------------------------------------------- errors
def test_posterior_rejects_unknown_names_and_bad_data() -> None:
    schools = {"J": 8, "y": list(range(8)), "sigma": [1.0] * 8}
    with pytest.raises(
        ValueError, match=r"unknown posterior 'nope'; known: eight_schools_centered"
    ):
        pm.posterior("nope", schools)
    with pytest.raises(ValueError, match=r"lacks 'sigma'"):
        pm.posterior("eight_schools_noncentered", {"J": 8, "y": list(range(8))})
    with pytest.raises(ValueError, match=r"data\['sigma'\] .* must be a vector of J=8 numbers"):
        pm.posterior("eight_schools_centered", {**schools, "sigma": [1.0] * 7})
    with pytest.raises(ValueError, match="written for K=2 states"):
        pm.posterior("hmm_example", {"N": 3, "K": 3, "y": [1.0, 2.0, 3.0]})
    post = pm.posterior("eight_schools-eight_schools_centered", schools)
    assert isinstance(post.model, pm.EightSchoolsCentered)
    assert post.name == "eight_schools-eight_schools_centered"
    assert post.reference_shapes == {"mu": (), "tau": (), "theta": (8,)}


def test_models_reject_data_of_the_wrong_layout() -> None:
    model = pm.EightSchoolsNoncentered(torch.ones(8))
    with pytest.raises(ValueError, match="scores exactly J=8 schools, one row each; got 7 rows"):
        model.model(torch.zeros(7, 1))
    with pytest.raises(ValueError, match=r"must have shape \[rows, 1\], got \(8,\)"):
        model.model(torch.zeros(8))
    with pytest.raises(ValueError, match="give data x, or n"):
        model.model(None)
    with pytest.raises(ValueError, match="sigma must be a non-empty vector of positive"):
        pm.EightSchoolsCentered([1.0, 0.0])
    with pytest.raises(ValueError, match=r"LowDimGaussMix must have shape \[rows, 1\]"):
        pm.LowDimGaussMix().model(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="num_steps must be a positive integer or None"):
        pm.HMMExample(num_steps=0)
    with pytest.raises(ValueError, match="needs num_steps"):
        pm.HMMExample().model(None, n=1)
    with pytest.raises(ValueError, match=r"loc and scale must have shape \(2,\)"):
        pm.PositiveOrderedNormal(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="leaves no mass"):
        pm.PositiveOrderedNormal(torch.tensor([-100.0, -90.0]), torch.ones(2))


def test_compare_runs_on_a_posteriordb_model() -> None:
    post = _posterior("eight_schools_noncentered")
    table = probgen.compare(
        post.model, post.data, methods=("map",), options={"map": {"steps": 50, "lr": 0.05}}
    )
    row = table.rows[0]
    assert row["method"] == "map" and math.isfinite(row["train_ll"])
    assert set(table.fits["map"].params) == {"mu", "tau", "theta_trans"}


# ----------------------------------------------------------------- NUTS against the reference
def _mean_z_scores(post: pm.Posterior, fit: probgen.Fit) -> dict[str, float]:
    """(NUTS mean - reference mean) / sqrt(mcse_ref^2 + mcse_nuts^2) per scalar parameter."""
    assert fit.draws is not None
    est = post.stan_parameters(fit.draws)
    assert {k: tuple(v.shape[2:]) for k, v in est.items()} == dict(post.reference_shapes)
    summary = pdb.reference_summary(ROOT, post.name)
    scores = {}
    for name, value in est.items():
        for index in np.ndindex(*value.shape[2:]):
            flat = name if not index else f"{name}[{','.join(str(i + 1) for i in index)}]"
            draws = value[(..., *index)].numpy()
            mcse = float(az.mcse(draws, method="mean"))
            error = math.hypot(mcse, summary["mcse_mean"][flat])
            scores[flat] = (float(draws.mean()) - summary["mean_value"][flat]) / error
    assert set(scores) == set(summary["mean_value"])
    return scores


def _check_nuts(model_name: str, options: Mapping[str, Any]) -> None:
    post = _posterior(model_name)
    fit = probgen.fit(post.model, post.data, method="nuts", seed=0, **options)
    scores = _mean_z_scores(post, fit)
    bad = {k: round(z, 2) for k, z in scores.items() if abs(z) > Z_MAX}
    assert not bad, f"{model_name}: NUTS means off the reference by (z) {bad}"


def test_nuts_eight_schools_noncentered_matches_reference() -> None:
    _check_nuts("eight_schools_noncentered", SHORT)


def test_nuts_low_dim_gauss_mix_matches_reference() -> None:
    _check_nuts("low_dim_gauss_mix", SHORT)


@pytest.mark.slow
def test_nuts_hmm_example_matches_reference() -> None:
    _check_nuts("hmm_example", LONG)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["eight_schools_noncentered", "low_dim_gauss_mix"])
def test_nuts_long_runs_match_reference(model_name: str) -> None:
    _check_nuts(model_name, LONG)
