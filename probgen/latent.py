"""Latent-space tools written once for every family with a per-datum continuous latent ``z``.

A family takes part by implementing the small :class:`LatentModel` protocol (PPCA and the VAE
do): a point code ``encode(x)``, the amortised posterior ``q(z | x)``, the prior ``p(z)`` and the
decoder ``p(x | z)`` under its fitted point estimate. On top of it this module gives

* codes and decoded means: :func:`encode`, :func:`decode`, :func:`interpolate`, :func:`traverse`;
* how the latent space is used: :func:`active_units` (Burda et al. 2016), :func:`kl_per_dimension`
  and the split ELBO ``E_q[log p(x|z)] - KL(q(z|x) || p(z))`` (:func:`elbo_split`);
* figures on ``matplotlib.figure.Figure`` (no display, no pyplot state): interpolations,
  traversals, a scatter of codes, reconstructions and samples.

``**context`` (e.g. a conditional VAE's labels ``y=...``) is passed to the model untouched; its
batch must match the rows of ``x`` or ``z`` given alongside it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torch.distributions import (
    Distribution,
    Independent,
    LowRankMultivariateNormal,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from probgen.diagnostics import Estimate
from probgen.diagnostics._base import mc_mean
from probgen.validation import check_count, check_data

__all__ = [
    "INTERPOLATION_METHODS",
    "ActiveUnits",
    "ElboSplit",
    "LatentModel",
    "active_units",
    "decode",
    "elbo_split",
    "encode",
    "interpolate",
    "interpolation_figure",
    "kl_per_dimension",
    "latent_scatter",
    "reconstruction_grid",
    "sample_grid",
    "traversal_figure",
    "traverse",
]

INTERPOLATION_METHODS = ("linear", "slerp")
#: Slerp falls back to linear interpolation when ``sin(angle)`` is below this: the great circle
#: through (anti)parallel endpoints is undefined and the slerp weights ``sin(t W)/sin(W)`` lose
#: all precision.
PARALLEL_SIN = 1e-6
#: Up to this many distinct labels get a legend in :func:`latent_scatter`; more get a colorbar.
MAX_LEGEND_LABELS = 10


@runtime_checkable
class LatentModel(Protocol):
    """A fitted family with one continuous latent ``z`` ``[q]`` per datum.

    Attributes:
        latent_site: the Pyro site name of ``z``.
        latent_dim: ``q``.
    """

    latent_site: str

    @property
    def latent_dim(self) -> int: ...

    def encode(self, x: Tensor, **context: Any) -> Tensor:
        """A point code ``[N, q]`` (posterior or encoder mean)."""
        ...

    def posterior(self, x: Tensor, **context: Any) -> Distribution:
        """``q(z | x)``: batch ``[N]``, event ``[q]``."""
        ...

    def latent_prior(self) -> Distribution:
        """``p(z)``: event ``[q]``."""
        ...

    def likelihood(self, z: Tensor, **context: Any) -> Distribution:
        """``p(x | z)`` under the fitted point estimate: batch ``[N]``, event ``[D]``."""
        ...


@dataclass(frozen=True)
class ActiveUnits:
    """Active latent units (Burda et al. 2016).

    Attributes:
        count: the number of units with ``variance > threshold``.
        variance: ``Var_x(E_q[z_u | x])`` per unit, ``[q]``.
        threshold: the activity threshold used.
    """

    count: int
    variance: Tensor
    threshold: float

    @property
    def active(self) -> Tensor:
        """Boolean mask ``[q]`` of the active units."""
        return self.variance > self.threshold


@dataclass(frozen=True)
class ElboSplit:
    """The ELBO split into reconstruction and KL, in nats per datum.

    Attributes:
        reconstruction: ``(1/N) sum_n E_q[log p(x_n | z)]`` (Monte Carlo).
        kl: ``(1/N) sum_n KL(q(z | x_n) || p(z))``, ``estimator`` ``"analytic"`` or
            ``"monte-carlo"``.
        elbo: ``reconstruction - kl``; its standard error accounts for their correlation when
            both are Monte Carlo.
        kl_per_dim: :func:`kl_per_dimension` ``[q]`` when the posterior's marginals are Normal,
            else None. It sums to ``kl`` only when the posterior is diagonal.
        num_samples: draws of ``z`` per datum.
    """

    reconstruction: Estimate
    kl: Estimate
    elbo: Estimate
    kl_per_dim: Tensor | None
    num_samples: int


# ---------------------------------------------------------------------- argument checks
def _check_model(model: Any) -> LatentModel:
    if not isinstance(model, LatentModel):
        members = ("latent_site", "latent_dim", "encode", "posterior", "latent_prior", "likelihood")
        missing = [m for m in members if not hasattr(model, m)]
        raise TypeError(
            f"model must implement the LatentModel protocol ({', '.join(members)}); "
            f"{type(model).__name__} lacks {', '.join(missing)}"
        )
    return model


def _check_code(z: Any, name: str, q: int, ndim: int) -> Tensor:
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    shape = "[q]" if ndim == 1 else "[N, q]"
    if z.dim() != ndim or z.shape[-1] != q or z.numel() == 0:
        raise ValueError(f"{name} must have shape {shape} with q={q}, got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {z.dtype}")
    return z


def _check_image_shape(image_shape: Any, dim: int | None = None) -> tuple[int, int]:
    if not isinstance(image_shape, Sequence) or len(image_shape) != 2:
        raise TypeError(f"image_shape must be a pair (H, W), got {image_shape!r}")
    h, w = (check_count(s, "image_shape entries") for s in image_shape)
    if dim is not None and h * w != dim:
        raise ValueError(
            f"image_shape {(h, w)} holds {h * w} pixels but the data rows have D={dim} features"
        )
    return h, w


def _images(rows: Tensor, image_shape: Any) -> np.ndarray:
    h, w = _check_image_shape(image_shape, rows.shape[-1])
    return rows.detach().reshape(-1, h, w).cpu().numpy()


def _one_row(x: Any, name: str) -> Tensor:
    x = check_data(x, name)
    return x.unsqueeze(0) if x.dim() == 1 else check_data(x, name, ndim=2)


# ---------------------------------------------------------------------- codes
def encode(model: LatentModel, x: Tensor, **context: Any) -> Tensor:
    """Point codes ``[N, q]``: ``model.encode(x)`` (e.g. ``E_q[z | x]``) after checking shapes.

    Raises:
        TypeError: ``model`` does not implement :class:`LatentModel`.
        ValueError: ``x`` is not ``[N, D]``, or the model returns codes of the wrong shape.
    """
    model = _check_model(model)
    x = check_data(x, "x", ndim=2)
    z = model.encode(x, **context)
    if z.shape != (x.shape[0], model.latent_dim):
        raise ValueError(
            f"{type(model).__name__}.encode returned shape {tuple(z.shape)}; the protocol "
            f"requires [N, q] = {[x.shape[0], model.latent_dim]}"
        )
    return z


def decode(model: LatentModel, z: Tensor, **context: Any) -> Tensor:
    """Decoded means ``E[x | z] = model.likelihood(z).mean``, ``[N, D]``.

    Raises:
        TypeError: ``model`` is not a :class:`LatentModel`, or ``z`` is not a floating tensor.
        ValueError: ``z`` is not ``[N, q]`` with ``q = model.latent_dim``.
    """
    model = _check_model(model)
    z = _check_code(z, "z", model.latent_dim, ndim=2)
    mean = model.likelihood(z, **context).mean
    if mean.dim() != 2 or mean.shape[0] != z.shape[0]:
        raise ValueError(
            f"{type(model).__name__}.likelihood(z).mean has shape {tuple(mean.shape)}; the "
            f"protocol requires [N, D] with N={z.shape[0]}"
        )
    return mean


def interpolate(z0: Tensor, z1: Tensor, steps: int, method: str = "linear") -> Tensor:
    r"""``steps`` codes from ``z0`` to ``z1`` (both included), ``[steps, q]``.

    ``"linear"``: ``(1 - t) z0 + t z1``. ``"slerp"`` (spherical linear interpolation, Shoemake
    1985, recommended for Gaussian latents by White 2016) follows the great circle:

        slerp(t) = sin((1 - t) W) / sin(W) z0 + sin(t W) / sin(W) z1,
        cos(W) = z0 . z1 / (|z0| |z1|),

    with ``t`` evenly spaced on ``[0, 1]``. Equal-norm endpoints keep their norm along the path,
    whereas the linear path passes through low-density codes near the origin. For (anti)parallel
    or zero endpoints (``sin(W) < PARALLEL_SIN``) the circle is undefined and slerp falls back to
    the linear path.

    Raises:
        TypeError: ``z0``/``z1`` are not floating tensors.
        ValueError: shapes differ or are not ``[q]``; ``steps < 2``; unknown ``method``.

    References:
        Shoemake, "Animating rotation with quaternion curves", SIGGRAPH 1985.
        White, "Sampling generative networks", arXiv:1609.04468.
    """
    for name, z in (("z0", z0), ("z1", z1)):
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise TypeError(f"{name} must be a floating torch.Tensor, got {z!r:.60}")
    if z0.dim() != 1 or z0.shape != z1.shape or z0.numel() == 0:
        raise ValueError(
            f"z0 and z1 must be codes of one shape [q], got {tuple(z0.shape)} and {tuple(z1.shape)}"
        )
    steps = check_count(steps, "steps", minimum=2)
    if method not in INTERPOLATION_METHODS:
        raise ValueError(
            f"method must be one of {', '.join(INTERPOLATION_METHODS)}; got {method!r}"
        )
    dtype = torch.promote_types(z0.dtype, z1.dtype)
    z0, z1 = z0.to(dtype), z1.to(dtype)
    t = torch.linspace(0, 1, steps, dtype=dtype, device=z0.device).unsqueeze(-1)
    if method == "slerp":
        norms = z0.norm() * z1.norm()
        cos = (z0 @ z1 / norms).clamp(-1, 1) if norms > 0 else z0.new_ones(())
        omega = torch.arccos(cos)
        sin = torch.sin(omega)
        if sin >= PARALLEL_SIN:
            return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / sin
    return (1 - t) * z0 + t * z1


def traverse(model: LatentModel, z: Tensor, dim: int, values: Any, **context: Any) -> Tensor:
    """Decoded means ``[len(values), D]`` of ``z`` with coordinate ``dim`` set to each value.

    Row ``i`` is ``E[x | z']`` with ``z'_dim = values[i]`` and ``z'_u = z_u`` otherwise (the
    latent traversals of Higgins et al. 2017, "beta-VAE", ICLR).

    Raises:
        TypeError: ``model`` is not a :class:`LatentModel`; ``dim`` is not an integer.
        ValueError: ``z`` is not ``[q]``; ``dim`` outside ``0..q-1``; ``values`` not a non-empty
            1-D sequence of finite numbers.
    """
    model = _check_model(model)
    q = model.latent_dim
    z = _check_code(z, "z", q, ndim=1)
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"dim must be an integer, got {type(dim).__name__}")
    if not 0 <= dim < q:
        raise ValueError(f"dim must be in 0..{q - 1} (latent_dim={q}), got {dim}")
    vals = check_data(values, "values", ndim=1).to(z)
    codes = z.expand(vals.shape[0], q).clone()
    codes[:, dim] = vals
    return decode(model, codes, **context)


# ---------------------------------------------------------------------- use of the latent space
@torch.no_grad()
def active_units(
    model: LatentModel, x: Tensor, threshold: float = 0.01, **context: Any
) -> ActiveUnits:
    """Counts the latent units the encoder uses (Burda et al. 2016, section 5.2).

    ``A_u = Var_x(E_{q(z|x)}[z_u])`` over the rows of ``x`` (the empirical variance, divisor
    ``N``), with ``E_q[z | x]`` from :func:`encode`; unit ``u`` is active if ``A_u > threshold``
    (Burda et al. use 0.01).

    Raises:
        TypeError: ``threshold`` is not a real number.
        ValueError: ``x`` is not ``[N, D]`` with ``N >= 2``; ``threshold`` negative or infinite.

    References:
        Burda, Grosse & Salakhutdinov, "Importance weighted autoencoders", arXiv:1509.00519.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a real number, got {type(threshold).__name__}")
    if not 0 <= threshold < math.inf:
        raise ValueError(f"threshold must be finite and >= 0, got {threshold}")
    codes = encode(model, x, **context)
    if codes.shape[0] < 2:
        raise ValueError(f"x must have at least 2 rows to measure a variance, got {codes.shape[0]}")
    variance = codes.var(0, correction=0)
    return ActiveUnits(int((variance > threshold).sum()), variance, float(threshold))


