"""The contract every probgen family implements: a Pyro ``model``/``guide`` pair.

A family writes ``model(x)`` (how data are generated) and, optionally, ``guide(x)`` (how its
latents are inferred). Everything else (``sample``, ``log_likelihood``, ``log_prob``) is derived
here once, and overridden only where a family knows a closed form.

Conventions shared by all families (and by plain Pyro functions given to :func:`probgen.fit`):

* the observed site is named ``obs_site`` (default ``"obs"``);
* per-datum sites live inside a plate named ``data_plate`` (default ``"data"``), which is how the
  engines scale minibatches and compute pointwise log-likelihoods;
* every other latent site is *global*; a fitted model keeps a point estimate of them in
  ``params_`` (site name -> constrained value).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule, pyro_method
from torch import Tensor

from probgen.infer import pointwise

__all__ = ["GenerativeModel", "NotFittedError"]

# Module-local parameters: two fitted models (or a model and its guide) never share Pyro's global
# parameter store, so they can live side by side in one process.
pyro.settings.set(module_local_params=True)


class NotFittedError(RuntimeError):
    """Raised when a fitted quantity is asked of a model that has not been fitted."""


class GenerativeModel(PyroModule):
    """A generative model as a Pyro program pair.

    Subclasses implement :meth:`model` and may implement :meth:`guide`; when they do not, the
    inference engines use an automatic guide. Capabilities are declared as class attributes, never
    sniffed:

    * ``supports_em``: the family provides closed-form EM steps (``em_prepare``, ``em_init``,
      ``em_e_step``, ``em_m_step``, ``em_params``), used by ``fit(..., method="em")``;
    * ``exact_log_likelihood``: :meth:`log_likelihood` is exact, not an importance-sampled
      estimate.

    Attributes:
        params_: point estimate of the global latent sites after :func:`probgen.fit` (the EM/MAP
            optimum, the guide's median of a variational fit, or the posterior mean of NUTS draws).
            It is saved by ``state_dict()`` and follows ``.to(device/dtype)`` like a buffer.
    """

    obs_site: ClassVar[str] = "obs"
    data_plate: ClassVar[str] = "data"
    supports_em: ClassVar[bool] = False
    exact_log_likelihood: ClassVar[bool] = False
    #: Whether ``model(None, n=...)`` generates data (used for posterior predictive draws).
    can_generate: bool = True
    #: Particles of the importance-sampled log-likelihood used when no closed form exists.
    num_is_particles: ClassVar[int] = 1000
    #: Guide draws ``fit(method="svi")`` keeps by default (families with many global sites,
    #: e.g. Bayesian network weights, lower it to bound memory).
    default_num_draws: ClassVar[int] = 1000

    def __init__(self) -> None:
        super().__init__()
        self.params_: dict[str, Tensor] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Run model/guide inside the module's Pyro context, so that parameters they create live
        # in this module (module-local parameters), not in Pyro's global store.
        for name in ("model", "guide"):
            if name in cls.__dict__:
                setattr(cls, name, pyro_method(cls.__dict__[name]))

    # ----------------------------------------------------------------- the two programs
    def model(self, x: Tensor | None = None, *, n: int | None = None) -> Tensor:
        """Generates ``x`` (``n`` points when ``x`` is None) or scores an observed ``x``."""
        raise NotImplementedError(f"{type(self).__name__} must implement model(x)")

    def guide(self, x: Tensor | None = None, *, n: int | None = None) -> None:
        """Proposes the latent sites given ``x``; families without one use an autoguide."""
        raise NotImplementedError(f"{type(self).__name__} has no hand-written guide")

    def has_guide(self) -> bool:
        """Whether the family writes its own guide (otherwise engines build an autoguide)."""
        return type(self).guide is not GenerativeModel.guide

    def setup(self, x: Tensor, **context: Tensor) -> None:
        """Sets data-dependent hyperparameters once, from the full training data.

        ``context`` holds the per-datum conditioning inputs given to :func:`probgen.fit` (e.g.
        a conditional VAE's labels), for families that check or use them.

        Called by :func:`probgen.fit` before any inference. Doing it here rather than inside
        :meth:`model` keeps the prior fixed when the engines feed minibatches.
        """

    def init_values(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor] | None:
        """Initial values of the global sites for optimisers and samplers (None: Pyro's default)."""
        return None

    def site_dims(self) -> dict[str, list[str]]:
        """Names of the dimensions of each global site (for ArviZ); default: none."""
        return {}

    def canonicalize(self, draws: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Maps draws to a canonical labelling (e.g. sorts mixture components); default: as is."""
        return dict(draws)

    # ----------------------------------------------------------------- derived quantities
    def _point(self, params: Mapping[str, Tensor] | None) -> Mapping[str, Tensor]:
        if params is not None:
            return params
        if self.params_ is None:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call probgen.fit(model, data, ...) first "
                "or pass params={site: value}"
            )
        return self.params_

    def log_likelihood(self, x: Tensor, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """Pointwise ``log p(x_n | theta)`` with the global sites fixed to ``params``.

        Local latents are summed out exactly when they are all discrete (enumeration); otherwise
        ``log p(x_n | theta) ~= log (1/S) sum_s p(x_n, z_s | theta) / q(z_s | x_n)`` with
        ``S = num_is_particles`` draws from the guide (Burda et al. 2016, arXiv:1509.00519).

        Args:
            x: data, ``[N, ...]``.
            params: global site values; leading batch dimensions (e.g. ``[chain, draw]``) are
                allowed and appear in front of the result. Defaults to ``params_``.

        Returns:
            Tensor of shape ``batch + [N]``.
        """
        return pointwise.log_likelihood(self, x, self._point(params))

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x_n)`` under the fitted point estimate, one value per row of ``x``."""
        return self.log_likelihood(x)

    def sample(self, n: int, params: Mapping[str, Tensor] | None = None) -> Tensor:
        """Draws ``n`` new data points from the model with the global sites fixed to ``params``."""
        if n < 1:
            raise ValueError(f"n must be a positive number of samples, got {n}")
        conditioned = poutine.condition(self.model, data=dict(self._point(params)))
        trace = poutine.trace(conditioned).get_trace(None, n=n)
        value = trace.nodes[self.obs_site]["value"]
        assert isinstance(value, Tensor), f"the model did not generate site {self.obs_site!r}"
        return value

    # ----------------------------------------------------------------- persistence and moves
    def get_extra_state(self) -> dict[str, Any]:
        """Puts ``params_`` in ``state_dict()`` (under ``_extra_state``).

        The point estimate is fitted state like a buffer, but a dict keyed by Pyro site names
        (which may contain dots, forbidden in buffer names). A dict of tensors (or None) keeps
        the checkpoint loadable with ``torch.load(path, weights_only=True)``.
        """
        return {"params_": None if self.params_ is None else dict(self.params_)}

    def set_extra_state(self, state: Any) -> None:
        """Restores ``params_`` from :meth:`get_extra_state`'s dict (``load_state_dict``)."""
        if not isinstance(state, Mapping) or "params_" not in state:
            raise ValueError(
                f"extra state of {type(self).__name__} must be a dict with key 'params_', "
                f"got {type(state).__name__}"
            )
        params = state["params_"]
        self.params_ = None if params is None else dict(params)

    def _apply(self, fn: Any, recurse: bool = True) -> GenerativeModel:
        # ``.to(device/dtype)``, ``.double()``, ``.cuda()`` all funnel through ``_apply``: moving
        # ``params_`` here keeps the point estimate on the module's device and dtype.
        super()._apply(fn, recurse)
        if self.params_ is not None:
            self.params_ = {k: fn(v) for k, v in self.params_.items()}
        return self

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments (scikit-learn's ``get_params``), for repr and factories."""
        return {}
