"""Registries of variational objectives and automatic guides, by name.

Objectives (all estimate the evidence lower bound ``E_q[log p(x, z) - log q(z)]`` or a bound
tighter than it):

* ``elbo``: the Monte Carlo ELBO for reparameterised guides in one lean pass (probgen's own,
  :class:`probgen.infer.objectives.ELBO`; hands non-reparameterised guides to ``trace``). The
  default for models without discrete latent sites.
* ``trace``: Monte Carlo ELBO with the score-function/reparameterised surrogate (Pyro's
  ``Trace_ELBO``; Ranganath et al. 2014, arXiv:1401.0118).
* ``meanfield``: analytic KL terms where the guide is mean-field (``TraceMeanField_ELBO``).
* ``enum``: discrete latents summed out exactly by parallel enumeration (``TraceEnum_ELBO``;
  Obermeyer et al. 2019, arXiv:1902.03210). Chosen automatically when the model has them.
* ``iwae``: the importance-weighted bound of Burda et al. (2016, arXiv:1509.00519) with K
  particles, *per datum* (:class:`probgen.infer.objectives.IWAE`).
* ``renyi``: Pyro's Renyi alpha-bound (Li & Turner 2016, arXiv:1602.02311), ``alpha=0.5`` by
  default. Pyro keeps only the plates shared by every site: with a site outside the data plate
  (any global parameter) the bound is taken over the whole minibatch jointly, not per datum.
* ``graph``: ``TraceGraph_ELBO``, Rao-Blackwellised score-function gradients for
  non-reparameterisable guides (Schulman et al. 2015, arXiv:1506.05254).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyro import infer
from pyro.infer import autoguide

from probgen.infer import objectives

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


#: Objectives that take a ``data_plate`` argument (probgen's per-datum ones).
PER_DATUM = frozenset({"elbo", "iwae"})

OBJECTIVES: dict[str, Callable[..., Any]] = {
    "elbo": objectives.ELBO,
    "iwae": objectives.IWAE,
    "trace": infer.Trace_ELBO,
    "meanfield": infer.TraceMeanField_ELBO,
    "enum": infer.TraceEnum_ELBO,
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


def make_objective(objective: Any, **options: Any) -> Any:
    """An objective from a registry name (options go to its constructor) or as given.

    An instance (a Pyro ``ELBO`` or anything with ``differentiable_loss``/``loss``) is returned
    unchanged.
    """
    if isinstance(objective, infer.ELBO) or hasattr(objective, "differentiable_loss"):
        return objective
    if objective not in OBJECTIVES:
        raise _unknown("objective", objective, OBJECTIVES)
    return OBJECTIVES[objective](**options)


def make_guide(guide: str, model: Callable[..., Any], **options: Any) -> autoguide.AutoGuide:
    """An autoguide by registry name (``"normal"``, ``"mvn"``, ...) built around ``model``."""
    if guide not in GUIDES:
        raise _unknown("guide", guide, GUIDES)
    return GUIDES[guide](model, **options)
