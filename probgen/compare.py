"""``compare``: several inference methods on one model, as one table and a set of plots.

The methods (:data:`METHODS`) are named by what they approximate the posterior with: a point
(``map``, ``em``), a Gaussian at the mode (``laplace``), variational families of growing
flexibility (``meanfield``, ``lowrank``, ``fullrank``, ``flow``), the family's own guide
(``svi``), importance sampling from a fitted guide (``is``), and NUTS. Given a reference
posterior (draws of a long NUTS run, or posteriordb's), every row also reports how far each
method's posterior is from it (:func:`probgen.diagnostics.posterior_accuracy`) and a verdict
against stated thresholds.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import inspect
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from probgen.core import GenerativeModel
from probgen.diagnostics.accuracy import MEAN_ERROR_OK, SD_ERROR_OK, posterior_accuracy
from probgen.diagnostics.vi import KHAT_OK, psis_khat
from probgen.infer import pointwise
from probgen.infer.fit import fit
from probgen.infer.result import Fit
from probgen.program import PyroProgram
from probgen.validation import check_data

__all__ = ["COLUMNS", "METHODS", "Comparison", "compare"]

#: compare's method names -> (``probgen.fit`` method, default options). Users' ``options`` for
#: a method are merged over these defaults.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "em": ("em", {}),
    "map": ("map", {}),
    "laplace": ("svi", {"guide": "laplace"}),
    "meanfield": ("svi", {"guide": "normal"}),
    "lowrank": ("svi", {"guide": "lowrank"}),
    "fullrank": ("svi", {"guide": "mvn"}),
    "flow": ("svi", {"guide": "iaf"}),
    "svi": ("svi", {}),
    "is": ("is", {}),
    "nuts": ("nuts", {}),
}

#: Table columns, in order, with their printed headers.
COLUMNS: dict[str, str] = {
    "method": "method",
    "objective": "objective",
    "final_objective": "final",
    "wall_time": "time [s]",
    "n_iter": "iters",
    "train_ll": "train LL/pt",
    "test_ll": "test LL/pt",
    "r_hat": "R-hat",
    "ess": "ESS",
    "ess_per_second": "ESS/s",
    "khat": "k-hat",
    "mean_error": "worst mean err [sd]",
    "sd_error": "worst sd err",
    "coverage_90": "cov. 90%",
    "wasserstein": "SW1",
    "verdict": "verdict",
    "converged": "converged",
}


#: Printed precision of columns that are not 4-decimal floats.
_FORMATS = {
    "wall_time": "{:.2f}",
    "ess": "{:.0f}",
    "ess_per_second": "{:.1f}",
    "r_hat": "{:.3f}",
    "khat": "{:.2f}",
    "mean_error": "{:.2f}",
    "sd_error": "{:.2f}",
    "coverage_90": "{:.2f}",
    "wasserstein": "{:.3f}",
}


def _fmt(value: Any, column: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and column in _FORMATS:
        return _FORMATS[column].format(value)
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e4 else f"{value:.4f}"
    return str(value)


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare`: one row per method, the fits, and the data they saw.

    Render with :meth:`to_text`, :meth:`to_markdown`, :meth:`to_csv` or :meth:`report` (a
    self-contained HTML page or markdown with figures); draw with :meth:`figures`.

    Attributes:
        rows: one mapping per method, keyed by :data:`COLUMNS`.
        fits: the :class:`Fit` of each method.
        data, test_data: the data the methods saw.
        columns: the columns shown.
        reference: the reference posterior draws (``[chains, draws, *shape]`` per site), if any.
        accuracy: per method and scalar parameter, the errors against ``reference``.
        extra_figures: further figures for the report (e.g. an SBC ECDF plot).
        notes: markdown paragraphs for the report.
    """

    rows: tuple[Mapping[str, Any], ...]
    fits: Mapping[str, Fit]
    data: Tensor
    test_data: Tensor | None = None
    columns: tuple[str, ...] = field(default=tuple(COLUMNS))
    reference: Mapping[str, Tensor] | None = None
    accuracy: tuple[Mapping[str, Any], ...] = ()
    extra_figures: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(MappingProxyType(dict(r)) for r in self.rows))
        object.__setattr__(self, "fits", MappingProxyType(dict(self.fits)))
        object.__setattr__(
            self, "accuracy", tuple(MappingProxyType(dict(r)) for r in self.accuracy)
        )
        object.__setattr__(self, "extra_figures", MappingProxyType(dict(self.extra_figures)))

    def with_figures(self, figures: Mapping[str, Any], *notes: str) -> Comparison:
        """This comparison with further figures (and markdown notes) for its report, e.g.
        ``comparison.with_figures({"sbc": sbc_result.plot()})``."""
        return dataclasses.replace(
            self,
            extra_figures={**self.extra_figures, **figures},
            notes=(*self.notes, *notes),
        )

    def _cells(self) -> list[list[str]]:
        cols = [c for c in self.columns if any(r.get(c) is not None for r in self.rows)]
        return [[COLUMNS[c] for c in cols]] + [[_fmt(r.get(c), c) for c in cols] for r in self.rows]

    def to_text(self) -> str:
        """A fixed-width table for terminals."""
        cells = self._cells()
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        lines = [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(pairs))
            for pairs in (zip(row, widths, strict=True) for row in cells)
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """A GitHub-flavoured markdown table."""
        cells = self._cells()
        head = "| " + " | ".join(cells[0]) + " |"
        rule = "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(cells[0]))) + "|"
        body = ["| " + " | ".join(row) + " |" for row in cells[1:]]
        return "\n".join([head, rule, *body])

    def to_csv(self) -> str:
        """Machine-readable CSV with raw (unrounded) values and column keys as header."""
        out = io.StringIO()
        writer = csv.DictWriter(
            out, fieldnames=list(self.columns), extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in self.columns})
        return out.getvalue()

    def __str__(self) -> str:
        return self.to_text()

    def figures(self) -> dict[str, Any]:
        """Matplotlib figures: ``"loss"`` (objective per iteration per method); for 1-D or 2-D
        data, ``"density"`` (each fit's density over the data); ``"khat"`` (PSIS k-hat per
        variational method against 0.7); ``"posterior"`` (pairwise draws of up to four
        parameters per method over the reference's); then :attr:`extra_figures`."""
        from probgen import plots

        figs = {"loss": plots.loss_curves(self.fits)}
        if self.data.dim() == 2 and self.data.shape[1] in (1, 2) and self.reference is None:
            figs["density"] = plots.densities(self.fits, self.data)
        khats = {r["method"]: r["khat"] for r in self.rows if r.get("khat") is not None}
        if khats:
            figs["khat"] = plots.khat_bars(khats)
        if any(f.draws is not None for f in self.fits.values()) or self.reference is not None:
            figs["posterior"] = plots.posterior_pairs(self.fits, self.reference)
        return {**figs, **self.extra_figures}

    def report(self, title: str = "Which inference method should I trust?") -> Any:
        """A :class:`probgen.report.Report`: the table, the accuracy table, notes and figures
        (``.to_html()`` is one self-contained page; ``.write(path)`` writes it atomically)."""
        from probgen.report import comparison_report

        return comparison_report(self, title=title)


