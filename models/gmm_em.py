r"""Closed-form EM numerics for Gaussian mixtures, in vectorised torch.

Semantics follow scikit-learn's ``GaussianMixture`` (same M-step and ``reg_covar``
handling, same parameter shapes); the arithmetic is reorganised so that one EM iteration
is two GEMMs plus a few elementwise passes over ``[N, K]``, with no per-component loop.

Exponential-family view. ``log N(x | mu_k, Sigma_k) = eta_k . phi(x) - A(eta_k)`` with
statistics ``phi(x) = [x, upper triangle of x x^T]``, natural parameters
``eta_k = [P_k mu_k, -P_k,ii / 2, -P_k,ij (i < j)]`` (``P_k = Sigma_k^-1``; an off-diagonal
product appears once in ``phi`` but twice in ``x^T P x``) and log-normaliser
``A(eta_k) = (mu_k^T P_k mu_k + D log 2 pi + log|Sigma_k|) / 2``. With a leading constant
feature whose coefficient is ``log w_k - A(eta_k)``, the E-step's weighted log-densities are
the single product ``Phi @ Eta`` ([N, F] x [F, K], ``Phi = [1, phi(X)]``), and the M-step's
sufficient statistics ``N_k, sum_n r_nk x_n, sum_n r_nk x_n x_n^T`` are the columns of
``R^T @ Phi``. ``Phi`` depends on the data only: :func:`prepare` builds it once for all
restarts and iterations. ``diag`` uses ``phi = [x, x**2]``, ``spherical`` ``[x, |x|^2]``;
``tied`` shares ``full``'s features, and its M-step needs only ``[1, x]`` because
``sum_n x_n x_n^T`` is a data constant. The direct alternative (Mahalanobis distances via
``[N, K, D]`` whitened differences) measured ~8x slower to form the ``[N, K]``
log-density matrix (117 vs 14 ms, N=2e5, D=8, K=16, 2 cores).

Accuracy. ``Sigma_k = S_k / N_k - mu_k mu_k^T`` and ``eta . phi - A`` are one-pass formulas
that subtract terms of size ``|x|^2`` to get results of size ``sigma^2``. All features are
therefore built from ``x - mean(X)``, which removes the common offset (sklearn's own
diag/spherical/tied M-steps skip this and lose ~8 digits on data offset by 1e4). What
remains is an error ~ ``eps |mu_k - mean(X)|^2 / sigma_k^2`` (1e-14 for a cluster 10
standard deviations out). Measured on a tight cluster far from the data mean, with ratio
``|mu_k - mean(X)|^2 / sigma_k^2`` = 1e8 (1e10): log-density abs. error 5e-9 (1e-6),
covariance rel. error 4e-8 (2e-6); sklearn's two-pass full covariance has no such term.
So only extreme cases (e.g. collapsed components held up by ``reg_covar`` in unscaled
data) lose meaningful precision; standardise such data first.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

_NOT_PD_MESSAGE = (
    "Fitting the mixture model failed because some components have an ill-defined "
    "(not positive definite) covariance, e.g. from singleton or collapsed components. "
    "Try fewer components, a larger reg_covar, or rescaling the data."
)


class GMMParams(NamedTuple):
    """Gaussian-mixture parameters, in scikit-learn's shapes.

    Attributes:
        weights: Mixing weights ``[K]``, summing to one.
        means: Component means ``[K, D]``.
        covariances: ``full`` ``[K, D, D]``, ``tied`` ``[D, D]``, ``diag`` ``[K, D]``,
            ``spherical`` ``[K]``.
    """

    weights: Tensor
    means: Tensor
    covariances: Tensor


class Prepared(NamedTuple):
    """Data-dependent precomputation shared by all restarts and iterations.

    Attributes:
        x: The data ``[N, D]`` as given.
        covariance_type: One of :data:`COVARIANCE_TYPES`.
        shift: The data mean ``[D]``; all features use centred data ``x - shift``.
        feats: ``Phi = [1, xc, quadratic features of xc]`` ``[N, F]``.
        scatter: ``tied`` only: ``sum_n xc_n xc_n^T`` ``[D, D]``; otherwise ``None``.
        workspace: A scratch ``[N, K]`` buffer reused by every E- and M-step (never
            returned). Fresh multi-megabyte temporaries cost page faults: an iteration
            measured 49 ms with them vs 36 ms reusing (N=2e5, K=16, 2 cores). The price:
            one ``Prepared`` must not be used by two threads at once.
    """

    x: Tensor
    covariance_type: str
    shift: Tensor
    feats: Tensor
    scatter: Tensor | None
    workspace: dict[str, Tensor]


def _check_covariance_type(covariance_type: str) -> None:
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}"
        )


def _features(xc: Tensor, covariance_type: str) -> Tensor:
    """Return ``[1, xc, q(xc)]`` with ``q`` the quadratic statistics of the type."""
    n, d = xc.shape
    if covariance_type in ("full", "tied"):
        rows, cols = torch.triu_indices(d, d, device=xc.device)
    width = {"diag": d, "spherical": 1}.get(covariance_type, d * (d + 1) // 2)
    feats = torch.empty(n, 1 + d + width, dtype=xc.dtype, device=xc.device)
    feats[:, 0] = 1.0
    feats[:, 1 : 1 + d] = xc
    quad = feats[:, 1 + d :]
    if covariance_type in ("full", "tied"):
        torch.mul(xc[:, rows], xc[:, cols], out=quad)
    elif covariance_type == "diag":
        torch.mul(xc, xc, out=quad)
    else:
        torch.sum(xc * xc, dim=1, keepdim=True, out=quad)
    return feats


def prepare(x: Tensor, covariance_type: str) -> Prepared:
    """Centre the data and build the feature matrix ``Phi`` once.

    Args:
        x: Data ``[N, D]``; dtype and device of every later result follow it.
        covariance_type: One of :data:`COVARIANCE_TYPES`.

    Returns:
        The :class:`Prepared` bundle used by :func:`e_step`, :func:`m_step` and
        :func:`initialize`.
    """
    _check_covariance_type(covariance_type)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [N, D], got shape {tuple(x.shape)}")
    shift = x.mean(0)
    xc = x - shift
    scatter = xc.T @ xc if covariance_type == "tied" else None
    feats = _features(xc, covariance_type)
    return Prepared(x, covariance_type, shift, feats, scatter, {})


def _exp_into(x: Tensor, out: Tensor) -> Tensor:
    """``exp(max(x, log(tiny) + 1))`` written into ``out``.

    Most log-responsibilities are hugely negative (-1e3 .. -1e6), and torch's vectorised
    exp falls off its fast path (5-40x slower, measured) for any argument whose result
    is subnormal or zero. Clamping first raises such results from [0, 6e-308) to
    ``e * tiny`` ~ 6e-308. That is invisible: in the E-step they are added to a term
    equal to 1, in the M-step ``N * 6e-308`` is ~290 orders of magnitude below the
    ``10 eps`` that sklearn adds to every ``N_k`` (the tests compare with sklearn).
    """
    floor = math.log(torch.finfo(x.dtype).tiny) + 1.0
    return torch.clamp(x, min=floor, out=out).exp_()


def _scratch(prep: Prepared, like: Tensor) -> Tensor:
    """A reusable buffer shaped like ``like`` (contents undefined)."""
    buf = prep.workspace.get("resp")
    if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
        buf = prep.workspace["resp"] = torch.empty_like(like)
    return buf


def _cholesky(cov: Tensor) -> Tensor:
    chol, info = torch.linalg.cholesky_ex(cov)
    # One host sync per E-step: the price of a clear error instead of NaNs.
    if bool((info != 0).any()):
        raise ValueError(_NOT_PD_MESSAGE)
    return chol


def _natural_params(params: GMMParams, covariance_type: str, shift: Tensor) -> Tensor:
    r"""Return ``Eta`` ``[F, K]`` so that ``Phi @ Eta = log w_k + log N(x | mu_k, Sigma_k)``.

    Row 0 is ``log w_k - (D log 2 pi + m_k^T P_k m_k) / 2 - log|Sigma_k| / 2`` with
    ``m_k = mu_k - shift``, then ``P_k m_k``, then the quadratic coefficients.
    """
    weights, means, cov = params
    k, d = means.shape
    m = means - shift
    if covariance_type in ("full", "tied"):
        chol = _cholesky(cov)  # L L^T = Sigma; one [D, D] for tied, broadcast below
        eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
        linv = torch.linalg.solve_triangular(chol, eye, upper=False)
        prec = (linv.mT @ linv).expand(k, d, d)  # P = L^-T L^-1
        lin = (prec @ m.unsqueeze(-1)).squeeze(-1)
        # m^T P m = |L^-1 m|^2 is a sum of squares: non-negative, no cancellation.
        maha = (linv @ m.unsqueeze(-1)).squeeze(-1).square().sum(-1)
        half_logdet = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1).expand(k)
        rows, cols = torch.triu_indices(d, d, device=cov.device)
        # Off-diagonal x_i x_j appears once in phi but twice in x^T P x.
        quad = prec[:, rows, cols] * torch.where(rows == cols, -0.5, -1.0).to(cov.dtype)
    else:
        if bool((cov <= 0).any()):
            raise ValueError(_NOT_PD_MESSAGE)
        if covariance_type == "diag":
            prec = cov.reciprocal()  # [K, D]
            lin, maha = prec * m, (m * m * prec).sum(1)
            half_logdet, quad = 0.5 * cov.log().sum(1), -0.5 * prec
        else:
            prec = cov.reciprocal()  # [K]
            lin, maha = prec[:, None] * m, (m * m).sum(1) * prec
            half_logdet, quad = 0.5 * d * cov.log(), -0.5 * prec[:, None]
    const = weights.log() - 0.5 * (d * math.log(2 * math.pi) + maha) - half_logdet
    return torch.cat([const[:, None], lin, quad], dim=1).T


def component_log_prob(x: Tensor, params: GMMParams, covariance_type: str) -> Tensor:
    """Return ``log N(x_n | mu_k, Sigma_k)`` ``[N, K]`` (mixing weights not included).

    Uses the same feature GEMM as :func:`e_step`, centred at the mean of ``x``.

    Args:
        x: Points ``[N, D]``.
        params: Mixture parameters (``weights`` is ignored).
        covariance_type: One of :data:`COVARIANCE_TYPES`.
    """
    _check_covariance_type(covariance_type)
    shift = x.mean(0)
    ones = torch.ones_like(params.weights)
    eta = _natural_params(params._replace(weights=ones), covariance_type, shift)
    return _features(x - shift, covariance_type) @ eta


def e_step(prep: Prepared, params: GMMParams) -> tuple[Tensor, Tensor]:
    r"""E-step: log-responsibilities and the mean log-likelihood.

    ``l_nk = log w_k + log N(x_n | mu_k, Sigma_k) = (Phi @ Eta)_nk``,
    ``log p(x_n) = logsumexp_k l_nk``, ``log r_nk = l_nk - log p(x_n)``.

    Returns:
        ``(log_resp [N, K], mean_n log p(x_n))``, the latter a 0-dim tensor (no sync).
    """
    weighted = prep.feats @ _natural_params(params, prep.covariance_type, prep.shift)
    # logsumexp by hand so that its [N, K] temporary is the reused scratch buffer.
    top = weighted.amax(1, keepdim=True)
    top = torch.where(top.isfinite(), top, 0.0)  # a row of -inf stays -inf, not NaN
    scratch = _scratch(prep, weighted)
    shifted = _exp_into(torch.sub(weighted, top, out=scratch), scratch)
    log_norm = shifted.sum(1, keepdim=True).log_().add_(top)
    return weighted.sub_(log_norm), log_norm.mean()


def _gram(resp: Tensor, feats: Tensor) -> Tensor:
    """``resp^T @ feats`` ``[K, F]``, split over the long N axis on multi-threaded CPUs.

    MKL runs this tall-skinny GEMM (tiny output, reduction over N) on one thread; as a
    batched GEMM over one chunk of rows per thread it uses them all (2 cores: 16 -> 9 ms
    for N=2e5, F=45, K=16). Chunk partial sums also round slightly better.
    """
    n = resp.shape[0]
    chunks = torch.get_num_threads() if resp.device.type == "cpu" else 1
    if chunks < 2 or n < 8192 * chunks:
        return resp.T @ feats
    step = n // chunks
    main = chunks * step
    parts = torch.bmm(
        resp[:main].reshape(chunks, step, -1).mT, feats[:main].reshape(chunks, step, -1)
    ).sum(0)
    return parts + resp[main:].T @ feats[main:]


def _m_step_resp(prep: Prepared, resp: Tensor, reg_covar: float) -> GMMParams:
    """M-step from responsibilities ``resp`` ``[N, K]`` (see :func:`m_step`)."""
    ctype, d = prep.covariance_type, prep.shift.shape[0]
    # tied needs only [1, x]: its second moment is the precomputed data scatter.
    feats = prep.feats[:, : 1 + d] if ctype == "tied" else prep.feats
    stats = _gram(resp, feats)  # [K, F]: N_k, sum r x, sum r q(x) in one GEMM
    nk = stats[:, 0] + 10 * torch.finfo(resp.dtype).eps  # as sklearn: no 0/0
    mean = stats[:, 1 : 1 + d] / nk[:, None]
    second = stats[:, 1 + d :] / nk[:, None]
    if ctype == "full":
        rows, cols = torch.triu_indices(d, d, device=resp.device)
        cov = torch.empty(nk.shape[0], d, d, dtype=resp.dtype, device=resp.device)
        cov[:, rows, cols] = second
        cov[:, cols, rows] = second
        cov -= mean[:, :, None] * mean[:, None, :]
        cov.diagonal(dim1=-2, dim2=-1).add_(reg_covar)
    elif ctype == "tied":
        cov = (prep.scatter - (nk[:, None] * mean).T @ mean) / nk.sum()
        cov.diagonal().add_(reg_covar)
    elif ctype == "diag":
        cov = second - mean * mean + reg_covar
    else:
        cov = (second[:, 0] - (mean * mean).sum(1)) / d + reg_covar
    return GMMParams(nk / nk.sum(), mean + prep.shift, cov)


def m_step(prep: Prepared, log_resp: Tensor, reg_covar: float) -> GMMParams:
    r"""M-step, as scikit-learn's ``_estimate_gaussian_parameters``.

    With ``r_nk = exp(log_resp)`` and centred data ``xc``:
    ``N_k = sum_n r_nk + 10 eps``, ``w_k = N_k / sum_j N_j``,
    ``mu_k = sum_n r_nk xc_n / N_k (+ shift)``, and

    * full: ``Sigma_k = sum_n r_nk xc_n xc_n^T / N_k - mu_k mu_k^T + reg I``;
    * tied: ``Sigma = (sum_n xc_n xc_n^T - sum_k N_k mu_k mu_k^T) / sum_k N_k + reg I``;
    * diag: ``sigma_kd^2 = sum_n r_nk xc_nd^2 / N_k - mu_kd^2 + reg``;
    * spherical: ``sigma_k^2 = mean_d(sigma_kd^2)`` (diag formula incl. ``reg``).

    (``mu_k`` in centred coordinates inside the covariance formulas.)
    """
    return _m_step_resp(prep, _exp_into(log_resp, _scratch(prep, log_resp)), reg_covar)


def _sq_dist(a: Tensor, x: Tensor, x_sq: Tensor) -> Tensor:
    """``|a_i - x_n|^2`` ``[A, N]`` via one GEMM (x centred, so little cancellation)."""
    return ((a * a).sum(1)[:, None] - 2 * (a @ x.T) + x_sq[None, :]).clamp_min_(0)


def _nearest(xc: Tensor, centres: Tensor) -> Tensor:
    # |x|^2 is constant per row, so it does not change the argmin.
    return ((centres * centres).sum(1)[None, :] - 2 * (xc @ centres.T)).argmin(1)


def kmeans_plusplus(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007), as scikit-learn's.

    The first seed is uniform; each further seed is the best, by resulting potential
    ``sum_n min_c |x_n - c|^2``, of ``2 + floor(log k)`` candidates drawn with
    probability proportional to ``min_c |x_n - c|^2``.

    Args:
        x: Data ``[N, D]``.
        k: Number of seeds.
        generator: Source of randomness (on any device; draws are moved to ``x``'s).

    Returns:
        ``[K, D]`` seeds, distinct rows of ``x``.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    xc = x - x.mean(0)
    x_sq = (xc * xc).sum(1)
    n_trials = 2 + int(math.log(k))
    gdev = generator.device
    chosen = torch.randint(n, (1,), generator=generator, device=gdev).to(x.device)
    closest = _sq_dist(xc[chosen], xc, x_sq)[0]
    closest[chosen] = 0  # exact zero: a seed can never be drawn again
    picks = [chosen]
    for _ in range(1, k):
        u = torch.rand(n_trials, generator=generator, device=gdev, dtype=x.dtype)
        cum = torch.cumsum(closest, 0)
        cand = torch.searchsorted(cum, u.to(x.device) * cum[-1]).clamp_max_(n - 1)
        dist = torch.minimum(closest[None, :], _sq_dist(xc[cand], xc, x_sq))
        best = dist.sum(1).argmin()
        chosen = cand[best].reshape(1)
        closest = dist[best]
        closest[chosen] = 0
        picks.append(chosen)
    return x[torch.cat(picks)]


def _lloyd(xc: Tensor, centres: Tensor, max_iter: int) -> Tensor:
    """Lloyd iterations; stop like sklearn (labels stable or shift^2 <= 1e-4 mean var)."""
    k = centres.shape[0]
    tol = 1e-4 * xc.var(0).mean()
    labels = None
    for _ in range(max_iter):
        new_labels = _nearest(xc, centres)
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        counts = torch.bincount(labels, minlength=k).to(xc.dtype)[:, None]
        sums = torch.zeros_like(centres).index_add_(0, labels, xc)
        # An empty cluster keeps its previous centre.
        new = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        shift_sq = (new - centres).square().sum()
        centres = new
        if shift_sq <= tol:
            break
    return centres


def initialize(
    prep: Prepared,
    k: int,
    reg_covar: float,
    generator: torch.Generator,
    means_init: Tensor | None = None,
    kmeans_iter: int = 100,
) -> GMMParams:
    """Initial parameters as sklearn's ``init_params="kmeans"``.

    k-means++ seeds refined by ``kmeans_iter`` Lloyd iterations (both skipped when
    ``means_init`` is given), hard assignment of every point to its nearest centre, then
    :func:`m_step` on the one-hot responsibilities. With ``means_init`` the returned means
    are exactly ``means_init`` (as sklearn overrides them); weights and covariances come
    from the hard assignment.
    """
    d = prep.shift.shape[0]
    xc = prep.feats[:, 1 : 1 + d].contiguous()
    if means_init is None:
        centres = _lloyd(xc, kmeans_plusplus(xc, k, generator), kmeans_iter)
    else:
        means_init = means_init.to(dtype=xc.dtype, device=xc.device)
        if means_init.shape != (k, d):
            raise ValueError(f"means_init must have shape {(k, d)}, got {means_init.shape}")
        centres = means_init - prep.shift
    resp = torch.nn.functional.one_hot(_nearest(xc, centres), k).to(xc.dtype)
    params = _m_step_resp(prep, resp, reg_covar)
    if means_init is not None:
        params = params._replace(means=means_init.clone())
    return params


def n_parameters(k: int, d: int, covariance_type: str) -> int:
    """Free parameters, as sklearn's ``GaussianMixture._n_parameters`` (for BIC / AIC).

    ``(k - 1)`` weights ``+ k d`` means ``+`` covariance parameters: full ``k d (d+1)/2``,
    tied ``d (d+1)/2``, diag ``k d``, spherical ``k``.
    """
    _check_covariance_type(covariance_type)
    cov = {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
    }[covariance_type]
    return cov + k * d + k - 1
