"""MNIST from local files: the fixed binarized MNIST and LeCun's IDX files. Nothing is downloaded.

* :func:`load_binarized_mnist`: the standard *fixed* binarization of Larochelle & Murray (2011),
  50,000 / 10,000 / 10,000 train / valid / test images in ``{0, 1}``; the benchmark set of
  density-estimation papers (Burda et al. 2016 report IWAE log-likelihoods on it).
* :func:`load_mnist_idx`: the original grey-level MNIST (or any IDX file of unsigned bytes, e.g.
  Fashion-MNIST) scaled to ``[0, 1]``, optionally with its labels.

Both take paths; fetching the files is the caller's business.
"""

from __future__ import annotations

import gzip
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Literal, overload

import numpy as np
import torch
from torch import Tensor

__all__ = ["BINARIZED_MNIST_SPLITS", "load_binarized_mnist", "load_mnist_idx"]

BINARIZED_MNIST_SPLITS = ("train", "valid", "test")
_PIXELS = 28 * 28
# IDX magic: two zero bytes, a type code (0x08 = unsigned byte) and the number of dimensions.
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
_GZIP_MAGIC = b"\x1f\x8b"
_BINARIZE = (None, "threshold")


def load_binarized_mnist(
    path: str | Path, split: str = "train", *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """One split of the fixed binarized MNIST as an ``[N, 784]`` tensor of zeros and ones.

    This is the binarization that Larochelle & Murray (2011) drew once, by sampling each pixel
    from a Bernoulli with the grey level as probability (as in Salakhutdinov & Murray 2008), and
    published with a 50,000 / 10,000 / 10,000 train / valid / test split. Because the draw is fixed,
    log-likelihoods on its test set are comparable across papers (e.g. Burda et al. 2016 report
    86.76 nats for a VAE and 84.78 for an IWAE with k = 50). Dynamically re-binarized MNIST gives
    different numbers; for grey levels or a threshold use :func:`load_mnist_idx`.

    Two layouts are accepted:

    * an ``.npz`` archive with arrays ``train``, ``valid`` and ``test``, each ``[N, 784]`` (any
      numeric dtype, usually ``uint8``) holding only 0 and 1;
    * a directory holding the original text files ``binarized_mnist_{train,valid,test}.amat``: one
      image per line, 784 space-separated ``0``/``1`` integers in row-major (28 x 28) order.

    Args:
        path: the ``.npz`` file, or the directory with the ``.amat`` files.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        dtype: dtype of the result (any torch dtype; the values are exactly 0 and 1).

    Returns:
        Tensor ``[N, 784]`` of ``dtype`` with entries in ``{0, 1}``, rows in file order.

    Raises:
        ValueError: unknown ``split``; the file is missing or unreadable; the ``.npz`` lacks the
            split; the array is not ``[N, 784]`` with ``N >= 1``; a row of an ``.amat`` file has
            another length; or an entry is neither 0 nor 1 (the message gives how many).

    References:
        Larochelle & Murray, "The Neural Autoregressive Distribution Estimator", AISTATS 2011.
        Salakhutdinov & Murray, "On the Quantitative Analysis of Deep Belief Networks",
        ICML 2008.
        Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016,
        arXiv:1509.00519.

    Example:
        >>> x = load_binarized_mnist("data/binarized_mnist.npz", "test")  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        torch.Size([10000, 784])
    """
    if split not in BINARIZED_MNIST_SPLITS:
        raise ValueError(f"split must be one of {', '.join(BINARIZED_MNIST_SPLITS)}; got {split!r}")
    path = Path(path)
    if path.is_dir():
        source = path / f"binarized_mnist_{split}.amat"
        array = _read_amat(source)
    else:
        source = path
        array = _read_npz_split(source, split)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] != _PIXELS:
        raise ValueError(
            f"binarized MNIST {str(source)!r} split {split!r} has shape {tuple(array.shape)}; "
            f"expected [N, {_PIXELS}] with N >= 1"
        )
    # NaN compares unequal to both, so it counts as bad as well.
    bad = int(np.count_nonzero((array != 0) & (array != 1)))
    if bad:
        raise ValueError(
            f"binarized MNIST {str(source)!r} split {split!r} has {bad} entries that are not 0 "
            f"or 1 (of {array.size}); is this a grey-level file? use load_mnist_idx for those"
        )
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype)


