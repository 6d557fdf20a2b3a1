"""NUTS through Pyro's ``MCMC``, chains run one after another, discrete sites enumerated.

The No-U-Turn sampler (Hoffman & Gelman 2014, arXiv:1111.4246) draws from
``p(theta | x) ∝ p(theta) prod_n sum_z p(x_n, z | theta)``: discrete local sites marked or
detected as enumerable are summed out exactly inside the potential (Pyro's enumeration), so the
sampler only sees continuous parameters. Chains run sequentially in this process, each with its
own seed and initialisation: that is deterministic, works on CUDA, and avoids the multiprocessing
start-up that dominates small problems.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro.infer import MCMC, NUTS, config_enumerate
from pyro.infer.autoguide.initialization import init_to_median, init_to_value
from pyro.ops.stats import effective_sample_size, split_gelman_rubin
from torch import Tensor

from probgen.infer.result import stack_chains

__all__ = ["MCMCRun", "convergence_diagnostics", "run_nuts"]

#: Split R-hat below which a chain set counts as converged (Vehtari et al. 2021, arXiv:1903.08008).
RHAT_CONVERGED = 1.01


@dataclass(frozen=True)
class MCMCRun:
    """Draws ``[chain, draw, ...]``, the number of divergent transitions, and the mean
    acceptance probability of the post-warm-up trees, averaged over chains."""

    draws: dict[str, Tensor]
    divergences: int
    accept_prob: float


def convergence_diagnostics(draws: dict[str, Tensor]) -> dict[str, float]:
    """Worst split R-hat and smallest ESS over every scalar of every site.

    These are Pyro's estimators (split R-hat of Gelman et al. 2013; ESS from the autocorrelation
    with Geyer's initial monotone sequence), not the rank-normalised bulk/tail versions of
    Vehtari et al. 2021 that ``az.summary`` reports; the numbers differ slightly.

    Scalars that never vary (e.g. the fixed entries of a Cholesky factor) have undefined R-hat and
    ESS and are left out.
    """
    rhat, ess = [], []
    for value in draws.values():
        if value.shape[1] > 3:
            r = split_gelman_rubin(value)
            rhat.extend(r[torch.isfinite(r)].tolist())
        e = effective_sample_size(value)
        ess.extend(e[torch.isfinite(e)].tolist())
    return {
        "r_hat": max(rhat) if rhat else float("nan"),
        "ess": min(ess) if ess else float("nan"),
    }


def run_nuts(
    program: Callable[..., Any],
    x: Tensor,
    *,
    num_samples: int,
    warmup_steps: int,
    num_chains: int,
    target_accept_prob: float,
    max_tree_depth: int,
    max_plate_nesting: int,
    init: Callable[[int], dict[str, Tensor] | None],
    seed: int,
    progress: bool,
    jit_compile: bool = True,
) -> MCMCRun:
    """Samples ``num_chains`` NUTS chains of ``program(x)``.

    Args:
        program: the Pyro model.
        x: data.
        num_samples, warmup_steps: kept draws and adaptation steps per chain.
        num_chains: independent chains, run sequentially.
        target_accept_prob, max_tree_depth: NUTS settings (Stan's defaults are 0.8 and 10).
        max_plate_nesting: plates to keep enumeration dimensions left of.
        init: chain index -> initial values of the global sites (None: the prior median).
        seed: chain ``c`` uses seed ``seed + c``.
        progress: show Pyro's progress bar.
        jit_compile: trace the potential with the PyTorch JIT (about 2x faster on small
            models); programs the JIT cannot trace are sampled eagerly instead.
    """
    chains = []
    divergences = 0
    accept: list[float] = []
    enumerated = config_enumerate(program, default="parallel")
    for chain in range(num_chains):
        pyro.set_rng_seed(seed + chain)
        values = init(chain)
        kernel = NUTS(
            enumerated,
            target_accept_prob=target_accept_prob,
            max_tree_depth=max_tree_depth,
            max_plate_nesting=max_plate_nesting,
            jit_compile=jit_compile,
            ignore_jit_warnings=True,
            init_strategy=init_to_value(values=values) if values else init_to_median,
        )
        # The mean Metropolis acceptance probability of the post-warm-up trees (what the step-size
        # adaptation targets, cf. target_accept_prob). Pyro reports it only through the kernel's
        # running log, reset when the chain ends, so it is read after every draw; its public
        # "acceptance rate" counts trees that moved, which is near 1 for NUTS.
        accept_log: list[float] = []

        def record(kernel: Any, params: Any, stage: str, i: int, log: list = accept_log) -> None:
            if stage == "Sample":
                log.append(float(kernel.logging()["acc. prob"]))

        mcmc = MCMC(
            kernel,
            num_samples=num_samples,
            warmup_steps=warmup_steps,
            num_chains=1,
            disable_progbar=not progress,
            hook_fn=record,
        )
        try:
            with warnings.catch_warnings():
                # torch 2.9+ deprecates torch.jit.trace, which Pyro's jit_compile uses; it works.
                warnings.filterwarnings(
                    "ignore", message=".*torch.jit.trace.*", category=DeprecationWarning
                )
                mcmc.run(x)
        except RuntimeError:
            if not jit_compile:
                raise
            # Some programs (data-dependent control flow) cannot be traced; sample them eagerly.
            return run_nuts(
                program,
                x,
                num_samples=num_samples,
                warmup_steps=warmup_steps,
                num_chains=num_chains,
                target_accept_prob=target_accept_prob,
                max_tree_depth=max_tree_depth,
                max_plate_nesting=max_plate_nesting,
                init=init,
                seed=seed,
                progress=progress,
                jit_compile=False,
            )
        chains.append({k: v.detach() for k, v in mcmc.get_samples().items()})
        stats = mcmc.diagnostics()
        divergences += sum(len(v) for v in stats.get("divergences", {}).values())
        accept.append(accept_log[-1] if accept_log else math.nan)
    draws = stack_chains(chains)
    return MCMCRun(draws, divergences, sum(accept) / max(len(accept), 1))


def unconstrained_mean(draws: dict[str, Tensor], supports: dict[str, Any]) -> dict[str, Tensor]:
    """Posterior mean taken in each site's unconstrained space, mapped back.

    Averaging Cholesky factors or simplexes directly can leave the support; averaging in the
    unconstrained space (``biject_to(support)``) always gives a valid point.
    """
    out = {}
    for name, value in draws.items():
        t = torch.distributions.biject_to(supports[name])
        flat = value.reshape((-1, *value.shape[2:]))
        out[name] = t(t.inv(flat).mean(0))
    return out
