"""Two-sample statistics against independent references.

MMD against naive double loops (numpy) and exact permutation enumeration; the permutation test's
size and power by simulation; the C2ST p-value against ``scipy.stats.binomtest``; 1-D
Wasserstein against ``scipy.stats.wasserstein_distance`` and sorted-sample closed forms;
sliced Wasserstein and the Fréchet distance against closed forms; the Fréchet distance against
the pytorch-fid formula with ``scipy.linalg.sqrtm``.

Simulation checks allow ``Z_SD`` standard deviations of the simulated quantity (a normal
false-failure rate of 6e-5 per check).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.stats
import torch
from torch.distributions import MultivariateNormal

from probgen.diagnostics._base import Samples
from probgen.diagnostics.transport import frechet_distance, wasserstein
from probgen.diagnostics.two_sample import binomial_upper_tail, classifier_two_sample_test, mmd

#: float64 sums of a few hundred O(1) terms agree with a numpy loop to ~1e-14; 1e-10 leaves room.
REF_RTOL = 1e-10
#: lgamma-based log-binomial terms lose ~eps * n log n relative; 1e-9 covers n <= 10^4.
BINOM_RTOL = 1e-9
#: Standard deviations allowed for simulated quantities (normal false-failure rate 6e-5).
Z_SD = 4.0
#: Permutation-test size check: 200 null datasets at level 0.1 (199 permutations each).
NULL_DATASETS, ALPHA, PERMUTATIONS = 200, 0.1, 199
#: Relative tolerance on the ratio of a predicted to a simulated sd from ~200 replicates: the
#: simulated sd alone has relative error ~1/sqrt(2 * 200) = 5%, and the first-order/bootstrap
#: predictions carry O(1/N) bias; 25% is ~4 sigma of the former plus the latter.
SD_RTOL = 0.25

F64 = torch.float64


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ----------------------------------------------------------------------------- MMD


def naive_mmd(x: np.ndarray, y: np.ndarray, kernel: str, h: float | None, unbiased: bool):
    """MMD^2 and its Hoeffding standard error by explicit double loops."""
    z = np.concatenate([x, y])
    if h is None:
        h = float(np.median(scipy.spatial.distance.pdist(z)))

    def k(a, b):
        r2 = float(np.sum((a - b) ** 2))
        return math.exp(-r2 / (2 * h * h)) if kernel == "gaussian" else (1 + r2 / h**2) ** -0.5

    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if unbiased is False or i != j)
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if unbiased is False or i != j)
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n))
    if unbiased:
        value = sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * sxy / (m * n)
    else:
        value = sxx / m**2 + syy / n**2 - 2 * sxy / (m * n)
    gx = [
        sum(k(x[i], x[j]) for j in range(m) if j != i) / (m - 1)
        - sum(k(x[i], y[j]) for j in range(n)) / n
        for i in range(m)
    ]
    gy = [
        sum(k(y[i], y[j]) for j in range(n) if j != i) / (n - 1)
        - sum(k(x[j], y[i]) for j in range(m)) / m
        for i in range(n)
    ]
    stderr = math.sqrt(4 * np.var(gx, ddof=1) / m + 4 * np.var(gy, ddof=1) / n)
    return value, stderr


@pytest.mark.parametrize("kernel", ["gaussian", "imq"])
@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("bandwidth", [None, 0.7])
def test_mmd_matches_naive_double_loop(kernel, unbiased, bandwidth):
    x, y = randn(7, 2, seed=1), randn(6, 2, seed=2) + 0.5
    est = mmd(x, y, kernel=kernel, bandwidth=bandwidth, unbiased=unbiased)
    value, stderr = naive_mmd(x.numpy(), y.numpy(), kernel, bandwidth, unbiased)
    assert est.value.item() == pytest.approx(value, rel=REF_RTOL)
    assert est.stderr.item() == pytest.approx(stderr, rel=REF_RTOL)
    assert est.estimator == ("u-statistic" if unbiased else "v-statistic")
    assert est.unit == "" and est.num_samples == 13 and est.p_value is None


def test_mmd_callable_linear_kernel_is_squared_mean_difference():
    x, y = randn(30, 3, seed=3), randn(20, 3, seed=4)
    est = mmd(Samples(x), Samples(y), kernel=lambda a, b: a @ b.T, unbiased=False)
    expected = (x.mean(0) - y.mean(0)).square().sum().item()
    assert est.value.item() == pytest.approx(expected, rel=REF_RTOL)


def test_mmd_median_heuristic_skips_tied_pairs():
    # 3 of 4 draws coincide: the median distance is 0, so the non-zero distances set h.
    x = torch.tensor([0.0, 0.0, 0.0, 2.0], dtype=F64)
    y = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64)
    z = torch.cat([x, y]).numpy()[:, None]
    h = float(np.median([d for d in scipy.spatial.distance.pdist(z) if d > 0]))
    expected, _ = naive_mmd(x.numpy()[:, None], y.numpy()[:, None], "gaussian", h, True)
    assert mmd(x, y).value.item() == pytest.approx(expected, rel=REF_RTOL)


@pytest.mark.parametrize("unbiased", [True, False])
def test_permutation_p_value_matches_exact_enumeration(unbiased):
    # 4 + 4 draws have 70 relabellings: enumerate them all with the naive statistic; the
    # batched Monte Carlo p-value with many permutations must agree within binomial error.
    x, y = randn(4, 1, seed=5), randn(4, 1, seed=6) + 0.8
    z = np.concatenate([x.numpy(), y.numpy()])
    h = float(np.median(scipy.spatial.distance.pdist(z)))
    t_obs, _ = naive_mmd(z[:4], z[4:], "gaussian", h, unbiased)
    splits = [list(c) for c in itertools.combinations(range(8), 4)]
    stats = [naive_mmd(z[c], np.delete(z, c, 0), "gaussian", h, unbiased)[0] for c in splits]
    exact = np.mean([t >= t_obs - 1e-12 for t in stats])
    perms = 20000
    p = mmd(x, y, unbiased=unbiased, permutations=perms, seed=0).p_value
    assert abs(p - exact) < Z_SD * math.sqrt(exact * (1 - exact) / perms) + 1 / perms


@pytest.mark.parametrize("kernel", ["gaussian", "imq"])
def test_permutation_test_size_and_unbiased_null_mean(kernel):
    values, rejections = [], 0
    for i in range(NULL_DATASETS):
        x, y = randn(50, 2, seed=2 * i), randn(50, 2, seed=2 * i + 1)
        est = mmd(x, y, kernel=kernel, permutations=PERMUTATIONS, seed=i)
        assert 1 / (PERMUTATIONS + 1) <= est.p_value <= 1
        rejections += est.p_value <= ALPHA
        values.append(est.value.item())
    # (P + 1) * alpha = 20 is an integer, so the permutation test has exact size alpha.
    expected = NULL_DATASETS * ALPHA
    assert abs(rejections - expected) <= Z_SD * math.sqrt(expected * (1 - ALPHA))
    values = np.array(values)  # the U-statistic is unbiased: mean 0 under the null
    assert abs(values.mean()) < Z_SD * values.std(ddof=1) / math.sqrt(NULL_DATASETS)


@pytest.mark.parametrize("kernel", ["gaussian", "imq"])
def test_permutation_test_rejects_a_clear_shift(kernel):
    shift = torch.tensor([1.5, 0.0], dtype=F64)
    for i in range(20):
        x, y = randn(50, 2, seed=100 + i), randn(50, 2, seed=200 + i) + shift
        p = mmd(x, y, kernel=kernel, permutations=PERMUTATIONS, seed=i).p_value
        # True p-values here are ~1e-4 or less, so 5% of 199 permutations reaching the observed
        # statistic has negligible probability.
        assert p < 0.05


def test_mmd_stderr_matches_spread_under_alternative():
    values, stderrs = [], []
    for i in range(200):
        x, y = randn(100, 1, seed=1000 + i), randn(100, 1, seed=2000 + i) + 0.7
        est = mmd(x, y)
        values.append(est.value.item())
        stderrs.append(est.stderr.item())
    assert np.mean(stderrs) == pytest.approx(np.std(values, ddof=1), rel=SD_RTOL)


def test_mmd_permutations_are_seeded():
    x, y = randn(30, 2, seed=7), randn(30, 2, seed=8) + 0.3
    p1 = mmd(x, y, permutations=99, seed=3).p_value
    assert mmd(x, y, permutations=99, seed=3).p_value == p1
    torch.manual_seed(11)
    p2 = mmd(x, y, permutations=99).p_value
    torch.manual_seed(11)
    assert mmd(x, y, permutations=99).p_value == p2


# ----------------------------------------------------------------------------- C2ST


@pytest.mark.parametrize(("k", "n"), [(0, 10), (5, 10), (9, 10), (10, 10), (60, 100), (700, 1000)])
def test_binomial_upper_tail_matches_scipy(k, n):
    expected = scipy.stats.binomtest(k, n, 0.5, alternative="greater").pvalue
    assert binomial_upper_tail(k, n) == pytest.approx(expected, rel=BINOM_RTOL)


def test_c2st_null_accuracy_and_p_values():
    datasets, alpha = 50, 0.05
    accs, small = [], 0
    for i in range(datasets):
        x, y = randn(100, 2, seed=3000 + i), randn(100, 2, seed=4000 + i)
        est = classifier_two_sample_test(x, y, seed=i)
        assert est.num_samples == 100
        accs.append(est.value.item())
        small += est.p_value < alpha
    # The test is exact or conservative, so only too many small p-values would be a failure.
    assert small <= datasets * alpha + Z_SD * math.sqrt(datasets * alpha * (1 - alpha))
    # Under the null a balanced test set has mean accuracy 1/2 and sd <= 0.5 / sqrt(100).
    assert abs(np.mean(accs) - 0.5) < Z_SD * 0.05 / math.sqrt(datasets)


@pytest.mark.parametrize("classifier", ["logistic", "mlp"])
def test_c2st_detects_mean_shift_with_binomial_p_value(classifier):
    x, y = randn(200, 2, seed=9), randn(200, 2, seed=10) + 1.0
    est = classifier_two_sample_test(x, y, classifier=classifier, seed=0)
    correct = round(est.value.item() * est.num_samples)
    expected = scipy.stats.binomtest(correct, est.num_samples, 0.5, alternative="greater").pvalue
    assert est.p_value == pytest.approx(expected, rel=BINOM_RTOL)
    assert est.p_value < 1e-6
    acc = est.value.item()
    assert est.stderr.item() == pytest.approx(math.sqrt(acc * (1 - acc) / est.num_samples))


def test_c2st_mlp_detects_dependence():
    # Same N(0, 1) marginals, correlation 0.9: invisible to per-feature terms and their squares,
    # found by the hidden layer.
    x = randn(400, 2, seed=11)
    chol = torch.linalg.cholesky(torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=F64))
    y = randn(400, 2, seed=12) @ chol.T
    assert classifier_two_sample_test(x, y, classifier="mlp", seed=0).p_value < 1e-6


def test_c2st_callable_perfect_classifier_gives_exact_tail():
    x = randn(30, 1, seed=31).sigmoid()
    y = randn(50, 1, seed=32).sigmoid() + 2

    def fit(z, labels):
        assert len(z) == len(labels) == 80 - 18
        return lambda u: (u[:, 0] > 1.5).to(u.dtype)

    est = classifier_two_sample_test(x, y, classifier=fit, test_fraction=0.3)
    assert est.num_samples == 18  # floor(0.3 * 30) = 9 test draws of each sample
    assert est.value.item() == 1.0
    assert est.p_value == pytest.approx(2.0**-18, rel=BINOM_RTOL)


def test_c2st_is_seeded():
    x, y = randn(60, 2, seed=13), randn(60, 2, seed=14) + 0.3
    a = classifier_two_sample_test(x, y, classifier="mlp", seed=5)
    b = classifier_two_sample_test(x, y, classifier="mlp", seed=5)
    assert a.value.item() == b.value.item() and a.p_value == b.p_value


# ----------------------------------------------------------------------------- Wasserstein


@pytest.mark.parametrize(("m", "n"), [(1, 1), (1, 7), (10, 10), (37, 23), (50, 120)])
def test_wasserstein_1d_matches_scipy(m, n):
    x, y = randn(m, seed=m), 2 * randn(n, seed=1000 + n) + 0.3
    est = wasserstein(x, y)
    expected = scipy.stats.wasserstein_distance(x.numpy(), y.numpy())
    assert est.value.item() == pytest.approx(expected, rel=REF_RTOL)
    assert est.exact and est.stderr.item() == 0 and est.num_samples == m + n


@pytest.mark.parametrize("p", [1, 2, 3.5])
def test_wasserstein_1d_unequal_sizes_by_replication(p):
    # The empirical law of x is that of x repeated k times: with both samples replicated to a
    # common size, W_p is the closed form for sorted equal-size samples.
    x, y = randn(6, seed=20), randn(4, seed=21) * 3
    xr, yr = np.sort(np.repeat(x.numpy(), 2)), np.sort(np.repeat(y.numpy(), 3))
    expected = np.mean(np.abs(xr - yr) ** p) ** (1 / p)
    assert wasserstein(x, y, p=p).value.item() == pytest.approx(expected, rel=REF_RTOL)


@pytest.mark.parametrize("p", [1, 2])
def test_sliced_wasserstein_of_embedded_1d_data(p):
    # Data on the first axis of R^3: each projection gives |theta_1| W_p, and theta_1 is
    # uniform on [-1, 1] (Archimedes), so SW_p = (1 / (p + 1))^(1/p) W_p exactly.
    x, y = randn(80, seed=22), randn(60, seed=23) + 1
    exact = wasserstein(x, y, p=p).value.item()
    pad = torch.zeros(1, 2, dtype=F64)
    est = wasserstein(
        torch.cat([x[:, None], pad.expand(80, 2)], 1),
        torch.cat([y[:, None], pad.expand(60, 2)], 1),
        p=p,
        seed=0,
    )
    assert est.estimator == "sliced" and est.stderr.item() > 0
    expected = (1 / (p + 1)) ** (1 / p) * exact
    assert abs(est.value.item() - expected) < Z_SD * est.stderr.item()


def test_sliced_wasserstein_of_shifted_gaussians():
    # N(0, I) vs N(delta, I) in R^3: every projection is a shift by theta.delta, so
    # SW_1 = |delta| E|theta_1| = |delta| / 2. Beyond the projection error (stderr) the samples
    # add error of order the sd of a projected mean difference, sqrt(2 / N).
    n, delta = 5000, 2.0
    x = randn(n, 3, seed=24)
    y = randn(n, 3, seed=25) + torch.tensor([delta, 0.0, 0.0], dtype=F64)
    est = wasserstein(x, y, num_projections=1024, seed=0)
    tol = Z_SD * (est.stderr.item() + math.sqrt(2 / n))
    assert abs(est.value.item() - delta / 2) < tol


# ----------------------------------------------------------------------------- Fréchet


def pytorch_fid_reference(x: np.ndarray, y: np.ndarray) -> float:
    """``calculate_frechet_distance`` of pytorch-fid (Seitzer), with ``scipy.linalg.sqrtm``."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d", [1, 5])
