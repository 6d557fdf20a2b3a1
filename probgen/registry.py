"""Families found by name through the entry-point group ``probgen.families``.

``probgen`` never imports ``models`` by name: a package (ours or a third party's) declares

    [project.entry-points."probgen.families"]
    gmm = "models.gmm:GaussianMixture"

and ``get_family("gmm")`` loads it. A family is a :class:`~probgen.GenerativeModel` subclass
whose constructor takes ``n_components`` where that makes sense.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

__all__ = ["GROUP", "families", "get_family"]

GROUP = "probgen.families"


def families() -> dict[str, Any]:
    """Registered family names -> their (not yet loaded) entry points."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def get_family(name: str) -> type:
    """The family class registered under ``name``.

    Raises:
        ValueError: no family of that name is installed (the message lists those that are).
    """
    found = families()
    if name not in found:
        known = ", ".join(sorted(found)) or "none (is probgen installed with `pip install -e .`?)"
        raise ValueError(f"unknown family {name!r}; installed families: {known}")
    return found[name].load()  # type: ignore[no-any-return]
