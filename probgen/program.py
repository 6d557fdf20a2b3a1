"""``PyroProgram``: a user's plain Pyro model function, seen as a :class:`GenerativeModel`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor

from probgen.core import GenerativeModel

__all__ = ["PyroProgram"]


class PyroProgram(GenerativeModel):
    """Wraps ``model_fn(x)`` (and an optional ``guide_fn(x)``) so every engine can serve it.

    The function follows the probgen conventions: per-datum sites inside
    ``pyro.plate(data_plate, len(x))`` and the observed site named ``obs_site``. To support
    :meth:`sample`, it also accepts ``n`` (``model_fn(None, n=10)``).

    Args:
        model_fn: the Pyro model.
        guide_fn: an optional hand-written guide with the same signature.
        obs_site: name of the observed site.
        data_plate: name of the data plate.
    """

    def __init__(
        self,
        model_fn: Callable[..., Any],
        guide_fn: Callable[..., Any] | None = None,
        *,
        obs_site: str = "obs",
        data_plate: str = "data",
    ) -> None:
        super().__init__()
        self.model_fn = model_fn
        self.guide_fn = guide_fn
        self.obs_site = obs_site  # type: ignore[misc]
        self.data_plate = data_plate  # type: ignore[misc]
        self.can_generate = "n" in inspect.signature(model_fn).parameters

    def model(self, x: Tensor | None = None, *, n: int | None = None) -> Any:
        if n is None:
            return self.model_fn(x)
        if not self.can_generate:
            raise TypeError(
                f"{getattr(self.model_fn, '__name__', 'the model')} cannot generate data: give it "
                "a keyword argument n (model(None, n=10) draws 10 points)"
            )
        return self.model_fn(x, n=n)

    def guide(self, x: Tensor | None = None, *, n: int | None = None) -> Any:
        if self.guide_fn is None:
            raise NotImplementedError("this program has no hand-written guide")
        return self.guide_fn(x) if n is None else self.guide_fn(x, n=n)

    def has_guide(self) -> bool:
        return self.guide_fn is not None

    def hyperparameters(self) -> dict[str, Any]:
        return {"model_fn": getattr(self.model_fn, "__name__", repr(self.model_fn))}
