"""Did variational inference work? Pareto-smoothed importance sampling k-hat.

With draws ``theta_s ~ q`` and importance ratios ``w_s = p(x, theta_s) / q(theta_s)``, the
generalized Pareto shape ``k`` fitted to the largest ratios measures how heavy their tail is
(Yao, Vehtari, Simpson & Gelman 2018, arXiv:1802.02538; Vehtari et al. 2024, arXiv:1507.02646):
``k < 0.5`` the guide is good, ``0.5 <= k < 0.7`` usable, ``k >= 0.7`` unreliable.
The tail rule is Pyro's ``psis_diagnostic``; the difference is that ``log p(x, theta)`` here
marginalises discrete local sites exactly (through the family's ``log_likelihood``), so mixtures
with enumerated assignments are diagnosed too.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from pyro import poutine
from pyro.ops.stats import fit_generalized_pareto
from torch import Tensor

from probgen.infer import pointwise

__all__ = ["KHAT_GOOD", "KHAT_OK", "khat_from_log_weights", "psis_khat"]

#: Below this k-hat the guide is a good importance proposal for the posterior.
KHAT_GOOD = 0.5
#: Above this k-hat the approximation is unreliable (Yao et al. 2018).
KHAT_OK = 0.7


def khat_from_log_weights(log_weights: Tensor) -> float:
    """Pareto k-hat of the upper tail of importance ratios, from their logs (any scale).

    The tail is the largest ``min(0.2 S, 3 sqrt(S))`` ratios (Vehtari et al.); fewer than 10
    tail draws give ``inf``.
    """
    lw = log_weights.detach().double().flatten()
    lw = (lw - lw.max()).sort().values
    s = lw.numel()
    cutoff_index = -math.ceil(min(0.2 * s, 3.0 * math.sqrt(s))) - 1
    if -cutoff_index > s:
        return float("inf")
    cutoff = max(math.log(1e-15), lw[cutoff_index].item())
    tail = lw[lw > cutoff]
    if tail.numel() < 10:
        return float("inf")
    k, _ = fit_generalized_pareto(tail.exp() - math.exp(cutoff))
    return float(k)


@torch.no_grad()
def psis_khat(model: Any, guide: Any, x: Tensor, num_draws: int = 1000) -> float:
    """PSIS k-hat of a fitted guide for the global sites of ``model``.

    ``log w_s = log p(theta_s) + sum_n log p(x_n | theta_s) - log q(theta_s)``, with local
    latents summed out by ``model.log_likelihood``.

    Args:
        model: a :class:`~probgen.GenerativeModel` (or anything with ``model``/``log_likelihood``).
        guide: the fitted guide over the global sites, called as ``guide(x)``.
        x: the training data.
        num_draws: guide draws (Yao et al. recommend a few hundred or more).
    """
    sites = pointwise.global_site_shapes(model, x)
    draws: dict[str, list[Tensor]] = {k: [] for k in sites}
    log_q = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pyro notes guide sites absent in the model
        for _ in range(num_draws):
            trace = poutine.trace(guide).get_trace(x)
            # All guide sites: AutoMultivariateNormal's latent site plus its Delta sites (which
            # carry the log-Jacobian) together make log q(theta).
            log_q.append(trace.log_prob_sum())
            for k in sites:
                draws[k].append(trace.nodes[k]["value"])
    theta = {k: torch.stack(v) for k, v in draws.items()}
    log_p = pointwise.log_prior(model, x, theta).to(x) + model.log_likelihood(x, theta).sum(-1)
    return khat_from_log_weights(log_p - torch.stack(log_q).to(x))
