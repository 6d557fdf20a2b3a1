"""A user's own Pyro program and data files, for ``probgen compare path/to/file.py:function``.

:func:`load_function` imports one function from a Python file; :func:`load_data` reads a data
set from a ``.csv``, ``.npz`` or ``.json`` file (or names a built-in one). Every failure is a
``ValueError`` that names the file and says what was wrong and what is allowed.
"""

from __future__ import annotations

import csv
import importlib.util
import inspect
import itertools
import json
import math
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probgen import data as datasets
from probgen.validation import check_data

__all__ = ["DATA_SUFFIXES", "is_program_spec", "load_data", "load_function"]

#: Data file formats :func:`load_data` reads.
DATA_SUFFIXES = (".csv", ".npz", ".json")

# Module names of loaded files: unique per load, so loading two files with the same name (or one
# file twice, after an edit) never returns a stale module from sys.modules.
_LOAD_COUNT = itertools.count()


def is_program_spec(text: str) -> bool:
    """Whether a ``compare`` target names a program file (``path.py:function``) rather than a
    registered family (family names are identifiers, without ``:``, ``/`` or ``.py``)."""
    return ":" in text or "/" in text or "\\" in text or text.endswith(".py")


# ----------------------------------------------------------------------------- programs
def _defined_callables(module: Any) -> list[str]:
    return sorted(
        name
        for name, value in vars(module).items()
        if callable(value)
        and not name.startswith("_")
        and getattr(value, "__module__", None) == module.__name__
    )


def _syntax_message(path: Path, err: SyntaxError) -> str:
    where = err.filename or str(path)
    message = f"syntax error in {where}, line {err.lineno}: {err.msg}"
    if err.text:
        line = err.text.rstrip("\n")
        stripped = line.lstrip()
        message += f"\n    {stripped}"
        if err.offset:
            column = max(err.offset - 1 - (len(line) - len(stripped)), 0)
            message += "\n    " + " " * column + "^"
    return message


def _import_file(path: Path) -> Any:
    """Executes ``path`` as a fresh module; its directory is on ``sys.path`` only meanwhile, so
    that it can import its sibling modules."""
    stem = re.sub(r"\W", "_", path.stem)
    name = f"probgen_user_program_{stem}_{next(_LOAD_COUNT)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and typing resolve through sys.modules
    directory = str(path.resolve().parent)
    sys.path.insert(0, directory)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        del sys.modules[name]
        raise ValueError(_syntax_message(path, err)) from err
    except Exception as err:
        del sys.modules[name]
        raise ValueError(f"importing {str(path)!r} failed: {type(err).__name__}: {err}") from err
    finally:
        if directory in sys.path:
            sys.path.remove(directory)  # the first occurrence: the one inserted above
    return module


def load_function(spec: str) -> Callable[..., Any]:
    """The Pyro model function ``f(x)`` named by ``spec``, ``"path/to/file.py:function"``.

    The file runs as a new module under a unique name (it is not imported as a package
    module); its directory is on ``sys.path`` while it runs, and taken off afterwards.

    Raises:
        ValueError: ``spec`` is malformed; the file is missing or not a ``.py`` file; it has a
            syntax error (the message shows the line) or raises when run; the attribute is
            missing (the message lists the callables the file defines), is not callable, is a
            class, or cannot be called as ``f(x)``.
    """
    path_text, sep, name = spec.rpartition(":")
    if not sep:
        raise ValueError(f"{spec!r} names no function: give the model as path/to/file.py:function")
    if not name.isidentifier():
        raise ValueError(
            f"{spec!r}: {name!r} is not a function name; give the model as path/to/file.py:function"
        )
    path = Path(path_text)
    if path.suffix != ".py":
        raise ValueError(f"model file {path_text!r} is not a Python file (.py)")
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"model file {path_text!r} {reason}")
    module = _import_file(path)
    defined = ", ".join(_defined_callables(module)) or "none"
    if not hasattr(module, name):
        raise ValueError(
            f"{path_text!r} has no attribute {name!r}; callables defined there: {defined}"
        )
    function = getattr(module, name)
    if not callable(function) or isinstance(function, type):
        kind = "class" if isinstance(function, type) else type(function).__name__
        kind = ("an " if kind[0] in "aeiou" else "a ") + kind
        raise ValueError(
            f"{spec!r} is {kind}, not a Pyro model function f(x); callables defined there: "
            f"{defined}"
        )
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return function
    try:
        signature.bind(None)
    except TypeError as err:
        raise ValueError(
            f"{spec!r} must take the data as its one positional argument, f(x); its signature "
            f"is {name}{signature}"
        ) from err
    return function


