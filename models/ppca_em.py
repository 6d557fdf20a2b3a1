r"""Closed-form numerics of probabilistic PCA and factor analysis, in batched torch.

The model is ``x = W z + mu + eps`` with ``z ~ N(0, I_q)`` and ``eps ~ N(0, Psi)``, ``Psi =
sigma^2 I`` (PPCA) or ``diag(psi)`` (factor analysis), so ``x ~ N(mu, C)`` with ``C = W W^T +
Psi``. Every quantity here goes through the ``q x q`` *capacitance* ``K = I + W^T Psi^-1 W``
(Woodbury identity and matrix determinant lemma), never through a ``D x D`` inverse:

    C^-1 = Psi^-1 - Psi^-1 W K^-1 W^T Psi^-1,      log|C| = log|Psi| + log|K|,
    p(z | x) = N(K^-1 W^T Psi^-1 (x - mu), K^-1).

For ``Psi = sigma^2 I`` the posterior is Tipping & Bishop's ``N(M^-1 W^T (x - mu), sigma^2 M^-1)``
with ``M = W^T W + sigma^2 I = sigma^2 K``.

EM needs the data only through its mean and biased covariance ``S = (1/N) sum_n (x_n - xbar)(x_n
- xbar)^T`` (:func:`prepare`); an iteration then costs ``O(D^2 q)`` whatever ``N``.

References:
    Tipping & Bishop, "Probabilistic principal component analysis", JRSS B 61(3), 1999.
    Rubin & Thayer, "EM algorithms for ML factor analysis", Psychometrika 47(1), 1982.
    Bishop, "Pattern Recognition and Machine Learning", Springer 2006, section 12.2.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "NOISE_TYPES",
    "Expectations",
    "Moments",
    "PPCAParams",
    "closed_form",
    "e_step",
    "initialize",
    "m_step",
    "mean_log_likelihood",
    "posterior",
]

NOISE_TYPES = ("isotropic", "diagonal")
#: Noise variances are kept above this fraction of the mean data variance: a factor analysis
#: optimum may drive some ``psi_d`` to zero (a Heywood case), where ``C`` becomes singular.
NOISE_FLOOR = 1e-12


class Moments(NamedTuple):
    """Data statistics: ``N``, mean ``[D]`` and biased (ML) covariance ``[D, D]``."""

    n: int
    mean: Tensor
    cov: Tensor


class PPCAParams(NamedTuple):
    """Loadings ``W`` ``[D, q]``, mean ``mu`` ``[D]`` and noise variances ``psi`` ``[D]``.

    ``psi`` is stored per feature for both noise types (constant for PPCA).
    """

    loadings: Tensor
    loc: Tensor
    noise: Tensor


class Expectations(NamedTuple):
    """The E-step's posterior moments of ``z``, averaged over the data.

    Attributes:
        cross: ``(1/N) sum_n (x_n - mu) E[z_n]^T`` ``[D, q]``.
        second: ``(1/N) sum_n E[z_n z_n^T]`` ``[q, q]``.
    """

    cross: Tensor
    second: Tensor


def prepare(x: Tensor) -> Moments:
    """Mean and biased (maximum-likelihood) covariance of ``x`` ``[N, D]``."""
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [N, D], got shape {tuple(x.shape)}")
    mean = x.mean(0)
    xc = x - mean
    return Moments(x.shape[0], mean, xc.T @ xc / x.shape[0])


def _floor(m: Moments) -> Tensor:
    return NOISE_FLOOR * m.cov.diagonal().mean().clamp_min(torch.finfo(m.cov.dtype).tiny)


def _capacitance(loadings: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """``(chol(K), Psi^-1 W)`` with ``K = I + W^T Psi^-1 W``; batched over leading dims."""
    scaled = loadings / noise.unsqueeze(-1)
    q = loadings.shape[-1]
    eye = torch.eye(q, dtype=loadings.dtype, device=loadings.device)
    return torch.linalg.cholesky(eye + loadings.mT @ scaled), scaled


def posterior(x: Tensor, params: PPCAParams) -> tuple[Tensor, Tensor]:
    """``p(z_n | x_n)``: means ``[*B, N, q]`` and the shared Cholesky factor ``[*B, q, q]``.

    ``E[z | x] = K^-1 W^T Psi^-1 (x - mu)``, ``Cov[z | x] = K^-1`` (Bishop 2006, eq. 12.42).
    """
    chol, scaled = _capacitance(params.loadings, params.noise)
    proj = (x - params.loc.unsqueeze(-2)) @ scaled  # [*B, N, q]: W^T Psi^-1 (x - mu) per row
    mean = torch.cholesky_solve(proj.mT, chol).mT
    cov = torch.cholesky_inverse(chol)
    return mean, torch.linalg.cholesky(cov)


def mean_log_likelihood(m: Moments, params: PPCAParams) -> Tensor:
    r"""``(1/N) sum_n log N(x_n | mu, C) = -(D log 2 pi + log|C| + tr(C^-1 S'))/2``.

    ``S' = S + (xbar - mu)(xbar - mu)^T`` is the scatter about ``mu``. Returns a 0-dim tensor.
    """
    loadings, loc, noise = params
    chol, scaled = _capacitance(loadings, noise)
    r = m.mean - loc
    scatter = m.cov + r[:, None] * r[None, :]
    logdet = noise.log().sum() + 2 * chol.diagonal().log().sum()
    inner = scaled.T @ scatter @ scaled  # W^T Psi^-1 S' Psi^-1 W
    trace = (scatter.diagonal() / noise).sum() - torch.cholesky_solve(inner, chol).trace()
    d = loc.shape[-1]
    return -0.5 * (d * math.log(2 * math.pi) + logdet + trace)


def e_step(m: Moments, params: PPCAParams) -> tuple[Expectations, Tensor]:
    """Posterior moments of ``z`` and the mean log-likelihood at ``params``.

    With ``beta = K^-1 W^T Psi^-1`` (so ``E[z_n] = beta (x_n - mu)``):
    ``cross = S beta^T`` and ``second = K^-1 + beta S beta^T``. These use ``S``, the scatter about
    the data mean, so ``params.loc`` must be ``xbar``, its maximum-likelihood value
    (:func:`initialize` sets it and :func:`m_step` keeps it).
    """
    chol, scaled = _capacitance(params.loadings, params.noise)
    beta = torch.cholesky_solve(scaled.T, chol)  # [q, D]
    cross = m.cov @ beta.T
    second = torch.cholesky_inverse(chol) + beta @ cross
    return Expectations(cross, second), mean_log_likelihood(m, params)


def m_step(m: Moments, expectations: Expectations, noise_type: str) -> PPCAParams:
    r"""Maximises the expected complete-data log-likelihood.

    ``W = cross second^-1``; ``psi = diag(S - W cross^T)`` for factor analysis (Rubin & Thayer
    1982; Bishop 2006, eqs. 12.69-12.70) and ``sigma^2 = tr(S - W cross^T) / D`` for PPCA
    (Tipping & Bishop 1999, eqs. 27-28, written in ``S``); ``mu = xbar``.
    """
    cross, second = expectations
    loadings = torch.cholesky_solve(cross.T, torch.linalg.cholesky(second)).T
    noise = m.cov.diagonal() - (loadings * cross).sum(-1)
    if noise_type == "isotropic":
        noise = noise.mean().expand_as(noise)
    return PPCAParams(loadings, m.mean, noise.clamp_min(_floor(m)))


def closed_form(m: Moments, q: int) -> PPCAParams:
    """The maximum-likelihood PPCA solution (Tipping & Bishop 1999, eqs. 7-8).

    With ``S = U diag(lambda) U^T`` (eigenvalues descending): ``sigma^2 = mean(lambda_{q+1..D})``
    and ``W = U_q (Lambda_q - sigma^2 I)^{1/2}`` (the rotation ``R = I``).
    """
    evals, evecs = torch.linalg.eigh(m.cov)
    evals, evecs = evals.flip(-1), evecs.flip(-1)
    sigma2 = evals[q:].mean().clamp_min(_floor(m))
    loadings = evecs[:, :q] * (evals[:q] - sigma2).clamp_min(0).sqrt()
    return PPCAParams(loadings, m.mean, sigma2.expand(m.mean.shape))


def initialize(
    m: Moments, q: int, noise_type: str, init: str, generator: torch.Generator
) -> PPCAParams:
    """Starting point of EM and SVI.

    ``"pca"``: the closed-form PPCA solution (for factor analysis with ``psi = diag(S - W W^T)``,
    floored at the PPCA noise variance, so ``C`` keeps the data's variances).
    ``"random"``: ``W_dk ~ N(0, v / q)`` with ``v`` the mean data variance (so ``diag(W W^T)`` has
    the data's scale) and ``psi = diag(S)`` (factor analysis) or ``v`` (PPCA).
    """
    if init == "pca":
        start = closed_form(m, q)
        if noise_type == "diagonal":
            psi = m.cov.diagonal() - start.loadings.square().sum(-1)
            start = start._replace(noise=torch.maximum(psi, start.noise))
        return start
    var = m.cov.diagonal()
    v = var.mean()
    shape = (m.mean.shape[0], q)
    draw = torch.randn(shape, generator=generator, device=generator.device, dtype=m.cov.dtype)
    loadings = draw.to(m.cov.device) * (v / q).sqrt()
    noise = var if noise_type == "diagonal" else v.expand_as(var)
    return PPCAParams(loadings, m.mean, noise.clamp_min(_floor(m)))