def test_frechet_matches_pytorch_fid(d):
    x = randn(40, d, seed=26)
    y = randn(60, d, seed=27) @ randn(d, d, seed=28) + 0.5
    est = frechet_distance(x.squeeze(-1) if d == 1 else x, y)
    expected = pytorch_fid_reference(x.numpy(), y.numpy())
    assert est.value.item() == pytest.approx(expected, rel=1e-8)
    assert est.estimator == "plug-in" and est.stderr.item() == 0


def test_frechet_analytic_closed_form_and_batch():
    # Diagonal (commuting) covariances: FD = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = torch.tensor([1.0, 4.0, 0.25], dtype=F64), torch.tensor([9.0, 1.0, 0.25], dtype=F64)
    mu = torch.tensor([1.0, -2.0, 0.0], dtype=F64)
    est = frechet_distance(
        MultivariateNormal(mu, torch.diag(a)),
        MultivariateNormal(torch.zeros(3, dtype=F64), torch.diag(b)),
    )
    expected = mu.square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    assert est.exact and est.value.item() == pytest.approx(expected.item(), rel=REF_RTOL)
    # A batch of 4 against one: each entry equals its own unbatched call.
    locs, tril = randn(4, 3, seed=29), randn(4, 3, 3, seed=30).tril()
    tril = tril + torch.diag_embed(
        tril.diagonal(dim1=-2, dim2=-1).abs() + 0.1 - tril.diagonal(dim1=-2, dim2=-1)
    )
    q = MultivariateNormal(torch.zeros(3, dtype=F64), torch.diag(b))
    batch = frechet_distance(MultivariateNormal(locs, scale_tril=tril), q)
    assert batch.shape == (4,)
    for i in range(4):
        one = frechet_distance(MultivariateNormal(locs[i], scale_tril=tril[i]), q)
        assert batch.value[i].item() == pytest.approx(one.value.item(), rel=REF_RTOL)


