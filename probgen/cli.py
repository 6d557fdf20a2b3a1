"""The ``probgen`` command: ``probgen compare FAMILY``, ``probgen families``.

``FAMILY`` is a registered family or a user's Pyro model function, ``path/to/file.py:function``
(see :mod:`probgen.userprog`). Results are values (:class:`~probgen.Comparison`); this module
only renders and writes them. ``--out DIR`` is written atomically: everything goes to a
temporary sibling directory that is renamed to ``DIR`` only once complete, so a failure never
leaves a partial ``DIR`` behind; ``--out FILE.html`` / ``FILE.md`` writes just the report
(:mod:`probgen.report`), atomically too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from probgen import data as datasets
from probgen import userprog
from probgen.compare import Comparison, compare
from probgen.core import GenerativeModel
from probgen.infer import fit as fit_module
from probgen.program import PyroProgram
from probgen.registry import families, get_family
from probgen.report import comparison_report

__all__ = ["main"]

DEFAULT_METHODS = "em,map,svi,nuts"
#: A Pyro program has no closed-form EM steps.
PROGRAM_METHODS = "map,svi,nuts"
#: ``--out`` suffixes that write a single report file instead of a directory.
REPORT_SUFFIXES = (".html", ".md")


def known_methods() -> Mapping[str, Any]:
    """``probgen.compare``'s method names (falling back to ``probgen.fit``'s)."""
    compare_module = importlib.import_module("probgen.compare")  # the package attribute is
    return getattr(compare_module, "METHODS", None) or fit_module.METHODS  # the function


def _fit_method(method: str) -> str:
    """The ``probgen.fit`` method behind a ``compare`` method (e.g. ``meanfield`` -> ``svi``)."""
    entry = known_methods().get(method)
    if isinstance(entry, tuple) and entry and isinstance(entry[0], str):
        return entry[0]
    return method


class CLIError(Exception):
    """A user error: printed as ``probgen: error: ...`` with exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="probgen",
        description="Fit generative models written as Pyro programs, compare inference methods, "
        "and export posteriors to ArviZ.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cmp = sub.add_parser(
        "compare",
        help="fit one model family by several inference methods and compare them",
        description="Fit FAMILY (a registered model family, or your own Pyro model function "
        "given as path/to/file.py:function) to the data by each method, print a table "
        "(objective, time, iterations, train/held-out log-likelihood per point, R-hat, ESS, "
        "PSIS k-hat) and, with --out, write the table (markdown, CSV), plots (PNG), a "
        "self-contained HTML report and each fit's ArviZ InferenceData (netCDF).",
        epilog="examples: probgen compare gmm --data faithful --k 2 --out results/ ; "
        "probgen compare my_model.py:model --data data.csv --methods map,svi --out report.html",
    )
    cmp.add_argument(
        "family",
        metavar="FAMILY",
        help="registered model family (see `probgen families`), e.g. gmm, or a Pyro model "
        "function f(x) in a file, path/to/file.py:function (per-datum sites in "
        'pyro.plate("data", len(x)), observed site "obs")',
    )
    cmp.add_argument(
        "--data",
        help=f"built-in data set ({', '.join(datasets.BUILTIN)}) or a .csv (numeric columns, "
        "optional header), .npz (array 'x') or .json (list of numbers or rows) file; "
        "default: faithful for a family, required for a Pyro program",
    )
    cmp.add_argument(
        "--k",
        type=int,
        help="number of components of a family (default: 2); not for Pyro programs",
    )
    cmp.add_argument(
        "--methods",
        help=f"default: {DEFAULT_METHODS.replace(',', ', ')} for a family; "
        f"{PROGRAM_METHODS.replace(',', ', ')} for a Pyro program. Comma-separated, from "
        f"{', '.join(known_methods())}",
    )
    cmp.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    cmp.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    cmp.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of points held out for the test log-likelihood (default: 0.2)",
    )
    cmp.add_argument(
        "--steps", type=int, default=1000, help="SVI/MAP optimisation steps (default: 1000)"
    )
    cmp.add_argument("--lr", type=float, default=0.05, help="SVI/MAP learning rate (default: 0.05)")
    cmp.add_argument(
        "--draws",
        type=int,
        default=500,
        help="posterior draws taken from each variational guide, also used for its PSIS k-hat "
        "(default: 500)",
    )
    cmp.add_argument("--samples", type=int, default=300, help="NUTS draws per chain (default: 300)")
    cmp.add_argument(
        "--warmup", type=int, default=300, help="NUTS warm-up steps per chain (default: 300)"
    )
    cmp.add_argument("--chains", type=int, default=2, help="NUTS chains (default: 2)")
    cmp.add_argument(
        "--out",
        type=Path,
        help="directory to write results to (must not exist or be empty), or a new .html or "
        ".md file to write only the report to",
    )
    cmp.add_argument("--progress", action="store_true", help="show progress bars")
    sub.add_parser(
        "families",
        help="list the installed model families",
        description="List the model families registered under the entry-point group "
        "probgen.families.",
    )
    return parser


