"""How close are one method's posterior draws to a reference posterior?

For every scalar parameter ``theta_i`` (each element of each site, named ``theta[0]``,
``L[0,1]``), with ``m``/``s`` the method's draw mean and sd and ``m_ref``/``s_ref`` the
reference's:

* mean error ``(m - m_ref) / s_ref``, in reference sds (the standardised error of the
  validated-VI workflow of Huggins et al. 2020);
* sd error ``s / s_ref - 1``, the relative error of the posterior sd: relative, so one
  threshold serves parameters on every scale and it reads as a percentage ("-0.4: 40 % too
  narrow"); linear rather than ``log(s / s_ref)`` so that a threshold bounds the absolute error
  ``|s - s_ref|`` symmetrically;
* coverage at level ``L``: the fraction of the method's draws inside the reference's central
  ``L`` interval ``[q_ref((1 - L)/2), q_ref((1 + L)/2)]`` (ideal: ``L``; above ``L`` the method
  is too narrow, below it too wide or off-centre).

Jointly, after standardising every parameter by the reference, ``z_i = (theta_i - m_ref,i) /
s_ref,i``: the (sliced) 1-Wasserstein distance between the two sets of draws
(:func:`~probgen.diagnostics.wasserstein`; exact when there is one parameter) and the squared
MMD (:func:`~probgen.diagnostics.mmd`, median-heuristic Gaussian kernel, on at most
``max_mmd_draws`` evenly thinned draws of each). Chains are pooled. All figures carry Monte
Carlo error: the sd of a mean error is about ``sqrt((s/s_ref)^2 / ESS + 1 / ESS_ref)``, of an
sd error about ``sqrt(1 / (2 ESS) + 1 / (2 ESS_ref))`` (0.045 and 0.032 for 1000 effective
draws each, well inside the thresholds; with ESS near 100 they are not).

A point estimate (one draw, e.g. MAP) has a mean error but no sd: its sd error and coverage
are NaN and its MMD is ``None``; its Wasserstein distance is that of a point mass.
Parameters constant in the reference (a Cholesky factor's fixed entries) cannot be
standardised: they are listed in :attr:`AccuracyReport.constant`, left out of the tables and
distances, and only checked to be constant at the same value in the draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probgen.diagnostics._base import Estimate
from probgen.diagnostics.transport import wasserstein
from probgen.diagnostics.two_sample import mmd
from probgen.diagnostics.vi import KHAT_OK
from probgen.validation import check_count

__all__ = [
    "KHAT_OK",
    "MEAN_ERROR_OK",
    "SD_ERROR_OK",
    "AccuracyReport",
    "ParameterAccuracy",
    "posterior_accuracy",
]

#: |mean error| below a quarter reference sd: a 90 % interval shifted that far still covers
#: 88.9 % of the posterior (a 50 % one 48.7 %), while the threshold is 5.6 Monte Carlo sds of
#: the comparison itself with 1000 effective draws on each side, so noise does not flag an
#: exact method.
MEAN_ERROR_OK = 0.25
#: |sd / sd_ref - 1| below a quarter. At the edges a Gaussian method's own 90 % interval covers
#: 78 % (sd 25 % too small) or 96 % (25 % too large) of the posterior; mean-field VI on a
#: posterior with correlation 0.9 is 56 % too narrow. With 1000 effective draws each side the
#: threshold is 7.9 Monte Carlo sds.
SD_ERROR_OK = 0.25
#: Draws of a parameter constant in the reference match it within this relative tolerance
#: (of ``max(1, |c|)``): float32 transforms round such constants by ~1e-7.
_CONSTANT_RTOL = 1e-6


@dataclass(frozen=True)
class ParameterAccuracy:
    """Accuracy of one scalar parameter; ``sd``, ``sd_error`` and coverage NaN for one draw.

    Attributes:
        name: ``site`` or ``site[i,j]``.
        mean, sd: the method's draw mean and sd (divisor ``N - 1``).
        reference_mean, reference_sd: the reference's.
        mean_error: ``(mean - reference_mean) / reference_sd``.
        sd_error: ``sd / reference_sd - 1``.
        coverage: level -> fraction of draws in the reference's central interval.
    """

    name: str
    mean: float
    sd: float
    reference_mean: float
    reference_sd: float
    mean_error: float
    sd_error: float
    coverage: Mapping[float, float]

    def as_row(self) -> dict[str, Any]:
        """Plain ``{column: value}`` for rendering; coverage columns ``coverage_50`` etc."""
        row: dict[str, Any] = {"parameter": self.name}
        row.update({f.name: getattr(self, f.name) for f in fields(self)[1:-1]})
        row.update({_coverage_key(lv): c for lv, c in self.coverage.items()})
        return row


@dataclass(frozen=True)
class AccuracyReport:
    """One method's draws against the reference: per-parameter table, distances, verdict.

    Attributes:
        parameters: one :class:`ParameterAccuracy` per non-constant scalar parameter.
        levels: the interval levels of the coverage columns.
        num_draws, num_reference_draws: draws pooled over chains.
        wasserstein: ``W_1`` (sliced for several parameters) between standardised draws.
        mmd: squared MMD between standardised draws; ``None`` for a point estimate.
        khat: the Pareto k-hat the verdict used, if one was given.
        verdict: ``"ok"`` or ``"unreliable"``.
        reasons: why it is unreliable (which parameter, which threshold); empty when ok.
        constant: parameters constant in the reference, left out of the table.
    """

    parameters: tuple[ParameterAccuracy, ...]
    levels: tuple[float, ...]
    num_draws: int
    num_reference_draws: int
    wasserstein: Estimate
    mmd: Estimate | None
    khat: float | None
    verdict: str
    reasons: tuple[str, ...]
    constant: tuple[str, ...] = ()

    @property
    def point_estimate(self) -> bool:
        """Whether the method gave a single draw (sd and coverage undefined)."""
        return self.num_draws == 1

    def _worst(self, attr: str) -> ParameterAccuracy | None:
        defined = [p for p in self.parameters if not math.isnan(getattr(p, attr))]
        return max(defined, key=lambda p: abs(getattr(p, attr)), default=None)

    def summary_row(self) -> dict[str, Any]:
        """The method's row: verdict and reason, worst mean and sd errors (signed, largest in
        absolute value, with the parameter), mean coverage per level, distances.

        NaN marks undefined figures (sd, coverage and MMD of a point estimate, whose ``reason``
        notes that it was judged on its mean alone). The k-hat is not repeated: it is in the
        caller's table and in :attr:`khat`.
        """
        worst_mean, worst_sd = self._worst("mean_error"), self._worst("sd_error")
        row: dict[str, Any] = {
            "verdict": self.verdict,
            "reason": "; ".join(self.reasons + _POINT_NOTE * self.point_estimate),
            "worst_mean_error": worst_mean.mean_error if worst_mean else math.nan,
            "worst_mean_parameter": worst_mean.name if worst_mean else "",
            "worst_sd_error": worst_sd.sd_error if worst_sd else math.nan,
            "worst_sd_parameter": worst_sd.name if worst_sd else "",
        }
        for lv in self.levels:
            row[_coverage_key(lv)] = float(np.mean([p.coverage[lv] for p in self.parameters]))
        row["wasserstein"] = float(self.wasserstein)
        row["mmd"] = math.nan if self.mmd is None else float(self.mmd)
        row["num_draws"] = self.num_draws
        return row

    def parameter_rows(self) -> list[dict[str, Any]]:
        """One plain row per parameter (see :meth:`ParameterAccuracy.as_row`)."""
        return [p.as_row() for p in self.parameters]


_POINT_NOTE = ("point estimate: judged on its mean alone",)


def _coverage_key(level: float) -> str:
    return f"coverage_{100 * level:g}"


def _as_draws(sites: Any, arg: str, sample_dims: int) -> dict[str, Tensor]:
    """``{site: [N, *shape]}`` in float64 on the CPU, with the same ``N`` for every site."""
    if sample_dims not in (1, 2) or isinstance(sample_dims, bool):
        raise ValueError(
            f"{'reference_' if arg == 'reference' else ''}sample_dims must be 1 ([draws, *shape])"
            f" or 2 ([chains, draws, *shape]); got {sample_dims!r}"
        )
    if not isinstance(sites, Mapping):
        raise TypeError(
            f"{arg} must be a mapping site name -> draws [chains, draws, *shape] (or [draws, "
            f"*shape] with sample_dims=1); got {type(sites).__name__}"
        )
    if not sites:
        raise ValueError(f"{arg} is empty; it must hold the draws of at least one site")
    out: dict[str, Tensor] = {}
    for name, value in sites.items():
        x = torch.as_tensor(value).detach().to("cpu", torch.float64)
        shape = tuple(x.shape)
        if x.dim() < sample_dims:
            raise ValueError(
                f"{arg}[{name!r}] has shape {shape}; {sample_dims} leading sample "
                "dimension(s) are needed ([chains, draws, *shape] or [draws, *shape])"
            )
        x = x.reshape(-1, *x.shape[sample_dims:])
        if len(x) == 0:
            raise ValueError(f"{arg}[{name!r}] holds no draws (shape {shape})")
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise ValueError(f"{arg}[{name!r}] holds {bad} NaN/inf value(s); draws must be finite")
        out[str(name)] = x
    counts = {name: len(x) for name, x in out.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"{arg}'s sites have different numbers of draws: {counts}")
    return out


def _check_sites(draws: dict[str, Tensor], reference: dict[str, Tensor]) -> None:
    """Reference and draws must describe the same sites with the same parameter shapes."""
    shapes = {name: tuple(x.shape[1:]) for name, x in draws.items()}
    missing = sorted(set(draws) - set(reference))
    extra = sorted(set(reference) - set(draws))
    wrong = {
        name: (shapes[name], tuple(reference[name].shape[1:]))
        for name in draws
        if name in reference and shapes[name] != tuple(reference[name].shape[1:])
    }
    problems = []
    if missing:
        problems.append(f"the reference lacks parameter(s) {missing}")
    if extra:
        problems.append(f"the reference has parameter(s) {extra} that the draws do not")
    problems += [
        f"{n!r} has shape {d} in the draws but {r} in the reference" for n, (d, r) in wrong.items()
    ]
    if problems:
        raise ValueError(
            "reference does not match the draws: " + "; ".join(problems) + f". The model's "
            f"sites (from the draws) and their shapes: {shapes}"
        )


def flatten_draws(sites: dict[str, Tensor], order: Sequence[str]) -> tuple[list[str], Tensor]:
    """Names ``site[i,j]`` (C order) and the draws as one ``[N, D]`` matrix."""
    names: list[str] = []
    for site in order:
        shape = tuple(sites[site].shape[1:])
        names += [
            site if not shape else f"{site}[{','.join(map(str, i))}]" for i in np.ndindex(shape)
        ]
    return names, torch.cat([sites[s].reshape(len(sites[s]), -1) for s in order], 1)


def _quantile(s: Tensor, q: float) -> Tensor:
    """Column ``q``-quantiles of sorted ``s [N, D]``, interpolated linearly (numpy's default)."""
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(lv) for lv in levels)
    if not out or len(set(out)) != len(out) or not all(0 < lv < 1 for lv in out):
        raise ValueError(f"levels must be distinct numbers in (0, 1), at least one; got {levels!r}")
    return out


