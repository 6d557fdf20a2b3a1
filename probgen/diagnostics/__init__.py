"""Diagnostics of fitted models (variational-fit quality so far; divergences come next)."""

from probgen.diagnostics.vi import KHAT_GOOD, KHAT_OK, khat_from_log_weights, psis_khat

__all__ = ["KHAT_GOOD", "KHAT_OK", "khat_from_log_weights", "psis_khat"]