def test_frechet_of_large_samples_approaches_analytic():
    p = MultivariateNormal(torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64))
    cov = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=F64)
    q = MultivariateNormal(torch.tensor([1.0, 0.0, -1.0], dtype=F64), cov)
    analytic = frechet_distance(p, q).value.item()
    est = frechet_distance(p.sample((20000,)), q.sample((20000,)), bootstrap=200, seed=0)
    assert abs(est.value.item() - analytic) < Z_SD * est.stderr.item()


def test_frechet_bootstrap_stderr_matches_spread():
    shift = torch.tensor([0.5, 0.0], dtype=F64)
    values, stderrs = [], []
    for i in range(200):
        x, y = randn(200, 2, seed=5000 + i), randn(200, 2, seed=6000 + i) * 1.3 + shift
        est = frechet_distance(x, y, bootstrap=100, seed=i)
        values.append(est.value.item())
        stderrs.append(est.stderr.item())
    assert np.mean(stderrs) == pytest.approx(np.std(values, ddof=1), rel=SD_RTOL)


# ----------------------------------------------------------------------------- common


@pytest.mark.parametrize(
    "call",
    [
        lambda x, y: mmd(x, y, permutations=9),
        lambda x, y: classifier_two_sample_test(x, y),
        lambda x, y: wasserstein(x, y),
        lambda x, y: wasserstein(x, y, num_projections=8),
        lambda x, y: frechet_distance(x, y),
    ],
)
def test_float32_in_float32_out(call):
    x, y = torch.randn(40, 2), torch.randn(30, 2) + 1
    est = call(x, y)
    assert est.value.dtype == torch.float32 and est.stderr.dtype == torch.float32
    assert math.isfinite(float(est))


