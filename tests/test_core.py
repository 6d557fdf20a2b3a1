"""The contract: derived log-likelihoods (enumeration and importance sampling), sampling,
module-local parameters, and the package layout rule (probgen never imports models)."""

import ast
import math
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroParam

import probgen
from models.gmm import GaussianMixture
from probgen import GenerativeModel, PyroProgram

ROOT = Path(__file__).resolve().parents[1]


class LatentGaussian(GenerativeModel):
    """z_n ~ N(0, 1), x_n | z_n ~ N(mu + z_n, 1): marginally x_n ~ N(mu, 2).

    The guide q(z_n | x_n) = N(c (x_n - mu), s) is the exact posterior for c = 1/2, s = sqrt(1/2).
    """

    def __init__(self, c: float, s: float):
        super().__init__()
        self.c = PyroParam(torch.tensor(c, dtype=torch.float64))
        self.s = PyroParam(
            torch.tensor(s, dtype=torch.float64), constraint=dist.constraints.positive
        )

    def model(self, x=None, *, n=None):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 5.0))
        with pyro.plate("data", len(x) if x is not None else n):
            z = pyro.sample("z", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
            return pyro.sample("obs", dist.Normal(mu + z, 1.0), obs=x)

    def guide(self, x=None, *, n=None):
        mu = pyro.sample("mu", dist.Delta(torch.tensor(0.0, dtype=torch.float64)))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(self.c * (x - mu), self.s))


def test_importance_sampled_log_likelihood_is_exact_with_the_exact_posterior_guide():
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    mu = torch.tensor(0.7, dtype=torch.float64)
    exact = dist.Normal(mu, math.sqrt(2)).log_prob(x)
    gm = LatentGaussian(0.5, math.sqrt(0.5))
    # Zero-variance importance weights: equal to rounding error.
    torch.testing.assert_close(gm.log_likelihood(x, {"mu": mu}), exact, rtol=0, atol=1e-10)


def test_importance_sampled_log_likelihood_with_a_poor_guide_converges():
    pyro.set_rng_seed(0)
    x = torch.linspace(-2, 2, 5, dtype=torch.float64)
    mu = torch.tensor(0.0, dtype=torch.float64)
    exact = dist.Normal(mu, math.sqrt(2)).log_prob(x)
    gm = LatentGaussian(0.0, 1.0)  # the prior as proposal
    estimate = gm.log_likelihood(x, {"mu": mu})
    # 1000 prior particles: relative sd of the weights is < 1.5 here, so the log-mean error is
    # about 1.5 / sqrt(1000) ~ 0.05; 0.15 is 3 sd.
    torch.testing.assert_close(estimate, exact, rtol=0, atol=0.15)
    # Batched parameters come out in front.
    batched = gm.log_likelihood(x, {"mu": torch.zeros(3, 2, dtype=torch.float64)})
    assert batched.shape == (3, 2, 5)


def test_enumerated_log_likelihood_of_a_plain_program_matches_the_gmm_closed_form():
    x = probgen.data.faithful()
    gmm = GaussianMixture(2, "full")
    probgen.fit(gmm, x, method="em", progress=False)
    # The same program seen as a plain Pyro function: no closed form, enumeration instead.
    program = PyroProgram(gmm.model)
    params = {k: v.expand((3, *v.shape)) for k, v in gmm.params_.items()}
    generic = program.log_likelihood(x, params)
    assert generic.shape == (3, 272)
    torch.testing.assert_close(generic[1], gmm.log_prob(x), rtol=1e-12, atol=1e-12)


def test_derived_sample_uses_the_point_estimate():
    x = torch.randn(100, dtype=torch.float64)
    gm = PyroProgram(lambda x, n=None: _normal_model(x, n))
    with pytest.raises(probgen.NotFittedError):
        gm.sample(3)
    s = gm.sample(4000, params={"loc": torch.tensor(3.0, dtype=torch.float64)})
    assert s.shape == (4000,)
    assert abs(s.mean().item() - 3.0) < 5 / math.sqrt(4000)  # 5 standard errors
    with pytest.raises(ValueError, match="n must be a positive number"):
        gm.sample(0, params={"loc": torch.tensor(3.0)})
    fit = probgen.fit(gm, x, method="map", steps=200, lr=0.05, progress=False)
    assert gm.params_ is not None and "loc" in fit.params


def _normal_model(x, n=None):
    loc = pyro.sample("loc", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 10.0))
    with pyro.plate("data", len(x) if x is not None else n):
        return pyro.sample("obs", dist.Normal(loc, 1.0), obs=x)


def test_module_parameters_stay_local():
    pyro.clear_param_store()
    a, b = LatentGaussian(0.1, 1.0), LatentGaussian(0.9, 2.0)
    x = torch.randn(5, dtype=torch.float64)
    a.guide(x)
    b.guide(x)
    assert a.c.item() == pytest.approx(0.1) and b.c.item() == pytest.approx(0.9)
    assert len(pyro.get_param_store()) == 0
    assert {n for n, _ in a.named_parameters()} == {"c_unconstrained", "s_unconstrained"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_probgen_never_imports_models():
    offenders = [p for p in (ROOT / "probgen").rglob("*.py") if "models" in _imports(p)]
    assert offenders == []


def test_families_are_found_through_the_entry_point_registry():
    assert "gmm" in probgen.families()
    assert probgen.get_family("gmm") is GaussianMixture
    with pytest.raises(ValueError, match=r"unknown family 'hmm'; installed families: .*gmm"):
        probgen.get_family("hmm")
