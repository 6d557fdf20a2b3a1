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

from probgen.latent.codes import (
    INTERPOLATION_METHODS,
    MAX_LEGEND_LABELS,
    PARALLEL_SIN,
    LatentModel,
    decode,
    encode,
    interpolate,
    traverse,
)
from probgen.latent.figures import (
    interpolation_figure,
    latent_scatter,
    reconstruction_grid,
    sample_grid,
    traversal_figure,
)
from probgen.latent.measures import (
    ActiveUnits,
    ElboSplit,
    active_units,
    elbo_split,
    kl_per_dimension,
)

__all__ = [
    "INTERPOLATION_METHODS",
    "MAX_LEGEND_LABELS",
    "PARALLEL_SIN",
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
