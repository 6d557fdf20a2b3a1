"""Divergences and entropies for every kind of input: the public entry points.

Each function dispatches on the *type* of its arguments (see :mod:`probgen.diagnostics._base`):
a plain Tensor is a batch of probability vectors ``[..., K]``, a ``torch.distributions.
Distribution`` is a density or mass function, :class:`Samples` are draws. Results are
:class:`Estimate`\\ s in nats (``base=2`` gives bits); TV and Hellinger are unitless.

=====================  ==================  =====================  ===============================
function               (Tensor, Tensor)    (Distribution, Dist.)  with Samples
=====================  ==================  =====================  ===============================
``kl_divergence``      exact sum           analytic / MC          (S, S): kNN (Wang et al.);
                                                                  (S, Dist.): MC cross-entropy
                                                                  minus kNN entropy
``js_divergence``      exact sum           analytic / MC          --
``total_variation``    exact sum           analytic / grid / MC   --
``hellinger``          exact sum           analytic / grid / MC   --
``renyi_divergence``   exact sum           analytic / MC          --
``entropy`` (p only)   exact sum           analytic / MC          (S): kNN (Kozachenko–Leonenko)
``cross_entropy``      exact sum           analytic / MC          (S, Dist.): MC ``-mean log q``
=====================  ==================  =====================  ===============================

"Analytic / MC" means a closed form where one is known and a Monte Carlo estimate with a standard
error otherwise (:mod:`probgen.diagnostics.analytic`); "kNN" estimators are in
:mod:`probgen.diagnostics.knn`. Any other combination (a Tensor with a Distribution, a
Distribution with Samples, Samples for JS/TV/Hellinger/Rényi) raises ``TypeError`` saying what
is supported; for distances between two sets of samples use ``mmd`` or
``classifier_two_sample_test`` (:mod:`probgen.diagnostics.two_sample`) or ``wasserstein``
(:mod:`probgen.diagnostics.transport`).

Infinite divergences (``q = 0`` where ``p > 0``) are returned as ``inf``, never NaN.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor
from torch.distributions import Distribution

from probgen.diagnostics import analytic, discrete, knn
from probgen.diagnostics._base import Estimate, Samples, as_probs, mc_mean
from probgen.diagnostics.grid import masked_log_prob
from probgen.validation import check_count

__all__ = [
    "cross_entropy",
    "entropy",
    "hellinger",
    "js_divergence",
    "kl_divergence",
    "renyi_divergence",
    "total_variation",
]

Input = Tensor | Distribution | Samples

_PROBS, _DIST, _SAMPLES = "Tensor", "Distribution", "Samples"
_TWO_SAMPLE_HINT = (
    "For distances between two sets of samples use mmd or classifier_two_sample_test "
    "(probgen.diagnostics.two_sample) or wasserstein (probgen.diagnostics.transport)."
)
_CATEGORICAL_HINT = (
    "To compare probability vectors with a distribution, wrap them: "
    "torch.distributions.Categorical(probs=p)."
)


# ---------------------------------------------------------------------------------------------
# Argument checks and dispatch


def _kind(x: object, name: str) -> str:
    if isinstance(x, Samples):
        return _SAMPLES
    if isinstance(x, Distribution):
        return _DIST
    if isinstance(x, Tensor):
        return _PROBS
    raise TypeError(
        f"{name} must be a Tensor of probability vectors, a torch Distribution or Samples; "
        f"got {type(x).__name__} (convert arrays with torch.as_tensor)"
    )


def _check_kinds(fn: str, p: object, q: object, supported: tuple[tuple[str, str], ...]) -> None:
    kinds = (_kind(p, "p"), _kind(q, "q"))
    if kinds in supported:
        return
    if _PROBS in kinds and _DIST in kinds:
        hint = _CATEGORICAL_HINT
    elif kinds == (_DIST, _SAMPLES) and (_SAMPLES, _DIST) in supported:
        hint = "Pass the Samples as p and the Distribution as q."
    elif _SAMPLES in kinds:
        hint = _TWO_SAMPLE_HINT
    else:
        hint = ""
    listed = ", ".join(f"({a}, {b})" for a, b in supported)
    raise TypeError(
        f"{fn}(p, q) got p as {kinds[0]} and q as {kinds[1]}; supported (p, q) kinds: "
        f"{listed}. {hint}".rstrip()
    )


def _check_options(
    base: float | None, num_samples: int, k: int = 1, grid_points: int | None = None
) -> None:
    if base is not None and not (isinstance(base, numbers.Real) and 1 < base < math.inf):
        raise ValueError(
            f"base must be None (nats) or a finite number > 1 (2 for bits); got {base}"
        )
    for name, value, minimum in (("num_samples", num_samples, 2), ("k", k, 1)):
        check_count(value, name, minimum)
    if grid_points is not None:
        check_count(grid_points, "grid_points", 2)


def _check_alpha(alpha: float) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number in [0, inf]; got {alpha!r}") from None
    if math.isnan(a) or a < 0:
        raise ValueError(f"alpha must be in [0, inf] (0, 1 and inf are limits); got {alpha!r}")
    return a


def _probs_pair(p: Tensor, q: Tensor, normalize: bool) -> tuple[Tensor, Tensor]:
    p, q = as_probs(p, "p", normalize), as_probs(q, "q", normalize)
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"p and q must be over the same outcomes (same last dimension K); got K={p.shape[-1]} "
            f"for p {tuple(p.shape)} and K={q.shape[-1]} for q {tuple(q.shape)}"
        )
    try:
        torch.broadcast_shapes(p.shape[:-1], q.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"the batch dimensions of p {tuple(p.shape[:-1])} and q {tuple(q.shape[:-1])} "
            "do not broadcast"
        ) from None
    return p, q


def _exact(value: Tensor, unit: str = "nats") -> Estimate:
    return Estimate(value=value, stderr=torch.zeros_like(value), estimator="exact", unit=unit)


# ---------------------------------------------------------------------------------------------
# Samples against a density


def _log_prob_of_samples(q: Distribution, x: Samples) -> Tensor:
    """``log q(x_i)`` as ``[N, *q.batch_shape]``; ``-inf`` for draws outside ``q``'s support."""
    event, batch = q.event_shape, q.batch_shape
    if x.dim != math.prod(event):
        raise ValueError(
            f"p holds draws of dimension {x.dim} but q has event shape {tuple(event)} "
            f"({math.prod(event)} values per draw)"
        )
    n = len(x)
    # Expanded to the full batch so the support check masks each (draw, batch member) pair.
    xs = x.x.reshape(n, *([1] * len(batch)), *event).expand(n, *batch, *event)
    return masked_log_prob(q, xs)


