"""Reader for a local copy of posteriordb (Magnusson et al. 2024, "posteriordb: testing,
benchmarking and developing Bayesian inference algorithms", arXiv:2407.04967).

The database is a folder ``posterior_database/`` laid out as in stan-dev/posteriordb::

    posteriors/<posterior>.json                      names the data, the model, the reference
    data/data/<data>.json.zip                        the Stan data, zipped JSON
    reference_posteriors/draws/draws/<ref>.json.zip  reference draws: a JSON list, one object per
                                                     chain, Stan flat name -> list of draws
    reference_posteriors/summary_statistics/<statistic>/<statistic>/<ref>.json

A posterior such as ``eight_schools-eight_schools_centered`` may borrow the reference draws of
another (its ``reference_posterior_name``); the functions here follow that link. Nothing is
downloaded: the caller passes the root of a local copy.

Stan flat names: a scalar is ``"mu"``; an element of a vector, array or matrix is
``"theta[i]"``, ``"Sigma[i,j]"`` with 1-based indices. Stan writes the elements of a matrix in
column-major order (``Sigma[1,1]``, ``Sigma[2,1]``, ``Sigma[1,2]``, ...); :func:`to_sites` places
each element by the indices in its name, so the order of the keys does not matter and
``Sigma[i,j]`` lands at ``[..., i - 1, j - 1]`` of the row-major tensor.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "list_posteriors",
    "load_data",
    "posterior_info",
    "reference_draws",
    "reference_summary",
    "to_sites",
]

_FLAT_NAME = re.compile(r"^(?P<base>[A-Za-z][A-Za-z0-9_]*)(?:\[(?P<index>[0-9, ]+)\])?$")


def _database(root: str | Path) -> Path:
    """The ``posterior_database`` folder: ``root`` itself or its child of that name."""
    path = Path(root)
    if (path / "posteriors").is_dir():
        return path
    if (path / "posterior_database" / "posteriors").is_dir():
        return path / "posterior_database"
    raise ValueError(
        f"root {str(path)!r} is not a posteriordb copy: expected a folder 'posteriors' in it or "
        "in its subfolder 'posterior_database'"
    )


def _read_json(path: Path) -> Any:
    """Parses ``path``, or the single member of ``path`` + ``.zip`` when only that exists."""
    zipped = path.with_name(path.name + ".zip")
    try:
        if path.is_file():
            text = path.read_text(encoding="utf-8")
        elif zipped.is_file():
            with zipfile.ZipFile(zipped) as archive:
                members = [m for m in archive.namelist() if not m.endswith("/")]
                if len(members) != 1:
                    raise ValueError(
                        f"{str(zipped)!r} must hold exactly one JSON file, found {members}"
                    )
                text = archive.read(members[0]).decode("utf-8")
            path = zipped
        else:
            raise ValueError(f"missing file: neither {str(path)!r} nor {str(zipped)!r} exists")
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {str(path)!r}: {err}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"malformed JSON in {str(path)!r}: {err}") from err


def list_posteriors(root: str | Path) -> list[str]:
    """Names of the posteriors in the database, sorted (``"<data>-<model>"``)."""
    return sorted(p.name[: -len(".json")] for p in (_database(root) / "posteriors").glob("*.json"))


def posterior_info(root: str | Path, posterior_name: str) -> dict[str, Any]:
    """The posterior's JSON record: ``data_name``, ``model_name``, ``reference_posterior_name``,
    ``dimensions``, ...

    Raises:
        ValueError: unknown name (the message lists the available ones), unreadable or
            malformed file, or a record without ``data_name``.
    """
    db = _database(root)
    available = list_posteriors(db)
    if posterior_name not in available:  # also keeps names from reaching outside the folder
        raise ValueError(f"unknown posterior {posterior_name!r}; available: {', '.join(available)}")
    path = db / "posteriors" / f"{posterior_name}.json"
    info = _read_json(path)
    if not isinstance(info, dict) or not isinstance(info.get("data_name"), str):
        raise ValueError(f"malformed posterior record {str(path)!r}: it must name its data_name")
    return info


def _numeric(value: Any, where: str) -> Any:
    """JSON numbers as Python scalars, (nested) lists as NumPy arrays (int64 or float64)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{where} is {value!r}; Stan data are numbers or arrays of numbers")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, list):
        try:
            array = np.asarray(value)
        except ValueError as err:  # ragged nesting
            raise ValueError(f"{where} is not a rectangular array: {err}") from err
        if array.size and not (
            np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
        ):
            raise ValueError(f"{where} must hold numbers, got an array of dtype {array.dtype}")
        return array.astype(np.int64 if np.issubdtype(array.dtype, np.integer) else np.float64)
    raise ValueError(f"{where} has type {type(value).__name__}; expected a number or a list")


