"""Lean variational objectives for reparameterised guides: the ELBO and the per-datum IWAE bound.

Both run the guide and then the model once, under a single effect handler that substitutes the
guide's draws into the model and accumulates log-densities as the sites are visited, with ``K``
particles drawn at once in a vectorised plate. Compared with Pyro's ``Trace_ELBO`` this skips
building and post-processing two full traces (score-function bookkeeping, shape checks), which
is most of Pyro's per-step overhead for a model with few sites such as a VAE.

``ELBO`` (Kingma & Welling 2014, "Auto-Encoding Variational Bayes", arXiv:1312.6114)::

    L = (1/K) sum_k [log p(x, z_k) - log q(z_k | x)],   z_k ~ q(z | x)  (reparameterised)

``IWAE`` (Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders",
arXiv:1509.00519), *per datum*::

    L_K = sum_n log (1/K) sum_k w_nk,   w_nk = p(x_n, z_nk) / q(z_nk | x_n).

Pyro's ``RenyiELBO(alpha=0)`` keeps only the plates shared by *every* sample site: for a model
whose sites all lie in the data plate (a VAE) it is this per-datum bound, but one site outside it
(a global parameter, even a point mass) makes it the log-mean-exp of the weights of the *whole*
minibatch, ``log (1/K) sum_k prod_n w_nk``, which for more than a few data points is little
tighter than the ELBO. Here point-mass globals stay outside the log-mean-exp.

Site scales (minibatch ``N/B``, a beta-VAE's ``beta``) and masks are honoured as in Pyro. A guide
with a non-reparameterisable site (discrete, or without ``rsample``) whose density depends on
parameters makes :class:`ELBO` hand the step to Pyro's ``Trace_ELBO`` (score-function
gradients); :class:`IWAE` raises instead. A parameter-free one (an auxiliary index drawn by the
guide, such as a diffusion model's timestep) has no score-function term and stays on this path.

A model site marked ``infer={"analytic_kl": True}`` is scored by :class:`ELBO` as
``-KL(q(z | .) || p(z | .))`` in place of ``log p(z) - log q(z)`` at the draw (Rao-Blackwellised,
as Pyro's ``TraceMeanField_ELBO`` does for every site; Kingma & Welling 2014, eq. 10). This is the
conditional expectation of the same term, so the bound is unchanged, provided the guide draws the
site after every model parent of it. Pyro's own ELBOs ignore the mark and stay Monte Carlo.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from pyro.util import get_rng_state, set_rng_state
from torch import Tensor
from torch.distributions import kl_divergence

from probgen.infer.svi import DataPlateScale

__all__ = ["ELBO", "IWAE", "PARTICLE_PLATE"]

#: Name of the vectorised plate holding the particles.
PARTICLE_PLATE = "_particles"


class _NotReparameterized(Exception):
    """A guide site cannot be differentiated pathwise (raised inside the guide run)."""


class _Score(Messenger):
    """Runs a program once; records its draws and the log-density of every sample site.

    With ``values`` (the model run), latent sites take the guide's draws, and a latent site the
    guide did not sample is an error. Each term is ``(name, log_prob, scale, data_dim)`` with
    masks applied and scales *not* applied, so the IWAE bound can take per-datum logs first.
    """

    def __init__(
        self,
        plate: str,
        values: Mapping[str, Tensor] | None,
        require_reparam: bool,
        data_scale: float = 1.0,
        guide_fns: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.plate = plate
        self.data_scale = data_scale
        self.values = values
        self.require_reparam = require_reparam
        self.guide_fns = guide_fns
        self.draws: dict[str, Tensor] = {}
        self.fns: dict[str, Any] = {}
        #: ``(name, log_prob, scale, data_dim)``; a guide site marked ``analytic_kl`` holds a
        #: thunk until someone needs its density.
        self.terms: list[tuple[str, Tensor | Callable[[], Tensor], Any, int | None]] = []
        #: Model sites scored by ``-KL(q || p)`` (their guide terms are then left out).
        self.analytic: set[str] = set()

    def _pyro_sample(self, msg: Any) -> None:
        if self.values is None or msg["is_observed"] or site_is_subsample(msg):
            return
        name = msg["name"]
        if name not in self.values:
            raise ValueError(
                f"the model's latent site {name!r} is not sampled by the guide; every latent "
                f"site needs a guide site of the same name (guide sites: {sorted(self.values)})"
            )
        msg["value"] = self.values[name]
        msg["done"] = True

    def _pyro_post_sample(self, msg: Any) -> None:
        if site_is_subsample(msg):
            return
        fn, value, mask = msg["fn"], msg["value"], msg["mask"]
        lp: Tensor | Callable[[], Tensor] | None = None
        if self.values is None:
            if self.require_reparam and not msg["is_observed"] and not fn.has_rsample:
                # A draw whose density has no parameters (an auxiliary index such as a
                # diffusion's timestep) has a zero score-function term: pathwise is exact.
                lp = fn.log_prob(value)
                if lp.requires_grad:  # type: ignore[union-attr]
                    raise _NotReparameterized(msg["name"])
            self.draws[msg["name"]] = value
            self.fns[msg["name"]] = fn
            if mask is False:
                return  # masked out: no term (as in Pyro), and nothing to compute
            if lp is None and msg["infer"].get("analytic_kl"):
                # The model will most likely score this site by a KL and drop this term:
                # compute it only if asked (:func:`_value`).
                lp = _lazy(fn, value, mask)
        elif mask is False:
            return
        elif self.guide_fns is not None and msg["infer"].get("analytic_kl"):
            # E_q[log p - log q | parents] = -KL(q || p): exact when the guide has drawn every
            # model parent of the site before it (true of a guide in topological order).
            lp = _masked(-kl_divergence(self.guide_fns[msg["name"]], fn), mask)
            self.analytic.add(msg["name"])
        if lp is None:
            lp = _masked(fn.log_prob(value), mask)
        data_dim = next((f.dim for f in msg["cond_indep_stack"] if f.name == self.plate), None)
        scale = msg["scale"] if data_dim is None else msg["scale"] * self.data_scale
        self.terms.append((msg["name"], lp, scale, data_dim))


def _masked(lp: Tensor, mask: Any) -> Tensor:
    if mask is None or mask is True:
        return lp
    return torch.where(mask, lp, lp.new_zeros(()))


def _lazy(fn: Any, value: Tensor, mask: Any) -> Callable[[], Tensor]:
    return lambda: _masked(fn.log_prob(value), mask)


def _value(lp: Tensor | Callable[[], Tensor]) -> Tensor:
    return lp if isinstance(lp, Tensor) else lp()


class _ParticleObjective:
    """Shared machinery: run guide then model, ``K`` particles in a vectorised plate."""

    def __init__(
        self,
        num_particles: int = 1,
        max_plate_nesting: int = 1,
        data_plate: str = "data",
        vectorize_particles: bool = True,
    ) -> None:
        if isinstance(num_particles, bool) or not isinstance(num_particles, int):
            raise TypeError(f"num_particles must be an int, got {type(num_particles).__name__}")
        if num_particles < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        if not vectorize_particles:
            raise ValueError("probgen's objectives always vectorise particles")
        self.num_particles = num_particles
        self.max_plate_nesting = max_plate_nesting
        self.data_plate = data_plate
        self._data_scale = 1.0
        #: Honour ``infer={"analytic_kl": True}`` on model sites (the ELBO does; a bound on
        #: per-sample log-weights such as IWAE cannot).
        self.analytic_kl = False

    @contextlib.contextmanager
    def data_scale(self, scale: float) -> Iterator[None]:
        """Scales the data-plate sites by ``scale`` (``N / B`` for a minibatch) while active.

        The same as wrapping model and guide in :class:`probgen.infer.svi.DataPlateScale`, without
        an extra effect handler on every site.
        """
        previous, self._data_scale = self._data_scale, float(scale)
        try:
            yield
        finally:
            self._data_scale = previous

    def _particles(self) -> Any:
        if self.num_particles == 1:
            return contextlib.nullcontext()
        return pyro.plate(PARTICLE_PLATE, self.num_particles, dim=-self.max_plate_nesting - 1)

    def _run(
        self, model: Callable[..., Any], guide: Callable[..., Any], args: Any, kwargs: Any
    ) -> tuple[_Score, _Score]:
        q = _Score(self.data_plate, None, require_reparam=True, data_scale=self._data_scale)
        with q, self._particles():
            guide(*args, **kwargs)
        p = _Score(
            self.data_plate,
            q.draws,
            require_reparam=False,
            data_scale=self._data_scale,
            guide_fns=q.fns if self.analytic_kl else None,
        )
        with p, self._particles():
            model(*args, **kwargs)
        return q, p

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Tensor:
        raise NotImplementedError

    def loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> float:
        """The negative objective as a float, without gradients."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))


