"""What every divergence and information measure shares: the result type, units, input kinds.

Three kinds of input are told apart by type, never by guessing from shapes:

* a ``torch.distributions.Distribution`` (Pyro's included) is a density or mass function;
* a plain :class:`~torch.Tensor` is a batch of probability vectors over its last dimension
  (as in ``scipy.stats.entropy``);
* :class:`Samples` wraps draws ``[N]`` or ``[N, D]`` for the nonparametric estimators.

Errors follow one rule across the package: an argument of the wrong *type* (or an unsupported
pair of input kinds) raises ``TypeError``; a value that is wrong for its type (shapes, negative
probabilities, too few draws, out-of-range options) raises ``ValueError``. Both name the
argument and say what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.distributions import Distribution

__all__ = [
    "EXACT_ESTIMATORS",
    "Estimate",
    "SampleLike",
    "Samples",
    "as_draws",
    "as_probs",
    "base_unit",
    "check_same_event",
    "in_base",
    "mc_mean",
    "probs_tolerance",
]

#: Estimators whose value is exact up to floating point (their ``stderr`` is zero).
EXACT_ESTIMATORS = frozenset({"exact", "analytic"})


@dataclass(frozen=True)
class Estimate:
    """A measured quantity with its uncertainty.

    Attributes:
        value: the estimate, with the batch shape of the inputs.
        stderr: its Monte Carlo standard error (same shape); zero for exact and analytic values.
            For deterministic approximations (``"grid"``) it is the numerical error estimate
            described by the function that returned it.
        estimator: how ``value`` was computed, e.g. ``"analytic"``, ``"exact"``,
            ``"monte-carlo"``, ``"knn"``, ``"ksg"``, ``"grid"``, ``"u-statistic"``.
        unit: ``"nats"``, ``"bits"``, ``"base-b units"``, or ``""`` for unitless quantities.
        num_samples: the number of draws the estimate used, when it is stochastic.
        p_value: for two-sample tests, the p-value of the null hypothesis ``p = q``.
    """

    value: Tensor
    stderr: Tensor
    estimator: str
    unit: str = "nats"
    num_samples: int | None = None
    p_value: float | None = None

    @property
    def exact(self) -> bool:
        """Whether ``value`` is exact (closed form or exact summation)."""
        return self.estimator in EXACT_ESTIMATORS

    def __float__(self) -> float:
        if self.value.numel() != 1:
            raise TypeError(f"only a scalar Estimate converts to float; shape {self.shape}")
        return float(self.value.item())

    @property
    def shape(self) -> torch.Size:
        """The batch shape of ``value``."""
        return self.value.shape

    def to_base(self, base: float | None) -> Estimate:
        """This estimate (in nats) in logarithms to ``base``: 2 gives bits, ``None`` keeps nats."""
        if self.unit != "nats":
            raise ValueError(f"only an estimate in nats can change base; this one is {self.unit!r}")
        return replace(
            self,
            value=in_base(self.value, base),
            stderr=in_base(self.stderr, base),
            unit=base_unit(base),
        )

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.value.numel() != 1:
            return f"Estimate(shape={tuple(self.shape)}{unit}, {self.estimator})"
        text = f"{self.value.item():.6g}"
        if not self.exact:
            text += f" ± {self.stderr.item():.2g}"
        extra = [self.estimator]
        if self.num_samples is not None:
            extra.append(f"n={self.num_samples}")
        if self.p_value is not None:
            extra.append(f"p={self.p_value:.3g}")
        return f"{text}{unit} ({', '.join(extra)})"


class Samples:
    """Draws from a distribution, for the sample-based (nonparametric) estimators.

    Args:
        x: ``[N]`` (scalar draws) or ``[N, D]``; stored as ``[N, D]``.

    Raises:
        ValueError: if ``x`` is not 1-D or 2-D, is empty, or holds non-finite values.
    """

    def __init__(self, x: Tensor) -> None:
        x = torch.as_tensor(x)
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        if x.dim() == 1:
            x = x.unsqueeze(-1)
        if x.dim() != 2 or x.shape[0] == 0:
            raise ValueError(f"Samples needs draws of shape [N] or [N, D]; got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("Samples holds NaN or infinite values")
        self.x = x

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def dim(self) -> int:
        """D, the dimension of one draw."""
        return self.x.shape[1]

    def __repr__(self) -> str:
        return f"Samples(N={len(self)}, D={self.dim})"


SampleLike = Tensor | Samples


def as_draws(x: SampleLike, name: str) -> Tensor:
    """Draws ``[N, D]`` from a Tensor ``[N]``/``[N, D]`` or :class:`Samples`, naming ``name``.

    Raises:
        TypeError: ``x`` is neither a Tensor nor Samples.
        ValueError: wrong number of dimensions, no draws, or NaN/inf values.
    """
    if isinstance(x, Samples):
        return x.x
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a Tensor of draws [N] or [N, D] or Samples; got {type(x).__name__} "
            "(convert arrays with torch.as_tensor)"
        )
    try:
        return Samples(x).x
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def base_unit(base: float | None) -> str:
    """The unit name for logarithms to ``base`` (``None`` or e: nats; 2: bits)."""
    if base is None or base == math.e:
        return "nats"
    if base == 2:
        return "bits"
    return f"base-{base:g} units"


def in_base(x: Tensor, base: float | None) -> Tensor:
    """Converts a quantity in nats to logarithms to ``base``: divides by ``log(base)``."""
    if base is None or base == math.e:
        return x
    if not base > 1:
        raise ValueError(f"base must be > 1 (e.g. 2 for bits); got {base}")
    return x / math.log(base)


def probs_tolerance(dtype: torch.dtype) -> float:
    """How far from 1 a probability vector's sum may be: ``sqrt(eps)`` of its dtype.

    Rounding when normalising a vector of moderate length costs a few ``eps``; ``sqrt(eps)``
    (3.5e-4 in float32, 1.5e-8 in float64) accepts that and still rejects unnormalised input.
    """
    return math.sqrt(torch.finfo(dtype).eps)


def as_probs(p: Tensor, name: str, normalize: bool = False) -> Tensor:
    """Validates probability vectors over the last dimension (or normalises when asked).

    Args:
        p: ``[..., K]`` non-negative values.
        name: the argument's name, for error messages.
        normalize: divide by the sum instead of requiring it to be 1 (counts are fine then).

    Raises:
        ValueError: naming ``name``: not at least 1-D, empty, non-finite, negative entries,
            a zero sum, or (without ``normalize``) a sum away from 1.
    """
    p = torch.as_tensor(p)
    if not p.is_floating_point():
        p = p.to(torch.get_default_dtype())
    if p.dim() == 0 or p.shape[-1] == 0:
        raise ValueError(
            f"{name} must be probability vectors [..., K] with K >= 1; got shape {tuple(p.shape)}"
        )
    if not torch.isfinite(p).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if (p < 0).any():
        raise ValueError(
            f"{name} has negative entries (min {p.min().item():.3g}); probabilities must be >= 0"
        )
    total = p.sum(-1, keepdim=True)
    if normalize:
        if (total == 0).any():
            raise ValueError(f"{name} has a vector summing to 0; it cannot be normalised")
        return p / total
    err = (total - 1).abs().max().item()
    if err > probs_tolerance(p.dtype):
        raise ValueError(
            f"{name} does not sum to 1 over its last dimension (off by up to "
            f"{err:.3g}); pass normalize=True to normalise it"
        )
    return p


def check_same_event(p: Distribution, q: Distribution) -> None:
    """Raises ``ValueError`` unless ``p`` and ``q`` live on the same kind of space."""
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"p and q have different event shapes: {tuple(p.event_shape)} vs {tuple(q.event_shape)}"
        )
    discrete = [bool(getattr(d.support, "is_discrete", False)) for d in (p, q)]
    if discrete[0] != discrete[1]:
        kinds = ["discrete" if flag else "continuous" for flag in discrete]
        raise ValueError(
            f"p is {kinds[0]} but q is {kinds[1]}: a divergence between them is not defined"
        )


def mc_mean(values: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """Sample mean and its standard error ``sd / sqrt(S)`` over ``dim`` (S >= 2 draws).

    Infinite values propagate to the mean (an infinite divergence stays infinite) with an
    infinite standard error, never NaN.
    """
    s = values.shape[dim]
    mean = values.mean(dim)
    finite = torch.isfinite(values).all(dim)
    safe = torch.where(torch.isfinite(values), values, values.new_zeros(()))
    se = safe.std(dim) / math.sqrt(s)
    # An infinite term makes the mean infinite; +inf wins over -inf (for KL-type means, a draw
    # where q vanishes makes the divergence infinite whatever else happens).
    infinite = torch.where((values == math.inf).any(dim), math.inf, -math.inf)
    mean = torch.where(finite, mean, infinite.to(mean))
    se = torch.where(finite, se, torch.full_like(se, math.inf))
    return mean, se