def _mc_cross_entropy(x: Samples, q: Distribution) -> Estimate:
    value, stderr = mc_mean(-_log_prob_of_samples(q, x))
    return Estimate(value=value, stderr=stderr, estimator="monte-carlo", num_samples=len(x))


def _mc_knn_kl(x: Samples, q: Distribution, k: int) -> Estimate:
    support = q.support
    if support is not None and support.is_discrete:
        raise ValueError(
            "kl_divergence(Samples, Distribution) subtracts a kNN (differential) entropy, so q "
            "must be continuous; for a discrete q pass both as Distributions or Tensors"
        )
    ce = _mc_cross_entropy(x, q)
    h = knn.knn_entropy(x, k=k)
    # An infinite cross-entropy (draws outside supp q) stays infinite whatever the entropy term.
    value = torch.where(torch.isinf(ce.value), ce.value, ce.value - h.value)
    stderr = (ce.stderr**2 + h.stderr**2).sqrt()
    return Estimate(value=value, stderr=stderr, estimator="monte-carlo+knn", num_samples=len(x))


# ---------------------------------------------------------------------------------------------
# Public API


def kl_divergence(
    p: Input,
    q: Input,
    *,
    base: float | None = None,
    num_samples: int = 10_000,
    k: int = 1,
    normalize: bool = False,
) -> Estimate:
    """Kullback–Leibler divergence ``KL(p || q) = E_p[log p(x) - log q(x)]``.

    * Tensors: exact ``sum_k p_k log(p_k / q_k)``; ``inf`` where ``q_k = 0 < p_k``.
    * Distributions: closed form when known, else Monte Carlo over ``num_samples`` draws of
      ``p`` (unbiased, standard error ``sd / sqrt(num_samples)``; not clamped, so it can be
      slightly negative when ``p`` and ``q`` nearly agree).
    * ``(Samples, Samples)``: the k-nearest-neighbour estimator of Wang, Kulkarni & Verdú
      (2009), consistent and asymptotically unbiased; biased at small N and high dimension, and
      may then be negative.
    * ``(Samples, Distribution)``: ``-mean log q(x_i)`` minus the Kozachenko–Leonenko entropy
      of the draws (continuous ``q`` only). Its standard error combines the two terms' in
      quadrature, which is approximate because both use the same draws; inherits the kNN bias.

    Args:
        p: the reference distribution (Tensor, Distribution or Samples).
        q: the approximating distribution (same kind as ``p``, or a Distribution for Samples).
        base: logarithm base of the result (``None``: nats, 2: bits).
        num_samples: Monte Carlo draws when no closed form exists (>= 2).
        k: neighbour index of the kNN estimators (>= 1).
        normalize: divide Tensor inputs by their sums instead of requiring them to sum to 1.

    Returns:
        An :class:`Estimate` in nats (or ``base`` units), with the broadcast batch shape.

    Raises:
        ValueError: invalid probability vectors, mismatched shapes, bad ``base``/``num_samples``/
            ``k``. TypeError: an unsupported pair of input kinds.

    References:
        Cover & Thomas, *Elements of Information Theory*, 2nd ed. (2006), sec. 2.3.
        Wang, Kulkarni & Verdú, *Divergence estimation for multidimensional densities via
        k-nearest-neighbor distances*, IEEE Trans. Inf. Theory 55 (2009).
    """
    _check_options(base, num_samples, k)
    supported = ((_PROBS, _PROBS), (_DIST, _DIST), (_SAMPLES, _SAMPLES), (_SAMPLES, _DIST))
    _check_kinds("kl_divergence", p, q, supported)
    if isinstance(p, Tensor) and isinstance(q, Tensor):
        est = _exact(discrete.kl(*_probs_pair(p, q, normalize)))
    elif isinstance(p, Distribution) and isinstance(q, Distribution):
        est = analytic.kl(p, q, num_samples)
    elif isinstance(p, Samples) and isinstance(q, Samples):
        est = knn.knn_kl_divergence(p, q, k=k)
    else:
        assert isinstance(p, Samples) and isinstance(q, Distribution)
        est = _mc_knn_kl(p, q, k)
    return est.to_base(base)