def _normal_marginals(d: Distribution) -> tuple[Normal, bool] | None:
    """``(Normal marginals of z, whether they factorise d)`` for Gaussian ``d``, else None."""
    if isinstance(d, Independent) and d.reinterpreted_batch_ndims == 1:
        if isinstance(d.base_dist, Normal):
            return d.base_dist, True
    if isinstance(d, MultivariateNormal | LowRankMultivariateNormal):
        return Normal(d.mean, d.variance.sqrt()), False
    return None


def _posterior_prior(
    model: LatentModel, x: Tensor, context: dict[str, Any]
) -> tuple[LatentModel, Tensor, Distribution, Distribution]:
    model = _check_model(model)
    x = check_data(x, "x", ndim=2)
    q = model.posterior(x, **context)
    if tuple(q.batch_shape) != (x.shape[0],) or tuple(q.event_shape) != (model.latent_dim,):
        raise ValueError(
            f"{type(model).__name__}.posterior(x) has batch {tuple(q.batch_shape)} and event "
            f"{tuple(q.event_shape)}; the protocol requires [N]={x.shape[0]} and "
            f"[q]={model.latent_dim}"
        )
    return model, x, q, model.latent_prior()


@torch.no_grad()
def kl_per_dimension(model: LatentModel, x: Tensor, **context: Any) -> Tensor:
    r"""``(1/N) sum_n KL(q(z_u | x_n) || p(z_u))`` for each unit ``u``, ``[q]``, in nats.

    Analytic for Normal marginals ``q(z_u | x) = N(m_u, s_u^2)``, ``p(z_u) = N(0, 1)``:
    ``0.5 (m_u^2 + s_u^2 - 1 - log s_u^2)`` (general ``N(a, b^2)`` priors likewise). A diagonal
    posterior (``Independent(Normal)``) factorises, so the values sum to the KL. For a
    ``MultivariateNormal`` posterior its marginals are used: their KLs sum to the joint KL only
    when the covariance is diagonal (the joint KL is :func:`elbo_split`'s ``kl``).

    Raises:
        TypeError: the posterior or prior has no Normal marginals (e.g. a flow posterior).

    References:
        Kingma & Welling, "Auto-encoding variational Bayes", arXiv:1312.6114 (appendix B).
    """
    model, x, q, p = _posterior_prior(model, x, context)
    q_marg, p_marg = _normal_marginals(q), _normal_marginals(p)
    for d, m, role in ((q, q_marg, "posterior"), (p, p_marg, "latent_prior")):
        if m is None:
            raise TypeError(
                f"kl_per_dimension needs Normal marginals; {type(model).__name__}.{role}() is "
                f"{type(d).__name__} (supported: Independent(Normal), MultivariateNormal, "
                "LowRankMultivariateNormal); use elbo_split for its Monte Carlo KL"
            )
    assert q_marg is not None and p_marg is not None
    return kl_divergence(q_marg[0], p_marg[0]).mean(0)


