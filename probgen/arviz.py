"""The ArviZ bridge: the only module of probgen that imports ArviZ.

It converts fits to ``InferenceData`` (:func:`to_arviz`), computes PSIS-LOO for every fit with
posterior draws, variational ones included (:func:`loo`), and compares models by it
(:func:`compare_models`, :func:`plot_compare`, :func:`plot_pareto_k`).

:func:`to_arviz` turns any :class:`~probgen.Fit` into ``arviz.InferenceData`` with the groups
``posterior``, ``log_likelihood``, ``posterior_predictive`` and ``observed_data``, so that
``az.summary``, ``az.loo``, ``az.compare`` and ``az.plot_trace`` work for every method:

* NUTS fits: the chains as sampled (components in canonical order, see the family's
  ``canonicalize``);
* SVI fits: independent draws from the fitted guide, as one chain (``az.loo`` on them treats
  the guide as the posterior; :func:`loo` corrects for the difference);
* EM and MAP fits: the point estimate as a single chain with a single draw. ArviZ accepts it,
  but LOO and R-hat need many draws and are not meaningful for it.

Written against ArviZ 0.x (``arviz>=0.20,<1``); ArviZ 1.x support is a change to this module.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyro
import torch
import xarray as xr
from pyro import poutine
from pyro.distributions import Delta
from pyro.infer.autoguide import AutoGuide
from scipy.special import logsumexp
from torch import Tensor

from probgen.diagnostics.vi import KHAT_GOOD, KHAT_OK, khat_from_log_weights
from probgen.infer import pointwise
from probgen.infer.result import Fit
from probgen.validation import check_count, check_data

with warnings.catch_warnings():
    # ArviZ >= 0.23 announces its 1.x refactor once a day on import; we pin arviz<1.
    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
    import arviz as az

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ParetoKWarning",
    "compare_models",
    "loo",
    "pareto_k_summary",
    "plot_compare",
    "plot_pareto_k",
    "to_arviz",
]

OBS_DIM = "obs_id"


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


@torch.no_grad()
def _predictive(fit: Fit, n: int, posterior: dict[str, Tensor]) -> Tensor:
    """One simulated data set of ``n`` points per posterior draw, ``[chain, draw, n, ...]``."""
    chains, draws = next(iter(posterior.values())).shape[:2]
    sims = [
        fit.model.sample(n, params={k: v[c, s] for k, v in posterior.items()})
        for c in range(chains)
        for s in range(draws)
    ]
    stacked = torch.stack(sims)
    return stacked.reshape((chains, draws, *stacked.shape[1:]))


def to_arviz(
    fit: Fit,
    data: Any,
    *,
    posterior_predictive: bool | None = None,
    coords: dict[str, Any] | None = None,
    dims: dict[str, list[str]] | None = None,
) -> az.InferenceData:
    """Converts a fit and its training data to ``arviz.InferenceData``.

    Args:
        fit: any :class:`~probgen.Fit`.
        data: the observed data ``[N, ...]`` (the training data for ``az.loo``).
        posterior_predictive: simulate one replicate data set per draw (None: when the model
            can generate data; a plain Pyro function can if it takes ``n``).
        coords, dims: extra ArviZ coordinates and dimension names (e.g. names of mixture
            components). Observations are indexed by the dimension ``"obs_id"``.

    Returns:
        InferenceData with ``posterior`` (chain, draw), ``log_likelihood`` (one value per
        observation per draw: ``log p(x_n | theta_s)``, local latents summed out),
        ``posterior_predictive`` and ``observed_data``.
    """
    if not isinstance(fit, Fit):
        raise TypeError(f"fit must be a probgen.Fit, got {type(fit).__name__}")
    posterior = fit.posterior()
    device = next(iter(posterior.values())).device
    x = check_data(data, "data").to(device=device)
    obs = getattr(fit.model, "obs_site", "obs")
    loglik = fit.log_likelihood(x, pointwise_draws=True)
    event_dims = [f"{obs}_dim_{i}" for i in range(x.dim() - 1)]
    family_dims = fit.model.site_dims() if hasattr(fit.model, "site_dims") else {}
    all_dims = {obs: [OBS_DIM, *event_dims], **family_dims, **(dims or {})}
    groups: dict[str, Any] = {
        "posterior": {k: _numpy(v) for k, v in posterior.items()},
        "log_likelihood": {obs: _numpy(loglik)},
        "observed_data": {obs: _numpy(x)},
    }
    if posterior_predictive is None:
        posterior_predictive = getattr(fit.model, "can_generate", True)
    if posterior_predictive:
        groups["posterior_predictive"] = {obs: _numpy(_predictive(fit, x.shape[0], posterior))}
    idata = az.from_dict(**groups, coords=coords, dims=all_dims)
    idata.posterior.attrs["inference_method"] = fit.method
    return idata


# ----------------------------------------------------------------------------- PSIS-LOO
#: Fewer draws than this leave too few tail ratios (``3 sqrt(S)``) for a stable Pareto fit.
MIN_LOO_DRAWS = 100


class ParetoKWarning(UserWarning):
    """Some observation's Pareto k exceeds ``min(1 - 1/log10(S), 0.7)``: its LOO term is
    unreliable (Vehtari et al. 2024, arXiv:1507.02646)."""


def _good_k(num_draws: int) -> float:
    return min(1.0 - 1.0 / math.log10(num_draws), KHAT_OK)


def _warn_high_k(pareto_k: np.ndarray, good_k: float) -> bool:
    high = int((pareto_k > good_k).sum())
    if high:
        warnings.warn(
            f"{high} of {pareto_k.size} observations have Pareto k above {good_k:.2f} (max "
            f"{np.nanmax(pareto_k):.2f}): their LOO terms are unreliable; use more draws, a "
            "better posterior approximation, or exact refits for those observations",
            ParetoKWarning,
            stacklevel=4,  # the caller of loo()
        )
    return bool(high)


def _loo_from_draws(fit: Fit, x: Tensor) -> az.ELPDData:
    """ArviZ's PSIS-LOO of posterior draws (MCMC: r_eff from the chains' ESS)."""
    idata = to_arviz(fit, x, posterior_predictive=False)
    with warnings.catch_warnings():
        # Re-issued below as a ParetoKWarning, the same for every kind of fit.
        warnings.filterwarnings("ignore", "Estimated shape parameter of Pareto", UserWarning)
        result = az.loo(idata, pointwise=True, scale="log")
    _warn_high_k(result["pareto_k"].values, float(result["good_k"]))
    result["approximation"] = "posterior draws"
    return result


def _latent(trace: Any) -> dict[str, Any]:
    return {k: s for k, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]}


def _check_guide(trace: Any, plate: str, shapes: Mapping[str, Any]) -> None:
    """A guide LOO can use: a proper distribution over every global site and nothing else."""
    latent = _latent(trace)
    local = [k for k, s in latent.items() if any(f.name == plate for f in s["cond_indep_stack"])]
    if local:
        raise ValueError(
            f"loo needs a guide over the global sites only; this one samples {local} in the data "
            f"plate {plate!r}, so its draws are not draws of the parameters alone"
        )
    missing = sorted(set(shapes) - set(latent))
    point = all(isinstance(getattr(s["fn"], "base_dist", s["fn"]), Delta) for s in latent.values())
    if missing or point:
        raise ValueError(
            "loo needs a guide that is a distribution over every global site; "
            + (f"this one lacks {missing}" if missing else "this one is a point mass")
            + ". Fit with method='svi' (a non-delta guide) or 'nuts'"
        )


class _NotVectorized(Exception):
    """The guide's draws did not come out with one leading dimension per particle."""