def js_divergence(
    p: Input,
    q: Input,
    *,
    base: float | None = None,
    num_samples: int = 10_000,
    normalize: bool = False,
) -> Estimate:
    """Jensen–Shannon divergence ``JS = KL(p || m) / 2 + KL(q || m) / 2``, ``m = (p + q) / 2``.

    Symmetric, always finite, in ``[0, log 2]`` nats (``[0, 1]`` bits); ``sqrt(JS)`` is a metric
    (the value ``scipy.spatial.distance.jensenshannon`` returns).

    * Tensors: exact sum.
    * Distributions: closed form when known, else Monte Carlo over ``num_samples`` draws of each
      of ``p`` and ``q`` (unbiased, standard error ``O(1 / sqrt(num_samples))``; not clamped,
      so for nearly equal ``p`` and ``q`` the estimate can be slightly negative).

    Args:
        p: Tensor of probability vectors or Distribution.
        q: same kind as ``p``.
        base: logarithm base of the result (``None``: nats, 2: bits).
        num_samples: Monte Carlo draws when no closed form exists (>= 2).
        normalize: divide Tensor inputs by their sums instead of requiring them to sum to 1.

    Returns:
        An :class:`Estimate` in nats (or ``base`` units).

    Raises:
        ValueError: invalid inputs or arguments. TypeError: an unsupported pair of input kinds
            (Samples: use :mod:`probgen.diagnostics.two_sample`).

    References:
        Lin, *Divergence measures based on the Shannon entropy*, IEEE Trans. Inf. Theory 37
        (1991).
    """
    _check_options(base, num_samples)
    _check_kinds("js_divergence", p, q, ((_PROBS, _PROBS), (_DIST, _DIST)))
    if isinstance(p, Tensor) and isinstance(q, Tensor):
        est = _exact(discrete.js(*_probs_pair(p, q, normalize)))
    else:
        assert isinstance(p, Distribution) and isinstance(q, Distribution)
        est = analytic.js(p, q, num_samples)
    return est.to_base(base)


