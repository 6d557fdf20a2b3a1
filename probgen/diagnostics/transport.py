"""Optimal-transport distances between samples: Wasserstein (exact 1-D, sliced) and Fréchet.

* :func:`wasserstein`: ``W_p`` between two empirical distributions, exact in one dimension and
  sliced (averaged over random 1-D projections) in several;
* :func:`frechet_distance`: the squared 2-Wasserstein distance between Gaussian fits of two
  samples (the FID formula on features), or between two multivariate normals in closed form.

Values are in the data's units (squared units for the Fréchet distance); ``unit=""`` because
the package's units name information quantities only.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from probgen.diagnostics._base import Estimate, SampleLike, mc_mean
from probgen.diagnostics.two_sample import generator, sample_pair
from probgen.validation import check_count

__all__ = ["frechet_distance", "wasserstein"]

#: Elements per chunk of bootstrap moments (``[B, N, D]`` and ``[B, D, D]``); bounds memory.
_CHUNK_ELEMENTS = 2**24


def _wasserstein_pow_1d(u: Tensor, v: Tensor, p: float) -> Tensor:
    """``W_p^p`` between the empirical distributions of the rows of ``u [B, m]`` and ``v [B, n]``.

    ``W_p^p = int_0^1 |F^-1(s) - G^-1(s)|^p ds``: both quantile functions are steps, constant
    between consecutive levels of the merged grid ``{i/m} U {j/n}``. Levels are kept as the
    integers ``i n`` and ``j m`` (over ``m n``) so ties between the grids are exact.
    """
    m, n = u.shape[-1], v.shape[-1]
    u, v = u.sort(-1).values, v.sort(-1).values
    levels = torch.cat(
        [torch.arange(1, m + 1, device=u.device) * n, torch.arange(1, n + 1, device=u.device) * m]
    ).sort()[0]
    width = torch.diff(levels, prepend=levels.new_zeros(1)).to(u.dtype) / (m * n)
    # On (L_{k-1}, L_k] / (m n) the quantile index is ceil(s m) = ceil(L_k / n), and likewise.
    ix = torch.div(levels + n - 1, n, rounding_mode="floor") - 1
    iy = torch.div(levels + m - 1, m, rounding_mode="floor") - 1
    return (width * (u[..., ix] - v[..., iy]).abs().pow(p)).sum(-1)


def wasserstein(
    x: SampleLike,
    y: SampleLike,
    *,
    p: float = 1,
    num_projections: int = 256,
    seed: int | None = None,
) -> Estimate:
    """p-Wasserstein distance between the empirical distributions of two samples.

    One dimension (``D = 1``): exact, for any sample sizes ``m`` and ``n``, from the quantile
    functions, ``W_p^p = int_0^1 |F_x^-1(s) - F_y^-1(s)|^p ds`` summed over the intervals of the
    merged level grid ``{i/m} U {j/n}`` (for ``p = 1`` this is
    ``scipy.stats.wasserstein_distance``). Estimator ``"exact"``, ``stderr`` 0.

    Several dimensions: the sliced distance ``SW_p = (E_theta W_p^p(theta'x, theta'y))^(1/p)``
    over directions ``theta`` uniform on the unit sphere, estimated with ``num_projections``
    random directions (each 1-D term exact). ``stderr`` is the Monte Carlo error over
    directions, ``sd(W_p^p) / sqrt(L)`` carried through ``s -> s^(1/p)`` by the delta method; it
    leaves out the sampling variability of the data. Estimator ``"sliced"``. ``SW_p <= W_p``
    and it metrises the same weak convergence (Bonneel et al. 2015).

    Either way the distance is between the *empirical* distributions: with ``N`` draws from one
    distribution it is biased upward by about ``N^(-1/2)`` (in 1-D) relative to the population
    distance.

    Args:
        x: draws ``[m]`` or ``[m, D]`` (or :class:`Samples`).
        y: draws ``[n]`` or ``[n, D]``, same ``D``.
        p: order ``p >= 1``.
        num_projections: random directions (>= 2) for ``D > 1``; unused when ``D = 1``.
        seed: seeds the directions; ``None`` uses torch's global generator.

    Returns:
        :class:`Estimate` of ``W_p`` or ``SW_p`` in the data's units (``unit=""``),
        ``num_samples = m + n``.

    Raises:
        ValueError: bad samples (NaN, mismatched D), ``p < 1`` or ``num_projections < 2``.

    References:
        Rabin, Peyré, Delon & Bernot, "Wasserstein barycenter and its application to texture
        mixing", SSVM 2011. Bonneel, Rabin, Peyré & Pfister, "Sliced and Radon Wasserstein
        barycenters of measures", JMIV 51, 2015.
    """
    xs, ys = sample_pair(x, y)
    if not (isinstance(p, (int, float)) and 1 <= p < float("inf")):
        raise ValueError(f"p must be a finite number >= 1; got {p!r}")
    check_count(num_projections, "num_projections", 2)
    size = len(xs) + len(ys)
    if xs.shape[1] == 1:
        value = _wasserstein_pow_1d(xs.T, ys.T, p)[0] ** (1 / p)
        return Estimate(value, torch.zeros_like(value), "exact", unit="", num_samples=size)
    gen = generator(seed, xs.device)
    theta = torch.randn(
        num_projections, xs.shape[1], generator=gen, dtype=xs.dtype, device=xs.device
    )
    theta = theta / theta.norm(dim=-1, keepdim=True)
    mean, se = mc_mean(_wasserstein_pow_1d(theta @ xs.T, theta @ ys.T, p))
    value = mean ** (1 / p)
    # d(s^(1/p))/ds = s^(1/p - 1) / p; s = 0 means every projected distance is 0 (se 0 too).
    slope = torch.where(mean > 0, value / (p * mean.clamp_min(torch.finfo(mean.dtype).tiny)), 0)
    return Estimate(value, (slope * se).detach(), "sliced", unit="", num_samples=size)


def _sqrtm_psd(s: Tensor) -> Tensor:
    """Symmetric square root of (batched) PSD matrices; negative rounding eigenvalues -> 0."""
    lam, vec = torch.linalg.eigh(s)
    return (vec * lam.clamp_min(0).sqrt().unsqueeze(-2)) @ vec.mT


def _gaussian_w2_sq(mu1: Tensor, s1: Tensor, mu2: Tensor, s2: Tensor) -> Tensor:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)`` in float64, clamped >= 0."""
    dtype = mu1.dtype
    mu1, s1, mu2, s2 = (t.to(torch.float64) for t in (mu1, s1, mu2, s2))
    root = _sqrtm_psd(s1)
    middle = root @ s2 @ root
    # Tr((S1 S2)^1/2) = sum of sqrt eigenvalues of the similar, symmetric S1^1/2 S2 S1^1/2.
    cross = torch.linalg.eigvalsh(0.5 * (middle + middle.mT)).clamp_min(0).sqrt().sum(-1)
    trace = s1.diagonal(dim1=-2, dim2=-1).sum(-1) + s2.diagonal(dim1=-2, dim2=-1).sum(-1)
    value = (mu1 - mu2).square().sum(-1) + trace - 2 * cross
    return value.clamp_min(0).to(dtype)


