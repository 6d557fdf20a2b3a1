"""README.md stays truthful: its two commands are the ones CI runs, and its example runs."""

import math
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    assert first_block[0].startswith("pip install -e .") and "probgen compare gmm" in first_block[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert first_block[1] in ci.splitlines()
    assert "torch==2.13.0" in ci and ci.index("torch==2.13.0") < ci.index(first_block[1])


def test_readme_python_example_runs(capsys):
    example = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    code_lines = [ln for ln in example.splitlines() if ln.strip()]
    assert len(code_lines) <= 12  # the "10-line example" (plus two import lines)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "em" in out and "svi" in out and "locs" in out
    assert namespace["nuts"].draws["locs"].shape == (2, 100, 2, 2)


def test_readme_diagnostics_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    (example,) = [b for b in blocks if "probgen.diagnostics" in b]
    torch.manual_seed(0)
    exec(compile(example, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "0.443147 nats (analytic)"  # log 2 + (1 + 1) / 8 - 1/2
    assert lines[1].endswith("bits (monte-carlo, n=20000)")
    assert lines[2].endswith("nats (knn, n=2000)")
    # Gaussian mutual information -1/2 log(1 - rho^2) with rho = 0.9.
    assert float(lines[3].split()[0]) == pytest.approx(-0.5 * math.log(1 - 0.81), rel=1e-5)
    assert float(lines[4]) < 0.01  # a shift of 0.5 sd in 3-D is detected with 500 permutations


def test_readme_vae_example_runs(capsys):
    """The VAE example, on the shared binarized MNIST, with the training data cut to 2,000 rows,
    one epoch and 100 test images (the shown budget takes minutes); the rest runs as written."""
    data = ROOT.parent / "shared" / "data" / "binarized_mnist" / "binarized_mnist.npz"
    if not data.exists():
        pytest.skip(f"binarized MNIST not found at {data}")
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    (example,) = [b for b in blocks if "models.vae" in b]
    example = example.replace('"binarized_mnist.npz"', repr(str(data)))
    example = example.replace('"train")', '"train")[:2000]').replace("epochs=10", "epochs=1")
    example = example.replace("x_test[:1000]", "x_test[:100]")
    exec(compile(example, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.endswith("nats (importance-sampling, n=1000)")
        # Bernoulli log-probabilities of 784 pixels: negative, and far above the uniform 784 log 2.
        assert -784 * math.log(2) < float(line.split()[0]) < 0


def test_readme_which_method_example_runs(capsys, tmp_path, monkeypatch):
    """The eight-schools example with 600 steps instead of 2000 (the flags it prints are the
    same: the funnel is not a matter of budget) and the report written to a temporary path."""
    root = ROOT.parent / "shared" / "data" / "posteriordb"
    if not root.exists():
        pytest.skip(f"posteriordb subset not found at {root}")
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    (example,) = [b for b in blocks if "eight_schools_centered" in b]
    example = example.replace('"../shared/data/posteriordb"', repr(str(root)))
    example = example.replace('"steps": 2000', '"steps": 600')
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith(("| meanfield", "| fullrank"))]
    assert len(rows) == 2 and all("unreliable" in r for r in rows)
    assert (tmp_path / "eight_schools.html").read_text().count("data:image/png;base64,") >= 2


def test_readme_diffusion_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    (example,) = [b for b in blocks if "DDPM" in b]
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["prior", "diffusion", "decoder", "total"]
    assert namespace["fast"].shape == (1000, 2)
