"""Probabilistic PCA and factor analysis: the linear-Gaussian latent-variable model.

The model (Tipping & Bishop 1999; Bishop 2006, section 12.2)::

    z_n ~ N(0, I_q)
    x_n | z_n ~ N(W z_n + mu, Psi),   Psi = sigma^2 I ("isotropic": PPCA)
                                      Psi = diag(psi)  ("diagonal": factor analysis)

so that ``x_n ~ N(mu, W W^T + Psi)`` exactly (:meth:`PPCA.log_likelihood`). The global sites
``W`` (``"loadings"``, ``[D, q]``), ``mu`` (``"loc"``, ``[D]``) and ``Psi`` (``"noise_variance"``,
scalar or ``[D]``) have *flat* priors: every engine's point estimate is then the maximum-likelihood
one that PPCA and factor analysis define. (The flat priors are proper distributions masked out of
every density, so that the program can still simulate from them.) ``W`` is identified only up to
a rotation ``W R`` of the latent space.

Fitting:

* closed form (PPCA only): :meth:`PPCA.fit_closed_form`, the eigendecomposition of the sample
  covariance (Tipping & Bishop 1999, eqs. 7-8);
* ``probgen.fit(model, x, method="em")``: EM with the exact posterior of ``z`` (Tipping & Bishop
  1999, eqs. 27-28; Rubin & Thayer 1982 for factor analysis), kernels in :mod:`models.ppca_em`;
* ``probgen.fit(model, x, method="svi")``: the family's guide is a point mass on the globals and
  the *exact* posterior ``q(z_n | x_n) = p(z_n | x_n, W, mu, Psi)``, so every single-draw ELBO
  ``log p(x, z) - log q(z | x)`` equals ``log p(x | W, mu, Psi)``: SVI is maximum likelihood by
  gradient ascent with zero-variance gradients. ``method="map"`` would put a
  point mass on every ``z_n`` too, which degenerates (``Psi -> 0``): use ``"em"`` or ``"svi"``.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam
from torch import Tensor

from models import ppca_em
from probgen import GenerativeModel
from probgen.plate import plate
from probgen.validation import check_data

__all__ = ["LATENT", "LOADINGS", "LOC", "NOISE", "OBS", "PPCA"]

LOADINGS, LOC, NOISE, LATENT, OBS = "loadings", "loc", "noise_variance", "z", "obs"
_INITS = ("pca", "random")


class PPCA(GenerativeModel):
    """Probabilistic PCA (``noise="isotropic"``) or factor analysis (``noise="diagonal"``).

    Args:
        n_components: latent dimension ``q``, ``1 <= q < D``.
        noise: ``"isotropic"`` (``sigma^2 I``, PPCA) or ``"diagonal"`` (``diag(psi)``, FA).
        init: start of EM and SVI: ``"pca"`` (the closed-form PPCA solution; deterministic, so
            EM restarts coincide) or ``"random"`` (random loadings; see
            :func:`models.ppca_em.initialize`).

    Example:
        >>> ppca = PPCA(n_components=2)
        >>> ppca.fit_closed_form(x)  # doctest: +SKIP
        >>> fa = PPCA(n_components=2, noise="diagonal")
        >>> probgen.fit(fa, x, method="em", tol=1e-8)  # doctest: +SKIP
        >>> fa.encode(x), fa.sample(100)  # doctest: +SKIP

    References:
        Tipping & Bishop, "Probabilistic principal component analysis", JRSS B 61(3), 1999.
        Rubin & Thayer, "EM algorithms for ML factor analysis", Psychometrika 47(1), 1982.
    """

    supports_em = True
    exact_log_likelihood = True
    obs_site = OBS
    #: The per-datum latent's site name (the :class:`probgen.latent.LatentModel` protocol).
    latent_site = LATENT

    def __init__(self, n_components: int = 2, noise: str = "isotropic", *, init: str = "pca"):
        super().__init__()
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"n_components must be an integer >= 1, got {n_components!r}")
        if noise not in ppca_em.NOISE_TYPES:
            raise ValueError(
                f"noise must be one of {', '.join(ppca_em.NOISE_TYPES)}; got {noise!r}"
            )
        if init not in _INITS:
            raise ValueError(f"init must be one of {', '.join(_INITS)}; got {init!r}")
        self.n_components = n_components
        self.noise = noise
        self.init = init
        self.dim_: int | None = None

    def hyperparameters(self) -> dict[str, Any]:
        return {"n_components": self.n_components, "noise": self.noise, "init": self.init}

    # ------------------------------------------------------------------ the Pyro program
    def _check_data(self, x: Tensor, name: str, dim: int | None = None) -> Tensor:
        return check_data(x, name, ndim=2, dim=dim)

    def setup(self, x: Tensor, **context: Tensor) -> None:
        """Checks the data, sets the prior-simulation scale and (re)starts the guide.

        The guide's point estimates start from :meth:`init_values`, drawn with Pyro's global
        seed (which :func:`probgen.fit` sets from its ``seed``).

        Raises:
            ValueError: ``x`` is not ``[N, D]`` with ``N >= 2`` finite rows, or
                ``n_components >= D``.
        """
        x = self._check_data(x, "data")
        n, d = x.shape
        if self.n_components >= d:
            raise ValueError(
                f"n_components={self.n_components} must be smaller than the data dimension "
                f"D={d} (a latent space as large as the data leaves no noise to model)"
            )
        if n < 2:
            raise ValueError(f"data must have at least 2 rows to estimate a covariance, got {n}")
        self.dim_ = d
        std = x.std(0)
        self.register_buffer("prior_loc", x.mean(0))
        self.register_buffer("prior_scale", torch.where(std > 0, std, torch.ones_like(std)))
        seed = int(torch.randint(2**62, (), device="cpu"))
        start = self.init_values(x, torch.Generator(device=x.device).manual_seed(seed))
        self.guide_loadings = PyroParam(start[LOADINGS])
        self.guide_loc = PyroParam(start[LOC])
        self.guide_noise = PyroParam(start[NOISE], constraint=dist.constraints.positive)

    def _check_setup(self) -> int:
        if self.dim_ is None:
            raise RuntimeError("call setup(x) (probgen.fit does) before running the model")
        return self.dim_

    def _noise_shape(self) -> tuple[int, ...]:
        return () if self.noise == "isotropic" else (self._check_setup(),)

    def model(self, x: Tensor | None = None, *, n: int | None = None) -> Tensor:
        d, q = self._check_setup(), self.n_components
        n = x.shape[0] if x is not None else n
        s0 = self.prior_scale
        # Flat priors: the masked proper laws only serve prior simulation (see module docstring).
        loadings = pyro.sample(
            LOADINGS, dist.Normal(0.0, s0[:, None].expand(d, q) / q**0.5).to_event(2).mask(False)
        )
        loc = pyro.sample(LOC, dist.Normal(self.prior_loc, s0).to_event(1).mask(False))
        var = s0.square().mean().expand(self._noise_shape())
        noise = pyro.sample(NOISE, dist.LogNormal(var.log(), 1.0).to_event(var.dim()).mask(False))
        with plate(self.data_plate, n):
            z = pyro.sample(LATENT, dist.Normal(s0.new_zeros(q), 1.0).to_event(1))
            var_x = noise.unsqueeze(-1) if self.noise == "isotropic" else noise
            scale = var_x.sqrt().expand(loc.shape)
            return pyro.sample(OBS, dist.Normal(z @ loadings.mT + loc, scale).to_event(1), obs=x)

    def guide(self, x: Tensor | None = None, *, n: int | None = None) -> None:
        """Point masses on ``W, mu, Psi`` and the exact posterior ``p(z_n | x_n, W, mu, Psi)``."""
        loadings = pyro.sample(LOADINGS, dist.Delta(self.guide_loadings, event_dim=2))
        loc = pyro.sample(LOC, dist.Delta(self.guide_loc, event_dim=1))
        noise = pyro.sample(NOISE, dist.Delta(self.guide_noise, event_dim=len(self._noise_shape())))
        if x is None:
            return
        params = ppca_em.PPCAParams(loadings, loc, noise.expand(loc.shape))
        mean, tril = ppca_em.posterior(x, params)
        with plate(self.data_plate, x.shape[0]):
            pyro.sample(LATENT, dist.MultivariateNormal(mean, scale_tril=tril))

    def site_dims(self) -> dict[str, list[str]]:
        """ArviZ dimension names: ``feature`` and ``component`` (latent dimension)."""
        noise = [] if self.noise == "isotropic" else ["feature"]
        return {LOADINGS: ["feature", "component"], LOC: ["feature"], NOISE: noise}

    # ------------------------------------------------------------------ closed forms
    def _params(self, params: Any = None) -> ppca_em.PPCAParams:
        p = self._point(params)
        loc = p[LOC]
        noise = p[NOISE].unsqueeze(-1) if self.noise == "isotropic" else p[NOISE]
        return ppca_em.PPCAParams(p[LOADINGS], loc, noise.expand(loc.shape))

    def marginal(self, params: Any = None) -> dist.LowRankMultivariateNormal:
        """``p(x) = N(mu, W W^T + Psi)``, batched over leading dimensions of ``params``."""
        w, loc, noise = self._params(params)
        return dist.LowRankMultivariateNormal(loc, cov_factor=w, cov_diag=noise)

    def log_likelihood(self, x: Tensor, params: Any = None) -> Tensor:
        """Exact ``log p(x_n | theta) = log N(x_n | mu, W W^T + Psi)``, shape ``[*B, N]``.

        Computed through the ``q x q`` capacitance matrix (Woodbury), ``O(N D q)``.
        """
        d = self._check_setup()
        x = self._check_data(x, "x", dim=d)
        marginal = self.marginal(params)
        batch = marginal.batch_shape
        xs = x.to(marginal.loc).reshape((x.shape[0],) + (1,) * len(batch) + (d,))
        return marginal.log_prob(xs).movedim(0, -1)

    def encode(self, x: Tensor) -> Tensor:
        """Posterior means ``E[z_n | x_n] = K^-1 W^T Psi^-1 (x_n - mu)``, ``[N, q]``.

        For PPCA this is Tipping & Bishop's ``M^-1 W^T (x_n - mu)``; it is not the orthogonal
        projection onto the principal subspace (it shrinks towards 0 by ``sigma^2``).
        """
        x = self._check_data(x, "x", dim=self._check_setup())
        return ppca_em.posterior(x.to(self._params().loc), self._params())[0]

    def posterior(self, x: Tensor) -> dist.MultivariateNormal:
        """``p(z_n | x_n)`` under the point estimate: batch ``[N]``, event ``[q]``."""
        x = self._check_data(x, "x", dim=self._check_setup())
        mean, tril = ppca_em.posterior(x.to(self._params().loc), self._params())
        return dist.MultivariateNormal(mean, scale_tril=tril.expand(mean.shape + mean.shape[-1:]))

    @property
    def latent_dim(self) -> int:
        """``q``, the size of ``z`` (the :class:`probgen.latent.LatentModel` protocol)."""
        return self.n_components

    def latent_prior(self) -> dist.Independent:
        """``p(z) = N(0, I_q)``, event ``[q]``, on the fitted parameters' device and dtype."""
        zeros = self._params().loc.new_zeros(self.n_components)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def likelihood(self, z: Tensor) -> dist.Independent:
        """``p(x_n | z_n) = N(W z_n + mu, Psi)`` under the point estimate: batch ``[N]``, event
        ``[D]``; its ``.mean`` decodes ``z`` ``[N, q]``."""
        w, loc, noise = self._params()
        z = check_data(z, "z", ndim=2, dim=self.n_components).to(loc)
        return dist.Normal(z @ w.mT + loc, noise.sqrt().expand(z.shape[0], -1)).to_event(1)

    def fit_closed_form(self, x: Tensor) -> dict[str, Tensor]:
        """Sets ``params_`` to the maximum-likelihood PPCA solution and returns it.

        ``S = U diag(lambda) U^T``: ``sigma^2 = mean(lambda_{q+1..D})``, ``W = U_q (Lambda_q -
        sigma^2 I)^{1/2}``, ``mu = xbar`` (Tipping & Bishop 1999, eqs. 7-8). Factor analysis has no
        closed form: use ``probgen.fit(model, x, method="em")``.
        """
        if self.noise != "isotropic":
            raise ValueError(
                "fit_closed_form exists for noise='isotropic' (PPCA) only; factor analysis has no "
                "closed-form solution: use probgen.fit(model, x, method='em')"
            )
        x = self._check_data(x, "data")
        self.setup(x)
        self.params_ = self.em_params(ppca_em.closed_form(ppca_em.prepare(x), self.n_components))
        return self.params_

    @property
    def components_(self) -> Tensor:
        """``W^T`` ``[q, D]`` (scikit-learn's ``FactorAnalysis.components_`` layout)."""
        return self._params().loadings.mT

    @property
    def mean_(self) -> Tensor:
        return self._params().loc

    @property
    def noise_variance_(self) -> Tensor:
        """``sigma^2`` (scalar, PPCA) or ``psi`` (``[D]``, factor analysis)."""
        return self._point(None)[NOISE]

    @property
    def covariance_(self) -> Tensor:
        """The model covariance ``W W^T + Psi`` ``[D, D]``."""
        return self.marginal().covariance_matrix

    # ------------------------------------------------------------------ EM capability
    def em_prepare(self, x: Tensor) -> ppca_em.Moments:
        return ppca_em.prepare(self._check_data(x, "data"))

    def em_init(self, prepared: ppca_em.Moments, generator: torch.Generator) -> ppca_em.PPCAParams:
        return ppca_em.initialize(prepared, self.n_components, self.noise, self.init, generator)

    def em_e_step(
        self, prepared: ppca_em.Moments, state: ppca_em.PPCAParams
    ) -> tuple[ppca_em.Expectations, Tensor]:
        return ppca_em.e_step(prepared, state)

    def em_m_step(
        self, prepared: ppca_em.Moments, expectations: ppca_em.Expectations
    ) -> ppca_em.PPCAParams:
        return ppca_em.m_step(prepared, expectations, self.noise)

    def em_params(self, state: ppca_em.PPCAParams) -> dict[str, Tensor]:
        """EM's state as Pyro site values (PPCA's noise as the scalar ``sigma^2``)."""
        noise = state.noise[..., 0] if self.noise == "isotropic" else state.noise
        return {LOADINGS: state.loadings, LOC: state.loc, NOISE: noise}

    def init_values(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """The EM start (:func:`models.ppca_em.initialize`) as site values."""
        return self.em_params(self.em_init(self.em_prepare(x), generator))