def total_variation(
    p: Input,
    q: Input,
    *,
    num_samples: int = 10_000,
    grid_points: int | None = None,
    normalize: bool = False,
) -> Estimate:
    """Total variation distance ``TV = sup_A |p(A) - q(A)| = (1/2) integral |p(x) - q(x)| dx``.

    Unitless, in ``[0, 1]``.

    * Tensors: exact ``sum_k |p_k - q_k| / 2``.
    * Distributions: closed form when known; for 1-D and 2-D densities a quadrature on a grid
      (deterministic; ``stderr`` is its error estimate); otherwise Monte Carlo
      ``E_p[max(0, 1 - q(x) / p(x))]`` over ``num_samples`` draws (unbiased).

    Args:
        p: Tensor of probability vectors or Distribution.
        q: same kind as ``p``.
        num_samples: Monte Carlo draws when no closed form exists (>= 2).
        grid_points: grid cells per axis of the quadrature (``None``: the default of
            :func:`probgen.diagnostics.analytic.total_variation`).
        normalize: divide Tensor inputs by their sums instead of requiring them to sum to 1.

    Returns:
        A unitless :class:`Estimate`.

    Raises:
        ValueError: invalid inputs or arguments. TypeError: an unsupported pair of input kinds
            (Samples: use :mod:`probgen.diagnostics.two_sample`).

    References:
        Tsybakov, *Introduction to Nonparametric Estimation*, Springer (2009), sec. 2.4.
    """
    _check_options(None, num_samples, grid_points=grid_points)
    _check_kinds("total_variation", p, q, ((_PROBS, _PROBS), (_DIST, _DIST)))
    if isinstance(p, Tensor) and isinstance(q, Tensor):
        return _exact(discrete.total_variation(*_probs_pair(p, q, normalize)), unit="")
    assert isinstance(p, Distribution) and isinstance(q, Distribution)
    return analytic.total_variation(p, q, num_samples, grid_points)