# ----------------------------------------------------------------------------- data
def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _finish(values: Any, where: str) -> Tensor:
    """``[N]`` or ``[N, D]`` float tensor of a numeric array (ints and bools become float64)."""
    array = np.asarray(values)
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float64)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{where}: the data must be numeric, got an array of dtype {array.dtype}")
    if array.ndim not in (1, 2):
        raise ValueError(
            f"{where}: the data must be [N] or [N, D] (rows of numbers), got shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(f"{where}: the data are empty (shape {array.shape})")
    return check_data(torch.from_numpy(np.ascontiguousarray(array)), where)


def _read_csv(path: Path) -> Tensor:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read CSV {str(path)!r}: {err}") from err
    lines = [
        (number, [c.strip() for c in row])
        for number, row in enumerate(csv.reader(text.splitlines()), start=1)
        if any(c.strip() for c in row)
    ]
    header: list[str] | None = None
    if lines and not any(_is_number(c) for c in lines[0][1]):
        header = lines.pop(0)[1]  # no numeric cell at all: column names
    if not lines:
        raise ValueError(f"CSV {str(path)!r} has no data rows")
    width = len(header or lines[0][1])
    values = []
    for number, row in lines:
        if len(row) != width:
            raise ValueError(
                f"CSV {str(path)!r}, line {number}: {len(row)} columns, expected {width}"
            )
        for j, cell in enumerate(row):
            name = f" ({header[j]!r})" if header else ""
            if not _is_number(cell):
                raise ValueError(
                    f"CSV {str(path)!r}, line {number}: column {j + 1}{name} is {cell!r}, not a "
                    "number; only numeric columns are allowed"
                )
            if not math.isfinite(float(cell)):
                raise ValueError(
                    f"CSV {str(path)!r}, line {number}: column {j + 1}{name} is {cell!r}; "
                    "NaN/inf values are not allowed"
                )
        values.append([float(c) for c in row])
    array = np.asarray(values, dtype=np.float64)
    return _finish(array[:, 0] if width == 1 else array, f"CSV {str(path)!r}")


def _read_npz(path: Path) -> Tensor:
    where = f"{str(path)!r}"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read {where} as a NumPy .npz archive: {err}") from err
    if isinstance(archive, np.ndarray):  # a bare .npy saved under a .npz name
        return _finish(archive, where)
    with archive:
        keys = list(archive.files)
        if "x" in keys:
            key = "x"
        elif len(keys) == 1:
            key = keys[0]
        else:
            raise ValueError(
                f"{where} holds {len(keys)} arrays ({', '.join(keys) or 'none'}); store the data "
                "under the key 'x' or as the only array"
            )
        try:
            array = archive[key]
        except ValueError as err:  # object arrays need pickle, which is never enabled
            raise ValueError(f"{where}: array {key!r} is not numeric ({err})") from err
    return _finish(array, f"{where}, array {key!r}")


def _is_json_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_json(path: Path) -> Tensor:
    where = f"{str(path)!r}"
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read JSON {where}: {err}") from err
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{where} is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        ) from err
    if isinstance(content, dict):
        if "x" not in content:
            raise ValueError(
                f"{where}: a JSON object must hold the data under the key 'x'; its keys are "
                f"{sorted(content)}"
            )
        content = content["x"]
    if not isinstance(content, list):
        raise ValueError(
            f'{where}: expected a list of numbers, a list of rows or {{"x": ...}}, got a JSON '
            f"{type(content).__name__}"
        )
    if not content:
        raise ValueError(f"{where}: the data are empty (an empty list)")
    if isinstance(content[0], list):
        width = len(content[0])
        for i, row in enumerate(content, start=1):
            if not isinstance(row, list) or len(row) != width:
                got = f"{len(row)} values" if isinstance(row, list) else json.dumps(row)
                raise ValueError(f"{where}: row {i} has {got}; expected a list of {width} numbers")
            for j, value in enumerate(row, start=1):
                if not _is_json_number(value):
                    raise ValueError(
                        f"{where}: row {i}, column {j} is {json.dumps(value)}, not a number"
                    )
    else:
        for i, value in enumerate(content, start=1):
            if not _is_json_number(value):
                raise ValueError(
                    f"{where}: element {i} is {json.dumps(value)}; expected all numbers or all "
                    "rows (lists of numbers)"
                )
    return _finish(np.asarray(content, dtype=np.float64), where)


_READERS: dict[str, Callable[[Path], Tensor]] = {
    ".csv": _read_csv,
    ".npz": _read_npz,
    ".json": _read_json,
}


def load_data(source: str | Path, *, seed: int = 0) -> Tensor:
    """A data set: a built-in name (:data:`probgen.data.BUILTIN`) or a file.

    * ``.csv``: numeric columns; a first row without any number is a header;
    * ``.npz``: the array ``x``, or the only array;
    * ``.json``: a list of numbers, a list of rows (lists of numbers), or ``{"x": ...}``.

    Returns:
        A floating tensor, ``[N, D]``, or ``[N]`` for a single column or a list of numbers.
        Text formats give float64; a ``.npz`` float array keeps its dtype (integer and boolean
        arrays become float64).

    Raises:
        ValueError: unknown name or suffix, missing or unreadable file, empty, ragged or
            non-numeric data, NaN/inf values (naming the line/row and column).
    """
    if str(source) in datasets.BUILTIN:
        return datasets.load(str(source), seed=seed)
    path = Path(source)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(
            f"unknown data {str(source)!r}: give a built-in name ({', '.join(datasets.BUILTIN)}) "
            f"or a {', '.join(DATA_SUFFIXES)} file"
        )
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"data file {str(source)!r} {reason}")
    return reader(path)