def _draws_vectorized(
    guide: Any, x: Tensor, shapes: Mapping[str, torch.Size], num_draws: int, nesting: int
) -> tuple[Tensor, dict[str, Tensor]]:
    """All draws in one pass of an autoguide inside a particle plate (as ``Predictive``)."""
    with pyro.plate("_loo_draws", num_draws, dim=-1 - nesting):
        trace = poutine.trace(guide).get_trace(x)
    trace.compute_log_prob()
    log_q = x.new_zeros(num_draws)
    for site in _latent(trace).values():
        lp = site["log_prob"]
        lp = lp.reshape((1,) * (nesting + 1 - lp.dim()) + lp.shape)
        if lp.dim() != nesting + 1 or lp.shape[0] not in (1, num_draws):
            raise _NotVectorized
        log_q = log_q + lp.expand(num_draws, *lp.shape[1:]).reshape(num_draws, -1).sum(-1)
    params = {}
    for name, shape in shapes.items():
        value = trace.nodes[name]["value"]
        # Plate dimensions a site does not use come out as singletons; only those may differ.
        if value.shape[0] != num_draws or [d for d in value.shape[1:] if d != 1] != [
            d for d in shape if d != 1
        ]:
            raise _NotVectorized
        params[name] = value.reshape(num_draws, *shape)
    return log_q, params


