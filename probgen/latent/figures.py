"""Latent-space figures on ``matplotlib.figure.Figure`` (no display, no pyplot state)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from probgen.latent.codes import (
    MAX_LEGEND_LABELS,
    LatentModel,
    _check_image_shape,
    _images,
    _one_row,
    decode,
    encode,
    interpolate,
    traverse,
)
from probgen.validation import check_count, check_data


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
            # Outside the axes: a legend inside covers the codes it explains.
            ax.legend(
                title="label",
                fontsize=7,
                markerscale=2,
                loc="center left",
                bbox_to_anchor=(1.01, 0.5),
            )
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