def _analytic_kl(q: Distribution, p: Distribution) -> Tensor | None:
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        pass
    # Torch has no KL between a MultivariateNormal and an Independent(Normal): a diagonal Normal
    # is the MultivariateNormal with diagonal covariance, for which the KL is registered.
    qm, pm = _normal_marginals(q), _normal_marginals(p)
    if qm is None or pm is None or not (qm[1] or pm[1]):
        return None
    if qm[1]:
        q = MultivariateNormal(qm[0].loc, scale_tril=torch.diag_embed(qm[0].scale))
    if pm[1]:
        p = MultivariateNormal(pm[0].loc, scale_tril=torch.diag_embed(pm[0].scale))
    return kl_divergence(q, p)


@torch.no_grad()
def elbo_split(
    model: LatentModel,
    x: Tensor,
    num_samples: int = 64,
    *,
    seed: int | None = None,
    analytic_kl: bool = True,
    **context: Any,
) -> ElboSplit:
    r"""The ELBO per datum split as ``E_q[log p(x | z)] - KL(q(z | x) || p(z))``.

    ``reconstruction`` averages ``log p(x_n | z_sn)`` over ``S = num_samples`` draws
    ``z_sn ~ q(z | x_n)``; ``kl`` is ``torch.distributions.kl_divergence`` when registered
    (MultivariateNormal vs diagonal Normal included) and ``analytic_kl``, else the Monte Carlo mean
    of ``log q(z_sn | x_n) - log p(z_sn)`` on the same draws. All values are means over the rows
    of ``x``; standard errors are over the ``S`` per-draw data means (zero for analytic terms).
    With the exact posterior (PPCA) ``elbo = log p(x)`` (Kingma & Welling 2014, eqs. 1-3).

    Args:
        model: a :class:`LatentModel`.
        x: data ``[N, D]``.
        num_samples: ``S >= 2``.
        seed: if given, the draws use this seed without changing torch's global random state.
        analytic_kl: use the closed-form KL when one exists.
        **context: passed to ``posterior`` and ``likelihood``.

    References:
        Kingma & Welling, "Auto-encoding variational Bayes", arXiv:1312.6114.
    """
    model, x, q, p = _posterior_prior(model, x, context)
    s = check_count(num_samples, "num_samples", minimum=2)
    if seed is not None:
        seed = check_count(seed, "seed", minimum=0)
    # fork_rng restores the CPU state and that of x's accelerator (none for CPU data).
    devices, kind = ([], None) if x.device.type == "cpu" else ([x.device], x.device.type)
    with torch.random.fork_rng(devices=devices, enabled=seed is not None, device_type=kind):
        if seed is not None:
            torch.manual_seed(seed)
        z = q.rsample((s,)) if q.has_rsample else q.sample((s,))  # [S, N, q]
    log_lik = torch.stack([model.likelihood(zs, **context).log_prob(x.to(zs)) for zs in z])
    recon_draws = log_lik.mean(-1)
    kl_value = _analytic_kl(q, p) if analytic_kl else None
    if kl_value is None:
        kl_draws = (q.log_prob(z) - p.log_prob(z)).mean(-1)
        kl = Estimate(*mc_mean(kl_draws), "monte-carlo", num_samples=s)
        elbo = Estimate(*mc_mean(recon_draws - kl_draws), "monte-carlo", num_samples=s)
    else:
        kl_mean = kl_value.mean()
        kl = Estimate(kl_mean, torch.zeros_like(kl_mean), "analytic")
        elbo = Estimate(*mc_mean(recon_draws - kl_mean), "monte-carlo", num_samples=s)
    per_dim = None
    if _normal_marginals(q) is not None and _normal_marginals(p) is not None:
        per_dim = kl_per_dimension(model, x, **context)
    recon = Estimate(*mc_mean(recon_draws), "monte-carlo", num_samples=s)
    return ElboSplit(recon, kl, elbo, per_dim, s)


