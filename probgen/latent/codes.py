"""The latent-model protocol, argument checks and codes: encode, decode, interpolate, traverse."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from probgen.validation import check_count, check_data

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
