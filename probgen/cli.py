"""The ``probgen`` command: ``probgen compare FAMILY``, ``probgen families``.

Results are values (:class:`~probgen.Comparison`); this module only renders and writes them.
``--out DIR`` is written atomically: everything goes to a temporary sibling directory that is
renamed to ``DIR`` only once complete, so a failure never leaves a partial ``DIR`` behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from probgen import data as datasets
from probgen.compare import Comparison, compare
from probgen.infer.fit import METHODS
from probgen.registry import families, get_family

__all__ = ["main"]

DEFAULT_METHODS = "em,map,svi,nuts"


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
        description="Fit FAMILY to the data by each method (EM, MAP, SVI, NUTS), print a table "
        "(objective, time, iterations, train/held-out log-likelihood per point, R-hat, ESS, "
        "PSIS k-hat) and, with --out, write the table (markdown, CSV), plots (PNG) and each "
        "fit's ArviZ InferenceData (netCDF).",
        epilog="example: probgen compare gmm --data faithful --k 2 --out results/",
    )
    cmp.add_argument("family", help="registered model family (see `probgen families`), e.g. gmm")
    cmp.add_argument(
        "--data",
        default="faithful",
        help=f"built-in data set ({', '.join(datasets.BUILTIN)}) or CSV path "
        "(numeric columns, optional header); default: faithful",
    )
    cmp.add_argument("--k", type=int, default=2, help="number of components (default: 2)")
    cmp.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"comma-separated, from {', '.join(METHODS)} (default: {DEFAULT_METHODS})",
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
    cmp.add_argument("--samples", type=int, default=300, help="NUTS draws per chain (default: 300)")
    cmp.add_argument(
        "--warmup", type=int, default=300, help="NUTS warm-up steps per chain (default: 300)"
    )
    cmp.add_argument("--chains", type=int, default=2, help="NUTS chains (default: 2)")
    cmp.add_argument(
        "--out", type=Path, help="directory to write results to (must not exist or be empty)"
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


def _check_out(out: Path | None) -> None:
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CLIError(
            f"--out {str(out)!r} exists and is not an empty directory; choose a new path"
        )


def write_outputs(comparison: Comparison, out: Path) -> None:
    """Writes table.md, table.csv, PNG figures and one netCDF per method, atomically."""
    from probgen.arviz import to_arviz

    out = out.resolve()
    created = [p for p in reversed(out.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "table.md").write_text(comparison.to_markdown() + "\n")
        (tmp / "table.csv").write_text(comparison.to_csv())
        for name, fig in comparison.figures().items():
            fig.savefig(tmp / f"{name}.png", dpi=110)
        for method, fit in comparison.fits.items():
            to_arviz(fit, comparison.data).to_netcdf(str(tmp / f"{method}.nc"))
        if out.exists():
            out.rmdir()  # checked empty before the run
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in reversed(created):  # only the (now empty) folders this run made
            parent.rmdir()
        raise


def _compare(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise CLIError(
            f"--methods: unknown {unknown or 'empty list'}; allowed: {', '.join(METHODS)}"
        )
    if args.k < 1:
        raise CLIError(f"--k must be >= 1, got {args.k}")
    _check_out(args.out)
    try:
        family = get_family(args.family)
        x = datasets.load(args.data, seed=args.seed)
    except ValueError as err:
        raise CLIError(str(err)) from err
    train, test = _split(x, args.test_fraction, args.seed)
    per_method = {
        "em": {"n_init": 3},
        "map": {"steps": args.steps, "lr": args.lr},
        "svi": {"steps": args.steps, "lr": args.lr, "num_draws": 500},
        "nuts": {
            "num_samples": args.samples,
            "warmup_steps": args.warmup,
            "num_chains": args.chains,
        },
    }
    options = {m: {**per_method.get(m, {}), "device": args.device} for m in methods}
    try:
        comparison = compare(
            lambda: family(n_components=args.k),
            train,
            methods,
            test,
            options=options,
            seed=args.seed,
            progress=args.progress,
        )
    except ValueError as err:
        # Family errors name constructor arguments; say which CLI flag sets them.
        raise CLIError(str(err).replace("n_components", "--k")) from err
    print(
        f"{args.family} (k={args.k}) on {args.data}: {train.shape[0]} training points"
        + (f", {test.shape[0]} held out" if test is not None else "")
    )
    print(comparison.to_text())
    if args.out is not None:
        write_outputs(comparison, args.out)
        print(
            f"wrote {args.out}/: table.md, table.csv, loss.png"
            + (", density.png" if train.shape[1] in (1, 2) else "")
            + ", "
            + ", ".join(f"{m}.nc" for m in methods)
        )
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
