"""A VAE with a Bayesian decoder: weight uncertainty by Bayes by Backprop.

The generative model is the :class:`~models.vae.VAE`'s with a prior on every decoder parameter
``theta`` (weights and biases)::

    theta_i ~ N(0, s^2)   (global sites "decoder.<parameter name>", s = weight_prior_scale)
    z_n ~ N(0, I_q),   x_n | z_n, theta ~ p(x | f_theta(z_n, y_n))

inferred jointly by a mean-field Gaussian guide over the weights (Blundell, Cornebise,
Kavukcuoglu & Wierstra 2015, "Weight Uncertainty in Neural Networks", arXiv:1505.05424) and the
VAE's amortised guide over the latents::

    q(theta, z | x) = prod_i N(theta_i | m_i, softplus(rho_i)^2) prod_n q_phi(z_n | x_n).

The objective is the ELBO ``E_q[log p(x | z, theta)] - KL(q(z | x) || p(z)) - KL(q(theta) ||
p(theta))``, one weight draw per step shared by the minibatch (the minibatch's data terms are
scaled by ``N/B``, the weight KL is not: it is paid once per data set). ``objective="iwae"``
takes the bound jointly over the whole minibatch once the guide samples global sites (see
:class:`probgen.infer.objectives.IWAE`), which beyond a few data points is barely tighter than
the ELBO while decoding ``K`` weight draws: the ELBO is the intended objective. ``beta != 1``
(beta-VAE) weights the latent KL only, not the weight KL.

Design choices:

* The guide means ``m`` *are* the decoder's own parameters, so ``decode``/``likelihood`` (and
  the fitted ``params_``, which :func:`probgen.fit` takes from :meth:`guide_median`) use the
  posterior-mean decoder, and every module parameter receives a gradient (no dead copies).
  ``rho`` sits in ``decoder_rho`` (same names, ``.`` replaced by ``_``).
* The guide scales start at ``weight_init_scale`` (default ``1e-2``, between the 0.0067 and 0.05
  of ``rho = -5`` and ``-3`` used by Blundell et al.): small, so the first steps train like a
  plain VAE instead of drowning the decoder in prior-sized noise; the objective then moves
  them to the posterior's scale (the weight KL widens them, the data narrow them).
* The encoder and a learned Gaussian ``obs_scale`` stay point estimates (amortised inference).
* Weights are sampled directly (no local reparameterisation trick), which works for any decoder
  (MLP or conv) through :func:`torch.func.functional_call`; ``K`` particles use ``vmap``.

Epistemic uncertainty: :meth:`decode_draws` decodes latents under ``S`` weight draws,
:meth:`predictive_spread` gives their per-pixel standard deviation and
:meth:`sample_predictive` draws data from the posterior predictive. ``sample``, ``log_prob``
and ``log_likelihood`` use the point estimate ``params_`` (plug-in), so the two agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.util import get_rng_state, set_rng_state
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from models.vae import LATENT, MIN_SCALE, OBS, VAE
from probgen.plate import plate

__all__ = ["WEIGHT_PREFIX", "BayesianVAE"]

#: Site name of decoder parameter ``name`` is ``WEIGHT_PREFIX + name`` (e.g. "decoder.0.weight").
WEIGHT_PREFIX = "decoder."


class BayesianVAE(VAE):
    """A VAE whose decoder weights have a Gaussian prior and a mean-field Gaussian posterior.

    See the module docstring for model, guide and objective. Takes every argument of
    :class:`~models.vae.VAE` plus:

    Args:
        weight_prior_scale: ``s > 0``, the prior standard deviation of every decoder parameter.
        weight_init_scale: initial standard deviation of the weight guide, ``> 0``.

    Example:
        >>> bvae = BayesianVAE(data_dim=784, latent_dim=20, hidden=(200,))
        >>> fit = probgen.fit(bvae, x, epochs=20, batch_size=128, lr=1e-3)  # doctest: +SKIP
        >>> sd = bvae.predictive_spread(torch.randn(16, 20))  # [16, 784]  # doctest: +SKIP
    """

    #: Each guide draw holds every decoder weight: keep few (memory ``S * |theta|``).
    default_num_draws: ClassVar[int] = 20

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 20,
        hidden: Sequence[int] = (400,),
        *,
        weight_prior_scale: float = 1.0,
        weight_init_scale: float = 1e-2,
        **vae_options: Any,
    ) -> None:
        super().__init__(data_dim, latent_dim, hidden, **vae_options)
        self.weight_prior_scale = _positive_real(weight_prior_scale, "weight_prior_scale")
        self.weight_init_scale = _positive_real(weight_init_scale, "weight_init_scale")
        # softplus^-1(s) = log(e^s - 1), written to neither overflow nor lose small s.
        rho = self.weight_init_scale + math.log(-math.expm1(-self.weight_init_scale))
        names = [name for name, _ in self._net("decoder").named_parameters()]
        keys = [_key(name) for name in names]
        if len(set(keys)) != len(keys):  # e.g. "a.b_c" and "a_b.c"; no torch block does this
            raise ValueError(f"decoder parameter names {names} collide once '.' becomes '_'")
        self.decoder_rho = nn.ParameterDict(
            {
                _key(name): nn.Parameter(torch.full_like(p, rho).detach())
                for name, p in self._net("decoder").named_parameters()
            }
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **super().hyperparameters(),
            "weight_prior_scale": self.weight_prior_scale,
            "weight_init_scale": self.weight_init_scale,
        }

    # ------------------------------------------------------------------ weights
    def weight_posterior(self) -> dict[str, dist.Normal]:
        """``q(theta_i) = N(m_i, (softplus(rho_i) + MIN_SCALE)^2)`` per decoder parameter.

        Keyed by site name; each is a batch of independent Normals with the parameter's shape
        (differentiable). The 1e-5 floor keeps ``log q`` finite, as for the VAE's scales.
        """
        rho: nn.ParameterDict = self._modules["decoder_rho"]  # type: ignore[assignment]
        return {
            WEIGHT_PREFIX + name: dist.Normal(m, F.softplus(rho[_key(name)]) + MIN_SCALE)
            for name, m in self._net("decoder").named_parameters()
        }

    def guide_median(self, x: Tensor | None = None, **context: Any) -> dict[str, Tensor]:
        """The guide's median (= mean) of every weight site: the decoder's parameters ``m``."""
        return {k: q.loc.detach().clone() for k, q in self.weight_posterior().items()}

    def _draw_weights(self, num_draws: int) -> dict[str, Tensor]:
        """``[S, *shape]`` guide draws of every weight site (no gradient)."""
        with torch.no_grad():
            return {k: q.sample((num_draws,)) for k, q in self.weight_posterior().items()}

    def _decode(self, z: Tensor, weights: Mapping[str, Tensor] | None) -> Tensor:
        """The decoder's output with parameters ``weights`` (site name -> value).

        A weight value may carry batch dimensions (particles, draws) in front of the parameter's
        shape; they broadcast with ``z``'s batch dimensions, right-aligned as in Pyro's plates,
        and each index of the leading block up to the last non-1 weight dimension gets its own
        decoder (``vmap``).
        """
        decoder = self._net("decoder")
        if weights is None:
            out: Tensor = decoder(z)
            return out
        shapes = {n: p.shape for n, p in decoder.named_parameters()}
        name0 = next(iter(shapes))
        w0 = weights[WEIGHT_PREFIX + name0]
        batch = w0.shape[: w0.dim() - len(shapes[name0])]
        if not any(b > 1 for b in batch):
            flat = {n: weights[WEIGHT_PREFIX + n].reshape(s) for n, s in shapes.items()}
            out = functional_call(decoder, flat, (z,))
            return out
        try:
            zbatch = torch.broadcast_shapes(batch, z.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"decoder weights with batch shape {tuple(batch)} do not broadcast with z of "
                f"shape {tuple(z.shape)} (batch dimensions right-align as in Pyro's plates)"
            ) from None
        padded = (1,) * (len(zbatch) - len(batch)) + tuple(batch)
        depth = max(i + 1 for i, b in enumerate(padded) if b > 1)
        lead, size = zbatch[:depth], math.prod(zbatch[:depth])
        flat = {
            # The weight dims right of ``depth`` are all 1: drop them, broadcast the others.
            n: weights[WEIGHT_PREFIX + n]
            .reshape(*padded[:depth], *s)
            .expand(*lead, *s)
            .reshape(size, *s)
            for n, s in shapes.items()
        }
        zs = z.expand(*zbatch, z.shape[-1]).reshape(size, *zbatch[depth:], z.shape[-1])
        out = vmap(lambda w, zi: functional_call(decoder, w, (zi,)))(flat, zs)
        return out.reshape(*lead, *out.shape[1:])

    def _likelihood(
        self, z: Tensor, y1h: Tensor | None, weights: Mapping[str, Tensor] | None = None
    ) -> dist.TorchDistribution:
        if y1h is not None:
            z = torch.cat([z, y1h.expand(*z.shape[:-1], y1h.shape[-1])], -1)
        return self._observation(self._decode(z, weights))

    # ------------------------------------------------------------------ the Pyro program
    def model(self, x: Tensor | None = None, *, n: int | None = None, y: Any = None) -> Tensor:
        """``theta ~ N(0, s^2 I)``; ``z_n ~ N(0, I)``, ``x_n ~ p(x | decoder_theta(z_n, y_n))``."""
        size = x.shape[0] if x is not None else n
        if size is None:
            raise ValueError("model needs data x or a number of draws n")
        y1h = self._labels(y, size, self.prior_loc)
        scale = self.prior_loc.new_tensor(self.weight_prior_scale)
        weights = {
            WEIGHT_PREFIX + name: pyro.sample(
                WEIGHT_PREFIX + name,
                dist.Normal(torch.zeros_like(scale), scale).expand(p.shape).to_event(p.dim()),
            )
            for name, p in self._net("decoder").named_parameters()
        }
        with plate(self.data_plate, size):
            with self._beta():
                z = pyro.sample(LATENT, dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            return pyro.sample(OBS, self._likelihood(z, y1h, weights), obs=x)

    def guide(self, x: Tensor | None = None, *, n: int | None = None, y: Any = None) -> None:
        """``theta_i ~ N(m_i, softplus(rho_i)^2)`` (global), then the VAE's ``z_n ~ q(z | x_n)``."""
        if x is None:
            raise ValueError("the guide encodes data: call guide(x), not guide(None)")
        for site, q in self.weight_posterior().items():
            pyro.sample(site, q.to_event(q.loc.dim()))
        super().guide(x, y=y)

    # ------------------------------------------------------------------ epistemic uncertainty
    def decode_draws(self, z: Tensor, num_draws: int = 20, *, y: Any = None) -> Tensor:
        """Decoded means under ``S = num_draws`` weight draws ``theta_s ~ q(theta)``.

        ``out[s, n] = E[x | z_n, y_n, theta_s]`` (pixel probabilities for Bernoulli), shape
        ``[S, N, D]``; their spread over ``s`` is the decoder's epistemic uncertainty (Blundell
        et al. 2015, "Weight Uncertainty in Neural Networks", arXiv:1505.05424).
        """
        num_draws = _count(num_draws, "num_draws")
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[-1] != self.latent_dim:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must be a tensor [N, {self.latent_dim}], got {shape}")
        y1h = self._labels(y, z.shape[0], z)
        weights = {k: v.unsqueeze(1) for k, v in self._draw_weights(num_draws).items()}
        with torch.no_grad():
            zs = z.expand(num_draws, *z.shape)
            return self._likelihood(zs, y1h, weights).mean  # type: ignore[no-any-return]

    def predictive_spread(self, z: Tensor, num_draws: int = 100, *, y: Any = None) -> Tensor:
        """Per-pixel standard deviation of the decoded mean over weight draws, ``[N, D]``.

        ``sd_s E[x | z_n, theta_s]`` (``S - 1`` normaliser) with ``theta_s ~ q(theta)``: zero for
        a point-estimated decoder, shrinking like ``1/sqrt(N_train)`` as data grow.
        """
        num_draws = _count(num_draws, "num_draws", minimum=2)
        return self.decode_draws(z, num_draws, y=y).std(0)

    def sample_predictive(self, n: int, num_draws: int = 20, *, y: Any = None) -> Tensor:
        """Posterior predictive draws: ``n`` latents, each decoded by ``S`` weight draws.

        ``z_n ~ N(0, I)``, ``theta_s ~ q(theta)``, ``x_sn ~ p(x | z_n, y_n, theta_s)``; shape
        ``[S, n, D]``. Each ``x_sn`` is marginally a draw of ``int p(x | theta) q(theta)``.
        """
        n = _count(n, "n")
        num_draws = _count(num_draws, "num_draws")
        y1h = self._labels(y, n, self.prior_loc)
        weights = {k: v.unsqueeze(1) for k, v in self._draw_weights(num_draws).items()}
        with torch.no_grad():
            z = self.latent_prior().sample((n,)).expand(num_draws, n, self.latent_dim)
            return self._likelihood(z, y1h, weights).sample()  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ plug-in quantities
    def sample(self, n: int, params: Any = None, *, y: Any = None) -> Tensor:
        """``n`` draws of ``x`` with the weights fixed to ``params`` (default ``params_``)."""
        n = _count(n, "n")
        point = self._point(params)
        with torch.no_grad():
            conditioned = poutine.condition(self.model, data=dict(point))
            trace = poutine.trace(conditioned).get_trace(None, n=n, y=y)
        value = trace.nodes[OBS]["value"]
        assert isinstance(value, Tensor)
        return value

    def log_likelihood(self, x: Tensor, params: Any = None, *, y: Any = None) -> Tensor:
        """``log p(x_n | theta)`` with the weights fixed to ``params`` (default ``params_``).

        ``log p(x_n | theta) ~= log (1/K) sum_k p(x_n, z_k | theta) / q(z_k | x_n)`` with
        ``K = num_is_particles`` (Burda et al. 2016, arXiv:1509.00519) through
        :func:`probgen.evaluate.log_likelihood_pointwise`, which conditions model and guide on
        the model's ``params_``. Leading batch dimensions of ``params`` (e.g. ``[chain, draw]``)
        appear in front of the result, ``batch + [N]``; every parameter set is evaluated with
        the same random draws (common random numbers).
        """
        from probgen import evaluate

        point = self._point(params)
        x = self.check_x(x)
        context = None if y is None else {"y": y}
        shapes = {WEIGHT_PREFIX + k: p.shape for k, p in self._net("decoder").named_parameters()}
        missing = sorted(set(shapes) - set(point))
        if missing:
            raise ValueError(f"params lacks the weight site(s) {missing}; it has {sorted(point)}")
        name0 = next(iter(shapes))
        batch = point[name0].shape[: point[name0].dim() - len(shapes[name0])]
        for k, s in shapes.items():
            if tuple(point[k].shape) != (*batch, *s):
                raise ValueError(
                    f"params[{k!r}] has shape {tuple(point[k].shape)}; expected (*batch, "
                    f"{', '.join(map(str, s))}) with batch {tuple(batch)}"
                )
        flat = {k: point[k].reshape(-1, *s) for k, s in shapes.items()}
        saved, out, rng = self.params_, [], get_rng_state()
        try:
            for i in range(math.prod(batch)):
                # Common random numbers: every parameter set sees the same latent draws, so
                # differences across sets are the parameters', not Monte Carlo noise.
                set_rng_state(rng)
                # evaluate conditions model and guide on params_: set it to each parameter set.
                self.params_ = {k: v[i] for k, v in flat.items()}
                out.append(
                    evaluate.log_likelihood_pointwise(
                        self, x, num_particles=self.num_is_particles, context=context
                    )
                )
        finally:
            self.params_ = saved
        return torch.stack(out).reshape(*batch, x.shape[0])


def _key(name: str) -> str:
    return name.replace(".", "_")


def _positive_real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a positive real number, got {type(value).__name__}")
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def _count(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
