"""Closed forms behind :mod:`probgen.diagnostics.analytic`: KL pairs added to torch's registry,
and registries of Rényi, total-variation and Jensen-Shannon closed forms.

Importing this module registers with ``torch.distributions.kl.register_kl`` (after Pyro's own
registrations, so none is overwritten either way):

* ``MultivariateNormal`` or ``LowRankMultivariateNormal`` to mean-field ``Independent(Normal, 1)``
  and mean-field to ``LowRankMultivariateNormal`` (Pyro already has mean-field to
  ``MultivariateNormal``): the mean-field vs full-rank comparisons of variational inference;
* ``VonMises`` to ``VonMises`` and ``Weibull`` to ``Weibull``.

The other registries map ``(type(p), type(q))`` to functions returning a tensor of the batch
shape; lookup walks both class hierarchies like torch's. Rényi closed forms: Normal, Gaussians
in all three of torch's forms, Uniform, Gamma and Exponential, exact sums for finite discrete
distributions, and ``Independent`` (Rényi divergences add over independent coordinates). Total
variation: Normal (from the crossing points of the densities), Uniform, finite discrete.
Jensen-Shannon: finite discrete.

References:
    van Erven & Harremoës, "Rényi Divergence and Kullback-Leibler Divergence", IEEE Trans. Inf.
    Theory 2014, arXiv:1206.2459. Gil, Alajaji & Linder, "Rényi divergence measures for commonly
    used univariate continuous distributions", Information Sciences 2013.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import pyro.distributions  # noqa: F401  registers Pyro's KL pairs first, so none overwrites ours
import torch
from torch import Tensor
from torch.distributions import (
    Bernoulli,
    Categorical,
    Distribution,
    Exponential,
    Gamma,
    Independent,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    OneHotCategorical,
    Uniform,
    VonMises,
    Weibull,
    register_kl,
)

__all__ = [
    "FINITE_DISCRETE",
    "JENSEN_SHANNON",
    "RENYI",
    "TOTAL_VARIATION",
    "PairRegistry",
    "finite_probs",
    "register_renyi",
]

_Fn = TypeVar("_Fn", bound=Callable[..., Tensor])
#: Distributions over finitely many outcomes, whose divergences are exact finite sums.
FINITE_DISCRETE = (Bernoulli, Categorical, OneHotCategorical)
_EULER_GAMMA = 0.5772156649015329


class PairRegistry:
    """Closed forms keyed by ``(type(p), type(q))``, found through both class hierarchies.

    Lookup walks ``type(p).__mro__`` and, for each entry, ``type(q).__mro__``, taking the first
    registered pair (most specific ``p`` first). A function may raise ``NotImplementedError``
    for parameters it does not cover; the caller then falls back to a numerical estimate.
    """

    def __init__(self) -> None:
        self._fns: dict[tuple[type, type], tuple[Callable[..., Tensor], str]] = {}

    def register(
        self, type_p: type, type_q: type, estimator: str = "analytic"
    ) -> Callable[[_Fn], _Fn]:
        def decorate(fn: _Fn) -> _Fn:
            self._fns[type_p, type_q] = (fn, estimator)
            return fn

        return decorate

    def __call__(self, p: Distribution, q: Distribution, *args: Any) -> tuple[Tensor, str]:
        """(value, estimator label); ``NotImplementedError`` when no closed form applies."""
        for type_p in type(p).__mro__:
            for type_q in type(q).__mro__:
                if (type_p, type_q) in self._fns:
                    fn, estimator = self._fns[type_p, type_q]
                    return fn(p, q, *args), estimator
        raise NotImplementedError(f"no closed form for {type(p).__name__}, {type(q).__name__}")


#: Closed forms ``fn(p, q, alpha)`` of the Rényi divergence ``D_alpha(p || q)`` in nats.
RENYI = PairRegistry()
#: Closed forms ``fn(p, q)`` of the total variation distance.
TOTAL_VARIATION = PairRegistry()
#: Closed forms ``fn(p, q)`` of the Jensen-Shannon divergence in nats.
JENSEN_SHANNON = PairRegistry()


def register_renyi(type_p: type, type_q: type) -> Callable[[_Fn], _Fn]:
    """Registers ``fn(p, q, alpha) -> Tensor``, a closed form of ``D_alpha(p || q)`` in nats.

    Like ``torch.distributions.kl.register_kl``: the most specific registered pair of base
    classes is used. ``fn`` may raise ``NotImplementedError`` to decline (Monte Carlo is used).
    Hellinger distances use the same registry at ``alpha = 1/2``.

    Example:
        The Exponential pair (registered here through the Gamma one) could read::

            @register_renyi(Exponential, Exponential)
            def _renyi_exponential(p, q, alpha):
                rate_a = alpha * p.rate + (1 - alpha) * q.rate  # must be > 0
                return (p.rate / q.rate).log() + (p.rate / rate_a).log() / (alpha - 1)
    """
    return RENYI.register(type_p, type_q)


def finite_probs(d: Distribution) -> Tensor:
    """Probability vector ``[*batch, K]`` of a finite discrete distribution."""
    if isinstance(d, Bernoulli):
        return torch.stack([1 - d.probs, d.probs], -1)
    if isinstance(d, (Categorical, OneHotCategorical)):
        return d.probs
    raise NotImplementedError(f"{type(d).__name__} is not a finite discrete distribution")


def _safe_log(x: Tensor) -> Tensor:
    """``log x`` with ``-inf`` at 0 and no NaN gradient there."""
    return torch.where(x > 0, torch.where(x > 0, x, 1.0).log(), -math.inf)


# ---------------------------------------------------------------- KL pairs added to torch's


def _is_meanfield_normal(d: Distribution) -> bool:
    return (
        isinstance(d, Independent)
        and isinstance(d.base_dist, Normal)
        and d.reinterpreted_batch_ndims == 1
    )


@register_kl(MultivariateNormal, Independent)
@register_kl(LowRankMultivariateNormal, Independent)
def _kl_gaussian_meanfield(p: Distribution, q: Independent) -> Tensor:
    """Full-rank ``p`` to mean-field ``q``: ``E_p[-log q] - H(p)``, the cross-entropy summed
    over coordinates (it needs only ``p``'s marginal variances)."""
    if not _is_meanfield_normal(q):
        raise NotImplementedError
    base = q.base_dist
    cross = base.scale.log() + 0.5 * math.log(2 * math.pi)
    cross = cross + (p.variance + (p.mean - base.loc) ** 2) / (2 * base.scale**2)
    return cross.sum(-1) - p.entropy()


@register_kl(Independent, LowRankMultivariateNormal)
def _kl_meanfield_lowrank(p: Independent, q: LowRankMultivariateNormal) -> Tensor:
    """Mean-field ``p`` to low-rank ``q``: ``-log q(mu_p) + tr(Lambda_q Sigma_p)/2 - H(p)``
    (Pyro registers the same formula for a full-rank ``q``)."""
    if not _is_meanfield_normal(p):
        raise NotImplementedError
    base = p.base_dist
    precision_diag = q.precision_matrix.diagonal(dim1=-2, dim2=-1)
    trace = 0.5 * (base.scale**2 * precision_diag).sum(-1)
    return trace - q.log_prob(base.loc) - base.entropy().sum(-1)


@register_kl(VonMises, VonMises)
def _kl_vonmises(p: VonMises, q: VonMises) -> Tensor:
    """``log I0(k_q) - log I0(k_p) + A(k_p) (k_p - k_q cos(mu_p - mu_q))``, ``A = I1/I0``
    (Kitagawa & Rowley, "von Mises-Fisher distributions and their statistical divergence",
    arXiv:2202.05192); exponentially scaled Bessel functions keep large ``k`` finite."""
    kp, kq = p.concentration, q.concentration
    i0p = torch.special.i0e(kp)
    log_i0_ratio = torch.special.i0e(kq).log() + kq - i0p.log() - kp
    return log_i0_ratio + torch.special.i1e(kp) / i0p * (kp - kq * torch.cos(p.loc - q.loc))


@register_kl(Weibull, Weibull)
def _kl_weibull(p: Weibull, q: Weibull) -> Tensor:
    """Bauckhage, "Computing the Kullback-Leibler divergence between two Weibull
    distributions", arXiv:1310.3713, with shapes ``k`` and scales ``lam``."""
    k1, l1, k2, l2 = p.concentration, p.scale, q.concentration, q.scale
    return (
        k1.log()
        - k1 * l1.log()
        - k2.log()
        + k2 * l2.log()
        + (k1 - k2) * (l1.log() - _EULER_GAMMA / k1)
        + (k2 * (l1 / l2).log() + torch.lgamma(k2 / k1 + 1)).exp()
        - 1
    )


# ---------------------------------------------------------------- Rényi closed forms


@RENYI.register(Normal, Normal)
def _renyi_normal(p: Normal, q: Normal, a: float) -> Tensor:
    """Gil et al. (2013): ``a dmu² / (2 s_a) - log(s_a / (s_p^(1-a) s_q^a)) / (2(a-1))`` with
    variances ``s`` and ``s_a = a s_q + (1-a) s_p``; infinite when ``s_a <= 0``."""
    var_p, var_q = p.scale**2, q.scale**2
    var_a = a * var_q + (1 - a) * var_p
    ok = var_a > 0
    var_a = torch.where(ok, var_a, 1.0)
    log_ratio = var_a.log() - (1 - a) * var_p.log() - a * var_q.log()
    d = a * (p.loc - q.loc) ** 2 / (2 * var_a) - log_ratio / (2 * (a - 1))
    return torch.where(ok, d, math.inf)


def _gaussian(d: Distribution) -> tuple[Tensor, Tensor]:
    """(mean, covariance) of a multivariate Gaussian in any of torch's three forms."""
    if isinstance(d, (MultivariateNormal, LowRankMultivariateNormal)):
        return d.loc, d.covariance_matrix
    if _is_meanfield_normal(d):
        return d.mean, torch.diag_embed(d.variance)
    raise NotImplementedError


def _renyi_gaussian(p: Distribution, q: Distribution, a: float) -> Tensor:
    """The multivariate form of :func:`_renyi_normal` (Gil et al. 2013), through Cholesky
    factors; ``S_a`` positive definite is exactly the condition for ``∫ p^a q^(1-a) < inf``."""
    loc_p, cov_p = _gaussian(p)
    loc_q, cov_q = _gaussian(q)
    chol, info = torch.linalg.cholesky_ex(a * cov_q + (1 - a) * cov_p)
    ok = info == 0  # S_a not positive definite (a > 1): the integral diverges
    eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device)
    chol = torch.where(ok[..., None, None], chol, eye)
    z = torch.linalg.solve_triangular(chol, (loc_p - loc_q).unsqueeze(-1), upper=False)
    log_ratio = (
        _logdet_chol(chol)
        - (1 - a) * _logdet_chol(torch.linalg.cholesky(cov_p))
        - a * _logdet_chol(torch.linalg.cholesky(cov_q))
    )
    d = a / 2 * z.squeeze(-1).pow(2).sum(-1) - log_ratio / (2 * (a - 1))
    return torch.where(ok, d, math.inf)


