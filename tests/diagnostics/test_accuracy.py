"""``posterior_accuracy`` against independent computations.

Per-parameter figures against numpy on the same draws (exact up to rounding); Gaussian draws
with a known shift and scale against the analytic mean error, sd ratio and coverage (scipy's
normal cdf), within Monte Carlo tolerances derived from the estimators' standard errors;
distances against closed forms for a shift (1-D: ``W_1 = |shift|``; sliced, for a shift ``s``
of every draw: ``E_theta |theta . s| = |s| Gamma(D/2) / (sqrt(pi) Gamma((D+1)/2))``) and
``scipy.stats.wasserstein_distance``; the verdict on a mean-field-like (too narrow) and an
exact approximation; the single-draw (MAP) case; the errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from probgen.diagnostics import (
    KHAT_OK,
    MEAN_ERROR_OK,
    SD_ERROR_OK,
    posterior_accuracy,
)

#: float64 means, sds and interpolated quantiles of <= 20,000 O(1) draws agree with numpy to
#: ~1e-13 relative; 1e-10 leaves room for a different summation order.
REF_RTOL = 1e-10
#: Standard deviations allowed for Monte Carlo quantities: a normal false-failure rate of 5.7e-7
#: per check, so the ~60 checks below fail spuriously with probability < 1e-4.
Z_SD = 5.0
#: Draws per sample in the Monte Carlo checks.
N = 20_000
#: For checks of the per-parameter figures: the fewest projections and MMD draws allowed keep
#: the (unchecked) distances from dominating the run time.
FAST = {"num_projections": 2, "max_mmd_draws": 2}

F64 = torch.float64


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _np(x: torch.Tensor) -> np.ndarray:
    """Draws ``[chains, draws, *shape]`` pooled over chains and flattened: numpy ``[N, D]``."""
    return x.numpy().reshape(x.shape[0] * x.shape[1], -1)


# ----------------------------------------------------------------- per-parameter figures


def test_figures_match_numpy_on_the_same_draws():
    draws = {"mu": randn(4, 250, seed=1) + 0.2, "L": randn(4, 250, 2, 3, seed=2) * 1.3}
    ref = {"mu": randn(2, 700, seed=3), "L": randn(2, 700, 2, 3, seed=4) * 1.1 + 0.1}
    levels = (0.5, 0.8, 0.9)
    report = posterior_accuracy(draws, ref, levels=levels)
    x = np.concatenate([_np(draws["mu"]), _np(draws["L"])], 1)
    y = np.concatenate([_np(ref["mu"]), _np(ref["L"])], 1)
    names = ["mu"] + [f"L[{i},{j}]" for i in range(2) for j in range(3)]
    assert [p.name for p in report.parameters] == names
    assert report.num_draws == 1000 and report.num_reference_draws == 1400
    s, s_ref = x.std(0, ddof=1), y.std(0, ddof=1)
    np.testing.assert_allclose(
        [p.mean_error for p in report.parameters], (x.mean(0) - y.mean(0)) / s_ref, rtol=REF_RTOL
    )
    np.testing.assert_allclose(
        [p.sd_error for p in report.parameters], s / s_ref - 1, rtol=REF_RTOL
    )
    for level in levels:
        lo, hi = np.quantile(y, [(1 - level) / 2, (1 + level) / 2], axis=0)
        expected = ((x >= lo) & (x <= hi)).mean(0)
        np.testing.assert_allclose([p.coverage[level] for p in report.parameters], expected)


@pytest.mark.parametrize("sample_dims", [1, 2])
def test_draws_without_a_chain_dimension(sample_dims):
    draws = {"theta": randn(600, 3, seed=5)}
    ref = {"theta": randn(900, 3, seed=6)}
    chained = posterior_accuracy(
        {"theta": draws["theta"][None]}, {"theta": ref["theta"].reshape(3, 300, 3)}
    )
    flat = posterior_accuracy(
        draws if sample_dims == 1 else {"theta": draws["theta"][None]},
        ref,
        sample_dims=sample_dims,
        reference_sample_dims=1,
    )
    assert flat.parameter_rows() == chained.parameter_rows()
    assert float(flat.wasserstein) == float(chained.wasserstein)


def test_gaussian_shift_and_scale_give_the_analytic_errors():
    # Reference N(mu, sigma^2); draws N(mu + delta sigma, (r sigma)^2): mean error delta, sd error
    # r - 1. Standard errors (n = m = N): mean error (xbar - ybar) / s_ref has variance
    # r^2/n + 1/m + delta^2/(2m) (the last from s_ref); s / s_ref has r^2 (1/(2n) + 1/(2m)).
    mu, sigma = torch.tensor([0.0, -2.0, 5.0], dtype=F64), torch.tensor([1.0, 3.0, 0.2], dtype=F64)
    delta, r = torch.tensor([0.0, 0.5, -1.0], dtype=F64), torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    ref = {"theta": mu + sigma * randn(1, N, 3, seed=7)}
    draws = {"theta": mu + delta * sigma + r * sigma * randn(1, N, 3, seed=8)}
    report = posterior_accuracy(draws, ref, **FAST)
    for p, d, ratio in zip(report.parameters, delta.tolist(), r.tolist(), strict=True):
        se_mean = math.sqrt(ratio**2 / N + 1 / N + d**2 / (2 * N))
        se_sd = ratio * math.sqrt(1 / N)
        assert abs(p.mean_error - d) < Z_SD * se_mean, (p.name, p.mean_error, d)
        assert abs(p.sd_error - (ratio - 1)) < Z_SD * se_sd, (p.name, p.sd_error, ratio)


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9])
def test_coverage_of_the_reference_distribution_is_the_level(level):
    # Coverage = (inside count)/n given the interval, whose true mass F(q_hi) - F(q_lo) has
    # variance L(1 - L)/m (order-statistic covariances a(1 - b)/m at a = (1-L)/2, b = (1+L)/2);
    # in total Var = L(1 - L)(1/n + 1/m).
    report = posterior_accuracy(
        {"z": randn(1, N, 4, seed=9)}, {"z": randn(1, N, 4, seed=10)}, levels=(level,), **FAST
    )
    se = math.sqrt(level * (1 - level) * 2 / N)
    for p in report.parameters:
        assert abs(p.coverage[level] - level) < Z_SD * se, (p.name, p.coverage[level])


@pytest.mark.parametrize("ratio", [0.5, 2.0])
def test_coverage_of_a_too_narrow_or_too_wide_gaussian(ratio):
    # Draws N(0, r^2) in the reference's N(0, 1) central interval [-z, z]: 2 Phi(z / r) - 1.
    # Var = c(1 - c)/n + g^2 L(1 - L)/m, g = phi(z/r) / (r phi(z)) the density ratio at the
    # (symmetric) endpoints, by the delta method on the estimated endpoints.
    levels = (0.5, 0.9)
    report = posterior_accuracy(
        {"z": ratio * randn(1, N, 2, seed=11)},
        {"z": randn(1, N, 2, seed=12)},
        levels=levels,
        **FAST,
    )
    norm = scipy.stats.norm
    for level in levels:
        z = norm.ppf((1 + level) / 2)
        expected = 2 * norm.cdf(z / ratio) - 1
        g = norm.pdf(z / ratio) / (ratio * norm.pdf(z))
        se = math.sqrt(expected * (1 - expected) / N + g**2 * level * (1 - level) / N)
        for p in report.parameters:
            assert abs(p.coverage[level] - expected) < Z_SD * se, (level, p.coverage[level])


# ----------------------------------------------------------------------------- distances


def test_identical_draws_have_zero_distance():
    ref = {"theta": randn(2, 1500, 3, seed=13)}
    report = posterior_accuracy(ref, ref, max_mmd_draws=1000)
    assert float(report.wasserstein) == 0.0
    # Unbiased MMD^2 of a sample against itself: 2A/(n^2 (n-1)) - 2/n with A the off-diagonal
    # kernel sum <= n(n-1), so it lies in [-2/n, 0] (n = 1000 thinned draws).
    assert -2 / 1000 <= float(report.mmd) <= 1e-12
    assert all(p.mean_error == 0 and abs(p.sd_error) < REF_RTOL for p in report.parameters)


def test_one_dimensional_shift_gives_the_exact_wasserstein_distance():
    y = 3.0 + 2.0 * randn(1, 5000, seed=14)
    report = posterior_accuracy({"mu": y + 0.7 * y.std()}, {"mu": y})
    # Standardised, the draws are the reference moved by 0.7: W_1 = 0.7 exactly.
    assert report.wasserstein.estimator == "exact"
    assert float(report.wasserstein) == pytest.approx(0.7, rel=REF_RTOL)
    assert report.parameters[0].mean_error == pytest.approx(0.7, rel=REF_RTOL)


def test_one_dimensional_distance_matches_scipy():
    x, y = 1.0 + 0.8 * randn(1, 3000, seed=15), randn(1, 4000, seed=16)
    report = posterior_accuracy({"mu": x}, {"mu": y})
    ym, ys = y.mean(), y.std()
    expected = scipy.stats.wasserstein_distance(
        ((x - ym) / ys).flatten().numpy(), ((y - ym) / ys).flatten().numpy()
    )
    assert float(report.wasserstein) == pytest.approx(expected, rel=REF_RTOL)


def test_sliced_distance_of_a_shift_matches_the_closed_form():
    # Every projection of the shifted draws is the projected reference moved by theta . s, so
    # the sliced W_1 is the mean of |theta . s| over the directions: in expectation
    # |s| E|theta_1| = |s| Gamma(D/2) / (sqrt(pi) Gamma((D+1)/2)) (1/2 for D = 3), with
    # Monte Carlo sd |s| sqrt(1/D - E|theta_1|^2) / sqrt(L) over L directions.
    d, num_projections = 3, 2000
    sigma = torch.tensor([1.0, 0.1, 10.0], dtype=F64)
    s = torch.tensor([1.0, -0.5, 2.0], dtype=F64)
    y = sigma * randn(1, 1000, d, seed=17)
    report = posterior_accuracy(
        {"theta": y + s * y.std((0, 1))}, {"theta": y}, num_projections=num_projections, seed=3
    )
    c = math.gamma(d / 2) / (math.sqrt(math.pi) * math.gamma((d + 1) / 2))
    norm_s = float(s.norm())
    se = norm_s * math.sqrt(1 / d - c**2) / math.sqrt(num_projections)
    assert report.wasserstein.estimator == "sliced"
    assert abs(float(report.wasserstein) - norm_s * c) < Z_SD * se
    # The shift is visible to the MMD too (its null spread is O(1/n) = 1e-3).
    assert float(report.mmd) > 0.1


# ------------------------------------------------------------------------------- verdict


def _correlated(rho: float, n: int, seed: int) -> torch.Tensor:
    z = randn(1, n, 2, seed=seed)
    return torch.stack([z[..., 0], rho * z[..., 0] + math.sqrt(1 - rho**2) * z[..., 1]], -1)


def test_verdict_flags_a_mean_field_approximation_and_passes_an_exact_one():
    rho = 0.9
    ref = {"z": _correlated(rho, 4000, seed=18)}
    # The mean-field optimum of KL(q || p) for a Gaussian keeps the diagonal of the precision:
    # marginal sds sqrt(1 - rho^2) = 0.436, an sd error of -0.56.
    meanfield = {"z": math.sqrt(1 - rho**2) * randn(1, 4000, 2, seed=19)}
    bad = posterior_accuracy(meanfield, ref, **FAST)
    assert bad.verdict == "unreliable"
    assert len(bad.reasons) == 1 and "SD_ERROR_OK" in bad.reasons[0]
    assert "2 of 2 parameters" in bad.reasons[0]
    se_sd = math.sqrt(1 - rho**2) * math.sqrt(2 / 4000)
    row = bad.summary_row()
    assert abs(row["worst_sd_error"] - (math.sqrt(1 - rho**2) - 1)) < Z_SD * se_sd
    assert row["worst_sd_parameter"] in ("z[0]", "z[1]")
    good = posterior_accuracy({"z": _correlated(rho, 4000, seed=20)}, ref, **FAST)
    assert good.verdict == "ok" and good.reasons == ()
    assert good.summary_row()["reason"] == ""


def test_verdict_names_a_shifted_mean():
    ref = {"a": randn(1, 4000, seed=21), "b": randn(1, 4000, 3, seed=22)}
    draws = {"a": randn(1, 4000, seed=23), "b": randn(1, 4000, 3, seed=24)}
    draws["b"][..., 1] += 0.6
    report = posterior_accuracy(draws, ref, **FAST)
    assert report.verdict == "unreliable"
    (reason,) = report.reasons
    assert reason.startswith("mean of b[1] off by +0.") and "MEAN_ERROR_OK = 0.25" in reason


@pytest.mark.parametrize(
    ("khat", "verdict"), [(None, "ok"), (0.69, "ok"), (KHAT_OK, "unreliable"), (1.3, "unreliable")]
)
def test_verdict_uses_khat(khat, verdict):
    ref = {"z": randn(1, 3000, 2, seed=25)}
    report = posterior_accuracy({"z": randn(1, 3000, 2, seed=26)}, ref, khat=khat, **FAST)
    assert report.verdict == verdict and report.khat == khat
    if verdict == "unreliable":
        assert report.reasons == (f"Pareto k-hat {khat:.3g} >= KHAT_OK = 0.7",)


def test_thresholds():
    assert (MEAN_ERROR_OK, SD_ERROR_OK, KHAT_OK) == (0.25, 0.25, 0.7)


# -------------------------------------------------------------------- point estimates


def test_a_single_draw_has_a_mean_error_but_no_sd_or_coverage():
    y = {"mu": 1.0 + 2.0 * randn(2, 1000, seed=27), "theta": randn(2, 1000, 2, seed=28)}
    point = {
        "mu": torch.tensor([[1.3]], dtype=F64),
        "theta": torch.tensor([[[0.1, -0.2]]], dtype=F64),
    }
    report = posterior_accuracy(point, y)
    yn = np.concatenate([_np(y["mu"]), _np(y["theta"])], 1)
    x0 = np.array([1.3, 0.1, -0.2])
    np.testing.assert_allclose(
        [p.mean_error for p in report.parameters],
        (x0 - yn.mean(0)) / yn.std(0, ddof=1),
        rtol=REF_RTOL,
    )
    assert report.point_estimate and report.mmd is None
    assert all(math.isnan(p.sd) and math.isnan(p.sd_error) for p in report.parameters)
    assert all(math.isnan(c) for p in report.parameters for c in p.coverage.values())
    row = report.summary_row()
    assert report.verdict == "ok" and row["reason"] == "point estimate: judged on its mean alone"
    assert math.isnan(row["worst_sd_error"]) and math.isnan(row["mmd"])
    assert math.isnan(row["coverage_90"]) and row["num_draws"] == 1
    # One parameter: W_1 from a point mass at z0 is mean |z_ref - z0| (standardised).
    one = posterior_accuracy({"mu": point["mu"]}, {"mu": y["mu"]})
    z = (yn[:, 0] - yn[:, 0].mean()) / yn[:, 0].std(ddof=1)
    z0 = (1.3 - yn[:, 0].mean()) / yn[:, 0].std(ddof=1)
    assert float(one.wasserstein) == pytest.approx(np.abs(z - z0).mean(), rel=REF_RTOL)
    far = posterior_accuracy({"mu": torch.tensor([[5.0]])}, {"mu": y["mu"]})
    error = far.parameters[0].mean_error
    assert far.verdict == "unreliable" and 1.5 < error < 2.5  # (5 - 1) / 2, roughly
    assert far.reasons[0].startswith(f"mean of mu off by {error:+.3g} reference sd")


# ------------------------------------------------------------------------- rows, constants


def test_rows_are_plain_and_consistent():
    draws = {"mu": randn(1, 500, seed=29), "L": randn(1, 500, 2, 2, seed=30)}
    ref = {"mu": randn(1, 800, seed=31), "L": randn(1, 800, 2, 2, seed=32)}
    report = posterior_accuracy(draws, ref, levels=(0.5, 0.95))
    rows = report.parameter_rows()
    assert [r["parameter"] for r in rows] == ["mu", "L[0,0]", "L[0,1]", "L[1,0]", "L[1,1]"]
    assert set(rows[0]) == {
        "parameter", "mean", "reference_mean", "mean_error", "sd", "reference_sd", "sd_error",
        "coverage_50", "coverage_95",
    }  # fmt: skip
    summary = report.summary_row()
    assert summary["coverage_95"] == pytest.approx(np.mean([r["coverage_95"] for r in rows]))
    worst = max(rows, key=lambda r: abs(r["mean_error"]))
    assert summary["worst_mean_error"] == worst["mean_error"]
    assert summary["worst_mean_parameter"] == worst["parameter"]
    assert summary["wasserstein"] == float(report.wasserstein)
    assert all(isinstance(v, (str, int, float)) for v in summary.values())


def test_parameters_constant_in_the_reference():
    # A 2x2 correlation Cholesky factor: L[0,0] = 1 and L[0,1] = 0 in every draw.
    def chol(rho: torch.Tensor) -> torch.Tensor:
        one, zero = torch.ones_like(rho), torch.zeros_like(rho)
        rows = [torch.stack([one, zero], -1), torch.stack([rho, (1 - rho**2).sqrt()], -1)]
        return torch.stack(rows, -2)

    ref = {"L": chol(torch.tanh(0.3 + 0.2 * randn(1, 2000, seed=33)))}
    draws = {"L": chol(torch.tanh(0.3 + 0.2 * randn(1, 2000, seed=34)))}
    report = posterior_accuracy(draws, ref, **FAST)
    assert report.constant == ("L[0,0]", "L[0,1]")
    assert [p.name for p in report.parameters] == ["L[1,0]", "L[1,1]"]
    assert report.verdict == "ok"
    off = {"L": ref["L"].clone()}
    off["L"][0, :10, 0, 1] = 0.1
    bad = posterior_accuracy(off, ref, **FAST)
    assert bad.verdict == "unreliable"
    assert bad.reasons == ("['L[0,1]'] are constant in the reference but not in the draws",)
    with pytest.raises(ValueError, match="every parameter is constant"):
        posterior_accuracy({"c": torch.ones(1, 5)}, {"c": torch.ones(1, 5)})


# --------------------------------------------------------------------------------- errors


REF = {"mu": randn(1, 50, seed=40), "theta": randn(1, 50, 3, seed=41)}


@pytest.mark.parametrize(
    ("draws", "reference", "match"),
    [
        ({"mu": torch.zeros(1, 5), "theta": torch.zeros(1, 5, 3), "sigma": torch.zeros(1, 5)},
         REF, r"reference lacks parameter\(s\) \['sigma'\].*model's sites"),
        ({"mu": torch.zeros(1, 5)}, REF, r"reference has parameter\(s\) \['theta'\] that"),
        ({"mu": torch.zeros(1, 5), "theta": torch.zeros(1, 5, 4)}, REF,
         r"'theta' has shape \(4,\) in the draws but \(3,\) in the reference.*'mu': \(\)"),
        ({"mu": torch.zeros(1, 5)}, {"mu": torch.zeros(1, 1)}, "reference has 1 draw.*at least 2"),
        ({"mu": torch.tensor([[0.0, math.nan]])}, {"mu": torch.zeros(1, 5)},
         r"draws\['mu'\] holds 1 NaN/inf"),
        ({"mu": torch.zeros(1, 5)}, {"mu": torch.tensor([[0.0, math.inf, 1.0]])},
         r"reference\['mu'\] holds 1 NaN/inf"),
        ({"mu": torch.zeros(1, 5), "nu": torch.zeros(1, 4)}, REF, "different numbers of draws"),
        ({"mu": torch.zeros(5)}, REF, r"draws\['mu'\] has shape \(5,\); 2 leading sample"),
        ({"mu": torch.zeros(1, 0)}, REF, "holds no draws"),
        ({}, REF, "draws is empty"),
    ],
)  # fmt: skip
def test_bad_draws_or_reference(draws, reference, match):
    with pytest.raises(ValueError, match=match):
        posterior_accuracy(draws, reference)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"levels": ()}, "levels must be distinct numbers in"),
        ({"levels": (0.5, 1.0)}, "levels must be distinct numbers in"),
        ({"levels": (0.5, 0.5)}, "levels must be distinct numbers in"),
        ({"khat": math.nan}, "khat must be a number"),
        ({"sample_dims": 3}, "sample_dims must be 1"),
        ({"reference_sample_dims": 0}, "reference_sample_dims must be 1"),
        ({"max_mmd_draws": 1}, "max_mmd_draws must be an integer >= 2"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        posterior_accuracy(REF, REF, **kwargs)


def test_non_mapping_is_a_type_error():
    with pytest.raises(TypeError, match="draws must be a mapping site name -> draws"):
        posterior_accuracy(torch.zeros(1, 5), REF)  # type: ignore[arg-type]