# ---------------------------------------------------------------------- figures
def _image_axes(fig: Figure, images: np.ndarray, rows: int, cols: int) -> list[Any]:
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, image in zip(axes, images, strict=False):
        ax.imshow(image, cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(images) :]:
        fig.delaxes(ax)
    return list(axes[: len(images)])


@torch.no_grad()
def interpolation_figure(
    model: LatentModel,
    x0: Tensor,
    x1: Tensor,
    steps: int,
    image_shape: tuple[int, int],
    method: str = "linear",
    **context: Any,
) -> Figure:
    """One row of ``steps`` decoded means between the codes of ``x0`` and ``x1`` (each ``[D]``
    or ``[1, D]``), by :func:`interpolate` (``method``: ``"linear"`` or ``"slerp"``).

    ``context`` goes to both the encoder (one row) and the decoder (``steps`` rows), so it must
    broadcast to both, e.g. a conditional VAE's single label ``y=3``.
    """
    z0 = encode(model, _one_row(x0, "x0"), **context)[0]
    z1 = encode(model, _one_row(x1, "x1"), **context)[0]
    means = decode(model, interpolate(z0, z1, steps, method), **context)
    images = _images(means, image_shape)
    fig = Figure(figsize=(1.2 * steps, 1.5), layout="constrained")
    axes = _image_axes(fig, images, 1, steps)
    axes[0].set_title("x0", fontsize=8)
    axes[-1].set_title("x1", fontsize=8)
    fig.suptitle(f"{method} interpolation in z", fontsize=9)
    return fig


