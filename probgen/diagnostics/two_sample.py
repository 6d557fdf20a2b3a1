"""Two-sample tests: are draws ``x ~ P`` and ``y ~ Q`` from the same distribution?

* :func:`mmd`: the squared maximum mean discrepancy with a characteristic kernel, with a
  batched permutation test (Gretton et al. 2012);
* :func:`classifier_two_sample_test`: held-out accuracy of a classifier told to separate ``x``
  from ``y``, with an exact Binomial p-value (Lopez-Paz & Oquab 2017).

Inputs are draws: a Tensor ``[N]`` or ``[N, D]``, or :class:`~probgen.diagnostics._base.Samples`.
Both statistics are unitless (``unit=""``). Randomness (permutations, the train/test split,
classifier initialisation) comes from a ``torch.Generator`` seeded with ``seed`` on the data's
device, or from torch's global generator when ``seed`` is ``None`` (so ``torch.manual_seed``
reproduces it).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from probgen.diagnostics._base import Estimate, SampleLike, as_draws
from probgen.validation import check_count

__all__ = ["classifier_two_sample_test", "mmd"]

Kernel = Callable[[Tensor, Tensor], Tensor]
Predictor = Callable[[Tensor], Tensor]
Classifier = Callable[[Tensor, Tensor], Predictor]

#: Elements of one ``[chunk, N]`` block of permutation indicators; bounds the memory of the test.
_CHUNK_ELEMENTS = 2**22
#: Relative tolerance for ``T_perm >= T``: permuted statistics equal to the observed one up to
#: rounding count as ties (the convention of ``scipy.stats.permutation_test``).
_TIE_RTOL = 100.0
#: L2 penalty (on the mean loss scale) that keeps logistic weights finite on separable data.
_L2 = 1e-3
_HIDDEN = 64
_LBFGS_ITERS = {"logistic": 100, "mlp": 200}


def sample_pair(x: SampleLike, y: SampleLike, min_draws: int = 1) -> tuple[Tensor, Tensor]:
    """Both samples as ``[N, D]`` and ``[M, D]`` of one dtype, after checking they are comparable.

    Raises:
        ValueError: different dimensions D or devices, or fewer than ``min_draws`` draws.
    """
    a, b = as_draws(x, "x"), as_draws(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension D; got x [N, {a.shape[1]}], y [M, {b.shape[1]}]"
        )
    if a.device != b.device:
        raise ValueError(f"x and y are on different devices ({a.device} and {b.device})")
    for name, draws in (("x", a), ("y", b)):
        if draws.shape[0] < min_draws:
            raise ValueError(
                f"{name} has {draws.shape[0]} draws; this statistic needs at least {min_draws}"
            )
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dtype), b.to(dtype)


def generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A generator on ``device`` seeded with ``seed``; ``None`` means torch's global one."""
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


def _sq_dists(z: Tensor) -> Tensor:
    """``||z_i - z_j||^2`` for all pairs; exactly zero on the diagonal."""
    z = z - z.mean(0)  # centring first limits cancellation in ||a||^2 + ||b||^2 - 2 a.b
    sq = (z * z).sum(-1)
    d2 = (sq[:, None] + sq[None, :] - 2 * z @ z.T).clamp_min(0)
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    return d2.masked_fill(eye, 0.0)


