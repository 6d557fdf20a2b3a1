"""How a model uses its latent space: active units, KL per dimension, the ELBO split."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributions import (
    Distribution,
    Independent,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from probgen.diagnostics import Estimate
from probgen.diagnostics._base import mc_mean
from probgen.latent.codes import LatentModel, _check_model, encode
from probgen.validation import check_count, check_data


@dataclass(frozen=True)
class ActiveUnits:
    """Active latent units (Burda et al. 2016).

    Attributes:
        count: the number of units with ``variance > threshold``.
        variance: ``Var_x(E_q[z_u | x])`` per unit, ``[q]``.
        threshold: the activity threshold used.
    """

    count: int
    variance: Tensor
    threshold: float

    @property
    def active(self) -> Tensor:
        """Boolean mask ``[q]`` of the active units."""
        return self.variance > self.threshold


@dataclass(frozen=True)
class ElboSplit:
    """The ELBO split into reconstruction and KL, in nats per datum.

    Attributes:
        reconstruction: ``(1/N) sum_n E_q[log p(x_n | z)]`` (Monte Carlo).
        kl: ``(1/N) sum_n KL(q(z | x_n) || p(z))``, ``estimator`` ``"analytic"`` or
            ``"monte-carlo"``.
        elbo: ``reconstruction - kl``; its standard error accounts for their correlation when
            both are Monte Carlo.
        kl_per_dim: :func:`kl_per_dimension` ``[q]`` when the posterior's marginals are Normal,
            else None. It sums to ``kl`` only when the posterior is diagonal.
        num_samples: draws of ``z`` per datum.
    """

    reconstruction: Estimate
    kl: Estimate
    elbo: Estimate
    kl_per_dim: Tensor | None
    num_samples: int


# ---------------------------------------------------------------------- use of the latent space
@torch.no_grad()
def active_units(
    model: LatentModel, x: Tensor, threshold: float = 0.01, **context: Any
) -> ActiveUnits:
    """Counts the latent units the encoder uses (Burda et al. 2016, section 5.2).

    ``A_u = Var_x(E_{q(z|x)}[z_u])`` over the rows of ``x`` (the empirical variance, divisor
    ``N``), with ``E_q[z | x]`` from :func:`encode`; unit ``u`` is active if ``A_u > threshold``
    (Burda et al. use 0.01).

    Raises:
        TypeError: ``threshold`` is not a real number.
        ValueError: ``x`` is not ``[N, D]`` with ``N >= 2``; ``threshold`` negative or infinite.

    References:
        Burda, Grosse & Salakhutdinov, "Importance weighted autoencoders", arXiv:1509.00519.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a real number, got {type(threshold).__name__}")
    if not 0 <= threshold < math.inf:
        raise ValueError(f"threshold must be finite and >= 0, got {threshold}")
    codes = encode(model, x, **context)
    if codes.shape[0] < 2:
        raise ValueError(f"x must have at least 2 rows to measure a variance, got {codes.shape[0]}")
    variance = codes.var(0, correction=0)
    return ActiveUnits(int((variance > threshold).sum()), variance, float(threshold))


def _normal_marginals(d: Distribution) -> tuple[Normal, bool] | None:
    """``(Normal marginals of z, whether they factorise d)`` for Gaussian ``d``, else None."""
    if isinstance(d, Independent) and d.reinterpreted_batch_ndims == 1:
        if isinstance(d.base_dist, Normal):
            return d.base_dist, True
    if isinstance(d, MultivariateNormal | LowRankMultivariateNormal):
        return Normal(d.mean, d.variance.sqrt()), False
    return None


def _posterior_prior(
    model: LatentModel, x: Tensor, context: dict[str, Any]
) -> tuple[LatentModel, Tensor, Distribution, Distribution]:
    model = _check_model(model)
    x = check_data(x, "x", ndim=2)
    q = model.posterior(x, **context)
    if tuple(q.batch_shape) != (x.shape[0],) or tuple(q.event_shape) != (model.latent_dim,):
        raise ValueError(
            f"{type(model).__name__}.posterior(x) has batch {tuple(q.batch_shape)} and event "
            f"{tuple(q.event_shape)}; the protocol requires [N]={x.shape[0]} and "
            f"[q]={model.latent_dim}"
        )
    return model, x, q, model.latent_prior()


