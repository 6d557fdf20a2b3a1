"""A conjugate Normal-Normal model and its analytic posterior, shared by the engine tests.

mu ~ Normal(M0, S0),   x_n | mu ~ Normal(mu, SIGMA)
p(mu | x) = Normal(m_N, s_N),  1/s_N^2 = 1/S0^2 + N/SIGMA^2,
m_N = s_N^2 (M0/S0^2 + sum x / SIGMA^2)
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch

M0, S0, SIGMA = 0.0, 2.0, 1.0


def model(x, n=None):
    mu = pyro.sample("mu", dist.Normal(torch.tensor(M0, dtype=torch.float64), S0))
    with pyro.plate("data", len(x) if x is not None else n):
        return pyro.sample("obs", dist.Normal(mu, SIGMA), obs=x)


def data(n: int = 50, seed: int = 0, true_mu: float = 1.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return true_mu + SIGMA * torch.randn(n, generator=g, dtype=torch.float64)


def posterior(x: torch.Tensor) -> tuple[float, float]:
    """Analytic posterior mean and standard deviation of mu."""
    precision = 1 / S0**2 + len(x) / SIGMA**2
    mean = (M0 / S0**2 + x.sum().item() / SIGMA**2) / precision
    return mean, math.sqrt(1 / precision)