def _median(v: Tensor) -> Tensor:
    """numpy's median: the mean of the two middle values for an even count."""
    k = v.numel()
    return 0.5 * (v.kthvalue((k + 1) // 2).values + v.kthvalue(k // 2 + 1).values)


def _median_heuristic(d2: Tensor) -> Tensor:
    """Median of the pairwise distances ``||z_i - z_j||`` over ``i < j``.

    When half or more of the pairs are tied (distance 0) the median of the non-zero distances
    is used; if every pair is tied, any bandwidth gives MMD 0 and 1 is returned.
    """
    n = d2.shape[0]
    d = d2[torch.ones(n, n, dtype=torch.bool, device=d2.device).triu(1)].detach().sqrt()
    h = _median(d)
    if h == 0:
        d = d[d > 0]
        h = _median(d) if d.numel() else torch.ones((), dtype=d2.dtype, device=d2.device)
    return h


_KERNELS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "gaussian": lambda d2, h: torch.exp(-d2 / (2 * h * h)),
    "imq": lambda d2, h: torch.rsqrt(1 + d2 / (h * h)),
}


def _mmd_terms(k: Tensor, m: int, unbiased: bool) -> tuple[Tensor, Tensor]:
    """MMD^2 from the pooled kernel matrix (x first) and its first-order standard error."""
    n = k.shape[0] - m
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]
    dx, dy = kxx.diagonal(), kyy.diagonal()
    if unbiased:
        value = (kxx.sum() - dx.sum()) / (m * (m - 1)) + (kyy.sum() - dy.sum()) / (n * (n - 1))
    else:
        value = kxx.sum() / m**2 + kyy.sum() / n**2
    value = value - 2 * kxy.sum() / (m * n)
    # Hoeffding projections h1(x_i) = E k(x_i, X') - E k(x_i, Y), estimated leaving i out.
    gx = (kxx.sum(1) - dx) / (m - 1) - kxy.mean(1)
    gy = (kyy.sum(1) - dy) / (n - 1) - kxy.mean(0)
    stderr = (4 * gx.var() / m + 4 * gy.var() / n).sqrt()
    return value, stderr