def _draws_sequential(
    guide: Any, x: Tensor, shapes: Mapping[str, torch.Size], num_draws: int
) -> tuple[Tensor, dict[str, Tensor]]:
    log_q, samples = [], []
    for _ in range(num_draws):
        trace = poutine.trace(guide).get_trace(x)
        trace.compute_log_prob()
        log_q.append(sum((s["log_prob_sum"] for s in _latent(trace).values()), x.new_zeros(())))
        samples.append({k: trace.nodes[k]["value"] for k in shapes})
    return torch.stack(log_q), {k: torch.stack([d[k] for d in samples]) for k in shapes}


@torch.no_grad()
def _guide_draws(fit: Fit, x: Tensor, num_draws: int, seed: int) -> tuple[Tensor, Tensor]:
    """``S`` draws ``theta_s ~ q`` of the fitted guide, scored once each.

    Returns ``log p(y, theta_s) - log q(theta_s)`` ``[S]`` and ``log p(y_i | theta_s)``
    ``[S, N]``. Components stay as the guide drew them (not canonicalised): ``q`` must be
    evaluated where it sampled, and prior and likelihood are invariant to relabelling.
    This is :func:`probgen.diagnostics.vi.log_importance_weights` restricted to global-only
    guides, keeping the draws so that the same ``theta_s`` enter the pointwise likelihood.
    Autoguides draw all particles in one vectorised pass; other guides, one pass per draw.
    """
    model, guide = fit.model, fit.guide
    with warnings.catch_warnings():
        torch.manual_seed(seed)
        warnings.simplefilter("ignore", UserWarning)  # Pyro notes guide sites absent in the model
        shapes = pointwise.global_site_shapes(model, x)
        probe = poutine.trace(guide).get_trace(x)
        _check_guide(probe, getattr(model, "data_plate", "data"), shapes)
        draws = None
        if isinstance(guide, AutoGuide):
            try:
                nesting = pointwise.max_plate_nesting(probe)
                draws = _draws_vectorized(guide, x, shapes, num_draws, nesting)
            except (_NotVectorized, RuntimeError, ValueError):
                draws = None
        log_q, params = draws or _draws_sequential(guide, x, shapes, num_draws)
        loglik_fn = getattr(model, "log_likelihood", None)
        if loglik_fn is not None:
            loglik = loglik_fn(x, params)
        else:
            loglik = pointwise.log_likelihood(model, x, params)
        log_prior = pointwise.log_prior(model, x, params)
    loglik = loglik.to(torch.float64)
    log_joint = log_prior.to(loglik) + loglik.sum(-1)
    return log_joint - log_q.to(loglik), loglik


