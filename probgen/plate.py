"""``probgen.plate``: ``pyro.plate`` without re-broadcasting distributions that already fit it.

Inside ``pyro.plate``, every sample site's distribution is replaced by
``fn.expand(target_batch_shape)``, a new distribution object, even when ``fn`` already has the
plate's size at the plate's dimension (the usual case in amortised families, whose networks
emit one row per datum). ``expand`` to the same shape is the identity on values and densities,
so this plate skips it when every enclosing plate's dimension already matches and otherwise
defers to Pyro's broadcasting, unchanged. Everything else (independence frames, subsampling,
minibatch scales, traces, enumeration) is ``pyro.plate``'s own: the two are interchangeable in
any model or guide, and every Pyro inference algorithm sees the same program. It saves the two
distribution objects per site that ``expand`` builds, a few percent of a small VAE's step.
"""

from __future__ import annotations

from typing import Any

import pyro
from pyro.distributions.torch_distribution import TorchDistributionMixin
from pyro.poutine.broadcast_messenger import BroadcastMessenger
from pyro.poutine.subsample_messenger import SubsampleMessenger

__all__ = ["plate"]


def _already_broadcast(msg: Any) -> bool:
    """Whether ``msg['fn']``'s batch shape has every enclosing plate's size at its dimension."""
    fn = msg["fn"]
    if msg["done"] or msg["type"] != "sample" or not isinstance(fn, TorchDistributionMixin):
        return True  # BroadcastMessenger leaves such sites alone too
    shape = fn.batch_shape
    for frame in msg["cond_indep_stack"]:
        if frame.dim is None or frame.size == -1:
            continue
        if len(shape) < -frame.dim or shape[frame.dim] != frame.size:
            return False
    return True


class plate(pyro.plate):
    """Drop-in ``pyro.plate`` (same arguments) that skips no-op broadcasts; see the module."""

    def _process_message(self, msg: Any) -> None:
        SubsampleMessenger._process_message(self, msg)
        if not _already_broadcast(msg):
            BroadcastMessenger._pyro_sample(msg)
