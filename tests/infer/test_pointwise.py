"""Pointwise log-likelihoods of plain Pyro programs with nested plates, against closed forms."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

from probgen.infer import pointwise
from probgen.program import PyroProgram

#: Enumeration and an exact-posterior importance proposal are exact up to float64 rounding.
EXACT_TOL = 1e-10
F = 3  # features per datum: the nested plate


def mixture(x):
    w = pyro.sample("w", dist.Beta(2.0, 2.0))
    with pyro.plate("data", x.shape[0], dim=-2):
        c = pyro.sample("c", dist.Bernoulli(w), infer={"enumerate": "parallel"})
        with pyro.plate("features", F, dim=-1):
            pyro.sample("obs", dist.Normal(2.0 * c - 1.0, 1.0), obs=x)


def test_enumerated_latent_beside_a_nested_plate_is_counted_once():
    """log p(x_n) = log sum_c p(c) prod_f N(x_nf | 2c - 1, 1): c_n is per datum, not per f."""
    x = torch.randn(5, F, dtype=torch.float64)
    ll = pointwise.log_likelihood(mixture, x, {"w": torch.tensor(0.3, dtype=torch.float64)})
    expected = torch.logaddexp(
        math.log(0.3) + dist.Normal(1.0, 1.0).log_prob(x).sum(-1),
        math.log(0.7) + dist.Normal(-1.0, 1.0).log_prob(x).sum(-1),
    )
    assert (ll - expected).abs().max() < EXACT_TOL


def factor(x):
    shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0], dim=-2):
        z = pyro.sample("z", dist.Normal(x.new_zeros(1), 1.0))
        with pyro.plate("features", F, dim=-1):
            pyro.sample("obs", dist.Normal(z + shift, 1.0), obs=x)


def exact_posterior(x):
    # z_n | x_n ~ N(sum_f (x_nf - shift) / (1 + F), 1 / (1 + F)), here with shift fixed to 0.5.
    with pyro.plate("data", x.shape[0], dim=-2):
        loc = (x - 0.5).sum(-1, keepdim=True) / (1 + F)
        pyro.sample("z", dist.Normal(loc, (1 + F) ** -0.5))


def test_importance_sampled_latent_beside_a_nested_plate_is_counted_once():
    """x_n ~ N(shift, I + 1 1^T); with the exact posterior as proposal every weight is p(x_n)."""
    x = torch.randn(4, F, dtype=torch.float64)
    program = PyroProgram(factor, exact_posterior)
    program.num_is_particles = 8
    ll = pointwise.log_likelihood(program, x, {"shift": torch.tensor(0.5, dtype=torch.float64)})
    cov = torch.eye(F, dtype=torch.float64) + 1.0
    expected = dist.MultivariateNormal(torch.full((F,), 0.5, dtype=torch.float64), cov).log_prob(x)
    assert (ll - expected).abs().max() < EXACT_TOL
