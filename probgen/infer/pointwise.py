"""Pointwise densities of any Pyro model: ``log p(x_n | theta)``, ``log p(theta)``, site roles.

These are the generic fallbacks behind :meth:`GenerativeModel.log_likelihood`; families with a
closed form override them. A model is any callable ``model(x)`` whose per-datum sites sit in a
plate named ``data_plate`` (default ``"data"``) and whose observed site is ``obs_site``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch import Tensor

__all__ = [
    "global_site_shapes",
    "is_enumerable",
    "log_joint_terms",
    "log_likelihood",
    "log_prior",
    "max_plate_nesting",
    "per_datum_log_prob",
    "program_of",
    "prototype_trace",
    "resolve_guide",
    "site_supports",
]


def _nodes(trace: Trace) -> dict[str, Any]:
    """Trace sites, typed loosely: Pyro's ``Message`` type does not know distribution methods."""
    return trace.nodes  # type: ignore[return-value]


def site_supports(model: Any, x: Tensor | None) -> dict[str, Any]:
    """The support (constraint) of each global latent site."""
    trace, shapes, _ = _roles(model, x)
    return {name: _nodes(trace)[name]["fn"].support for name in shapes}


def _attr(model: Any, name: str, default: str) -> str:
    return getattr(model, name, default)


def _program(model: Any) -> Callable[..., Any]:
    return model.model if hasattr(model, "model") and callable(model.model) else model


def program_of(model: Any) -> Callable[..., Any]:
    """The Pyro model function: ``model.model`` for a family, ``model`` for a plain function."""
    return _program(model)


def resolve_guide(model: Any, guide: Any) -> Callable[..., Any]:
    """``guide`` if given, else the family's own guide.

    Raises:
        TypeError: ``guide`` is not callable.
        ValueError: no guide given and the model writes none.
    """
    if guide is not None:
        if not callable(guide):
            raise TypeError(f"guide must be callable as guide(x); got {type(guide).__name__}")
        return guide  # type: ignore[no-any-return]
    has = getattr(model, "has_guide", None)
    if callable(has) and has():
        return model.guide  # type: ignore[no-any-return]
    raise ValueError(
        "guide is required: pass the fitted guide (e.g. fit.guide) as guide=..., or use a family "
        "that writes its own guide"
    )


def prototype_trace(
    model: Any, x: Tensor | None, context: Mapping[str, Any] | None = None
) -> Trace:
    """One prior run of ``model(x, **context)`` (discrete local sites sampled, not enumerated)."""
    with poutine.block():
        return poutine.trace(_program(model)).get_trace(x, **(context or {}))


def _in_plate(site: Mapping[str, Any], plate: str) -> bool:
    return any(frame.name == plate for frame in site["cond_indep_stack"])


def _is_latent(site: Any) -> bool:
    return site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)


def is_enumerable(site: Any) -> bool:
    """A latent site that enumeration can sum out: discrete support with finite cardinality."""
    return _is_latent(site) and getattr(site["fn"], "has_enumerate_support", False)


def _roles(
    model: Any, x: Tensor | None, context: Mapping[str, Any] | None = None
) -> tuple[Trace, dict[str, torch.Size], list[Any]]:
    """A prototype trace, the shapes of the global latent sites, and the local latent sites."""
    plate = _attr(model, "data_plate", "data")
    trace = prototype_trace(model, x, context)
    shapes: dict[str, torch.Size] = {}
    local = []
    for name, site in _nodes(trace).items():
        if _is_latent(site):
            if _in_plate(site, plate):
                local.append(site)
            else:
                shapes[name] = site["value"].shape
    return trace, shapes, local


def global_site_shapes(
    model: Any, x: Tensor | None, context: Mapping[str, Any] | None = None
) -> dict[str, torch.Size]:
    """Shapes of the latent sites outside the data plate (the model's global parameters)."""
    return _roles(model, x, context)[1]


def max_plate_nesting(trace: Trace) -> int:
    """The deepest nesting of vectorised plates in a trace (what enumeration must stay left of)."""
    depth = 0
    for site in _nodes(trace).values():
        if site["type"] == "sample":
            dims = [f.dim for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None]
            if dims:
                depth = max(depth, -min(dims))
    return depth


