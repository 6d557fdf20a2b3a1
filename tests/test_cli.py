"""The ``probgen`` command: help, ``families``, ``compare ... --out DIR`` and its refusals.

Commands run in-process through ``probgen.cli.main`` (one run goes through the installed
console script). Every refusal must exit with status 2, say what was wrong, and leave neither
the ``--out`` directory nor the temporary sibling that ``--out`` is assembled in.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import math
import shutil
import subprocess
from pathlib import Path

import arviz as az
import numpy as np
import pytest

from probgen.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAITHFUL_N = 272
TRAIN_N = FAITHFUL_N - round(0.2 * FAITHFUL_N)  # --test-fraction defaults to 0.2
OUTPUTS = {"table.md", "table.csv", "loss.png", "density.png", "em.nc", "map.nc", "report.html"}


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


# ----------------------------------------------------------------------------- help, families
def test_console_script_help():
    exe = shutil.which("probgen")
    assert exe is not None, "the probgen console script is not installed (pip install -e .)"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: probgen")
    for word in ("compare", "families", "ArviZ"):
        assert word in out.stdout


def test_help(capsys):
    assert _exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    assert "compare" in out and "families" in out


def test_compare_help(capsys):
    assert _exit_code(["compare", "--help"]) == 0
    out = capsys.readouterr().out
    for word in ("FAMILY", "--methods", "--data", "--out", "--k", "faithful", "em, map, svi, nuts"):
        assert word in out, word
    assert "netCDF" in out and "CSV" in out  # what --out writes


def test_families(capsys):
    assert main(["families"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "gmm\tmodels.gmm:GaussianMixture" in lines


def test_no_command_is_a_usage_error(capsys):
    assert _exit_code([]) == 2
    assert "COMMAND" in capsys.readouterr().err


# ----------------------------------------------------------------------------- compare --out
@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, str]:
    """One small run: EM and MAP (100 steps) on Old Faithful, written to a fresh directory."""
    out = tmp_path_factory.mktemp("cli") / "results"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(
            ["compare", "gmm", "--methods", "em,map", "--steps", "100", "--out", str(out)]
        )
    assert status == 0
    return out, stdout.getvalue()


def test_compare_writes_every_output(written):
    out, stdout = written
    assert {p.name for p in out.iterdir()} == OUTPUTS
    # Assembled in a temporary sibling that was renamed: nothing else is left next to it.
    assert [p.name for p in out.parent.iterdir()] == ["results"]
    assert f"{TRAIN_N} training points" in stdout
    assert "wrote" in stdout


def test_pngs_are_png(written):
    out, _ = written
    for name in ("loss.png", "density.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert len(data) > 1000


def test_tables(written):
    out, stdout = written
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert [r["method"] for r in rows] == ["em", "map"]
    md = (out / "table.md").read_text().splitlines()
    assert md[0].startswith("| method |")
    assert [line.split("|")[1].strip() for line in md[2:]] == ["em", "map"]
    printed = stdout.splitlines()
    for row in rows:
        train, test = float(row["train_ll"]), float(row["test_ll"])
        assert math.isfinite(train) and math.isfinite(test)
        # The printed table shows the same numbers, rounded to 4 decimals.
        line = next(line for line in printed if line.startswith(row["method"] + " "))
        assert f"{train:.4f}" in line and f"{test:.4f}" in line


@pytest.mark.parametrize("method", ["em", "map"])
def test_netcdf_opens_and_matches_table(method, written):
    out, _ = written
    idata = az.from_netcdf(str(out / f"{method}.nc"))
    assert {"posterior", "log_likelihood", "posterior_predictive", "observed_data"} <= set(
        idata.groups()
    )
    assert idata.posterior.attrs["inference_method"] == method
    loglik = idata.log_likelihood["obs"]
    assert loglik.shape == (1, 1, TRAIN_N)  # a point fit: one chain, one draw, training points
    assert idata.observed_data["obs"].shape == (TRAIN_N, 2)
    rows = csv.DictReader(io.StringIO((out / "table.csv").read_text()))
    row = next(r for r in rows if r["method"] == method)
    # The table's train LL/pt is the mean of this log-likelihood (one draw: no averaging).
    np.testing.assert_allclose(loglik.values.mean(), float(row["train_ll"]), rtol=1e-12)


def test_out_may_be_an_existing_empty_directory(tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["compare", "gmm", "--methods", "em", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == OUTPUTS - {"map.nc"}
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]
    assert "wrote" in capsys.readouterr().out


# ----------------------------------------------------------------------------- refusals
@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """CSV inputs in their own folder, so the test can see everything else in ``tmp_path``."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.savetxt(
        folder / "twenty.csv", rng.normal(size=(20, 2)), delimiter=",", header="a,b", comments=""
    )
    (folder / "text.csv").write_text("a,b\n1,2\n3,x\n5,6\n")
    (folder / "nan.csv").write_text("a,b\n1,2\n3,nan\n5,6\n7,8\n")
    return folder