def _read_npz_split(path: Path, split: str) -> np.ndarray:
    if not path.is_file():
        raise ValueError(
            f"binarized MNIST file {str(path)!r} does not exist; give an .npz file with arrays "
            f"{', '.join(BINARIZED_MNIST_SPLITS)} or a directory of binarized_mnist_*.amat files"
        )
    files: list[str] | None = None
    array: np.ndarray | None = None
    try:
        # Our own handle: np.load leaks the file it opened when the archive is corrupt.
        with path.open("rb") as handle:
            loaded = np.load(handle, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                files = list(loaded.files)
                if split in files:
                    array = np.asarray(loaded[split])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read binarized MNIST {str(path)!r}: {err}") from err
    if files is None:
        raise ValueError(
            f"binarized MNIST {str(path)!r} is a single .npy array, not an .npz archive with "
            f"arrays {', '.join(BINARIZED_MNIST_SPLITS)}"
        )
    if array is None:
        raise ValueError(
            f"binarized MNIST {str(path)!r} has no array {split!r} "
            f"(it has: {', '.join(files) or 'none'})"
        )
    return array


def _read_amat(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ValueError(
            f"binarized MNIST file {str(path)!r} does not exist; the directory should hold "
            "binarized_mnist_{train,valid,test}.amat (or give the path of an .npz file)"
        )
    try:
        with warnings.catch_warnings():
            # An empty file only warns; it is rejected below as having no rows.
            warnings.simplefilter("ignore", UserWarning)
            # uint8 parsing is C-fast (~0.5 s for the 50,000-row training file) and rejects
            # anything that is not a small non-negative integer, naming its row and column.
            return np.loadtxt(path, dtype=np.uint8, ndmin=2)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read binarized MNIST {str(path)!r}: {err}") from err


@overload
def load_mnist_idx(
    images: str | Path,
    labels: None = None,
    *,
    dtype: torch.dtype = ...,
    binarize: Literal["threshold"] | None = ...,
) -> Tensor: ...


@overload
def load_mnist_idx(
    images: str | Path,
    labels: str | Path,
    *,
    dtype: torch.dtype = ...,
    binarize: Literal["threshold"] | None = ...,
) -> tuple[Tensor, Tensor]: ...


def load_mnist_idx(
    images: str | Path,
    labels: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    binarize: Literal["threshold"] | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """MNIST images (and optionally labels) from IDX files, as ``[N, 784]`` grey levels in [0, 1].

    IDX (LeCun et al. 1998) is a big-endian binary format: a 4-byte magic number (two zero bytes,
    a type code, the number of dimensions), one unsigned 32-bit size per dimension, then the
    data in row-major order. MNIST images are ``0x00000803`` (unsigned bytes, ``[N, 28, 28]``,
    0 = background, 255 = ink) and labels ``0x00000801`` (unsigned bytes, ``[N]``, digits 0-9).
    Files may be gzip-compressed as distributed (``*-ubyte.gz``); compression is recognised by
    the gzip magic bytes, not by the file name. Other 28 x 28 sets in the same format
    (Fashion-MNIST, KMNIST) load as well; images of another size give ``[N, rows * cols]``.

    Args:
        images: the ``*-images-idx3-ubyte[.gz]`` file.
        labels: the matching ``*-labels-idx1-ubyte[.gz]`` file, or ``None`` for images only.
        dtype: dtype of the images; must be floating point unless ``binarize`` is given.
        binarize: ``None`` keeps the grey levels ``x = pixel / 255``; ``"threshold"`` gives
            ``1[x > 0.5]`` (i.e. ``pixel >= 128``). For the standard *fixed* stochastic
            binarization, whose likelihoods papers report, use :func:`load_binarized_mnist`.

    Returns:
        Images ``[N, 784]`` of ``dtype`` (row-major pixels), or ``(images, labels)`` with
        labels ``[N]`` int64 when ``labels`` is given.

    Raises:
        ValueError: a file is missing or unreadable (including a corrupt gzip stream), has the
            wrong magic number, is shorter or longer than its header says (the message gives the
            expected and actual byte counts), or the label count differs from the image count;
            ``binarize`` is unknown; ``dtype`` is not floating point for grey levels.

    References:
        LeCun, Bottou, Bengio & Haffner, "Gradient-Based Learning Applied to Document
        Recognition", Proceedings of the IEEE 86(11), 1998.

    Example:
        >>> x, y = load_mnist_idx(  # doctest: +SKIP
        ...     "mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz"
        ... )
        >>> x.shape, y.shape  # doctest: +SKIP
        (torch.Size([10000, 784]), torch.Size([10000]))
    """
    if binarize not in _BINARIZE:
        raise ValueError(
            f"binarize must be None (grey levels) or 'threshold'; got {binarize!r} "
            "(for the fixed binarized MNIST use load_binarized_mnist)"
        )
    if binarize is None and not dtype.is_floating_point:
        raise ValueError(
            f"dtype must be floating point for grey levels in [0, 1]; got {dtype} "
            "(integer or bool dtypes are allowed with binarize='threshold')"
        )
    pixels = _read_idx(Path(images), _IDX_IMAGES_MAGIC)
    flat = pixels.reshape(pixels.shape[0], -1)
    if binarize == "threshold":
        # On the integer scale, so that no float rounding can move a pixel across 0.5.
        x = torch.from_numpy(flat >= 128).to(dtype)
    else:
        x = torch.from_numpy(flat.copy()).to(dtype).div_(255)
    if labels is None:
        return x
    y = _read_idx(Path(labels), _IDX_LABELS_MAGIC)
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels {str(labels)!r} has {y.shape[0]} entries but images {str(images)!r} has "
            f"{x.shape[0]}; they must come from the same split"
        )
    return x, torch.from_numpy(y.astype(np.int64))


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """The array of an unsigned-byte IDX file, checked against ``magic`` and its own header."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read IDX file {str(path)!r}: {err}") from err
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"IDX file {str(path)!r} is not a valid gzip stream: {err}") from err
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        shown = "none (file shorter than 4 bytes)" if found is None else f"0x{found:08X}"
        raise ValueError(
            f"IDX file {str(path)!r} has magic number {shown}; expected 0x{magic:08X} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    if len(raw) < header:
        raise ValueError(
            f"IDX file {str(path)!r} is truncated: its header needs {header} bytes, "
            f"the file has {len(raw)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(
            f"IDX file {str(path)!r} is {state}: shape {shape} needs {expected} bytes, "
            f"the file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