@torch.no_grad()
def kl_per_dimension(model: LatentModel, x: Tensor, **context: Any) -> Tensor:
    r"""``(1/N) sum_n KL(q(z_u | x_n) || p(z_u))`` for each unit ``u``, ``[q]``, in nats.

    Analytic for Normal marginals ``q(z_u | x) = N(m_u, s_u^2)``, ``p(z_u) = N(0, 1)``:
    ``0.5 (m_u^2 + s_u^2 - 1 - log s_u^2)`` (general ``N(a, b^2)`` priors likewise). A diagonal
    posterior (``Independent(Normal)``) factorises, so the values sum to the KL. For a
    ``MultivariateNormal`` posterior its marginals are used: their KLs sum to the joint KL only
    when the covariance is diagonal (the joint KL is :func:`elbo_split`'s ``kl``).

    Raises:
        TypeError: the posterior or prior has no Normal marginals (e.g. a flow posterior).

    References:
        Kingma & Welling, "Auto-encoding variational Bayes", arXiv:1312.6114 (appendix B).
    """
    model, x, q, p = _posterior_prior(model, x, context)
    q_marg, p_marg = _normal_marginals(q), _normal_marginals(p)
    for d, m, role in ((q, q_marg, "posterior"), (p, p_marg, "latent_prior")):
        if m is None:
            raise TypeError(
                f"kl_per_dimension needs Normal marginals; {type(model).__name__}.{role}() is "
                f"{type(d).__name__} (supported: Independent(Normal), MultivariateNormal, "
                "LowRankMultivariateNormal); use elbo_split for its Monte Carlo KL"
            )
    assert q_marg is not None and p_marg is not None
    return kl_divergence(q_marg[0], p_marg[0]).mean(0)


def _analytic_kl(q: Distribution, p: Distribution) -> Tensor | None:
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        pass
    # Torch has no KL between a MultivariateNormal and an Independent(Normal): a diagonal Normal
    # is the MultivariateNormal with diagonal covariance, for which the KL is registered.
    qm, pm = _normal_marginals(q), _normal_marginals(p)
    if qm is None or pm is None or not (qm[1] or pm[1]):
        return None
    if qm[1]:
        q = MultivariateNormal(qm[0].loc, scale_tril=torch.diag_embed(qm[0].scale))
    if pm[1]:
        p = MultivariateNormal(pm[0].loc, scale_tril=torch.diag_embed(pm[0].scale))
    return kl_divergence(q, p)


@torch.no_grad()
def elbo_split(
    model: LatentModel,
    x: Tensor,
    num_samples: int = 64,
    *,
    seed: int | None = None,
    analytic_kl: bool = True,
    **context: Any,
) -> ElboSplit:
    r"""The ELBO per datum split as ``E_q[log p(x | z)] - KL(q(z | x) || p(z))``.

    ``reconstruction`` averages ``log p(x_n | z_sn)`` over ``S = num_samples`` draws
    ``z_sn ~ q(z | x_n)``; ``kl`` is ``torch.distributions.kl_divergence`` when registered
    (MultivariateNormal vs diagonal Normal included) and ``analytic_kl``, else the Monte Carlo mean
    of ``log q(z_sn | x_n) - log p(z_sn)`` on the same draws. All values are means over the rows
    of ``x``; standard errors are over the ``S`` per-draw data means (zero for analytic terms).
    With the exact posterior (PPCA) ``elbo = log p(x)`` (Kingma & Welling 2014, eqs. 1-3).

    Args:
        model: a :class:`LatentModel`.
        x: data ``[N, D]``.
        num_samples: ``S >= 2``.
        seed: if given, the draws use this seed without changing torch's global random state.
        analytic_kl: use the closed-form KL when one exists.
        **context: passed to ``posterior`` and ``likelihood``.

    References:
        Kingma & Welling, "Auto-encoding variational Bayes", arXiv:1312.6114.
    """
    model, x, q, p = _posterior_prior(model, x, context)
    s = check_count(num_samples, "num_samples", minimum=2)
    if seed is not None:
        seed = check_count(seed, "seed", minimum=0)
    # fork_rng restores the CPU state and that of x's accelerator (none for CPU data).
    devices, kind = ([], None) if x.device.type == "cpu" else ([x.device], x.device.type)
    with torch.random.fork_rng(devices=devices, enabled=seed is not None, device_type=kind):
        if seed is not None:
            torch.manual_seed(seed)
        z = q.rsample((s,)) if q.has_rsample else q.sample((s,))  # [S, N, q]
    log_lik = torch.stack([model.likelihood(zs, **context).log_prob(x.to(zs)) for zs in z])
    recon_draws = log_lik.mean(-1)
    kl_value = _analytic_kl(q, p) if analytic_kl else None
    if kl_value is None:
        kl_draws = (q.log_prob(z) - p.log_prob(z)).mean(-1)
        kl = Estimate(*mc_mean(kl_draws), "monte-carlo", num_samples=s)
        elbo = Estimate(*mc_mean(recon_draws - kl_draws), "monte-carlo", num_samples=s)
    else:
        kl_mean = kl_value.mean()
        kl = Estimate(kl_mean, torch.zeros_like(kl_mean), "analytic")
        elbo = Estimate(*mc_mean(recon_draws - kl_mean), "monte-carlo", num_samples=s)
    per_dim = None
    if _normal_marginals(q) is not None and _normal_marginals(p) is not None:
        per_dim = kl_per_dimension(model, x, **context)
    recon = Estimate(*mc_mean(recon_draws), "monte-carlo", num_samples=s)
    return ElboSplit(recon, kl, elbo, per_dim, s)