class ELBO(_ParticleObjective):
    """Negative ELBO averaged over ``num_particles`` reparameterised draws (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fallback: Trace_ELBO | None = None
        self._lean_ok = False
        self.analytic_kl = True

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Tensor:
        """``-L`` (a scalar tensor that backpropagates to model and guide parameters)."""
        if self._fallback is None:
            # Until one lean step has gone through, keep the RNG state: the aborted guide run
            # has drawn some sites, and Trace_ELBO must start from the same draws (so "elbo"
            # and "trace" give the same run under one seed).
            state = None if self._lean_ok else _rng_state()
            try:
                q, p = self._run(model, guide, args, kwargs)
            except _NotReparameterized:
                if state is not None:
                    _set_rng_state(state)
                self._fallback = Trace_ELBO(
                    num_particles=self.num_particles,
                    max_plate_nesting=self.max_plate_nesting,
                    vectorize_particles=self.num_particles > 1,
                )
            else:
                self._lean_ok = True
                total = _scaled_sum(p) - _scaled_sum(q, skip=p.analytic)
                if not isinstance(total, Tensor):
                    raise ValueError("the model and guide have no sample site to score")
                return -total / self.num_particles
        if self._data_scale != 1.0:  # Trace_ELBO knows nothing of data_scale: use the handler
            model = DataPlateScale(self.data_plate, self._data_scale)(model)
            guide = DataPlateScale(self.data_plate, self._data_scale)(guide)
        return self._fallback.differentiable_loss(model, guide, *args, **kwargs)


class IWAE(_ParticleObjective):
    """Negative importance-weighted bound with ``num_particles`` = ``K`` (module docstring).

    Per datum when every global latent site (outside the data plate) is a point mass in the
    guide (a VAE, or MAP-style globals): ``log p(theta) + sum_n L_K(x_n | theta)``. When the
    guide samples a global latent, the weights no longer factorise per datum and the bound is
    taken jointly, ``log (1/K) sum_k p(x, z_k, theta_k) / q(z_k, theta_k)`` (as Pyro's
    ``RenyiELBO(alpha=0)``), with minibatch scales inside the weights.
    """

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Tensor:
        """``-L_K`` (a scalar tensor)."""
        try:
            q, p = self._run(model, guide, args, kwargs)
        except _NotReparameterized as err:
            raise ValueError(
                f"objective 'iwae' needs a reparameterised guide; site {err.args[0]!r} has no "
                "rsample (use objective 'trace' or 'elbo' for score-function gradients)"
            ) from None
        k = self.num_particles
        sampled_globals = [
            name for name, _, _, dim in q.terms if dim is None and not _is_point_mass(q, name)
        ]
        if sampled_globals:
            return -self._joint(p, q)
        scales: set[float] = set()
        local: Tensor | None = None
        global_: Tensor | float = 0.0
        for sign, score in ((1.0, p), (-1.0, q)):
            for _, term, scale, data_dim in score.terms:
                lp = _value(term)
                if data_dim is None:
                    global_ = global_ + sign * (lp * scale).sum() / k
                    continue
                scales.add(float(scale))
                term = sign * _per_datum(lp, data_dim, self.max_plate_nesting, k > 1)
                local = term if local is None else local + term
        if local is None:
            raise ValueError(
                f"objective 'iwae': no sample site lies in the data plate {self.data_plate!r}"
            )
        if len(scales) > 1:
            raise ValueError(
                "objective 'iwae' needs one scale for every per-datum site (the log-mean-exp is "
                f"taken before scaling); got scales {sorted(scales)}: a beta-VAE's beta must be 1 "
                "with 'iwae'"
            )
        (scale,) = scales
        bound = (local.logsumexp(0) - math.log(k)).sum() if k > 1 else local.sum()
        return -(bound * scale + global_)

    def _joint(self, p: _Score, q: _Score) -> Tensor:
        """``log (1/K) sum_k w_k`` with ``w_k`` the whole (scaled) model over guide ratio."""
        k, dim = self.num_particles, -self.max_plate_nesting - 1
        log_w: Tensor | float = 0.0
        for sign, score in ((1.0, p), (-1.0, q)):
            for _, term, scale, _ in score.terms:
                lp = _value(term) * scale
                if k > 1 and lp.dim() >= -dim and lp.shape[dim] == k:
                    per_particle = lp.movedim(dim, 0).reshape(k, -1).sum(-1)
                else:  # no particle dimension: the same value for every particle
                    per_particle = lp.sum().expand(k)
                log_w = log_w + sign * per_particle
        assert isinstance(log_w, Tensor), "the model has no sample site"
        return log_w.logsumexp(0) - math.log(k)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = get_rng_state()
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    set_rng_state(state)
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _scaled_sum(score: _Score, skip: set[str] | frozenset[str] = frozenset()) -> Tensor | float:
    total: Tensor | float = 0.0
    for name, term, scale, _ in score.terms:
        if name in skip:
            continue
        lp = _value(term)
        # A number scales the sum (one scalar op); a tensor scale (per-element) scales terms.
        if isinstance(scale, (int, float)):
            total = total + (lp.sum() if scale == 1.0 else lp.sum() * scale)
        else:
            total = total + (lp * scale).sum()
    return total


def _per_datum(lp: Tensor, data_dim: int, nesting: int, particles: bool) -> Tensor:
    """Sums every dimension but the particle and data-plate ones: ``[K, N]`` (``[N]`` if K=1)."""
    width = nesting + 1 if particles else nesting
    if lp.dim() < width:
        lp = lp.reshape((1,) * (width - lp.dim()) + lp.shape)
    keep = {data_dim, -nesting - 1} if particles else {data_dim}
    other = [d for d in range(-lp.dim(), 0) if d not in keep]
    if other:
        lp = lp.sum(dim=other, keepdim=True)
    lp = lp.movedim(data_dim, -1)
    # Every dim but the particle and data ones has size 1 now, wherever the plates sat.
    return lp.reshape(-1, lp.shape[-1]) if particles else lp.reshape(-1)


def _is_point_mass(score: _Score, name: str) -> bool:
    fn: Any = score.fns.get(name)
    while hasattr(fn, "base_dist"):  # Independent, MaskedDistribution, ...
        fn = fn.base_dist
    return isinstance(fn, dist.Delta)
