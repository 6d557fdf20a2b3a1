"""``Fit``: the immutable record of one inference run."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

__all__ = ["Fit"]


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return None if mapping is None else MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Fit:
    """What one call of :func:`probgen.fit` produced (NumPyro's ``SVIRunResult``, extended).

    Attributes:
        method: ``"em"``, ``"map"``, ``"svi"`` or ``"nuts"``.
        options: the options the run used, defaults filled in.
        objective: what ``history`` measures, e.g. ``"-ELBO per point"``.
        history: the objective per iteration (EM iteration, SVI step, or NUTS draw).
        final_objective: the objective at the end (for NUTS: its mean over draws).
        wall_time: seconds the run took.
        n_iter: iterations (EM), optimisation steps (SVI) or draws per chain (NUTS).
        converged: EM met ``tol``; SVI's loss plateaued or early stopping fired; NUTS's
            split R-hat of every global site is below 1.01 (Vehtari et al. 2021).
        params: point estimate of the global sites: the EM/MAP optimum; the guide's median for
            SVI (its mean in the unconstrained space for guides without a median); the
            posterior mean in the unconstrained space for NUTS.
        draws: posterior draws, each ``[chain, draw, *site_shape]``; ``None`` for point fits.
        model: the fitted model (a :class:`~probgen.GenerativeModel` or a plain Pyro function).
        guide: the variational guide of SVI/MAP fits, else ``None``.
        diagnostics: method-specific figures (held-out history, R-hat, ESS, divergences, ...).
        data_size: number of training points (the objective is reported per point).
    """

    method: str
    options: Mapping[str, Any]
    objective: str
    history: Sequence[float]
    final_objective: float
    wall_time: float
    n_iter: int
    converged: bool
    params: Mapping[str, Tensor]
    draws: Mapping[str, Tensor] | None
    model: Any
    guide: Any = None
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    data_size: int = 0

    def __post_init__(self) -> None:
        for name in ("options", "params", "draws", "diagnostics"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "history", tuple(float(h) for h in self.history))

    @property
    def num_draws(self) -> int:
        """Total posterior draws (chains x draws); 1 for a point estimate."""
        if self.draws is None:
            return 1
        first = next(iter(self.draws.values()))
        return int(first.shape[0] * first.shape[1])

    def posterior(self) -> dict[str, Tensor]:
        """Draws as ``[chain, draw, ...]``; a point fit is one chain with one draw."""
        if self.draws is not None:
            return dict(self.draws)
        return {k: v.unsqueeze(0).unsqueeze(0) for k, v in self.params.items()}

    def log_likelihood(self, x: Tensor, *, pointwise_draws: bool = False) -> Tensor:
        """Log predictive density of each row of ``x``.

        For point fits ``log p(x_n | theta_hat)``; for fits with draws the posterior predictive
        ``log (1/S) sum_s p(x_n | theta_s)`` (the lppd of Gelman et al. 2014).

        Args:
            x: data ``[N, ...]``.
            pointwise_draws: return ``[chain, draw, N]`` instead of averaging over draws.
        """
        from probgen.infer.pointwise import log_likelihood as generic

        loglik = getattr(self.model, "log_likelihood", None)
        posterior = self.posterior()
        values = loglik(x, posterior) if loglik is not None else generic(self.model, x, posterior)
        if pointwise_draws:
            return values
        flat = values.reshape(-1, values.shape[-1])
        return flat.logsumexp(0) - math.log(flat.shape[0])

    def summary(self) -> str:
        """One line: method, objective, iterations, time, convergence."""
        flag = "converged" if self.converged else "not converged"
        return (
            f"{self.method}: {self.objective} = {self.final_objective:.4f} after {self.n_iter} "
            f"iterations in {self.wall_time:.2f} s ({flag})"
        )

    def __repr__(self) -> str:
        return f"Fit({self.summary()})"


def stack_chains(chains: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """``[draw, ...]`` per chain -> ``[chain, draw, ...]``."""
    return {k: torch.stack([c[k] for c in chains]) for k in chains[0]}