def _moments(z: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance (divisor N - 1, as ``numpy.cov``) of ``z [N, D]``."""
    mu = z.mean(0)
    c = z - mu
    return mu, c.T @ c / (len(z) - 1)


def _bootstrap_moments(z: Tensor, b: int, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Means ``[b, D]`` and covariances ``[b, D, D]`` of ``b`` resamples, via resampling counts."""
    n = len(z)
    mu = z.mean(0)
    c = z - mu  # moments about the full-sample mean lose less to cancellation
    idx = torch.randint(n, (b, n), generator=gen, device=z.device)
    counts = torch.zeros(b, n, dtype=z.dtype, device=z.device).scatter_add_(
        1, idx, torch.ones(b, n, dtype=z.dtype, device=z.device)
    )
    shift = counts @ c / n
    second = (counts.unsqueeze(-1) * c).mT @ c
    cov = (second - n * shift.unsqueeze(-1) * shift.unsqueeze(-2)) / (n - 1)
    return mu + shift, cov


def frechet_distance(
    x: SampleLike | MultivariateNormal,
    y: SampleLike | MultivariateNormal,
    *,
    bootstrap: int = 0,
    seed: int | None = None,
) -> Estimate:
    """Fréchet distance: squared 2-Wasserstein distance between Gaussians (the FID formula).

    ``FD = ||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2))``, where
    ``Tr((S_x S_y)^(1/2))`` is the sum of the square roots of the (clamped non-negative)
    eigenvalues of the symmetric ``S_x^(1/2) S_y S_x^(1/2)`` (``torch.linalg.eigh``, float64
    internally; the result is in the input dtype). It is ``W_2^2`` between ``N(mu_x, S_x)`` and
    ``N(mu_y, S_y)``, not between the sampled distributions themselves.

    Two :class:`~torch.distributions.MultivariateNormal` give the closed form (estimator
    ``"analytic"``, ``stderr`` 0, their broadcast batch shape). Two samples give the plug-in
    estimate from their means and unbiased covariances (``N - 1``, as pytorch-fid; estimator
    ``"plug-in"``). The plug-in estimate is biased upward, roughly by ``O(D / N)``, so values
    computed with different ``N`` are not comparable (Chong & Forsyth 2020). Its ``stderr`` is
    the sd of ``bootstrap`` resampled estimates (both samples resampled with replacement); with
    ``bootstrap=0`` (default) no standard error is computed and ``stderr`` is 0.

    Args:
        x: draws ``[m]`` or ``[m, D]`` (or :class:`Samples`), at least 2; or a
            ``MultivariateNormal``.
        y: draws ``[n]`` or ``[n, D]``, at least 2, same ``D``; or a ``MultivariateNormal``
            (when ``x`` is one).
        bootstrap: number of bootstrap resamples for ``stderr`` (samples only; each costs two
            ``D x D`` eigendecompositions).
        seed: seeds the bootstrap; ``None`` uses torch's global generator.

    Returns:
        :class:`Estimate` of ``FD`` in squared data units (``unit=""``).

    Raises:
        ValueError: a sample mixed with a distribution, different event shapes or D, fewer than
            2 draws (a covariance needs 2), NaN draws, or ``bootstrap`` negative or 1.

    References:
        Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter, "GANs trained by a two time-scale
        update rule converge to a local Nash equilibrium", NeurIPS 2017, arXiv:1706.08500.
        Chong & Forsyth, "Effectively unbiased FID and Inception Score and where to find them",
        CVPR 2020, arXiv:1911.07023.
    """
    if isinstance(x, MultivariateNormal) and isinstance(y, MultivariateNormal):
        if x.event_shape != y.event_shape:
            raise ValueError(
                f"x and y have different event shapes: {tuple(x.event_shape)} vs "
                f"{tuple(y.event_shape)}"
            )
        value = _gaussian_w2_sq(x.loc, x.covariance_matrix, y.loc, y.covariance_matrix)
        return Estimate(value, torch.zeros_like(value), "analytic", unit="")
    if isinstance(x, MultivariateNormal) or isinstance(y, MultivariateNormal):
        raise ValueError(
            "x and y must both be samples or both be MultivariateNormal; got "
            f"{type(x).__name__} and {type(y).__name__}"
        )
    if not isinstance(bootstrap, int) or bootstrap < 0 or bootstrap == 1:
        raise ValueError(f"bootstrap must be 0 or an integer >= 2; got {bootstrap!r}")
    xs, ys = sample_pair(x, y, min_draws=2)
    value = _gaussian_w2_sq(*_moments(xs), *_moments(ys))
    stderr = torch.zeros_like(value)
    if bootstrap:
        gen = generator(seed, xs.device)
        d = xs.shape[1]
        chunk = max(1, _CHUNK_ELEMENTS // (max(len(xs), len(ys)) * d + d * d))
        reps = []
        with torch.no_grad():
            for start in range(0, bootstrap, chunk):
                b = min(chunk, bootstrap - start)
                xb, yb = _bootstrap_moments(xs, b, gen), _bootstrap_moments(ys, b, gen)
                reps.append(_gaussian_w2_sq(*xb, *yb))
        stderr = torch.cat(reps).std()
    return Estimate(value, stderr, "plug-in", unit="", num_samples=len(xs) + len(ys))
