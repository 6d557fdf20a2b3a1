"""Did variational inference work? ELBO, IWAE bound, ELBO gap and PSIS k-hat for any model/guide.

Everything here starts from importance log-weights of guide draws,

    log w_s = log p(x, z_s) - log q(z_s | x),        z_s ~ q(z | x),

where ``z`` is every latent site the guide samples and the model's remaining discrete latents
inside the data plate (mixture assignments, say) are summed out exactly by enumeration, so
``p(x, z_s)`` is the joint with those assignments marginalised. Then
(Blei, Kucukelbir & McAuliffe 2017, arXiv:1601.00670; Burda, Grosse & Salakhutdinov 2016,
arXiv:1509.00519; Yao, Vehtari, Simpson & Gelman 2018, arXiv:1802.02538):

* ``ELBO = E_q[log w] = log p(x) - KL(q(z | x) || p(z | x))``;
* ``IWAE_K = E[log (1/K) sum_k w_k]``, non-decreasing in ``K`` and tending to ``log p(x)``;
* the ELBO gap ``log p(x) - ELBO`` is the KL divergence from the guide to the posterior;
* the Pareto shape ``k`` of the upper tail of ``w`` says whether ``q`` is a usable importance
  proposal for the posterior: ``k < 0.5`` good, ``0.5 <= k < 0.7`` usable, ``k >= 0.7``
  unreliable, ``k > 1`` the ratios have no mean at all.

When every latent site of the guide sits in the data plate (amortised guides: VAEs), the
weights factorise over data, ``log w_s = sum_n log w_sn``, and the IWAE bound is taken per datum
as in Burda et al. (``sum_n log (1/K) sum_k w_kn``), which is much tighter than a bound on the
whole data set. With global latents in the guide there is one weight per draw.

All values are in nats and refer to the whole data set (divide by ``N`` for per-point figures).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from pyro import poutine
from pyro.ops.stats import fit_generalized_pareto
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from probgen.diagnostics._base import Estimate, mc_mean
from probgen.infer import pointwise
from probgen.validation import check_count

__all__ = [
    "FLAT_LOG_WEIGHTS",
    "KHAT_BAD",
    "KHAT_GOOD",
    "KHAT_OK",
    "elbo",
    "elbo_gap",
    "iwae_bound",
    "khat_from_log_weights",
    "khat_interpretation",
    "khat_threshold",
    "log_importance_weights",
    "psis_khat",
]

#: Below this k-hat the guide is a good importance proposal for the posterior.
KHAT_GOOD = 0.5
#: At or above this k-hat the approximation is unreliable (Yao et al. 2018).
KHAT_OK = 0.7
#: Above this the importance ratios have infinite mean: the guide misses posterior mass.
KHAT_BAD = 1.0
#: Log-weights that all lie within this many nats are equal up to float64 rounding of a sum
#: of many log densities (relative ratio error 1e-8): the guide is exact.
FLAT_LOG_WEIGHTS = 1e-8


# --------------------------------------------------------------------------- log-weights
def _latent_sites(trace: Trace) -> dict[str, Any]:
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


def _guide_terms(trace: Trace, plate: str, nesting: int, n: int) -> tuple[Tensor, Tensor]:
    """``log q``: a scalar for sites outside the data plate, ``[N]`` for sites inside it."""
    trace.compute_log_prob()
    global_ = torch.zeros(())
    local = torch.zeros(n)
    for site in _latent_sites(trace).values():
        if any(f.name == plate for f in site["cond_indep_stack"]):
            term, _ = pointwise.per_datum_log_prob(site, plate, nesting)
            local = local.to(term) + term.reshape(-1)
        else:
            global_ = global_.to(site["log_prob"]) + site["log_prob"].sum()
    return global_, local


def log_importance_weights(
    model: Any, guide: Any, x: Tensor, num_draws: int = 1000
) -> tuple[Tensor, bool]:
    """``log w_s = log p(x, z_s) - log q(z_s | x)`` for ``num_draws`` draws of the guide.

    Discrete latents of the model that the guide does not sample are summed out exactly (they
    must sit in the data plate). Each draw runs the guide and the model once, so the cost is
    ``num_draws`` passes over ``x``.

    Args:
        model: a :class:`~probgen.GenerativeModel` or a plain Pyro model function ``model(x)``
            whose per-datum sites sit in a plate named ``"data"`` (or ``model.data_plate``).
        guide: the guide, called as ``guide(x)``; ``None`` uses the family's own guide.
        x: the data the weights condition on.
        num_draws: ``S``.

    Returns:
        ``(log_w, per_datum)``: ``[S, N]`` when every latent site of the guide lies in the data
        plate (``per_datum=True``), else ``[S]``.
    """
    check_count(num_draws, "num_draws", 1)
    guide = pointwise.resolve_guide(model, guide)
    plate = getattr(model, "data_plate", "data")
    model_nesting = pointwise.max_plate_nesting(pointwise.prototype_trace(model, x))
    weights = []
    per_datum = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pyro notes guide sites absent in the model
        for _ in range(num_draws):
            with torch.no_grad():
                trace = poutine.trace(guide).get_trace(x)
            latents = _latent_sites(trace)
            values = {name: site["value"].detach() for name, site in latents.items()}
            if any(all(f.name != plate for f in s["cond_indep_stack"]) for s in latents.values()):
                per_datum = False
            with torch.no_grad():
                model_global, model_local = pointwise.log_joint_terms(
                    model, x, values, model_nesting
                )
                guide_nesting = pointwise.max_plate_nesting(trace)
                q_global, q_local = _guide_terms(trace, plate, guide_nesting, x.shape[0])
            model_local = model_local.to(x.dtype)
            local = model_local - q_local.to(model_local)
            global_ = model_global.to(local) - q_global.to(local)
            weights.append(local + global_ / local.numel())
    log_w = torch.stack(weights)
    return (log_w, True) if per_datum else (log_w.sum(-1), False)


# --------------------------------------------------------------------------- bounds
def elbo(model: Any, guide: Any, x: Tensor, num_particles: int = 1000) -> Estimate:
    """The evidence lower bound ``E_q[log p(x, z) - log q(z | x)]`` with its standard error.

    Estimator: the mean of ``S = num_particles`` log-weights (module docstring); unbiased, with
    standard error ``sd(log w) / sqrt(S)``. Units: nats, for the whole data set.

    Args:
        model, guide, x: as in :func:`log_importance_weights`.
        num_particles: guide draws ``S >= 2``.
    """
    check_count(num_particles, "num_particles", 2)
    log_w, per_datum = log_importance_weights(model, guide, x, num_particles)
    total = log_w.sum(-1) if per_datum else log_w
    value, se = mc_mean(total)
    return Estimate(value, se, "monte-carlo", num_samples=num_particles)


def iwae_bound(
    model: Any, guide: Any, x: Tensor, num_particles: int = 100, num_replicates: int = 5
) -> Estimate:
    """The importance-weighted bound ``IWAE_K = E[log (1/K) sum_k w_k]`` (Burda et al. 2016).

    ``ELBO = IWAE_1 <= IWAE_K <= IWAE_{K+1} <= log p(x)``, and ``IWAE_K -> log p(x)`` as
    ``K -> inf`` with bias of order ``Var(w / p(x)) / (2K)``. Per-datum weights (amortised
    guides) are bounded per datum and summed.

    Estimator: ``num_replicates`` independent evaluations of ``log (1/K) sum_k w_k`` from
    ``K = num_particles`` draws each; the value is their mean and the standard error their
    ``sd / sqrt(R)``. Each is a *lower bound in expectation*; a single one can exceed
    ``log p(x)``. Units: nats, for the whole data set.

    Args:
        model, guide, x: as in :func:`log_importance_weights`.
        num_particles: ``K >= 1``.
        num_replicates: ``R >= 2``.
    """
    check_count(num_particles, "num_particles", 1)
    check_count(num_replicates, "num_replicates", 2)
    log_w, per_datum = log_importance_weights(model, guide, x, num_particles * num_replicates)
    log_w = log_w.reshape(num_replicates, num_particles, *log_w.shape[1:])
    bounds = log_w.logsumexp(1) - math.log(num_particles)
    if per_datum:
        bounds = bounds.sum(-1)
    value, se = mc_mean(bounds)
    return Estimate(value, se, "iwae", num_samples=num_particles * num_replicates)


def elbo_gap(
    model: Any,
    guide: Any,
    x: Tensor,
    log_likelihood: float | Tensor | None = None,
    *,
    num_particles: int = 1000,
    reference_particles: int = 1000,
    reference_replicates: int = 5,
) -> Estimate:
    """``log p(x) - ELBO = KL(q(z | x) || p(z | x))``: how far the guide is from the posterior.

    Args:
        model, guide, x: as in :func:`log_importance_weights`.
        log_likelihood: the exact ``log p(x)`` of the whole data set (e.g. a conjugate model's
            evidence or a family's closed-form marginal, summed over data), if known. Without
            it the reference is the IWAE bound with ``reference_particles`` draws, so the gap is
            *under*-estimated by that bound's own bias (a lower bound on the true gap in
            expectation); raise ``reference_particles`` until the value stops growing.
        num_particles: draws for the ELBO.
        reference_particles, reference_replicates: ``K`` and ``R`` of the IWAE reference.

    Returns:
        The gap in nats with the standard error of its Monte Carlo terms combined
        (``sqrt(se_ELBO^2 + se_ref^2)``); estimator ``"exact-reference"`` or ``"iwae-reference"``.
    """
    bound = elbo(model, guide, x, num_particles)
    if log_likelihood is not None:
        reference = torch.as_tensor(log_likelihood).to(bound.value)
        if reference.numel() != 1 or not torch.isfinite(reference):
            raise ValueError(
                "log_likelihood must be one finite number: the log evidence of the whole data "
                f"set (sum over data); got {log_likelihood!r}"
            )
        return Estimate(
            reference.reshape(()) - bound.value,
            bound.stderr,
            "exact-reference",
            num_samples=num_particles,
        )
    ref = iwae_bound(model, guide, x, reference_particles, reference_replicates)
    return Estimate(
        ref.value - bound.value,
        (ref.stderr**2 + bound.stderr**2).sqrt(),
        "iwae-reference",
        num_samples=num_particles + (ref.num_samples or 0),
    )


# --------------------------------------------------------------------------- PSIS k-hat
def khat_threshold(num_draws: int) -> float:
    """The sample-size-dependent reliability threshold ``min(1 - 1/log10(S), 0.7)``.

    Below it, Pareto-smoothed importance sampling with ``S`` draws has a reliable error
    (Vehtari, Simpson, Gelman, Yao & Gabry 2024, JMLR, arXiv:1507.02646, sec. 3.2.4).
    """
    check_count(num_draws, "num_draws", 2)
    return min(1.0 - 1.0 / math.log10(num_draws), KHAT_OK)


def khat_interpretation(khat: float) -> str:
    """The usual verdict on a k-hat: ``"good"`` (< 0.5), ``"ok"`` (< 0.7), ``"bad"`` (<= 1),
    ``"very bad"`` (> 1: the ratios have no finite mean)."""
    if khat < KHAT_GOOD:
        return "good"
    if khat < KHAT_OK:
        return "ok"
    return "bad" if khat <= KHAT_BAD else "very bad"  # NaN and inf land here too


def khat_from_log_weights(log_weights: Tensor) -> float:
    """Pareto k-hat of the upper tail of importance ratios, from their logs (any scale).

    The tail is the largest ``min(0.2 S, 3 sqrt(S))`` ratios, fitted by Zhang & Stephens' (2009)
    estimator with Vehtari et al.'s weak prior towards 0.5: Pyro's ``psis_diagnostic`` and
    ArviZ's ``psislw`` (with ``reff=1``) compute the same number from the same weights.
    Equal weights (an exact guide) give ``-inf``; fewer than 10 tail draws, NaN or ``+inf``
    log-weights give ``inf``;
    ``-inf`` log-weights (draws where the model has no density) are zero ratios, which is fine.
    """
    lw = log_weights.detach().double().flatten()
    if torch.isnan(lw).any() or (lw == math.inf).any():
        return math.inf
    lw = (lw - lw.max()).sort().values
    s = lw.numel()
    cutoff_index = -math.ceil(min(0.2 * s, 3.0 * math.sqrt(s))) - 1
    if -cutoff_index > s:
        return math.inf
    cutoff = max(math.log(1e-15), lw[cutoff_index].item())
    if lw[0] > -FLAT_LOG_WEIGHTS:
        # Equal weights: the guide is proportional to the posterior, importance sampling is
        # exact, and the ratios have no tail at all (rounding alone would give a spurious k).
        return -math.inf
    tail = lw[lw > cutoff]
    if tail.numel() < 10:
        return math.inf
    k, _ = fit_generalized_pareto(tail.exp() - math.exp(cutoff))
    return float(k)


def psis_khat(
    model: Any, guide: Any, x: Tensor, num_draws: int = 1000, *, per_datum: bool = False
) -> float | Tensor:
    """PSIS k-hat of a guide as an importance proposal for the posterior (Yao et al. 2018).

    Args:
        model, guide, x: as in :func:`log_importance_weights`; works for probgen families
            (discrete local latents summed out) and plain Pyro functions alike.
        num_draws: guide draws (Yao et al. recommend a few hundred or more; the threshold of
            reliability depends on it, :func:`khat_threshold`).
        per_datum: for amortised guides, one k-hat per datum (``[N]``), diagnosing
            ``q(z_n | x_n)`` against ``p(z_n | x_n)``; requires per-datum weights.

    Returns:
        k-hat of the joint weights (a float), or ``[N]`` per datum (in the dtype and on the
        device of the log-weights). Read it with :func:`khat_interpretation`.
    """
    log_w, factorised = log_importance_weights(model, guide, x, num_draws)
    if not per_datum:
        return khat_from_log_weights(log_w.sum(-1) if factorised else log_w)
    if not factorised:
        raise ValueError(
            "per_datum=True needs a guide whose latent sites all lie in the data plate; this "
            "guide samples global sites, so only the joint k-hat is defined"
        )
    khats = [khat_from_log_weights(col) for col in log_w.T]
    return torch.tensor(khats, dtype=log_w.dtype, device=log_w.device)
