"""Bundled small data sets, synthetic generators, and a CSV loader. Nothing is downloaded.

* ``faithful``: Old Faithful geyser eruptions (Azzalini & Bowman 1990), 272 x 2 (eruption
  length in minutes, waiting time in minutes); the classic two-cluster data set.
* ``blobs``: isotropic Gaussian clusters (3 by default, 2-D, seeded).
* ``moons``: two interleaving half circles with Gaussian noise (2-D, seeded).
"""

from __future__ import annotations

import csv
import math
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from probgen.data import posteriordb as posteriordb
from probgen.data.mnist import load_binarized_mnist, load_mnist_idx

__all__ = [
    "BUILTIN",
    "blobs",
    "faithful",
    "load",
    "load_binarized_mnist",
    "load_csv",
    "load_mnist_idx",
    "moons",
]

BUILTIN = ("faithful", "blobs", "moons")


def load_csv(path: str | Path, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Reads a numeric CSV (an optional header row is skipped) into an ``[N, D]`` tensor.

    Raises:
        ValueError: the file is missing, unreadable, empty, ragged or has a non-numeric cell
            (the message names the path, line and column).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read CSV {str(path)!r}: {err}") from err
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]  # a header
    if not rows:
        raise ValueError(f"CSV {str(path)!r} has no data rows")
    width = len(rows[0])
    values = []
    for line, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ValueError(
                f"CSV {str(path)!r}: data row {line} has {len(row)} columns, expected {width}"
            )
        try:
            values.append([float(c) for c in row])
        except ValueError as err:
            raise ValueError(f"CSV {str(path)!r}: data row {line} is not numeric ({err})") from err
        bad = [j for j, v in enumerate(values[-1], start=1) if not math.isfinite(v)]
        if bad:
            raise ValueError(
                f"CSV {str(path)!r}: data row {line}, column {bad[0]} is {row[bad[0] - 1]!r}; "
                "NaN/inf values are not allowed"
            )
    return torch.tensor(values, dtype=dtype)


def _numeric(row: list[str]) -> bool:
    try:
        [float(c) for c in row]
    except ValueError:
        return False
    return True


def faithful(dtype: torch.dtype = torch.float64) -> Tensor:
    """Old Faithful, ``[272, 2]``: eruption duration and waiting time, in minutes."""
    with resources.as_file(resources.files(__name__) / "faithful.csv") as path:
        return load_csv(path, dtype=dtype)


def blobs(
    n: int = 600,
    centers: int = 3,
    dim: int = 2,
    *,
    spread: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """``n`` points from ``centers`` isotropic Gaussians (std ``spread``) with centres drawn
    uniformly in ``[-10, 10]^dim``, as scikit-learn's ``make_blobs``."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(centers, dim, generator=g, dtype=dtype) * 20 - 10
    labels = torch.arange(n) % centers
    return means[labels] + spread * torch.randn(n, dim, generator=g, dtype=dtype)


def moons(
    n: int = 500, *, noise: float = 0.1, seed: int = 0, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Two interleaving half circles (scikit-learn's ``make_moons``), ``[n, 2]``."""
    g = torch.Generator().manual_seed(seed)
    n_out = n // 2
    t_out = torch.linspace(0, math.pi, n_out, dtype=dtype)
    t_in = torch.linspace(0, math.pi, n - n_out, dtype=dtype)
    outer = torch.stack([t_out.cos(), t_out.sin()], -1)
    inner = torch.stack([1 - t_in.cos(), 1 - t_in.sin() - 0.5], -1)
    x = torch.cat([outer, inner])
    return x + noise * torch.randn(x.shape, generator=g, dtype=dtype)


def load(name_or_path: str | Path, *, seed: int = 0) -> Tensor:
    """A built-in data set by name (``faithful``, ``blobs``, ``moons``) or a CSV file by path."""
    if str(name_or_path) == "faithful":
        return faithful()
    if str(name_or_path) == "blobs":
        return blobs(seed=seed)
    if str(name_or_path) == "moons":
        return moons(seed=seed)
    path = Path(name_or_path)
    if path.suffix.lower() != ".csv" and not path.exists():
        raise ValueError(
            f"unknown data {str(name_or_path)!r}: give a built-in name ({', '.join(BUILTIN)}) "
            "or the path of a CSV file"
        )
    return load_csv(path)