def _logdet_chol(chol: Tensor) -> Tensor:
    return 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)


_GAUSSIANS = (MultivariateNormal, LowRankMultivariateNormal, Independent)
for _tp in _GAUSSIANS:
    for _tq in _GAUSSIANS:
        if not (_tp is Independent and _tq is Independent):  # that pair is the sum rule below
            RENYI.register(_tp, _tq)(_renyi_gaussian)


@RENYI.register(Independent, Independent)
def _renyi_independent(p: Independent, q: Independent, a: float) -> Tensor:
    """Rényi divergence is additive over independent coordinates: sum the shared dims."""
    shared = min(p.reinterpreted_batch_ndims, q.reinterpreted_batch_ndims)
    value, _ = RENYI(_unwrap(p, shared), _unwrap(q, shared), a)
    return value.sum(tuple(range(-shared, 0))) if shared else value


def _unwrap(d: Independent, ndims: int) -> Distribution:
    left = d.reinterpreted_batch_ndims - ndims
    return Independent(d.base_dist, left) if left else d.base_dist


@RENYI.register(Uniform, Uniform)
def _renyi_uniform(p: Uniform, q: Uniform, a: float) -> Tensor:
    """``∫ p^a q^(1-a) = overlap * w_p^-a * w_q^(a-1)``; for ``a > 1`` infinite unless
    ``p``'s interval lies inside ``q``'s."""
    w_p, w_q = p.high - p.low, q.high - q.low
    overlap = (torch.minimum(p.high, q.high) - torch.maximum(p.low, q.low)).clamp(min=0.0)
    d = (_safe_log(overlap) - a * w_p.log() + (a - 1) * w_q.log()) / (a - 1)
    if a > 1:
        d = torch.where((q.low <= p.low) & (p.high <= q.high), d, math.inf)
    return d


