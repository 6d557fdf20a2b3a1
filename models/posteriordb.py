"""Pyro versions of posteriordb posteriors, with reference draws to check inference against.

posteriordb (Magnusson et al. 2024, arXiv:2407.04967) pairs Stan programs with data and
reference posterior draws. Each class below is the Stan program
``posterior_database/models/stan/<model>.stan`` of stan-dev/posteriordb written as a probgen
:class:`~probgen.GenerativeModel` (global parameters outside the ``"data"`` plate, observed site
``"obs"``), so that ``probgen.fit(..., method="nuts")`` and ``probgen.compare`` run on it:

* ``eight_schools_centered`` / ``eight_schools_noncentered`` (Rubin 1981; Gelman et al. 2013,
  BDA3 section 5.5)::

      mu ~ Normal(0, 5),  tau ~ HalfCauchy(5)
      centered:     theta_j ~ Normal(mu, tau)
      noncentered:  theta_trans_j ~ Normal(0, 1),  theta_j = mu + tau theta_trans_j
      y_j ~ Normal(theta_j, sigma_j)        j = 1..J, sigma_j known

  Data ``x``: ``[J, 1]``, one row per school.

* ``low_dim_gauss_mix``::

      mu ~ Normal(0, 2) iid, restricted to mu_1 < mu_2 (Stan's ``ordered[2]``)
      sigma_k ~ HalfNormal(2),  theta ~ Beta(5, 5)
      y_n ~ theta Normal(mu_1, sigma_1) + (1 - theta) Normal(mu_2, sigma_2)   (log-sum-exp)

  Data ``x``: ``[N, 1]``.

* ``hmm_example`` (two-state HMM with unit-variance Gaussian emissions)::

      theta1, theta2 ~ Dirichlet(1, 1)   rows of the transition matrix, P(z_t = k | z_{t-1} = j)
      mu ~ Normal((3, 10), 1) restricted to 0 < mu_1 < mu_2 (Stan's ``positive_ordered[2]``)
      y_t | z_t ~ Normal(mu_{z_t}, 1)

  The hidden states are summed out by the forward algorithm (Rabiner 1989) inside
  :class:`pyro.distributions.DiscreteHMM`, so NUTS sees no discrete site. Stan's forward pass
  starts from ``gamma_1(k) = log N(y_1 | mu_k, 1)``, i.e. an unnormalised flat initial
  distribution; here ``z_1`` is uniform, which differs by the constant ``log K`` and leaves the
  posterior unchanged. Data ``x``: ``[1, T]``, the whole sequence as one datum.

Priors here are normalised densities (``HalfCauchy``, ``HalfNormal``, the order constraint's
normalising constants), whereas Stan's ``~`` drops constants: log densities differ from Stan's
``target`` by constants only, so the posteriors are the same.

Reference draws are keyed by posteriordb's parameter names; :meth:`stan_parameters` maps a
model's draws to those names (the non-centered model computes ``theta`` from ``theta_trans``),
and :class:`Posterior` bundles model, data and reference shapes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from probgen import GenerativeModel
from probgen.data import posteriordb

__all__ = [
    "POSTERIORS",
    "EightSchoolsCentered",
    "EightSchoolsNoncentered",
    "HMMExample",
    "LowDimGaussMix",
    "PositiveOrderedNormal",
    "Posterior",
    "SortedNormal",
    "posterior",
]

#: Gauss-Legendre nodes for the normalising constant of :class:`PositiveOrderedNormal`: its
#: integrand is smooth and spans 24 scales, where 200 nodes are exact to double precision.
_QUADRATURE_NODES = 200
#: Half-width, in scales, of the integration range; the normal mass beyond 12 scales is 1e-33.
_QUADRATURE_SCALES = 12.0


class SortedNormal(dist.TorchDistribution):
    """``K`` iid ``Normal(loc, scale)`` draws in ascending order: Stan's ``ordered[K] mu;
    mu ~ normal(loc, scale)``.

    ``log p(v) = log K! + sum_k log N(v_k | loc, scale)`` on ``v_1 < ... < v_K``: the density
    of the order statistics of ``K`` iid draws (David & Nagaraja 2003, eq. 2.2.3), so sorting
    iid draws samples it exactly.
    """

    arg_constraints: ClassVar[dict[str, Any]] = {
        "loc": constraints.real,
        "scale": constraints.positive,
    }
    support = constraints.ordered_vector

    def __init__(self, loc: Tensor, scale: Tensor, size: int, validate_args: Any = None) -> None:
        self.loc, self.scale, self.size = loc, scale, size
        super().__init__(torch.Size(), torch.Size([size]), validate_args=validate_args)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            shape = (*sample_shape, self.size)
            noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
            return (self.loc + self.scale * noise).sort(-1).values

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        normal = dist.Normal(self.loc, self.scale).log_prob(value).sum(-1)
        return normal + math.lgamma(self.size + 1)


@functools.lru_cache(maxsize=16)
def _normalizer(loc1: float, loc2: float, scale1: float, scale2: float) -> float:
    """``P(0 < A < B)`` for independent ``A ~ N(loc1, scale1)``, ``B ~ N(loc2, scale2)``, by
    Gauss-Legendre quadrature of ``N(a | loc1, scale1) Phi((loc2 - a) / scale2)`` over
    ``a > 0``. Cached: every run of a model builds its prior afresh."""
    lower = max(0.0, loc1 - _QUADRATURE_SCALES * scale1)
    upper = max(lower, loc1 + _QUADRATURE_SCALES * scale1)
    nodes, weights = np.polynomial.legendre.leggauss(_QUADRATURE_NODES)
    a = torch.from_numpy(0.5 * (upper - lower) * nodes + 0.5 * (upper + lower))
    density = dist.Normal(loc1, scale1).log_prob(a).exp()
    tail = torch.special.ndtr((loc2 - a) / scale2)
    return float(0.5 * (upper - lower) * (torch.from_numpy(weights) * density * tail).sum())


class PositiveOrderedNormal(dist.TorchDistribution):
    """Independent ``Normal(loc_k, scale_k)``, ``k = 1, 2``, restricted to ``0 < v_1 < v_2``:
    Stan's ``positive_ordered[2] mu; mu[k] ~ normal(loc_k, scale_k)``.

    ``log p(v) = sum_k log N(v_k | loc_k, scale_k) - log Z`` with
    ``Z = P(0 < A < B) = int_0^inf N(a | loc_1, scale_1) Phi((loc_2 - a) / scale_2) da`` for
    independent ``A, B``, computed once by Gauss-Legendre quadrature. Sampling is by rejection
    from the unrestricted normals (acceptance rate ``Z``), which is exact.
    """

    arg_constraints: ClassVar[dict[str, Any]] = {
        "loc": constraints.real_vector,
        "scale": constraints.independent(constraints.positive, 1),
    }
    support = constraints.positive_ordered_vector

    def __init__(self, loc: Tensor, scale: Tensor, validate_args: Any = None) -> None:
        if loc.shape != (2,) or scale.shape != (2,):
            raise ValueError(
                f"loc and scale must have shape (2,), got {tuple(loc.shape)}, {tuple(scale.shape)}"
            )
        self.loc, self.scale = loc, scale
        mass = _normalizer(*loc.tolist(), *scale.tolist())
        if not mass > 0:
            raise ValueError(f"loc={loc.tolist()} leaves no mass on 0 < v_1 < v_2")
        self.log_normalizer = math.log(mass)
        super().__init__(torch.Size(), torch.Size([2]), validate_args=validate_args)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = ()) -> Tensor:
        with torch.no_grad():
            shape = (*sample_shape, 2)
            out = torch.empty(shape, dtype=self.loc.dtype, device=self.loc.device)
            todo = torch.ones(shape[:-1], dtype=torch.bool, device=self.loc.device)
            while todo.any():
                noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
                draws = self.loc + self.scale * noise
                ok = todo & (draws[..., 0] > 0) & (draws[..., 0] < draws[..., 1])
                out[ok] = draws[ok]
                todo &= ~ok
            return out

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        normal = dist.Normal(self.loc, self.scale).log_prob(value).sum(-1)
        return normal - self.log_normalizer


def _rows(x: Tensor | None, n: int | None, width: int | None, what: str) -> int:
    """The number of data rows, checking the trailing size of ``x`` when ``width`` is given."""
    if x is None:
        if n is None:
            raise ValueError("give data x, or n to generate n rows")
        return n
    if x.dim() != 2 or (width is not None and x.shape[1] != width):
        expected = f"[rows, {width}]" if width is not None else "[rows, T]"
        raise ValueError(f"data for {what} must have shape {expected}, got {tuple(x.shape)}")
    return x.shape[0]


#: Relative size of the random jitter of NUTS/SVI starting points, so that chains start apart.
_INIT_JITTER = 0.1


def _two_groups(y: Tensor) -> Tensor | None:
    """Splits 1-D ``y`` at the midpoint of the means of its two halves (one Lloyd step of
    2-means from a split at the mean); None when a group would have fewer than 2 points."""
    low = y < y.mean()
    if low.sum() < 2 or (~low).sum() < 2:
        return None
    low = y < (y[low].mean() + y[~low].mean()) / 2
    return low if low.sum() >= 2 and (~low).sum() >= 2 else None


def _jitter(value: Tensor, scale: Tensor, generator: torch.Generator) -> Tensor:
    noise = torch.randn(value.shape, generator=generator, dtype=value.dtype, device=value.device)
    return value + _INIT_JITTER * scale * noise


class _EightSchools(GenerativeModel):
    exact_log_likelihood = True

    def __init__(self, sigma: Any) -> None:
        super().__init__()
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        if sigma.dim() != 1 or sigma.numel() == 0 or not bool((sigma > 0).all()):
            raise ValueError(
                f"sigma must be a non-empty vector of positive standard errors, got {sigma}"
            )
        self.register_buffer("sigma", sigma)

    def hyperparameters(self) -> dict[str, Any]:
        return {"J": self.sigma.numel()}

    def setup(self, x: Tensor, **context: Tensor) -> None:
        self._schools(x, None)

    def _schools(self, x: Tensor | None, n: int | None) -> int:
        rows, j = _rows(x, n, 1, type(self).__name__), self.sigma.numel()
        if rows != j:
            # Each school has its own theta_j, so rows cannot be subsampled or added.
            raise ValueError(
                f"{type(self).__name__} scores exactly J={j} schools, one row each; got {rows} "
                "rows (minibatches are not supported)"
            )
        return j

    def _hyper(self) -> tuple[Tensor, Tensor]:
        zero = self.sigma.new_zeros(())
        mu = pyro.sample("mu", dist.Normal(zero, zero + 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(zero + 5.0))
        return mu, tau

    def _observe(self, theta: Tensor, x: Tensor | None, j: int) -> Tensor:
        with pyro.plate(self.data_plate, j):
            y = dist.Normal(theta.unsqueeze(-1), self.sigma.unsqueeze(-1)).to_event(1)
            return pyro.sample(self.obs_site, y, obs=x)

    def site_dims(self) -> dict[str, list[str]]:
        return {"theta": ["school"], "theta_trans": ["school"]}


class EightSchoolsCentered(_EightSchools):
    """``eight_schools_centered.stan``: ``theta_j ~ Normal(mu, tau)`` sampled directly.

    The funnel between ``tau`` and ``theta`` makes NUTS diverge for small ``tau``; posteriordb's
    reference draws for it come from the non-centered program.

    Args:
        sigma: ``[J]`` known standard errors of the schools' estimated effects.
    """

    def model(self, x: Tensor | None = None, *, n: int | None = None) -> Tensor:
        j = self._schools(x, n)
        mu, tau = self._hyper()
        loc = mu.unsqueeze(-1).expand(*mu.shape, j)
        theta = pyro.sample("theta", dist.Normal(loc, tau.unsqueeze(-1)).to_event(1))
        return self._observe(theta, x, j)

    def stan_parameters(self, draws: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """posteriordb's ``mu``, ``tau``, ``theta`` from draws of the sites (the same names)."""
        return {k: draws[k] for k in ("mu", "tau", "theta")}


