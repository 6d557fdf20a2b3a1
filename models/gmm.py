"""Gaussian mixture models: one Pyro program, fitted by closed-form EM, SVI (MAP or full
posterior) and NUTS.

The model (Bishop 2006, ch. 9; covariance types as scikit-learn's ``GaussianMixture``)::

    pi ~ Dirichlet(alpha 1_K)
    mu_k ~ Normal(m_0, 2 s_0)                          k = 1..K
    Sigma_k = diag(sigma_k) L_k L_k^T diag(sigma_k),  sigma_k ~ LogNormal(log(s_0 / 4), 1),
                                                       L_k ~ LKJCholesky(D, eta)   ("full")
    z_n ~ Categorical(pi)                              (enumerated: summed out exactly)
    x_n | z_n ~ Normal(mu_{z_n}, Sigma_{z_n})

``m_0`` and ``s_0`` are the mean and standard deviation of the training data (set once by
:meth:`GaussianMixture.setup`), so the prior is weak on the data's own scale. ``"diag"`` drops
``L_k``; ``"spherical"`` has one ``sigma_k`` per component; ``"tied"`` shares ``sigma`` and ``L``.

Label switching: the likelihood is invariant to permuting components, so posterior draws from
different chains (or EM restarts) may label them differently. Wherever draws or point estimates
are summarised, components are put in a canonical order: ascending first coordinate of
``mu_k`` (:meth:`GaussianMixture.canonicalize`).
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from models import gmm_em
from probgen import GenerativeModel
from probgen.plate import plate
from probgen.validation import check_data

__all__ = ["ASSIGNMENT", "CORR", "LOCS", "OBS", "SCALES", "WEIGHTS", "GaussianMixture"]

WEIGHTS, LOCS, SCALES, CORR, ASSIGNMENT, OBS = (
    "weights",
    "locs",
    "scales",
    "corr_chol",
    "assignment",
    "obs",
)
# Site name -> which dimension indexes components (counted from the right), per covariance type.
_COMPONENT_DIM = {
    "full": {WEIGHTS: -1, LOCS: -2, SCALES: -2, CORR: -3},
    "tied": {WEIGHTS: -1, LOCS: -2},
    "diag": {WEIGHTS: -1, LOCS: -2, SCALES: -2},
    "spherical": {WEIGHTS: -1, LOCS: -2, SCALES: -1},
}


class GaussianMixture(GenerativeModel):
    """K Gaussian components in D dimensions, with scikit-learn's four covariance types.

    Args:
        n_components: K >= 1.
        covariance_type: ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
        reg_covar: added to covariance diagonals in EM, for positive definiteness.
        means_init: optional ``[K, D]`` initial means for EM (else k-means++ then Lloyd).
        weight_concentration: Dirichlet concentration ``alpha`` of the weights prior.
        lkj_concentration: LKJ ``eta`` of the correlation prior (full/tied).

    Example:
        >>> gmm = GaussianMixture(n_components=2)
        >>> em = probgen.fit(gmm, probgen.data.faithful(), method="em")  # doctest: +SKIP
        >>> gmm.predict(x), gmm.bic(x)  # doctest: +SKIP
    """

    supports_em = True
    exact_log_likelihood = True
    obs_site = OBS

    def __init__(
        self,
        n_components: int = 2,
        covariance_type: str = "full",
        *,
        reg_covar: float = 1e-6,
        means_init: Tensor | None = None,
        weight_concentration: float = 1.0,
        lkj_concentration: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"n_components must be an integer >= 1, got {n_components!r}")
        if covariance_type not in gmm_em.COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type must be one of {', '.join(gmm_em.COVARIANCE_TYPES)}; "
                f"got {covariance_type!r}"
            )
        if reg_covar < 0:
            raise ValueError(f"reg_covar must be >= 0, got {reg_covar}")
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.means_init = None if means_init is None else torch.as_tensor(means_init)
        self.weight_concentration = weight_concentration
        self.lkj_concentration = lkj_concentration
        self.dim_: int | None = None

    def hyperparameters(self) -> dict[str, Any]:
        return {"n_components": self.n_components, "covariance_type": self.covariance_type}

    # ------------------------------------------------------------------ the Pyro program
    def setup(self, x: Tensor, **context: Tensor) -> None:
        """Checks the data and sets the data-scaled prior (``m_0``, ``s_0``) from it."""
        x = check_data(x, "data", ndim=2)
        if x.shape[0] < self.n_components:
            raise ValueError(
                f"data has {x.shape[0]} points, fewer than n_components={self.n_components}"
            )
        if self.means_init is not None and self.means_init.shape != (self.n_components, x.shape[1]):
            raise ValueError(
                f"means_init must have shape ({self.n_components}, {x.shape[1]}), "
                f"got {tuple(self.means_init.shape)}"
            )
        self.dim_ = x.shape[1]
        std = x.std(0) if x.shape[0] > 1 else torch.ones_like(x[0])
        self.register_buffer("prior_loc", x.mean(0))
        self.register_buffer("prior_scale", torch.where(std > 0, std, torch.ones_like(std)))

    def _check_setup(self) -> int:
        if self.dim_ is None:
            raise RuntimeError("call setup(x) (probgen.fit does) before running the model")
        return self.dim_

    def model(self, x: Tensor | None = None, *, n: int | None = None) -> Tensor:
        d, k = self._check_setup(), self.n_components
        n = x.shape[0] if x is not None else n
        s0 = self.prior_scale
        weights = pyro.sample(WEIGHTS, dist.Dirichlet(s0.new_full((k,), self.weight_concentration)))
        scale_prior = dist.LogNormal((s0 / 4).log(), 1.0)
        with plate("components", k):
            locs = pyro.sample(LOCS, dist.Normal(self.prior_loc, 2 * s0).to_event(1))
            if self.covariance_type in ("full", "diag"):
                scales = pyro.sample(SCALES, scale_prior.to_event(1))
            elif self.covariance_type == "spherical":
                scales = pyro.sample(SCALES, dist.LogNormal((s0 / 4).log().mean(), 1.0))
            if self.covariance_type == "full" and d > 1:
                corr = pyro.sample(CORR, dist.LKJCholesky(d, s0.new_tensor(self.lkj_concentration)))
        if self.covariance_type == "tied":
            scales = pyro.sample(SCALES, scale_prior.to_event(1))
            if d > 1:
                corr = pyro.sample(CORR, dist.LKJCholesky(d, s0.new_tensor(self.lkj_concentration)))
        params = {WEIGHTS: weights, LOCS: locs, SCALES: scales}
        if self.covariance_type in ("full", "tied") and d > 1:
            params[CORR] = corr
        with plate(self.data_plate, n):
            z = pyro.sample(ASSIGNMENT, dist.Categorical(weights), infer={"enumerate": "parallel"})
            loc = locs[z]
            if self.covariance_type == "full":
                obs_dist: dist.Distribution = dist.MultivariateNormal(
                    loc, scale_tril=self._tril(params)[z]
                )
            elif self.covariance_type == "tied":
                obs_dist = dist.MultivariateNormal(loc, scale_tril=self._tril(params)[0])
            else:
                scale = scales[z] if self.covariance_type == "diag" else scales[z].unsqueeze(-1)
                obs_dist = dist.Normal(loc, scale.expand(loc.shape)).to_event(1)
            return pyro.sample(OBS, obs_dist, obs=x)

    def site_dims(self) -> dict[str, list[str]]:
        """ArviZ dimension names: ``component``, ``feature`` and ``feature_`` (Cholesky columns)."""
        per_component = self.covariance_type != "tied"
        lead = ["component"] if per_component else []
        dims = {
            WEIGHTS: ["component"],
            LOCS: ["component", "feature"],
            CORR: [*lead, "feature", "feature_"],
        }
        dims[SCALES] = ["component"] if self.covariance_type == "spherical" else [*lead, "feature"]
        return dims

    # ------------------------------------------------------------------ closed forms
    def _components(self, params: dict[str, Tensor]) -> dist.Distribution:
        """The K component distributions, batch ``[*B, K]``, event ``[D]``."""
        locs, scales = params[LOCS], params[SCALES]
        if self.covariance_type == "diag":
            return dist.Normal(locs, scales).to_event(1)
        if self.covariance_type == "spherical":
            return dist.Normal(locs, scales.unsqueeze(-1).expand(locs.shape)).to_event(1)
        return dist.MultivariateNormal(locs, scale_tril=self._tril(params))

    def _tril(self, params: dict[str, Tensor]) -> Tensor:
        """``diag(sigma) L``: ``[*B, K, D, D]`` (full) or ``[*B, 1, D, D]`` (tied)."""
        corr = params.get(CORR)
        scales = params[SCALES]
        tril = scales.diag_embed() if corr is None else scales.unsqueeze(-1) * corr
        return tril.unsqueeze(-3) if self.covariance_type == "tied" else tril

    def _joint(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """``log pi_k + log N(x_n | mu_k, Sigma_k)``, shape ``[*B, N, K]``."""
        d = self._check_setup()
        x = check_data(x, "x", ndim=2, dim=d)
        batch = params[LOCS].shape[:-2]
        xs = x.to(params[LOCS]).reshape((x.shape[0],) + (1,) * len(batch) + (1, d))
        comp = self._components(params).log_prob(xs)  # [N, *B, K]
        return (comp + params[WEIGHTS].log()).movedim(0, -2)

    def log_likelihood(self, x: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
        """Exact ``log p(x_n | theta) = log sum_k pi_k N(x_n | mu_k, Sigma_k)``, ``[*B, N]``."""
        return self._joint(x, dict(self._point(params))).logsumexp(-1)

    def predict_proba(self, x: Tensor) -> Tensor:
        """Responsibilities ``p(z_n = k | x_n)`` under the point estimate, ``[N, K]``."""
        return self._joint(x, dict(self._point(None))).softmax(-1)

    def predict(self, x: Tensor) -> Tensor:
        """The most probable component of each point, ``[N]``."""
        return self.predict_proba(x).argmax(-1)

    def n_parameters(self) -> int:
        """Free parameters of the maximum-likelihood model (for BIC/AIC)."""
        return gmm_em.n_parameters(self.n_components, self._check_setup(), self.covariance_type)

    def bic(self, x: Tensor) -> float:
        """Bayesian information criterion ``-2 log L + p log N`` (Schwarz 1978); lower is better."""
        ll = self.log_likelihood(x).sum().item()
        return -2 * ll + self.n_parameters() * math.log(x.shape[0])

    def aic(self, x: Tensor) -> float:
        """Akaike information criterion ``-2 log L + 2 p`` (Akaike 1974); lower is better."""
        return -2 * self.log_likelihood(x).sum().item() + 2 * self.n_parameters()

    @property
    def weights_(self) -> Tensor:
        return self._point(None)[WEIGHTS]

    @property
    def means_(self) -> Tensor:
        return self._point(None)[LOCS]

    @property
    def covariances_(self) -> Tensor:
        """Covariances in scikit-learn's shape for the covariance type."""
        p = self._point(None)
        if self.covariance_type in ("diag", "spherical"):
            return p[SCALES] ** 2
        tril = self._tril(dict(p))
        cov = tril @ tril.mT
        return cov[..., 0, :, :] if self.covariance_type == "tied" else cov

    # ------------------------------------------------------------------ EM capability
    def em_prepare(self, x: Tensor) -> gmm_em.Prepared:
        return gmm_em.prepare(x, self.covariance_type)

    def em_init(self, prepared: gmm_em.Prepared, generator: torch.Generator) -> gmm_em.GMMParams:
        means = None if self.means_init is None else self.means_init.to(prepared.x)
        return gmm_em.initialize(
            prepared, self.n_components, self.reg_covar, generator, means_init=means
        )

    def em_e_step(
        self, prepared: gmm_em.Prepared, state: gmm_em.GMMParams
    ) -> tuple[Tensor, Tensor]:
        return gmm_em.e_step(prepared, state)

    def em_m_step(self, prepared: gmm_em.Prepared, log_resp: Tensor) -> gmm_em.GMMParams:
        return gmm_em.m_step(prepared, log_resp, self.reg_covar)

    def em_params(self, state: gmm_em.GMMParams) -> dict[str, Tensor]:
        """EM's ``(weights, means, covariances)`` as Pyro site values, canonically ordered."""
        cov = state.covariances
        params = {WEIGHTS: state.weights, LOCS: state.means}
        if self.covariance_type in ("diag", "spherical"):
            params[SCALES] = cov.sqrt()
        else:
            scales = cov.diagonal(dim1=-2, dim2=-1).sqrt()
            params[SCALES] = scales
            if cov.shape[-1] > 1:
                corr = cov / (scales.unsqueeze(-1) * scales.unsqueeze(-2))
                params[CORR] = torch.linalg.cholesky(corr)
        return self.canonicalize(params)

    def init_values(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """k-means++ and Lloyd, then one M step: a sensible start for MAP, SVI and NUTS."""
        return self.em_params(self.em_init(self.em_prepare(x), generator))

    def canonicalize(self, draws: dict[str, Tensor]) -> dict[str, Tensor]:
        """Orders components by ascending first coordinate of their mean, per draw."""
        order = draws[LOCS][..., 0].argsort(-1)  # [*B, K]
        out = dict(draws)
        for name, dim in _COMPONENT_DIM[self.covariance_type].items():
            if name not in draws:
                continue
            value = draws[name]
            index = order.reshape(order.shape + (1,) * (-dim - 1))
            out[name] = value.take_along_dim(index, dim=dim)
        return out