def load_data(root: str | Path, posterior_name: str) -> dict[str, Any]:
    """The Stan data of a posterior: scalars as ``int``/``float``, arrays as NumPy arrays.

    Example: ``load_data(root, "eight_schools-eight_schools_noncentered")`` gives
    ``{"J": 8, "y": array([28, 8, ...]), "sigma": array([15, 10, ...])}``.

    Raises:
        ValueError: unknown posterior, missing or malformed data file, non-numeric entries.
    """
    info = posterior_info(root, posterior_name)
    path = _database(root) / "data" / "data" / f"{info['data_name']}.json"
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise ValueError(f"malformed data {str(path)!r}: expected a JSON object, got {type(raw)}")
    return {k: _numeric(v, f"data[{k!r}] of {str(path)!r}") for k, v in raw.items()}


def _reference_name(root: str | Path, posterior_name: str) -> str:
    ref = posterior_info(root, posterior_name).get("reference_posterior_name")
    if not isinstance(ref, str):
        raise ValueError(f"posterior {posterior_name!r} has no reference posterior in posteriordb")
    return ref


def reference_draws(root: str | Path, posterior_name: str) -> dict[str, np.ndarray]:
    """The reference draws of a posterior, Stan flat name -> ``[chains, draws]`` float64.

    The file is a JSON list with one object per chain mapping each flat name (``"theta[1]"``)
    to that chain's draws; for the posteriors bundled here, 10 chains of 1000 (thinned) draws.

    Raises:
        ValueError: no reference posterior, missing file, malformed JSON, or chains that
            disagree on the names or the number of draws.
    """
    ref = _reference_name(root, posterior_name)
    path = _database(root) / "reference_posteriors" / "draws" / "draws" / f"{ref}.json"
    chains = _read_json(path)
    if not isinstance(chains, list) or not chains or not all(isinstance(c, dict) for c in chains):
        raise ValueError(
            f"malformed reference draws {str(path)!r}: expected a non-empty list of chains, each "
            "an object mapping parameter names to lists of draws"
        )
    names = list(chains[0])
    out: dict[str, np.ndarray] = {}
    for name in names:
        try:
            rows = [c[name] for c in chains]
        except KeyError:
            bad = next(i for i, c in enumerate(chains) if name not in c)
            raise ValueError(
                f"malformed reference draws {str(path)!r}: chain {bad} lacks {name!r}"
            ) from None
        if len({len(r) if isinstance(r, list) else -1 for r in rows}) != 1:
            raise ValueError(
                f"malformed reference draws {str(path)!r}: {name!r} has unequal numbers of draws "
                "across chains"
            )
        value = _numeric(rows, f"reference draws of {name!r} in {str(path)!r}")
        out[name] = np.asarray(value, dtype=np.float64)
    extra = {k for c in chains for k in c} - set(names)
    if extra:
        raise ValueError(
            f"malformed reference draws {str(path)!r}: chains disagree on names ({sorted(extra)})"
        )
    return out


