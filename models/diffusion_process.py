"""The fixed forward process of a DDPM and the Gaussian algebra of its reverse chain.

Ho, Jain & Abbeel (2020, "Denoising Diffusion Probabilistic Models", arXiv:2006.11239) with the
cosine schedule, learned variances and ``v`` of Nichol & Dhariwal (2021, "Improved Denoising
Diffusion Probabilistic Models", arXiv:2102.09672) and Salimans & Ho (2022, "Progressive
Distillation", arXiv:2202.00512). Time is 1-based as in the papers: ``x_0`` is the data and

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I),      t = 1..T,
    q(x_t | x_0)     = N(sqrt(abar_t) x_0, (1 - abar_t) I),    abar_t = prod_{s<=t} (1 - beta_s),
    q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, btilde_t I),
        c0_t = beta_t sqrt(abar_{t-1}) / (1 - abar_t),
        ct_t = sqrt(1 - beta_t) (1 - abar_{t-1}) / (1 - abar_t),
        btilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t).

Every per-step array is stored with index ``t`` (entry 0 is ``t = 0``: ``abar_0 = 1``), so the
formulas read as written. The arrays are float64; callers cast to their data's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor

__all__ = [
    "PARAMETERIZATIONS",
    "SCHEDULES",
    "DiscretizedGaussian",
    "Process",
    "beta_schedule",
    "check_betas",
    "discretized_gaussian_log_likelihood",
    "normal_kl",
    "to_levels",
]

SCHEDULES = ("linear", "cosine")
#: What the network predicts: the noise, the clean data, or v = sqrt(abar) eps - sqrt(1-abar) x0.
PARAMETERIZATIONS = ("eps", "x0", "v")
#: Nichol & Dhariwal's cap on cosine-schedule betas: beta_T -> 1 would make the last step
#: singular.
MAX_BETA = 0.999


def beta_schedule(
    kind: str, steps: int, *, beta_start: float | None = None, beta_end: float | None = None
) -> Tensor:
    """``beta_1..beta_T`` (float64 ``[T]``) of a named schedule.

    ``"linear"``: Ho et al.'s ``1e-4 .. 0.02`` for ``T = 1000``, both ends scaled by ``1000 / T``
    (Nichol & Dhariwal's rule, so that a shorter chain still ends near ``N(0, I)``; the end is
    capped at 0.999 for ``T < 50``), or from
    ``beta_start`` to ``beta_end`` when given. ``"cosine"``: ``abar_t = f(t) / f(0)`` with
    ``f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2)``, ``s = 0.008``, and
    ``beta_t = min(1 - abar_t / abar_{t-1}, 0.999)``.
    """
    check_steps(steps)
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; allowed: {', '.join(SCHEDULES)}")
    if kind == "linear":
        scale = 1000.0 / steps
        lo = beta_start if beta_start is not None else 1e-4 * scale
        hi = beta_end if beta_end is not None else min(0.02 * scale, MAX_BETA)
        lo = min(lo, hi)
        betas = torch.linspace(lo, hi, steps, dtype=torch.float64)
    else:
        if beta_start is not None or beta_end is not None:
            raise ValueError("beta_start/beta_end are options of the linear schedule only")
        s = 0.008
        grid = torch.arange(steps + 1, dtype=torch.float64) / steps
        f = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        betas = (1 - abar[1:] / abar[:-1]).clamp(max=MAX_BETA)
    return check_betas(betas)


def check_steps(steps: object) -> int:
    """``T`` must be a positive int."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"the number of diffusion steps T must be an integer >= 1, got {steps!r}")
    return steps


def check_betas(betas: object) -> Tensor:
    """``betas`` as float64 ``[T]`` with every entry strictly inside (0, 1)."""
    if not isinstance(betas, Tensor):
        try:
            betas = torch.as_tensor(betas, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"betas must be a 1-D sequence of floats, got {betas!r}") from err
    betas = betas.detach().to(torch.float64)
    if betas.dim() != 1 or betas.numel() < 1:
        raise ValueError(f"betas must be 1-D with T >= 1 entries, got shape {tuple(betas.shape)}")
    bad = ~((betas > 0) & (betas < 1))
    if bad.any():
        t = int(bad.nonzero()[0, 0]) + 1
        raise ValueError(
            f"every beta_t must lie strictly inside (0, 1); beta_{t} = {float(betas[t - 1])!r} "
            f"(T = {betas.numel()})"
        )
    return betas


