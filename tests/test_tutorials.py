"""Every tutorial runs end to end in smoke mode (``PROBGEN_SMOKE=1``: tiny budgets).

Tutorials are ``tutorials/NN_name.py`` jupytext "percent" scripts, run as ``python <file>`` in a
fresh process; notebooks ``tutorials/NN_name.ipynb`` are executed with nbclient when nbformat,
nbclient and ipykernel are installed (skipped otherwise). Each runs in a temporary working
directory, so the figures a tutorial saves land there.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"
#: Seconds a tutorial may take in smoke mode (they are written to take well under a minute).
TIMEOUT_S = 300

SCRIPTS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
NOTEBOOKS = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb"))
CAN_RUN_NOTEBOOKS = all(
    importlib.util.find_spec(name) is not None for name in ("nbformat", "nbclient", "ipykernel")
)

# Executes one notebook in the current directory; argv[1] is its path.
NOTEBOOK_RUNNER = textwrap.dedent(
    """
    import sys
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(sys.argv[1], as_version=4)
    NotebookClient(nb, timeout=int(sys.argv[2]), kernel_name="python3").execute()
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PROBGEN_SMOKE="1", MPLBACKEND="Agg", PYTHONHASHSEED="0")
    # The tutorials import the repository's packages (probgen, models) from its root.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _params() -> list:
    params = [pytest.param(path, id=path.name) for path in SCRIPTS]
    skip = pytest.mark.skip(reason="executing notebooks needs nbformat, nbclient and ipykernel")
    params += [
        pytest.param(path, id=path.name, marks=() if CAN_RUN_NOTEBOOKS else skip)
        for path in NOTEBOOKS
    ]
    return params


def test_tutorials_are_found() -> None:
    assert SCRIPTS or NOTEBOOKS, f"no tutorials matching [0-9][0-9]_*.py or .ipynb in {TUTORIALS}"


@pytest.mark.parametrize("path", _params())
def test_tutorial_runs(path: Path, tmp_path: Path) -> None:
    if path.suffix == ".py":
        command = [sys.executable, str(path)]
    else:
        command = [sys.executable, "-c", NOTEBOOK_RUNNER, str(path), str(TIMEOUT_S)]
    try:
        done = subprocess.run(
            command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired as err:
        stderr = (
            err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else err.stderr
        )
        pytest.fail(f"{path.name} did not finish within {TIMEOUT_S} s in smoke mode:\n{stderr}")
    assert done.returncode == 0, (
        f"{path.name} exited with code {done.returncode}.\n"
        f"--- stdout (last 3000 characters) ---\n{done.stdout[-3000:]}\n"
        f"--- stderr ---\n{done.stderr}"
    )
