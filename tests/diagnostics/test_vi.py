"""ELBO, IWAE bound, ELBO gap and PSIS k-hat against closed forms, Pyro and ArviZ."""

from __future__ import annotations

import itertools
import math

import arviz as az
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.infer.importance import psis_diagnostic, vectorized_importance_weights

import probgen
from models.gmm import GaussianMixture
from probgen.diagnostics.vi import (
    KHAT_GOOD,
    KHAT_OK,
    elbo,
    elbo_gap,
    iwae_bound,
    khat_from_log_weights,
    khat_interpretation,
    khat_threshold,
    log_importance_weights,
    psis_khat,
)
from probgen.program import PyroProgram

#: Monte Carlo checks: |estimate - truth| < Z_TOL standard errors (two-sided false-failure
#: probability 6e-5 per check for a Gaussian estimate).
Z_TOL = 4.0
#: Exact identities (the exact-posterior guide makes every log-weight equal to log p(x)).
EXACT_TOL = 1e-9
#: k-hat from the same log-weights: Pyro, ArviZ and probgen run the same algorithm.
SAME_WEIGHTS_TOL = 1e-8
#: k-hat from independent draws of S = 4000 weights: its sampling sd is about 0.05 for k near
#: 0.4, so two independent estimates differ by about 0.07 sd; 0.25 is over 3.5 sd.
KHAT_SAMPLING_TOL = 0.25

TAU, SIGMA = 2.0, 1.0


def conjugate_model(x):
    theta = pyro.sample("theta", dist.Normal(x.new_zeros(()), TAU))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(theta, SIGMA), obs=x)


@pytest.fixture(scope="module")
def conjugate():
    """Data, the exact posterior N(m, s^2), and the log evidence log p(x)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, generator=gen, dtype=torch.float64) + 1.0
    n = x.shape[0]
    precision = 1 / TAU**2 + n / SIGMA**2
    m, s = (x.sum() / SIGMA**2 / precision).item(), precision**-0.5
    cov = SIGMA**2 * torch.eye(n, dtype=x.dtype) + TAU**2
    log_evidence = dist.MultivariateNormal(torch.zeros_like(x), cov).log_prob(x)
    return x, m, s, log_evidence


def gaussian_guide(loc, scale):
    def guide(x):
        pyro.sample("theta", dist.Normal(x.new_tensor(loc), scale))

    return guide


def test_exact_posterior_guide_makes_every_bound_the_evidence(conjugate):
    x, m, s, log_evidence = conjugate
    guide = gaussian_guide(m, s)
    log_w, per_datum = log_importance_weights(conjugate_model, guide, x, 50)
    assert not per_datum and log_w.shape == (50,)
    assert torch.allclose(log_w, log_evidence.expand(50), atol=EXACT_TOL)
    assert abs(float(elbo(conjugate_model, guide, x, 50)) - log_evidence) < EXACT_TOL
    # Rounding leaves the weights equal only to ~1e-14; the tail is still flat: a perfect guide.
    assert khat_from_log_weights(log_w) == -math.inf
    assert psis_khat(conjugate_model, guide, x, 50) == -math.inf
    assert abs(float(iwae_bound(conjugate_model, guide, x, 10, 3)) - log_evidence) < EXACT_TOL
    gap = elbo_gap(conjugate_model, guide, x, log_evidence, num_particles=50)
    assert abs(float(gap)) < EXACT_TOL and gap.estimator == "exact-reference"


def test_elbo_and_gap_match_the_kl_to_the_posterior(conjugate):
    x, m, s, log_evidence = conjugate
    q = dist.Normal(m + 0.5 * s, 0.8 * s)
    kl = torch.distributions.kl_divergence(q, dist.Normal(m, s)).item()
    guide = gaussian_guide(m + 0.5 * s, 0.8 * s)
    bound = elbo(conjugate_model, guide, x, 2000)
    assert bound.unit == "nats" and bound.num_samples == 2000
    assert abs(float(bound) - (log_evidence - kl)) < Z_TOL * float(bound.stderr)
    gap = elbo_gap(conjugate_model, guide, x, log_evidence, num_particles=2000)
    assert abs(float(gap) - kl) < Z_TOL * float(gap.stderr)
    # Without the exact evidence the reference is an IWAE bound: a lower bound on the gap.
    approx = elbo_gap(conjugate_model, guide, x, reference_particles=200, num_particles=500)
    assert approx.estimator == "iwae-reference"
    assert -Z_TOL * float(approx.stderr) < float(approx) < kl + Z_TOL * float(approx.stderr)


def test_iwae_bound_rises_with_k_towards_the_evidence(conjugate):
    x, m, s, log_evidence = conjugate
    guide = gaussian_guide(m + s, 0.7 * s)
    bounds = [iwae_bound(conjugate_model, guide, x, k, num_replicates=20) for k in (1, 10, 100)]
    for low, high in itertools.pairwise(bounds):
        se = math.hypot(float(low.stderr), float(high.stderr))
        assert float(low) < float(high) + Z_TOL * se
    assert float(bounds[-1]) < log_evidence + Z_TOL * float(bounds[-1].stderr)
    kl = torch.distributions.kl_divergence(dist.Normal(m + s, 0.7 * s), dist.Normal(m, s))
    assert log_evidence - float(bounds[-1]) < 0.5 * kl.item()  # K=1's gap is KL = 0.60 nats


def test_enumerated_mixture_elbo_matches_pyro_traceenum(faithful):
    """A probgen family with summed-out assignments: our ELBO is Pyro's TraceEnum_ELBO."""
    fit = probgen.fit(GaussianMixture(2), faithful, method="svi", steps=100, seed=0)
    particles = 200
    ours = elbo(fit.model, fit.guide, faithful, particles)
    with pyro.settings.context(module_local_params=True):
        losses = torch.tensor(
            [
                TraceEnum_ELBO(max_plate_nesting=1).loss(fit.model.model, fit.guide, faithful)
                for _ in range(particles)
            ]
        )
    pyro_value, pyro_se = -losses.mean().item(), losses.std().item() / math.sqrt(particles)
    assert abs(float(ours) - pyro_value) < Z_TOL * math.hypot(float(ours.stderr), pyro_se)