# (argv after `compare`, what the message must name). {in} is the inputs folder.
REFUSALS = {
    "unknown-family": (["nope"], "unknown family 'nope'"),
    "unknown-method": (["gmm", "--methods", "em,foo"], "--methods: unknown ['foo']"),
    "empty-methods": (["gmm", "--methods", ","], "--methods"),
    "k-zero": (["gmm", "--k", "0"], "--k must be >= 1"),
    "k-not-int": (["gmm", "--k", "two"], "argument --k: invalid int value: 'two'"),
    "missing-csv": (["gmm", "--data", "{in}/nonexistent.csv"], "nonexistent.csv"),
    "non-numeric-csv": (["gmm", "--data", "{in}/text.csv"], "text.csv': data row 2 is not numeric"),
    "nan-csv": (["gmm", "--data", "{in}/nan.csv"], "NaN"),
    "test-fraction": (["gmm", "--test-fraction", "1.5"], "--test-fraction must be in [0, 1)"),
    "k-above-n": (["gmm", "--data", "{in}/twenty.csv", "--k", "50"], "fewer than --k=50"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_exits_2_and_leaves_nothing(case, inputs, tmp_path, capsys):
    args, expected = REFUSALS[case]
    out = tmp_path / "out"
    argv = ["compare", *[a.replace("{in}", str(inputs)) for a in args]]
    if "--methods" not in argv:
        argv += ["--methods", "em"]  # should a check be missing, fail fast rather than fit NUTS
    assert _exit_code([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert expected in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # no temporary sibling either


def test_nan_csv_error_names_the_file_and_row(inputs, tmp_path, capsys):
    assert _exit_code(["compare", "gmm", "--data", str(inputs / "nan.csv"), "--methods", "em"]) == 2
    err = capsys.readouterr().err
    assert "nan.csv" in err
    assert "row 2" in err


def test_non_empty_out_is_refused_and_kept(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert _exit_code(["compare", "gmm", "--methods", "em", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "not an empty directory" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("not a directory")
    assert _exit_code(["compare", "gmm", "--methods", "em", "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err
    assert out.read_text() == "not a directory"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_while_writing_leaves_nothing(error, tmp_path, monkeypatch, capsys):
    """The table, CSV and PNGs are already written when the netCDF export fails."""

    def broken(*args, **kwargs):
        raise error("export failed")

    monkeypatch.setattr(importlib.import_module("probgen.arviz"), "to_arviz", broken)
    out = tmp_path / "out"
    with pytest.raises(error, match="export failed"):
        main(["compare", "gmm", "--methods", "em", "--out", str(out)])
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    assert "wrote" not in capsys.readouterr().out


@pytest.mark.slow
def test_main_job_with_default_budgets(tmp_path, capsys):
    """The README's main job as shipped: EM, MAP, SVI and NUTS on Old Faithful, all defaults."""
    out = tmp_path / "main"
    assert main(["compare", "gmm", "--out", str(out)]) == 0
    rows = {r["method"]: r for r in csv.DictReader((out / "table.csv").read_text().splitlines())}
    assert set(rows) == {"em", "map", "svi", "nuts"}
    em_ll = float(rows["em"]["train_ll"])
    # MAP's weak prior and NUTS's posterior averaging move the train log predictive density by
    # O(p/N) ~ 0.05 nats per point at most; SVI's mean-field guide is within the same band.
    for method in ("map", "svi", "nuts"):
        assert abs(float(rows[method]["train_ll"]) - em_ll) < 0.05, method
    assert float(rows["nuts"]["r_hat"]) < 1.01
    assert math.isfinite(float(rows["svi"]["khat"]))
    assert "nuts" in capsys.readouterr().out
