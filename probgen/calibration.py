"""Simulation-based calibration (SBC) of any inference method on any generative Pyro program.

SBC (Talts et al. 2018, arXiv:1804.06788) checks an inference method on a model by simulation:
for ``s = 1..S`` draw ``theta_s ~ p(theta)`` and ``x_s ~ p(x | theta_s)``, fit the model to
``x_s``, take ``L`` posterior draws ``theta_s^(1..L)``, and record for every scalar parameter the
rank ``r_s = #{l : theta_s^(l) < theta_s}`` in ``{0..L}``. If the method returns the exact
posterior, ``theta_s`` and its draws are exchangeable and ``r_s`` is uniform on ``{0..L}``;
an under-dispersed approximation piles ranks at both ends, a biased one at one end.

Uniformity is judged by the ECDF of the ranks with the simultaneous confidence band of
Säilynoja, Bürkner & Vehtari (2022, Statistics and Computing 32:32, arXiv:2103.10522): at the
evaluation points ``z_i`` the scaled ECDF ``S F(z_i)`` is ``Binomial(S, z_i)`` under uniformity;
the per-point two-sided level ``gamma`` is adjusted so that the whole ECDF stays inside the
pointwise ``gamma`` intervals with probability ``conf_level``. The probability is computed
exactly by their recursion (the count process of the ECDF is Markov:
``S F(z_i) - S F(z_{i-1}) | S F(z_{i-1}) = c ~ Binomial(S - c, (z_i - z_{i-1}) / (1 - z_{i-1}))``)
rather than estimated by simulation.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.ops.stats import effective_sample_size
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from probgen.core import GenerativeModel
from probgen.infer.fit import METHODS, fit
from probgen.program import PyroProgram
from probgen.validation import check_count

__all__ = ["ECDFBand", "SBCResult", "ecdf_band", "sbc"]

#: Methods that return a point estimate, whose single "draw" cannot be ranked.
POINT_METHODS = ("map", "em")

PosteriorFn = Callable[[Tensor, int, torch.Generator], Mapping[str, Tensor]]


# ----------------------------------------------------------------------- the band


@dataclass(frozen=True)
class ECDFBand:
    """Simultaneous band for the ECDF of ``num_samples`` ranks that are uniform on ``{0..L}``.

    Attributes:
        num_samples: ``S``, the number of ranks (simulations).
        num_draws: ``L``, draws each rank was taken among.
        grid: the evaluation points as rank thresholds ``g_i``: ``F(z_i) = #{r < g_i} / S``
            with ``z_i = g_i / (L + 1)``.
        points: ``z_i``.
        lower, upper: the band in counts: ``lower_i <= S F(z_i) <= upper_i``.
        gamma: the adjusted per-point level; a count is inside iff its two-sided binomial tail
            probability ``2 min(P(X <= c), P(X >= c))``, ``X ~ Binomial(S, z_i)``, is ``>= gamma``.
        coverage: the exact probability that a uniform ECDF stays inside (``>= conf_level``;
            above it by the discreteness of the counts).
        conf_level: the requested simultaneous level.
    """

    num_samples: int
    num_draws: int
    grid: np.ndarray
    points: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    gamma: float
    coverage: float
    conf_level: float
    tails: np.ndarray = dataclasses.field(repr=False, compare=False)

    def counts(self, ranks: np.ndarray) -> np.ndarray:
        """``S F(z_i)`` of ``ranks`` (``[..., S]``): ``[..., K]`` counts ``#{r < g_i}``."""
        r = np.asarray(ranks)
        flat = r.reshape(-1, r.shape[-1])
        # One histogram per row via offset bincount, then #{r < g} = cumulative count at g - 1.
        bins = self.num_draws + 1
        offset = flat + bins * np.arange(len(flat))[:, None]
        hist = np.bincount(offset.ravel(), minlength=bins * len(flat)).reshape(len(flat), bins)
        return hist.cumsum(1)[:, self.grid - 1].reshape((*r.shape[:-1], len(self.grid)))

    def contains(self, counts: np.ndarray) -> np.ndarray:
        """Whether each ECDF (``[..., K]`` counts) stays inside the band at every point."""
        return np.asarray(((counts >= self.lower) & (counts <= self.upper)).all(-1))

    def p_value(self, counts: np.ndarray) -> float:
        """``P(min_i p_i <= observed min_i p_i)`` under uniformity, exact.

        ``p_i`` is the two-sided binomial tail probability of the count at ``z_i``; the band is
        ``{min_i p_i >= gamma}``, so the ECDF leaves it only when this p-value is at most
        ``1 - coverage <= 1 - conf_level``.
        """
        if not len(self.points):
            return 1.0
        c = np.asarray(counts)[:, None]
        observed = float(np.take_along_axis(self.tails, c, 1).min())
        lower, upper = _bounds(self.tails, observed, strict=True)
        # 1 - P(inside): absolute accuracy ~1e-15, so tiny p-values are floored at 0.
        return max(0.0, 1.0 - _inside_probability(self.num_samples, self.points, lower, upper))


