"""``probgen.plate`` behaves exactly as ``pyro.plate``: same sites, shapes, scales and densities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from probgen.plate import plate

#: Both plates run the same arithmetic on the same values: densities agree to rounding.
RTOL = 1e-12


def _program(plate_cls: Callable[..., Any]) -> Callable[[torch.Tensor], None]:
    def model(x: torch.Tensor) -> None:
        loc = pyro.sample("loc", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        with plate_cls("components", 2, dim=-2):
            # batch shape (): broadcast to [2, 1] by the plate
            s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
        with plate_cls("data", x.shape[0], subsample_size=4, dim=-1) as idx:
            # already [4, 3] per datum: the plate has nothing to broadcast
            z = pyro.sample("z", dist.Normal(loc.expand(4, 3), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(z.sum(-1), s[0]), obs=x[idx])

    return model


@pytest.mark.parametrize("seed", [0, 1])
def test_same_trace_as_pyro_plate(seed: int) -> None:
    x = torch.randn(10, dtype=torch.float64).float()
    traces = {}
    for name, cls in (("pyro", pyro.plate), ("probgen", plate)):
        pyro.set_rng_seed(seed)
        traces[name] = poutine.trace(_program(cls)).get_trace(x)
    ours, theirs = traces["probgen"], traces["pyro"]
    assert list(ours.nodes) == list(theirs.nodes)
    for name, site in theirs.nodes.items():
        if site["type"] != "sample":
            continue
        mine = ours.nodes[name]
        torch.testing.assert_close(mine["value"], site["value"], rtol=0, atol=0)
        if name in ("components", "data"):  # the plates' own subsample sites
            continue
        assert mine["fn"].batch_shape == site["fn"].batch_shape, name
        assert mine["scale"] == site["scale"], name  # subsampling scale N / B
        assert [f.name for f in mine["cond_indep_stack"]] == [
            f.name for f in site["cond_indep_stack"]
        ]
    torch.testing.assert_close(ours.log_prob_sum(), theirs.log_prob_sum(), rtol=RTOL, atol=0)


def test_broadcasts_when_needed_and_checks_sizes() -> None:
    def scalar() -> None:
        with plate("data", 5):
            pyro.sample("a", dist.Normal(0.0, 1.0))

    def mismatched() -> None:
        with plate("data", 5):
            pyro.sample("b", dist.Normal(torch.zeros(3), 1.0))

    assert poutine.trace(scalar).get_trace().nodes["a"]["fn"].batch_shape == (5,)
    with pytest.raises(ValueError, match="Shape mismatch inside plate"):
        poutine.trace(mismatched).get_trace()