def _loo_from_guide(fit: Fit, x: Tensor, num_draws: int, seed: int) -> az.ELPDData:
    """PSIS-LOO of a posterior approximation q (Magnusson et al. 2019; Vehtari et al. 2017).

    ``log r_is = [log p(y, theta_s) - log q(theta_s)] - log p(y_i | theta_s)``, Pareto-smoothed
    per observation (r_eff = 1: independent draws) and self-normalised to ``w_is``;
    ``elpd_loo_i = log sum_s w_is p(y_i | theta_s)``. ``p_loo = lppd - elpd_loo`` with the
    full-data ``lppd_i = log sum_s v_s p(y_i | theta_s)``, ``v_s`` the smoothed normalised
    ratios ``p(y, theta_s) / q(theta_s)``: the posterior's lppd, which plain averaging over q
    (as R's ``loo_approximate_posterior`` does) only approximates.
    """
    log_w, loglik = _guide_draws(fit, x, num_draws, seed)
    if not torch.isfinite(log_w).any():
        raise ValueError("every guide draw has zero posterior density (log p(y, theta) = -inf)")
    ll = loglik.T.cpu().numpy()  # [N, S]: ArviZ wants draws last
    lw = log_w.cpu().numpy()
    with np.errstate(invalid="ignore", over="ignore"):
        loo_lw, pareto_k = az.psislw(lw[None, :] - ll, 1.0)
        full_lw, _ = az.psislw(lw[None, :], 1.0)
    loo_i = logsumexp(loo_lw + ll, axis=-1)
    lppd = float(logsumexp(full_lw + ll, axis=-1).sum())
    n = ll.shape[0]
    good_k = _good_k(num_draws)
    warned = _warn_high_k(pareto_k, good_k)
    coords = {OBS_DIM: np.arange(n)}
    fields = {  # ArviZ's entries, in ArviZ's order, then ours
        "elpd_loo": float(loo_i.sum()),
        "se": math.sqrt(n * loo_i.var()),
        "p_loo": lppd - float(loo_i.sum()),
        "n_samples": num_draws,
        "n_data_points": n,
        "warning": warned,
        "loo_i": xr.DataArray(loo_i, dims=[OBS_DIM], coords=coords, name="loo_i"),
        "pareto_k": xr.DataArray(pareto_k, dims=[OBS_DIM], coords=coords, name="pareto_shape"),
        "scale": "log",
        "good_k": good_k,
        "approximation": "importance-corrected guide draws",
        "guide_pareto_k": khat_from_log_weights(log_w),  # -inf for flat weights: exact guide
    }
    return az.ELPDData(data=list(fields.values()), index=list(fields))


def loo(fit: Fit, data: Any, *, num_draws: int = 1000, seed: int = 0) -> az.ELPDData:
    """Pareto-smoothed importance-sampling leave-one-out cross-validation of a fit.

    ``elpd_loo = sum_i log p(y_i | y_{-i})`` (Vehtari, Gelman & Gabry 2017, arXiv:1507.04544),
    each term estimated from posterior draws reweighted towards the leave-one-out posterior:

    * fits whose draws are posterior draws (NUTS, or any fit with draws and no guide):
      ``r_is = 1 / p(y_i | theta_s)``, ArviZ's ``az.loo`` with r_eff from the chains' ESS;
    * fits with a variational guide (SVI; any fit whose draws came from ``fit.guide``):
      ``num_draws`` fresh guide draws with ``r_is = p(y, theta_s) / q(theta_s) / p(y_i |
      theta_s)``, which corrects for ``q`` not being the posterior (Magnusson, Andersen,
      Jonasson & Vehtari 2019, arXiv:1904.10679); PSIS with r_eff = 1.

    The result is ArviZ's ``ELPDData`` (``az.compare`` accepts it) with ArviZ's entries
    (``elpd_loo``, ``se``, ``p_loo``, ``n_samples``, ``n_data_points``, ``warning``,
    ``loo_i``, ``pareto_k`` per observation, ``scale="log"``, ``good_k``) plus
    ``approximation`` and, for guides, ``guide_pareto_k``: the k-hat of ``p(y, theta) /
    q(theta)`` itself (Yao et al. 2018). :func:`pareto_k_summary` counts the high k's.

    Args:
        fit: a :class:`~probgen.Fit` with posterior draws (not EM or MAP).
        data: the training data ``[N, ...]`` the fit saw.
        num_draws: guide draws ``S >= 100`` (variational fits only).
        seed: seeds the guide draws (variational fits only); the global RNG is left untouched.

    Raises:
        TypeError: ``fit`` is not a Fit.
        ValueError: a point fit (EM, MAP, a delta guide), a guide over local latents, data of
            another size than the fit's, or ``num_draws < 100``.

    Warns:
        ParetoKWarning: some ``pareto_k`` exceeds ``good_k = min(1 - 1/log10(S), 0.7)``.
    """
    if not isinstance(fit, Fit):
        raise TypeError(f"fit must be a probgen.Fit, got {type(fit).__name__}")
    check_count(num_draws, "num_draws", MIN_LOO_DRAWS)
    if fit.draws is None:
        raise ValueError(
            f"loo needs posterior draws of the global parameters, but this {fit.method!r} fit "
            "has none (a point estimate, or a model without global latent sites); refit with "
            "method='svi' or 'nuts'"
        )
    device = next(iter(fit.draws.values())).device
    x = check_data(data, "data").to(device=device)
    if fit.data_size and x.shape[0] != fit.data_size:
        raise ValueError(
            f"data has {x.shape[0]} rows but the fit was trained on {fit.data_size}: LOO scores "
            "the training data"
        )
    # Prototype runs of the model and the guide draws consume random numbers; the caller's
    # stream is left as it was.
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        if fit.guide is not None and fit.method != "nuts":
            return _loo_from_guide(fit, x, num_draws, seed)
        return _loo_from_draws(fit, x)


