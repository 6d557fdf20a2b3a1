"""Registries of variational objectives and automatic guides, by name.

Objectives (all estimate the evidence lower bound ``E_q[log p(x, z) - log q(z)]`` or a bound
tighter than it):

* ``trace``: Monte Carlo ELBO with the score-function/reparameterised surrogate (Pyro's
  ``Trace_ELBO``; Ranganath et al. 2014, arXiv:1401.0118).
* ``meanfield``: analytic KL terms where the guide is mean-field (``TraceMeanField_ELBO``).
* ``enum``: discrete latents summed out exactly by parallel enumeration (``TraceEnum_ELBO``;
  Obermeyer et al. 2019, arXiv:1902.03210). Chosen automatically when the model has them.
* ``iwae`` / ``renyi``: Renyi alpha-bound with ``alpha=0`` (IWAE, Burda et al. 2016,
  arXiv:1509.00519) or any ``alpha`` (Li & Turner 2016, arXiv:1602.02311), K particles.
* ``graph``: ``TraceGraph_ELBO``, Rao-Blackwellised score-function gradients for
  non-reparameterisable guides (Schulman et al. 2015, arXiv:1506.05254).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyro import infer
from pyro.infer import autoguide

__all__ = ["GUIDES", "OBJECTIVES", "make_guide", "make_objective"]


def _renyi(alpha: float) -> Callable[..., infer.ELBO]:
    def build(num_particles: int = 5, max_plate_nesting: int = 1, **kw: Any) -> infer.ELBO:
        return infer.RenyiELBO(
            alpha=kw.pop("alpha", alpha),
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=kw.pop("vectorize_particles", True),
            **kw,
        )

    return build


OBJECTIVES: dict[str, Callable[..., infer.ELBO]] = {
    "trace": infer.Trace_ELBO,
    "meanfield": infer.TraceMeanField_ELBO,
    "enum": infer.TraceEnum_ELBO,
    "iwae": _renyi(0.0),
    "renyi": _renyi(0.5),
    "graph": infer.TraceGraph_ELBO,
}

GUIDES: dict[str, type[autoguide.AutoGuide]] = {
    "delta": autoguide.AutoDelta,
    "normal": autoguide.AutoNormal,
    "mvn": autoguide.AutoMultivariateNormal,
    "lowrank": autoguide.AutoLowRankMultivariateNormal,
    "laplace": autoguide.AutoLaplaceApproximation,
    "iaf": autoguide.AutoIAFNormal,
}


def _unknown(kind: str, name: object, allowed: dict[str, Any]) -> ValueError:
    return ValueError(f"unknown {kind} {name!r}; allowed: {', '.join(sorted(allowed))}")


def make_objective(objective: str | infer.ELBO, **options: Any) -> infer.ELBO:
    """An ELBO instance from a registry name (options go to its constructor) or as given."""
    if isinstance(objective, infer.ELBO):
        return objective
    if objective not in OBJECTIVES:
        raise _unknown("objective", objective, OBJECTIVES)
    return OBJECTIVES[objective](**options)


def make_guide(guide: str, model: Callable[..., Any], **options: Any) -> autoguide.AutoGuide:
    """An autoguide by registry name (``"normal"``, ``"mvn"``, ...) built around ``model``."""
    if guide not in GUIDES:
        raise _unknown("guide", guide, GUIDES)
    return GUIDES[guide](model, **options)
