"""Information measures against scikit-learn, scipy, closed forms and entropy identities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy
from scipy.stats import norm
from sklearn.metrics import mutual_info_score
from torch.distributions import (
    Categorical,
    Exponential,
    Independent,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    Poisson,
)

from probgen.diagnostics._base import Samples
from probgen.diagnostics.information import (
    conditional_entropy,
    latent_mutual_information,
    mutual_information,
    self_information,
)
from probgen.diagnostics.knn import ksg_mutual_information

#: Exact sums of a few dozen float64 terms, compared with another exact summation.
EXACT_RTOL = 1e-12
EXACT_ATOL = 1e-12
#: Analytic Gaussian MI vs the same closed form via numpy slogdet: a few ulps of log-dets.
GAUSS_ATOL = 1e-10
#: Minibatch latent MI at N = 4000 (linear-Gaussian encoder, I <= 1.5 nats): across 20 seeds
#: sd <= 0.011 and |bias| <= 0.005 in 1-D, sd <= 0.011 and |bias| <= 0.005 for 3 dims at
#: I = 1.04; 0.06 is > 5 sd + |bias|.
LATENT_MI_ATOL = 0.06


def _random_table(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(shape, generator=gen, dtype=torch.float64) ** 3
    return t / t.sum((-2, -1), keepdim=True)


def _h(p: np.ndarray) -> float:
    return float(scipy_entropy(p.ravel()))


# --- mutual information of tables -------------------------------------------------------


def test_table_mi_matches_sklearn_contingency():
    gen = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 30, (4, 6), generator=gen).to(torch.float64)
    counts[1, 2] = 0
    est = mutual_information(counts, normalize=True)
    ref = mutual_info_score(None, None, contingency=counts.numpy().astype(np.int64))
    assert est.estimator == "exact" and float(est.stderr) == 0.0 and est.unit == "nats"
    assert float(est) == pytest.approx(ref, rel=EXACT_RTOL)


def test_table_mi_matches_sklearn_labels():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 3, 500)
    b = (a + rng.integers(0, 2, 500)) % 4
    counts = np.zeros((3, 4))
    np.add.at(counts, (a, b), 1)
    est = mutual_information(torch.from_numpy(counts / counts.sum()))
    assert float(est) == pytest.approx(mutual_info_score(a, b), rel=EXACT_RTOL)


def test_table_mi_batched_identity_and_bits():
    tables = _random_table((2, 3, 5, 4), 2)
    est = mutual_information(tables)
    assert est.shape == (2, 3)
    t = tables.numpy()
    for i in np.ndindex(2, 3):
        hx, hy, hxy = _h(t[i].sum(1)), _h(t[i].sum(0)), _h(t[i])
        assert float(est.value[i]) == pytest.approx(hx + hy - hxy, rel=1e-10, abs=EXACT_ATOL)
    bits = mutual_information(tables, base=2)
    assert bits.unit == "bits"
    torch.testing.assert_close(bits.value, est.value / math.log(2))


def test_table_mi_extremes():
    independent = torch.outer(
        torch.tensor([0.2, 0.8], dtype=torch.float64),
        torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64),
    )
    assert float(mutual_information(independent)) == pytest.approx(0.0, abs=EXACT_ATOL)
    copy = torch.eye(5, dtype=torch.float64) / 5
    assert float(mutual_information(copy)) == pytest.approx(math.log(5), rel=EXACT_RTOL)


def test_table_mi_bad_input():
    with pytest.raises(ValueError, match=r"\[..., X, Y\]"):
        mutual_information(torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="normalize=True"):
        mutual_information(torch.ones(2, 2))
    with pytest.raises(ValueError, match="negative"):
        mutual_information(torch.tensor([[0.5, 0.6], [0.0, -0.1]]))
    with pytest.raises(ValueError, match="split applies"):
        mutual_information(torch.eye(2) / 2, split=1)


# --- conditional entropy ------------------------------------------------------------------


def test_conditional_entropy_chain_rule():
    tables = _random_table((3, 4, 6), 3)
    tables[0, 2] = 0.0  # a zero-probability row of X
    tables = tables / tables.sum((-2, -1), keepdim=True)
    est = conditional_entropy(tables)
    assert est.shape == (3,) and est.exact
    t = tables.numpy()
    for i in range(3):
        assert float(est.value[i]) == pytest.approx(_h(t[i]) - _h(t[i].sum(1)), rel=1e-10)
    # I(X; Y) = H(Y) - H(Y | X), and H(X | Y) is the transpose.
    hy = torch.tensor([_h(t[i].sum(0)) for i in range(3)], dtype=torch.float64)
    torch.testing.assert_close(mutual_information(tables).value, hy - est.value)
    hx_given_y = conditional_entropy(tables.transpose(-1, -2))
    hx = torch.tensor([_h(t[i].sum(1)) for i in range(3)], dtype=torch.float64)
    torch.testing.assert_close(mutual_information(tables).value, hx - hx_given_y.value)


def test_conditional_entropy_extremes_and_counts():
    function_of_x = torch.tensor([[3.0, 0, 0], [0, 0, 5], [0, 2, 0]], dtype=torch.float64)
    assert float(conditional_entropy(function_of_x, normalize=True)) == 0.0
    py = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    independent = torch.outer(torch.tensor([0.4, 0.6], dtype=torch.float64), py)
    h = conditional_entropy(independent, base=2)
    assert h.unit == "bits"
    assert float(h) == pytest.approx(scipy_entropy(py.numpy(), base=2), rel=EXACT_RTOL)


# --- Gaussian mutual information ------------------------------------------------------------


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.9, -0.99])
def test_gaussian_mi_bivariate(rho):
    c = rho * math.sqrt(2.0)
    cov = torch.tensor([[2.0, c], [c, 1.0]], dtype=torch.float64)
    est = mutual_information(MultivariateNormal(torch.zeros(2, dtype=torch.float64), cov), split=1)
    assert est.estimator == "analytic" and est.exact
    assert float(est) == pytest.approx(-0.5 * math.log(1 - rho**2), abs=GAUSS_ATOL)


def test_gaussian_mi_blocks_and_batch():
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(3, 5, 5, generator=gen, dtype=torch.float64)
    cov = a @ a.transpose(-1, -2) + 0.5 * torch.eye(5, dtype=torch.float64)
    est = mutual_information(MultivariateNormal(torch.zeros(5, dtype=torch.float64), cov), split=2)
    assert est.shape == (3,)
    c = cov.numpy()
    for i in range(3):
        ref = 0.5 * (
            np.linalg.slogdet(c[i, :2, :2])[1]
            + np.linalg.slogdet(c[i, 2:, 2:])[1]
            - np.linalg.slogdet(c[i])[1]
        )
        assert float(est.value[i]) == pytest.approx(ref, abs=GAUSS_ATOL)


def test_gaussian_mi_independent_normal_is_zero():
    p = Independent(Normal(torch.zeros(4, 3), torch.ones(4, 3)), 1)
    est = mutual_information(p, split=1)
    assert est.shape == (4,) and bool((est.value == 0).all())


def test_gaussian_mi_of_a_low_rank_joint_equals_the_dense_one():
    # Cov = W W^T + D: the same joint as a LowRankMultivariateNormal and a dense one.
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    d = torch.rand(4, generator=gen, dtype=torch.float64) + 0.1
    low = LowRankMultivariateNormal(torch.zeros(4, dtype=torch.float64), w, d)
    dense = MultivariateNormal(low.loc, low.covariance_matrix)
    for split in (1, 2, 3):
        assert float(mutual_information(low, split=split)) == pytest.approx(
            float(mutual_information(dense, split=split)), rel=EXACT_RTOL
        )


def test_gaussian_mi_bad_input():
    mvn = MultivariateNormal(torch.zeros(3), torch.eye(3))
    with pytest.raises(ValueError, match="needs split"):
        mutual_information(mvn)
    for bad in (0, 3, 1.5):
        with pytest.raises(ValueError, match=r"split must be an integer in \[1, 2\]"):
            mutual_information(mvn, split=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"analytic only for a \(LowRank\)MultivariateNormal"):
        mutual_information(Poisson(torch.ones(3)), split=1)


# --- mutual information of samples --------------------------------------------------------


def test_sample_mi_is_ksg():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(400, 2, generator=gen, dtype=torch.float64)
    y = x[:, :1] + torch.randn(400, 1, generator=gen, dtype=torch.float64)
    est = mutual_information(Samples(x), y, k=4, base=2)
    ref = ksg_mutual_information(x, y, k=4)
    assert est.estimator == "ksg" and est.unit == "bits"
    assert float(est) == pytest.approx(float(ref) / math.log(2), rel=EXACT_RTOL)
    with pytest.raises(ValueError, match="needs the paired draws"):
        mutual_information(Samples(x))
    with pytest.raises(ValueError, match="paired draws"):
        mutual_information(x, y, split=1)
    with pytest.raises(TypeError, match="not a Distribution"):
        mutual_information(MultivariateNormal(torch.zeros(2), torch.eye(2)), y)


# --- self-information ------------------------------------------------------------------------


def test_self_information_vectors():
    p = torch.tensor([[0.5, 0.25, 0.25, 0.0], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    x = torch.tensor([[0], [3]])  # broadcasts against the batch [2]: shape [2, 2]
    est = self_information(p, x, base=2)
    expected = torch.tensor([[1.0, math.log2(10)], [math.inf, -math.log2(0.4)]])
    assert est.shape == (2, 2) and est.unit == "bits" and est.exact
    torch.testing.assert_close(est.value, expected.double())
    cat = Categorical(probs=p[1])
    torch.testing.assert_close(
        self_information(p[1], torch.arange(4)).value, -cat.log_prob(torch.arange(4))
    )


def test_self_information_distribution():
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)
    est = self_information(Normal(torch.tensor(0.5).double(), 2.0), x)
    torch.testing.assert_close(est.value, torch.from_numpy(-norm(0.5, 2.0).logpdf(x.numpy())))


def test_self_information_outside_the_support_is_infinite():
    # Without validation Exponential.log_prob(-1) is a finite number; the surprisal of an
    # outcome of density 0 is +inf whatever the distribution's validate_args.
    for validate in (True, False):
        rate = torch.tensor(2.0, dtype=torch.float64)
        x = torch.tensor([-1.0, 1.0], dtype=torch.float64)
        est = self_information(Exponential(rate, validate_args=validate), x)
        expected = torch.tensor([math.inf, 2.0 - math.log(2.0)], dtype=torch.float64)
        torch.testing.assert_close(est.value, expected)


def test_self_information_bad_outcomes():
    p = torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        self_information(p, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        self_information(p, -1)
    with pytest.raises(ValueError, match="integer outcome"):
        self_information(p, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="Distribution or a tensor"):
        self_information(Samples(torch.randn(5)), 0)  # type: ignore[arg-type]


# --- latent mutual information ----------------------------------------------------------------


def _linear_gaussian_encoder(a: float, s: float):
    return lambda x: Independent(Normal(a * x, s * torch.ones_like(x)), 1)


@pytest.mark.parametrize(("a", "s", "dims"), [(2.0, 0.5, 1), (1.0, 1.0, 3)])
def test_latent_mi_linear_gaussian(a, s, dims):
    x = torch.randn(4000, dims, dtype=torch.float64)
    est = latent_mutual_information(_linear_gaussian_encoder(a, s), x)
    truth = dims * 0.5 * math.log((a**2 + s**2) / s**2)
    assert est.estimator == "monte-carlo" and est.num_samples == 4000
    assert float(est) == pytest.approx(truth, abs=LATENT_MI_ATOL)
    assert 0 < float(est.stderr) < LATENT_MI_ATOL


def test_latent_mi_bounded_by_log_batch_size():
    # True I = 1/2 log(1 + 1e6) = 6.9 nats > log 100 = 4.6: the minibatch estimate saturates.
    x = torch.randn(100, 1, dtype=torch.float64)
    q = _linear_gaussian_encoder(1.0, 1e-3)(x)
    est = latent_mutual_information(q, x, num_samples=3)
    assert float(est) <= math.log(100) + 1e-12
    assert float(est) > math.log(100) - 0.1


def test_latent_mi_bad_encoder():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match=r"batch shape \[N\] = \[10\]"):
        latent_mutual_information(lambda x: Normal(x, 1.0), x)
    with pytest.raises(ValueError, match="callable"):
        latent_mutual_information(3.0, x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_samples"):
        latent_mutual_information(_linear_gaussian_encoder(1.0, 1.0), x, num_samples=0)