@dataclass(frozen=True)
class Process:
    """The forward process of a schedule, with every per-step array indexed by ``t = 0..T``.

    Attributes:
        betas: ``beta_t`` (entry 0 unused, set to 0).
        abar: ``abar_t`` (``abar_0 = 1``), with ``sqrt_abar``, ``one_minus_abar`` and
            ``sqrt_one_minus_abar`` formed in float64 (``1 - abar_1 = beta_1 ~ 1e-4`` would lose
            three digits if formed after a cast to float32).
        post_var: ``btilde_t`` (``btilde_1 = 0``: ``x_0`` is determined by ``x_1`` and ``x_0``).
        post_c0, post_ct: the posterior mean's coefficients of ``x_0`` and ``x_t``.
        log_betas, log_post_var: ``log beta_t`` and ``log btilde_t`` with ``btilde_1`` replaced
            by ``btilde_2`` (``beta_1`` when ``T = 1``), for :meth:`log_variance`.
    """

    betas: Tensor
    abar: Tensor
    sqrt_abar: Tensor
    one_minus_abar: Tensor
    sqrt_one_minus_abar: Tensor
    post_var: Tensor
    post_c0: Tensor
    post_ct: Tensor
    log_betas: Tensor
    log_post_var: Tensor
    _cache: dict[tuple[str, Any], Tensor] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_betas(cls, betas: Tensor) -> Process:
        betas = check_betas(betas)
        b = torch.cat([betas.new_zeros(1), betas])
        abar = torch.cumprod(1 - b, 0)
        # 1 - abar_t = 1 - prod(1 - beta_s) without cancellation: -expm1(sum log1p(-beta_s)).
        omabar = -torch.expm1(torch.cumsum(torch.log1p(-b), 0))
        prev, omprev = torch.cat([abar.new_ones(1), abar[:-1]]), torch.cat([b[:1], omabar[:-1]])
        denom = omabar.clamp(min=torch.finfo(torch.float64).tiny)
        post_var = b * omprev / denom
        post_c0 = b * prev.sqrt() / denom
        post_ct = (1 - b).sqrt() * omprev / denom
        post_var[0] = post_c0[0] = post_ct[0] = 0.0
        log_betas = torch.cat([betas[:1], betas]).log()  # entry 0 (unused) kept finite
        tilde = post_var.clone()
        tilde[:2] = post_var[2] if b.numel() > 2 else b[1]  # btilde_1 = 0 -> btilde_2
        return cls(
            b,
            abar,
            abar.sqrt(),
            omabar,
            omabar.sqrt(),
            post_var,
            post_c0,
            post_ct,
            log_betas,
            tilde.log(),
        )

    @property
    def steps(self) -> int:
        return self.betas.numel() - 1

    def at(self, name: str, t: Tensor, like: Tensor) -> Tensor:
        """``self.<name>[t]`` shaped to broadcast against ``like`` ``[..., D]`` (``t``: batch).

        The float64 array is copied once per device and dtype, not per call.
        """
        key = (name, like.device, like.dtype)
        values = self._cache.get(key)  # type: ignore[call-overload]
        if values is None:
            values = getattr(self, name).to(device=like.device, dtype=like.dtype)
            self._cache[key] = values  # type: ignore[index]
        return values[t].unsqueeze(-1)

    # ----------------------------------------------------------------- forward process
    def q_marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``q(x_t | x_0)``."""
        return self.at("sqrt_abar", t, x0) * x0, self.at("one_minus_abar", t, x0).expand_as(x0)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (reparameterised)."""
        return self.at("sqrt_abar", t, x0) * x0 + self.at("sqrt_one_minus_abar", t, x0) * noise

    def q_step(self, x_prev: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of one forward step ``q(x_t | x_{t-1})``."""
        beta = self.at("betas", t, x_prev)
        return (1 - beta).sqrt() * x_prev, beta.expand_as(x_prev)

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``q(x_{t-1} | x_t, x_0)`` (module docstring)."""
        mean = self.at("post_c0", t, xt) * x0 + self.at("post_ct", t, xt) * xt
        return mean, self.at("post_var", t, xt).expand_as(xt)

    # ----------------------------------------------------------------- parameterisations
    def x0_from(self, out: Tensor, xt: Tensor, t: Tensor, parameterization: str) -> Tensor:
        """The network's estimate of ``x_0`` from its output under a parameterisation.

        ``eps``: ``x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)``; ``x0``: the output itself;
        ``v``: ``x0 = sqrt(abar) x_t - sqrt(1 - abar) v`` (Salimans & Ho 2022).
        """
        a, s = self.at("sqrt_abar", t, xt), self.at("sqrt_one_minus_abar", t, xt)
        if parameterization == "eps":
            return (xt - s * out) / a
        if parameterization == "x0":
            return out
        if parameterization == "v":
            return a * xt - s * out
        raise ValueError(
            f"unknown parameterization {parameterization!r}; allowed: "
            f"{', '.join(PARAMETERIZATIONS)}"
        )

    def eps_from(self, out: Tensor, xt: Tensor, t: Tensor, parameterization: str) -> Tensor:
        """The implied noise ``eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)``."""
        if parameterization == "eps":
            return out
        a, s = self.at("sqrt_abar", t, xt), self.at("sqrt_one_minus_abar", t, xt)
        if parameterization == "v":  # eps = sqrt(1 - abar) x_t + sqrt(abar) v
            return s * xt + a * out
        return (xt - a * self.x0_from(out, xt, t, parameterization)) / s

    def target(self, x0: Tensor, noise: Tensor, t: Tensor, parameterization: str) -> Tensor:
        """What the network should output at ``x_t = q_sample(x0, t, noise)``."""
        if parameterization == "eps":
            return noise
        if parameterization == "x0":
            return x0
        if parameterization != "v":
            raise ValueError(
                f"unknown parameterization {parameterization!r}; allowed: "
                f"{', '.join(PARAMETERIZATIONS)}"
            )
        a, s = self.at("sqrt_abar", t, x0), self.at("sqrt_one_minus_abar", t, x0)
        return a * noise - s * x0

    def log_variance(self, t: Tensor, like: Tensor, kind: str, frac: Tensor | None) -> Tensor:
        """``log sigma_t^2`` of the reverse step: ``beta_t``, ``btilde_t`` or, for ``learned``,
        ``frac log beta_t + (1 - frac) log btilde_t`` with the network's ``frac`` in [0, 1]
        (Nichol & Dhariwal eq. 15). In logs ``btilde_1 = 0`` is replaced by ``btilde_2``, as in
        their code (log 0 would be -inf; at ``t = 1`` it only sets the decoder's scale)."""
        if kind == "beta":
            return self.at("log_betas", t, like).expand_as(like)
        if kind == "beta_tilde":
            return self.at("log_post_var", t, like).expand_as(like)
        if kind != "learned" or frac is None:
            raise ValueError(
                f"variance kind must be 'beta', 'beta_tilde' or 'learned' (with frac); got "
                f"{kind!r}{' without frac' if kind == 'learned' else ''}"
            )
        return frac * self.at("log_betas", t, like) + (1 - frac) * self.at("log_post_var", t, like)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """``KL(N(mean1, e^logvar1) || N(mean2, e^logvar2))`` elementwise, in nats.

    ``0.5 (logvar2 - logvar1 + e^(logvar1 - logvar2) + (mean1 - mean2)^2 e^-logvar2 - 1)``.
    """
    return 0.5 * (
        logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2) ** 2 * (-logvar2).exp() - 1
    )


