"""Exact divergences of probability vectors against scipy, closed forms and their inequalities."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from probgen.diagnostics import discrete

#: float64 sums of K <= 10 terms by formulas that differ only in rounding (log(p/q) against
#: log p - log q, another summation order) agree to a few hundred ulps.
RTOL = 1e-10
ATOL = 1e-13
#: Slack for inequalities between separately rounded float64 quantities.
INEQ_ATOL = 1e-12
#: KL of (near-)equal vectors carries an absolute rounding error ~1e-16 (their sums are 1 only to
#: an ulp); sqrt(KL / 2) in Pinsker's bound turns that into ~1e-8.
PINSKER_ATOL = 1e-7
#: dD_alpha/dalpha at alpha = 1 is Var_p[log p/q] / 2 (< 5 for the vectors below), so at
#: |alpha - 1| = 1e-7 the Rényi divergence is within 5e-7 of KL.
ALPHA_STEP = 1e-7
ALPHA_ONE_ATOL = 1e-6
#: Hypothesis examples per property: enough to hit zeros, one-hot and near-equal vectors
#: (derandomized, so every run checks the same examples; 2,000 per property passed locally).
EXAMPLES = 80

ALPHAS = [0.0, 0.3, 0.5, 0.99, 1.0, 1.5, 2.0, 3.7, math.inf]


def _t(x: np.ndarray | list[float]) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _random_pairs(k: int = 6, n: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))) for _ in range(n)]


def _renyi_reference(p: np.ndarray, q: np.ndarray, alpha: float) -> float:
    """The definition (van Erven & Harremoës 2014, eqs. 1-4) in numpy float64, for q > 0."""
    s = p > 0
    if alpha == 0:
        return float(-np.log(q[s].sum()))
    if alpha == 1:
        return float(np.sum(p[s] * np.log(p[s] / q[s])))
    if math.isinf(alpha):
        return float(np.log(np.max(p[s] / q[s])))
    return float(np.log(np.sum(p[s] ** alpha * q[s] ** (1 - alpha))) / (alpha - 1))


# ---------------------------------------------------------------------------------------------
# References


@pytest.mark.parametrize(("p", "q"), _random_pairs())
def test_kl_entropy_cross_entropy_match_scipy(p: np.ndarray, q: np.ndarray) -> None:
    assert float(discrete.kl(_t(p), _t(q))) == pytest.approx(scipy_entropy(p, q), RTOL, ATOL)
    assert float(discrete.entropy(_t(p))) == pytest.approx(scipy_entropy(p), RTOL, ATOL)
    cross = scipy_entropy(p) + scipy_entropy(p, q)
    assert float(discrete.cross_entropy(_t(p), _t(q))) == pytest.approx(cross, RTOL, ATOL)


@pytest.mark.parametrize(("p", "q"), _random_pairs())
def test_js_matches_scipy_jensenshannon_squared(p: np.ndarray, q: np.ndarray) -> None:
    # scipy returns the Jensen-Shannon *distance*, the square root of the divergence.
    js = float(discrete.js(_t(p), _t(q)))
    assert js == pytest.approx(jensenshannon(p, q) ** 2, RTOL, ATOL)
    assert js / math.log(2) == pytest.approx(jensenshannon(p, q, base=2) ** 2, RTOL, ATOL)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize(("p", "q"), _random_pairs(n=3))
def test_renyi_matches_definition(p: np.ndarray, q: np.ndarray, alpha: float) -> None:
    p = p.copy()
    p[0] = 0.0  # a zero in p exercises D_0 = -log q(supp p) and the masked terms
    p /= p.sum()
    value = float(discrete.renyi(_t(p), _t(q), alpha))
    assert value == pytest.approx(_renyi_reference(p, q, alpha), RTOL, ATOL)


@pytest.mark.parametrize(("p", "q"), _random_pairs(n=3))
def test_renyi_tends_to_kl_and_is_monotone_in_alpha(p: np.ndarray, q: np.ndarray) -> None:
    kl = float(discrete.kl(_t(p), _t(q)))
    for alpha in (1 - ALPHA_STEP, 1 + ALPHA_STEP):
        assert float(discrete.renyi(_t(p), _t(q), alpha)) == pytest.approx(kl, abs=ALPHA_ONE_ATOL)
    values = [float(discrete.renyi(_t(p), _t(q), a)) for a in ALPHAS]
    assert all(b >= a - INEQ_ATOL for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(("p", "q"), _random_pairs())
def test_hellinger_is_renyi_half(p: np.ndarray, q: np.ndarray) -> None:
    # H^2 = 1 - BC and D_{1/2} = -2 log BC, with BC the Bhattacharyya coefficient.
    h2 = float(discrete.hellinger(_t(p), _t(q))) ** 2
    d_half = float(discrete.renyi(_t(p), _t(q), 0.5))
    assert h2 == pytest.approx(1 - math.exp(-d_half / 2), RTOL, ATOL)
    assert h2 == pytest.approx(1 - np.sum(np.sqrt(p * q)), RTOL, ATOL)


@pytest.mark.parametrize(("a", "b"), [(0.3, 0.6), (0.01, 0.99), (0.5, 0.5), (1.0, 0.2)])
def test_bernoulli_closed_forms(a: float, b: float) -> None:
    p, q = _t([a, 1 - a]), _t([b, 1 - b])
    kl = sum(x * math.log(x / y) for x, y in ((a, b), (1 - a, 1 - b)) if x > 0)
    assert float(discrete.kl(p, q)) == pytest.approx(kl, RTOL, ATOL)
    assert float(discrete.total_variation(p, q)) == pytest.approx(abs(a - b), RTOL, ATOL)
    entropy_a = -sum(x * math.log(x) for x in (a, 1 - a) if x > 0)
    assert float(discrete.cross_entropy(p, q)) == pytest.approx(entropy_a + kl, RTOL, ATOL)


def test_zero_conventions() -> None:
    p, q = _t([0.5, 0.5, 0.0]), _t([0.0, 0.5, 0.5])
    inf = torch.tensor(math.inf, dtype=torch.float64)
    assert discrete.kl(p, q) == inf  # q = 0 where p > 0
    assert discrete.cross_entropy(p, q) == inf
    assert discrete.renyi(p, q, 2.0) == inf
    assert discrete.renyi(p, q, math.inf) == inf
    assert torch.isfinite(discrete.renyi(p, q, 0.5))  # alpha < 1 only needs overlapping support
    assert discrete.renyi(_t([1.0, 0.0]), _t([0.0, 1.0]), 0.5) == inf  # disjoint supports
    # p = 0 where q > 0 costs nothing: KL([1, 0] || [1/2, 1/2]) = log 2.
    assert float(discrete.kl(_t([1.0, 0.0]), _t([0.5, 0.5]))) == pytest.approx(math.log(2))
    assert float(discrete.js(_t([1.0, 0.0]), _t([0.0, 1.0]))) == pytest.approx(math.log(2))
    assert float(discrete.entropy(_t([1.0, 0.0]))) == 0.0


def test_subnormal_q_gives_large_finite_kl() -> None:
    # p / q overflows here; the value is 0.5 log(0.5 / 1e-320) + 0.5 log(0.5 / (1 - 1e-320)).
    value = float(discrete.kl(_t([0.5, 0.5]), _t([1e-320, 1.0])))
    assert value == pytest.approx(0.5 * (math.log(0.5) - math.log(1e-320)) + 0.5 * math.log(0.5))


def test_batch_dims_broadcast() -> None:
    rng = np.random.default_rng(1)
    p, q = _t(rng.dirichlet(np.ones(5), size=(3, 1))), _t(rng.dirichlet(np.ones(5), size=4))
    for fn in (discrete.kl, discrete.js, discrete.total_variation, discrete.hellinger):
        out = fn(p, q)
        assert out.shape == (3, 4)
        loop = torch.stack([torch.stack([fn(p[i, 0], q[j]) for j in range(4)]) for i in range(3)])
        torch.testing.assert_close(out, loop, rtol=RTOL, atol=ATOL)
    out = discrete.renyi(p, q, 2.0)
    ref = [
        [_renyi_reference(p[i, 0].numpy(), q[j].numpy(), 2.0) for j in range(4)] for i in range(3)
    ]
    torch.testing.assert_close(out, _t(ref), rtol=RTOL, atol=ATOL)


def test_dtype_follows_input() -> None:
    p = torch.tensor([0.25, 0.75], dtype=torch.float32)
    q = torch.tensor([0.5, 0.5], dtype=torch.float32)
    for value in (discrete.kl(p, q), discrete.renyi(p, q, 0.5), discrete.entropy(p)):
        assert value.dtype == torch.float32


@pytest.mark.parametrize(
    ("p", "q"),
    [
        ([0.2, 0.3, 0.5], [0.3, 0.3, 0.4]),
        ([0.5, 0.5, 0.0], [0.3, 0.3, 0.4]),
        ([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]),  # shared zero, and p = q (H not differentiable)
        ([0.3, 0.3, 0.4], [0.5, 0.5, 0.0]),  # q = 0 < p: only JS, TV, H, D_{1/2} stay finite
    ],
)
def test_gradients_of_finite_values_hold_no_nan(p: list[float], q: list[float]) -> None:
    fns = {
        "kl": discrete.kl,
        "js": discrete.js,
        "tv": discrete.total_variation,
        "hellinger": discrete.hellinger,
        "renyi_half": lambda a, b: discrete.renyi(a, b, 0.5),
        "renyi_2": lambda a, b: discrete.renyi(a, b, 2.0),
        "renyi_inf": lambda a, b: discrete.renyi(a, b, math.inf),
        "entropy": lambda a, b: discrete.entropy(a) + 0 * b.sum(),
        "cross_entropy": discrete.cross_entropy,
    }
    for name, fn in fns.items():
        pt, qt = _t(p).requires_grad_(), _t(q).requires_grad_()
        value = fn(pt, qt)
        if torch.isfinite(value):
            value.backward()
            assert pt.grad is not None and qt.grad is not None, name
            assert not (pt.grad.isnan().any() or qt.grad.isnan().any()), name


# ---------------------------------------------------------------------------------------------
# Properties


def _vectors(k: int) -> st.SearchStrategy[np.ndarray]:
    # Exact zeros and subnormal-to-one magnitudes: the cases where 0 log 0 and p / q matter.
    entry = st.one_of(st.just(0.0), st.floats(0.0, 1.0))
    return (
        st.lists(entry, min_size=k, max_size=k)
        .filter(lambda v: sum(v) > 0)
        .map(lambda v: np.asarray(v) / sum(v))
    )


pairs = st.integers(1, 6).flatmap(lambda k: st.tuples(_vectors(k), _vectors(k)))
alphas = st.one_of(st.floats(0.0, 20.0), st.just(math.inf))
settings_ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True)


@settings_
@given(pairs, alphas)
def test_never_nan_and_within_range(pair: tuple[np.ndarray, np.ndarray], alpha: float) -> None:
    p, q = map(_t, pair)
    values = {
        "kl": discrete.kl(p, q),
        "js": discrete.js(p, q),
        "tv": discrete.total_variation(p, q),
        "hellinger": discrete.hellinger(p, q),
        "renyi": discrete.renyi(p, q, alpha),
        "entropy": discrete.entropy(p),
        "cross_entropy": discrete.cross_entropy(p, q),
    }
    for name, value in values.items():
        assert not torch.isnan(value), name
        assert value >= 0, name
    assert values["js"] <= math.log(2)
    assert values["tv"] <= 1 and values["hellinger"] <= 1
    assert torch.isfinite(values["entropy"])
    assert values["entropy"] <= math.log(p.shape[-1]) + INEQ_ATOL


@settings_
@given(pairs)
def test_symmetry_and_identity(pair: tuple[np.ndarray, np.ndarray]) -> None:
    p, q = map(_t, pair)
    for fn in (discrete.js, discrete.total_variation, discrete.hellinger):
        torch.testing.assert_close(fn(p, q), fn(q, p), rtol=RTOL, atol=ATOL)
    for fn in (discrete.kl, discrete.js, discrete.total_variation, discrete.hellinger):
        assert fn(p, p) == 0
    assert discrete.renyi(p, p, 2.0) == 0


@settings_
@given(pairs)
def test_kl_positive_when_distributions_differ(pair: tuple[np.ndarray, np.ndarray]) -> None:
    p, q = map(_t, pair)
    tv = float(discrete.total_variation(p, q))
    assume(tv > 1e-4)  # Pinsker then guarantees KL >= 2e-8, far above rounding
    assert discrete.kl(p, q) > 0 and discrete.js(p, q) > 0 and discrete.hellinger(p, q) > 0


@settings_
@given(pairs)
def test_pinsker_and_hellinger_tv_bounds(pair: tuple[np.ndarray, np.ndarray]) -> None:
    p, q = map(_t, pair)
    tv = float(discrete.total_variation(p, q))
    h = float(discrete.hellinger(p, q))
    kl = float(discrete.kl(p, q))
    assert tv <= math.sqrt(kl / 2) + PINSKER_ATOL
    assert h**2 <= tv + INEQ_ATOL
    assert tv <= math.sqrt(2) * h + INEQ_ATOL


@settings_
@given(pairs)
def test_cross_entropy_is_entropy_plus_kl(pair: tuple[np.ndarray, np.ndarray]) -> None:
    p, q = map(_t, pair)
    cross = float(discrete.cross_entropy(p, q))
    total = float(discrete.entropy(p) + discrete.kl(p, q))
    assert cross == pytest.approx(total, rel=RTOL, abs=ATOL)  # approx(inf) only equals inf
