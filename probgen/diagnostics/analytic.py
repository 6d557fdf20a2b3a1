"""Divergences between two distribution objects: closed forms where they exist, else Monte Carlo.

Each function takes ``torch.distributions`` (or Pyro) distributions ``p`` and ``q`` with equal
event shapes, broadcasts their batch shapes, and returns an :class:`Estimate` in nats (``""``
for total variation and Hellinger) of the broadcast batch shape, in their dtype and device:

* a closed form when one is registered: ``"analytic"`` (``"exact"`` for the finite sums over
  categories that this package computes for JS, TV, Rényi and Hellinger of
  ``Categorical``/``Bernoulli``/``OneHotCategorical``; torch's registry gives their KL,
  labelled ``"analytic"``), ``stderr`` zero either way;
* otherwise a Monte Carlo average over ``num_samples`` draws of ``p`` (reparameterised when
  ``p.has_rsample``, so the estimate is differentiable) with its standard error
  (``"monte-carlo"``), or for total variation and Hellinger of 1-D/2-D densities a grid
  integral (``"grid"``, see :mod:`probgen.diagnostics.grid`).

KL uses torch's registry (``torch.distributions.kl_divergence``, extended by Pyro), which
:mod:`probgen.diagnostics.closed_forms` extends at import with mean-field vs full-rank Gaussian
pairs (``MultivariateNormal`` or ``LowRankMultivariateNormal`` against ``Independent(Normal, 1)``
and back), ``VonMises`` and ``Weibull``. Rényi divergences have their own registry,
:func:`register_renyi`, looked up through the class hierarchies like torch's; Hellinger reads it
at order 1/2.

Divergences that are infinite (``q`` misses part of ``p``'s support) are ``inf``, never NaN:
densities are evaluated only inside each support (``-inf`` outside), so a ``q`` built with
``validate_args=True`` raises no error on ``p``'s draws.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Bernoulli, Categorical, Distribution, kl_divergence

from probgen.diagnostics._base import Estimate, check_same_event, mc_mean
from probgen.diagnostics.closed_forms import (
    JENSEN_SHANNON,
    RENYI,
    TOTAL_VARIATION,
    finite_probs,
    register_renyi,
)
from probgen.diagnostics.grid import (
    grid_hellinger,
    grid_supported,
    grid_total_variation,
    masked_log_prob,
)
from probgen.validation import check_count

__all__ = [
    "cross_entropy",
    "entropy",
    "hellinger",
    "js",
    "kl",
    "register_renyi",
    "renyi",
    "total_variation",
]


def kl(p: Distribution, q: Distribution, num_samples: int) -> Estimate:
    """Kullback-Leibler divergence ``KL(p || q) = E_p[log p(x) - log q(x)]`` in nats.

    Analytic through torch's KL registry when it has the pair; otherwise the Monte Carlo mean
    of ``log p(x) - log q(x)`` over ``num_samples`` draws of ``p``: unbiased, standard error
    ``sd / sqrt(num_samples)``. ``inf`` where ``q`` is zero on a set ``p`` charges (for Monte
    Carlo: as soon as one draw of ``p`` falls outside ``q``'s support).

    Args:
        p, q: distributions with equal event shapes and broadcastable batch shapes.
        num_samples: draws of ``p`` if Monte Carlo is needed (>= 2).

    Raises:
        ValueError: if ``p`` and ``q`` live on different spaces, or ``num_samples < 2``.
    """
    check_same_event(p, q)
    check_count(num_samples, "num_samples", 2)
    p, q = _broadcast(p, q)
    try:
        return _exact(kl_divergence(p, q), "analytic", p)
    except NotImplementedError:
        pass
    value, se = mc_mean(-_log_ratio(p, q, num_samples))
    return Estimate(value, se, "monte-carlo", num_samples=num_samples)


def renyi(p: Distribution, q: Distribution, alpha: float, num_samples: int) -> Estimate:
    """Rényi divergence of order ``alpha``: ``D_a(p || q) = 1/(a-1) log ∫ p^a q^(1-a)``, nats.

    ``alpha = 1`` is KL (:func:`kl`). Closed forms (:func:`register_renyi`): Normal, Gaussians
    (``MultivariateNormal``, ``LowRankMultivariateNormal``, ``Independent(Normal, 1)`` in any
    pairing: ``a/2 dmu' S_a^-1 dmu - log(|S_a| / (|S_p|^(1-a) |S_q|^a)) / (2(a-1))`` with
    ``S_a = a S_q + (1-a) S_p``, ``inf`` when ``S_a`` is not positive definite, which can happen
    for ``a > 1``), Uniform, Gamma/Exponential, exact sums for Categorical/Bernoulli, and sums
    over the dimensions that ``Independent`` reinterprets.

    Otherwise Monte Carlo over draws of ``p``: ``1/(a-1) log mean_s (q(x_s)/p(x_s))^(1-a)``,
    computed with a log-sum-exp. The log of a sample mean is biased (Jensen): downwards for
    ``a > 1`` and upwards for ``a < 1``, by about ``Var(w) / (2 n E[w]^2 |a-1|)`` with
    ``w = (q/p)^(1-a)``, i.e. O(1/n) against the O(1/sqrt n) standard error reported, which is
    the delta method's ``sd(w) / (sqrt(n) mean(w) |a-1|)``. For ``a > 1`` the weights can have
    infinite variance (``q`` lighter-tailed than ``p``), and then the standard error means
    little.

    Args:
        p, q: distributions with equal event shapes and broadcastable batch shapes.
        alpha: the order, finite and >= 0 (0 gives ``-log Q(p > 0)``).
        num_samples: draws of ``p`` if Monte Carlo is needed (>= 2).

    References:
        van Erven & Harremoës, "Rényi Divergence and Kullback-Leibler Divergence", IEEE Trans.
        Inf. Theory 2014, arXiv:1206.2459. Gil, Alajaji & Linder, "Rényi divergence measures
        for commonly used univariate continuous distributions", Information Sciences 2013.
    """
    check_same_event(p, q)
    check_count(num_samples, "num_samples", 2)
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite order >= 0; got {alpha}")
    if alpha == 1:
        return kl(p, q, num_samples)
    p, q = _broadcast(p, q)
    try:
        return _exact(*RENYI(p, q, alpha), p)
    except NotImplementedError:
        pass
    log_w = (1 - alpha) * _log_ratio(p, q, num_samples)
    top = log_w.amax(0)
    shift = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    w = (log_w - shift).exp()
    mean_w = w.mean(0)
    value = (shift + mean_w.log()) / (alpha - 1)
    value = torch.where(top == math.inf, math.inf, value)  # one weight infinite: D infinite
    se = w.std(0) / (math.sqrt(num_samples) * mean_w * abs(alpha - 1))
    se = torch.where(torch.isfinite(value) & torch.isfinite(se), se, math.inf)
    return Estimate(value, se, "monte-carlo", num_samples=num_samples)


def js(p: Distribution, q: Distribution, num_samples: int) -> Estimate:
    """Jensen-Shannon divergence ``JS = 1/2 KL(p || m) + 1/2 KL(q || m)``, ``m = (p + q)/2``.

    Exact for two finite discrete distributions (Categorical, Bernoulli, OneHotCategorical).
    Otherwise Monte Carlo with ``num_samples`` draws from each of ``p`` and ``q``
    (``2 * num_samples`` in all, as recorded in the estimate):
    ``1/2 mean_p[log 2 - softplus(log q/p)] + 1/2 mean_q[log 2 - softplus(log p/q)]``,
    unbiased, standard error ``sqrt(se_p^2 + se_q^2) / 2``. ``JS`` lies in ``[0, log 2]`` nats
    and is finite even for disjoint supports.

    References:
        Lin, "Divergence measures based on the Shannon entropy", IEEE Trans. Inf. Theory 1991.
    """
    check_same_event(p, q)
    check_count(num_samples, "num_samples", 2)
    p, q = _broadcast(p, q)
    try:
        return _exact(*JENSEN_SHANNON(p, q), p)
    except NotImplementedError:
        pass
    mean_p, se_p = mc_mean(math.log(2) - F.softplus(_log_ratio(p, q, num_samples)))
    mean_q, se_q = mc_mean(math.log(2) - F.softplus(_log_ratio(q, p, num_samples)))
    return Estimate(
        (mean_p + mean_q) / 2,
        (se_p**2 + se_q**2).sqrt() / 2,
        "monte-carlo",
        num_samples=2 * num_samples,
    )


def total_variation(
    p: Distribution, q: Distribution, num_samples: int, grid_points: int | None
) -> Estimate:
    """Total variation distance ``TV = sup_A |P(A) - Q(A)| = 1/2 ∫ |p - q|``, in ``[0, 1]``.

    * Exact for finite discrete pairs (``1/2 sum_k |p_k - q_k|``) and two Uniforms
      (``1 - overlap / max(width)``).
    * Analytic for two Normals: the densities cross where the quadratic
      ``log p(x) - log q(x) = 0`` has its roots ``r1 <= r2`` (one root when the variances are
      equal), so ``TV = |P([r1, r2]) - Q([r1, r2])|`` from the normal CDF.
    * Grid integration (``"grid"``) for other continuous distributions with event shape ``()``,
      ``[1]`` or ``[2]``: ``stderr`` is then a numerical error estimate (the change at half
      resolution plus the mass the box misses), not a standard error; see
      :mod:`probgen.diagnostics.grid`. ``num_samples`` draws of each place the box.
    * Otherwise Monte Carlo ``TV = E_p[(1 - q(x)/p(x))_+]`` over ``num_samples`` draws of
      ``p``: unbiased, standard error ``sd / sqrt(n)``.

    Args:
        grid_points: grid cells per axis (default 2001 in 1-D, 401 in 2-D).

    References:
        Devroye, Mehrabian & Reddad, "The total variation distance between high-dimensional
        Gaussians", arXiv:1810.08693 (the 1-D case is elementary and computed exactly here).
    """
    check_same_event(p, q)
    check_count(num_samples, "num_samples", 2)
    p, q = _broadcast(p, q)
    try:
        return _exact(*TOTAL_VARIATION(p, q), p, unit="")
    except NotImplementedError:
        pass
    if grid_supported(p, q):
        value, err = grid_total_variation(p, q, num_samples, grid_points)
        return Estimate(value, err, "grid", unit="")
    terms = (-torch.expm1(_log_ratio(p, q, num_samples))).clamp(min=0.0)
    value, se = mc_mean(terms)
    return Estimate(value, se, "monte-carlo", unit="", num_samples=num_samples)


def hellinger(
    p: Distribution, q: Distribution, num_samples: int, grid_points: int | None
) -> Estimate:
    """Hellinger distance ``H = sqrt(1 - BC)``, ``BC = ∫ sqrt(p q)``, in ``[0, 1]``.

    ``H² = 1/2 ∫ (sqrt p - sqrt q)²`` (the convention with ``H <= 1``). Analytic whenever the
    Rényi registry has the pair, through ``BC = exp(-D_{1/2}(p || q) / 2)``. Otherwise grid
    integration for continuous 1-D/2-D densities (as in :func:`total_variation`; ``stderr`` is an
    error estimate), else Monte Carlo ``BC = E_p[sqrt(q(x)/p(x))]`` over draws of ``p``. That
    estimate of ``BC`` is unbiased; ``H`` is slightly biased (concave transform) and its
    standard error is the delta method's ``se_BC / (2H)``, capped at ``sqrt(se_BC)``
    (``|sqrt a - sqrt b| <= sqrt|a - b|``) where ``H`` is near 0.

    References:
        Bhattacharyya, "On a measure of divergence between two statistical populations defined
        by their probability distributions", Bull. Calcutta Math. Soc. 1943.
    """
    check_same_event(p, q)
    check_count(num_samples, "num_samples", 2)
    p, q = _broadcast(p, q)
    try:
        d_half, estimator = RENYI(p, q, 0.5)
        gap = -torch.expm1(-d_half / 2)  # 1 - BC without cancellation for nearly equal p, q
        return _exact(gap.clamp(0.0, 1.0).sqrt(), estimator, p, unit="")
    except NotImplementedError:
        pass
    if grid_supported(p, q):
        value, err = grid_hellinger(p, q, num_samples, grid_points)
        return Estimate(value, err, "grid", unit="")
    bc, se_bc = mc_mean((_log_ratio(p, q, num_samples) / 2).exp())
    h = (1 - bc).clamp(0.0, 1.0).sqrt()
    delta = torch.where(h > 0, se_bc / (2 * h).clamp(min=torch.finfo(h.dtype).tiny), math.inf)
    se = torch.minimum(delta, se_bc.sqrt())
    return Estimate(h, se, "monte-carlo", unit="", num_samples=num_samples)


def entropy(p: Distribution, num_samples: int) -> Estimate:
    """Entropy ``H(p) = -E_p[log p(x)]`` in nats (differential entropy for densities).

    ``p.entropy()`` when the distribution implements it (``"analytic"``); otherwise the Monte
    Carlo mean of ``-log p(x)`` over ``num_samples`` draws: unbiased, standard error
    ``sd / sqrt(n)``.
    """
    check_count(num_samples, "num_samples", 2)
    try:
        return _exact(p.entropy(), "analytic", p)
    except NotImplementedError:
        pass
    value, se = mc_mean(-masked_log_prob(p, _draw(p, num_samples)))
    return Estimate(value, se, "monte-carlo", num_samples=num_samples)


def cross_entropy(p: Distribution, q: Distribution, num_samples: int) -> Estimate:
    """Cross-entropy ``H(p, q) = -E_p[log q(x)] = H(p) + KL(p || q)`` in nats.

    Analytic when both ``p.entropy()`` and the KL pair are; otherwise the Monte Carlo mean of
    ``-log q(x)`` over ``num_samples`` draws of ``p`` (unbiased, standard error
    ``sd / sqrt(n)``; ``inf`` once a draw falls outside ``q``'s support).
    """
    check_same_event(p, q)
    check_count(num_samples, "num_samples", 2)
    p, q = _broadcast(p, q)
    try:
        return _exact(p.entropy() + kl_divergence(p, q), "analytic", p)
    except NotImplementedError:
        pass
    value, se = mc_mean(-masked_log_prob(q, _draw(p, num_samples)))
    return Estimate(value, se, "monte-carlo", num_samples=num_samples)


# ---------------------------------------------------------------- shared machinery


def _exact(value: Tensor, estimator: str, p: Distribution, unit: str = "nats") -> Estimate:
    value = value.expand(p.batch_shape) if value.shape != p.batch_shape else value
    return Estimate(value, torch.zeros_like(value), estimator, unit=unit)


def _broadcast(p: Distribution, q: Distribution) -> tuple[Distribution, Distribution]:
    """``p`` and ``q`` expanded to their common batch shape (so draws of one align with the
    other's batch); finite discrete pairs of different kinds or sizes become Categoricals over
    the same categories (missing ones have probability zero)."""
    if isinstance(p, (Bernoulli, Categorical)) and isinstance(q, (Bernoulli, Categorical)):
        pp, qq = finite_probs(p), finite_probs(q)
        if type(p) is not type(q) or pp.shape[-1] != qq.shape[-1]:
            k = max(pp.shape[-1], qq.shape[-1])
            p = Categorical(probs=F.pad(pp, (0, k - pp.shape[-1])), validate_args=False)
            q = Categorical(probs=F.pad(qq, (0, k - qq.shape[-1])), validate_args=False)
    try:
        batch = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
        p = p if p.batch_shape == batch else p.expand(batch)
        q = q if q.batch_shape == batch else q.expand(batch)
    except (RuntimeError, NotImplementedError) as e:
        raise ValueError(
            f"p (batch shape {tuple(p.batch_shape)}) and q (batch shape "
            f"{tuple(q.batch_shape)}) cannot be broadcast to a common batch shape"
        ) from e
    return p, q


def _draw(p: Distribution, num_samples: int) -> Tensor:
    """``num_samples`` draws of ``p``, reparameterised where ``p`` allows it, so that Monte Carlo
    estimates are differentiable in the parameters of ``p`` and ``q`` (e.g. a reverse-KL fit)."""
    return p.rsample((num_samples,)) if p.has_rsample else p.sample((num_samples,))


def _log_ratio(p: Distribution, q: Distribution, num_samples: int) -> Tensor:
    """``log q(x) - log p(x)`` at draws ``x ~ p``: ``[num_samples, *batch]``, ``-inf`` where
    ``q(x) = 0``."""
    x = _draw(p, num_samples)
    lp, lq = masked_log_prob(p, x), masked_log_prob(q, x)
    # A draw where p itself is zero (or both densities infinite) has p-probability zero and
    # carries no information about the ratio: it contributes ratio 1 rather than NaN.
    r = torch.where(lp == -math.inf, 0.0, lq - lp)
    return torch.where(torch.isnan(r), 0.0, r)
