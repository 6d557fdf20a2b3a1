"""Denoising diffusion (DDPM) as a Pyro program pair: a hierarchical VAE with a fixed encoder.

Ho, Jain & Abbeel (2020, "Denoising Diffusion Probabilistic Models", arXiv:2006.11239). The
*model* is the learned reverse chain and the *guide* is the fixed forward (noising) process,
written in its reverse-time factorisation so that every guide draw follows its model parents:

    model:  x_T ~ N(0, I),   x_{t-1} | x_t ~ N(mu_theta(x_t, t), sigma_t^2 I)  (t = T..2),
            x_0 | x_1 ~ p_theta(x_0 | x_1)   (the decoder, observed)
    guide:  x_T ~ q(x_T | x_0),   x_{t-1} | x_t ~ q(x_{t-1} | x_t, x_0)  (t = T..2),

which is the same joint as the Markov chain ``prod_t q(x_t | x_{t-1})`` (:meth:`DDPM.forward_guide`
writes that one). Pyro's negative ELBO on the pair is the DDPM bound

    L_vlb = KL(q(x_T|x_0) || p(x_T)) + sum_{t=2}^T E_q KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))
            - E_q log p(x_0 | x_1)  =  L_T + sum_t L_{t-1} + L_0.

Training uses the same bound through a cheaper program pair (``estimator="sampled"``, the
default): each datum draws one timestep ``t ~ U{1..T}`` and ``x_t ~ q(x_t | x_0)`` directly, and
contributes ``T`` times its term (``L_{t-1}``, or ``L_0`` at ``t = 1``) plus ``L_T``; the
timestep and ``x_t`` are drawn from the same distribution by model and guide, so their terms
would cancel and both programs mask them out (auxiliary variables, never scored), and ``x_T``
and ``x_{t-1}`` are integrated out analytically: the model adds their Gaussian KLs as factors
(Rao-Blackwellisation; no draws of them, no Monte Carlo noise from them). Its expectation under
any ELBO, Pyro's included, is ``L_vlb`` exactly. ``loss="simple"`` replaces the bound by Ho et al.'s
``L_simple = E ||eps - eps_theta(x_t, t)||^2``: the ``t >= 2`` KL terms reweighted by
``1 / w_t``, ``w_t = beta_t^2 / (2 sigma_t^2 (1 - beta_t)(1 - abar_t))`` (their eq. 12), which is
not a bound.

Networks predict ``eps``, ``x_0`` or ``v`` (:data:`PARAMETERIZATIONS`); reverse variances are
``beta_t``, ``btilde_t`` or learned between them (Nichol & Dhariwal 2021). The chain lives in
``y = 2x - 1`` for binary (``decoder="bernoulli"``) and ``L``-level data in ``[0, 1]``
(``"discretized"``), whose decoders discretise ``N(mu_theta(x_1, 1), sigma_1^2)`` into the data's
bins (Ho et al. Sec. 3.3), and in ``y = x`` for continuous data (``"gaussian"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor, nn

from models import diffusion_process as dp
from models.diffusion_process import PARAMETERIZATIONS, DiscretizedGaussian, Process
from probgen import GenerativeModel
from probgen.nn_time import TimeMLP, UNet
from probgen.plate import plate
from probgen.validation import check_data, is_binary

__all__ = ["DDPM", "DECODERS", "ESTIMATORS", "LOSSES", "VARIANCES"]

DECODERS = ("bernoulli", "discretized", "gaussian")
VARIANCES = ("beta", "beta_tilde", "learned")
ESTIMATORS = ("sampled", "chain")
LOSSES = ("vlb", "simple")
NETWORKS = ("mlp", "unet")
OBS = "obs"


def site(t: int) -> str:
    """The name of the chain's site at time ``t`` (``x_0`` is the observed ``obs``)."""
    return OBS if t == 0 else f"x_{t}"


_SCALAR = torch.Size()