@torch.no_grad()
def traversal_figure(
    model: LatentModel,
    z: Tensor,
    dims: Sequence[int],
    values: Any,
    image_shape: tuple[int, int],
    **context: Any,
) -> Figure:
    """A grid of decoded means: one row per latent dimension in ``dims`` (:func:`traverse`), one
    column per entry of ``values`` (``context`` must fit ``len(values)`` rows)."""
    if isinstance(dims, int | str) or not isinstance(dims, Sequence) or len(dims) == 0:
        raise TypeError(f"dims must be a non-empty sequence of integers, got {dims!r}")
    rows = [traverse(model, z, d, values, **context) for d in dims]
    images = _images(torch.cat(rows), image_shape)
    cols = rows[0].shape[0]
    fig = Figure(figsize=(1.1 * cols, 1.1 * len(dims)), layout="constrained")
    axes = _image_axes(fig, images, len(dims), cols)
    for i, d in enumerate(dims):
        axes[i * cols].set_ylabel(f"z[{d}]", fontsize=8)
    return fig


@torch.no_grad()
def latent_scatter(model: LatentModel, x: Tensor, labels: Any = None, **context: Any) -> Figure:
    """Scatter of the codes :func:`encode` gives ``x``, coloured by integer ``labels`` ``[N]``.

    ``q = 2``: the codes themselves; ``q > 2``: their projection on the first two principal axes
    of the codes (said in the axis labels, with the share of variance); ``q = 1``: a strip.
    """
    codes = encode(model, x, **context).detach().cpu()
    n, q = codes.shape
    if q > 2:
        centred = codes - codes.mean(0)
        _, sing, vh = torch.linalg.svd(centred, full_matrices=False)
        share = sing.square() / sing.square().sum()
        points = centred @ vh[:2].T
        names = [f"PC {i + 1} of codes ({100 * float(share[i]):.0f}% var.)" for i in range(2)]
    elif q == 2:
        points, names = codes, ["z[0]", "z[1]"]
    else:
        points, names = torch.cat([codes, torch.zeros_like(codes)], 1), ["z[0]", ""]
    xy = points.numpy()
    fig = Figure(figsize=(4.2, 3.6), layout="constrained")
    ax = fig.subplots()
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=6)
    else:
        lab = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels)
        if not np.issubdtype(lab.dtype, np.integer):
            raise TypeError(f"labels must be integers, got an array of dtype {lab.dtype}")
        if lab.shape != (n,):
            raise ValueError(f"labels must have shape [N] = [{n}], got {lab.shape}")
        classes = np.unique(lab)
        if len(classes) <= MAX_LEGEND_LABELS:
            for c in classes:
                ax.scatter(xy[lab == c, 0], xy[lab == c, 1], s=6, label=str(c))
            ax.legend(title="label", fontsize=7, markerscale=2)
        else:
            fig.colorbar(ax.scatter(xy[:, 0], xy[:, 1], c=lab, s=6, cmap="viridis"), label="label")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    return fig