def _tails(n: int, points: np.ndarray) -> np.ndarray:
    """``[K, n + 1]``: two-sided binomial tail probability of every count at every point."""
    from scipy.stats import binom

    c = np.arange(n + 1)
    p = points[:, None]
    return np.minimum(2 * np.minimum(binom.cdf(c, n, p), binom.sf(c - 1, n, p)), 1.0)


def _bounds(tails: np.ndarray, level: float, strict: bool = False) -> tuple[np.ndarray, ...]:
    # The tail probability is unimodal in the count (min of a rising CDF and a falling SF), so
    # the counts at or above a level form an interval.
    inside = tails > level if strict else tails >= level
    lower = inside.argmax(1)
    upper = tails.shape[1] - 1 - inside[:, ::-1].argmax(1)
    empty = ~inside.any(1)
    return np.where(empty, 1, lower), np.where(empty, 0, upper)


def _inside_probability(n: int, points: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """``P(lower_i <= S F(z_i) <= upper_i for all i)`` for ``n`` uniform draws, by the
    Markov recursion behind the optimisation method of Säilynoja et al. (2022)."""
    from scipy.special import gammaln

    log_fact = gammaln(np.arange(n + 1) + 1.0)  # log k!
    prob = np.ones(1)
    prev, z_prev = np.zeros(1, dtype=np.int64), 0.0
    for z, lo, hi in zip(points, lower, upper, strict=True):
        if lo > hi:
            return 0.0
        here = np.arange(lo, hi + 1)
        # Binomial(n - c, q) pmf of the step k = here - c from each count c in prev.
        left, k = n - prev[:, None], here[None, :] - prev[:, None]
        q = (z - z_prev) / (1 - z_prev)
        ok = (k >= 0) & (k <= left)
        k = np.where(ok, k, 0)
        log_pmf = log_fact[left] - log_fact[k] - log_fact[left - k]
        log_pmf += k * math.log(q) + (left - k) * math.log1p(-q)
        prob, prev, z_prev = prob @ np.where(ok, np.exp(log_pmf), 0.0), here, z
    return float(prob.sum())


@functools.lru_cache(maxsize=64)
def ecdf_band(num_samples: int, num_draws: int, conf_level: float = 0.95) -> ECDFBand:
    """The simultaneous ``conf_level`` band for the ECDF of ``num_samples`` SBC ranks among
    ``num_draws`` draws (Säilynoja, Bürkner & Vehtari 2022: their optimisation method, with
    the optimiser replaced by an exact search over the attainable levels).

    The ranks take ``L + 1`` values; the ECDF is evaluated at ``K - 1`` thresholds
    ``g_i = round(i (L + 1) / K)``, ``K = min(S, L + 1)`` (bayesplot's default number of
    evaluation points). ``gamma`` is the largest attainable per-point level whose band has
    exact simultaneous coverage ``>= conf_level``, found by bisection (coverage falls as
    ``gamma`` grows).

    Raises:
        ValueError: a count below 1, or ``conf_level`` outside (0, 1).
    """
    n = check_count(num_samples, "num_samples")
    draws = check_count(num_draws, "num_draws")
    if not 0 < conf_level < 1:
        raise ValueError(f"conf_level must lie in (0, 1); got {conf_level!r}")
    k = min(n, draws + 1)
    grid = np.unique(np.round(np.arange(1, k) * (draws + 1) / k).astype(np.int64))
    points = grid / (draws + 1)
    tails = _tails(n, points)
    # Attainable levels, ascending; the band at the smallest holds every count (coverage 1),
    # and only crossing an attainable level changes the band.
    levels = np.unique(tails)
    # Invariant: levels[lo] keeps the coverage, levels[hi + 1] does not. Bonferroni starts lo:
    # P(p_i < v) <= v for a two-sided binomial p-value, so coverage(alpha / K) >= 1 - alpha.
    bonferroni = (1 - conf_level) / max(len(points), 1)
    lo, hi = max(int(np.searchsorted(levels, bonferroni, side="right")) - 1, 0), len(levels) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _inside_probability(n, points, *_bounds(tails, levels[mid])) >= conf_level:
            lo = mid
        else:
            hi = mid - 1
    gamma = float(levels[lo]) if len(levels) else 0.0
    lower, upper = _bounds(tails, gamma)
    coverage = _inside_probability(n, points, lower, upper)
    for a in (grid, points, lower, upper, tails):
        a.setflags(write=False)  # cached and shared
    return ECDFBand(n, draws, grid, points, lower, upper, gamma, coverage, conf_level, tails)


# ----------------------------------------------------------------------- the result


@dataclass(frozen=True)
class SBCResult:
    """Ranks of the true parameters among posterior draws, and their uniformity test.

    Attributes:
        parameters: scalar parameter names, ``"site"`` or ``"site[i,j]"``.
        ranks: ``[S, P]`` integers in ``0..num_draws``.
        num_draws: ``L``.
        method: the inference method (its name, or ``"custom"`` for a posterior function).
        band: the simultaneous ECDF band (:func:`ecdf_band`).
        p_values: per parameter, the exact p-value of the band test (:meth:`ECDFBand.p_value`).
        fails: per parameter, whether its ECDF leaves the band.
        min_ess: per simulation, the smallest effective sample size over the scalar
            parameters of the sampler's draws (NUTS; NaN for other methods).
        wall_time: seconds.
    """

    parameters: tuple[str, ...]
    ranks: np.ndarray
    num_draws: int
    method: str
    band: ECDFBand
    p_values: Mapping[str, float]
    fails: Mapping[str, bool]
    min_ess: np.ndarray
    wall_time: float = 0.0

    @classmethod
    def from_ranks(
        cls,
        ranks: Any,
        num_draws: int,
        parameters: Sequence[str] | None = None,
        conf_level: float = 0.95,
        **fields: Any,
    ) -> SBCResult:
        """Tests ranks (``[S]`` or ``[S, P]`` integers in ``0..num_draws``) for uniformity."""
        r = np.asarray(ranks)
        r = r[:, None] if r.ndim == 1 else r
        if r.ndim != 2 or not np.issubdtype(r.dtype, np.integer):
            raise ValueError(f"ranks must be [S] or [S, P] integers; got {r.dtype} {r.shape}")
        if r.size and (r.min() < 0 or r.max() > num_draws):
            raise ValueError(f"ranks must lie in 0..num_draws={num_draws}")
        names = tuple(parameters) if parameters is not None else tuple(map(str, range(r.shape[1])))
        if len(names) != r.shape[1]:
            raise ValueError(f"{len(names)} parameter names for {r.shape[1]} columns of ranks")
        band = ecdf_band(r.shape[0], num_draws, conf_level)
        counts = band.counts(r.T)
        fails = dict(zip(names, map(bool, ~band.contains(counts)), strict=True))
        p_values = {name: band.p_value(c) for name, c in zip(names, counts, strict=True)}
        fields.setdefault("method", "ranks")
        fields.setdefault("min_ess", np.full(r.shape[0], np.nan))
        return cls(names, r, num_draws, band=band, p_values=p_values, fails=fails, **fields)

    def __post_init__(self) -> None:
        for name in ("p_values", "fails"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def passed(self) -> bool:
        """No parameter's ECDF leaves its band (each band is a ``conf_level`` test on its own:
        with ``P`` parameters, a Bonferroni reading compares the p-values to ``alpha / P``)."""
        return not any(self.fails.values())

    def summary(self) -> str:
        """A table: parameter, p-value, whether its ECDF leaves the band."""
        width = max(9, *(len(p) for p in self.parameters))
        lines = [f"SBC of {self.method}: {len(self.ranks)} simulations, {self.num_draws} draws"]
        lines.append(f"{'parameter':<{width}}  p-value  band")
        for p in self.parameters:
            lines.append(
                f"{p:<{width}}  {self.p_values[p]:7.4f}  {'FAIL' if self.fails[p] else 'ok'}"
            )
        return "\n".join(lines)

    def plot(self) -> Any:
        """ECDF minus uniform CDF of each parameter's normalised ranks with the band, one panel
        per parameter (a ``matplotlib.figure.Figure``; no pyplot state is touched)."""
        from matplotlib.figure import Figure

        n, band = len(self.ranks), self.band
        cols = min(len(self.parameters), 4)
        rows = math.ceil(len(self.parameters) / cols)
        fig = Figure(figsize=(3.2 * cols, 2.6 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        z = np.concatenate([[0.0], band.points, [1.0]])
        lo = np.concatenate([[0.0], band.lower / n - band.points, [0.0]])
        hi = np.concatenate([[0.0], band.upper / n - band.points, [0.0]])
        for ax, name, counts in zip(axes, self.parameters, band.counts(self.ranks.T), strict=False):
            diff = np.concatenate([[0.0], counts / n - band.points, [0.0]])
            ax.fill_between(z, lo, hi, step="post", color="0.85", lw=0)
            ax.step(z, diff, where="post", color="C3" if self.fails[name] else "C0", lw=1.2)
            ax.axhline(0.0, color="0.4", lw=0.6)
            ax.set_title(f"{name}  (p = {self.p_values[name]:.3f})", fontsize=9)
            ax.set_xlabel("normalised rank")
            ax.set_ylabel("ECDF difference")
        for ax in axes[len(self.parameters) :]:
            ax.set_visible(False)
        return fig


# ----------------------------------------------------------------------- the simulations


class _SampleProperPrior(Messenger):
    """Samples every latent site itself, so that a prior that cannot be sampled is named."""

    def _pyro_sample(self, msg: Any) -> None:
        if msg["is_observed"] or msg["value"] is not None:
            return
        try:
            msg["value"] = msg["fn"](*msg["args"], **msg["kwargs"])
        except NotImplementedError as err:
            raise ValueError(
                f"site {msg['name']!r} has a prior ({type(msg['fn']).__name__}) that cannot be "
                f"sampled ({err}); SBC draws parameters from the prior, so every latent site "
                "needs a proper prior with a sampler"
            ) from err


def _generator_model(model: Any) -> GenerativeModel:
    if isinstance(model, GenerativeModel):
        gm = model
    elif callable(model):
        if "n" not in inspect.signature(model).parameters:
            raise ValueError(
                f"model {getattr(model, '__name__', model)!r} cannot generate data: SBC simulates "
                "data sets, so the model needs a keyword argument n (model(None, n=10))"
            )
        gm = PyroProgram(model)
    else:
        raise TypeError(f"model must be a GenerativeModel or a Pyro model function; got {model!r}")
    if not gm.can_generate:
        raise ValueError(f"{type(gm).__name__} cannot generate data (can_generate is False)")
    return gm


def _prior_predictive(gm: GenerativeModel, n: int) -> tuple[dict[str, Tensor], Tensor]:
    """One draw ``theta ~ p(theta)``, ``x ~ p(x | theta)``: the global sites and ``x``."""
    with torch.no_grad(), _SampleProperPrior():
        trace = poutine.trace(gm.model).get_trace(None, n=n)
    truth = {}
    nodes: dict[str, Any] = trace.nodes  # type: ignore[assignment]
    for name, site in nodes.items():
        if site["type"] == "param":
            raise ValueError(
                f"site {name!r} is a pyro.param, a quantity without a prior; SBC needs every "
                "unknown of the model drawn from a proper prior (make it a pyro.sample site)"
            )
        latent = site["type"] == "sample" and not site["is_observed"]
        if not latent or site_is_subsample(site) or name == gm.obs_site:
            continue
        if any(f.name == gm.data_plate for f in site["cond_indep_stack"]):
            continue  # local latents are part of the simulated data-generating process
        if not torch.isfinite(site["value"]).all():
            raise ValueError(f"site {name!r} drew a non-finite value: its prior is not proper")
        truth[name] = site["value"].detach()
    if not truth:
        raise ValueError("the model has no global latent site (outside the data plate) to check")
    if gm.obs_site not in trace.nodes:
        raise ValueError(f"the model generated no observed site {gm.obs_site!r}")
    x = nodes[gm.obs_site]["value"].detach()
    if x.shape[0] != n:
        raise ValueError(f"model(None, n={n}) generated {x.shape[0]} rows, not {n}")
    return truth, x


def _names(truth: Mapping[str, Tensor]) -> list[str]:
    """``"site"`` for a scalar site, ``"site[i,j]"`` for each element of the others."""
    return [
        f"{site}[{','.join(map(str, i))}]" if v.dim() else site
        for site, v in truth.items()
        for i in np.ndindex(*v.shape)
    ]


def _draws(
    gm: GenerativeModel,
    x: Tensor,
    method: str | PosteriorFn,
    sites: Sequence[str],
    num_draws: int,
    seed: int,
    options: Mapping[str, Any],
) -> tuple[dict[str, Tensor], float]:
    """``[1, L, *shape]`` posterior draws of each global site, and NUTS's smallest ESS.

    ``L`` evenly spaced draws of the ``T`` kept ones are taken: their spacing ``T / L`` is at
    least the integrated autocorrelation time ``T / ESS`` when ``ESS >= L``, which makes MCMC
    draws near-independent (the thinning Talts et al. 2018 ask for); guide draws are iid.
    """
    if callable(method):
        gen = torch.Generator(device=x.device).manual_seed(seed)
        given = method(x, num_draws, gen)
        for site in sites:
            if site not in given or given[site].shape[0] != num_draws:
                raise ValueError(f"method must return {num_draws} draws of site {site!r}")
        return gm.canonicalize({s: given[s].unsqueeze(0) for s in sites}), math.nan
    cls = METHODS[method][0]
    extra: dict[str, Any] = {"num_draws": num_draws} if "num_draws" in _fields(cls) else {}
    opts = {"progress": False, **options, **extra}
    result = fit(copy.deepcopy(gm), x, method=method, seed=seed, **opts)
    if result.draws is None:
        raise ValueError(f"method {method!r} returned no posterior draws to rank")
    draws = {s: result.draws[s] for s in sites}
    ess = math.nan
    if method == "nuts":
        values = torch.cat([effective_sample_size(v.double()).reshape(-1) for v in draws.values()])
        values = values[torch.isfinite(values)]  # constant scalars have no ESS
        ess = float(values.min()) if len(values) else math.nan
    flat = {s: v.reshape((-1, *v.shape[2:])) for s, v in draws.items()}
    total = next(iter(flat.values())).shape[0]
    if total < num_draws:
        raise ValueError(f"method {method!r} kept {total} draws, fewer than num_draws={num_draws}")
    index = torch.from_numpy(np.linspace(0, total - 1, num_draws).round().astype(np.int64))
    return {s: v[index.to(v.device)].unsqueeze(0) for s, v in flat.items()}, ess


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _ranks(truth: Tensor, draws: Tensor, gen: torch.Generator) -> Tensor:
    """``#{draws < truth}`` plus a uniform share of ties (discrete or point-mass scalars)."""
    below = (draws < truth).sum(0)
    ties = (draws == truth).sum(0)
    return below + (torch.rand(ties.shape, generator=gen, dtype=torch.float64) * (ties + 1)).long()


def _check_method(method: Any, num_draws: int, options: Mapping[str, Any]) -> str:
    if "context" in options:  # simulated data sets come without conditioning inputs
        raise ValueError("fit option 'context' is not supported by sbc")
    if callable(method):
        if options:
            raise ValueError(f"fit options {sorted(options)} need a method name, not a function")
        return "custom"
    if method in POINT_METHODS:
        raise ValueError(
            f"method {method!r} gives a point estimate; SBC ranks the truth among posterior "
            "draws: use 'nuts' or 'svi' (or another method that returns draws)"
        )
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    cls = METHODS[method][0]
    if {"num_samples", "num_chains"} <= _fields(cls):
        known = {k: v for k, v in options.items() if k in _fields(cls)}
        opts = cls(**known)
        if opts.num_samples * opts.num_chains < num_draws:
            raise ValueError(
                f"num_samples x num_chains = {opts.num_samples * opts.num_chains} draws are "
                f"fewer than num_draws={num_draws}; keep several times num_draws for thinning"
            )
    return str(method)


def sbc(
    model: GenerativeModel | Callable[..., Any],
    n_data: int,
    method: str | PosteriorFn = "nuts",
    *,
    num_simulations: int = 100,
    num_draws: int = 100,
    seed: int = 0,
    conf_level: float = 0.95,
    **fit_options: Any,
) -> SBCResult:
    """Simulation-based calibration (Talts et al. 2018) of ``method`` on ``model``.

    For each simulation ``s``: ``theta_s ~ p(theta)`` and ``x_s ~ p(x | theta_s)`` with
    ``n_data`` points (the model traced with no data); a fresh copy of the model is fitted to
    ``x_s`` by :func:`probgen.fit` with seed ``seed_s``; ``L = num_draws`` draws of every global
    latent site are taken (variational fits: ``L`` independent guide draws; NUTS: ``L`` evenly
    spaced draws of the chains, near-independent when the smallest ESS is ``>= L``, otherwise
    a warning is issued); the rank of each scalar of ``theta_s`` among its draws is recorded.
    The ranks' ECDF is then tested against the uniform with the simultaneous band of Säilynoja
    et al. (2022) (see :func:`ecdf_band`).

    SBC assumes a fixed prior: a family whose ``setup`` sets data-dependent prior
    hyperparameters is checked together with that empirical-Bayes step.

    Args:
        model: a :class:`~probgen.GenerativeModel` or a plain Pyro function ``f(x, n=None)``
            that generates ``n`` points when ``x`` is None.
        n_data: data points per simulated data set.
        method: a :func:`probgen.fit` method that returns draws (``"nuts"``, ``"svi"``), or a
            function ``(x, num_draws, generator) -> {site: [num_draws, *shape]}`` (e.g. an
            exact conjugate posterior, as a control).
        num_simulations: ``S``, simulated data sets.
        num_draws: ``L``, posterior draws each truth is ranked among (ranks lie in ``0..L``).
        seed: seeds the simulations; each data set and each fit get their own seed from it.
        conf_level: simultaneous level of the ECDF band.
        **fit_options: options of :func:`probgen.fit` for ``method`` (``guide=``, ``steps=``,
            ``num_samples=``, ``jit_compile=``, ...); ``seed`` and ``num_draws`` are set here.

    Returns:
        The :class:`SBCResult`.

    Raises:
        ValueError: a latent site without a proper prior that can be sampled (named), a
            ``pyro.param`` in the model, a model that cannot generate data, counts below 1, a
            point-estimate method, or too few MCMC draws for ``num_draws``.

    Example:
        >>> result = sbc(model, 20, "svi", guide="normal", num_draws=99)  # doctest: +SKIP
        >>> result.passed, result.p_values  # doctest: +SKIP
        >>> result.plot().savefig("sbc.png")  # doctest: +SKIP
    """
    n_data = check_count(n_data, "n_data")
    num_simulations = check_count(num_simulations, "num_simulations")
    num_draws = check_count(num_draws, "num_draws")
    gm = _generator_model(model)
    name = _check_method(method, num_draws, fit_options)
    ecdf_band(num_simulations, num_draws, conf_level)  # bad conf_level fails before any fit
    seeds = np.random.SeedSequence(seed).generate_state(3 * num_simulations, dtype=np.uint32)
    start = time.perf_counter()
    ranks: list[np.ndarray] = []
    ess: list[float] = []
    names = None
    for s in range(num_simulations):
        data_seed, fit_seed, tie_seed = (int(v) for v in seeds[3 * s : 3 * s + 3])
        pyro.set_rng_seed(data_seed)
        truth, x = _prior_predictive(gm, n_data)
        if names is None:
            names = _names(truth)
        # The draws come canonicalised (e.g. mixture components sorted): so must the truth.
        truth = {
            k: v[0, 0]
            for k, v in gm.canonicalize({k: v[None, None] for k, v in truth.items()}).items()
        }
        draws, min_ess = _draws(gm, x, method, list(truth), num_draws, fit_seed, fit_options)
        gen = torch.Generator().manual_seed(tie_seed)
        row = [_ranks(truth[k].cpu(), draws[k][0].cpu(), gen).reshape(-1) for k in truth]
        ranks.append(torch.cat(row).numpy())
        ess.append(min_ess)
    low = int((np.asarray(ess) < num_draws).sum())
    if low:
        warnings.warn(
            f"{low} of {num_simulations} NUTS runs had an effective sample size below "
            f"num_draws={num_draws}: their draws are autocorrelated and the ranks may look "
            "non-uniform for that reason alone; raise num_samples",
            UserWarning,
            stacklevel=2,
        )
    return SBCResult.from_ranks(
        np.stack(ranks),
        num_draws,
        names,
        conf_level,
        method=name,
        min_ess=np.asarray(ess),
        wall_time=time.perf_counter() - start,
    )
