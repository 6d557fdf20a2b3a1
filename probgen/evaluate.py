"""Held-out evaluation of any latent-variable model: log-likelihood and bits per dimension.

For a model with local latents ``z_n`` in its data plate (a VAE, PPCA, a mixture) the marginal
``log p(x_n) = log int p(x_n, z) dz`` is estimated by importance sampling from the guide
(Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders", arXiv:1509.00519)::

    log p(x_n) ~= L_K(x_n) = log (1/K) sum_k p(x_n, z_k) / q(z_k | x_n),   z_k ~ q(z | x_n).

All ``K`` particles are drawn at once inside a vectorised particle plate (as in Pyro's
``vectorized_importance_weights``), in chunks whose size keeps memory bounded, and combined with
a running log-sum-exp. Global sites are fixed to the fitted point estimate ``model.params_``
when the model has one, so the result is ``log p(x_n | theta_hat)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from probgen.diagnostics._base import Estimate, mc_mean
from probgen.infer import pointwise
from probgen.validation import check_context, check_count

__all__ = [
    "PARTICLE_PLATE",
    "Bound",
    "bits_per_dim",
    "likelihood_bound",
    "log_likelihood",
    "log_likelihood_pointwise",
]

#: Name of the vectorised plate that holds the importance particles.
PARTICLE_PLATE = "_particles"
#: Particles drawn per vectorised pass when the batch size is left to :func:`log_likelihood`.
PARTICLES_PER_PASS = 128


# --------------------------------------------------------------------------- checks
def _check_x(model: Any, x: Any) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 1 or x.shape[0] < 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a floating tensor [N, ...] with N >= 1 rows; got {shape}")
    dim = getattr(model, "dim_", None)
    if isinstance(dim, int) and x.dim() >= 2 and x.shape[-1] != dim:
        raise ValueError(f"x has {x.shape[-1]} features per row; the model was fitted with D={dim}")
    # A family's own data check (e.g. binary values for a Bernoulli likelihood).
    check = getattr(model, "check_x", None)
    return check(x) if callable(check) else x


# --------------------------------------------------------------------------- log-weights
def _in_plate(site: Mapping[str, Any], plate: str) -> int | None:
    """The dim of ``plate`` in the site's plate stack, or None when the site is outside it."""
    for frame in site["cond_indep_stack"]:
        if frame.name == plate:
            return int(frame.dim)
    return None


def _is_point_mass(fn: Any) -> bool:
    while hasattr(fn, "base_dist"):  # Independent, MaskedDistribution, ...
        fn = fn.base_dist
    return isinstance(fn, dist.Delta)


def _run(fn: Callable[..., Any], x: Tensor, role: str, context: Mapping[str, Tensor]) -> Trace:
    handler = poutine.trace(fn)
    try:
        return handler.get_trace(x, **context)
    except (RuntimeError, ValueError) as err:
        sites = [n for n, s in handler.msngr.trace.nodes.items() if s["type"] == "sample"]
        where = f"after site {sites[-1]!r}" if sites else "before its first sample site"
        # Pyro appends the shapes of the sites traced so far to the message.
        raise ValueError(
            f"the {role} failed when vectorised over a leading particle plate "
            f"{PARTICLE_PLATE!r}, {where} (sites traced: {', '.join(map(repr, sites))}): its "
            "sites must broadcast over extra batch dimensions on the left (index with `...`, "
            f"avoid hard-coded shapes). Pyro reported: {err}"
        ) from err