def _batches(params: Mapping[str, Tensor], shapes: Mapping[str, torch.Size]) -> torch.Size:
    """The leading batch shape of ``params`` (e.g. ``[chain, draw]``), checked across sites."""
    batch: torch.Size | None = None
    for name, shape in shapes.items():
        if name not in params:
            raise ValueError(f"params lacks the global site {name!r}; it has {sorted(params)}")
        value = params[name]
        nb = value.dim() - len(shape)
        if nb < 0 or value.shape[nb:] != shape:
            raise ValueError(
                f"params[{name!r}] has shape {tuple(value.shape)}; expected (*batch, "
                f"{', '.join(map(str, shape))})"
            )
        if batch is None:
            batch = value.shape[:nb]
        elif value.shape[:nb] != batch:
            raise ValueError(f"params have inconsistent batch shapes {batch} vs {value.shape[:nb]}")
    return batch if batch is not None else torch.Size()


def _per_theta(
    fn: Callable[[Mapping[str, Tensor]], Tensor],
    params: Mapping[str, Tensor],
    shapes: Mapping[str, torch.Size],
) -> Tensor:
    batch = _batches(params, shapes)
    flat = {k: params[k].reshape((-1, *shapes[k])) for k in shapes}
    n = math.prod(batch)
    out = [fn({k: v[s] for k, v in flat.items()}) for s in range(n)]
    stacked = torch.stack(out)
    return stacked.reshape((*batch, *stacked.shape[1:]))


def _data_dim_sum(total: Tensor, data_dim: int, nesting: int) -> Tensor:
    """Sums every plate dimension except the data plate's; returns ``[N]``."""
    total = (
        total.reshape((1,) * (nesting - total.dim()) + total.shape)
        if total.dim() < nesting
        else total
    )
    other = [d for d in range(-nesting, 0) if d != data_dim]
    if other:
        total = total.sum(dim=other, keepdim=True)
    return total.reshape(-1)


def per_datum_log_prob(site: Any, plate: str, nesting: int) -> tuple[Tensor, int]:
    """A data-plate site's log density with its other plate dimensions summed (kept as size 1),
    and the data plate's dimension.

    Each site is reduced on its own: a per-datum site broadcast against a nested plate (say
    ``z_n`` next to ``x_nf``) would otherwise be counted once per element of that plate.
    """
    data_dim = next(int(f.dim) for f in site["cond_indep_stack"] if f.name == plate)
    lp = site["log_prob"]
    lp = lp.reshape((1,) * (nesting - lp.dim()) + lp.shape) if lp.dim() < nesting else lp
    other = [d for d in range(-nesting, 0) if d != data_dim and lp.shape[d] > 1]
    return (lp.sum(dim=other, keepdim=True) if other else lp), data_dim


def log_joint_terms(
    model: Any, x: Tensor, values: Mapping[str, Tensor], nesting: int | None = None
) -> tuple[Tensor, Tensor]:
    """``log p(x, values)`` split into a global term and one term per datum.

    The model runs with its latent sites fixed to ``values``; every other discrete latent site
    inside the data plate is summed out exactly (parallel enumeration), so the per-datum term is
    ``log sum_{z_n} p(x_n, z_n | values)``.

    Returns:
        ``(global, local)``: the summed log density of the sites outside the data plate (a
        scalar) and ``[N]`` for the sites inside it.

    Raises:
        ValueError: a discrete latent outside the data plate is neither in ``values`` nor
            enumerable per datum (give it a value, e.g. sample it in the guide).
    """
    plate = _attr(model, "data_plate", "data")
    if nesting is None:
        nesting = max_plate_nesting(prototype_trace(model, x))
    program = poutine.condition(_program(model), data=dict(values))
    enum = poutine.enum(config_enumerate(program, "parallel"), first_available_dim=-1 - nesting)
    trace = poutine.trace(enum).get_trace(x)
    trace.compute_log_prob()
    local: Tensor | float = 0.0
    global_: Tensor = torch.zeros((), dtype=x.dtype, device=x.device)
    data_dim = -1
    for name, site in _nodes(trace).items():
        if site["type"] != "sample":
            continue
        if _in_plate(site, plate):
            term, data_dim = per_datum_log_prob(site, plate, nesting)
            local = local + term
        elif site["log_prob"].dim() > nesting:
            raise ValueError(
                f"the discrete latent site {name!r} lies outside the data plate and has no value; "
                "give it one (sample it in the guide, or pass it in params)"
            )
        else:
            global_ = global_ + site["log_prob"].sum()
    assert isinstance(local, Tensor), "the model has no site in its data plate"
    # Enumerated dimensions sit left of the plates: marginalise them exactly (mixture-style models
    # whose discrete latents are not inside plates nested below the data plate).
    enum_dims = list(range(local.dim() - nesting))
    if enum_dims:
        local = local.logsumexp(dim=enum_dims)
    return global_, _data_dim_sum(local, data_dim, nesting)


