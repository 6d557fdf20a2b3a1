"""Divergences, information measures and variational diagnostics, batched in torch.

Three kinds of input, told apart by type: a ``torch.distributions.Distribution`` (Pyro's too)
is a density (closed forms where they exist, else Monte Carlo with a standard error); a plain
tensor is probability vectors over its last dimension (exact); :class:`Samples` wraps draws for
the nonparametric estimators. Every measure returns an :class:`Estimate` (value, standard error,
estimator, unit), in nats unless ``base=2`` (bits) is asked for. The one exception is
:func:`psis_khat`: a Pareto shape is read against fixed thresholds, not as an estimate with an
error bar, so it is a float (a tensor per datum), as in Pyro and ArviZ.

=====================  ================================================================
divergences            :func:`kl_divergence`, :func:`js_divergence`, :func:`total_variation`,
                       :func:`hellinger`, :func:`renyi_divergence`, :func:`cross_entropy`
information            :func:`entropy`, :func:`conditional_entropy`, :func:`mutual_information`,
                       :func:`self_information`, :func:`latent_mutual_information`
samples                :func:`mmd`, :func:`classifier_two_sample_test`, :func:`wasserstein`,
                       :func:`frechet_distance` (and the kNN estimators behind ``Samples``)
variational fits       :func:`elbo`, :func:`iwae_bound`, :func:`elbo_gap`, :func:`psis_khat`
=====================  ================================================================
"""

from probgen.diagnostics._base import Estimate, Samples
from probgen.diagnostics.accuracy import (
    MEAN_ERROR_OK,
    SD_ERROR_OK,
    AccuracyReport,
    ParameterAccuracy,
    posterior_accuracy,
)
from probgen.diagnostics.divergences import (
    cross_entropy,
    entropy,
    hellinger,
    js_divergence,
    kl_divergence,
    renyi_divergence,
    total_variation,
)
from probgen.diagnostics.information import (
    conditional_entropy,
    latent_mutual_information,
    mutual_information,
    self_information,
)
from probgen.diagnostics.knn import knn_entropy, knn_kl_divergence, ksg_mutual_information
from probgen.diagnostics.transport import frechet_distance, wasserstein
from probgen.diagnostics.two_sample import classifier_two_sample_test, mmd
from probgen.diagnostics.vi import (
    KHAT_BAD,
    KHAT_GOOD,
    KHAT_OK,
    elbo,
    elbo_gap,
    iwae_bound,
    khat_from_log_weights,
    khat_interpretation,
    khat_threshold,
    log_importance_weights,
    psis_khat,
)

__all__ = [
    "KHAT_BAD",
    "KHAT_GOOD",
    "KHAT_OK",
    "MEAN_ERROR_OK",
    "SD_ERROR_OK",
    "AccuracyReport",
    "Estimate",
    "ParameterAccuracy",
    "Samples",
    "classifier_two_sample_test",
    "conditional_entropy",
    "cross_entropy",
    "elbo",
    "elbo_gap",
    "entropy",
    "frechet_distance",
    "hellinger",
    "iwae_bound",
    "js_divergence",
    "khat_from_log_weights",
    "khat_interpretation",
    "khat_threshold",
    "kl_divergence",
    "knn_entropy",
    "knn_kl_divergence",
    "ksg_mutual_information",
    "latent_mutual_information",
    "log_importance_weights",
    "mmd",
    "mutual_information",
    "posterior_accuracy",
    "psis_khat",
    "renyi_divergence",
    "self_information",
    "total_variation",
    "wasserstein",
]
