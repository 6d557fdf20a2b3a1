"""Exact divergences and entropies of probability vectors, in nats.

Every function takes already-validated probability tensors ``[..., K]`` (see
:func:`~probgen.diagnostics._base.as_probs`) whose batch dimensions broadcast, sums over the
last dimension, and returns a tensor of the broadcast batch shape. Conventions (Cover & Thomas,
*Elements of Information Theory*, 2nd ed., Wiley 2006, sec. 2.3):

* ``0 log 0 = 0`` and ``0 log(0 / q) = 0``: outcomes outside the support of ``p`` contribute
  nothing;
* ``p log(p / 0) = +inf`` for ``p > 0``: KL, cross-entropy and Rényi divergences (order
  ``alpha >= 1``, or ``alpha < 1`` with disjoint supports) are ``+inf`` when ``q`` misses part of
  the support of ``p``. No function returns NaN for valid input.

Quantities that are non-negative in exact arithmetic are clamped at 0 (and JS at ``log 2``, TV
and Hellinger at 1), so rounding never produces, e.g., ``KL(p, p) = -1e-17``.

The functions are differentiable: where a result is finite its gradient holds no NaN, also for
vectors with zeros (terms outside the support are evaluated at a harmless point and masked, so
they contribute gradient 0; the true one-sided derivative there may be infinite).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["cross_entropy", "entropy", "hellinger", "js", "kl", "renyi", "total_variation"]

#: Below this |(alpha - 1) log(p/q)| the Rényi sum is formed as ``log1p(sum p expm1(.))``,
#: which keeps full relative precision as alpha -> 1; larger exponents go through logsumexp,
#: which cannot overflow.
_RENYI_EXPM1_RANGE = 1.0


def _nonneg(x: Tensor) -> Tensor:
    """``max(x, 0)``, with ``-0.0`` (from negating or dividing an exact zero) printed as 0."""
    return x.clamp_min(0.0) + 0.0


def _off_to_one(keep: Tensor, *xs: Tensor) -> tuple[Tensor, ...]:
    """``xs`` with the entries outside ``keep`` set to 1.

    Terms off the support are masked out of the result anyway; evaluating them at 1 instead of 0
    keeps ``log 0`` and ``0 / 0`` out of the graph, so gradients there are 0 rather than NaN.
    """
    one = torch.ones((), dtype=xs[0].dtype, device=xs[0].device)
    return tuple(torch.where(keep, x, one) for x in xs)


def _log_ratio(p: Tensor, q: Tensor) -> Tensor:
    """``log(p / q)`` on the support of ``p``, 0 off it, ``+inf`` where ``q = 0 < p``.

    ``log(p / q)`` keeps full precision when ``p ~ q`` (where KL is a sum of tiny terms), unlike
    ``log p - log q``; the difference of logs is only used where ``p / q`` overflows
    (subnormal ``q``), so a huge but finite ratio is not reported as infinite.
    """
    ps, qs = _off_to_one((p > 0) & (q > 0), p, q)
    ratio = ps / qs
    lr = torch.where(torch.isinf(ratio), torch.log(ps) - torch.log(qs), torch.log(ratio))
    return torch.where((p > 0) & (q == 0), math.inf, lr)


def kl(p: Tensor, q: Tensor) -> Tensor:
    """Kullback–Leibler divergence ``KL(p || q) = sum_k p_k log(p_k / q_k)`` in nats.

    ``+inf`` when ``q_k = 0 < p_k`` for some ``k``; 0 iff ``p = q``.
    """
    return _nonneg((p * _log_ratio(p, q)).sum(-1))


def js(p: Tensor, q: Tensor) -> Tensor:
    """Jensen–Shannon divergence ``JS = KL(p || m) / 2 + KL(q || m) / 2``, ``m = (p + q) / 2``.

    Always finite (``m > 0`` wherever ``p`` or ``q`` is), symmetric, in ``[0, log 2]`` nats
    (Lin 1991, *Divergence measures based on the Shannon entropy*, IEEE Trans. Inf. Theory 37).
    """
    m = (p + q) / 2
    return ((kl(p, m) + kl(q, m)) / 2).clamp(0.0, math.log(2.0))


def total_variation(p: Tensor, q: Tensor) -> Tensor:
    """Total variation distance ``TV = sum_k |p_k - q_k| / 2 = max_A |p(A) - q(A)|``, in [0, 1]."""
    return ((p - q).abs().sum(-1) / 2).clamp(0.0, 1.0)


def hellinger(p: Tensor, q: Tensor) -> Tensor:
    """Hellinger distance ``H = sqrt(1 - sum_k sqrt(p_k q_k))``, in [0, 1].

    This is the normalised convention (Le Cam; ``H^2 = 1 - BC`` with BC the Bhattacharyya
    coefficient), so ``H = 1`` iff the supports are disjoint. Some texts drop the factor 1/2 in
    ``H^2 = sum_k (sqrt p_k - sqrt q_k)^2 / 2`` and report ``sqrt(2) H`` instead.

    ``H^2`` is summed as ``(sqrt p - sqrt q)^2 / 2``, whose terms are non-negative, rather than
    ``1 - BC``, which cancels catastrophically when ``p ~ q``.
    """
    ps, qs = _off_to_one((p > 0) | (q > 0), p, q)
    h2 = (((ps.sqrt() - qs.sqrt()) ** 2).sum(-1) / 2).clamp(0.0, 1.0)
    # H is not differentiable at p = q (like |x| at 0): take gradient 0 there, not inf * 0.
    return torch.where(h2 > 0, _off_to_one(h2 > 0, h2)[0].sqrt(), 0.0)


def renyi(p: Tensor, q: Tensor, alpha: float) -> Tensor:
    """Rényi divergence of order ``alpha`` in nats (van Erven & Harremoës 2014, arXiv:1206.2459).

    ``D_alpha = log(sum_k p_k^alpha q_k^(1 - alpha)) / (alpha - 1)`` for ``alpha`` in
    ``(0, 1) U (1, inf)``, extended by continuity: ``D_0 = -log q(supp p)``, ``D_1 = KL(p || q)``,
    ``D_inf = log max_{k: p_k > 0} p_k / q_k``. It is non-decreasing in ``alpha``.

    The sum is computed as ``E_p[(p / q)^(alpha - 1)]`` (equal for normalised ``p``), through
    ``log1p`` / ``expm1`` when the exponents are small, so ``D_alpha`` tends smoothly to KL as
    ``alpha -> 1``; otherwise through logsumexp, so large ratios do not overflow.

    Args:
        p: ``[..., K]`` probability vectors.
        q: ``[..., K]`` probability vectors.
        alpha: the order, ``0 <= alpha <= inf`` (validated by the caller).
    """
    if alpha == 1:
        return kl(p, q)
    on_support = p > 0
    if alpha == 0:
        # -log(1 - q(outside supp p)) keeps precision when q puts little mass outside supp p.
        outside = torch.where(on_support, torch.zeros_like(q), q).sum(-1).clamp(0.0, 1.0)
        return _nonneg(-torch.log1p(-outside))
    lr = _log_ratio(p, q)
    if math.isinf(alpha):
        neg_inf = torch.full((), -math.inf, dtype=lr.dtype, device=lr.device)
        return _nonneg(torch.where(on_support, lr, neg_inf).amax(-1))
    t = (alpha - 1) * lr  # exactly 0 off the support, +-inf where q = 0 < p
    p = p.expand_as(t)
    small = t.abs().amax(-1) <= _RENYI_EXPM1_RANGE
    # Off the small branch expm1 may give -1 * p summing to just below -1 (log1p -> NaN); the
    # value is discarded by the where, but keep it finite so nothing NaN is ever formed.
    near = torch.log1p((p * torch.expm1(t)).sum(-1).clamp_min(-1.0))
    log_p = torch.where(on_support, torch.log(_off_to_one(on_support, p)[0]), -math.inf)
    far = torch.logsumexp(log_p + t, dim=-1)
    return _nonneg(torch.where(small, near, far) / (alpha - 1))


def entropy(p: Tensor) -> Tensor:
    """Shannon entropy ``H(p) = -sum_k p_k log p_k`` in nats, in ``[0, log K]``."""
    return _nonneg(-torch.special.xlogy(p, _off_to_one(p > 0, p)[0]).sum(-1))


def cross_entropy(p: Tensor, q: Tensor) -> Tensor:
    """Cross-entropy ``H(p, q) = -sum_k p_k log q_k = H(p) + KL(p || q)`` in nats.

    ``+inf`` when ``q_k = 0 < p_k`` for some ``k``.
    """
    (qs,) = _off_to_one(p > 0, q)
    return _nonneg(-torch.special.xlogy(p, qs).sum(-1))
