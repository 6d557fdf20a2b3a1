"""Variational autoencoders as Pyro programs: VAE, beta-VAE, conditional VAE, IAF guides.

The generative model (Kingma & Welling 2014, "Auto-Encoding Variational Bayes", arXiv:1312.6114)::

    z_n ~ N(0, I_q),   x_n | z_n ~ p_theta(x | f_theta(z_n, y_n))

with a decoder network ``f_theta`` and a likelihood ``p`` chosen by name:

* ``"bernoulli"``: binary data, ``p = Bernoulli(logits = f)``;
* ``"continuous_bernoulli"``: data in ``[0, 1]`` (Loaiza-Ganem & Cunningham 2019, "The continuous
  Bernoulli: fixing a pervasive error in variational autoencoders", arXiv:1907.06845);
* ``"gaussian"``: ``N(f, sigma^2)`` with a fixed ``sigma`` or, with ``obs_scale="learned"``, one
  learned ``sigma_d`` per data dimension (Rybkin, Daniilidis & Levine 2021, "Simple and Effective
  VAE Training with Calibrated Decoders", arXiv:2006.13202).

The guide is the amortised Gaussian ``q_phi(z_n | x_n, y_n) = N(mu_phi, diag sigma_phi^2)``,
optionally refined by ``flow_layers`` inverse autoregressive flow steps conditioned on the
encoder's features (Kingma et al. 2016, "Improved Variational Inference with Inverse
Autoregressive Flow", arXiv:1606.04934), so ``log q`` of its own draws stays exact.

``beta != 1`` weights the latent site by ``beta`` in model and guide, i.e. the objective is
``E_q[log p(x | z)] - beta KL(q(z | x) || p(z))`` (Higgins et al. 2017, "beta-VAE", ICLR).
``n_classes`` makes the model a conditional VAE (Sohn, Lee & Yan 2015, "Learning Structured Output
Representation using Deep Conditional Generative Models", NeurIPS): labels ``y`` enter encoder
and decoder, and are passed as ``probgen.fit(vae, x, context={"y": labels})``.

Training is ``probgen.fit(vae, x, method="svi", ...)``: the ELBO by default, the per-datum IWAE
bound with ``objective="iwae", num_particles=K`` (Burda et al. 2016, arXiv:1509.00519).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro import poutine
from pyro.nn import ConditionalAutoRegressiveNN
from torch import Tensor, nn
from torch.nn import functional as F

from probgen import GenerativeModel
from probgen import nn as pnn
from probgen.plate import plate
from probgen.validation import check_data, is_binary

__all__ = ["LATENT", "LIKELIHOODS", "OBS", "VAE"]

LATENT, OBS = "z", "obs"
LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")
NETWORKS = ("mlp", "conv")
FLOWS = ("iaf",)
#: Floor added to the softplus scales of encoder and decoder: a scale that underflows to 0 would
#: make ``log q`` infinite, and 1e-5 is far below any scale a fitted model uses.
MIN_SCALE = 1e-5


class VAE(GenerativeModel):
    """A variational autoencoder (see the module docstring for the model and guide).

    Args:
        data_dim: ``D``, the width of a (flattened) datum.
        latent_dim: ``q >= 1``.
        hidden: hidden widths of the encoder MLP (the decoder mirrors them); ``()`` makes
            encoder and decoder linear (with a Gaussian likelihood: PPCA with an amortised
            guide). With ``network="conv"`` only ``hidden[-1]`` is used, as the encoder's
            feature width.
        likelihood: one of :data:`LIKELIHOODS`.
        obs_scale: the Gaussian likelihood's ``sigma`` (a positive float) or ``"learned"``.
        beta: weight of the KL term (``beta > 0``; 1 is the plain VAE).
        n_classes: number of classes of the labels ``y`` of a conditional VAE (None: unconditional).
        network: ``"mlp"`` or ``"conv"`` (needs ``image_shape``).
        image_shape: ``(H, W)`` or ``(C, H, W)`` of a datum, for conv nets and image plots.
        activation: hidden activation, a name in :data:`probgen.nn.ACTIVATIONS`.
        flow: None or ``"iaf"``: refine the Gaussian guide by inverse autoregressive flows.
        flow_layers: number of IAF steps.

    Example:
        >>> vae = VAE(data_dim=784, latent_dim=50, hidden=(400,))
        >>> fit = probgen.fit(vae, x, epochs=10, batch_size=128, lr=1e-3)  # doctest: +SKIP
    """

    latent_site: ClassVar[str] = LATENT
    #: Particles of :meth:`log_likelihood` (importance sampling).
    num_is_particles: ClassVar[int] = 1000

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 20,
        hidden: Sequence[int] = (400,),
        *,
        likelihood: str = "bernoulli",
        obs_scale: float | str = 1.0,
        beta: float = 1.0,
        n_classes: int | None = None,
        network: str = "mlp",
        image_shape: Sequence[int] | None = None,
        activation: str = "relu",
        flow: str | None = None,
        flow_layers: int = 2,
    ) -> None:
        super().__init__()
        _positive_int(data_dim, "data_dim")
        _positive_int(latent_dim, "latent_dim")
        _choice(likelihood, "likelihood", LIKELIHOODS)
        _choice(network, "network", NETWORKS)
        _choice(activation, "activation", tuple(pnn.ACTIVATIONS))
        hidden = tuple(hidden)
        if not hidden and network == "conv":
            raise ValueError("network='conv' needs hidden=(width,) for the encoder's features")
        for h in hidden:
            _positive_int(h, "hidden widths")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise ValueError(f"beta must be a positive number, got {beta!r}")
        if n_classes is not None:
            _positive_int(n_classes, "n_classes", minimum=2)
        if flow is not None:
            _choice(flow, "flow", FLOWS)
            _positive_int(flow_layers, "flow_layers")
        if image_shape is not None:
            image_shape = tuple(image_shape)
            size = 1
            for s in image_shape:
                size *= s
            if size != data_dim:
                raise ValueError(
                    f"image_shape {image_shape} has {size} pixels, not data_dim={data_dim}"
                )
        elif network == "conv":
            raise ValueError("network='conv' needs image_shape=(H, W) or (C, H, W)")
        self.data_dim = self.dim_ = data_dim
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.likelihood_name = likelihood
        self.obs_scale = obs_scale
        self.beta = float(beta)
        self.n_classes = n_classes
        self.network = network
        self.image_shape = image_shape
        self.activation = activation
        self.flow = flow
        self.flow_layers = flow_layers

        c = n_classes or 0
        features = hidden[-1] if hidden else data_dim
        if not hidden:  # linear encoder and decoder (a linear VAE: PPCA's model, amortised)
            self.encoder = nn.Identity()
            self.decoder = pnn.mlp(latent_dim + c, (), data_dim)
        elif network == "mlp":
            body = pnn.mlp(data_dim, hidden[:-1], features, activation)
            self.encoder = nn.Sequential(body, pnn.ACTIVATIONS[activation]())
            self.decoder = pnn.mlp(latent_dim + c, hidden[::-1], data_dim, activation)
        else:
            assert image_shape is not None
            body = pnn.ConvEncoder(image_shape, features, activation=activation)
            self.encoder = nn.Sequential(body, pnn.ACTIVATIONS[activation]())
            self.decoder = pnn.ConvDecoder(latent_dim + c, image_shape, activation=activation)
        self.encoder_head = nn.Linear(features + c, 2 * latent_dim)
        if flow is not None:
            self.flows = nn.ModuleList(
                T.ConditionalAffineAutoregressive(
                    ConditionalAutoRegressiveNN(latent_dim, features + c, [2 * latent_dim + 2] * 2),
                    stable=True,
                )
                for _ in range(flow_layers)
            )
        if likelihood != "gaussian" and obs_scale != 1.0:
            raise ValueError(f"obs_scale is an option of likelihood='gaussian', not {likelihood!r}")
        if likelihood == "gaussian":
            if obs_scale == "learned":
                self.obs_log_scale = nn.Parameter(torch.zeros(data_dim))
            elif (
                isinstance(obs_scale, bool)
                or not isinstance(obs_scale, (int, float))
                or not obs_scale > 0
            ):
                raise ValueError(
                    f"obs_scale must be a positive float or 'learned', got {obs_scale!r}"
                )
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "data_dim": self.data_dim,
            "latent_dim": self.latent_dim,
            "hidden": self.hidden,
            "likelihood": self.likelihood_name,
            "beta": self.beta,
            "n_classes": self.n_classes,
            "network": self.network,
            "flow": self.flow,
        }

    # ------------------------------------------------------------------ data and context
    def check_x(self, x: Any, name: str = "x") -> Tensor:
        """``x`` as ``[N, D]`` data in the likelihood's support (clear errors otherwise).

        The value checks are single passes without full-size temporaries: on the 50,000 x 784
        MNIST training set they cost milliseconds, not a noticeable part of an epoch.
        """
        if self.likelihood_name == "bernoulli":
            x = check_data(x, name, ndim=2, dim=self.data_dim, finite=False)
            if is_binary(x):  # implies finite and in [0, 1]: one pass instead of three
                return x
            x = check_data(x, name)  # NaN/inf get check_data's error
        else:
            x = check_data(x, name, ndim=2, dim=self.data_dim)
        if self.likelihood_name != "gaussian":
            lo, hi = (float(v) for v in torch.aminmax(x))
            if lo < 0 or hi > 1:
                raise ValueError(
                    f"{name} must lie in [0, 1] for likelihood={self.likelihood_name!r}; got "
                    f"values in [{lo:.3g}, {hi:.3g}] (scale images by 1/255)"
                )
            if self.likelihood_name == "bernoulli":
                raise ValueError(
                    f"{name} must be binary (0/1) for likelihood='bernoulli'; binarize it (e.g. "
                    "probgen.data.load_mnist_idx(..., binarize='threshold')) or use "
                    "likelihood='continuous_bernoulli' for values in [0, 1]"
                )
        return x

    def _labels(self, y: Any, n: int, like: Tensor) -> Tensor | None:
        """One-hot ``[n, C]`` labels (or None for an unconditional model)."""
        if self.n_classes is None:
            if y is not None:
                raise ValueError("y was given, but this VAE is unconditional (n_classes=None)")
            return None
        if y is None:
            raise ValueError(
                f"this VAE is conditional (n_classes={self.n_classes}): pass labels y=... "
                "(probgen.fit(vae, x, context={'y': labels}))"
            )
        y = torch.as_tensor(y, device=like.device)
        if y.dim() == 0:
            y = y.expand(n)
        if y.shape[0] != n:
            raise ValueError(
                f"y must have {n} rows (one label per datum), got shape {tuple(y.shape)}"
            )
        if y.dim() == 2 and y.shape[1] == self.n_classes and y.is_floating_point():
            return y.to(like.dtype)
        if y.dim() != 1 or y.is_floating_point() or y.min() < 0 or y.max() >= self.n_classes:
            raise ValueError(
                f"y must be integer labels in [0, {self.n_classes}) of shape [N] or one-hot "
                f"floats [N, {self.n_classes}]; got dtype {y.dtype}, shape {tuple(y.shape)}"
            )
        return F.one_hot(y, self.n_classes).to(like.dtype)

    def setup(self, x: Tensor, **context: Tensor) -> None:
        """Checks the data and labels; networks take the data's dtype."""
        x = self.check_x(x, "data")
        self._labels(context.get("y"), x.shape[0], x)
        unknown = set(context) - {"y"}
        if unknown:
            raise ValueError(f"unknown context {sorted(unknown)}; a VAE takes only 'y' (labels)")
        self.to(x.dtype)

    # ------------------------------------------------------------------ networks
    def _net(self, name: str) -> nn.Module:
        # Direct lookup: PyroModule.__getattr__ would emit a Pyro param message per weight on
        # every access, which is pure overhead here (the engines collect parameters from the
        # module itself).
        module: nn.Module = self._modules[name]  # type: ignore[assignment]
        return module

    def _encode(self, x: Tensor, y1h: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        features = self._net("encoder")(x)
        if y1h is not None:
            features = torch.cat([features, y1h], -1)
        loc, raw = self._net("encoder_head")(features).chunk(2, -1)
        return loc, F.softplus(raw) + MIN_SCALE, features

    def _posterior(self, x: Tensor, y1h: Tensor | None) -> dist.TorchDistribution:
        loc, scale, features = self._encode(x, y1h)
        base = _unchecked(dist.Normal(loc, scale, validate_args=False))
        if self.flow is None:
            return base
        flows = [t.condition(features) for t in self._net("flows")]  # type: ignore[attr-defined]
        return dist.TransformedDistribution(base, flows)

    def _likelihood(self, z: Tensor, y1h: Tensor | None) -> dist.TorchDistribution:
        if y1h is not None:
            z = torch.cat([z, y1h.expand(*z.shape[:-1], y1h.shape[-1])], -1)
        return self._observation(self._net("decoder")(z))

    def _observation(self, out: Tensor) -> dist.TorchDistribution:
        """The likelihood's distribution given the decoder's raw output (logits or means).

        Argument validation is off here and in the guide's Gaussian: the data are checked once
        by :meth:`check_x` (``fit``, ``log_likelihood`` and ``probgen.evaluate`` call it), the
        scales are positive by construction, and a non-finite network output surfaces as a
        non-finite loss that ``fit`` reports; re-checking every minibatch costs ~10% of a step.
        """
        if self.likelihood_name == "bernoulli":
            return _unchecked(dist.Bernoulli(logits=out, validate_args=False))
        if self.likelihood_name == "continuous_bernoulli":
            return _unchecked(dist.ContinuousBernoulli(logits=out, validate_args=False))
        if self.obs_scale == "learned":
            scale = self.obs_log_scale.exp().expand(out.shape)
        else:
            scale = out.new_tensor(float(self.obs_scale)).expand(out.shape)  # type: ignore[arg-type]
        return _unchecked(dist.Normal(out, scale, validate_args=False))

    def _beta(self) -> Any:
        return poutine.scale(scale=self.beta) if self.beta != 1.0 else contextlib.nullcontext()

    # ------------------------------------------------------------------ the Pyro program
    def model(self, x: Tensor | None = None, *, n: int | None = None, y: Any = None) -> Tensor:
        """``z_n ~ N(0, I)``, ``x_n ~ p(x | decoder(z_n, y_n))`` for ``n`` or ``len(x)`` data."""
        size = x.shape[0] if x is not None else n
        if size is None:
            raise ValueError("model needs data x or a number of draws n")
        y1h = self._labels(y, size, self.prior_loc)
        with plate(self.data_plate, size):
            with self._beta():
                z = pyro.sample(LATENT, self.latent_prior())
            return pyro.sample(OBS, self._likelihood(z, y1h), obs=x)

    def guide(self, x: Tensor | None = None, *, n: int | None = None, y: Any = None) -> None:
        """``z_n ~ q(z | x_n, y_n)``: the encoder's Gaussian, through the IAF steps if any."""
        if x is None:
            raise ValueError("the guide encodes data: call guide(x), not guide(None)")
        posterior = self._posterior(x, self._labels(y, x.shape[0], x))
        with plate(self.data_plate, x.shape[0]):
            with self._beta():
                pyro.sample(LATENT, posterior)

    # ------------------------------------------------------------------ latent-model protocol
    def encode(self, x: Tensor, y: Any = None) -> Tensor:
        """The encoder's Gaussian mean ``mu_phi(x, y)``, ``[N, q]`` (before any flow step)."""
        x = self.check_x(x)
        with torch.no_grad():
            return self._encode(x, self._labels(y, x.shape[0], x))[0]

    def posterior(self, x: Tensor, y: Any = None) -> dist.TorchDistribution:
        """``q(z | x, y)``: batch ``[N]``, event ``[q]`` (a transformed one with a flow guide)."""
        x = self.check_x(x)
        return self._posterior(x, self._labels(y, x.shape[0], x))

    def latent_prior(self) -> dist.TorchDistribution:
        """``p(z) = N(0, I_q)`` (built once per device/dtype: the model asks for it every step)."""
        loc, scale = self._buffers["prior_loc"], self._buffers["prior_scale"]
        cached = self.__dict__.get("_prior_cache")
        # ``.to()`` replaces the buffers (a new identity); load_state_dict copies into them in
        # place, which the distribution, holding the same tensors, sees.
        if cached is None or cached[0] is not loc or cached[1] is not scale:
            cached = (loc, scale, dist.Normal(loc, scale).to_event(1))
            self.__dict__["_prior_cache"] = cached
        prior: dist.TorchDistribution = cached[2]
        return prior

    def likelihood(self, z: Tensor, y: Any = None) -> dist.TorchDistribution:
        """``p(x | z, y)``: batch ``[N]``, event ``[D]``; its ``.mean`` is the decoded mean."""
        if not isinstance(z, Tensor) or z.dim() < 1 or z.shape[-1] != self.latent_dim:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must be a tensor [..., {self.latent_dim}], got {shape}")
        n = z.shape[0] if z.dim() > 1 else 1
        y1h = self._labels(y, n, z)
        return self._likelihood(z, y1h)

    def decode(self, z: Tensor, y: Any = None) -> Tensor:
        """The mean of ``p(x | z, y)`` (pixel probabilities for Bernoulli), ``[N, D]``."""
        with torch.no_grad():
            return self.likelihood(z, y).mean  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ derived quantities
    def sample(self, n: int, params: Any = None, *, y: Any = None) -> Tensor:
        """``n`` draws of ``x`` (given labels ``y`` for a conditional VAE)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive number of samples, got {n!r}")
        self._point(params)
        with torch.no_grad():
            trace = poutine.trace(self.model).get_trace(None, n=n, y=y)
        value: Tensor = trace.nodes[OBS]["value"]
        return value

    def log_likelihood(self, x: Tensor, params: Any = None, *, y: Any = None) -> Tensor:
        """``log p(x_n)`` by importance sampling from the guide, ``num_is_particles`` draws.

        ``L_K(x_n) = log (1/K) sum_k p(x_n, z_k) / q(z_k | x_n)`` (Burda et al. 2016); see
        :func:`probgen.evaluate.log_likelihood_pointwise`, which also gives its batching.
        """
        from probgen import evaluate

        self._point(params)  # evaluate checks x with check_x
        context = None if y is None else {"y": y}
        return evaluate.log_likelihood_pointwise(
            self, x, num_particles=self.num_is_particles, context=context
        )

    def log_prob(self, x: Tensor, *, y: Any = None) -> Tensor:
        """``log p(x_n)`` (importance-sampled, :meth:`log_likelihood`)."""
        return self.log_likelihood(x, y=y)


def _unchecked(base: dist.TorchDistribution) -> dist.TorchDistribution:
    """``base.to_event(1)`` without argument or support validation (see ``VAE._observation``)."""
    return dist.Independent(base, 1, validate_args=False)


def _positive_int(value: Any, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _choice(value: Any, name: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")
