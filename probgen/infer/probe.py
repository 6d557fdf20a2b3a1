"""Prototype runs of a model on a few rows, and the checks of its sites they make possible.

``fit`` needs the model's sites and plates (not its values) before it builds a guide or starts
a sampler: which latent sites are discrete, how deep the plates nest, whether NUTS can handle
every site, and whether a hand-written guide samples every latent site. A run on
:data:`PROBE_ROWS` rows answers all of these at a fraction of a training step, and leaves the
random stream as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import autoguide
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from probgen.core import GenerativeModel
from probgen.infer import pointwise

__all__ = [
    "PROBE_ROWS",
    "check_guide_sites",
    "check_nuts_sites",
    "forked_rng",
    "hidden_discrete",
    "probe",
    "probe_trace",
]

#: Rows of data a prototype run of the model sees: its sites and plates, not its values, are
#: wanted, and a full-data run of a deep model costs as much as many training steps.
PROBE_ROWS = 8


def probe(x: Tensor, context: Mapping[str, Tensor] | None) -> tuple[Tensor, dict[str, Tensor]]:
    return x[:PROBE_ROWS], {k: v[:PROBE_ROWS] for k, v in (context or {}).items()}


@contextlib.contextmanager
def forked_rng(x: Tensor) -> Iterator[None]:
    """Leaves the random stream as it was: forking keeps a seeded ``fit`` drawing exactly what
    a hand-written loop with the same seed draws (the benchmark checks the parameters agree)."""
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def probe_trace(model: GenerativeModel, x: Tensor, context: Mapping[str, Tensor] | None) -> Any:
    """A prototype run on a few rows that leaves the random stream untouched."""
    with forked_rng(x):
        return pointwise.prototype_trace(model, *probe(x, context))


def hidden_discrete(trace: Any) -> tuple[list[str], int]:
    discrete = [n for n, s in trace.nodes.items() if pointwise.is_enumerable(s)]
    return discrete, pointwise.max_plate_nesting(trace)


def _latent(site: Any) -> bool:
    return site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)


def check_nuts_sites(model: GenerativeModel, trace: Any) -> None:
    """NUTS moves continuous sites and sums out enumerable discrete ones inside the data plate.

    A discrete site with infinite support (Poisson, Geometric) cannot be enumerated, and one
    outside the data plate would be summed out of the draws that the log-likelihood and the
    objective need, so both are refused before sampling, not deep inside Pyro or after it.
    """
    for name, site in trace.nodes.items():
        if not _latent(site) or not getattr(site["fn"].support, "is_discrete", False):
            continue
        kind = type(site["fn"]).__name__
        if not pointwise.is_enumerable(site):
            raise ValueError(
                f"method='nuts' cannot handle the discrete latent site {name!r} ({kind}, no "
                "finite support to enumerate): NUTS needs continuous latent sites, or discrete "
                "ones with finite support inside the data plate that it can sum out by "
                "enumeration. Marginalise it in the model, or use method='svi' with a guide that "
                "samples it."
            )
        if all(f.name != model.data_plate for f in site["cond_indep_stack"]):
            raise ValueError(
                f"method='nuts' cannot handle the discrete latent site {name!r} ({kind}) outside "
                f"the data plate {model.data_plate!r}: NUTS would sum it out, leaving no draws "
                "of it for the log-likelihood. NUTS needs continuous latent sites, or discrete "
                "ones with finite support inside the data plate. Sum it out in the model (a "
                "mixture over its values), or use method='svi' with a guide that samples it."
            )


class _NoNewParams(Messenger):
    """Answers ``pyro.param`` for a parameter that does not exist yet with its initial value,
    without creating it: a probe on a few rows must not size a per-datum parameter by them."""

    def _pyro_param(self, msg: Any) -> None:
        args = msg["args"]
        if len(args) < 2 or args[0] in pyro.get_param_store():
            return  # existing parameters are read as usual
        init = args[1]
        msg["value"] = init() if callable(init) else init
        msg["done"] = True


def check_guide_sites(
    model: GenerativeModel,
    guide: Callable[..., Any],
    trace: Any,
    x: Tensor,
    context: Mapping[str, Tensor],
    exempt: list[str],
) -> None:
    """Raises unless ``guide`` samples every latent site of the model outside ``exempt``.

    Autoguides are built from the model and cover it by construction; a hand-written guide
    that misses a site would otherwise leave Pyro sampling it from the prior inside the ELBO
    (silently wrong) or fail deep inside. One guide run on the probe rows, with no parameter
    created and the random stream untouched.
    """
    if isinstance(guide, autoguide.AutoGuide):
        return
    xp, cp = probe(x, context)
    with forked_rng(x), torch.no_grad(), poutine.block(), _NoNewParams():
        try:
            guide_trace = poutine.trace(guide).get_trace(xp, **cp)
        except (ValueError, RuntimeError, IndexError):
            # A guide with per-datum parameters that already exist (an earlier fit) fits the
            # full data only: run it there (the error, if it persists, is the guide's own).
            guide_trace = poutine.trace(guide).get_trace(x, **context)
    sampled = {n for n, s in guide_trace.nodes.items() if s["type"] == "sample"}
    missing = [
        n for n, s in trace.nodes.items() if _latent(s) and n not in sampled and n not in exempt
    ]
    if missing:
        raise ValueError(
            f"the guide does not sample the latent site(s) {missing} of the model; it samples "
            f"{sorted(sampled) or 'no site'}. A guide must sample every latent site of the model "
            "(discrete sites that the 'enum' objective sums out excepted)."
        )