@torch.no_grad()
def reconstruction_grid(
    model: LatentModel, x: Tensor, image_shape: tuple[int, int], **context: Any
) -> Figure:
    """Originals (top row) above their reconstructions ``decode(encode(x))`` (bottom row)."""
    x = check_data(x, "x", ndim=2)
    _check_image_shape(image_shape, x.shape[1])
    means = decode(model, encode(model, x, **context), **context)
    images = np.concatenate([_images(x, image_shape), _images(means, image_shape)])
    fig = Figure(figsize=(1.1 * x.shape[0], 2.4), layout="constrained")
    axes = _image_axes(fig, images, 2, x.shape[0])
    axes[0].set_ylabel("data", fontsize=8)
    axes[x.shape[0]].set_ylabel("decoded", fontsize=8)
    return fig


@torch.no_grad()
def sample_grid(model: Any, n: int, image_shape: tuple[int, int], **context: Any) -> Figure:
    """``n`` draws ``model.sample(n, **context)`` as images on a near-square grid."""
    n = check_count(n, "n")
    _check_image_shape(image_shape)
    draws = model.sample(n, **context)
    images = _images(draws.reshape(n, -1), image_shape)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.1 * cols, 1.1 * rows), layout="constrained")
    _image_axes(fig, images, rows, cols)
    return fig