@torch.no_grad()
def _permutation_p_value(
    k: Tensor,
    m: int,
    observed: Tensor,
    unbiased: bool,
    permutations: int,
    gen: torch.Generator | None,
) -> float:
    """``(1 + #{T_perm >= T}) / (1 + P)``, all permutations evaluated as matrix products.

    With ``a`` the indicator of the draws relabelled ``x`` (``m`` ones), the block sums are
    ``S_xx = a'Ka``, ``S_xy = a'K1 - a'Ka`` and ``S_yy = 1'K1 - 2 a'K1 + a'Ka``.
    """
    size = k.shape[0]
    n = size - m
    rows, diag = k.sum(1), k.diagonal()
    total, trace = rows.sum(), diag.sum()
    threshold = observed - _TIE_RTOL * torch.finfo(k.dtype).eps * observed.abs()
    chunk = max(1, _CHUNK_ELEMENTS // size)
    count = 0
    for start in range(0, permutations, chunk):
        b = min(chunk, permutations - start)
        noise = torch.rand(b, size, generator=gen, dtype=k.dtype, device=k.device)
        a = torch.zeros_like(noise).scatter_(1, noise.argsort(1)[:, :m], 1.0)
        sxx = ((a @ k) * a).sum(1)
        ar = a @ rows
        sxy, syy = ar - sxx, total - 2 * ar + sxx
        if unbiased:
            ad = a @ diag
            t = (sxx - ad) / (m * (m - 1)) + (syy - trace + ad) / (n * (n - 1))
        else:
            t = sxx / m**2 + syy / n**2
        count += int(((t - 2 * sxy / (m * n)) >= threshold).sum())
    return (1 + count) / (1 + permutations)


def mmd(
    x: SampleLike,
    y: SampleLike,
    *,
    kernel: str | Kernel = "gaussian",
    bandwidth: float | None = None,
    unbiased: bool = True,
    permutations: int = 0,
    seed: int | None = None,
) -> Estimate:
    """Squared maximum mean discrepancy ``MMD^2(P, Q)`` between two samples, with a test.

    ``MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)``, zero iff ``P = Q`` for a characteristic
    kernel. With ``m`` draws of ``x`` and ``n`` of ``y`` the unbiased U-statistic is::

        1/(m(m-1)) sum_{i != j} k(x_i, x_j) + 1/(n(n-1)) sum_{i != j} k(y_i, y_j)
            - 2/(mn) sum_{i, j} k(x_i, y_j)

    (it can be slightly negative); the biased V-statistic keeps the diagonal and divides by
    ``m^2`` and ``n^2`` (it is >= 0 and biased upward by ``O(1/m + 1/n)``).

    Kernels (``r = ||a - b||``, bandwidth ``h``): ``"gaussian"`` ``exp(-r^2 / (2 h^2))``;
    ``"imq"`` (inverse multiquadric, ``(c^2 + r^2)^beta`` with ``c = h``, ``beta = -1/2``,
    scaled so ``k(a, a) = 1``) ``(1 + r^2/h^2)^(-1/2)``, whose heavy tails keep power against
    far-apart distributions (Gorham & Mackey 2017); or a callable ``(a [n, D], b [m, D]) ->
    [n, m]`` kernel matrix (then ``bandwidth`` must be ``None``). The default bandwidth is the
    median heuristic: the median distance between distinct draws of the pooled sample.

    ``stderr`` is the first-order (Hoeffding) standard error of the two-sample U-statistic,
    ``Var ~ 4/m Var(h1(x_i)) + 4/n Var(h1(y_j))`` with ``h1(x) = E k(x, X') - E k(x, Y)``
    (and symmetrically for ``y``), estimated from the kernel matrix. Under ``P = Q`` the
    statistic is degenerate: ``h1 = 0``, the first-order variance vanishes, ``stderr`` is only
    estimation noise and the true spread is ``O(1/N)`` from higher-order terms. Use the
    permutation p-value to test, never ``value / stderr``.

    With ``permutations = P > 0``, ``p_value = (1 + #{T_perm >= T}) / (1 + P)`` over ``P``
    random relabellings of the pooled draws, a valid level-alpha test for any sample size.
    The pooled kernel matrix is computed once and the permutations are evaluated in chunks as
    matrix products with group indicators: ``O(P N^2)`` time, ``O(N^2)`` memory.

    Args:
        x: draws ``[m]`` or ``[m, D]`` (or :class:`Samples`), at least 2.
        y: draws ``[n]`` or ``[n, D]``, at least 2, same ``D``.
        kernel: ``"gaussian"``, ``"imq"`` or a kernel-matrix callable.
        bandwidth: ``h > 0``; ``None`` for the median heuristic.
        unbiased: U-statistic (default) or V-statistic.
        permutations: number of permutations for the p-value (0: no test).
        seed: seeds the permutations; ``None`` uses torch's global generator.

    Returns:
        :class:`Estimate` of ``MMD^2`` (unitless), estimator ``"u-statistic"`` or
        ``"v-statistic"``, ``num_samples = m + n``, ``p_value`` when ``permutations > 0``.

    Raises:
        ValueError: bad samples (NaN, mismatched D, fewer than 2 draws), an unknown kernel
            name, a non-positive bandwidth, or negative ``permutations``.

    References:
        Gretton, Borgwardt, Rasch, Schölkopf & Smola, "A kernel two-sample test", JMLR 13, 2012.
        Garreau, Jitkrittum & Kanagawa, "Large sample analysis of the median heuristic",
        arXiv:1707.07269. Gorham & Mackey, "Measuring sample quality with kernels",
        arXiv:1703.01717.
    """
    xs, ys = sample_pair(x, y, min_draws=2)
    if isinstance(kernel, str) and kernel not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; allowed: {sorted(_KERNELS)} or a callable")
    if bandwidth is not None:
        if callable(kernel):
            raise ValueError("bandwidth applies to the named kernels only; got a callable kernel")
        if not (math.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError(f"bandwidth must be a finite number > 0 (or None); got {bandwidth}")
    check_count(permutations, "permutations", 0)
    m, z = len(xs), torch.cat([xs, ys])
    if callable(kernel):
        k = kernel(z, z)
        if k.shape != (len(z), len(z)) or not torch.isfinite(k).all():
            raise ValueError(
                f"kernel must return a finite [{len(z)}, {len(z)}] matrix for a [{len(z)}, D] "
                f"input; got shape {tuple(k.shape)}"
            )
    else:
        d2 = _sq_dists(z)
        h = (
            _median_heuristic(d2)
            if bandwidth is None
            else torch.tensor(bandwidth, dtype=d2.dtype, device=d2.device)
        )
        k = _KERNELS[kernel](d2, h)
    value, stderr = _mmd_terms(k, m, unbiased)
    p_value = None
    if permutations > 0:
        gen = generator(seed, z.device)
        p_value = _permutation_p_value(k.detach(), m, value.detach(), unbiased, permutations, gen)
    return Estimate(
        value=value,
        stderr=stderr.detach(),
        estimator="u-statistic" if unbiased else "v-statistic",
        unit="",
        num_samples=len(z),
        p_value=p_value,
    )


def _minimise(params: list[Tensor], loss: Callable[[], Tensor], max_iter: int) -> None:
    """Full-batch L-BFGS with a strong-Wolfe line search (deterministic given the start)."""
    opt = torch.optim.LBFGS(params, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(closure)


def _fit(kind: str, z: Tensor, labels: Tensor, gen: torch.Generator | None) -> Predictor:
    """Fits ``"logistic"`` (on standardised features and their squares) or ``"mlp"``.

    The loss is class-balanced cross-entropy plus an L2 penalty on the weights.
    """
    loc, scale = z.mean(0), z.std(0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))

    def features(u: Tensor) -> Tensor:
        s = (u - loc) / scale
        return torch.cat([s, s * s], -1) if kind == "logistic" else s

    f = features(z)
    width = f.shape[1]
    dt, dev = z.dtype, z.device
    if kind == "logistic":
        weights = [torch.zeros(width, 1, dtype=dt, device=dev)]
        biases = [torch.zeros(1, dtype=dt, device=dev)]
    else:
        w1 = torch.randn(width, _HIDDEN, generator=gen, dtype=dt, device=dev) / math.sqrt(width)
        w2 = torch.randn(_HIDDEN, 1, generator=gen, dtype=dt, device=dev) / math.sqrt(_HIDDEN)
        weights = [w1, w2]
        biases = [torch.zeros(_HIDDEN, dtype=dt, device=dev), torch.zeros(1, dtype=dt, device=dev)]
    params = [p.requires_grad_() for p in weights + biases]

    def logits(f: Tensor) -> Tensor:
        if kind == "logistic":
            return (f @ weights[0] + biases[0]).squeeze(-1)
        return (torch.tanh(f @ weights[0] + biases[0]) @ weights[1] + biases[1]).squeeze(-1)

    # Balanced weights: an unequal training split must not just teach the majority label.
    frac = labels.mean()
    balance = torch.where(labels > 0, 0.5 / frac, 0.5 / (1 - frac))

    def loss() -> Tensor:
        ce = torch.nn.functional.binary_cross_entropy_with_logits(logits(f), labels, balance)
        return ce + 0.5 * _L2 * sum((w * w).sum() for w in weights)

    _minimise(params, loss, _LBFGS_ITERS[kind])
    return lambda u: torch.sigmoid(logits(features(u)))


def binomial_upper_tail(k: int, n: int) -> float:
    """``P(S >= k)`` for ``S ~ Binomial(n, 1/2)``: log-sum-exp of exact log-binomial terms."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k, n + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top - n * math.log(2)) * sum(math.exp(v - top) for v in logs))


def classifier_two_sample_test(
    x: SampleLike,
    y: SampleLike,
    *,
    classifier: str | Classifier = "logistic",
    test_fraction: float = 0.5,
    seed: int | None = None,
) -> Estimate:
    """Classifier two-sample test (C2ST): held-out accuracy at telling ``x`` from ``y``.

    ``x`` is labelled 0 and ``y`` 1. A balanced test set takes ``t = floor(test_fraction *
    min(m, n))`` random draws from each sample; the classifier is fitted on the rest (with
    class-balanced weights) and predicts label 1 where ``P(1 | z) > 1/2``. The value is the
    test accuracy ``c / (2t)`` with binomial standard error ``sqrt(acc (1 - acc) / (2t))``.

    Under ``P = Q`` the predictions on the test draws are i.i.d. Bernoulli(pi) independent of
    the labels, so on a balanced test set the number correct is a sum of independent
    Bernoulli(pi) and Bernoulli(1 - pi) counts with mean ``t``, whose upper tail beyond ``t``
    is at most that of Binomial(2t, 1/2) (Hoeffding 1956, "On the distribution of the number
    of successes in independent trials", Thm. 4). The p-value, the exact upper tail
    ``P(Binomial(2t, 1/2) >= c)``, is therefore valid at every level below 1/2 (exact when
    ``pi = 1/2``, conservative otherwise).

    Classifiers: ``"logistic"``, logistic regression on the standardised features and their
    squares (detects mean and scale differences), fitted by L-BFGS with a small L2 penalty;
    ``"mlp"``, one hidden tanh layer of 64 units, also by L-BFGS (detects dependence between
    features too); or a callable ``fit(z_train, labels_train) -> predict_proba`` where
    ``predict_proba(z) -> [len(z)]`` gives ``P(label 1 | z)``.

    Args:
        x: draws ``[m]`` or ``[m, D]`` (or :class:`Samples`).
        y: draws ``[n]`` or ``[n, D]``, same ``D``.
        classifier: ``"logistic"``, ``"mlp"`` or a fit callable.
        test_fraction: share of the smaller sample held out (and as many draws of the other);
            in (0, 1), leaving at least one draw of each sample for training.
        seed: seeds the split and the initialisation; ``None`` uses torch's global generator.

    Returns:
        :class:`Estimate` of the accuracy (unitless, estimator ``"c2st"``), ``num_samples`` the
        test-set size ``2t``, and the Binomial ``p_value``.

    Raises:
        ValueError: bad samples, an unknown classifier, ``test_fraction`` outside (0, 1), an
            empty test or training split, or a predictor returning the wrong shape.

    References:
        Lopez-Paz & Oquab, "Revisiting classifier two-sample tests", ICLR 2017, arXiv:1610.06545.
    """
    xs, ys = sample_pair(x, y)
    if isinstance(classifier, str) and classifier not in _LBFGS_ITERS:
        raise ValueError(
            f"unknown classifier {classifier!r}; allowed: {sorted(_LBFGS_ITERS)} or a callable"
        )
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    m, n = len(xs), len(ys)
    t = int(test_fraction * min(m, n))
    if t < 1 or t >= min(m, n):
        raise ValueError(
            f"test_fraction={test_fraction} with {m} and {n} draws holds out t={t} draws of each "
            "sample; 1 <= t < min(m, n) is needed (more draws or another test_fraction)"
        )
    gen = generator(seed, xs.device)
    px = torch.randperm(m, generator=gen, device=xs.device)
    py = torch.randperm(n, generator=gen, device=xs.device)
    xs, ys = xs.detach()[px], ys.detach()[py]
    z_train = torch.cat([xs[t:], ys[t:]])
    labels_train = torch.cat([xs.new_zeros(m - t), ys.new_ones(n - t)])
    z_test = torch.cat([xs[:t], ys[:t]])
    labels_test = torch.cat([xs.new_zeros(t), ys.new_ones(t)])
    if callable(classifier):
        predict = classifier(z_train, labels_train)
    else:
        predict = _fit(classifier, z_train, labels_train, gen)
    with torch.no_grad():
        prob = predict(z_test)
    if prob.numel() != 2 * t:
        raise ValueError(
            f"the classifier's predictor must return [{2 * t}] probabilities for {2 * t} test "
            f"draws; got shape {tuple(prob.shape)}"
        )
    correct = int(((prob.reshape(-1) > 0.5) == (labels_test > 0)).sum())
    acc = torch.tensor(correct / (2 * t), dtype=xs.dtype, device=xs.device)
    return Estimate(
        value=acc,
        stderr=(acc * (1 - acc) / (2 * t)).sqrt(),
        estimator="c2st",
        unit="",
        num_samples=2 * t,
        p_value=binomial_upper_tail(correct, 2 * t),
    )
