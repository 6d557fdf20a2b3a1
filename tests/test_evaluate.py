"""Held-out log-likelihood by importance sampling and bits/dim, against PPCA's exact marginal."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from models.ppca import PPCA
from probgen.diagnostics._base import Estimate
from probgen.evaluate import bits_per_dim, log_likelihood, log_likelihood_pointwise

#: The exact posterior as proposal makes every weight equal to p(x_n): only float64 rounding of
#: a few log densities remains.
EXACT_GUIDE_ATOL = 1e-8
#: Z-score for Monte Carlo comparisons: a two-sided false-failure rate of about 6e-5 per check.
Z = 4.0
#: Importance-sampling bias allowed at K = 1000 with the perturbed guide (nats per datum); the
#: measured bias is ~3e-3 and shrinks as O(1/K).
IS_BIAS_TOL = 0.02
#: Deterministic identities (bits/dim arithmetic) hold to float64 rounding.
ARITH_RTOL = 1e-12

N, D, Q = 300, 5, 2


@pytest.fixture
def data() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    loadings = torch.randn(D, Q, generator=gen, dtype=torch.float64)
    z = torch.randn(N, Q, generator=gen, dtype=torch.float64)
    noise = 0.5 * torch.randn(N, D, generator=gen, dtype=torch.float64)
    return z @ loadings.T + noise + 1.0


@pytest.fixture
def ppca(data: torch.Tensor) -> PPCA:
    model = PPCA(n_components=Q)
    model.fit_closed_form(data)
    return model


def perturbed_guide(model: PPCA):
    """q(z_n | x_n) = N(0.8 * posterior mean, (1.3 * posterior sd)^2): worse than the posterior."""

    def guide(x: torch.Tensor) -> None:
        post = model.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample(
                "z", dist.MultivariateNormal(0.8 * post.loc, scale_tril=1.3 * post.scale_tril)
            )

    return guide


def paired(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean of ``a - b`` over data and its standard error."""
    diff = a - b
    return float(diff.mean()), float(diff.std() / math.sqrt(diff.numel()))


def test_exact_posterior_guide_recovers_exact_log_prob(ppca: PPCA, data: torch.Tensor) -> None:
    exact = ppca.log_prob(data)
    for k in (1, 50):
        estimate = log_likelihood_pointwise(ppca, data, num_particles=k, force_importance=True)
        assert estimate.shape == (N,) and estimate.dtype == data.dtype
        torch.testing.assert_close(estimate, exact, rtol=0.0, atol=EXACT_GUIDE_ATOL)


def test_exact_family_uses_closed_form(ppca: PPCA, data: torch.Tensor) -> None:
    result = log_likelihood(ppca, data)
    assert result.estimator == "exact" and result.exact and result.num_samples is None
    exact = ppca.log_prob(data)
    torch.testing.assert_close(result.value, exact.mean())
    torch.testing.assert_close(result.stderr, exact.std() / math.sqrt(N))


def test_perturbed_guide_estimate_close_and_low(ppca: PPCA, data: torch.Tensor) -> None:
    exact = ppca.log_prob(data)
    guide = perturbed_guide(ppca)
    values = log_likelihood_pointwise(
        ppca, data, num_particles=1000, guide=guide, force_importance=True
    )
    gap, se = paired(values, exact)
    assert abs(gap) < IS_BIAS_TOL
    assert gap < Z * se  # a lower bound in expectation
    result = log_likelihood(ppca, data, num_particles=1000, guide=guide, force_importance=True)
    assert result.estimator == "importance-sampling" and result.num_samples == 1000
    # Within its (data) standard error of the exact average.
    assert abs(float(result.value - exact.mean())) < result.stderr


def test_non_decreasing_in_particles(ppca: PPCA, data: torch.Tensor) -> None:
    guide = perturbed_guide(ppca)
    bounds = [
        log_likelihood_pointwise(ppca, data, num_particles=k, guide=guide, force_importance=True)
        for k in (1, 10, 100)
    ]
    for low, high in itertools.pairwise(bounds):
        gain, se = paired(high, low)
        assert gain > -Z * se  # non-decreasing, up to Monte Carlo error
    # From K = 1 (the ELBO) to K = 100 the gain is large and significant, not just noise.
    gain, se = paired(bounds[-1], bounds[0])
    assert gain > Z * se


def test_chunking_invariance(ppca: PPCA, data: torch.Tensor) -> None:
    exact_guide_tiny = log_likelihood_pointwise(
        ppca, data, num_particles=4, batch_size=7, max_elements=37, force_importance=True
    )
    torch.testing.assert_close(
        exact_guide_tiny, ppca.log_prob(data), rtol=0.0, atol=EXACT_GUIDE_ATOL
    )
    guide = perturbed_guide(ppca)
    # Different chunkings consume the random stream differently: agreement within MC error.
    one = log_likelihood_pointwise(
        ppca, data, num_particles=200, guide=guide, force_importance=True
    )
    tiny = log_likelihood_pointwise(
        ppca,
        data,
        num_particles=200,
        guide=guide,
        batch_size=60,
        max_elements=60 * D * 40,
        force_importance=True,
    )
    gap, se = paired(one, tiny)
    assert abs(gap) < Z * se