def hellinger(
    p: Input,
    q: Input,
    *,
    num_samples: int = 10_000,
    grid_points: int | None = None,
    normalize: bool = False,
) -> Estimate:
    """Hellinger distance ``H = sqrt(1 - integral sqrt(p(x) q(x)) dx)``, unitless, in ``[0, 1]``.

    This is the normalised convention ``H^2 = (1/2) integral (sqrt p - sqrt q)^2``; texts that
    omit the 1/2 report ``sqrt(2) H``. It bounds total variation: ``H^2 <= TV <= sqrt(2) H``.

    * Tensors: exact sum.
    * Distributions: closed form when known (e.g. Gaussians); for 1-D and 2-D densities a
      quadrature on a grid (``stderr``: its error estimate); otherwise Monte Carlo of the
      Bhattacharyya coefficient ``E_p[sqrt(q(x) / p(x))]`` (unbiased for ``H^2``; ``H`` itself
      then carries a small ``O(1 / num_samples)`` bias from the square root).

    Args:
        p: Tensor of probability vectors or Distribution.
        q: same kind as ``p``.
        num_samples: Monte Carlo draws when no closed form exists (>= 2).
        grid_points: grid cells per axis of the quadrature (``None``: the default of
            :func:`probgen.diagnostics.analytic.hellinger`).
        normalize: divide Tensor inputs by their sums instead of requiring them to sum to 1.

    Returns:
        A unitless :class:`Estimate`.

    Raises:
        ValueError: invalid inputs or arguments. TypeError: an unsupported pair of input kinds
            (Samples: use :mod:`probgen.diagnostics.two_sample`).

    References:
        Le Cam & Yang, *Asymptotics in Statistics*, 2nd ed., Springer (2000), sec. 3.3.
    """
    _check_options(None, num_samples, grid_points=grid_points)
    _check_kinds("hellinger", p, q, ((_PROBS, _PROBS), (_DIST, _DIST)))
    if isinstance(p, Tensor) and isinstance(q, Tensor):
        return _exact(discrete.hellinger(*_probs_pair(p, q, normalize)), unit="")
    assert isinstance(p, Distribution) and isinstance(q, Distribution)
    return analytic.hellinger(p, q, num_samples, grid_points)


def renyi_divergence(
    p: Input,
    q: Input,
    alpha: float,
    *,
    base: float | None = None,
    num_samples: int = 10_000,
    normalize: bool = False,
) -> Estimate:
    """Rényi divergence ``D_alpha(p || q) = log E_p[(p(x) / q(x))^(alpha - 1)] / (alpha - 1)``.

    Limits: ``D_0 = -log q(supp p)``, ``D_1 = KL(p || q)``, ``D_inf = log ess sup p/q``;
    non-decreasing in ``alpha``; ``D_{1/2} = -2 log(1 - H^2)`` with ``H`` the Hellinger distance.
    ``inf`` when ``q`` misses part of the support of ``p`` (``alpha >= 1``) or the supports are
    disjoint (``alpha < 1``).

    * Tensors: exact sum.
    * Distributions: closed form when known, else Monte Carlo over ``num_samples`` draws of
      ``p``; the log of a Monte Carlo mean is biased (by ``O(1 / num_samples)``, downward by
      Jensen for ``alpha > 1``) and its variance grows quickly with ``alpha``.

    Args:
        p: Tensor of probability vectors or Distribution.
        q: same kind as ``p``.
        alpha: the order, in ``[0, inf]``; ``math.inf`` (``D_inf``) for Tensor inputs only.
        base: logarithm base of the result (``None``: nats, 2: bits).
        num_samples: Monte Carlo draws when no closed form exists (>= 2).
        normalize: divide Tensor inputs by their sums instead of requiring them to sum to 1.

    Returns:
        An :class:`Estimate` in nats (or ``base`` units).

    Raises:
        ValueError: invalid inputs, ``alpha`` negative or NaN (or infinite for
            Distributions), bad ``base``/``num_samples``. TypeError: an unsupported pair of
            input kinds.

    References:
        van Erven & Harremoës, *Rényi divergence and Kullback-Leibler divergence*, IEEE Trans.
        Inf. Theory 60 (2014), arXiv:1206.2459.
    """
    a = _check_alpha(alpha)
    _check_options(base, num_samples)
    _check_kinds("renyi_divergence", p, q, ((_PROBS, _PROBS), (_DIST, _DIST)))
    if isinstance(p, Tensor) and isinstance(q, Tensor):
        est = _exact(discrete.renyi(*_probs_pair(p, q, normalize), a))
    else:
        assert isinstance(p, Distribution) and isinstance(q, Distribution)
        est = analytic.renyi(p, q, a, num_samples)
    return est.to_base(base)


