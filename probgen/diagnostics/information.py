"""Information measures: mutual information, conditional entropy, self-information, latent MI.

Inputs follow the package convention (see :mod:`probgen.diagnostics._base`): a plain tensor is
a probability table, a ``Distribution`` a density or mass function, and draws (``Samples`` or
tensors passed as a pair ``x, y``) go to the nonparametric estimator. Values are in nats unless
``base`` is given (``base=2``: bits).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import (
    Distribution,
    Independent,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
)

from probgen.diagnostics import discrete
from probgen.diagnostics._base import Estimate, Samples, as_probs
from probgen.diagnostics.grid import masked_log_prob
from probgen.diagnostics.knn import ksg_mutual_information
from probgen.validation import check_count

__all__ = [
    "conditional_entropy",
    "latent_mutual_information",
    "mutual_information",
    "self_information",
]

#: Size of one ``[S, rows, N, L]`` block of encoder log-densities in
#: :func:`latent_mutual_information` (memory stays bounded for large batches).
_BLOCK_BYTES = 2**24


def _exact(value: Tensor, base: float | None) -> Estimate:
    return Estimate(value=value, stderr=torch.zeros_like(value), estimator="exact").to_base(base)


def _joint_table(p: Tensor, name: str, normalize: bool) -> Tensor:
    """Validates ``p [..., X, Y]`` as one probability vector over its last two dimensions."""
    p = torch.as_tensor(p)
    if p.dim() < 2:
        raise ValueError(
            f"{name} must be a joint probability table [..., X, Y] (at least 2-D); "
            f"got shape {tuple(p.shape)}"
        )
    flat = as_probs(p.reshape(*p.shape[:-2], -1), name, normalize=normalize)
    return flat.reshape(p.shape)


def _gaussian_mi(p: Distribution, split: int) -> Tensor:
    """``I = 1/2 log(det S_xx det S_yy / det S)`` for a Gaussian joint split after ``split``."""
    dim = p.event_shape[0] if len(p.event_shape) == 1 else 0
    if isinstance(split, bool) or not isinstance(split, int) or not 1 <= split < dim:
        raise ValueError(
            f"split must be an integer in [1, {dim - 1}] (X = the first split coordinates, "
            f"Y = the rest) for a joint of dimension {dim}; got {split!r}"
        )
    if isinstance(p, (MultivariateNormal, LowRankMultivariateNormal)):
        # det S = det S_yy|x det S_xx and the trailing block of chol(S) is chol(S_yy|x) (the
        # Schur complement), so I = 1/2 log det S_yy - log det L_yy: no ill-conditioned
        # difference of full log-determinants.
        tril = p.scale_tril
        l_yy = tril[..., split:, split:].diagonal(dim1=-2, dim2=-1)
        chol_yy = torch.linalg.cholesky(p.covariance_matrix[..., split:, split:])
        half_logdet_yy = chol_yy.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        value = (half_logdet_yy - l_yy.log().sum(-1)).clamp_min(0.0)
        return value.expand(p.batch_shape)
    mean = p.mean
    return torch.zeros(p.batch_shape, dtype=mean.dtype, device=mean.device)


def mutual_information(
    p: Tensor | Samples | Distribution,
    y: Tensor | Samples | None = None,
    *,
    split: int | None = None,
    k: int = 3,
    base: float | None = None,
    normalize: bool = False,
) -> Estimate:
    """Mutual information ``I(X; Y)`` from a table, from paired draws, or of a Gaussian joint.

    Three forms, told apart by the input types:

    * ``mutual_information(table)``: ``table [..., X, Y]`` is a joint probability table (``X``
      indexes dim -2, ``Y`` dim -1; batch dims in front). Exact:
      ``I = sum_xy p(x, y) log(p(x, y) / (p(x) p(y))) = KL(p(x, y) || p(x) p(y))``, with
      ``0 log 0 = 0``. ``normalize=True`` accepts counts (a contingency table).
    * ``mutual_information(x, y, k=3)``: paired draws ``x [N] / [N, dx]`` and
      ``y [N] / [N, dy]`` (tensors or ``Samples``); the KSG estimator
      (:func:`~probgen.diagnostics.knn.ksg_mutual_information`, Kraskov et al. 2004,
      arXiv:cond-mat/0305641), with its plug-in standard error. It is not clamped at 0, so it
      can be slightly negative for independent variables.
    * ``mutual_information(mvn, split=d)``: a Gaussian joint over ``(X, Y)`` with ``X`` the
      first ``d`` coordinates; analytic ``I = 1/2 log(det S_xx det S_yy / det S)`` (Cover &
      Thomas, *Elements of Information Theory*, 2nd ed., sec. 8.5). ``mvn`` is a
      ``MultivariateNormal`` (batched is fine) or an ``Independent(Normal, 1)``, whose
      coordinates are independent (``I = 0``).

    Args:
        p: the table, the draws of ``X``, or the Gaussian joint.
        y: the draws of ``Y`` paired with ``p`` (only for the sample form).
        split: the dimension of ``X`` (only for the Gaussian form).
        k: neighbour order of the KSG estimator (only for the sample form).
        base: logarithm base of the result (``None``: nats; 2: bits).
        normalize: normalise the table instead of requiring it to sum to 1 (table form only).

    Returns:
        An ``Estimate``: ``estimator="exact"`` with the table's batch shape, ``"analytic"``
        with the distribution's batch shape, or a scalar ``"ksg"`` estimate.

    Raises:
        TypeError: an unsupported kind of input (a non-Gaussian joint distribution, or a
            distribution together with ``y``).
        ValueError: an invalid table, invalid draws, or a missing/misplaced argument (a
            distribution without ``split``, samples without ``y``).
    """
    if y is not None:
        if isinstance(p, Distribution):
            raise TypeError(
                "with y given, p and y must be paired draws (tensors or Samples), not a "
                "Distribution; for a Gaussian joint use mutual_information(p, split=d)"
            )
        if split is not None or normalize:
            raise ValueError(
                "split and normalize apply to the Gaussian and table forms only, not to paired "
                "draws (p, y)"
            )
        return ksg_mutual_information(p, y, k=k).to_base(base)
    if isinstance(p, Distribution):
        if split is None:
            raise ValueError(
                "mutual_information of a distribution needs split=d: X is the first d "
                "coordinates of the joint and Y the rest"
            )
        gaussian_joint = isinstance(p, (MultivariateNormal, LowRankMultivariateNormal)) or (
            isinstance(p, Independent)
            and isinstance(p.base_dist, Normal)
            and len(p.event_shape) == 1
        )
        if not gaussian_joint:
            raise TypeError(
                f"mutual_information(p, split=...) is analytic only for a (LowRank)"
                f"MultivariateNormal or Independent(Normal, 1) joint; got {type(p).__name__}. "
                "For other joints, draw paired samples and call mutual_information(x, y)"
            )
        value = _gaussian_mi(p, split)
        return Estimate(value, torch.zeros_like(value), "analytic").to_base(base)
    if isinstance(p, Samples):
        raise ValueError(
            "mutual_information of Samples needs the paired draws of Y: mutual_information(x, y)"
        )
    if split is not None:
        raise ValueError("split applies to a Gaussian joint distribution, not to a table")
    try:
        table = _joint_table(p, "p", normalize)
    except ValueError as err:
        raise ValueError(
            f"{err}. A single tensor is read as a joint probability table; for paired samples "
            "pass both: mutual_information(x, y)"
        ) from None
    px = table.sum(-1)
    py = table.sum(-2)
    product = px.unsqueeze(-1) * py.unsqueeze(-2)
    return _exact(discrete.kl(table.flatten(-2), product.flatten(-2)), base)


def conditional_entropy(
    joint: Tensor, *, base: float | None = None, normalize: bool = False
) -> Estimate:
    """Conditional entropy ``H(Y | X)`` of a joint probability table (exact).

    ``joint [..., X, Y]``: ``X`` (the variable conditioned on) indexes dim -2 and ``Y`` dim -1.

        ``H(Y | X) = -sum_xy p(x, y) log p(y | x) = sum_x p(x) H(Y | X = x) = H(X, Y) - H(X)``

    summed as ``sum_x p(x) H(Y | X = x)``, whose terms are non-negative (no cancellation);
    rows with ``p(x) = 0`` contribute 0. For ``H(X | Y)`` pass ``joint.transpose(-1, -2)``.

    Args:
        joint: ``[..., X, Y]`` joint probabilities (counts with ``normalize=True``).
        base: logarithm base of the result (``None``: nats; 2: bits).
        normalize: normalise each table over its last two dims instead of requiring sum 1.

    Returns:
        An exact ``Estimate`` with the batch shape ``joint.shape[:-2]``, in ``[0, log Y]``.

    Raises:
        ValueError: ``joint`` is not at least 2-D or is not a valid probability table.
    """
    table = _joint_table(joint, "joint", normalize)
    px = table.sum(-1, keepdim=True)
    uniform = torch.full_like(table, 1.0 / table.shape[-1])
    # Rows with p(x) = 0 get any valid conditional (weight 0), so no 0/0 is ever formed.
    cond = torch.where(px > 0, table / torch.where(px > 0, px, 1.0), uniform)
    return _exact((px.squeeze(-1) * discrete.entropy(cond)).sum(-1), base)


def self_information(
    p: Tensor | Distribution, x: Tensor | int, *, base: float | None = None
) -> Estimate:
    """Self-information (surprisal) ``-log p(x)`` of outcomes ``x``, exact.

    * ``p`` a ``Distribution``: ``-p.log_prob(x)`` (a density for continuous ``p``, so it can
      be negative), with the broadcast shape of ``log_prob``; ``+inf`` for ``x`` outside the
      support of ``p`` (``log_prob`` is evaluated only inside it, so an unvalidated
      distribution cannot return a finite value there).
    * ``p`` a tensor ``[..., K]`` of probability vectors and ``x`` integer outcomes in
      ``[0, K)``: ``-log p[..., x]``, batch dims broadcast between ``p.shape[:-1]`` and
      ``x.shape``.

    An outcome of probability 0 has self-information ``+inf``.

    Args:
        p: a distribution, or probability vectors over the last dim.
        x: the outcomes.
        base: logarithm base of the result (``None``: nats; 2: bits).

    Returns:
        A tensor-valued exact ``Estimate``.

    Raises:
        ValueError: invalid probability vectors; non-integer or out-of-range outcomes (tensor
            ``p``); a ``log_prob`` that returns NaN.
    """
    if isinstance(p, Distribution):
        value = -masked_log_prob(p, torch.as_tensor(x))
        if torch.isnan(value).any():
            raise ValueError("p.log_prob(x) returned NaN; x may lie outside the support of p")
        return _exact(value, base)
    if isinstance(p, Samples) or not isinstance(p, Tensor):
        raise ValueError(
            f"p must be a Distribution or a tensor of probability vectors [..., K]; got "
            f"{type(p).__name__}"
        )
    probs = as_probs(p, "p")
    idx = torch.as_tensor(x, device=probs.device)
    if idx.is_floating_point():
        if not (torch.isfinite(idx) & (idx == idx.round())).all():
            raise ValueError("x must hold integer outcome indices; got non-integer values")
    elif idx.dtype == torch.bool or idx.is_complex():
        raise ValueError(f"x must hold integer outcome indices; got dtype {idx.dtype}")
    idx = idx.long()
    num = probs.shape[-1]
    if ((idx < 0) | (idx >= num)).any():
        raise ValueError(
            f"x holds outcomes outside [0, {num - 1}] (min {int(idx.min())}, max "
            f"{int(idx.max())}); p has K = {num} categories"
        )
    batch = torch.broadcast_shapes(probs.shape[:-1], idx.shape)
    picked = probs.expand(*batch, num).gather(-1, idx.expand(batch).unsqueeze(-1))
    return _exact(-torch.log(picked.squeeze(-1)), base)


def latent_mutual_information(
    encoder: Callable[[Tensor], Distribution] | Distribution,
    x: Tensor,
    *,
    num_samples: int = 1,
    base: float | None = None,
) -> Estimate:
    """Mutual information ``I_q(x; z)`` between data and latent under an encoder, by minibatch.

    Under the encoder's joint ``q(x, z) = p_data(x) q(z | x)``, with aggregate posterior
    ``q(z) = E_{p_data}[q(z | x)]``,

        ``I_q(x; z) = E_x E_{q(z|x)}[log q(z | x)] - E_x E_{q(z|x)}[log q(z)]``.

    The estimator (Hoffman & Johnson 2016; as implemented by He et al. 2019) draws
    ``num_samples`` latents ``z_sn ~ q(z | x_n)`` for each point of the batch ``x_1..x_N`` and
    replaces ``q(z)`` by its batch average, computed with logsumexp:

        ``I ~ 1/(N S) sum_{n,s} [log q(z_sn | x_n) - log (1/N) sum_m q(z_sn | x_m)]``.

    Bias: every term is at most ``log N`` (the sum over ``m`` contains ``m = n``), so the
    estimate never exceeds ``log N`` and underestimates badly when ``I`` approaches it. For
    ``I << log N`` the bias is ``O(1/N)``: the self term ``m = n`` inflates the aggregate
    (biasing ``I`` down) while the log of the average of the other terms is biased down by
    Jensen's inequality (biasing ``I`` up). Use a large batch. ``stderr`` is the plug-in
    standard error over the ``N`` per-point terms (averaged over the ``S`` draws), which treats
    them as independent though they share the aggregate, and ignores the bias.

    Args:
        encoder: a callable ``x -> q(z | x)`` returning a Distribution with batch shape ``[N]``
            (e.g. ``Independent(Normal(loc, scale), 1)`` with event shape ``[L]``), or that
            Distribution itself (then ``x`` is only used for ``N``).
        x: the batch of data, ``[N, ...]``, ``N >= 2``.
        num_samples: latent draws ``S`` per data point.
        base: logarithm base of the result (``None``: nats; 2: bits).

    Returns:
        A scalar ``Estimate`` (``estimator="monte-carlo"``, ``num_samples=N``).

    Raises:
        ValueError: the encoder does not give a Distribution with batch shape ``[N]``;
            ``num_samples < 1``.

    References:
        Hoffman & Johnson, *ELBO surgery: yet another way to carve up the variational evidence
        lower bound*, NIPS Workshop on Advances in Approximate Bayesian Inference, 2016.
        He, Spokoyny, Neubig & Berg-Kirkpatrick, *Lagging inference networks and posterior
        collapse in variational autoencoders*, ICLR 2019 (arXiv:1901.05534).
    """
    check_count(num_samples, "num_samples", 1)
    with torch.no_grad():
        if isinstance(encoder, Distribution):
            q = encoder
        elif callable(encoder):
            q = encoder(x)
        else:
            raise ValueError(
                f"encoder must be a callable x -> Distribution or a Distribution; got "
                f"{type(encoder).__name__}"
            )
        n = len(x)
        if not isinstance(q, Distribution) or q.batch_shape != torch.Size([n]):
            got = tuple(q.batch_shape) if isinstance(q, Distribution) else type(q).__name__
            raise ValueError(
                f"encoder must give q(z | x) as a Distribution with batch shape [N] = [{n}] "
                f"(one factor per data point; put latent dims in the event shape, e.g. "
                f"Independent(Normal(loc, scale), 1)); got {got}"
            )
        if n < 2:
            raise ValueError(f"x must hold a batch of N >= 2 points; got N = {n}")
        z = q.sample((num_samples,))  # [S, N, *event]
        log_own = q.log_prob(z)  # [S, N]
        event_numel = max(1, math.prod(q.event_shape))
        rows = max(1, _BLOCK_BYTES // (num_samples * n * event_numel * z.element_size()))
        # log q(z_sn | x_m) for all m, one block of n at a time: [S, rows, 1, *event] against
        # the batch [N] broadcasts to [S, rows, N].
        log_agg = torch.cat(
            [
                torch.logsumexp(q.log_prob(z[:, i : i + rows].unsqueeze(2)), dim=-1)
                for i in range(0, n, rows)
            ],
            dim=1,
        ) - math.log(n)
        terms = (log_own - log_agg).mean(0)  # [N]
    return Estimate(
        value=terms.mean(),
        stderr=terms.std() / math.sqrt(n),
        estimator="monte-carlo",
        num_samples=n,
    ).to_base(base)