def pareto_k_summary(elpd: az.ELPDData) -> dict[str, float | int]:
    """The largest Pareto k and how many observations exceed 0.5, 0.7, ``good_k`` and 1."""
    k = np.asarray(elpd["pareto_k"])
    return {
        "max": float(np.nanmax(k)),
        "above_0.5": int((k > KHAT_GOOD).sum()),
        "above_0.7": int((k > KHAT_OK).sum()),
        "above_good_k": int((k > float(elpd["good_k"])).sum()),
        "above_1": int((k > 1.0).sum()),
    }


# ----------------------------------------------------------------------------- comparison
#: Model weights ``az.compare`` can compute.
WEIGHTING = ("stacking", "bb-pseudo-bma", "pseudo-bma")


def compare_models(
    fits: Mapping[str, Fit | az.ELPDData],
    data: Any,
    *,
    ic: str = "loo",
    method: str = "stacking",
    num_draws: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """``az.compare`` of several fits to the same data by their PSIS-LOO (:func:`loo`).

    Models are ranked by ``elpd_loo``; ``elpd_diff`` and ``dse`` are the difference to the best
    model and its standard error ``sqrt(N var_i(elpd_i - elpd_best_i))``; ``weight`` are
    stacking weights (Yao, Vehtari, Simpson & Gelman 2018, arXiv:1704.02030) by default.

    Args:
        fits: name -> Fit (or a precomputed ``ELPDData``); at least two.
        data: the training data all fits saw.
        ic: ``"loo"`` (WAIC is not defined for guide draws).
        method: ArviZ's weighting, ``"stacking"``, ``"bb-pseudo-bma"`` or ``"pseudo-bma"``.
        num_draws, seed: passed to :func:`loo`.

    Returns:
        ArviZ's table, columns ``rank, elpd_loo, p_loo, elpd_diff, weight, se, dse, warning,
        scale``, best model first.
    """
    if ic != "loo":
        raise ValueError(f"ic must be 'loo' (the only criterion defined for all fits), got {ic!r}")
    if not isinstance(method, str) or method.lower() not in WEIGHTING:
        raise ValueError(f"method must be one of {', '.join(WEIGHTING)}, got {method!r}")
    if not isinstance(fits, Mapping) or len(fits) < 2:
        raise ValueError("fits must be a mapping of at least two names to probgen.Fit objects")
    elpds = {
        str(name): f if isinstance(f, az.ELPDData) else loo(f, data, num_draws=num_draws, seed=seed)
        for name, f in fits.items()
    }
    sizes = {name: int(e["n_data_points"]) for name, e in elpds.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the fits were scored on data of different sizes: {sizes}")
    with warnings.catch_warnings():
        # ArviZ 0.23 calls DataFrame.sort_values(inplace=True), deprecated in pandas 3.1.
        warnings.filterwarnings("ignore", "The inplace keyword", DeprecationWarning)
        return az.compare(elpds, ic="loo", method=cast(Any, method), scale="log")


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize, layout="constrained").add_subplot()


def plot_compare(table: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """``elpd_loo +- se`` per model (filled) and ``elpd_diff +- dse`` to the best (open), best
    on top: the picture of ``az.plot_compare``, drawn with matplotlib alone."""
    missing = {"elpd_loo", "se", "elpd_diff", "dse"} - set(table.columns)
    if missing:
        raise ValueError(f"table must be compare_models' output; it lacks {sorted(missing)}")
    ax = _axes(ax, (6.0, 1.0 + 0.6 * len(table)))
    y = np.arange(len(table))[::-1].astype(float)
    best = float(table["elpd_loo"].iloc[0])
    ax.errorbar(table["elpd_loo"], y, xerr=table["se"], fmt="o", color="C0", label="elpd_loo")
    ax.errorbar(
        best - table["elpd_diff"].iloc[1:],
        y[1:] - 0.25,
        xerr=table["dse"].iloc[1:],
        fmt="^",
        mfc="none",
        color="C1",
        label="best - elpd_diff",
    )
    ax.axvline(best, color="0.6", ls="--", lw=1)
    ax.set_yticks(y, [str(name) for name in table.index])
    ax.set_xlabel("elpd_loo (log score, higher is better)")
    ax.legend(loc="best", fontsize="small")
    return ax.figure  # type: ignore[return-value]


def plot_pareto_k(elpd: az.ELPDData, ax: Axes | None = None) -> Figure:
    """Pareto k of each observation against its index, with the 0.5 and 0.7 thresholds."""
    if not isinstance(elpd, az.ELPDData) or "pareto_k" not in elpd:
        raise ValueError("elpd must be the result of loo() (an ELPDData with pareto_k)")
    k = np.asarray(elpd["pareto_k"])
    ax = _axes(ax, (7.0, 3.0))
    colours = np.where(k > KHAT_OK, "C3", np.where(k > KHAT_GOOD, "C1", "C0"))
    ax.scatter(np.arange(k.size), k, c=colours, s=12)
    for level, style in ((KHAT_GOOD, ":"), (KHAT_OK, "--")):
        ax.axhline(level, color="0.4", ls=style, lw=1)
    ax.set_xlabel("observation")
    ax.set_ylabel("Pareto k")
    return ax.figure  # type: ignore[return-value]


def model_comparison_report(
    fits: Mapping[str, Fit],
    data: Any,
    *,
    title: str = "Model comparison by PSIS-LOO",
    **kwargs: Any,
) -> Any:
    """A :class:`probgen.report.Report` of :func:`compare_models`: ArviZ's table, its plot,
    and each model's Pareto k per observation (``.to_html()`` is one self-contained page).

    Args:
        fits, data: as in :func:`compare_models`.
        title: the report's title.
        **kwargs: further arguments of :func:`loo` (``num_draws``, ``seed``).
    """
    from probgen.report import Report

    elpds = {str(name): loo(f, data, **kwargs) for name, f in fits.items()}
    table = compare_models(elpds, data)
    report = Report(title)
    report.add_text(
        "Models ranked by expected log predictive density, estimated by Pareto-smoothed "
        "importance-sampling leave-one-out (Vehtari, Gelman & Gabry 2017); variational fits use "
        "importance-corrected ratios (Magnusson et al. 2019). Pareto k above 0.7 marks "
        "observations whose estimate is unreliable."
    )
    columns = ["model", *map(str, table.columns)]
    rows = [
        [str(name), *row]
        for name, row in zip(table.index, table.itertuples(index=False), strict=True)
    ]
    report.add_table("az.compare", columns, rows)
    report.add_figure("ELPD by model", plot_compare(table), name="compare")
    for name, elpd in elpds.items():
        report.add_figure(f"Pareto k: {name}", plot_pareto_k(elpd), name=f"pareto_k_{name}")
    return report
