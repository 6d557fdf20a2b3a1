"""Matplotlib figures of fits. Built on ``matplotlib.figure.Figure``, so no GUI backend is
needed and nothing global (pyplot's current figure) is touched."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from matplotlib.figure import Figure

from probgen.infer.result import Fit

__all__ = ["densities", "loss_curves"]


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


def loss_curves(fits: Mapping[str, Fit]) -> Figure:
    """The objective of each fit against its iterations, one panel per method (their objectives
    differ: -log-likelihood for EM, -ELBO for SVI, -log joint per draw for NUTS)."""
    rows, cols = _grid(len(fits))
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, fit) in zip(axes, fits.items(), strict=False):
        ax.plot(range(1, len(fit.history) + 1), fit.history, lw=1)
        ax.set_title(name)
        ax.set_xlabel("draw" if fit.method == "nuts" else "iteration")
        ax.set_ylabel(fit.objective, fontsize=8)
    for ax in axes[len(fits) :]:
        ax.set_visible(False)
    return fig


@torch.no_grad()
def densities(fits: Mapping[str, Fit], data: torch.Tensor, grid: int = 60) -> Figure:
    """Each fit's (posterior predictive) density over 1-D or 2-D data, one panel per method."""
    if data.dim() != 2 or data.shape[1] not in (1, 2):
        raise ValueError(f"densities needs [N, 1] or [N, 2] data, got shape {tuple(data.shape)}")
    rows, cols = _grid(len(fits))
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    lo, hi = data.min(0).values, data.max(0).values
    pad = 0.1 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    xs = data.detach().cpu().numpy()
    for ax, (name, fit) in zip(axes, fits.items(), strict=False):
        device = next(iter(fit.params.values())).device
        if data.shape[1] == 1:
            g = torch.linspace(lo[0].item(), hi[0].item(), 200, dtype=data.dtype).unsqueeze(-1)
            dens = fit.log_likelihood(g.to(device)).exp().cpu()
            ax.hist(xs[:, 0], bins=30, density=True, alpha=0.4)
            ax.plot(g[:, 0].numpy(), dens.numpy(), lw=1.5)
        else:
            g0 = torch.linspace(lo[0].item(), hi[0].item(), grid, dtype=data.dtype)
            g1 = torch.linspace(lo[1].item(), hi[1].item(), grid, dtype=data.dtype)
            mesh = torch.stack(torch.meshgrid(g0, g1, indexing="xy"), -1).reshape(-1, 2)
            logp = fit.log_likelihood(mesh.to(device)).reshape(grid, grid).cpu()
            ax.contourf(g0.numpy(), g1.numpy(), logp.numpy(), levels=20, cmap="viridis")
            ax.scatter(xs[:, 0], xs[:, 1], s=3, c="white", edgecolors="black", linewidths=0.2)
        ax.set_title(name)
    for ax in axes[len(fits) :]:
        ax.set_visible(False)
    return fig