def _factory(model: Any) -> Callable[[], GenerativeModel]:
    """A zero-argument callable that builds a fresh, unfitted model for each method."""
    if isinstance(model, GenerativeModel):
        return lambda: copy.deepcopy(model)
    if isinstance(model, type) and issubclass(model, GenerativeModel):
        return model
    if callable(model):
        required = [
            p
            for p in inspect.signature(model).parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if not required:
            return model  # a factory
        return lambda: PyroProgram(model)
    raise TypeError(
        "model must be a GenerativeModel, a GenerativeModel class or zero-argument factory, or "
        f"a Pyro model function f(x); got {type(model).__name__}"
    )


def compare(
    model: Any,
    data: Any,
    methods: Sequence[str] = ("em", "map", "svi", "nuts"),
    test_data: Any = None,
    *,
    reference: Mapping[str, Any] | None = None,
    reference_map: Callable[[dict[str, Tensor]], Mapping[str, Tensor]] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    progress: bool = False,
    khat_draws: int = 500,
) -> Comparison:
    """Fits one model by each of ``methods`` and tabulates the results.

    Each method gets a fresh copy of the model. The table reports per method: the objective it
    optimised and its final value, wall time, iterations, train and held-out log predictive
    density per point (point fits: ``log p(x | theta_hat)``; fits with draws: the posterior
    predictive ``log mean_s p(x | theta_s)``), NUTS's worst split R-hat, smallest ESS and ESS
    per second (Pyro's estimators), and the PSIS k-hat of every variational posterior
    (:func:`probgen.diagnostics.psis_khat`; Yao et al. 2018: above 0.7 the guide is not a
    usable importance proposal and its posterior is suspect).

    With a ``reference`` posterior, each row adds the worst error of a posterior mean (in
    reference sds) and of a posterior sd, the coverage of the reference's central 90% intervals
    and a distance between the draws (:func:`probgen.diagnostics.posterior_accuracy`), and a
    verdict against :data:`~probgen.diagnostics.MEAN_ERROR_OK`,
    :data:`~probgen.diagnostics.SD_ERROR_OK` and :data:`~probgen.diagnostics.KHAT_OK`;
    ``Comparison.accuracy`` holds the per-parameter table.

    Args:
        model: a :class:`GenerativeModel` (deep-copied per method), its class or a zero-argument
            factory, or a plain Pyro model function ``f(x)``.
        data: training data.
        methods: names from :data:`METHODS`, in table order.
        test_data: optional held-out data for the ``test LL/pt`` column.
        reference: reference posterior draws, site name -> ``[chains, draws, *shape]`` or
            ``[draws, *shape]``, for every global latent site of the model.
        reference_map: maps a fit's draws (site -> ``[chains, draws, *shape]``) to the
            reference's parameters when they differ from the model's sites, e.g. a
            non-centred model's ``theta = mu + tau * theta_trans``
            (``models.posteriordb.EightSchoolsNoncentered.stan_parameters``). The reference
            must then be ``[chains, draws, *shape]``.
        options: per-method options for :func:`probgen.fit`, e.g.
            ``{"nuts": {"num_samples": 200}, "meanfield": {"steps": 3000}}``.
        seed: seed of every run (unless a method's options give one).
        progress: progress bars.
        khat_draws: guide draws for the k-hat of variational fits.
    """
    options = dict(options or {})
    methods = list(methods)
    unknown = sorted(set(options) - set(methods))
    if unknown:
        raise ValueError(f"options given for method(s) {unknown} that are not in methods={methods}")
    if not methods:
        raise ValueError("methods must name at least one method")
    for method in methods:  # before any fit: a typo must not cost the runs before it
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods has duplicates: {methods}")
    x = check_data(data, "data")
    xt = None if test_data is None else check_data(test_data, "test_data")
    build = _factory(model)
    ref = None
    if reference is not None:
        sites = None if reference_map is not None else pointwise.global_site_shapes(build(), x)
        ref = _check_reference(sites, x, reference)
    fits: dict[str, Fit] = {}
    rows = []
    accuracy: list[dict[str, Any]] = []
    for method in methods:
        fit_method, defaults = METHODS[method]
        opts = {"seed": seed, "progress": progress, **defaults, **options.get(method, {})}
        result = fit(build(), x, method=fit_method, **opts)
        fits[method] = result
        row = _row(result, x, xt, khat_draws)
        row["method"] = method
        if ref is not None:
            draws = result.posterior()
            mapped = dict(reference_map(draws)) if reference_map is not None else draws
            summary, per_parameter = _accuracy(mapped, ref, row["khat"])
            row.update(summary)
            accuracy.extend({"method": method, **r} for r in per_parameter)
        rows.append({column: row.get(column) for column in COLUMNS})
    return Comparison(tuple(rows), fits, x, xt, reference=ref, accuracy=tuple(accuracy))


def _check_reference(
    shapes: Mapping[str, Any] | None, x: Tensor, reference: Mapping[str, Any]
) -> dict[str, Tensor]:
    """The reference draws as ``[chains, draws, *shape]`` tensors, after checking they name the
    model's global sites (``shapes``; ``None`` when a ``reference_map`` renames the sites: the
    names are then checked against the mapped draws, by ``posterior_accuracy``)."""
    if not isinstance(reference, Mapping):
        raise TypeError(f"reference must map site names to draws, got {type(reference).__name__}")
    if shapes is None:
        return {k: torch.as_tensor(v, dtype=x.dtype) for k, v in reference.items()}
    missing = sorted(set(shapes) - set(reference))
    extra = sorted(set(reference) - set(shapes))
    if missing or extra:
        raise ValueError(
            "reference draws do not match the model's latent sites: "
            + "; ".join(
                part
                for part in (
                    f"missing {missing}" if missing else "",
                    f"not in the model {extra}" if extra else "",
                )
                if part
            )
            + f" (the model's sites: {sorted(shapes)})"
        )
    out = {}
    for name, value in reference.items():
        t = torch.as_tensor(value, dtype=x.dtype)
        shape = tuple(shapes[name])
        if tuple(t.shape[-len(shape) :] if shape else ()) != shape or t.dim() - len(shape) not in (
            1,
            2,
        ):
            raise ValueError(
                f"reference[{name!r}] has shape {tuple(t.shape)}; expected [draws, *{shape}] or "
                f"[chains, draws, *{shape}] for site {name!r}"
            )
        out[name] = t if t.dim() - len(shape) == 2 else t.unsqueeze(0)
    return out


def _row(result: Fit, x: Tensor, xt: Tensor | None, khat_draws: int) -> dict[str, Any]:
    xd = x.to(next(iter(result.params.values())).device)
    row: dict[str, Any] = {
        "method": result.method,
        "objective": result.objective,
        "final_objective": result.final_objective,
        "wall_time": result.wall_time,
        "n_iter": result.n_iter,
        "train_ll": result.log_likelihood(xd).mean().item(),
        "test_ll": None if xt is None else result.log_likelihood(xt.to(xd)).mean().item(),
        "r_hat": result.diagnostics.get("r_hat"),
        "ess": result.diagnostics.get("ess"),
        "ess_per_second": result.diagnostics.get("ess_per_second"),
        "khat": result.diagnostics.get("khat"),
        "converged": result.converged,
    }
    if row["khat"] is None and result.method == "svi" and result.draws is not None:
        # A variational posterior over global sites: is it a usable importance proposal?
        row["khat"] = psis_khat(result.model, result.guide, xd, num_draws=khat_draws)
    return row


def _accuracy(
    draws: Mapping[str, Tensor], reference: Mapping[str, Tensor], khat: float | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The row's accuracy columns and the per-parameter rows, against ``reference``."""
    report = posterior_accuracy(draws, reference, khat=khat)
    summary = report.summary_row()
    verdict = summary["verdict"]
    if verdict != "ok":  # the table's short form; the full reasons are in report.reasons
        worst = []
        if khat is not None and khat >= KHAT_OK:
            worst.append(f"k-hat {khat:.2f}")
        if abs(summary["worst_mean_error"]) >= MEAN_ERROR_OK:
            worst.append(f"mean {summary['worst_mean_parameter']}")
        if abs(summary["worst_sd_error"]) >= SD_ERROR_OK:
            worst.append(f"sd {summary['worst_sd_parameter']}")
        verdict += f" ({', '.join(worst) or summary['reason']})"
    return {
        "mean_error": summary["worst_mean_error"],
        "sd_error": summary["worst_sd_error"],
        "coverage_90": summary.get("coverage_90"),
        "wasserstein": summary["wasserstein"],
        "verdict": verdict,
    }, report.parameter_rows()