def test_plain_functions_with_nested_feature_plate() -> None:
    """A linear-Gaussian model written as plain Pyro functions, the data plate at dim -2."""
    gen = torch.Generator().manual_seed(2)
    loadings = torch.randn(D, Q, generator=gen, dtype=torch.float64)
    sigma = 0.7
    marginal = dist.MultivariateNormal(
        torch.zeros(D, dtype=torch.float64),
        covariance_matrix=loadings @ loadings.T + sigma**2 * torch.eye(D, dtype=torch.float64),
    )
    x = marginal.sample((200,))

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(torch.zeros(Q, dtype=x.dtype), 1.0).to_event(1))
            loc = (z @ loadings.T).squeeze(-2)  # z: [..., N, 1, Q] -> loc: [..., N, D]
            with pyro.plate("features", D, dim=-1):
                pyro.sample("obs", dist.Normal(loc, sigma), obs=x)

    cov = torch.linalg.inv(torch.eye(Q, dtype=torch.float64) + loadings.T @ loadings / sigma**2)
    gain = cov @ loadings.T / sigma**2

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample(
                "z",
                dist.MultivariateNormal((x @ gain.T).unsqueeze(-2), covariance_matrix=1.5 * cov),
            )

    values = log_likelihood_pointwise(model, x, num_particles=500, guide=guide, max_elements=5000)
    gap, se = paired(values, marginal.log_prob(x))
    assert abs(gap) < IS_BIAS_TOL and gap < Z * se
    with pytest.raises(ValueError, match="guide is required"):
        log_likelihood(model, x)


def test_vectorisation_failure_names_the_problem(ppca: PPCA, data: torch.Tensor) -> None:
    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(Q, dtype=x.dtype), 1.0).to_event(1))
            loc = z.reshape(x.shape[0], Q) @ ppca.components_  # breaks under a particle plate
            pyro.sample("obs", dist.Normal(loc, 1.0).to_event(1), obs=x)

    with pytest.raises(ValueError, match=r"model failed when vectorised.*after site 'z'"):
        log_likelihood(model, data, num_particles=3, guide=perturbed_guide(ppca))


def test_bad_input(ppca: PPCA, data: torch.Tensor) -> None:
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_particles"):
            log_likelihood(ppca, data, num_particles=k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        log_likelihood(ppca, data, batch_size=0)
    with pytest.raises(ValueError, match="max_elements"):
        log_likelihood(ppca, data, max_elements=0)
    with pytest.raises(ValueError, match="fitted with D=5"):
        log_likelihood(ppca, data[:, :4], force_importance=True)
    with pytest.raises(ValueError, match="x must be"):
        log_likelihood(ppca, data.new_zeros(0, D))


def test_bits_per_dim_by_hand() -> None:
    ll = torch.tensor(-1000.0, dtype=torch.float64)
    estimate = Estimate(
        ll, torch.tensor(2.0, dtype=torch.float64), "importance-sampling", num_samples=5
    )
    plain = bits_per_dim(estimate, 784)
    expected = 1000.0 / (784 * math.log(2.0))
    assert plain.unit == "bits/dim" and plain.estimator == "importance-sampling"
    assert math.isclose(float(plain.value), expected, rel_tol=ARITH_RTOL)
    assert math.isclose(float(plain.stderr), 2.0 / (784 * math.log(2.0)), rel_tol=ARITH_RTOL)
    # 8-bit data scaled by 1/256: log P(discrete) = LL - D log 256, i.e. +8 bits per dim.
    discrete = bits_per_dim(ll, 784, discrete_levels=256)
    by_hand = -(float(ll) - 784 * math.log(256.0)) / (784 * math.log(2.0))
    assert math.isclose(float(discrete.value), by_hand, rel_tol=ARITH_RTOL)
    assert math.isclose(float(discrete.value), expected + 8.0, rel_tol=ARITH_RTOL)
    assert float(discrete.stderr) == 0.0
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(ll, 0)
    with pytest.raises(ValueError, match="discrete_levels"):
        bits_per_dim(ll, 784, discrete_levels=1)
    with pytest.raises(ValueError, match="nats"):
        bits_per_dim(estimate.to_base(2), 784)


def test_discrete_locals_are_enumerated() -> None:
    """A two-component mixture with an empty guide: the assignment is summed out exactly."""
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    locs = torch.tensor([-2.0, 1.5], dtype=torch.float64)
    x = torch.linspace(-4.0, 4.0, 50, dtype=torch.float64).unsqueeze(-1)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(locs[c].unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        pass

    exact = (weights.log() + dist.Normal(locs, 1.0).log_prob(x)).logsumexp(-1)
    values = log_likelihood_pointwise(model, x, num_particles=3, guide=guide)
    torch.testing.assert_close(values, exact, rtol=0.0, atol=EXACT_GUIDE_ATOL)