class UniformTime(dist.TorchDistribution):
    """``t ~ U{1..T}`` per datum: the auxiliary timestep of the sampled bound.

    Model and guide draw it from this same distribution, so it adds nothing to the ELBO. It
    declares no enumeration support on purpose: summing it out would evaluate all ``T`` terms,
    which :meth:`DDPM.bound_terms` does directly.
    """

    arg_constraints: ClassVar[dict[str, Any]] = {}
    has_enumerate_support = False

    def __init__(self, steps: int, batch_shape: torch.Size, device: Any = None) -> None:
        self.steps = steps
        self.device = device
        super().__init__(batch_shape, validate_args=False)

    @property
    def support(self) -> Any:
        return dist.constraints.integer_interval(1, self.steps)

    def sample(self, sample_shape: torch.Size = _SCALAR) -> Tensor:
        shape = self._extended_shape(sample_shape)
        return torch.randint(1, self.steps + 1, shape, device=self.device)

    def log_prob(self, value: Tensor) -> Tensor:
        return torch.full(value.shape, -math.log(self.steps), device=value.device)

    def expand(self, batch_shape: Any, _instance: Any = None) -> UniformTime:
        return UniformTime(self.steps, torch.Size(batch_shape), self.device)


def _normal(mean: Tensor, var: Tensor) -> dist.TorchDistribution:
    return dist.Independent(dist.Normal(mean, var.sqrt(), validate_args=False), 1)


