"""The one EM loop, for families that declare closed-form E and M steps.

EM (Dempster, Laird & Rubin 1977) alternates

    E: q_t(z_n) = p(z_n | x_n, theta_t)
    M: theta_{t+1} = argmax_theta E_{q_t}[log p(x, z | theta)]

and never decreases the log-likelihood. The loop is scikit-learn's template (``mixture/_base.py``):
``n_init`` restarts, stop when the mean log-likelihood per point changes by less than ``tol``,
keep the best restart, warn with :class:`ConvergenceWarning` when ``max_iter`` ran out.

The E step's ``expectations`` are whatever posterior statistics the family's M step consumes
(log-responsibilities ``log r_nk`` for a mixture, posterior moments of ``z`` for PPCA); the loop
only passes them on.

A family opts in with ``supports_em = True`` and five methods::

    em_prepare(x) -> prepared             # data precomputation shared by restarts
    em_init(prepared, generator) -> state
    em_e_step(prepared, state) -> (expectations, mean_log_likelihood)
    em_m_step(prepared, expectations) -> state
    em_params(state) -> {site: value}      # the model's global sites
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = ["ConvergenceWarning", "EMRun", "run_em"]


class ConvergenceWarning(UserWarning):
    """EM (or another iterative fit) stopped at its iteration limit before meeting ``tol``."""


@dataclass(frozen=True)
class EMRun:
    """The best restart of :func:`run_em`."""

    params: dict[str, Tensor]
    history: list[float]
    log_likelihood: float
    n_iter: int
    converged: bool
    restarts: list[float]


def run_em(
    model: Any,
    x: Tensor,
    *,
    n_init: int,
    max_iter: int,
    tol: float,
    generator: torch.Generator,
    progress: bool,
) -> EMRun:
    """Runs EM ``n_init`` times and keeps the restart with the highest final log-likelihood.

    Args:
        model: a family with ``supports_em``.
        x: training data ``[N, D]``.
        n_init: restarts from independent initialisations.
        max_iter: EM iterations per restart.
        tol: convergence threshold on the change of the mean log-likelihood per point.
        generator: drives the initialisations.
        progress: show a tqdm bar over restarts x iterations.

    Returns:
        The best restart; ``history`` is its mean log-likelihood per point before each M step.
    """
    prepared = model.em_prepare(x)
    best: EMRun | None = None
    finals = []
    bar = tqdm(total=n_init * max_iter, disable=not progress, desc="em", leave=False)
    for _ in range(n_init):
        state = model.em_init(prepared, generator)
        history: list[float] = []
        converged = False
        previous = -math.inf
        n_iter = 0
        for n_iter in range(1, max_iter + 1):  # noqa: B007 (n_iter is read after the loop)
            expectations, mean_ll = model.em_e_step(prepared, state)
            state = model.em_m_step(prepared, expectations)
            current = float(mean_ll)
            history.append(current)
            bar.update(1)
            if abs(current - previous) < tol:
                converged = True
                break
            previous = current
        final = float(model.em_e_step(prepared, state)[1])
        finals.append(final)
        if best is None or final > best.log_likelihood:
            best = EMRun(model.em_params(state), history, final, n_iter, converged, finals)
    bar.close()
    assert best is not None
    if not best.converged:
        warnings.warn(
            f"EM did not converge: the best of {n_init} restart(s) used all max_iter={max_iter} "
            f"iterations without the log-likelihood changing by less than tol={tol}; raise "
            "max_iter or tol",
            ConvergenceWarning,
            stacklevel=3,
        )
    return EMRun(
        best.params, best.history, best.log_likelihood, best.n_iter, best.converged, finals
    )
