"""Matplotlib figures of fits. Built on ``matplotlib.figure.Figure``, so no GUI backend is
needed and nothing global (pyplot's current figure) is touched."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from matplotlib.figure import Figure

from probgen.diagnostics.accuracy import flatten_draws
from probgen.infer.result import Fit

__all__ = ["densities", "khat_bars", "loss_curves", "posterior_pairs"]

#: k-hat above which importance sampling from a guide is unreliable (Vehtari et al. 2024).
KHAT_LINE = 0.7
#: Parameters shown by :func:`posterior_pairs` (a 4 x 4 grid stays readable).
MAX_PAIR_PARAMS = 4
#: Draws plotted per method and panel (more only darken the scatter).
MAX_PAIR_DRAWS = 1000


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


def khat_bars(khats: Mapping[str, float]) -> Figure:
    """PSIS k-hat per method as bars, with the 0.7 reliability line (infinite k-hats are drawn
    at the top of the axis and labelled)."""
    fig = Figure(figsize=(1.0 + 0.9 * len(khats), 2.8), layout="constrained")
    ax = fig.subplots()
    names = list(khats)
    finite = [v for v in khats.values() if math.isfinite(v)]
    top = max([KHAT_LINE + 0.3, *[v + 0.1 for v in finite]])
    values = [min(v, top) if math.isfinite(v) else (top if v > 0 else 0.0) for v in khats.values()]
    colors = ["tab:red" if v > KHAT_LINE else "tab:green" for v in khats.values()]
    ax.bar(names, values, color=colors)
    for i, v in enumerate(khats.values()):
        ax.annotate(f"{v:.2f}", (i, values[i]), ha="center", va="bottom", fontsize=8)
    ax.axhline(KHAT_LINE, color="black", ls="--", lw=1)
    ax.set_ylabel("PSIS k-hat")
    ax.set_ylim(min(0.0, *values) - 0.05, top + 0.15)
    ax.tick_params(axis="x", labelrotation=30)
    return fig


def _flat(draws: Mapping[str, torch.Tensor], names: list[str] | None = None) -> dict[str, Any]:
    """Scalar parameters ``site[i,j]`` -> 1-D draws (chains pooled), named and ordered as in
    :func:`probgen.diagnostics.posterior_accuracy`."""
    pooled = {s: v.detach().double().cpu().flatten(0, 1) for s, v in draws.items()}
    keys, matrix = flatten_draws(pooled, list(pooled))
    return {k: matrix[:, j].numpy() for j, k in enumerate(keys) if names is None or k in names}


def posterior_pairs(
    fits: Mapping[str, Fit], reference: Mapping[str, torch.Tensor] | None = None
) -> Figure:
    """Pairwise scatter of up to four scalar parameters (histograms on the diagonal): each
    method's posterior draws (a point fit as a marker) over the reference draws in grey."""
    source = reference or next((f.draws for f in fits.values() if f.draws is not None), None)
    if source is None:
        raise ValueError("posterior_pairs needs a reference or a fit with draws")
    names = list(_flat(source))[:MAX_PAIR_PARAMS]
    k = len(names)
    fig = Figure(figsize=(2.3 * k + 1.5, 2.3 * k), layout="constrained")
    axes = fig.subplots(k, k, squeeze=False)
    layers: list[tuple[str, dict[str, Any], bool]] = []
    if reference is not None:
        layers.append(("reference", _flat(reference, names), False))
    for name, f in fits.items():
        point = f.draws is None
        draws = f.draws if f.draws is not None else {s: v[None, None] for s, v in f.params.items()}
        layers.append((name, _flat(draws, names), point))
    for li, (label, flat, point) in enumerate(layers):
        color = "0.6" if label == "reference" else f"C{li % 10}"
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                ax = axes[i, j]
                if a not in flat or b not in flat or j > i:
                    ax.set_visible(j <= i)
                    continue
                va, vb = flat[a][:MAX_PAIR_DRAWS], flat[b][:MAX_PAIR_DRAWS]
                if i == j:
                    if point:
                        ax.axvline(va[0], color=color, lw=1.5)
                    else:
                        ax.hist(va, bins=30, density=True, histtype="step", color=color)
                elif point:
                    ax.plot(vb[0], va[0], marker="X", ms=9, color=color, ls="none")
                else:
                    ax.scatter(vb, va, s=2, alpha=0.35, color=color, rasterized=True)
                if i == k - 1:
                    ax.set_xlabel(b, fontsize=8)
                if j == 0 and i != j:
                    ax.set_ylabel(a, fontsize=8)
        axes[0, 0].plot([], [], color=color, label=label, marker="X" if point else "o", ls="")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside right upper", fontsize=8)
    return fig