def _per_datum(
    trace: Trace, plate: str, nesting: int, shape: tuple[int, int], role: str, enum_dims: set[int]
) -> Tensor:
    """Sum of the log densities of the data-plate sites, reduced to ``[*enum, K, n]``.

    Enumeration dims (left of the particle dim) are kept for the caller to sum out.
    """
    trace.compute_log_prob()
    total: Tensor | None = None
    data_dim = -1
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        dim = _in_plate(site, plate)
        if dim is None:
            if not site["is_observed"] and not _is_point_mass(site["fn"]):
                raise ValueError(
                    f"the {role} samples the global site {name!r} outside the data plate "
                    f"{plate!r}: the weights do not factorise per datum. Fix the global sites "
                    "(a fitted model's params_, or point masses in the guide)"
                )
            continue
        data_dim = dim
        lp = site["log_prob"]
        extra = [d for d in range(-lp.dim(), -nesting - 1) if lp.shape[d] > 1]
        if any(d not in enum_dims for d in extra):
            raise ValueError(
                f"site {name!r} of the {role} has log-density shape {tuple(lp.shape)}; with "
                f"{nesting} plate dim(s) and the particle plate at dim {-nesting - 1} it may not "
                "grow dimensions on the left: the site does not broadcast over the particle "
                "plate (index with `...`, avoid hard-coded shapes)"
            )
        lp, _ = pointwise.per_datum_log_prob(site, plate, nesting)
        lp = lp.reshape((1,) * (nesting + 1 - lp.dim()) + lp.shape)
        total = lp if total is None else total + lp
    if total is None:
        if role == "guide":  # e.g. only discrete locals, all summed out in the model: q = 1
            return torch.zeros(shape)
        raise ValueError(f"the {role} has no sample site in the data plate {plate!r}")
    # Move the data dim next to the particle dim: [*enum, K, n].
    total = total.movedim(data_dim, -1).flatten(-nesting, -1)
    return total.expand((*total.shape[:-2], *shape))


def _log_weights(
    model: Any,
    guide: Callable[..., Any],
    x: Tensor,
    params: Mapping[str, Tensor],
    particles: int,
    nesting: int,
    context: Mapping[str, Tensor],
) -> Tensor:
    """``log p(x_n, z_k) - log q(z_k | x_n)``, ``[K, n]``, for one chunk of particles."""
    plate = getattr(model, "data_plate", "data")
    n = x.shape[0]
    with pyro.plate(PARTICLE_PLATE, particles, dim=-nesting - 1):
        guide_trace = _run(poutine.condition(guide, data=dict(params)), x, "guide", context)
        program = poutine.condition(pointwise.program_of(model), data=dict(params))
        replayed = poutine.replay(program, trace=guide_trace)
        # Discrete model latents the guide does not sample are summed out exactly.
        enum = poutine.enum(
            config_enumerate(replayed, "parallel"), first_available_dim=-nesting - 2
        )
        model_trace = _run(enum, x, "model", context)
    enum_dims: set[int] = set()
    for site in model_trace.nodes.values():
        infer: Mapping[str, Any] = site.get("infer") or {}
        if site["type"] == "sample" and "_enumerate_dim" in infer:
            enum_dims.add(int(infer["_enumerate_dim"]))
    log_p = _per_datum(model_trace, plate, nesting, (particles, n), "model", enum_dims)
    if log_p.dim() > 2:
        log_p = log_p.logsumexp(dim=list(range(log_p.dim() - 2)))
    log_q = _per_datum(guide_trace, plate, nesting, (particles, n), "guide", set())
    log_w = log_p - log_q.to(log_p)
    if log_w.shape != (particles, n):
        raise ValueError(
            f"per-datum log-weights have shape {tuple(log_w.shape)}, expected ({particles}, {n}): "
            "a data-plate site does not broadcast over the particle plate"
        )
    return log_w


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(size, total - start)


