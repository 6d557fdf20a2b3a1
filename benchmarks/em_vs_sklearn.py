"""Time one EM iteration: scikit-learn ``GaussianMixture`` vs ``models.gmm_em``.

Both run ``--iters`` EM iterations (no early stopping) from one shared initialisation on the
same seeded synthetic data, in one process; we report the median over ``--repeats`` timed
runs (after one untimed warm-up) of wall-clock seconds per iteration, and the final mean
log-likelihood per point of both fits.

Timing is end-to-end and deliberately conservative for us: sklearn's ``fit`` time includes
its input validation and final E-step; ours includes ``prepare`` (feature precomputation),
the tensor conversion, and a final E-step.

Usage::

    python benchmarks/em_vs_sklearn.py --n 200000 --d 8 --k 16 --iters 50 --seed 0
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probgen
from models import gmm_em
from models.gmm import GaussianMixture as ProbgenGMM
from probgen.infer.em import ConvergenceWarning as EMConvergenceWarning

REG_COVAR = 1e-6


def make_data(n: int, d: int, k: int, seed: int) -> np.ndarray:
    """Seeded mixture of ``k`` Gaussians with random means, scales and correlations."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 5.0, size=(k, d))
    factors = rng.normal(0.0, 1.0, size=(k, d, d)) / np.sqrt(d)
    labels = rng.choice(k, size=n, p=rng.dirichlet(np.full(k, 5.0)))
    noise = rng.normal(size=(n, d))
    return means[labels] + np.einsum("nd,ned->ne", noise, factors[labels])


def shared_init(x: np.ndarray, k: int, seed: int) -> gmm_em.GMMParams:
    """k-means++ seeds -> hard assignment -> M-step: the start shared by both fits."""
    xt = torch.from_numpy(x)
    prep = gmm_em.prepare(xt, "full")
    gen = torch.Generator().manual_seed(seed)
    seeds = gmm_em.kmeans_plusplus(xt, k, gen)
    return gmm_em.initialize(prep, k, REG_COVAR, gen, means_init=seeds)


def run_sklearn(x: np.ndarray, init: gmm_em.GMMParams, iters: int) -> tuple[float, float]:
    """Return (seconds for ``iters`` iterations incl. fit overhead, final mean log-lik)."""
    gm = GaussianMixture(
        n_components=init.weights.shape[0],
        covariance_type="full",
        tol=0.0,
        max_iter=iters,
        reg_covar=REG_COVAR,
        weights_init=init.weights.numpy(),
        means_init=init.means.numpy(),
        precisions_init=np.linalg.inv(init.covariances.numpy()),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0 never "converges"
        start = time.perf_counter()
        gm.fit(x)
        seconds = time.perf_counter() - start
    return seconds, float(gm.score(x))


def run_probgen(x: np.ndarray, init: gmm_em.GMMParams, iters: int) -> tuple[float, float]:
    """Return (seconds for ``iters`` iterations through ``probgen.fit``, final mean log-lik).

    The whole user-facing call is timed: input checks, ``setup``, ``prepare``, the
    initialisation from ``means_init`` (nearest-mean assignment + one M step, which reproduces
    ``init`` exactly), ``iters`` EM iterations and the final E step.
    """
    gmm = ProbgenGMM(init.means.shape[0], "full", reg_covar=REG_COVAR, means_init=init.means)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EMConvergenceWarning)  # tol=0: all iterations run
        fit = probgen.fit(
            gmm, torch.from_numpy(x), method="em", max_iter=iters, tol=0.0, progress=False
        )
    seconds = time.perf_counter() - start
    assert fit.n_iter == iters
    return seconds, -fit.final_objective


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    x = make_data(args.n, args.d, args.k, args.seed)
    init = shared_init(x, args.k, args.seed)
    print(
        f"N={args.n} D={args.d} K={args.k} iters={args.iters} repeats={args.repeats} | "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"scikit-learn {sklearn.__version__}"
    )
    fits = {"sklearn": run_sklearn, "ours": run_probgen}
    for fn in fits.values():
        fn(x, init, 2)  # warm-up: BLAS/thread-pool start-up, allocator, lazy imports
    # Interleave the repeats so that any background load hits both contenders alike.
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in fits}
    for _ in range(args.repeats):
        for name, fn in fits.items():
            runs[name].append(fn(x, init, args.iters))
    results = {}
    for name, rs in runs.items():
        per_iter = statistics.median(s for s, _ in rs) / args.iters
        results[name] = (per_iter, rs[-1][1])
        print(
            f"{name:8s} {per_iter:.4f} s/iter (runs: {', '.join(f'{s:.2f}' for s, _ in rs)} s)"
            f"   final mean loglik {rs[-1][1]:.10f}"
        )
    (sk_t, sk_ll), (our_t, our_ll) = results["sklearn"], results["ours"]
    # Other processes on the same cores distort both timings: report the load we ran under.
    print("load average (1, 5, 15 min) at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(
        f"speed-up sklearn/ours: {sk_t / our_t:.2f}x   loglik difference (ours - sklearn): "
        f"{our_ll - sk_ll:.3e}"
    )


if __name__ == "__main__":
    main()
