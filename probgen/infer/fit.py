"""``fit(model, data, method=...)``: one entry point for EM, MAP, SVI, importance sampling, NUTS.

Every method returns a :class:`~probgen.Fit` and leaves the model holding its point estimate in
``model.params_``. Options are declared per method (dataclasses below); an unknown option is an
error that lists the allowed ones.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import autoguide
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from torch import Tensor

from probgen.core import GenerativeModel
from probgen.infer import elbos, pointwise, probe
from probgen.infer.em import run_em
from probgen.infer.importance import importance_sample
from probgen.infer.mcmc import RHAT_CONVERGED, convergence_diagnostics, run_nuts, unconstrained_mean
from probgen.infer.result import Fit
from probgen.infer.svi import run_svi
from probgen.program import PyroProgram
from probgen.validation import check_context, check_data

__all__ = ["METHODS", "EMOptions", "NUTSOptions", "SVIOptions", "fit"]


@dataclasses.dataclass(frozen=True)
class _Common:
    seed: int = 0
    device: str | None = None
    progress: bool | None = None


@dataclasses.dataclass(frozen=True)
class EMOptions(_Common):
    """``method="em"``: restarts, iteration limit, tolerance on the mean log-likelihood."""

    n_init: int = 1
    max_iter: int = 100
    tol: float = 1e-3


@dataclasses.dataclass(frozen=True)
class SVIOptions(_Common):
    """``method="svi"``, ``"map"`` and ``"is"`` (SVI, then importance sampling from the guide).

    Attributes:
        guide: autoguide name (see :data:`probgen.infer.elbos.GUIDES`), a guide callable, or
            None (the family's own guide, else ``"normal"``; ``"map"`` forces ``"delta"``).
        objective: ELBO name (see :data:`probgen.infer.elbos.OBJECTIVES`), an ELBO, or None
            (``"enum"`` when the model has discrete latent sites, else ``"trace"``).
        num_particles: Monte Carlo particles per step (IWAE's K for ``"iwae"``).
        steps / epochs: optimisation length; ``epochs`` counts passes over the data.
        batch_size: minibatch size (None: full batch); data-plate terms are scaled by N/B.
        lr, optimizer, clip_norm: learning rate, torch optimiser name or factory, gradient clip.
        validation_data, patience, eval_every: early stopping on the held-out negative ELBO.
        validation_context: the ``context`` of ``validation_data`` (same keys as ``context``).
        tol: plateau tolerance (nats per point) behind ``Fit.converged``.
        num_draws: posterior draws of the global sites taken from the fitted guide (None: the
            family's ``default_num_draws``, 1000 unless it says otherwise); for ``"is"``, the
            importance draws (each costs one pass of model and guide over the data).
    """

    guide: Any = None
    objective: Any = None
    num_particles: int = 1
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 0.01
    optimizer: Any = "adam"
    clip_norm: float | None = None
    validation_data: Any = None
    validation_context: Any = None
    patience: int = 10
    eval_every: int = 50
    tol: float = 1e-3
    num_draws: int | None = None


@dataclasses.dataclass(frozen=True)
class NUTSOptions(_Common):
    """``method="nuts"``: draws and warm-up per chain, chains, and NUTS's own settings."""

    num_samples: int = 500
    warmup_steps: int = 500
    num_chains: int = 2
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    jit_compile: bool = True


def _options(cls: type, method: str, given: Mapping[str, Any]) -> Any:
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for method {method!r}; "
            f"allowed: {', '.join(allowed)}"
        )
    return cls(**given)


def _as_model(model: Any, guide: Any) -> GenerativeModel:
    if isinstance(model, GenerativeModel):
        return model
    if callable(model):
        return PyroProgram(model, guide if callable(guide) else None)
    raise TypeError(f"model must be a GenerativeModel or a Pyro model function, got {type(model)}")


def _device(data: Tensor, device: str | None) -> torch.device:
    if device is None:
        return data.device
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available; use 'cpu'")
    return dev


def _progress(flag: bool | None) -> bool:
    import sys

    return sys.stderr.isatty() if flag is None else flag


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _fit_em(model: GenerativeModel, x: Tensor, opts: EMOptions) -> Fit:
    if not model.supports_em:
        raise ValueError(
            f"method='em' needs a family with closed-form EM steps; {type(model).__name__} "
            "does not declare supports_em. Use 'map', 'svi' or 'nuts'."
        )
    start = time.perf_counter()
    run = run_em(
        model,
        x,
        n_init=opts.n_init,
        max_iter=opts.max_iter,
        tol=opts.tol,
        generator=_generator(x.device, opts.seed),
        progress=_progress(opts.progress),
    )
    model.params_ = run.params
    return Fit(
        method="em",
        options=dataclasses.asdict(opts),
        objective="-log-likelihood per point",
        history=[-h for h in run.history],
        final_objective=-run.log_likelihood,
        wall_time=time.perf_counter() - start,
        n_iter=run.n_iter,
        converged=run.converged,
        params=run.params,
        draws=None,
        model=model,
        diagnostics={"restart_log_likelihoods": run.restarts},
        data_size=x.shape[0],
    )


def _init_fn(
    model: GenerativeModel, x: Tensor, seed: int
) -> Callable[[int], dict[str, Tensor] | None]:
    def init(chain: int) -> dict[str, Tensor] | None:
        return model.init_values(x, _generator(x.device, seed + chain))

    return init


def _fit_svi(
    model: GenerativeModel, x: Tensor, opts: SVIOptions, method: str, context: dict[str, Tensor]
) -> Fit:
    trace = probe.probe_trace(model, x, context)
    discrete, nesting = probe.hidden_discrete(trace)
    program = model.model
    hidden = poutine.block(program, hide=discrete) if discrete else program
    guide_opt = "delta" if method == "map" else opts.guide
    if guide_opt is None and model.has_guide():
        guide = model.guide
    elif callable(guide_opt) and not isinstance(guide_opt, str):
        guide = guide_opt
    else:
        init = model.init_values(x, _generator(x.device, opts.seed))
        init_loc = init_to_value(values=init, fallback=init_to_median) if init else init_to_median
        kind = guide_opt or "normal"
        # Flow guides start from a standard normal base and take no initial location.
        guide = elbos.make_guide(
            kind, hidden, **({} if kind == "iaf" else {"init_loc_fn": init_loc})
        )
        if isinstance(guide, torch.nn.Module):
            guide.to(x.device)
    probe.check_guide_sites(model, guide, trace, x, context, exempt=discrete)
    name = opts.objective or ("enum" if discrete else "elbo")
    objective_kwargs: dict[str, Any] = {"max_plate_nesting": max(nesting, 1)}
    if isinstance(name, str) and name in elbos.PER_DATUM:
        objective_kwargs["data_plate"] = model.data_plate
    if opts.num_particles > 1 or name in ("iwae", "renyi"):
        objective_kwargs.update(num_particles=opts.num_particles, vectorize_particles=True)
    if name in ("elbo", "iwae", "trace", "meanfield", "graph") and discrete:
        raise ValueError(
            f"objective={name!r} cannot handle the discrete latent site(s) {discrete}; use "
            "'enum' (the default for such models)"
        )
    elbo = elbos.make_objective(name, **objective_kwargs)
    steps = _steps(opts, x.shape[0])
    val = opts.validation_data
    val_context = None
    if val is not None:
        val = check_data(val, "validation_data", dim=x.shape[-1] if x.dim() > 1 else None).to(x)
        val_context = check_context(opts.validation_context, val.shape[0], x.device)
        if set(val_context) != set(context):
            raise ValueError(
                f"validation_context must have the keys of context ({sorted(context)}), got "
                f"{sorted(val_context)}"
            )
    elif opts.validation_context is not None:
        raise ValueError("validation_context was given without validation_data")
    start = time.perf_counter()
    run = run_svi(
        program,
        guide,
        x,
        context=context,
        validation_context=val_context,
        elbo=elbo,
        steps=steps,
        batch_size=opts.batch_size,
        lr=opts.lr,
        optimizer=opts.optimizer,
        clip_norm=opts.clip_norm,
        validation_data=val,
        patience=opts.patience,
        eval_every=opts.eval_every,
        tol=opts.tol,
        progress=_progress(opts.progress),
        generator=_generator(x.device, opts.seed),
        data_plate=model.data_plate,
        modules=(model, guide),
    )
    if isinstance(guide, autoguide.AutoLaplaceApproximation):
        # MAP first, then the Gaussian with the inverse Hessian at the mode (Laplace 1774).
        guide = guide.laplace_approximation(x, **context)
    num_draws = model.default_num_draws if opts.num_draws is None else opts.num_draws
    # "is" draws its own (weighted) draws from the guide afterwards.
    params, draws = _guide_posterior(
        model, guide, x, num_draws, point=method in ("map", "is"), context=context
    )
    model.params_ = params
    diagnostics: dict[str, Any] = {"objective_name": name, "discrete_sites": discrete}
    if val is not None:
        diagnostics["validation_history"] = run.validation_history
        diagnostics["early_stopped"] = run.early_stopped
    return Fit(
        method=method,
        options=_public(opts, guide=guide_opt or "model", objective=name),
        objective="-ELBO per point",
        history=run.history,
        final_objective=sum(run.history[-10:]) / len(run.history[-10:]),
        wall_time=time.perf_counter() - start,
        n_iter=run.steps,
        converged=run.converged,
        params=params,
        draws=draws,
        model=model,
        guide=guide,
        diagnostics=diagnostics,
        data_size=x.shape[0],
    )


def _steps(opts: SVIOptions, n: int) -> int:
    if opts.steps is not None and opts.epochs is not None:
        raise ValueError("give steps or epochs, not both")
    for name in ("steps", "epochs", "batch_size", "num_draws", "patience", "eval_every"):
        value = getattr(opts, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if opts.epochs is not None:
        per_epoch = 1 if opts.batch_size is None else -(-n // opts.batch_size)
        return opts.epochs * per_epoch
    return opts.steps if opts.steps is not None else 2000


def _public(opts: Any, **overrides: Any) -> dict[str, Any]:
    out = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)}
    out["validation_data"] = None if out.get("validation_data") is None else "given"
    out.update(overrides)
    return out


@torch.no_grad()
def _guide_posterior(
    model: GenerativeModel,
    guide: Any,
    x: Tensor,
    num_draws: int,
    point: bool,
    context: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """Point estimate and, unless ``point``, ``[1, S, ...]`` guide draws.

    The point estimate is the guide's median where it has one (an autoguide's ``median``, or
    a family's ``guide_median`` for its own guide), else the draws' mean in the unconstrained
    space (flows).
    """
    globals_ = pointwise.global_site_shapes(model, *probe.probe(x, context))
    draws = None
    if not globals_:  # only local latents (a VAE): nothing global to summarise
        return {}, None
    if not point:
        samples = [_draw_guide(guide, x, globals_, context) for _ in range(num_draws)]
        draws = model.canonicalize(
            {k: torch.stack([d[k] for d in samples]).unsqueeze(0) for k in globals_}
        )
    median = getattr(guide, "median", None)
    if median is None and getattr(guide, "__self__", None) is model:
        median = getattr(model, "guide_median", None)
    try:
        if median is None:
            raise NotImplementedError
        params = {k: v.detach() for k, v in median(x, **context).items() if k in globals_}
    except (AttributeError, NotImplementedError):
        if draws is None:
            params = _draw_guide(guide, x, globals_, context)
        else:
            params = unconstrained_mean(draws, pointwise.site_supports(model, x))
    return model.canonicalize(params), draws


def _draw_guide(
    guide: Any, x: Tensor, sites: Mapping[str, Any], context: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    trace = poutine.trace(guide).get_trace(x, **context)
    return {k: trace.nodes[k]["value"].detach() for k in sites if k in trace.nodes}


def _fit_is(model: GenerativeModel, x: Tensor, opts: SVIOptions, context: dict[str, Tensor]) -> Fit:
    """SVI as ``method="svi"``, then PSIS importance sampling with the fitted guide as proposal.

    ``draws`` are ``num_draws`` draws resampled (systematically) by the smoothed weights;
    ``params`` is the weighted posterior mean taken in each site's unconstrained space (as
    NUTS's point estimate); ``diagnostics`` adds ``khat`` and ``ess`` (the importance sampling
    effective sample size ``1 / sum w^2``) to SVI's.
    """
    if isinstance(opts.guide, str) and opts.guide == "delta":
        raise ValueError(
            "method='is' needs a guide with a density to weigh draws by; guide='delta' is a "
            "point mass (that is method='map'). Use 'normal', 'mvn', 'lowrank', 'laplace' or "
            "'iaf'."
        )
    with probe.forked_rng(x):
        has_globals = bool(pointwise.global_site_shapes(model, *probe.probe(x, context)))
    if not has_globals:
        raise ValueError(
            f"method='is' samples the global latent sites (parameters) of the model, and "
            f"{type(model).__name__} has none: all its latent sites are per datum (a VAE's "
            "codes). Use method='svi'; probgen.evaluate importance-samples per-datum likelihoods."
        )
    svi = _fit_svi(model, x, opts, "is", context)
    start = time.perf_counter()
    num_draws = model.default_num_draws if opts.num_draws is None else opts.num_draws
    result = importance_sample(model, svi.guide, x, num_draws, context=context)
    result = dataclasses.replace(result, draws=model.canonicalize(result.draws))
    nodes = probe.probe_trace(model, x, context).nodes
    supports = {name: nodes[name]["fn"].support for name in result.draws}
    params = model.canonicalize(result.mean(supports))
    resampled = result.resample(num_draws, _generator(result.log_weights.device, opts.seed))
    model.params_ = params
    return dataclasses.replace(
        svi,
        wall_time=svi.wall_time + time.perf_counter() - start,
        params=params,
        draws={k: v.unsqueeze(0) for k, v in resampled.items()},
        diagnostics={**svi.diagnostics, "khat": result.khat, "ess": result.ess},
    )


def _fit_nuts(model: GenerativeModel, x: Tensor, opts: NUTSOptions) -> Fit:
    trace = probe.probe_trace(model, x, None)
    probe.check_nuts_sites(model, trace)
    _, nesting = probe.hidden_discrete(trace)
    start = time.perf_counter()
    run = run_nuts(
        model.model,
        x,
        num_samples=opts.num_samples,
        warmup_steps=opts.warmup_steps,
        num_chains=opts.num_chains,
        target_accept_prob=opts.target_accept_prob,
        max_tree_depth=opts.max_tree_depth,
        max_plate_nesting=nesting,
        init=_init_fn(model, x, opts.seed),
        seed=opts.seed,
        progress=_progress(opts.progress),
        jit_compile=opts.jit_compile,
    )
    wall = time.perf_counter() - start
    draws = model.canonicalize(run.draws)
    params = unconstrained_mean(draws, pointwise.site_supports(model, x))
    model.params_ = params
    diag = convergence_diagnostics(draws)
    # The objective per draw: -log p(x, theta_s) / N, the sampler's potential energy per point.
    energy = -(pointwise.log_prior(model, x, draws) + model.log_likelihood(x, draws).sum(-1))
    energy = energy / x.shape[0]
    return Fit(
        method="nuts",
        options=dataclasses.asdict(opts),
        objective="-log joint per point",
        history=energy[0].tolist(),
        final_objective=energy.mean().item(),
        wall_time=wall,
        n_iter=opts.num_samples,
        converged=bool(diag["r_hat"] < RHAT_CONVERGED),
        params=params,
        draws=draws,
        model=model,
        diagnostics={
            **diag,
            "divergences": run.divergences,
            "accept_prob": run.accept_prob,
            "ess_per_second": diag["ess"] / wall,
        },
        data_size=x.shape[0],
    )


METHODS: dict[str, tuple[type, Callable[..., Fit]]] = {
    "em": (EMOptions, lambda m, x, o, c: _fit_em(m, x, o)),
    "map": (SVIOptions, lambda m, x, o, c: _fit_svi(m, x, o, "map", c)),
    "svi": (SVIOptions, lambda m, x, o, c: _fit_svi(m, x, o, "svi", c)),
    "nuts": (NUTSOptions, lambda m, x, o, c: _fit_nuts(m, x, o)),
    "is": (SVIOptions, lambda m, x, o, c: _fit_is(m, x, o, c)),
}

#: Methods that pass a ``context`` (e.g. a conditional VAE's labels) to model and guide.
CONTEXT_METHODS = ("map", "svi", "is")

#: Methods that take a ``guide``.
GUIDE_METHODS = ("svi", "is")


def fit(
    model: GenerativeModel | Callable[..., Any],
    data: Any,
    method: str = "svi",
    *,
    guide: Any = None,
    context: Mapping[str, Any] | None = None,
    **options: Any,
) -> Fit:
    """Fits ``model`` to ``data`` by ``method`` and returns the run as an immutable :class:`Fit`.

    Args:
        model: a :class:`~probgen.GenerativeModel`, or a plain Pyro model function ``f(x)``
            whose per-datum sites sit in ``pyro.plate("data", len(x))`` and whose observed site
            is ``"obs"``.
        data: ``[N, ...]`` tensor or array (float64 arrays stay float64). Moved to ``device``.
        method: ``"em"`` (closed-form EM, families with ``supports_em``), ``"map"`` (SVI with a
            point-mass guide: maximum a posteriori), ``"svi"`` (variational inference with any
            guide and objective), ``"is"`` (``"svi"``, then Pareto-smoothed importance sampling
            of the global sites with the fitted guide as proposal,
            :mod:`probgen.infer.importance`) or ``"nuts"`` (Pyro's NUTS, discrete sites
            enumerated).
        guide: for ``"svi"`` and ``"is"``, an autoguide name or a guide callable (see
            :class:`SVIOptions`); a callable must sample every latent site of the model
            (discrete sites that ``"enum"`` sums out excepted).
        context: per-datum conditioning inputs passed as keyword arguments to model and guide,
            e.g. ``{"y": labels}`` for a conditional VAE; each has ``N`` rows and is sliced with
            the minibatches (``"svi"``, ``"map"`` and ``"is"`` only).
        **options: method options: :class:`EMOptions`, :class:`SVIOptions` (also ``"is"``),
            :class:`NUTSOptions`; all take ``seed``, ``device`` and ``progress``.

    Returns:
        The :class:`Fit`; ``model.params_`` holds the point estimate.

    Raises:
        ValueError: an unknown method or option, bad data or context, a guide that misses a
            latent site of the model, ``"nuts"`` on a discrete latent site it cannot sum out,
            ``"is"`` on a model without global latent sites or with a point-mass guide.

    Example:
        >>> from models.gmm import GaussianMixture
        >>> gmm = GaussianMixture(n_components=2)
        >>> em = fit(gmm, probgen.data.load("faithful"), method="em")  # doctest: +SKIP
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    cls, runner = METHODS[method]
    if guide is not None:
        if method not in GUIDE_METHODS:
            raise ValueError(
                f"guide= is an option of method {' and '.join(map(repr, GUIDE_METHODS))}, not "
                f"{method!r}"
            )
        if isinstance(model, GenerativeModel) or isinstance(guide, str):
            options["guide"] = guide
    opts = _options(cls, method, options)
    x = check_data(data, "data")
    device = _device(x, opts.device)
    x = x.to(device)
    gm = _as_model(model, guide)
    if context is not None and method not in CONTEXT_METHODS:
        raise ValueError(
            f"context is supported by method {' and '.join(map(repr, CONTEXT_METHODS))}, not "
            f"{method!r}"
        )
    ctx = check_context(context, x.shape[0], device)
    gm.to(device)
    pyro.set_rng_seed(opts.seed)
    gm.setup(x, **ctx)
    return runner(gm, x, opts, ctx)
