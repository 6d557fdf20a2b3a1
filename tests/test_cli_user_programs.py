"""``probgen compare path/to/file.py:function``: a user's own Pyro program on .csv, .npz and .json
data, the report it writes, and every refusal (exit status 2, a message naming what was wrong,
nothing written).

The fitted model is Normal with unknown mean and scale: the table's log-likelihoods are
recomputed by scipy from the data file and the draws each fit exported, which checks that the
file was read as written (header, rows, columns) and fitted as such.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import os
import re
import sys
from pathlib import Path

import arviz as az
import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from probgen import userprog
from probgen.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N = 200
TRUE_LOC, TRUE_SCALE = 3.0, 2.0
# The table's log-likelihoods and scipy's, from the same parameters and data. The fit's
# parameters are float32 (the model's prior constants are), and torch evaluates log(scale) and
# scale^2 in float32 before mixing in the float64 data: float32 rounding (eps 6e-8) on O(1)
# terms; measured 1.3e-8 relative.
LOGLIK_RTOL = 1e-6
# Guide draws per variational fit (and for its k-hat): PSIS fits the largest
# min(0.2 S, 3 sqrt(S)) = 20 ratios, above the 10 it needs; the CLI's 500 cost 5x the time.
DRAWS = 100
# Optimisation steps: the tests check what is written, not how well a short run fits.
STEPS = 30

MODEL = """
import pyro
import pyro.distributions as dist
import torch

NOT_CALLABLE = 3


class Thing:
    pass


def model(x):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=x)


def model_rows(x):
    zeros = torch.zeros(x.shape[-1])
    loc = pyro.sample("loc", dist.Normal(zeros, 10.0).to_event(1))
    scale = pyro.sample("scale", dist.LogNormal(zeros, 1.0).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(loc, scale).to_event(1), obs=x)


def two_args(x, y):
    pass


