"""The public divergence API: dispatch on input kinds, units, and bad input."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyro
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon
from torch.distributions import (
    Categorical,
    Exponential,
    MultivariateNormal,
    Normal,
    StudentT,
)

from probgen.diagnostics import analytic, discrete, knn
from probgen.diagnostics._base import Estimate, Samples
from probgen.diagnostics.divergences import (
    cross_entropy,
    entropy,
    hellinger,
    js_divergence,
    kl_divergence,
    renyi_divergence,
    total_variation,
)

#: float64 sums of K = 5 terms computed by formulas that differ only in rounding.
RTOL = 1e-10
ATOL = 1e-13
#: Monte Carlo draws for the Distribution paths: only dispatch is checked, not accuracy.
NUM_SAMPLES = 500
#: Draws for the Samples paths (kNN is O(N^2)); small keeps each test well under a second.
N_DRAWS = 400

PAIR_FNS = [kl_divergence, js_divergence, total_variation, hellinger, cross_entropy]


def _t(x: np.ndarray | list[float]) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


@pytest.fixture
def pq() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))


# ---------------------------------------------------------------------------------------------
# Tensors: exact sums


def test_tensor_results_match_scipy(pq: tuple[np.ndarray, np.ndarray]) -> None:
    p, q = pq
    references = {
        kl_divergence: stats.entropy(p, q),
        js_divergence: jensenshannon(p, q) ** 2,  # scipy returns the distance sqrt(JS)
        total_variation: 0.5 * np.abs(p - q).sum(),
        hellinger: math.sqrt(1 - np.sqrt(p * q).sum()),
        cross_entropy: stats.entropy(p) + stats.entropy(p, q),
    }
    for fn, reference in references.items():
        est = fn(_t(p), _t(q))
        assert est.estimator == "exact" and est.exact, fn.__name__
        assert est.stderr.shape == est.value.shape and (est.stderr == 0).all(), fn.__name__
        assert est.unit == ("" if fn in (total_variation, hellinger) else "nats"), fn.__name__
        assert float(est) == pytest.approx(reference, RTOL, ATOL), fn.__name__
    assert float(entropy(_t(p))) == pytest.approx(stats.entropy(p), RTOL, ATOL)
    value = float(renyi_divergence(_t(p), _t(q), 2.0))
    assert value == pytest.approx(math.log(np.sum(p**2 / q)), RTOL, ATOL)


def test_base_converts_to_bits(pq: tuple[np.ndarray, np.ndarray]) -> None:
    p, q = pq
    kl = kl_divergence(_t(p), _t(q), base=2)
    assert kl.unit == "bits"
    assert float(kl) == pytest.approx(stats.entropy(p, q, base=2), RTOL, ATOL)
    js = js_divergence(_t(p), _t(q), base=2)
    assert float(js) == pytest.approx(jensenshannon(p, q, base=2) ** 2, RTOL, ATOL)
    assert float(entropy(_t(p), base=2)) == pytest.approx(stats.entropy(p, base=2), RTOL, ATOL)
    ce = cross_entropy(_t(p), _t(q), base=10)
    reference = stats.entropy(p, base=10) + stats.entropy(p, q, base=10)
    assert ce.unit == "base-10 units" and float(ce) == pytest.approx(reference, RTOL, ATOL)
    renyi = renyi_divergence(_t(p), _t(q), 0.5, base=2)
    assert float(renyi) == pytest.approx(float(discrete.renyi(_t(p), _t(q), 0.5)) / math.log(2))


def test_normalize_accepts_counts(pq: tuple[np.ndarray, np.ndarray]) -> None:
    q = pq[1]
    counts = _t([1.0, 2.0, 3.0, 0.0, 4.0])
    with pytest.raises(ValueError, match=r"p does not sum to 1.*normalize=True"):
        kl_divergence(counts, _t(q))
    est = kl_divergence(counts, _t(q), normalize=True)
    assert float(est) == pytest.approx(stats.entropy(counts.numpy(), q), RTOL, ATOL)
    assert float(entropy(counts, normalize=True)) == pytest.approx(stats.entropy(counts.numpy()))


def test_batch_dims_broadcast() -> None:
    rng = np.random.default_rng(1)
    p, q = _t(rng.dirichlet(np.ones(4), size=(3, 1))), _t(rng.dirichlet(np.ones(4), size=4))
    for fn in PAIR_FNS:
        est = fn(p, q)
        assert est.shape == (3, 4) and est.stderr.shape == (3, 4), fn.__name__
    ref = stats.entropy(p.numpy().transpose(2, 0, 1), q.numpy().T[:, None, :])
    torch.testing.assert_close(kl_divergence(p, q).value, _t(ref), rtol=RTOL, atol=ATOL)


def test_infinite_not_nan() -> None:
    p, q = _t([0.5, 0.5, 0.0]), _t([0.0, 0.5, 0.5])
    for fn in (kl_divergence, cross_entropy):
        assert math.isinf(float(fn(p, q))) and float(fn(p, q)) > 0, fn.__name__
    assert math.isinf(float(renyi_divergence(p, q, 2.0)))
    assert float(js_divergence(p, q)) < math.log(2)
    # Zero p where q > 0 is fine: KL([1, 0] || [1/2, 1/2]) = log 2.
    assert float(kl_divergence(_t([1.0, 0.0]), _t([0.5, 0.5]))) == pytest.approx(math.log(2))


#: Hypothesis examples (derandomized): the public path adds only validation to discrete.py.
EXAMPLES = 50


def _vectors(k: int) -> st.SearchStrategy[list[float]]:
    entry = st.one_of(st.just(0.0), st.floats(0.0, 1.0))
    return st.lists(entry, min_size=k, max_size=k).filter(lambda v: sum(v) > 0)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
@given(st.integers(1, 5).flatmap(lambda k: st.tuples(_vectors(k), _vectors(k))))
def test_public_api_never_nan(pair: tuple[list[float], list[float]]) -> None:
    p, q = (_t(v) for v in pair)
    for fn in PAIR_FNS:
        assert not torch.isnan(fn(p, q, normalize=True).value), fn.__name__
    for alpha in (0.0, 0.5, 2.0, math.inf):
        assert not torch.isnan(renyi_divergence(p, q, alpha, normalize=True).value)


# ---------------------------------------------------------------------------------------------
# Bad input: every error names the argument


@pytest.mark.parametrize(
    ("p", "q", "match"),
    [
        ([0.5, 0.5], [0.2, 0.3, 0.5], "same last dimension"),
        ([[0.5, 0.5]] * 2, [[0.5, 0.5]] * 3, "batch dimensions of p"),
        ([1.2, -0.2], [0.5, 0.5], "p has negative entries"),
        ([0.5, 0.5], [math.nan, 1.0], "q holds NaN"),
        ([0.5, 0.5], [0.2, 0.3], "q does not sum to 1"),
    ],
)
def test_bad_probability_vectors(p: list[float], q: list[float], match: str) -> None:
    for fn in PAIR_FNS:
        with pytest.raises(ValueError, match=match):
            fn(_t(p), _t(q))


def test_bad_arguments() -> None:
    p, q = _t([0.5, 0.5]), _t([0.25, 0.75])
    for alpha in (-0.5, math.nan, "two"):
        with pytest.raises(ValueError, match="alpha must be"):
            renyi_divergence(p, q, alpha)  # type: ignore[arg-type]
    for base in (1, 0.5, -2.0, math.inf):
        with pytest.raises(ValueError, match="base must be"):
            kl_divergence(p, q, base=base)
    for num_samples in (1, 2.5, True):
        with pytest.raises(ValueError, match="num_samples must be"):
            js_divergence(p, q, num_samples=num_samples)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be"):
        entropy(p, k=0)
    with pytest.raises(ValueError, match="grid_points must be"):
        total_variation(p, q, grid_points=1)
    with pytest.raises(TypeError, match="p must be a Tensor"):
        kl_divergence([0.5, 0.5], q)  # type: ignore[arg-type]


def test_mixed_kinds_are_refused() -> None:
    probs = _t([0.5, 0.5])
    dist = Categorical(probs=probs)
    for fn in PAIR_FNS:
        with pytest.raises(TypeError, match=r"p as Tensor and q as Distribution.*Categorical"):
            fn(probs, dist)
        with pytest.raises(TypeError, match=r"p as Distribution and q as Tensor"):
            fn(dist, probs)
    x = Samples(torch.randn(20, dtype=torch.float64))
    normal = Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    for fn in (js_divergence, total_variation, hellinger):
        with pytest.raises(TypeError, match="two_sample"):
            fn(x, x)
    with pytest.raises(TypeError, match="two_sample"):
        renyi_divergence(x, normal, 2.0)
    with pytest.raises(TypeError, match="Samples as p"):
        kl_divergence(normal, x)
    with pytest.raises(TypeError, match="Samples as p"):
        cross_entropy(normal, x)


# ---------------------------------------------------------------------------------------------
# Distributions: dispatched to probgen.diagnostics.analytic


def _normals() -> tuple[Normal, Normal]:
    f64 = torch.float64
    return Normal(torch.tensor(0.0, dtype=f64), 1.0), Normal(torch.tensor(0.5, dtype=f64), 2.0)


@pytest.mark.parametrize(
    ("public", "backend", "extra"),
    [
        (kl_divergence, analytic.kl, ()),
        (js_divergence, analytic.js, ()),
        (cross_entropy, analytic.cross_entropy, ()),
        (total_variation, analytic.total_variation, (None,)),
        (hellinger, analytic.hellinger, (None,)),
    ],
)
def test_distributions_go_to_analytic(
    public: Callable[..., Estimate], backend: Callable[..., Estimate], extra: tuple[None, ...]
) -> None:
    p, q = _normals()
    pyro.set_rng_seed(0)
    est = public(p, q, num_samples=NUM_SAMPLES)
    pyro.set_rng_seed(0)
    ref = backend(p, q, NUM_SAMPLES, *extra)
    assert (est.estimator, est.unit) == (ref.estimator, ref.unit)
    torch.testing.assert_close(est.value, ref.value)
    torch.testing.assert_close(est.stderr, ref.stderr)


def test_distribution_renyi_entropy_and_base() -> None:
    p, q = _normals()
    pyro.set_rng_seed(0)
    est = renyi_divergence(p, q, 2.0, num_samples=NUM_SAMPLES, base=2)
    pyro.set_rng_seed(0)
    ref = analytic.renyi(p, q, 2.0, NUM_SAMPLES)
    assert est.unit == "bits"
    torch.testing.assert_close(est.value, ref.value / math.log(2))
    pyro.set_rng_seed(0)
    est = entropy(p, num_samples=NUM_SAMPLES, base=2)
    pyro.set_rng_seed(0)
    ref = analytic.entropy(p, NUM_SAMPLES)
    torch.testing.assert_close(est.value, ref.value / math.log(2))
    torch.testing.assert_close(est.stderr, ref.stderr / math.log(2))


# ---------------------------------------------------------------------------------------------
# Samples: kNN estimators, and Monte Carlo against a density


def test_samples_go_to_knn() -> None:
    x = Samples(torch.randn(N_DRAWS, 2, dtype=torch.float64))
    y = Samples(torch.randn(N_DRAWS, 2, dtype=torch.float64) + 0.5)
    est, ref = entropy(x, k=2), knn.knn_entropy(x, k=2)
    torch.testing.assert_close(est.value, ref.value)
    assert est.estimator == ref.estimator
    est, ref = kl_divergence(x, y, k=3, base=2), knn.knn_kl_divergence(x, y, k=3)
    torch.testing.assert_close(est.value, ref.value / math.log(2))
    torch.testing.assert_close(est.stderr, ref.stderr / math.log(2))
    assert est.unit == "bits"


def test_cross_entropy_of_samples_matches_scipy() -> None:
    x = torch.randn(N_DRAWS, dtype=torch.float64) * 1.5
    q = StudentT(torch.tensor([3.0, 10.0], dtype=torch.float64), 0.2, 1.1)  # batch of two
    est = cross_entropy(Samples(x), q)
    nll = -stats.t.logpdf(x.numpy()[:, None], df=[3.0, 10.0], loc=0.2, scale=1.1)
    assert est.estimator == "monte-carlo" and est.num_samples == N_DRAWS
    torch.testing.assert_close(est.value, _t(nll.mean(0)), rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(est.stderr, _t(nll.std(0, ddof=1) / math.sqrt(N_DRAWS)))
    # Draws of a D = 2 vector against a multivariate density.
    xy = torch.randn(N_DRAWS, 2, dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.3], [0.3, 2.0]], dtype=torch.float64)
    mvn = MultivariateNormal(torch.zeros(2, dtype=torch.float64), cov)
    nll = -stats.multivariate_normal(np.zeros(2), cov.numpy()).logpdf(xy.numpy())
    assert float(cross_entropy(Samples(xy), mvn)) == pytest.approx(nll.mean(), RTOL, ATOL)


def test_draws_outside_the_support_give_inf() -> None:
    x = Samples(torch.tensor([0.5, 1.0, -0.1, 2.0], dtype=torch.float64))
    q = Exponential(torch.tensor(1.0, dtype=torch.float64))  # validates: log_prob(-0.1) raises
    est = cross_entropy(x, q)
    assert math.isinf(float(est)) and math.isinf(float(est.stderr))
    assert math.isinf(float(kl_divergence(x, q)))


def test_kl_of_samples_against_density_combines_terms() -> None:
    x = Samples(torch.randn(N_DRAWS, dtype=torch.float64))
    q = Normal(torch.tensor(1.0, dtype=torch.float64), 1.0)
    est = kl_divergence(x, q, k=2)
    ce, h = cross_entropy(x, q), knn.knn_entropy(x, k=2)
    torch.testing.assert_close(est.value, ce.value - h.value)
    torch.testing.assert_close(est.stderr, (ce.stderr**2 + h.stderr**2).sqrt())
    with pytest.raises(ValueError, match="q must be continuous"):
        kl_divergence(x, Categorical(probs=_t([0.5, 0.5])))
    with pytest.raises(ValueError, match="event shape"):
        cross_entropy(Samples(torch.randn(10, 3)), q)
