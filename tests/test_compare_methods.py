"""``compare``'s method vocabulary and its accuracy columns against a reference posterior.

The model is conjugate (Normal mean with known scale), so the exact posterior is the reference:
``mu | x ~ N(m_n, s_n^2)`` with ``1/s_n^2 = 1/s0^2 + n/sigma^2`` and
``m_n = s_n^2 (m0/s0^2 + sum x / sigma^2)``.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from matplotlib.figure import Figure
from pyro.infer import autoguide

import probgen
from probgen.compare import METHODS

M0, S0, SIGMA, N = 0.0, 2.0, 1.0, 40
#: Steps and learning rate at which the Gaussian guides have converged on this 1-D posterior
#: (at lr 0.05 Adam's last iterates still jitter by ~0.5 posterior sd; 0.01 settles).
STEPS, LR = 1500, 0.01
#: Draws of the exact reference posterior.
REF_DRAWS = 4000
#: An exact Gaussian guide's mean and sd errors are Monte Carlo noise of 1000 guide draws and
#: SVI's stochastic optimum: a few hundredths of a reference sd; 0.25 is the "acceptable" line.
OK_ERROR = 0.25


def normal_mean(x: torch.Tensor | None, n: int | None = None) -> torch.Tensor:
    mu = pyro.sample("mu", dist.Normal(torch.tensor(M0), S0))
    with pyro.plate("data", x.shape[0] if x is not None else n):
        return pyro.sample("obs", dist.Normal(mu, SIGMA), obs=x)


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return torch.randn(N, generator=torch.Generator().manual_seed(1)) * SIGMA + 1.5


def _posterior(x: torch.Tensor) -> tuple[float, float]:
    prec = 1 / S0**2 + x.numel() / SIGMA**2
    var = 1 / prec
    return var * (M0 / S0**2 + x.sum().item() / SIGMA**2), math.sqrt(var)


@pytest.fixture(scope="module")
def reference(data) -> dict[str, torch.Tensor]:
    mean, sd = _posterior(data)
    gen = torch.Generator().manual_seed(2)
    return {"mu": mean + sd * torch.randn(2, REF_DRAWS // 2, generator=gen)}


@pytest.fixture(scope="module")
def comparison(data, reference) -> probgen.Comparison:
    methods = ["map", "laplace", "meanfield", "fullrank"]
    opts = {m: {"steps": STEPS, "lr": LR} for m in methods}
    return probgen.compare(normal_mean, data, methods, reference=reference, options=opts)


def test_methods_use_the_named_guides(comparison):
    guides = {m: type(comparison.fits[m].guide) for m in comparison.fits}
    assert guides["map"] is autoguide.AutoDelta
    assert guides["meanfield"] is autoguide.AutoNormal
    assert guides["fullrank"] is autoguide.AutoMultivariateNormal
    # AutoLaplaceApproximation hands back the Gaussian at the mode once fitted.
    assert guides["laplace"] is autoguide.AutoMultivariateNormal
    assert [r["method"] for r in comparison.rows] == list(comparison.fits)
    assert set(METHODS) >= {"laplace", "meanfield", "lowrank", "fullrank", "flow", "is", "nuts"}


def test_accuracy_columns_agree_with_the_exact_posterior(comparison, data):
    mean, sd = _posterior(data)
    rows = {r["method"]: r for r in comparison.rows}
    for method in ("laplace", "meanfield", "fullrank"):
        row = rows[method]
        assert abs(row["mean_error"]) < OK_ERROR, method
        assert abs(row["sd_error"]) < OK_ERROR, method
        assert row["verdict"].startswith("ok"), row["verdict"]
        draws = comparison.fits[method].draws["mu"]
        # the column is (mean - mean_ref) / sd_ref, recomputed here from the draws
        ref = comparison.reference["mu"]
        expected = (draws.mean() - ref.mean()) / ref.std()
        # float32 draws: the two summations round differently in the 4th significant digit
        assert row["mean_error"] == pytest.approx(expected.item(), rel=1e-3, abs=1e-6)
    # a point estimate has a mean error but no sd, coverage or spread
    assert abs(rows["map"]["mean_error"]) < OK_ERROR
    assert math.isnan(rows["map"]["sd_error"])
    per_param = [r for r in comparison.accuracy if r["method"] == "meanfield"]
    assert [r["parameter"] for r in per_param] == ["mu"]
    assert per_param[0]["reference_mean"] == pytest.approx(mean, abs=4 * sd / math.sqrt(REF_DRAWS))


def test_a_too_narrow_posterior_is_flagged(data, reference):
    mean, sd = _posterior(data)

    def narrow_guide(x: torch.Tensor) -> None:
        pyro.sample("mu", dist.Normal(torch.tensor(mean), sd / 3))

    result = probgen.compare(
        normal_mean,
        data,
        ["svi"],
        reference=reference,
        options={"svi": {"guide": narrow_guide, "steps": 1}},
    )
    row = result.rows[0]
    assert row["sd_error"] == pytest.approx(-2 / 3, abs=0.1)
    assert row["verdict"].startswith("unreliable")


def test_figures_and_report_sections(comparison):
    figs = comparison.figures()
    assert {"loss", "khat", "posterior"} <= set(figs)
    assert "density" not in figs  # parameters, not data, are the subject with a reference
    extra = Figure()
    extra.subplots().plot([0, 1])
    more = comparison.with_figures({"sbc": extra}, "a note")
    assert more.figures()["sbc"] is extra and more.notes == ("a note",)
    assert comparison.extra_figures == {}  # the original is unchanged


def test_reference_must_match_the_sites(data, reference):
    with pytest.raises(ValueError, match=r"missing \['mu'\].*not in the model \['nu'\]"):
        probgen.compare(normal_mean, data, ["map"], reference={"nu": reference["mu"]})
    with pytest.raises(ValueError, match=r"reference\['mu'\] has shape \(2, 3, 4, 5\)"):
        probgen.compare(normal_mean, data, ["map"], reference={"mu": torch.zeros(2, 3, 4, 5)})
    with pytest.raises(TypeError, match="reference must map site names"):
        probgen.compare(normal_mean, data, ["map"], reference=[1.0, 2.0])


def test_bad_method_lists(data):
    with pytest.raises(ValueError, match="unknown method 'vi'; allowed: em, map, laplace"):
        probgen.compare(normal_mean, data, ["map", "vi"])
    with pytest.raises(ValueError, match="duplicates"):
        probgen.compare(normal_mean, data, ["map", "map"])