class DDPM(GenerativeModel):
    """A denoising diffusion probabilistic model (see the module docstring).

    Args:
        data_dim: ``D``, the width of a (flattened) datum.
        steps: ``T >= 1`` diffusion steps.
        schedule: ``"linear"``, ``"cosine"`` or a sequence of ``T`` betas in (0, 1).
        parameterization: what the network predicts, one of :data:`PARAMETERIZATIONS`.
        variance: ``sigma_t^2`` of the reverse steps, one of :data:`VARIANCES`.
        decoder: ``p(x_0 | x_1)``, one of :data:`DECODERS`.
        levels: number of levels of ``"discretized"`` data (256 for 8-bit images).
        network: ``"mlp"`` (:class:`probgen.nn_time.TimeMLP`), ``"unet"`` (needs
            ``image_shape``), or any module called as ``net(x_t [..., D], t [...])`` that returns
            ``[..., D]`` (``[..., 2D]`` with ``variance="learned"``: prediction, then the
            variance logits).
        hidden: hidden widths of the MLP.
        image_shape: ``(H, W)`` or ``(C, H, W)`` for the U-Net and image plots.
        channels: U-Net channels per resolution.
        estimator: what ``model(x)``/``guide(x)`` score: ``"sampled"`` (one timestep per datum,
            unbiased) or ``"chain"`` (all ``T`` sites).
        loss: ``"vlb"`` (the bound) or ``"simple"`` (Ho et al.'s eps-MSE, ``estimator="sampled"``
            only, fixed variances only).
        clip_x0: clip the predicted ``x_0`` to ``[-1, 1]`` inside every reverse step (default:
            for the discrete decoders, whose chain data live there). The reference code does
            this when it evaluates the bound (``clip_denoised``); here training, the bound and
            the samplers use the same model. It is still a Gaussian reverse chain, and for
            binary data, where ``x_0 = sign(x_t)`` at small ``t``, it makes those steps nearly
            free: on a 2,000-image binarized-MNIST pilot (T = 100, 320 steps, v-prediction,
            learned variances) the test bound fell from 2.59 to 0.32 bits/dim.

    Example:
        >>> ddpm = DDPM(2, steps=100, schedule="cosine")
        >>> fit = probgen.fit(ddpm, x, epochs=200, batch_size=256, lr=2e-3)  # doctest: +SKIP
        >>> x_new = ddpm.sample(1000)                                         # doctest: +SKIP
    """

    num_is_particles: ClassVar[int] = 1
    #: The term of :meth:`bound_terms` that scores the data (for bits/dim corrections).
    bound_data_term: ClassVar[str] = "decoder"

    def __init__(
        self,
        data_dim: int,
        steps: int = 1000,
        *,
        schedule: str | Sequence[float] | Tensor = "linear",
        parameterization: str = "eps",
        variance: str = "beta",
        decoder: str = "gaussian",
        levels: int = 256,
        network: str | nn.Module = "mlp",
        hidden: Sequence[int] = (256, 256, 256),
        image_shape: Sequence[int] | None = None,
        channels: Sequence[int] = (32, 64),
        estimator: str = "sampled",
        loss: str = "vlb",
        clip_x0: bool | None = None,
    ) -> None:
        super().__init__()
        _positive_int(data_dim, "data_dim")
        dp.check_steps(steps)
        for value, name, allowed in (
            (parameterization, "parameterization", PARAMETERIZATIONS),
            (variance, "variance", VARIANCES),
            (decoder, "decoder", DECODERS),
            (network if isinstance(network, str) else "mlp", "network", NETWORKS),
            (estimator, "estimator", ESTIMATORS),
            (loss, "loss", LOSSES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
        if isinstance(schedule, str):
            betas = dp.beta_schedule(schedule, steps)
        else:
            betas = dp.check_betas(schedule)
            if betas.numel() != steps:
                raise ValueError(f"schedule has {betas.numel()} betas, but steps T = {steps}")
        if loss == "simple" and (variance == "learned" or estimator != "sampled"):
            raise ValueError(
                "loss='simple' trains the mean only: it needs a fixed variance ('beta' or "
                "'beta_tilde') and estimator='sampled'"
            )
        if decoder == "discretized":
            _positive_int(levels, "levels", minimum=2)
        self.data_dim = self.dim_ = data_dim
        self.steps = steps
        self.schedule = schedule if isinstance(schedule, str) else "custom"
        self.parameterization = parameterization
        self.variance = variance
        self.decoder_name = decoder
        self.levels = 2 if decoder == "bernoulli" else levels
        self.estimator = estimator
        self.loss = loss
        if clip_x0 is not None and not isinstance(clip_x0, bool):
            raise ValueError(f"clip_x0 must be True, False or None, got {clip_x0!r}")
        if clip_x0 and decoder == "gaussian":
            raise ValueError("clip_x0 needs data in [-1, 1]: a discrete decoder, not 'gaussian'")
        self.clip_x0 = decoder != "gaussian" if clip_x0 is None else clip_x0
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        if self.image_shape is not None and math.prod(self.image_shape) != data_dim:
            raise ValueError(
                f"image_shape {self.image_shape} has {math.prod(self.image_shape)} pixels, not "
                f"data_dim={data_dim}"
            )
        self.process = Process.from_betas(betas)
        out_mult = 2 if variance == "learned" else 1
        if isinstance(network, nn.Module):
            self.net: nn.Module = network
        elif network == "unet":
            if image_shape is None:
                raise ValueError("network='unet' needs image_shape=(H, W) or (C, H, W)")
            self.net = UNet(image_shape, out_mult=out_mult, channels=tuple(channels))
        else:
            self.net = TimeMLP(data_dim, tuple(hidden), out_mult=out_mult)
        # Kept as buffers so that .to(device/dtype) moves them with the network.
        self.register_buffer("_anchor", torch.zeros(()))

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "data_dim": self.data_dim,
            "steps": self.steps,
            "schedule": self.schedule,
            "parameterization": self.parameterization,
            "variance": self.variance,
            "decoder": self.decoder_name,
            "estimator": self.estimator,
            "loss": self.loss,
            "clip_x0": self.clip_x0,
        }

    # ------------------------------------------------------------------ data
    def check_x(self, x: Any, name: str = "x") -> Tensor:
        """``x`` as ``[N, D]`` data in the decoder's support (clear errors otherwise)."""
        if self.decoder_name == "gaussian":
            return check_data(x, name, ndim=2, dim=self.data_dim)
        x = check_data(x, name, ndim=2, dim=self.data_dim)
        if self.decoder_name == "bernoulli":
            if not is_binary(x):
                raise ValueError(f"{name} must be binary (0/1) for decoder='bernoulli'")
            return x
        k = x * (self.levels - 1)
        if (x < 0).any() or (x > 1).any() or ((k - k.round()).abs() > 1e-3).any():
            raise ValueError(
                f"{name} must hold levels k / {self.levels - 1} (k = 0..{self.levels - 1}) for "
                f"decoder='discretized' with levels={self.levels}; scale 8-bit images by 1/255"
            )
        return x

    def setup(self, x: Tensor, **context: Tensor) -> None:
        """Checks the data; networks take the data's dtype."""
        if context:
            raise ValueError(f"unknown context {sorted(context)}; a DDPM takes none")
        x = self.check_x(x, "data")
        self.to(x.dtype)

    def to_chain(self, x: Tensor) -> Tensor:
        """Data to the chain's space: ``2x - 1`` for discrete decoders, ``x`` otherwise."""
        return x if self.decoder_name == "gaussian" else 2 * x - 1

    # ------------------------------------------------------------------ the reverse step
    def _net(self) -> nn.Module:
        module: nn.Module = self._modules["net"]  # type: ignore[assignment]
        return module

    def network_output(self, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]:
        """The network's prediction (under ``parameterization``) and the learned-variance
        fraction (``None`` for fixed variances) at ``(x_t, t)``."""
        out = self._net()(xt, t)
        if self.variance != "learned":
            return out, None
        pred, raw = out.chunk(2, -1)
        return pred, torch.sigmoid(raw)

    def reverse(self, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean and log-variance of ``p_theta(x_{t-1} | x_t)`` and the predicted ``x_0``.

        ``mu_theta = c0_t x0_theta + ct_t x_t`` (the posterior mean at the predicted ``x_0``,
        Ho et al. eq. 7 and 11); at ``t = 1`` it is ``x0_theta`` itself. With ``clip_x0``,
        ``x0_theta`` is clipped to the data's range ``[-1, 1]`` first.
        """
        pred, frac = self.network_output(xt, t)
        x0 = self.process.x0_from(pred, xt, t, self.parameterization)
        if self.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        mean, _ = self.process.q_posterior(x0, xt, t)
        return mean, self.process.log_variance(t, xt, self.variance, frac), x0

    def score(self, xt: Tensor, t: Tensor) -> Tensor:
        """The score estimate ``s_theta(x_t, t) = -eps_theta(x_t, t) / sqrt(1 - abar_t)`` of
        ``grad log q(x_t)`` (Song et al. 2021, "Score-Based Generative Modeling through SDEs",
        arXiv:2011.13456, eq. 5 with the DDPM's noise scale), in the chain's space."""
        t = self._times(t, xt)
        pred, _ = self.network_output(xt, t)
        eps = self.process.eps_from(pred, xt, t, self.parameterization)
        return -eps / (1 - self.process.at("abar", t, xt)).sqrt()

    def decoder(self, mean: Tensor, log_var: Tensor) -> dist.TorchDistribution:
        """``p(x_0 | x_1)`` from the reverse step's mean and log-variance at ``t = 1``."""
        if self.decoder_name == "gaussian":
            return _normal(mean, log_var.exp())
        return dist.Independent(DiscretizedGaussian(mean, 0.5 * log_var, self.levels), 1)

    def _times(self, t: Any, like: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=like.device)
        if t.is_floating_point() or (t < 1).any() or (t > self.steps).any():
            raise ValueError(f"t must be integer timesteps in 1..{self.steps}")
        return t.expand(like.shape[:-1]) if t.dim() == 0 else t

    # ------------------------------------------------------------------ the Pyro programs
    def model(self, x: Tensor | None = None, *, n: int | None = None) -> Tensor:
        """The reverse chain (module docstring); with data and ``estimator="sampled"``, the
        one-timestep program whose ELBO is an unbiased estimate of the chain's."""
        if x is not None and self.estimator == "sampled":
            return self.sampled_model(x)
        return self.chain_model(x, n=n)

    def guide(self, x: Tensor | None = None, *, n: int | None = None) -> None:
        """The fixed forward process (module docstring), matching :meth:`model`'s program."""
        if x is None:
            raise ValueError("the guide noises data: call guide(x), not guide(None)")
        if self.estimator == "sampled":
            self.sampled_guide(x)
        else:
            self.chain_guide(x)

    def chain_model(self, x: Tensor | None = None, *, n: int | None = None) -> Tensor:
        """``x_T ~ N(0, I)``, ``x_{t-1} ~ p_theta(x_{t-1} | x_t)``, ``x_0 ~ p_theta(x_0 | x_1)``."""
        size = x.shape[0] if x is not None else n
        if size is None:
            raise ValueError("model needs data x or a number of draws n")
        zero = self._buffers["_anchor"]
        with plate(self.data_plate, size):
            y = pyro.sample(
                site(self.steps), _normal(zero.expand(size, self.data_dim), zero.new_ones(()))
            )
            for step in range(self.steps, 1, -1):
                t = torch.full((size,), step, device=y.device)
                mean, log_var, _ = self.reverse(y, t)
                y = pyro.sample(site(step - 1), _normal(mean, log_var.exp()))
            t = torch.ones(size, dtype=torch.long, device=y.device)
            mean, log_var, _ = self.reverse(y, t)
            return pyro.sample(OBS, self.decoder(mean, log_var), obs=x)

    def chain_guide(self, x: Tensor, *, n: int | None = None) -> None:
        """``x_T ~ q(x_T | x_0)``, then ``x_{t-1} ~ q(x_{t-1} | x_t, x_0)`` for ``t = T..2``."""
        y0 = self.to_chain(x)
        size = x.shape[0]
        with plate(self.data_plate, size):
            t = torch.full((size,), self.steps, device=x.device)
            y = pyro.sample(site(self.steps), _normal(*self.process.q_marginal(y0, t)))
            for step in range(self.steps, 1, -1):
                t = torch.full((size,), step, device=x.device)
                y = pyro.sample(site(step - 1), _normal(*self.process.q_posterior(y0, y, t)))

    def forward_guide(self, x: Tensor, *, n: int | None = None) -> None:
        """The same process as the Markov chain ``x_t ~ q(x_t | x_{t-1})``, ``t = 1..T``."""
        y = self.to_chain(x)
        size = x.shape[0]
        with plate(self.data_plate, size):
            for step in range(1, self.steps + 1):
                t = torch.full((size,), step, device=x.device)
                y = pyro.sample(site(step), _normal(*self.process.q_step(y, t)))

    def sampled_model(self, x: Tensor) -> Tensor:
        """``t ~ U{1..T}`` and ``x_t ~ q(x_t | x_0)`` (drawn as the guide draws them, masked
        out), then the chain's terms with ``x_T`` and ``x_{t-1}`` integrated out analytically:
        the factor ``-L_T - T KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))`` (site
        ``"kl"``) or, at ``t = 1``, ``-L_T`` and ``T`` times the decoder on the observed
        ``x_0``. With ``loss="simple"``, the factor ``-||eps - eps_theta(x_t, t)||^2`` alone."""
        y0 = self.to_chain(x)
        size = x.shape[0]
        with plate(self.data_plate, size):
            with poutine.mask(mask=False):  # auxiliary: drawn alike by model and guide
                t = pyro.sample("t", UniformTime(self.steps, torch.Size([size]), x.device))
                yt = pyro.sample("x_t", _normal(*self.process.q_marginal(y0, t)))
            if self.loss == "simple":
                pred, _ = self.network_output(yt, t)
                eps = self.process.eps_from(pred, yt, t, self.parameterization)
                noise = (yt - self.process.at("sqrt_abar", t, yt) * y0) / self.process.at(
                    "sqrt_one_minus_abar", t, yt
                )
                pyro.factor("simple", -((eps - noise) ** 2).sum(-1))
                return x
            mean, log_var, _ = self.reverse(yt, t)
            later = t >= 2
            kl = self._step_kl(y0, yt, t, mean, log_var)
            # One factor for both analytic terms: a site fewer per step.
            pyro.factor("kl", -(self._prior_kl(y0) + self.steps * torch.where(later, kl, 0.0)))
            with poutine.scale(scale=float(self.steps)), poutine.mask(mask=~later):
                return pyro.sample(OBS, self.decoder(mean, log_var), obs=x)

    def sampled_guide(self, x: Tensor) -> None:
        """``t ~ U{1..T}`` and ``x_t ~ q(x_t | x_0)``: the forward process at one random step
        (auxiliary draws, masked out of the bound)."""
        y0 = self.to_chain(x)
        size = x.shape[0]
        with plate(self.data_plate, size), poutine.mask(mask=False):
            t = pyro.sample("t", UniformTime(self.steps, torch.Size([size]), x.device))
            pyro.sample("x_t", _normal(*self.process.q_marginal(y0, t)))

    def _prior_kl(self, y0: Tensor) -> Tensor:
        """``L_T = KL(q(x_T | x_0) || N(0, I))`` per datum (no parameters: a constant)."""
        last = torch.full(y0.shape[:-1], self.steps, device=y0.device)
        m, v = self.process.q_marginal(y0, last)
        return dp.normal_kl(m, v.log(), torch.zeros_like(m), torch.zeros_like(v)).sum(-1)

    def _step_kl(self, y0: Tensor, yt: Tensor, t: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
        """``KL(q(x_{t-1} | x_t, x_0) || N(mean, e^log_var))`` per datum; rows with ``t = 1``
        (``btilde_1 = 0``, the decoder's step) get a finite placeholder for the caller to drop."""
        q_mean, q_var = self.process.q_posterior(y0, yt, t)
        q_log_var = self.process.at("log_post_var", t, yt).expand_as(q_var)
        return dp.normal_kl(q_mean, q_log_var, mean, log_var).sum(-1)

    # ------------------------------------------------------------------ the bound, term by term
    def bound_terms(
        self, x: Tensor, *, timesteps: int | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Per-datum terms of ``L_vlb`` in nats: ``prior`` ``L_T``, ``diffusion``
        ``sum_{t=2}^T L_{t-1}`` and ``decoder`` ``L_0`` (each an ``[N]`` tensor).

        Every KL is analytic given one draw ``x_t ~ q(x_t | x_0)`` per datum and ``t`` (Ho et
        al.'s evaluation). ``timesteps=k`` estimates the diffusion sum from ``k`` uniform draws
        of ``t`` in ``2..T`` per datum, ``(T - 1) mean_j L_{t_j - 1}`` (unbiased); ``None``
        sums all ``T - 1`` terms.
        """
        x = self.check_x(x)
        y0 = self.to_chain(x)
        size, steps = x.shape[0], self.steps
        gen = {"generator": generator} if generator is not None else {}
        with torch.no_grad():
            prior = self._prior_kl(y0)
            one = torch.ones(size, dtype=torch.long, device=x.device)
            x1 = self.process.q_sample(y0, one, _randn(y0, gen))
            mean, log_var, _ = self.reverse(x1, one)
            decoder = -self.decoder(mean, log_var).log_prob(x)
            diffusion = torch.zeros_like(prior)
            if steps >= 2:
                if timesteps is None:
                    for step in range(2, steps + 1):
                        t = torch.full((size,), step, device=x.device)
                        diffusion += self._kl_term(y0, t, gen)
                else:
                    _positive_int(timesteps, "timesteps")
                    for _ in range(timesteps):
                        t = torch.randint(2, steps + 1, (size,), device=x.device, **gen)
                        diffusion += self._kl_term(y0, t, gen) * ((steps - 1) / timesteps)
        return {"prior": prior, "diffusion": diffusion, "decoder": decoder}

    def _kl_term(self, y0: Tensor, t: Tensor, gen: dict[str, Any]) -> Tensor:
        """``KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))`` at one ``x_t`` draw."""
        xt = self.process.q_sample(y0, t, _randn(y0, gen))
        mean, log_var, _ = self.reverse(xt, t)
        return self._step_kl(y0, xt, t, mean, log_var)

    # ------------------------------------------------------------------ derived quantities
    def log_likelihood(self, x: Tensor, params: Any = None) -> Tensor:
        """The per-datum bound ``-L_vlb(x_n) <= log p(x_n)`` (all ``T`` terms), ``[N]``."""
        terms = self.bound_terms(x)
        return -(terms["prior"] + terms["diffusion"] + terms["decoder"])

    def log_prob(self, x: Tensor) -> Tensor:
        """``-L_vlb(x_n)``, a lower bound on ``log p(x_n)`` (:meth:`log_likelihood`)."""
        return self.log_likelihood(x)

    def sample(self, n: int, params: Any = None) -> Tensor:
        """``n`` draws of ``x_0`` by ancestral sampling through all ``T`` steps."""
        from models.diffusion_sampling import ancestral

        draws = ancestral(self, n)
        assert isinstance(draws, Tensor)
        return draws


def _randn(like: Tensor, gen: dict[str, Any]) -> Tensor:
    return torch.randn(like.shape, dtype=like.dtype, device=like.device, **gen)


def _positive_int(value: Any, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
