"""``compare``: several inference methods on one model, as one table and a set of plots."""

from __future__ import annotations

import copy
import csv
import inspect
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import Tensor

from probgen.core import GenerativeModel
from probgen.diagnostics.vi import psis_khat
from probgen.infer.fit import METHODS, fit
from probgen.infer.result import Fit
from probgen.program import PyroProgram
from probgen.validation import check_data

__all__ = ["COLUMNS", "Comparison", "compare"]

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
    "khat": "k-hat",
    "converged": "converged",
}


#: Printed precision of columns that are not 4-decimal floats.
_FORMATS = {"wall_time": "{:.2f}", "ess": "{:.0f}", "r_hat": "{:.3f}", "khat": "{:.2f}"}


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

    Render with :meth:`to_text`, :meth:`to_markdown` or :meth:`to_csv`; draw with
    :meth:`figures` (matplotlib figures keyed by name).
    """

    rows: tuple[Mapping[str, Any], ...]
    fits: Mapping[str, Fit]
    data: Tensor
    test_data: Tensor | None = None
    columns: tuple[str, ...] = field(default=tuple(COLUMNS))

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(MappingProxyType(dict(r)) for r in self.rows))
        object.__setattr__(self, "fits", MappingProxyType(dict(self.fits)))

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
        """Matplotlib figures: ``"loss"`` (objective per iteration per method) and, for 1-D or
        2-D data, ``"density"`` (each fit's density over the data)."""
        from probgen import plots

        figs = {"loss": plots.loss_curves(self.fits)}
        if self.data.dim() == 2 and self.data.shape[1] in (1, 2):
            figs["density"] = plots.densities(self.fits, self.data)
        return figs


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
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    progress: bool = False,
    khat_draws: int = 500,
) -> Comparison:
    """Fits one model by each of ``methods`` and tabulates the results.

    Each method gets a fresh copy of the model. The table reports per method: the objective it
    optimised and its final value, wall time, iterations, train and held-out log predictive
    density per point (point fits: ``log p(x | theta_hat)``; fits with draws: the posterior
    predictive ``log mean_s p(x | theta_s)``), and where relevant NUTS's worst split R-hat and
    smallest ESS (Pyro's estimators), and PSIS k-hat of variational guides
    (:func:`probgen.diagnostics.psis_khat`).

    Args:
        model: a :class:`GenerativeModel` (deep-copied per method), its class or a zero-argument
            factory, or a plain Pyro model function ``f(x)``.
        data: training data.
        methods: any of ``fit``'s methods, in table order.
        test_data: optional held-out data for the ``test LL/pt`` column.
        options: per-method options for :func:`probgen.fit`, e.g.
            ``{"nuts": {"num_samples": 200}}``.
        seed: seed of every run (unless a method's options give one).
        progress: progress bars.
        khat_draws: guide draws for the k-hat of ``"svi"`` fits.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(methods))
    if unknown:
        raise ValueError(
            f"options given for method(s) {unknown} that are not in methods={list(methods)}"
        )
    if not methods:
        raise ValueError("methods must name at least one method")
    for method in methods:  # before any fit: a typo must not cost the runs before it
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    x = check_data(data, "data")
    xt = None if test_data is None else check_data(test_data, "test_data")
    build = _factory(model)
    fits: dict[str, Fit] = {}
    rows = []
    for method in methods:
        opts = {"seed": seed, "progress": progress, **options.get(method, {})}
        result = fit(build(), x, method=method, **opts)
        fits[method] = result
        rows.append(_row(result, x, xt, khat_draws))
    return Comparison(tuple(rows), fits, x, xt)


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
        "khat": None,
        "converged": result.converged,
    }
    if result.method == "svi" and result.guide is not None:
        row["khat"] = psis_khat(result.model, result.guide, xd, num_draws=khat_draws)
    return row