def _private(x):
    pass
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Model files and data files (seeded draws from Normal(3, 2)) in one folder."""
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "model.py").write_text(MODEL)
    (folder / "broken.py").write_text("import pyro\n\ndef model(x:\n    pass\n")
    (folder / "raises.py").write_text("raise RuntimeError('boom')\n")
    rng = np.random.default_rng(0)
    x = rng.normal(TRUE_LOC, TRUE_SCALE, size=N)
    np.savetxt(folder / "data.csv", x, header="value", comments="")
    (folder / "data.json").write_text(json.dumps(x.tolist()))
    # Three columns: beyond the 1-D/2-D data that get a density plot, which costs time.
    x2 = rng.normal(TRUE_LOC, TRUE_SCALE, size=(N, 3))
    np.savez(folder / "data.npz", x=x2, labels=np.arange(N))
    (folder / "bad.csv").write_text("a,b\n1,2\n3,x\n")
    np.savez(folder / "keys.npz", a=x, b=x)
    (folder / "ragged.json").write_text("[[1, 2], [3]]")
    (folder / "data.txt").write_text("1\n2\n")
    return folder


def _run(argv: list[str]) -> str:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    return stdout.getvalue()


def _embedded_pngs(html_text: str) -> list[bytes]:
    sources = re.findall(r'<img src="([^"]*)"', html_text)
    prefix = "data:image/png;base64,"
    assert sources and all(s.startswith(prefix) for s in sources)
    return [base64.b64decode(s[len(prefix) :], validate=True) for s in sources]


# ----------------------------------------------------------------------------- fitted runs
@pytest.fixture(scope="module")
def csv_run(inputs, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("csv") / "results"
    stdout = _run(
        [
            "compare",
            f"{inputs}/model.py:model",
            "--data",
            str(inputs / "data.csv"),
            "--methods",
            "map,svi",
            "--draws",
            str(DRAWS),
            "--steps",
            str(STEPS),
            "--test-fraction",
            "0",
            "--out",
            str(out),
        ]
    )
    return out, stdout


def test_csv_run_writes_directory_with_report(csv_run):
    out, stdout = csv_run
    names = {p.name for p in out.iterdir()}
    assert {"table.md", "table.csv", "report.html", "map.nc", "svi.nc", "loss.png"} <= names
    assert f"{N} training points" in stdout and "wrote" in stdout
    pngs = sorted(p.read_bytes() for p in out.glob("*.png"))
    # Every PNG of the directory is embedded in the page, and nothing else is.
    assert sorted(_embedded_pngs((out / "report.html").read_text(encoding="utf-8"))) == pngs
    assert all(png.startswith(PNG_MAGIC) for png in pngs)
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask  # not a private temporary directory's


def test_csv_run_log_likelihoods_match_scipy(csv_run, inputs):
    """The table's train LL/pt, recomputed by scipy from the CSV and each fit's exported draws:
    ``log p(x_n | theta_hat)`` for MAP, ``log mean_s p(x_n | theta_s)`` for SVI."""
    out, _ = csv_run
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO((out / "table.csv").read_text()))}
    assert list(rows) == ["map", "svi"]
    x = np.loadtxt(inputs / "data.csv", skiprows=1)
    for method, draws in (("map", 1), ("svi", DRAWS)):
        posterior = az.from_netcdf(str(out / f"{method}.nc")).posterior
        loc = posterior["loc"].values.astype(np.float64).reshape(-1, 1)
        scale = posterior["scale"].values.astype(np.float64).reshape(-1, 1)
        assert loc.shape == (draws, 1)
        logp = scipy.stats.norm.logpdf(x, loc, scale)  # [draws, N]
        lppd = scipy.special.logsumexp(logp, axis=0) - np.log(draws)
        assert float(rows[method]["train_ll"]) == pytest.approx(lppd.mean(), rel=LOGLIK_RTOL)
    # No fit can beat the maximum-likelihood density (a closed form) on its own data.
    mle = scipy.stats.norm.logpdf(x, x.mean(), x.std()).mean()
    assert float(rows["map"]["train_ll"]) <= mle
    assert not np.isnan(float(rows["svi"]["khat"]))  # 30 steps: a poor guide, k-hat may be inf


def test_npz_run_on_rows(inputs, tmp_path):
    out = tmp_path / "results"
    stdout = _run(
        [
            "compare",
            f"{inputs}/model.py:model_rows",
            "--data",
            str(inputs / "data.npz"),
            "--methods",
            "map,svi",
            "--draws",
            str(DRAWS),
            "--steps",
            str(STEPS),
            "--out",
            str(out),
        ]
    )
    assert f"{N - 40} training points, 40 held out" in stdout
    rows = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert [r["method"] for r in rows] == ["map", "svi"]
    assert all(np.isfinite(float(r["test_ll"])) for r in rows)
    html_text = (out / "report.html").read_text(encoding="utf-8")
    assert len(_embedded_pngs(html_text)) == len(list(out.glob("*.png")))


def test_json_run_writes_only_the_html_report(inputs, tmp_path):
    out = tmp_path / "new" / "report.html"
    stdout = _run(
        [
            "compare",
            f"{inputs}/model.py:model",
            "--data",
            str(inputs / "data.json"),
            "--methods",
            "map,svi",
            "--draws",
            str(DRAWS),
            "--steps",
            str(STEPS),
            "--out",
            str(out),
        ]
    )
    assert f"wrote {out}" in stdout
    assert [p.name for p in tmp_path.iterdir()] == ["new"]
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]
    html_text = out.read_text(encoding="utf-8")
    assert all(png.startswith(PNG_MAGIC) for png in _embedded_pngs(html_text))
    assert "<td>map</td>" in html_text and "<td>svi</td>" in html_text


def test_family_on_npz_writes_markdown_report(inputs, tmp_path):
    """Built-in families read .npz too; --out FILE.md writes the markdown and its PNGs."""
    out = tmp_path / "r.md"
    _run(
        ["compare", "gmm", "--data", str(inputs / "data.npz"), "--methods", "em", "--out", str(out)]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.md", "r_files"]
    text = out.read_text(encoding="utf-8")
    assert "| em |" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", text)
    assert links and all((tmp_path / link).read_bytes().startswith(PNG_MAGIC) for link in links)


def test_failed_report_write_leaves_nothing(tmp_path, monkeypatch):
    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        main(["compare", "gmm", "--methods", "em", "--out", str(tmp_path / "sub" / "r.html")])
    assert list(tmp_path.iterdir()) == []  # neither the file, a temporary, nor the folder


# ----------------------------------------------------------------------------- refusals
# argv after `compare` ({d}: the inputs folder; --data defaults to data.csv), expected message.
REFUSALS = {
    "missing-file": (["{d}/nope.py:model"], "model file '{d}/nope.py' does not exist"),
    "not-py": (["{d}/data.csv:model"], "model file '{d}/data.csv' is not a Python file (.py)"),
    "no-function": (["{d}/model.py"], "names no function: give the model as path/to/file.py:"),
    "missing-attribute": (
        ["{d}/model.py:nope"],
        "has no attribute 'nope'; callables defined there: Thing, model, model_rows, two_args",
    ),
    "not-callable": (["{d}/model.py:NOT_CALLABLE"], "is an int, not a Pyro model function f(x)"),
    "class": (["{d}/model.py:Thing"], "is a class, not a Pyro model function f(x)"),
    "signature": (["{d}/model.py:two_args"], "must take the data as its one positional argument"),
    "syntax": (["{d}/broken.py:model"], "syntax error in {d}/broken.py, line 3"),
    "import-fails": (["{d}/raises.py:model"], "failed: RuntimeError: boom"),
    "k-given": (["{d}/model.py:model", "--k", "3"], "--k sets the number of components"),
    "em": (["{d}/model.py:model", "--methods", "em,map"], "--methods: em needs a family"),
    "unknown-method": (["{d}/model.py:model", "--methods", "map,foo"], "unknown ['foo']"),
    "draws": (["{d}/model.py:model", "--draws", "0"], "--draws must be >= 1, got 0"),
    "bad-csv": (
        ["{d}/model.py:model", "--data", "{d}/bad.csv"],
        "line 3: column 2 ('b') is 'x', not a number",
    ),
    "npz-keys": (
        ["{d}/model.py:model", "--data", "{d}/keys.npz"],
        "holds 2 arrays (a, b); store the data under the key 'x'",
    ),
    "ragged-json": (
        ["{d}/model.py:model", "--data", "{d}/ragged.json"],
        "row 2 has 1 values; expected a list of 2 numbers",
    ),
    "unknown-suffix": (["{d}/model.py:model", "--data", "{d}/data.txt"], "or a .csv, .npz, .json"),
    "missing-data": (["{d}/model.py:model", "--data", "{d}/no.json"], "'{d}/no.json' does not"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_exits_2_and_writes_nothing(case, inputs, tmp_path, capsys):
    args, expected = REFUSALS[case]
    argv = ["compare", *(a.replace("{d}", str(inputs)) for a in args)]
    if "--data" not in argv:
        argv += ["--data", str(inputs / "data.csv")]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "probgen: error:" in err
    assert expected.replace("{d}", str(inputs)) in err
    assert list(tmp_path.iterdir()) == []


def test_syntax_error_shows_the_line(inputs, capsys):
    with pytest.raises(SystemExit):
        main(["compare", f"{inputs}/broken.py:model", "--data", str(inputs / "data.csv")])
    err = capsys.readouterr().err
    assert "def model(x:" in err and "^" in err


def test_program_needs_data(inputs, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", f"{inputs}/model.py:model"])
    assert exc.value.code == 2
    assert "a Pyro program needs --data" in capsys.readouterr().err


def test_existing_report_file_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "r.html"
    out.write_text("precious")
    with pytest.raises(SystemExit) as exc:
        main(["compare", "gmm", "--methods", "em", "--out", str(out)])
    assert exc.value.code == 2
    assert "exists; choose a new path" in capsys.readouterr().err
    assert out.read_text() == "precious"


# ----------------------------------------------------------------------------- load_function
def test_load_leaves_sys_path_and_loads_fresh_modules(tmp_path):
    (tmp_path / "helper_for_probgen_test.py").write_text("OFFSET = 1.5\n")
    program = tmp_path / "prog.py"
    program.write_text(
        "from helper_for_probgen_test import OFFSET\n\ndef f(x):\n    return OFFSET\n"
    )
    before = list(sys.path)
    first = userprog.load_function(f"{program}:f")
    assert sys.path == before  # the file's folder was on it only while the file ran
    assert first(None) == 1.5  # ... long enough to import its sibling module
    program.write_text("def f(x):\n    return 2.5\n")
    second = userprog.load_function(f"{program}:f")
    assert second(None) == 2.5  # an edited file is run again, not served from sys.modules
    assert first.__module__ != second.__module__
    assert first.__module__.startswith("probgen_user_program_prog_")


# ----------------------------------------------------------------------------- load_data
@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(7, 3))


def test_csv_with_or_without_header(table, tmp_path):
    np.savetxt(tmp_path / "h.csv", table, delimiter=",", header="a,b,c", comments="")
    np.savetxt(tmp_path / "n.csv", table, delimiter=",")
    np.savetxt(tmp_path / "one.csv", table[:, 0], header="a", comments="")
    for name in ("h.csv", "n.csv"):
        x = userprog.load_data(tmp_path / name)
        assert x.dtype == torch.float64 and x.shape == (7, 3)
        np.testing.assert_array_equal(x.numpy(), np.loadtxt(tmp_path / "n.csv", delimiter=","))
    one = userprog.load_data(tmp_path / "one.csv")
    assert one.shape == (7,)  # a single column is [N]
    np.testing.assert_array_equal(one.numpy(), np.loadtxt(tmp_path / "one.csv", skiprows=1))


@pytest.mark.parametrize(
    "content",
    [lambda t: t.tolist(), lambda t: {"x": t.tolist()}, lambda t: t[:, 0].tolist()],
    ids=["rows", "object", "numbers"],
)
def test_json_forms(content, table, tmp_path):
    (tmp_path / "d.json").write_text(json.dumps(content(table)))
    x = userprog.load_data(tmp_path / "d.json")
    expected = np.asarray(
        content(table)["x"] if isinstance(content(table), dict) else content(table)
    )
    assert x.dtype == torch.float64
    np.testing.assert_array_equal(x.numpy(), expected)


def test_npz_forms(table, tmp_path):
    np.savez(tmp_path / "x.npz", other=table[:2], x=table)
    np.savez(tmp_path / "only.npz", values=table.astype(np.float32))
    np.savez(tmp_path / "int.npz", table.round().astype(np.int64))
    np.savez(tmp_path / "bool.npz", x=table > 0)
    np.testing.assert_array_equal(userprog.load_data(tmp_path / "x.npz").numpy(), table)
    only = userprog.load_data(tmp_path / "only.npz")
    assert only.dtype == torch.float32  # a float array keeps its precision
    assert userprog.load_data(tmp_path / "int.npz").dtype == torch.float64
    np.testing.assert_array_equal(userprog.load_data(tmp_path / "bool.npz").numpy(), table > 0)


def test_builtin_name():
    assert userprog.load_data("faithful").shape == (272, 2)


DATA_ERRORS = {
    "header-only.csv": ("a,b\n", "has no data rows"),
    "ragged.csv": ("1,2\n3\n", "line 2: 1 columns, expected 2"),
    "nan.csv": ("a\n1\nnan\n", "line 3: column 1 ('a') is 'nan'; NaN/inf"),
    "typo.csv": ("1,x\n2,3\n", "line 1: column 2 is 'x', not a number"),
    "empty.json": ("[]", "the data are empty"),
    "text.json": ('[[1, 2], [3, "a"]]', 'row 2, column 2 is "a", not a number'),
    "bool.json": ("[1, true]", "element 2 is true"),
    "null.json": ("[1, null]", "element 2 is null"),
    "mixed.json": ("[[1], 2]", "row 2 has 2; expected a list of 1 numbers"),
    "keys.json": ('{"y": [1]}', "under the key 'x'; its keys are ['y']"),
    "scalar.json": ("3", "got a JSON int"),
    "invalid.json": ("[1, 2", "is not valid JSON"),
    "nan.json": ("[1, NaN]", "NaN/inf"),
    "cube.npz": (np.zeros((2, 2, 2)), "must be [N] or [N, D]"),
    "empty.npz": (np.zeros((0, 2)), "the data are empty"),
    "strings.npz": (np.array(["a", "b"]), "must be numeric"),
    "notzip.npz": ("not an archive", "cannot read"),
}


@pytest.mark.parametrize("name", list(DATA_ERRORS))
def test_data_errors(name, tmp_path):
    content, expected = DATA_ERRORS[name]
    path = tmp_path / name
    if isinstance(content, np.ndarray):
        np.savez(path, x=content)
    else:
        path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(expected)) as exc:
        userprog.load_data(path)
    assert str(path) in str(exc.value)
