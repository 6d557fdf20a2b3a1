"""The variational bound on held-out data, term by term, so users see where the nats go.

For a model/guide pair with per-datum latents, ``-log p(x_n) <= -ELBO(x_n)`` and

    -ELBO(x_n) = sum_{latent z} E_q[log q(z | .) - log p(z | .)]  -  E_q[log p(x_n | .)],

a sum of per-site terms. :func:`likelihood_bound` reports each group of terms as a mean over the
data with its standard error, in nats per datum and in bits per dimension. A family may know its
terms better than one Monte Carlo draw through the traces does: a DDPM's ``bound_terms`` gives the
prior, diffusion and decoder terms of Ho et al. (2020, eq. 5) with analytic Gaussian KLs, and is
used when present. Otherwise the latent sites form ``"kl"`` and the observed site
``"reconstruction"`` (Kingma & Welling 2014, eq. 7; one guide draw per datum, so the split, not
only the total, is an unbiased estimate).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from probgen.diagnostics._base import Estimate, mc_mean
from probgen.infer import pointwise

__all__ = ["Bound", "likelihood_bound"]


@dataclass(frozen=True)
class Bound:
    """A negative ELBO on data, term by term.

    Attributes:
        terms: term name -> its mean over the data in nats per datum (with the data's standard
            error); they add up to ``total``.
        total: the bound ``-ELBO``, an upper bound on ``-log p(x)`` in nats per datum.
        num_dims: ``D``, the dimensions of one datum (for bits per dimension).
        per_datum: term name -> the ``[N]`` values behind ``terms``.
        data_term: the term that scores the data (``"decoder"``, ``"reconstruction"``).
    """

    terms: dict[str, Estimate]
    total: Estimate
    num_dims: int
    per_datum: dict[str, Tensor]
    data_term: str

    def bits_per_dim(self, discrete_levels: int | None = None) -> dict[str, Estimate]:
        """Every term and ``"total"`` in bits per dimension: nats / (D log 2).

        The values are exact for discrete likelihoods (Bernoulli, a DDPM's discretised
        decoder). A continuous density fitted to ``L``-level data dequantised to ``[0, 1]``
        needs ``discrete_levels=L``: ``log2 L`` is added to the data term and the total, as in
        :func:`probgen.evaluate.bits_per_dim` (Theis et al. 2016).
        """
        if discrete_levels is not None and (
            isinstance(discrete_levels, bool)
            or not isinstance(discrete_levels, int)
            or discrete_levels < 2
        ):
            raise ValueError(f"discrete_levels must be an integer >= 2, got {discrete_levels!r}")
        scale = self.num_dims * math.log(2.0)
        shift = math.log2(discrete_levels) if discrete_levels is not None else 0.0
        out = {}
        for name, est in (*self.terms.items(), ("total", self.total)):
            extra = shift if name in (self.data_term, "total") else 0.0
            out[name] = Estimate(
                est.value / scale + extra, est.stderr / scale, est.estimator, unit="bits/dim"
            )
        return out

    def table(self) -> str:
        """A plain-text table: each term in nats per datum and in bits per dimension."""
        bpd = self.bits_per_dim()
        rows = [f"{'term':<16}{'nats/datum':>14}{'+-':>3}{'se':>9}{'bits/dim':>11}"]
        for name, est in (*self.terms.items(), ("total", self.total)):
            rows.append(
                f"{name:<16}{float(est.value):>14.3f}{'':>3}{float(est.stderr):>9.3f}"
                f"{float(bpd[name].value):>11.4f}"
            )
        return "\n".join(rows)


def likelihood_bound(
    model: Any,
    x: Tensor,
    *,
    batch_size: int | None = None,
    guide: Callable[..., Any] | None = None,
    **terms_kwargs: Any,
) -> Bound:
    """``-ELBO`` per datum on ``x``, split into terms (module docstring).

    Args:
        model: a fitted family (or any object with ``model``/``guide`` Pyro programs and a
            ``data_plate``), or one with ``bound_terms(x, **terms_kwargs) -> {name: [N]}``.
        x: data ``[N, ...]``.
        batch_size: rows per pass (default: all at once for the trace path, 256 for
            ``bound_terms``, whose chain runs ``T`` network calls per row).
        guide: overrides ``model.guide`` on the trace path.
        **terms_kwargs: passed to the family's ``bound_terms`` (e.g. a DDPM's ``timesteps``).

    Returns:
        A :class:`Bound`; ``total`` is an upper bound on ``-log p(x)`` in nats per datum.
    """
    from probgen.evaluate import _check_x  # the shared data check (shape, the family's own)

    x = _check_x(model, x)
    n = x.shape[0]
    family_terms = getattr(model, "bound_terms", None)
    if terms_kwargs and not callable(family_terms):
        raise ValueError(
            f"{type(model).__name__} has no bound_terms: options {sorted(terms_kwargs)} apply "
            "to families that define it"
        )
    if batch_size is None:
        batch_size = 256 if callable(family_terms) else n
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    pieces: dict[str, list[Tensor]] = {}
    for start in range(0, n, batch_size):
        xb = x[start : start + batch_size]
        if callable(family_terms):
            found = family_terms(xb, **terms_kwargs)
        else:
            found = _trace_terms(model, xb, guide or model.guide)
        for name, values in found.items():
            pieces.setdefault(name, []).append(values.detach())
    per_datum = {name: torch.cat(v) for name, v in pieces.items()}
    total_values = sum(per_datum.values())
    assert isinstance(total_values, Tensor)
    return Bound(
        {name: _mean(v) for name, v in per_datum.items()},
        _mean(total_values),
        int(math.prod(x.shape[1:])) if x.dim() > 1 else 1,
        per_datum,
        getattr(model, "bound_data_term", "reconstruction"),
    )


def _mean(values: Tensor) -> Estimate:
    if values.numel() >= 2:
        value, se = mc_mean(values)
    else:
        value, se = values.mean(), torch.full_like(values.mean(), math.inf)
    return Estimate(value, se, "monte-carlo", unit="nats", num_samples=values.numel())


def _trace_terms(model: Any, x: Tensor, guide: Callable[..., Any]) -> dict[str, Tensor]:
    """One guide draw per datum; ``kl`` = sum of latent ``log q - log p``, ``reconstruction``
    = ``-log p(x | .)``, each ``[N]`` (site scales such as a beta-VAE's beta are ignored: the
    bound is on the unweighted model)."""
    plate = getattr(model, "data_plate", "data")
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    nesting = max(pointwise.max_plate_nesting(model_trace), 1)
    kl = x.new_zeros(x.shape[0])
    rec = x.new_zeros(x.shape[0])
    for role, trace in (("model", model_trace), ("guide", guide_trace)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if not any(f.name == plate for f in site["cond_indep_stack"]):
                if not site["is_observed"]:
                    raise ValueError(
                        f"the {role} samples the global site {name!r} outside the data plate "
                        f"{plate!r}: the bound does not split per datum; use "
                        "probgen.evaluate.log_likelihood"
                    )
                continue
            lp, _ = pointwise.per_datum_log_prob(_unscaled(site), plate, nesting)
            lp = lp.reshape(-1)
            if site["is_observed"]:
                rec = rec - lp
            else:
                kl = kl + lp if role == "guide" else kl - lp
    return {"kl": kl, "reconstruction": rec}


def _unscaled(site: Mapping[str, Any]) -> dict[str, Any]:
    """The site with ``log_prob`` = its masked, unscaled log density."""
    lp = site["fn"].log_prob(site["value"])
    mask = site["mask"]
    if mask is not None and mask is not True:
        lp = lp * 0.0 if mask is False else torch.where(mask, lp, lp.new_zeros(()))
    return {**site, "log_prob": lp}