def _verdict(
    params: Sequence[ParameterAccuracy], off_constant: Sequence[str], khat: float | None
) -> tuple[str, ...]:
    reasons = []
    for attr, label, limit, const in (
        ("mean_error", "mean", MEAN_ERROR_OK, "MEAN_ERROR_OK"),
        ("sd_error", "sd", SD_ERROR_OK, "SD_ERROR_OK"),
    ):
        # `not <` also catches an infinite error; NaN (undefined sd) is skipped explicitly.
        bad = [
            p
            for p in params
            if not math.isnan(getattr(p, attr)) and not abs(getattr(p, attr)) < limit
        ]
        if bad:
            worst = max(bad, key=lambda p: abs(getattr(p, attr)))
            error = getattr(worst, attr)
            off = f"{error:+.3g} reference sd" if attr == "mean_error" else f"{100 * error:+.3g} %"
            reasons.append(
                f"{label} of {worst.name} off by {off} (|{label} error| >= {const} = {limit} "
                f"in {len(bad)} of {len(params)} parameters)"
            )
    if off_constant:
        reasons.append(f"{off_constant} are constant in the reference but not in the draws")
    if khat is not None and not khat < KHAT_OK:
        reasons.append(f"Pareto k-hat {khat:.3g} >= KHAT_OK = {KHAT_OK}")
    return tuple(reasons)