class EightSchoolsNoncentered(_EightSchools):
    """``eight_schools_noncentered.stan``: ``theta = mu + tau theta_trans``,
    ``theta_trans ~ Normal(0, I)``; ``theta`` is recorded as a ``pyro.deterministic`` site.

    Args:
        sigma: ``[J]`` known standard errors of the schools' estimated effects.
    """

    def model(self, x: Tensor | None = None, *, n: int | None = None) -> Tensor:
        j = self._schools(x, n)
        mu, tau = self._hyper()
        std = dist.Normal(self.sigma.new_zeros(j), self.sigma.new_ones(j)).to_event(1)
        theta_trans = pyro.sample("theta_trans", std)
        theta = pyro.deterministic(
            "theta", mu.unsqueeze(-1) + tau.unsqueeze(-1) * theta_trans, event_dim=1
        )
        return self._observe(theta, x, j)

    def stan_parameters(self, draws: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """posteriordb's ``mu``, ``tau`` and ``theta = mu + tau theta_trans`` (batched)."""
        mu, tau = draws["mu"], draws["tau"]
        theta = mu.unsqueeze(-1) + tau.unsqueeze(-1) * draws["theta_trans"]
        return {"mu": mu, "tau": tau, "theta": theta}


class LowDimGaussMix(GenerativeModel):
    """``low_dim_gauss_mix.stan``: a two-component 1-D Gaussian mixture with ordered means.

    ``theta`` is the weight of the component with the smaller mean (Stan's
    ``log_mix(theta, lp_1, lp_2)``). Data: ``[N, 1]``.
    """

    exact_log_likelihood = True

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_one", torch.ones((), dtype=torch.float64))

    def model(self, x: Tensor | None = None, *, n: int | None = None) -> Tensor:
        rows = _rows(x, n, 1, "LowDimGaussMix")
        one = self._one
        mu = pyro.sample("mu", SortedNormal(0.0 * one, 2.0 * one, 2))
        sigma = pyro.sample("sigma", dist.HalfNormal(2.0 * one).expand([2]).to_event(1))
        theta = pyro.sample("theta", dist.Beta(5.0 * one, 5.0 * one))
        weights = torch.stack([theta, 1 - theta], -1)
        mixture = dist.MixtureSameFamily(dist.Categorical(probs=weights), dist.Normal(mu, sigma))
        with pyro.plate(self.data_plate, rows):
            return pyro.sample(self.obs_site, mixture.expand([1]).to_event(1), obs=x)

    def init_values(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor] | None:
        """Means, standard deviations and share of the data's two groups (see ``_two_groups``),
        means jittered; None (the prior median) when the data do not split."""
        y = x.reshape(-1)
        low = _two_groups(y)
        if low is None:
            return None
        sigma = torch.stack([y[low].std(), y[~low].std()])
        if not bool((sigma > 0).all()):
            return None
        mu = torch.stack([y[low].mean(), y[~low].mean()])
        mu = _jitter(mu, sigma / low.numel() ** 0.5, generator).sort().values
        return {"mu": mu, "sigma": sigma, "theta": low.to(y.dtype).mean()}

    def stan_parameters(self, draws: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """posteriordb's ``mu``, ``sigma``, ``theta`` (the sites themselves)."""
        return {k: draws[k] for k in ("mu", "sigma", "theta")}

    def site_dims(self) -> dict[str, list[str]]:
        return {"mu": ["component"], "sigma": ["component"]}


class HMMExample(GenerativeModel):
    """``hmm_example.stan``: a two-state HMM with ``Normal(mu_k, 1)`` emissions, states summed
    out by the forward algorithm. Data: ``[1, T]`` (one sequence per row; each row is scored
    independently). ``sample(n)`` draws ``n`` sequences of the length seen by :meth:`setup`.

    Args:
        num_steps: sequence length for generation before any data is seen (None: set by
            ``setup``).
    """

    exact_log_likelihood = True
    num_states = 2

    def __init__(self, num_steps: int | None = None) -> None:
        super().__init__()
        if num_steps is not None and (not isinstance(num_steps, int) or num_steps < 1):
            raise ValueError(f"num_steps must be a positive integer or None, got {num_steps!r}")
        self.num_steps = num_steps
        self.register_buffer("mu_loc", torch.tensor([3.0, 10.0], dtype=torch.float64))
        self.register_buffer("mu_scale", torch.ones(2, dtype=torch.float64))

    def hyperparameters(self) -> dict[str, Any]:
        return {"num_steps": self.num_steps}

    def setup(self, x: Tensor, **context: Tensor) -> None:
        _rows(x, None, None, "HMMExample")
        self.num_steps = x.shape[1]

    def model(self, x: Tensor | None = None, *, n: int | None = None) -> Tensor:
        rows = _rows(x, n, None, "HMMExample")
        steps = x.shape[1] if x is not None else self.num_steps
        if steps is None:
            raise ValueError("HMMExample needs num_steps (or data seen by setup) to generate")
        k = self.num_states
        ones = self.mu_scale.new_ones(k)
        theta1 = pyro.sample("theta1", dist.Dirichlet(ones))
        theta2 = pyro.sample("theta2", dist.Dirichlet(ones))
        mu = pyro.sample("mu", PositiveOrderedNormal(self.mu_loc, self.mu_scale))
        # DiscreteHMM applies a transition before the first emission; a flat one at t = 1
        # makes z_1 uniform whatever the initial logits, as in Stan's forward pass.
        log_trans = torch.stack([theta1, theta2], -2).log()
        first = log_trans.new_zeros((*log_trans.shape[:-2], 1, k, k))
        rest = log_trans.unsqueeze(-3).expand(*log_trans.shape[:-2], steps - 1, k, k)
        hmm = dist.DiscreteHMM(
            ones.new_zeros(k),
            torch.cat([first, rest], -3),
            dist.Normal(mu.unsqueeze(-2), ones.unsqueeze(-2)),
            duration=steps,
        )
        with pyro.plate(self.data_plate, rows):
            return pyro.sample(self.obs_site, hmm, obs=x)

    def init_values(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor] | None:
        """States guessed by splitting the observations in two groups (see ``_two_groups``):
        their jittered means for ``mu`` and the smoothed transition frequencies (Dirichlet(1)
        posterior means) for ``theta1``, ``theta2``; None (the prior median) when the data do
        not split into two groups of positive means."""
        low = _two_groups(x.reshape(-1))
        if low is None:
            return None
        rows = x.shape[0]
        mu = torch.stack([x.reshape(-1)[low].mean(), x.reshape(-1)[~low].mean()])
        mu = _jitter(mu, mu.new_ones(2) / low.numel() ** 0.5, generator).sort().values
        if not bool(mu[0] > 0):
            return None
        state = (~low).long().reshape(rows, -1)
        counts = x.new_ones(2, 2)
        counts.index_put_(
            (state[:, :-1].reshape(-1), state[:, 1:].reshape(-1)), x.new_ones(()), accumulate=True
        )
        trans = counts / counts.sum(-1, keepdim=True)
        return {"theta1": trans[0], "theta2": trans[1], "mu": mu}

    def stan_parameters(self, draws: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """posteriordb's ``theta1``, ``theta2``, ``mu`` (the sites themselves)."""
        return {k: draws[k] for k in ("theta1", "theta2", "mu")}

    def site_dims(self) -> dict[str, list[str]]:
        return {"theta1": ["state"], "theta2": ["state"], "mu": ["state"]}


#: Model name (posteriordb's ``model_name``) -> posterior name.
POSTERIORS: dict[str, str] = {
    "eight_schools_centered": "eight_schools-eight_schools_centered",
    "eight_schools_noncentered": "eight_schools-eight_schools_noncentered",
    "low_dim_gauss_mix": "low_dim_gauss_mix-low_dim_gauss_mix",
    "hmm_example": "hmm_example-hmm_example",
}


@dataclass(frozen=True)
class Posterior:
    """A posteriordb posterior as probgen sees it.

    Attributes:
        name: posteriordb posterior name, e.g. ``"eight_schools-eight_schools_noncentered"``.
        model: the model, ready for ``probgen.fit(model, data, ...)``.
        data: the observed data ``x`` in the model's layout.
        reference_shapes: posteriordb parameter -> shape (``()`` for scalars), the argument of
            :func:`probgen.data.posteriordb.to_sites` for the reference draws.
    """

    name: str
    model: Any
    data: Tensor
    reference_shapes: Mapping[str, tuple[int, ...]]

    def stan_parameters(self, draws: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Draws of the model's sites (``[chain, draw, ...]``) -> posteriordb's parameters."""
        return self.model.stan_parameters(draws)  # type: ignore[no-any-return]

    def reference_draws(self, root: str | Path) -> dict[str, Tensor]:
        """posteriordb's reference draws as ``[chains, draws, *shape]`` tensors, by parameter."""
        flat = posteriordb.reference_draws(root, self.name)
        return posteriordb.to_sites(flat, self.reference_shapes)


def _field(data: Mapping[str, Any], key: str, name: str) -> Any:
    if key not in data:
        raise ValueError(f"data for {name!r} lacks {key!r}; it has {sorted(data)}")
    return data[key]


def _vector(data: Mapping[str, Any], key: str, length_key: str, name: str) -> Tensor:
    value = torch.as_tensor(np.asarray(_field(data, key, name), dtype=np.float64))
    length = _field(data, length_key, name)
    if value.dim() != 1 or value.numel() != length:
        raise ValueError(
            f"data[{key!r}] for {name!r} must be a vector of {length_key}={length} numbers, got "
            f"shape {tuple(value.shape)}"
        )
    return value


def posterior(name: str, data: Mapping[str, Any]) -> Posterior:
    """The model, data tensor and reference shapes of a posterior.

    Args:
        name: a model name of :data:`POSTERIORS` (``"eight_schools_noncentered"``) or the
            posterior name (``"eight_schools-eight_schools_noncentered"``).
        data: the Stan data, e.g. ``probgen.data.posteriordb.load_data(root, name)``.

    Raises:
        ValueError: unknown name (the message lists the known ones), or data missing a field,
            with a field of the wrong length, or (``hmm_example``) with ``K != 2``.
    """
    by_posterior = {v: k for k, v in POSTERIORS.items()}
    model_name = by_posterior.get(name, name)
    if model_name not in POSTERIORS:
        raise ValueError(
            f"unknown posterior {name!r}; known: {', '.join(POSTERIORS)} (or their posterior "
            f"names {', '.join(POSTERIORS.values())})"
        )
    full = POSTERIORS[model_name]
    if model_name.startswith("eight_schools"):
        j = int(_field(data, "J", full))
        y = _vector(data, "y", "J", full)
        sigma = _vector(data, "sigma", "J", full)
        cls = EightSchoolsCentered if model_name.endswith("_centered") else EightSchoolsNoncentered
        shapes: dict[str, tuple[int, ...]] = {"mu": (), "tau": (), "theta": (j,)}
        return Posterior(full, cls(sigma), y.unsqueeze(-1), shapes)
    if model_name == "low_dim_gauss_mix":
        y = _vector(data, "y", "N", full)
        shapes = {"mu": (2,), "sigma": (2,), "theta": ()}
        return Posterior(full, LowDimGaussMix(), y.unsqueeze(-1), shapes)
    k = _field(data, "K", full)
    if k != HMMExample.num_states:
        raise ValueError(f"hmm_example is written for K=2 states (theta1, theta2); data has K={k}")
    y = _vector(data, "y", "N", full)
    shapes = {"theta1": (2,), "theta2": (2,), "mu": (2,)}
    return Posterior(full, HMMExample(num_steps=y.numel()), y.unsqueeze(0), shapes)