def _split(x: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not 0 <= fraction < 1:
        raise CLIError(f"--test-fraction must be in [0, 1), got {fraction}")
    n_test = round(fraction * x.shape[0])
    if n_test >= x.shape[0]:
        raise CLIError(f"--test-fraction {fraction} leaves no training points of {x.shape[0]}")
    if n_test == 0:
        return x, None
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    return x[order[n_test:]], x[order[:n_test]]


def _is_report_file(out: Path | None) -> bool:
    return out is not None and out.suffix.lower() in REPORT_SUFFIXES


def _check_out(out: Path | None) -> None:
    if out is None:
        return
    if _is_report_file(out):
        if out.exists():
            raise CLIError(f"--out {str(out)!r} exists; choose a new path")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CLIError(
            f"--out {str(out)!r} exists and is not an empty directory; choose a new path"
        )


@contextlib.contextmanager
def _parents(out: Path) -> Iterator[None]:
    """Creates the missing parents of ``out``; on failure removes those it made (now empty)."""
    created = [p for p in reversed(out.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for parent in reversed(created):
            with contextlib.suppress(OSError):  # never mask the original error
                parent.rmdir()
        raise


def _new_dir(out: Path) -> Path:
    """A new, empty sibling of ``out`` with the permissions the umask gives any new directory
    (``tempfile.mkdtemp`` makes private 0700 ones, which the rename would hand on to ``out``)."""
    while True:
        tmp = out.parent / f".{out.name}.{secrets.token_hex(6)}"
        try:
            tmp.mkdir(mode=0o777)
            return tmp
        except FileExistsError:  # pragma: no cover - a 48-bit name collision
            continue


def write_outputs(comparison: Comparison, out: Path, title: str | None = None) -> list[str]:
    """Writes table.md, table.csv, PNG figures, report.html and one netCDF per method, atomically;
    returns the names written."""
    from probgen.arviz import to_arviz

    out = out.resolve()
    report = comparison_report(comparison, **({} if title is None else {"title": title}))
    with _parents(out):
        tmp = _new_dir(out)
        try:
            (tmp / "table.md").write_text(comparison.to_markdown() + "\n")
            (tmp / "table.csv").write_text(comparison.to_csv())
            for name, png in report.images().items():
                (tmp / f"{name}.png").write_bytes(png)
            (tmp / "report.html").write_text(report.to_html(), encoding="utf-8")
            for method, fit in comparison.fits.items():
                to_arviz(fit, comparison.data).to_netcdf(str(tmp / f"{method}.nc"))
            names = [
                "table.md",
                "table.csv",
                *(f"{name}.png" for name in report.images()),
                "report.html",
                *(f"{method}.nc" for method in comparison.fits),
            ]
            if out.exists():
                out.rmdir()  # checked empty before the run
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return names


def write_report_file(comparison: Comparison, out: Path, title: str | None = None) -> Path:
    """Writes only the report, to ``out`` (``.html`` or ``.md``), atomically."""
    report = comparison_report(comparison, **({} if title is None else {"title": title}))
    with _parents(out):
        return report.write(out)


def _method_options(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """The CLI's budgets, as options of the ``probgen.fit`` method behind ``method``."""
    sampling = {"num_samples": args.samples, "warmup_steps": args.warmup, "num_chains": args.chains}
    own = {
        "em": {"n_init": 3},
        "map": {"steps": args.steps, "lr": args.lr},
        "svi": {"steps": args.steps, "lr": args.lr, "num_draws": args.draws},
        "nuts": sampling,
    }.get(_fit_method(method))
    if own is None:  # a method added later: the budgets its options class declares
        entry = fit_module.METHODS.get(_fit_method(method))
        cls = entry[0] if isinstance(entry, tuple) and entry else None
        fields = (
            {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        )
        budgets = {"steps": args.steps, "lr": args.lr, "num_draws": args.draws, **sampling}
        own = {k: v for k, v in budgets.items() if k in fields}
    return {**own, "device": args.device}


def _program(args: argparse.Namespace, methods: list[str]) -> tuple[Callable[[], Any], str]:
    """A factory of the user's program, after the checks that need no fitting."""
    if args.k is not None:
        raise CLIError(
            "--k sets the number of components of a registered family; it does not apply to a "
            f"Pyro program ({args.family})"
        )
    if args.data is None:
        raise CLIError(
            "a Pyro program needs --data: a .csv, .npz or .json file, or a built-in data set "
            f"({', '.join(datasets.BUILTIN)})"
        )
    function = userprog.load_function(args.family)

    def build() -> GenerativeModel:
        return PyroProgram(function)

    em = [m for m in methods if _fit_method(m) == "em"]
    if em and not build().supports_em:
        raise CLIError(
            f"--methods: {', '.join(em)} needs a family with closed-form EM steps; a Pyro "
            f"program can use the others, e.g. {PROGRAM_METHODS}"
        )
    return build, args.family


def _family(args: argparse.Namespace) -> tuple[Callable[[], Any], str]:
    k = 2 if args.k is None else args.k
    if k < 1:
        raise CLIError(f"--k must be >= 1, got {k}")
    family = get_family(args.family)
    return (lambda: family(n_components=k)), f"{args.family} (k={k})"


def _load(name: str, program: bool, seed: int) -> torch.Tensor:
    if program:
        return userprog.load_data(name, seed=seed)
    if Path(name).suffix.lower() in (".npz", ".json"):
        x = userprog.load_data(name, seed=seed)
        return x if x.dim() == 2 else x.unsqueeze(-1)  # families take [N, D]
    return datasets.load(name, seed=seed)


def _compare(args: argparse.Namespace) -> int:
    program = userprog.is_program_spec(args.family)
    allowed = known_methods()
    given = (
        args.methods
        if args.methods is not None
        else (PROGRAM_METHODS if program else DEFAULT_METHODS)
    )
    methods = [m.strip() for m in given.split(",") if m.strip()]
    unknown = [m for m in methods if m not in allowed]
    if unknown or not methods:
        raise CLIError(
            f"--methods: unknown {unknown or 'empty list'}; allowed: {', '.join(allowed)}"
        )
    if not program and args.k is not None and args.k < 1:
        raise CLIError(f"--k must be >= 1, got {args.k}")
    if args.draws < 1:
        raise CLIError(f"--draws must be >= 1, got {args.draws}")
    _check_out(args.out)
    data = args.data if args.data is not None or program else "faithful"
    try:
        build, label = _program(args, methods) if program else _family(args)
        x = _load(data, program, args.seed)
    except ValueError as err:
        raise CLIError(str(err)) from err
    train, test = _split(x, args.test_fraction, args.seed)
    options = {m: _method_options(m, args) for m in methods}
    try:
        comparison = compare(
            build,
            train,
            methods,
            test,
            options=options,
            seed=args.seed,
            progress=args.progress,
            khat_draws=args.draws,
        )
    except ValueError as err:
        # Family errors name constructor arguments; say which CLI flag sets them.
        raise CLIError(str(err) if program else str(err).replace("n_components", "--k")) from err
    print(
        f"{label} on {data}: {train.shape[0]} training points"
        + (f", {test.shape[0]} held out" if test is not None else "")
    )
    print(comparison.to_text())
    if args.out is not None:
        title = f"probgen compare {label} on {Path(data).name}"
        if _is_report_file(args.out):
            print(f"wrote {write_report_file(comparison, args.out, title)}")
        else:
            names = write_outputs(comparison, args.out, title)
            print(f"wrote {args.out}/: {', '.join(names)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``probgen`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "families":
            for name, ep in sorted(families().items()):
                print(f"{name}\t{ep.value}")
            return 0
        return _compare(args)
    except CLIError as err:
        parser.exit(2, f"probgen: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