def entropy(
    p: Input,
    *,
    base: float | None = None,
    num_samples: int = 10_000,
    k: int = 3,
    normalize: bool = False,
) -> Estimate:
    """Shannon entropy ``H(p) = -E_p[log p(x)]`` (differential entropy for densities).

    * Tensor: exact ``-sum_k p_k log p_k``, in ``[0, log K]``.
    * Distribution: closed form when known, else Monte Carlo ``-mean log p(x_i)`` over
      ``num_samples`` draws (unbiased, standard error ``sd / sqrt(num_samples)``).
    * Samples: the Kozachenko–Leonenko k-nearest-neighbour estimator (consistent; biased at
      small N and in high dimension).

    Args:
        p: Tensor of probability vectors, Distribution or Samples.
        base: logarithm base of the result (``None``: nats, 2: bits).
        num_samples: Monte Carlo draws when no closed form exists (>= 2).
        k: neighbour index of the kNN estimator (>= 1).
        normalize: divide Tensor input by its sum instead of requiring it to sum to 1.

    Returns:
        An :class:`Estimate` in nats (or ``base`` units).

    Raises:
        ValueError: invalid input or arguments. TypeError: ``p`` of another type.

    References:
        Cover & Thomas, *Elements of Information Theory*, 2nd ed. (2006), ch. 2 and 8.
        Kozachenko & Leonenko, *Sample estimate of the entropy of a random vector*, Problems
        Inform. Transmission 23 (1987).
    """
    _check_options(base, num_samples, k)
    _kind(p, "p")
    if isinstance(p, Tensor):
        est = _exact(discrete.entropy(as_probs(p, "p", normalize)))
    elif isinstance(p, Distribution):
        est = analytic.entropy(p, num_samples)
    else:
        est = knn.knn_entropy(p, k=k)
    return est.to_base(base)


def cross_entropy(
    p: Input,
    q: Input,
    *,
    base: float | None = None,
    num_samples: int = 10_000,
    normalize: bool = False,
) -> Estimate:
    """Cross-entropy ``H(p, q) = -E_p[log q(x)] = H(p) + KL(p || q)``.

    ``inf`` when ``q`` gives zero mass/density to part of the support of ``p``.

    * Tensors: exact ``-sum_k p_k log q_k``.
    * Distributions: closed form when known, else Monte Carlo over ``num_samples`` draws of
      ``p`` (unbiased, standard error ``sd / sqrt(num_samples)``).
    * ``(Samples, Distribution)``: Monte Carlo ``-mean_i log q(x_i)`` over the given draws
      (unbiased, standard error ``sd / sqrt(N)``); any draw outside the support of ``q`` makes it
      ``inf``. This is the held-out negative log-likelihood per draw.

    Args:
        p: Tensor of probability vectors, Distribution or Samples (the data).
        q: Tensor for Tensor ``p``, else a Distribution (the model).
        base: logarithm base of the result (``None``: nats, 2: bits).
        num_samples: Monte Carlo draws when no closed form exists (>= 2).
        normalize: divide Tensor inputs by their sums instead of requiring them to sum to 1.

    Returns:
        An :class:`Estimate` in nats (or ``base`` units).

    Raises:
        ValueError: invalid inputs or arguments, Samples whose dimension does not match the event
            shape of ``q``. TypeError: an unsupported pair of input kinds.

    References:
        Cover & Thomas, *Elements of Information Theory*, 2nd ed. (2006), sec. 2.3 and 5.4.
    """
    _check_options(base, num_samples)
    supported = ((_PROBS, _PROBS), (_DIST, _DIST), (_SAMPLES, _DIST))
    _check_kinds("cross_entropy", p, q, supported)
    if isinstance(p, Tensor) and isinstance(q, Tensor):
        est = _exact(discrete.cross_entropy(*_probs_pair(p, q, normalize)))
    elif isinstance(p, Distribution) and isinstance(q, Distribution):
        est = analytic.cross_entropy(p, q, num_samples)
    else:
        assert isinstance(p, Samples) and isinstance(q, Distribution)
        est = _mc_cross_entropy(p, q)
    return est.to_base(base)