def _log_ndtr(z: Tensor) -> Tensor:
    return torch.special.log_ndtr(z)


def discretized_gaussian_log_likelihood(
    y: Tensor, mean: Tensor, log_scale: Tensor, levels: int
) -> Tensor:
    """``log P(y)`` of ``L``-level data under a Gaussian discretised into bins, elementwise.

    The data ``y`` are the levels ``k = 0..L-1`` mapped to ``-1 + 2k / (L - 1)``; level ``k``'s
    bin is ``[y - 1/(L-1), y + 1/(L-1)]``, the outermost bins extend to -inf / +inf (Ho et al.
    2020, Sec. 3.3, with ``L = 256``). ``L = 2`` is a probit Bernoulli on ``{-1, 1}``:
    ``P(1) = Phi(mean / scale)``. The differences of CDFs are formed in log space
    (``log(Phi(b) - Phi(a))`` via ``log_ndtr``), so tiny bins far in a tail stay finite.
    """
    inv = (-log_scale).exp()
    if levels == 2:  # bins (-inf, 0] and (0, inf): log P(y) = log Phi(y mean / scale)
        return _log_ndtr(y.sign() * mean * inv)
    half = 1.0 / (levels - 1)
    # The outer bins are open; a bound far beyond any standardised value keeps their formula
    # the same as the others' and every gradient finite (log Phi(-1e4) ~ -5e7).
    top, bottom = y > 1 - half, y < -1 + half
    upper = torch.where(top, _FAR, (y + half - mean) * inv)
    lower = torch.where(bottom, -_FAR, (y - half - mean) * inv)
    # log(Phi(u) - Phi(l)) = log Phi(u) + log(-expm1(log Phi(l) - log Phi(u))); for a bin above
    # the mean, where both CDFs near 1 would cancel, the same through the survival functions,
    # Phi(-l) - Phi(-u). Two log_ndtr calls per element either way.
    above = lower > 0
    hi = torch.where(above, -lower, upper)
    lo = torch.where(above, -upper, lower)
    log_hi = _log_ndtr(hi)
    tiny = -torch.finfo(y.dtype).tiny
    return log_hi + torch.log(-torch.expm1((_log_ndtr(lo) - log_hi).clamp(max=tiny)))