def reference_summary(
    root: str | Path, posterior_name: str, statistic: str = "mean_value"
) -> dict[str, dict[str, float]]:
    """A published summary of the reference draws: column -> {Stan flat name -> value}.

    ``statistic`` is ``"mean_value"`` (columns ``mean_value`` and its Monte Carlo standard error
    ``mcse_mean``) or ``"mean_squared_value"``.

    Raises:
        ValueError: unknown statistic, no reference posterior, missing or malformed file.
    """
    allowed = ("mean_value", "mean_squared_value")
    if statistic not in allowed:
        raise ValueError(f"statistic must be one of {', '.join(allowed)}; got {statistic!r}")
    ref = _reference_name(root, posterior_name)
    base = _database(root) / "reference_posteriors" / "summary_statistics" / statistic
    path = base / statistic / f"{ref}.json"
    raw = _read_json(path)
    names = raw.get("names") if isinstance(raw, dict) else None
    if not isinstance(names, list):
        raise ValueError(f"malformed summary {str(path)!r}: expected an object with 'names'")
    out = {}
    for column, values in raw.items():
        if column == "names":
            continue
        if not isinstance(values, list) or len(values) != len(names):
            raise ValueError(
                f"malformed summary {str(path)!r}: column {column!r} must list one value per name"
            )
        out[column] = {n: float(v) for n, v in zip(names, values, strict=True)}
    return out


def _parse(name: str) -> tuple[str, tuple[int, ...]]:
    match = _FLAT_NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a Stan flat name like 'mu' or 'theta[1,2]'")
    index = match["index"]
    return match["base"], () if index is None else tuple(int(i) for i in index.split(","))


def to_sites(flat: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Tensor]:
    """Stan flat names -> site tensors ``[chains, draws, *shape]`` (float64).

    ``flat["theta[i,j]"]`` (1-based) becomes ``out["theta"][:, :, i - 1, j - 1]``; a scalar
    site (shape ``()``) is the flat name without brackets.

    Args:
        flat: Stan flat name -> array ``[chains, draws]`` (e.g. :func:`reference_draws`).
        shapes: site name -> shape, e.g. ``{"mu": (), "theta": (8,)}``.

    Raises:
        ValueError: a name of ``flat`` that no site of ``shapes`` has (unknown site, or an index
            out of range), an element of a site that ``flat`` lacks, or draws of unequal shapes.
    """
    draws_shape: tuple[int, ...] | None = None
    out: dict[str, np.ndarray] = {}
    filled: dict[str, np.ndarray] = {}
    for name, value in flat.items():
        base, index = _parse(name)
        if base not in shapes:
            raise ValueError(
                f"unexpected parameter {name!r}: it is not among the sites {sorted(shapes)}"
            )
        shape = tuple(shapes[base])
        if len(index) != len(shape) or any(
            not 1 <= i <= s for i, s in zip(index, shape, strict=True)
        ):
            expected = base if not shape else f"{base}[{','.join(map(str, shape))}] (1-based)"
            raise ValueError(
                f"unexpected parameter {name!r}: site {base!r} has elements {expected}"
            )
        array = np.asarray(value, dtype=np.float64)
        if draws_shape is None:
            draws_shape = array.shape
        if array.ndim != 2 or array.shape != draws_shape:
            raise ValueError(
                f"draws of {name!r} have shape {array.shape}; every parameter needs the same "
                f"[chains, draws] shape {draws_shape}"
            )
        if base not in out:  # site dimensions first while filling: [*shape, chains, draws]
            out[base] = np.empty((*shape, *array.shape))
            filled[base] = np.zeros(shape, dtype=bool)
        position = tuple(i - 1 for i in index)
        out[base][position] = array
        filled[base][position] = True
    for base, shape in shapes.items():
        if base not in filled:
            raise ValueError(f"missing parameter {base!r}: no draws of it (or its elements)")
        if not filled[base].all():
            first = tuple(int(i) + 1 for i in np.argwhere(~filled[base])[0])
            missing = f"{base}[{','.join(map(str, first))}]"
            count = int((~filled[base]).sum())
            raise ValueError(
                f"missing parameter {missing!r} ({count} of the {math.prod(shape)} elements of "
                f"{base!r} lack draws)"
            )
    return {k: torch.from_numpy(np.moveaxis(v, (-2, -1), (0, 1)).copy()) for k, v in out.items()}