def _shape_rate(d: Distribution) -> tuple[Tensor, Tensor]:
    if isinstance(d, Gamma):
        return d.concentration, d.rate
    if isinstance(d, Exponential):
        return torch.ones_like(d.rate), d.rate
    raise NotImplementedError


@RENYI.register(Gamma, Gamma)
@RENYI.register(Gamma, Exponential)
@RENYI.register(Exponential, Gamma)
@RENYI.register(Exponential, Exponential)
def _renyi_gamma(p: Distribution, q: Distribution, a: float) -> Tensor:
    """Gil et al. (2013): with ``k_a = a k_p + (1-a) k_q`` and ``b_a = a b_p + (1-a) b_q``
    (shapes ``k``, rates ``b``), ``∫ p^a q^(1-a) = G(k_a) b_p^(a k_p) b_q^((1-a) k_q) /
    (G(k_p)^a G(k_q)^(1-a) b_a^k_a)``, infinite unless ``k_a, b_a > 0`` (only ``a > 1`` can
    break that)."""
    k_p, b_p = _shape_rate(p)
    k_q, b_q = _shape_rate(q)
    k_a, b_a = a * k_p + (1 - a) * k_q, a * b_p + (1 - a) * b_q
    ok = (k_a > 0) & (b_a > 0)
    k_a, b_a = torch.where(ok, k_a, 1.0), torch.where(ok, b_a, 1.0)
    log_integral = (
        torch.lgamma(k_a)
        - a * torch.lgamma(k_p)
        - (1 - a) * torch.lgamma(k_q)
        + a * k_p * b_p.log()
        + (1 - a) * k_q * b_q.log()
        - k_a * b_a.log()
    )
    return torch.where(ok, log_integral / (a - 1), math.inf)


