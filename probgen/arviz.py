"""The ArviZ bridge: the only module of probgen that imports ArviZ.

:func:`to_arviz` turns any :class:`~probgen.Fit` into ``arviz.InferenceData`` with the groups
``posterior``, ``log_likelihood``, ``posterior_predictive`` and ``observed_data``, so that
``az.summary``, ``az.loo``, ``az.compare`` and ``az.plot_trace`` work for every method:

* NUTS fits: the chains as sampled (components in canonical order, see the family's
  ``canonicalize``);
* SVI fits: independent draws from the fitted guide, as one chain;
* EM and MAP fits: the point estimate as a single chain with a single draw. ArviZ accepts it,
  but LOO and R-hat need many draws and are not meaningful for it.

Written against ArviZ 0.x (``arviz>=0.20,<1``); ArviZ 1.x support is a change to this module.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probgen.infer.result import Fit
from probgen.validation import check_data

with warnings.catch_warnings():
    # ArviZ >= 0.23 announces its 1.x refactor once a day on import; we pin arviz<1.
    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing", category=FutureWarning)
    import arviz as az

__all__ = ["to_arviz"]

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