def posterior_accuracy(
    draws: Mapping[str, Any],
    reference: Mapping[str, Any],
    *,
    levels: Sequence[float] = (0.5, 0.9),
    khat: float | None = None,
    sample_dims: int = 2,
    reference_sample_dims: int = 2,
    num_projections: int = 256,
    max_mmd_draws: int = 1000,
    seed: int = 0,
) -> AccuracyReport:
    """Accuracy of posterior draws against reference draws, per parameter and jointly.

    Per scalar parameter: mean error ``(m - m_ref) / s_ref``, sd error ``s / s_ref - 1`` and
    the coverage of the reference's central intervals (module docstring); jointly, the sliced
    ``W_1`` and ``MMD^2`` between the draws standardised by the reference. Verdict
    ``"unreliable"`` when any ``|mean error| >= MEAN_ERROR_OK``, any ``|sd error| >=
    SD_ERROR_OK``, a reference constant is not matched, or ``khat >= KHAT_OK`` (Yao et al.
    2018; Vehtari et al. 2024); ``"ok"`` otherwise. A point estimate is judged on its mean
    (and k-hat) alone.

    Args:
        draws: site -> the method's draws ``[chains, draws, *shape]`` (a point fit: ``[1, 1,
            *shape]``), e.g. ``Fit.posterior()``.
        reference: site -> reference draws, same sites and shapes, at least 2 draws.
        levels: central-interval levels for the coverage, each in (0, 1).
        khat: Pareto k-hat of the method (e.g. :func:`~probgen.diagnostics.psis_khat`).
        sample_dims: leading sample dimensions of ``draws``: 2 (chains, draws) or 1 (draws).
        reference_sample_dims: the same for ``reference``.
        num_projections: random directions of the sliced Wasserstein distance.
        max_mmd_draws: evenly thinned draws of each sample for the ``O(N^2)`` MMD.
        seed: seeds the projections.

    Returns:
        :class:`AccuracyReport`.

    Raises:
        TypeError: ``draws`` or ``reference`` is not a mapping.
        ValueError: empty mappings; sites or shapes that do not match (naming them and listing
            the model's sites); fewer than 2 reference draws; NaN/inf draws; bad ``levels``,
            ``khat``, ``sample_dims`` or counts; no parameter that varies in the reference.

    References:
        Huggins, Kasprzak, Campbell & Broderick, "Validated variational inference via practical
        posterior error bounds", AISTATS 2020, arXiv:1910.04102. Yao, Vehtari, Simpson &
        Gelman, "Yes, but did it work?: Evaluating variational inference", ICML 2018,
        arXiv:1802.02538. Vehtari, Simpson, Gelman, Yao & Gabry, "Pareto smoothed importance
        sampling", JMLR 25, 2024.
    """
    lv = _check_levels(levels)
    if khat is not None and (isinstance(khat, bool) or math.isnan(float(khat))):
        raise ValueError(f"khat must be a number (or None); got {khat!r}")
    check_count(max_mmd_draws, "max_mmd_draws", 2)
    x_sites = _as_draws(draws, "draws", sample_dims)
    y_sites = _as_draws(reference, "reference", reference_sample_dims)
    _check_sites(x_sites, y_sites)
    names, x = flatten_draws(x_sites, list(x_sites))
    _, y = flatten_draws(y_sites, list(x_sites))
    n, m = len(x), len(y)
    if m < 2:
        raise ValueError(f"reference has {m} draw(s); at least 2 are needed for its sd")

    y_mean, y_sd = y.mean(0), y.std(0)
    constant = (y == y[0]).all(0)
    if bool(constant.all()):
        raise ValueError("every parameter is constant in the reference; nothing to compare")
    tol = _CONSTANT_RTOL * y[0].abs().clamp_min(1)
    off = ((x - y[0]).abs() > tol).any(0) & constant
    keep = (~constant).nonzero().squeeze(-1).tolist()

    x_mean = x.mean(0)
    # One draw has no sd (std would warn about zero degrees of freedom) and no coverage.
    nan = torch.full_like(x_mean, math.nan)
    x_sd = x.std(0) if n > 1 else nan
    ys = y.sort(0).values
    cover = {}
    for level in lv:
        lo, hi = _quantile(ys, (1 - level) / 2), _quantile(ys, (1 + level) / 2)
        cover[level] = ((x >= lo) & (x <= hi)).double().mean(0) if n > 1 else nan
    params = tuple(
        ParameterAccuracy(
            name=names[i],
            mean=float(x_mean[i]),
            sd=float(x_sd[i]),
            reference_mean=float(y_mean[i]),
            reference_sd=float(y_sd[i]),
            mean_error=float((x_mean[i] - y_mean[i]) / y_sd[i]),
            sd_error=float(x_sd[i] / y_sd[i] - 1),
            coverage={level: float(c[i]) for level, c in cover.items()},
        )
        for i in keep
    )

    zx = (x[:, keep] - y_mean[keep]) / y_sd[keep]
    zy = (y[:, keep] - y_mean[keep]) / y_sd[keep]
    w1 = wasserstein(zx, zy, p=1, num_projections=num_projections, seed=seed)
    mmd2 = mmd(_thin(zx, max_mmd_draws), _thin(zy, max_mmd_draws)) if n > 1 else None
    khat_f = None if khat is None else float(khat)
    reasons = _verdict(params, [names[i] for i in off.nonzero().squeeze(-1).tolist()], khat_f)
    return AccuracyReport(
        parameters=params,
        levels=lv,
        num_draws=n,
        num_reference_draws=m,
        wasserstein=w1,
        mmd=mmd2,
        khat=khat_f,
        verdict="unreliable" if reasons else "ok",
        reasons=reasons,
        constant=tuple(names[i] for i in constant.nonzero().squeeze(-1).tolist()),
    )


def _thin(z: Tensor, k: int) -> Tensor:
    """At most ``k`` evenly spaced rows: spans every chain and thins autocorrelated runs."""
    if len(z) <= k:
        return z
    return z[torch.linspace(0, len(z) - 1, k).round().long()]