def _importance_pointwise(
    model: Any,
    x: Tensor,
    guide: Callable[..., Any],
    num_particles: int,
    batch_size: int | None,
    max_elements: int,
    context: Mapping[str, Tensor],
) -> Tensor:
    params = getattr(model, "params_", None) or {}
    row = max(1, x[0].numel())
    if batch_size is None:
        # Rows per batch leave room for PARTICLES_PER_PASS particles at once: the guide's encoder
        # runs once per chunk of particles, so few large chunks beat many thin ones.
        per_pass = min(num_particles, PARTICLES_PER_PASS)
        batch_size = min(x.shape[0], max(1, max_elements // (row * per_pass)))
    with torch.no_grad(), warnings.catch_warnings():
        # Pyro notes guide sites the model lacks (e.g. conditioned globals): harmless here.
        warnings.simplefilter("ignore", UserWarning)
        rows = min(batch_size, x.shape[0])
        probe, probe_context = x[:rows], {k: v[:rows] for k, v in context.items()}
        nesting = max(
            pointwise.max_plate_nesting(pointwise.prototype_trace(model, probe, probe_context)),
            pointwise.max_plate_nesting(
                poutine.trace(poutine.block(poutine.condition(guide, data=dict(params)))).get_trace(
                    probe, **probe_context
                )
            ),
        )
        out = []
        for start, n in _chunks(x.shape[0], batch_size):
            xb = x[start : start + n]
            cb = {k: v[start : start + n] for k, v in context.items()}
            k_chunk = max(1, min(num_particles, max_elements // (n * row)))
            acc = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)
            for _, k in _chunks(num_particles, k_chunk):
                log_w = _log_weights(model, guide, xb, params, k, nesting, cb).to(acc)
                acc = torch.logaddexp(acc, log_w.logsumexp(0))
            out.append(acc - math.log(num_particles))
    return torch.cat(out)


# --------------------------------------------------------------------------- public API
def log_likelihood_pointwise(
    model: Any,
    x: Tensor,
    *,
    num_particles: int = 1000,
    guide: Callable[..., Any] | None = None,
    batch_size: int | None = None,
    max_elements: int = 2**24,
    force_importance: bool = False,
    context: Mapping[str, Any] | None = None,
) -> Tensor:
    """Per-datum ``log p(x_n)`` in nats, ``[N]``: exact when the family has a closed form.

    Families declaring ``exact_log_likelihood`` (PPCA, GMM) return ``model.log_prob(x)``. Otherwise
    (or with ``force_importance=True``) each value is the importance-weighted estimate

        ``L_K(x_n) = log (1/K) sum_k exp(log p(x_n, z_k) - log q(z_k | x_n))``,
        ``z_k ~ q(z | x_n)``

    of Burda et al. (2016, arXiv:1509.00519), where ``log p`` and ``log q`` sum every sample site
    of the data plate over every dimension but the data plate's, discrete model latents that the
    guide does not sample are summed out by enumeration, and global sites are fixed to
    ``model.params_`` when the model has one. ``E[L_K] <= log p(x_n)`` (Jensen): it is a
    stochastic *lower bound in expectation*, non-decreasing in ``K``, with bias
    ``~ Var(w / p(x_n)) / (2K) = O(1/K)``; it is exact for any ``K`` when the guide is the exact
    posterior. A single value may exceed ``log p(x_n)``.

    Cost and memory: ``K`` particles are drawn in chunks of ``k`` inside a vectorised plate
    around guide *and* model, for data batches of ``batch_size`` rows, with ``k * batch * D <=
    max_elements`` (``D`` the size of one row; at least one particle per chunk). By default
    the batches are small enough for ``min(K, 128)`` particles per pass, so that the guide (an
    encoder network, say) runs once per 128 particles rather than once per particle.

    Args:
        model: a :class:`~probgen.GenerativeModel` or a plain Pyro model function ``model(x)``
            with its per-datum sites in a plate named ``"data"`` (or ``model.data_plate``).
        x: data ``[N, ...]``; the result follows its dtype and device.
        num_particles: ``K >= 1``.
        guide: the proposal ``guide(x)``; defaults to the family's own guide.
        batch_size: rows per data batch (default: as many as ``max_elements`` allows).
        max_elements: bound on ``particles * rows * D`` per vectorised pass.
        force_importance: importance-sample even when an exact likelihood exists.
        context: per-datum keyword arguments of model and guide (e.g. a conditional VAE's
            labels ``{"y": y}``), ``N`` rows each, batched with ``x``.

    Raises:
        ValueError: ``K``, ``batch_size`` or ``max_elements`` < 1; ``x`` not ``[N, ...]`` or of
            the wrong width; no guide; a site that does not broadcast over the particle plate
            (the message names it); a guide with a non-point-mass global latent.
    """
    check_count(num_particles, "num_particles")
    if batch_size is not None:
        check_count(batch_size, "batch_size")
    check_count(max_elements, "max_elements")
    x = _check_x(model, x)
    ctx = check_context(context, x.shape[0], x.device)
    if getattr(model, "exact_log_likelihood", False) and not force_importance:
        if ctx:
            raise ValueError(f"{type(model).__name__} has an exact log-likelihood and no context")
        return model.log_prob(x).to(x)  # type: ignore[no-any-return]
    resolved = pointwise.resolve_guide(model, guide)
    return _importance_pointwise(model, x, resolved, num_particles, batch_size, max_elements, ctx)


def log_likelihood(
    model: Any,
    x: Tensor,
    *,
    num_particles: int = 1000,
    guide: Callable[..., Any] | None = None,
    batch_size: int | None = None,
    max_elements: int = 2**24,
    force_importance: bool = False,
    context: Mapping[str, Any] | None = None,
) -> Estimate:
    """Average held-out log-likelihood ``(1/N) sum_n log p(x_n)`` in nats per datum.

    The per-datum values are :func:`log_likelihood_pointwise` (same arguments). The standard
    error is that of the data: ``sd_n(log p(x_n)) / sqrt(N)`` (``inf`` for ``N = 1``), which
    is the uncertainty of the test-set average as an estimate of the population's expected
    log-likelihood; the importance-sampling bias (``O(1/K)``, negative in expectation) is *not*
    in it. Estimator ``"exact"`` or ``"importance-sampling"``; ``num_samples`` is ``K``.
    """
    values = log_likelihood_pointwise(
        model,
        x,
        num_particles=num_particles,
        guide=guide,
        batch_size=batch_size,
        max_elements=max_elements,
        force_importance=force_importance,
        context=context,
    )
    exact = getattr(model, "exact_log_likelihood", False) and not force_importance
    if values.numel() >= 2:
        value, se = mc_mean(values)
    else:
        value, se = values.mean(), torch.full_like(values.mean(), math.inf)
    return Estimate(
        value,
        se,
        "exact" if exact else "importance-sampling",
        num_samples=None if exact else num_particles,
    )


def bits_per_dim(
    log_likelihood_nats_per_datum: Estimate | Tensor | float,
    num_dims: int,
    *,
    discrete_levels: int | None = None,
) -> Estimate:
    """Negative log-likelihood in bits per dimension.

    ``bpd = -LL / (D log 2)``. For ``discrete_levels = L`` (e.g. 256 for 8-bit images), the
    model is a density on data scaled to ``[0, 1]`` by ``1/L`` after uniform dequantisation,
    ``y = (i + u) / L``; the change of variables gives the log-probability of the discrete data
    ``log P(i) >= LL_continuous(y) - D log L`` (Theis, van den Oord & Bethge 2016, "A note on
    the evaluation of generative models", arXiv:1511.01844), so

        ``bpd = -(LL - D log L) / (D log 2) = -LL / (D log 2) + log2 L``

    (e.g. ``+8`` bits per dim for 256 levels), as reported by Papamakarios, Pavlakou & Murray
    (2017, "Masked Autoregressive Flow for Density Estimation", arXiv:1705.07057).

    Args:
        log_likelihood_nats_per_datum: mean ``log p(x_n)`` in nats (an :class:`Estimate` in
            nats, e.g. from :func:`log_likelihood`, or a tensor/float).
        num_dims: ``D``, the number of dimensions of one datum.
        discrete_levels: ``L`` when the data were ``L``-level integers scaled by ``1/L``.

    Returns:
        An :class:`Estimate` in ``"bits/dim"`` whose standard error is the input's scaled by
        ``1 / (D log 2)``.
    """
    check_count(num_dims, "num_dims")
    if discrete_levels is not None:
        check_count(discrete_levels, "discrete_levels", 2)
    if isinstance(log_likelihood_nats_per_datum, Estimate):
        if log_likelihood_nats_per_datum.unit != "nats":
            raise ValueError(
                "log_likelihood_nats_per_datum must be in nats; got unit "
                f"{log_likelihood_nats_per_datum.unit!r}"
            )
        ll, se = log_likelihood_nats_per_datum.value, log_likelihood_nats_per_datum.stderr
        estimator, k = (
            log_likelihood_nats_per_datum.estimator,
            (log_likelihood_nats_per_datum.num_samples),
        )
    else:
        ll = torch.as_tensor(log_likelihood_nats_per_datum)
        if not ll.is_floating_point():
            ll = ll.to(torch.get_default_dtype())
        se, estimator, k = torch.zeros_like(ll), "exact", None
    scale = num_dims * math.log(2.0)
    bpd = -ll / scale
    if discrete_levels is not None:
        bpd = bpd + math.log2(discrete_levels)
    return Estimate(bpd, se / scale, estimator, unit="bits/dim", num_samples=k)


# The per-term bound lives in its own module; it is part of this module's API.
from probgen.bound import Bound, likelihood_bound  # noqa: E402