# ----------------------------------------------------------------- amortised (per-datum) guides
#: Upper bound on the downward bias of the K=500 per-datum IWAE bound of the amortised test.
IWAE_BIAS_TOL = 0.05
A, S_Q = 0.4, 0.8  # q(z_n | x_n) = N(A x_n, S_Q^2); the exact posterior is N(x_n / 2, 1/2)


def local_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
        pyro.sample("obs", dist.Normal(z, 1.0), obs=x)


def local_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(A * x, S_Q))


def test_amortised_guide_weights_factorise_per_datum():
    x = torch.linspace(-2, 2, 8, dtype=torch.float64)
    log_w, per_datum = log_importance_weights(local_model, local_guide, x, 2000)
    assert per_datum and log_w.shape == (2000, 8)
    # E_q[log N(x; z, 1) + log N(z; 0, 1)] + H(q), per datum, in closed form.
    m, v = A * x, S_Q**2
    expected = (
        -math.log(2 * math.pi)
        - 0.5 * ((x - m) ** 2 + v)
        - 0.5 * (m**2 + v)
        + 0.5 * math.log(2 * math.pi * math.e * v)
    )
    se = log_w.std(0) / math.sqrt(2000)
    assert ((log_w.mean(0) - expected).abs() < Z_TOL * se).all()
    # The per-datum IWAE bound closes the gap to the exact marginal log N(x_n; 0, 2).
    exact = dist.Normal(0.0, math.sqrt(2.0)).log_prob(x).sum()
    bound = iwae_bound(local_model, local_guide, x, num_particles=500, num_replicates=4)
    # IWAE_K's bias is about sum_n Var(w_n / p(x_n)) / (2K); here < 8 * 2 / 1000 = 0.016 nats.
    assert -IWAE_BIAS_TOL < float(bound) - exact < Z_TOL * float(bound.stderr)
    assert float(elbo(local_model, local_guide, x, 500)) < float(bound)
    khats = psis_khat(local_model, local_guide, x, 500, per_datum=True)
    assert isinstance(khats, torch.Tensor) and khats.shape == (8,) and khats.dtype == x.dtype
    assert (khats < KHAT_OK).all()  # a Gaussian guide of a Gaussian posterior, wider tails


