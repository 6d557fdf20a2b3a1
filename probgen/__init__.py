"""probgen: generative models as Pyro programs, fitted, compared and analysed by one framework.

The public surface::

    probgen.GenerativeModel   the model/guide contract families implement
    probgen.fit               EM / MAP / SVI / NUTS, one entry point, returns a Fit
    probgen.compare           several methods on one model, as a Comparison table and plots
    probgen.to_arviz          any Fit as ArviZ InferenceData
    probgen.data              bundled data sets and loaders
    probgen.diagnostics       divergences, information measures, ELBO/IWAE/k-hat
    probgen.evaluate          held-out log-likelihood (exact or importance-sampled), bits/dim,
                              the negative ELBO term by term (likelihood_bound)
    probgen.latent            encode/decode, interpolation, traversals, active units, KL split
    probgen.nn                MLP and conv building blocks shared by the families
    probgen.nn_time           time-conditioned networks (MLP, small U-Net) for diffusion
    probgen.families          the family registry (entry-point group "probgen.families")
"""

from probgen import calibration, data, diagnostics, evaluate, latent, nn, nn_time
from probgen.compare import Comparison, compare
from probgen.core import GenerativeModel, NotFittedError
from probgen.infer.em import ConvergenceWarning
from probgen.infer.fit import fit
from probgen.infer.result import Fit
from probgen.infer.svi import NonFiniteError
from probgen.program import PyroProgram
from probgen.registry import families, get_family


def to_arviz(fit: Fit, data: object, **kwargs: object) -> object:
    """``Fit`` -> ``arviz.InferenceData`` (see :func:`probgen.arviz.to_arviz`).

    Imported lazily so that ``import probgen`` does not pay for ArviZ/xarray.
    """
    from probgen.arviz import to_arviz as convert

    return convert(fit, data, **kwargs)  # type: ignore[arg-type]


__all__ = [
    "Comparison",
    "ConvergenceWarning",
    "Fit",
    "GenerativeModel",
    "NonFiniteError",
    "NotFittedError",
    "PyroProgram",
    "calibration",
    "compare",
    "data",
    "diagnostics",
    "evaluate",
    "families",
    "fit",
    "get_family",
    "latent",
    "nn",
    "nn_time",
    "to_arviz",
]
__version__ = "0.1.0"
