"""Importance sampling of the posterior with a fitted guide as the proposal, Pareto-smoothed.

With draws ``theta_s ~ q(theta)`` of the global latent sites from a fitted guide, the
self-normalised importance-sampling estimate of a posterior expectation is

    E[f(theta) | x] ~= sum_s w_s f(theta_s),   w_s ∝ r_s = p(x, theta_s) / q(theta_s),

where local latents the guide also samples ride along in ``r_s`` (the weights are those of the
joint ``(theta, z)``; their ``theta`` marginal is the posterior of ``theta``), and discrete local
latents are summed out exactly (:func:`probgen.diagnostics.vi.log_importance_weights`).

Raw ratios can have a heavy right tail that makes this estimate very noisy. Pareto-smoothed
importance sampling (PSIS; Vehtari, Simpson, Gelman, Yao & Gabry 2024, "Pareto smoothed
importance sampling", JMLR 25(72), arXiv:1507.02646, sec. 3) fits a generalized Pareto
distribution to the largest ``M = ceil(min(0.2 S, 3 sqrt(S)))`` ratios (above a cutoff
``u``), replaces them by the fitted distribution's expected order statistics
``u + F^{-1}((i - 1/2) / M)``, ``i = 1..M``, and truncates them at the largest raw ratio. The
fitted shape ``k`` is the diagnostic: below ``min(1 - 1/log10 S, 0.7)`` the estimate is
reliable; as a check of a variational fit this is Yao, Vehtari, Simpson & Gelman (2018, "Yes,
but did it work?", arXiv:1802.02538).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from pyro import poutine
from pyro.ops.stats import fit_generalized_pareto
from torch import Tensor

from probgen.diagnostics.vi import khat_from_log_weights, log_importance_weights
from probgen.infer import pointwise, probe
from probgen.validation import check_count

__all__ = ["ImportanceResult", "importance_sample", "pareto_smooth"]


# --------------------------------------------------------------------------- smoothing
def _gpd_quantile(p: Tensor, k: float, sigma: float) -> Tensor:
    """``F^{-1}(p) = sigma ((1 - p)^(-k) - 1) / k`` of the generalized Pareto (``-sigma
    log(1 - p)`` at ``k = 0``)."""
    if abs(k) < torch.finfo(torch.float64).eps:
        return -sigma * torch.log1p(-p)
    return sigma * torch.expm1(-k * torch.log1p(-p)) / k


def pareto_smooth(log_weights: Tensor) -> tuple[Tensor, float]:
    """PSIS: Pareto-smoothed, truncated and normalised log-weights, and the tail's ``k``-hat.

    The tail is the ``M = ceil(min(0.2 S, 3 sqrt(S)))`` largest ratios, fitted by Zhang &
    Stephens' estimator with Vehtari et al.'s weak prior on ``k`` (the fit behind
    :func:`~probgen.diagnostics.vi.khat_from_log_weights`, whose ``k`` is returned); the smoothed
    tail is ``log(u + F^{-1}((i - 1/2) / M))`` in the order of the raw tail, capped at the
    largest raw log-weight; then ``log w -= logsumexp(log w)``. As ArviZ's ``psislw`` with
    ``reff=1``. Weights whose tail cannot be fitted (``k = inf``: fewer than 10 tail draws) are
    only normalised; equal weights (``k = -inf``: an exact proposal) need no smoothing.

    Args:
        log_weights: ``[S]`` log importance ratios on any common scale; ``-inf`` (a draw where
            the target has no density) is allowed.

    Returns:
        ``([S] float64 log-weights with logsumexp 0, k-hat)``.

    Raises:
        ValueError: not one-dimensional, fewer than 2 entries, NaN or ``+inf`` entries, or every
            entry ``-inf``.
    """
    if not isinstance(log_weights, Tensor) or log_weights.dim() != 1 or log_weights.numel() < 2:
        shape = tuple(log_weights.shape) if isinstance(log_weights, Tensor) else log_weights
        raise ValueError(f"log_weights must be a 1-D tensor of >= 2 entries, got {shape!r}")
    lw = log_weights.detach().double()
    if torch.isnan(lw).any() or (lw == math.inf).any():
        bad = int((torch.isnan(lw) | (lw == math.inf)).nonzero()[0])
        raise ValueError(f"log_weights must not contain NaN or +inf; entry {bad} is {lw[bad]}")
    top = lw.max()
    if top == -math.inf:
        raise ValueError(
            "every log-weight is -inf: no proposal draw has positive density under the target"
        )
    lw = lw - top
    khat = khat_from_log_weights(lw)
    if math.isfinite(khat):
        s = lw.numel()
        order = lw.argsort()
        # The tail of khat_from_log_weights (and of ArviZ): above the (M+1)-th largest ratio.
        cutoff_index = order[-math.ceil(min(0.2 * s, 3.0 * math.sqrt(s))) - 1]
        cutoff = max(math.log(1e-15), lw[cutoff_index].item())
        tail = order[lw[order] > cutoff]  # ascending
        k, sigma = fit_generalized_pareto(lw[tail].exp() - math.exp(cutoff))
        m = tail.numel()
        probs = (torch.arange(m, dtype=torch.float64, device=lw.device) + 0.5) / m
        smoothed = torch.log(_gpd_quantile(probs, k, sigma) + math.exp(cutoff))
        if bool(torch.isfinite(smoothed).all()):  # a degenerate fit (sigma <= 0) smooths nothing
            lw = lw.clone()
            lw[tail] = smoothed.clamp(max=0.0)  # truncated at the largest raw ratio
    return lw - lw.logsumexp(0), khat


# --------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class ImportanceResult:
    """Guide draws of the global sites with their Pareto-smoothed importance weights.

    Attributes:
        draws: ``[S, *site_shape]`` guide draws of each global latent site.
        log_weights: ``[S]`` raw ``log p(x, theta_s) - log q(theta_s)`` (joint over the data).
        smoothed_log_weights: ``[S]`` PSIS-smoothed and normalised (``logsumexp == 0``).
        khat: Pareto ``k`` of the ratios' tail (read with
            :func:`~probgen.diagnostics.khat_interpretation`; ``-inf``: equal weights).
        ess: ``1 / sum_s w_s^2`` of the smoothed normalised weights (Kong 1992), ``1..S``.
    """

    draws: dict[str, Tensor]
    log_weights: Tensor
    smoothed_log_weights: Tensor
    khat: float
    ess: float

    @property
    def num_draws(self) -> int:
        """``S``."""
        return int(self.log_weights.shape[0])

    def resample(
        self, num_draws: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``num_draws`` draws resampled by the smoothed weights: systematic resampling.

        One uniform ``U`` gives the points ``(U + i) / n``, ``i = 0..n-1``, and draw ``s`` is
        kept once per point in its cumulative-weight interval, so it appears ``floor(n w_s)``
        or ``ceil(n w_s)`` times: unbiased, with lower variance than multinomial resampling
        (Douc, Cappé & Moulines 2005, arXiv:cs/0507025). The result is randomly permuted, so
        copies of a draw are not adjacent (order-based diagnostics such as autocorrelation
        ESS then see exchangeable draws).

        Args:
            num_draws: ``n >= 1``.
            generator: random source on the weights' device (None: torch's global one).

        Returns:
            ``[n, *site_shape]`` per site.
        """
        n = check_count(num_draws, "num_draws", 1)
        w = self.smoothed_log_weights.exp()
        cdf = w.cumsum(0)
        device = w.device
        u = torch.rand((), generator=generator, dtype=w.dtype, device=device)
        points = (u + torch.arange(n, dtype=w.dtype, device=device)) / n * cdf[-1]
        index = torch.searchsorted(cdf, points).clamp(max=w.numel() - 1)
        index = index[torch.randperm(n, generator=generator, device=device)]
        return {k: v[index.to(v.device)] for k, v in self.draws.items()}

    def mean(self, supports: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        """Weighted posterior means ``sum_s w_s theta_s`` (smoothed weights).

        Args:
            supports: site -> support constraint; given, each mean is taken in the site's
                unconstrained space (``biject_to``) and mapped back, which keeps it in the
                support where the support is not convex (Cholesky factors of correlations);
                None: in the constrained space, the estimate of ``E[theta | x]``.
        """
        w = self.smoothed_log_weights.exp()
        out = {}
        for name, value in self.draws.items():
            if supports is None:
                out[name] = (_per_draw(w, value) * value).sum(0)
            else:
                # The unconstrained value may have fewer dims (a correlation Cholesky factor's
                # is a vector): shape the weights by it, not by the constrained value.
                t = torch.distributions.biject_to(supports[name])
                u = t.inv(value)
                out[name] = t((_per_draw(w, u) * u).sum(0))
        return out


def _per_draw(w: Tensor, like: Tensor) -> Tensor:
    """Weights ``[S]`` shaped ``[S, 1, ...]`` to broadcast over draws ``like`` ``[S, ...]``."""
    return w.to(like).reshape((-1,) + (1,) * (like.dim() - 1))


# --------------------------------------------------------------------------- sampling
class _Recorder:
    """Runs the guide and keeps each run's draws of the global sites (vi's weights discard them).

    ``log_importance_weights`` runs the guide exactly once per draw, so the ``s``-th record
    belongs to the ``s``-th log-weight.
    """

    def __init__(
        self, guide: Callable[..., Any], sites: list[str], context: Mapping[str, Tensor]
    ) -> None:
        self.guide = guide
        self.sites = sites
        self.context = context
        self.records: list[dict[str, Tensor]] = []

    def __call__(self, x: Tensor) -> Any:
        with poutine.trace() as tracer:
            out = self.guide(x, **self.context)
        nodes: dict[str, Any] = tracer.trace.nodes  # Pyro types site values loosely
        missing = [k for k in self.sites if k not in nodes]
        if missing:
            raise ValueError(
                f"the guide does not sample the global latent site(s) {missing}; importance "
                "sampling needs a guide that proposes every global site of the model"
            )
        self.records.append({k: nodes[k]["value"].detach() for k in self.sites})
        return out


class _WithContext:
    """A model whose program gets ``context`` as keyword arguments (vi calls it with ``x``)."""

    def __init__(self, model: Any, context: Mapping[str, Tensor]) -> None:
        self.model = functools.partial(pointwise.program_of(model), **context)
        self.data_plate = getattr(model, "data_plate", "data")


def importance_sample(
    model: Any,
    guide: Any,
    x: Tensor,
    num_draws: int = 1000,
    *,
    context: Mapping[str, Tensor] | None = None,
) -> ImportanceResult:
    """Self-normalised, Pareto-smoothed importance sampling of ``p(theta | x)`` from a guide.

    Draws ``theta_s ~ q``, weighs them by ``log r_s = log p(x, theta_s) - log q(theta_s)``
    (:func:`~probgen.diagnostics.vi.log_importance_weights`) and smooths the weights
    (:func:`pareto_smooth`); see the module docstring. Cost: ``num_draws`` runs of the guide
    and of the model on the whole of ``x``.

    Args:
        model: a :class:`~probgen.GenerativeModel` or a plain Pyro model ``model(x)`` whose
            per-datum sites sit in its data plate.
        guide: the proposal, e.g. ``fit.guide`` of a variational fit; None: the family's own.
        x: the data conditioned on.
        num_draws: ``S >= 2``.
        context: per-datum keyword arguments of model and guide (e.g. a conditional model's
            labels), ``N`` rows each.

    Raises:
        ValueError: the model has no global latent site (every latent is per datum: there is
            no posterior over parameters to sample), the guide misses one of them, or the
            guide is a point mass (every draw equal: ``q`` has no density to weigh by).
    """
    num_draws = check_count(num_draws, "num_draws", 2)
    guide = pointwise.resolve_guide(model, guide)
    ctx = dict(context or {})
    sites = list(pointwise.global_site_shapes(model, *probe.probe(x, ctx)))
    if not sites:
        raise ValueError(
            "importance sampling needs global latent sites (parameters outside the data plate); "
            "every latent site of this model is per datum (e.g. a VAE's codes), so there is no "
            "posterior over parameters to sample. Use probgen.evaluate for per-datum "
            "importance-sampled likelihoods."
        )
    recorder = _Recorder(guide, sites, ctx)
    target = _WithContext(model, ctx) if ctx else model
    log_w, per_datum = log_importance_weights(target, recorder, x, num_draws)
    log_w = log_w.sum(-1) if per_datum else log_w
    draws = {k: torch.stack([r[k] for r in recorder.records]) for k in sites}
    if all(bool((v == v[:1]).all()) for v in draws.values()):
        raise ValueError(
            "the guide is a point mass (all draws equal, e.g. guide='delta' or a MAP fit): "
            "importance sampling needs a proposal with a density; fit a distributional guide "
            "('normal', 'mvn', 'lowrank', 'laplace', 'iaf')"
        )
    smoothed, khat = pareto_smooth(log_w)
    ess = float(1.0 / smoothed.mul(2).exp().sum())
    return ImportanceResult(draws, log_w, smoothed, khat, ess)