def test_family_with_its_own_guide_needs_no_guide_argument(conjugate):
    x, m, s, log_evidence = conjugate
    program = PyroProgram(conjugate_model, gaussian_guide(m, s))
    assert abs(float(elbo(program, None, x, 10)) - log_evidence) < EXACT_TOL


# ----------------------------------------------------------------- PSIS k-hat
def test_khat_of_the_same_weights_equals_arviz_and_pyro(conjugate):
    x, m, s, _ = conjugate
    guide = gaussian_guide(m + 0.3 * s, 0.8 * s)
    pyro.set_rng_seed(3)
    pyro_k = psis_diagnostic(conjugate_model, guide, x, num_particles=2000, max_plate_nesting=1)
    pyro.set_rng_seed(3)
    log_w = vectorized_importance_weights(
        conjugate_model, guide, x, num_samples=2000, max_plate_nesting=1
    )[0]
    ours = khat_from_log_weights(log_w)
    assert abs(ours - pyro_k) < SAME_WEIGHTS_TOL
    assert abs(ours - float(az.psislw(log_w.numpy().copy())[1])) < SAME_WEIGHTS_TOL


def test_psis_khat_agrees_with_pyro_on_independent_draws(conjugate):
    x, m, s, _ = conjugate
    # A guide narrower than the posterior by sd ratio r has tail shape k = 1 - r^2 = 0.36.
    guide = gaussian_guide(m + 0.2 * s, 0.8 * s)
    ours = psis_khat(conjugate_model, guide, x, 4000)
    theirs = psis_diagnostic(conjugate_model, guide, x, num_particles=4000, max_plate_nesting=1)
    assert isinstance(ours, float)
    assert abs(ours - theirs) < KHAT_SAMPLING_TOL
    assert abs(ours - 0.36) < KHAT_SAMPLING_TOL


@pytest.mark.parametrize("shape", [0.2, 0.5, 0.9])
def test_khat_recovers_the_pareto_shape_of_known_weights(shape):
    # Ratios drawn from a generalised Pareto with shape k (inverse CDF): k-hat estimates k.
    # The tail holds 3 sqrt(S) ~ 950 draws, so the estimate's sd is about (1 + k)/sqrt(950).
    u = torch.rand(100_000, dtype=torch.float64)
    log_w = torch.log(((1 - u) ** -shape - 1) / shape)
    assert abs(khat_from_log_weights(log_w) - shape) < 4 * (1 + shape) / math.sqrt(950)


def test_khat_verdicts_and_sample_size_threshold():
    assert [khat_interpretation(k) for k in (0.3, 0.6, 0.9, 1.5, math.inf, math.nan)] == [
        "good",
        "ok",
        "bad",
        "very bad",
        "very bad",
        "very bad",
    ]
    assert KHAT_GOOD < KHAT_OK
    assert khat_threshold(1000) == pytest.approx(1 - 1 / 3)
    assert khat_threshold(100_000) == KHAT_OK
    assert khat_from_log_weights(torch.tensor([0.0, math.inf, 1.0] * 100)) == math.inf
    assert khat_from_log_weights(torch.arange(20.0)) == math.inf  # too few tail draws


# ----------------------------------------------------------------- bad input
def test_bad_arguments_are_named(conjugate):
    x, m, s, _ = conjugate
    guide = gaussian_guide(m, s)
    with pytest.raises(ValueError, match="num_particles"):
        elbo(conjugate_model, guide, x, 1)
    with pytest.raises(ValueError, match="num_replicates"):
        iwae_bound(conjugate_model, guide, x, 10, num_replicates=1)
    with pytest.raises(ValueError, match="guide is required"):
        elbo(conjugate_model, None, x)
    with pytest.raises(TypeError, match="guide must be callable"):
        elbo(conjugate_model, "normal", x)
    with pytest.raises(ValueError, match="log_likelihood"):
        elbo_gap(conjugate_model, guide, x, math.nan, num_particles=10)
    with pytest.raises(ValueError, match="per_datum"):
        psis_khat(conjugate_model, guide, x, 100, per_datum=True)
    with pytest.raises(ValueError, match="num_draws"):
        khat_threshold(1)