X2, Y3 = torch.zeros(5, 2, dtype=F64), torch.zeros(5, 3, dtype=F64)
ONE, FIVE = torch.zeros(1, 2, dtype=F64), randn(5, 2, seed=0)
NAN = torch.tensor([[0.0, math.nan], [1.0, 1.0], [2.0, 0.0]], dtype=F64)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mmd(X2, Y3), r"same dimension D"),
        (lambda: classifier_two_sample_test(X2, Y3), r"same dimension D"),
        (lambda: wasserstein(X2, Y3), r"same dimension D"),
        (lambda: frechet_distance(X2, Y3), r"same dimension D"),
        (lambda: mmd(ONE, FIVE), r"x has 1 draws.*at least 2"),
        (lambda: frechet_distance(FIVE, ONE), r"y has 1 draws.*at least 2"),
        (lambda: classifier_two_sample_test(ONE, FIVE), r"1 <= t < min\(m, n\)"),
        (lambda: mmd(NAN, FIVE), r"x: .*NaN"),
        (lambda: wasserstein(FIVE, NAN), r"y: .*NaN"),
        (lambda: mmd(torch.zeros(2, 2, 2), FIVE), r"x: .*\[N\] or \[N, D\]"),
        (lambda: mmd(FIVE, FIVE, kernel="rbf"), r"unknown kernel 'rbf'.*gaussian.*imq"),
        (lambda: mmd(FIVE, FIVE, bandwidth=0.0), r"bandwidth must be a finite number > 0"),
        (lambda: mmd(FIVE, FIVE, bandwidth=-1.0), r"bandwidth must be a finite number > 0"),
        (lambda: mmd(FIVE, FIVE, bandwidth=math.inf), r"bandwidth must be a finite number > 0"),
        (lambda: mmd(FIVE, FIVE, kernel=lambda a, b: a @ b.T, bandwidth=1.0), r"named kernels"),
        (lambda: mmd(FIVE, FIVE, kernel=lambda a, b: a), r"kernel must return"),
        (lambda: mmd(FIVE, FIVE, permutations=-1), r"permutations must be an integer >= 0"),
        (lambda: classifier_two_sample_test(FIVE, FIVE, classifier="svm"), r"logistic.*mlp"),
        (lambda: classifier_two_sample_test(FIVE, FIVE, test_fraction=1.0), r"in \(0, 1\)"),
        (lambda: classifier_two_sample_test(FIVE, FIVE, test_fraction=0.0), r"in \(0, 1\)"),
        (
            lambda: classifier_two_sample_test(FIVE, FIVE, classifier=lambda z, t: lambda u: t),
            r"must return \[4\] probabilities",
        ),
        (lambda: wasserstein(FIVE, FIVE, p=0.5), r"p must be a finite number >= 1"),
        (lambda: wasserstein(FIVE, FIVE, p=math.inf), r"p must be a finite number >= 1"),
        (lambda: wasserstein(FIVE, FIVE, num_projections=1), r"num_projections .* >= 2"),
        (lambda: wasserstein(ONE[:, 0], FIVE[:, 0], num_projections=0), r"num_projections"),
        (lambda: frechet_distance(FIVE, FIVE, bootstrap=1), r"bootstrap must be 0 or .* >= 2"),
        (
            lambda: frechet_distance(
                MultivariateNormal(torch.zeros(2), torch.eye(2)), torch.zeros(5, 2)
            ),
            r"both be samples or both be MultivariateNormal",
        ),
        (
            lambda: frechet_distance(
                MultivariateNormal(torch.zeros(2), torch.eye(2)),
                MultivariateNormal(torch.zeros(3), torch.eye(3)),
            ),
            r"different event shapes",
        ),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_wrong_input_type_is_a_type_error():
    with pytest.raises(TypeError, match=r"x must be a Tensor of draws .* or Samples; got list"):
        mmd([1.0, 2.0], FIVE)
