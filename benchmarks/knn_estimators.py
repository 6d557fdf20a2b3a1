"""Time the kNN estimators (entropy, KL divergence, KSG mutual information) against KD-trees.

Ours (``probgen.diagnostics.knn``: exact brute-force search in blocks, torch) against the same
formulas written on two anchors run in the same process on the same data:

* ``scipy.spatial.cKDTree`` (``query`` for the k-th neighbour; ``query_ball_point`` with
  ``p=inf`` and ``return_length=True`` to count the KSG marginal neighbours), ``workers=-1``;
* ``sklearn.neighbors`` (``NearestNeighbors.kneighbors``; for KSG the ``KDTree.query_radius``
  counting of ``mutual_info_regression``), ``n_jobs=-1``.

Every search is exact, so the values must agree to rounding (~1e-12). Each row reports the
median wall time of ``--repeats`` interleaved runs after one untimed warm-up of each side.

Usage (from the repository root)::

    python benchmarks/knn_estimators.py --n 10000 --d 10 --seed 0 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
import sklearn
import torch
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln
from sklearn.neighbors import KDTree, NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probgen.diagnostics.knn import knn_entropy, knn_kl_divergence, ksg_mutual_information

K_ENTROPY = 3  # the defaults of the estimators
K_KL = 1
K_KSG = 3
RHO = 0.6  # per-coordinate correlation of the KSG pair: I = -(d // 2) / 2 log(1 - rho^2)


def make_data(n: int, d: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) / math.sqrt(d)
    x = rng.normal(size=(n, d)) @ (a + np.eye(d)).T
    y = 1.3 * rng.normal(size=(n, d)) @ (a + np.eye(d)).T + 0.2
    half = d // 2
    u = rng.normal(size=(n, half))
    v = RHO * u + math.sqrt(1 - RHO**2) * rng.normal(size=(n, half))
    return {"x": x, "y": y, "u": u, "v": v}


def _log_ball(d: int) -> float:
    return d / 2 * math.log(math.pi) - gammaln(d / 2 + 1)


# --- scipy cKDTree anchor -------------------------------------------------------------------


def scipy_entropy(x: np.ndarray, k: int) -> float:
    n, d = x.shape
    eps = cKDTree(x).query(x, k=k + 1, workers=-1)[0][:, -1]
    return float(digamma(n) - digamma(k) + _log_ball(d) + d * np.mean(np.log(eps)))


def scipy_kl(x: np.ndarray, y: np.ndarray, k: int) -> float:
    (n, d), m = x.shape, len(y)
    rho = cKDTree(x).query(x, k=k + 1, workers=-1)[0][:, -1]
    nu = cKDTree(y).query(x, k=[k], workers=-1)[0][:, -1]
    return float(d * np.mean(np.log(nu / rho)) + math.log(m / (n - 1)))


def scipy_ksg(x: np.ndarray, y: np.ndarray, k: int) -> float:
    n = len(x)
    joint = np.hstack([x, y])
    eps = cKDTree(joint).query(joint, k=k + 1, p=np.inf, workers=-1)[0][:, -1]
    r = np.nextafter(eps, 0)  # strictly inside eps, as KSG counts
    nx = cKDTree(x).query_ball_point(x, r, p=np.inf, return_length=True, workers=-1) - 1
    ny = cKDTree(y).query_ball_point(y, r, p=np.inf, return_length=True, workers=-1) - 1
    return float(digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1)))


# --- scikit-learn anchor --------------------------------------------------------------------


def sklearn_entropy(x: np.ndarray, k: int) -> float:
    n, d = x.shape
    eps = NearestNeighbors(n_neighbors=k, n_jobs=-1).fit(x).kneighbors()[0][:, -1]
    return float(digamma(n) - digamma(k) + _log_ball(d) + d * np.mean(np.log(eps)))


def sklearn_kl(x: np.ndarray, y: np.ndarray, k: int) -> float:
    (n, d), m = x.shape, len(y)
    rho = NearestNeighbors(n_neighbors=k, n_jobs=-1).fit(x).kneighbors()[0][:, -1]
    nu = NearestNeighbors(n_neighbors=k, n_jobs=-1).fit(y).kneighbors(x)[0][:, -1]
    return float(d * np.mean(np.log(nu / rho)) + math.log(m / (n - 1)))


def sklearn_ksg(x: np.ndarray, y: np.ndarray, k: int) -> float:
    n = len(x)
    joint = np.hstack([x, y])
    nn = NearestNeighbors(n_neighbors=k, metric="chebyshev", n_jobs=-1).fit(joint)
    r = np.nextafter(nn.kneighbors()[0][:, -1], 0)
    nx = KDTree(x, metric="chebyshev").query_radius(x, r, count_only=True) - 1
    ny = KDTree(y, metric="chebyshev").query_radius(y, r, count_only=True) - 1
    return float(digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1)))


def timed(fn: Callable[[], float]) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = make_data(args.n, args.d, args.seed)
    t = {name: torch.from_numpy(a) for name, a in data.items()}
    x, y, u, v = data["x"], data["y"], data["u"], data["v"]
    cases: dict[str, dict[str, Callable[[], float]]] = {
        f"knn_entropy (k={K_ENTROPY})": {
            "probgen": lambda: float(knn_entropy(t["x"], K_ENTROPY)),
            "cKDTree": lambda: scipy_entropy(x, K_ENTROPY),
            "sklearn": lambda: sklearn_entropy(x, K_ENTROPY),
        },
        f"knn_kl_divergence (k={K_KL})": {
            "probgen": lambda: float(knn_kl_divergence(t["x"], t["y"], K_KL)),
            "cKDTree": lambda: scipy_kl(x, y, K_KL),
            "sklearn": lambda: sklearn_kl(x, y, K_KL),
        },
        f"ksg_mutual_information (k={K_KSG})": {
            "probgen": lambda: float(ksg_mutual_information(t["u"], t["v"], K_KSG)),
            "cKDTree": lambda: scipy_ksg(u, v, K_KSG),
            "sklearn": lambda: sklearn_ksg(u, v, K_KSG),
        },
    }
    print(
        f"N={args.n}, D={args.d} (KSG: {u.shape[1]}-D x and {v.shape[1]}-D y, rho={RHO}), "
        f"seed={args.seed}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"scipy {scipy.__version__}, scikit-learn {sklearn.__version__}, numpy "
        f"{np.__version__}, Python {platform.python_version()}; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    rows = []
    for name, sides in cases.items():
        for fn in sides.values():
            fn()  # warm-up
        times: dict[str, list[float]] = {side: [] for side in sides}
        values: dict[str, float] = {}
        for _ in range(args.repeats):
            for side, fn in sides.items():
                seconds, values[side] = timed(fn)
                times[side].append(seconds)
        med = {side: statistics.median(ts) for side, ts in times.items()}
        diff = max(abs(values["probgen"] - values[s]) for s in ("cKDTree", "sklearn"))
        rows.append((name, med, values["probgen"], diff))
    print()
    print(
        "| estimator | probgen (s) | cKDTree (s) | sklearn (s) | speed-up vs cKDTree | "
        "speed-up vs sklearn | value (nats) | max abs difference |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, med, value, diff in rows:
        print(
            f"| `{name}` | {med['probgen']:.3f} | {med['cKDTree']:.3f} | {med['sklearn']:.3f} | "
            f"{med['cKDTree'] / med['probgen']:.1f}x | {med['sklearn'] / med['probgen']:.1f}x | "
            f"{value:.10f} | {diff:.1e} |"
        )
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