def _enum_loglik(model: Any, x: Tensor, theta: Mapping[str, Tensor], nesting: int) -> Tensor:
    return log_joint_terms(model, x, theta, nesting)[1]


def _is_loglik(
    model: Any, x: Tensor, theta: Mapping[str, Tensor], nesting: int, particles: int
) -> Tensor:
    import pyro

    plate = _attr(model, "data_plate", "data")
    guide = model.guide
    with pyro.plate("_is_particles", particles, dim=-1 - nesting):
        guide_trace = poutine.trace(poutine.condition(guide, data=dict(theta))).get_trace(x)
        program = poutine.condition(_program(model), data=dict(theta))
        model_trace = poutine.trace(poutine.replay(program, trace=guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    log_w: Tensor | float = 0.0
    data_dim: int = -1
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for site in _nodes(trace).values():
            if site["type"] == "sample" and _in_plate(site, plate):
                term, data_dim = per_datum_log_prob(site, plate, nesting)
                log_w = log_w + sign * term
    assert isinstance(log_w, Tensor)
    log_w = log_w.expand((particles, *log_w.shape[1:])) if log_w.dim() == nesting + 1 else log_w
    per_point = torch.stack([_data_dim_sum(w, data_dim, nesting) for w in log_w])
    return per_point.logsumexp(0) - math.log(particles)


def log_likelihood(model: Any, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
    """``log p(x_n | theta)`` for each datum and each (batched) value of the global sites.

    Discrete local latents are enumerated (exact); continuous local latents are integrated by
    importance sampling from ``model.guide`` with ``model.num_is_particles`` particles, which is a
    stochastic lower bound in expectation (Jensen) whose bias shrinks as ``O(1/S)``.

    Returns:
        ``batch + [N]``, with ``batch`` the leading shape of ``params``.
    """
    trace, shapes, local = _roles(model, x)
    nesting = max_plate_nesting(trace)
    if all(is_enumerable(site) for site in local):
        return _per_theta(lambda th: _enum_loglik(model, x, th, nesting), params, shapes)
    if not callable(getattr(model, "guide", None)):
        raise ValueError(
            "this model has continuous local latents; its pointwise log-likelihood needs a guide "
            "for importance sampling (give the model a .guide)"
        )
    particles = int(getattr(model, "num_is_particles", 1000))
    return _per_theta(lambda th: _is_loglik(model, x, th, nesting, particles), params, shapes)


def log_prior(model: Any, x: Tensor | None, params: Mapping[str, Tensor]) -> Tensor:
    """``log p(theta)``: the summed prior density of the global sites, for each batched value."""
    _, shapes, _ = _roles(model, x)

    def one(theta: Mapping[str, Tensor]) -> Tensor:
        with poutine.block():
            tr = poutine.trace(poutine.condition(_program(model), data=dict(theta))).get_trace(x)
        return sum(
            (_nodes(tr)[name]["fn"].log_prob(_nodes(tr)[name]["value"]).sum() for name in shapes),
            start=torch.zeros(()),
        )

    return _per_theta(one, params, shapes)