def _renyi_finite(p: Distribution, q: Distribution, a: float) -> Tensor:
    pp, qq = finite_probs(p), finite_probs(q)
    # Categories with p_k = 0 contribute nothing (a > 0), and p^0 = 1{p > 0} at a = 0.
    terms = torch.where(pp > 0, a * _safe_log(pp) + (1 - a) * _safe_log(qq), -math.inf)
    return torch.logsumexp(terms, -1) / (a - 1)


def _tv_finite(p: Distribution, q: Distribution) -> Tensor:
    return 0.5 * (finite_probs(p) - finite_probs(q)).abs().sum(-1)


def _js_finite(p: Distribution, q: Distribution) -> Tensor:
    pp, qq = finite_probs(p), finite_probs(q)
    m = (pp + qq) / 2
    kl_pm = (torch.xlogy(pp, pp) - torch.xlogy(pp, m)).sum(-1)
    kl_qm = (torch.xlogy(qq, qq) - torch.xlogy(qq, m)).sum(-1)
    return (kl_pm + kl_qm) / 2


for _t in FINITE_DISCRETE:
    RENYI.register(_t, _t, "exact")(_renyi_finite)
    TOTAL_VARIATION.register(_t, _t, "exact")(_tv_finite)
    JENSEN_SHANNON.register(_t, _t, "exact")(_js_finite)


# ---------------------------------------------------------------- total variation closed forms


@TOTAL_VARIATION.register(Normal, Normal)
def _tv_normal(p: Normal, q: Normal) -> Tensor:
    """TV from the crossings of two normal densities (roots of a quadratic in x)."""
    m1, s1, m2, s2 = p.loc, p.scale, q.loc, q.scale
    a = 0.5 / s2**2 - 0.5 / s1**2
    b = m1 / s1**2 - m2 / s2**2
    c = 0.5 * (m2 / s2) ** 2 - 0.5 * (m1 / s1) ** 2 + (s2 / s1).log()
    # The numerically stable root pair t/a and c/t; with equal variances (a = 0) t/a is
    # +-inf, leaving the single crossing c/t and a half-line.
    t = -0.5 * (b + torch.copysign((b * b - 4 * a * c).clamp(min=0.0).sqrt(), b))
    same = t == 0  # only when p and q are the same normal
    t = torch.where(same, 1.0, t)
    r1, r2 = t / a, c / t
    lo, hi = torch.minimum(r1, r2), torch.maximum(r1, r2)

    def mass(m: Tensor, s: Tensor) -> Tensor:
        return torch.special.ndtr((hi - m) / s) - torch.special.ndtr((lo - m) / s)

    return torch.where(same, 0.0, (mass(m1, s1) - mass(m2, s2)).abs())


@TOTAL_VARIATION.register(Uniform, Uniform, "exact")
def _tv_uniform(p: Uniform, q: Uniform) -> Tensor:
    """``1 - ∫ min(p, q) = 1 - overlap / max(w_p, w_q)``."""
    overlap = (torch.minimum(p.high, q.high) - torch.maximum(p.low, q.low)).clamp(min=0.0)
    return 1 - overlap / torch.maximum(p.high - p.low, q.high - q.low)