#: An outer bin's open end, in standard units.
_FAR = 1e4


def to_levels(y: Tensor, levels: int) -> Tensor:
    """A chain value ``y`` to the nearest of the ``L`` data levels ``k / (L - 1)`` in [0, 1]:
    the level of the bin that ``y`` falls in."""
    top = levels - 1
    return (((y + 1) / 2).clamp(0, 1) * top).round() / top


_SCALAR = torch.Size()


class DiscretizedGaussian(TorchDistribution):
    """``L``-level data in ``[0, 1]`` (levels ``k / (L - 1)``) whose chain value
    ``y = 2x - 1`` is a Gaussian ``N(mean, e^(2 log_scale))`` discretised into bins
    (:func:`discretized_gaussian_log_likelihood`); ``L = 2`` is the binary case.

    Batch shape is that of ``mean``; use ``.to_event(1)`` for a datum. ``sample`` draws the
    Gaussian and returns the level of the bin it falls in.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "mean": constraints.real,
        "log_scale": constraints.real,
    }
    has_rsample = False

    def __init__(self, mean: Tensor, log_scale: Tensor, levels: int, validate_args: bool = False):
        self.mean_, self.log_scale = torch.broadcast_tensors(mean, log_scale)
        self.levels = levels
        super().__init__(self.mean_.shape, validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.unit_interval

    @property
    def mean(self) -> Tensor:  # the mean of the levels' values would need all L bins; the
        # chain mean mapped to [0, 1] is what plots want
        return ((self.mean_ + 1) / 2).clamp(0, 1)

    def log_prob(self, value: Tensor) -> Tensor:
        return discretized_gaussian_log_likelihood(
            2 * value - 1, self.mean_, self.log_scale, self.levels
        )

    def sample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            y = self.mean_.expand(shape) + self.log_scale.exp().expand(shape) * torch.randn(
                shape, dtype=self.mean_.dtype, device=self.mean_.device
            )
            return to_levels(y, self.levels)

    def expand(self, batch_shape: Any, _instance: Any = None) -> DiscretizedGaussian:
        shape = torch.Size(batch_shape)
        return DiscretizedGaussian(
            self.mean_.expand(shape), self.log_scale.expand(shape), self.levels
        )
