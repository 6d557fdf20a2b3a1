"""MNIST loaders: the real files (shapes, values, class counts) and round trips through files the
tests write themselves (``.amat``, raw and gzip IDX), plus every documented bad input."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import probgen.data
from probgen.data.mnist import load_binarized_mnist, load_mnist_idx

# The shared data lives beside the repository; CI has it, a bare checkout may not.
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BINARIZED_NPZ = DATA / "binarized_mnist" / "binarized_mnist.npz"
TEST_IMAGES = DATA / "mnist" / "t10k-images-idx3-ubyte.gz"
TEST_LABELS = DATA / "mnist" / "t10k-labels-idx1-ubyte.gz"

# Split sizes of Larochelle & Murray (2011) and the per-digit counts of the MNIST test set
# (LeCun et al. 1998), both published with the data.
SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _require(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"shared MNIST data not found: {', '.join(missing)}")


def _idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file for ``array``, written from the format's definition."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _write(path: Path, payload: bytes, *, compress: bool) -> Path:
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def _save_amat(directory: Path, split: str, array: np.ndarray) -> None:
    np.savetxt(directory / f"binarized_mnist_{split}.amat", array, fmt="%d")


# --- the real files ---------------------------------------------------------------------------


@pytest.mark.parametrize("split", list(SPLIT_SIZES))
def test_binarized_npz_split_matches_the_archive(split: str) -> None:
    _require(BINARIZED_NPZ)
    x = load_binarized_mnist(BINARIZED_NPZ, split)
    assert x.shape == (SPLIT_SIZES[split], 784)
    assert x.dtype == torch.float32
    with np.load(BINARIZED_NPZ) as archive:
        reference = archive[split]
    assert torch.equal(x, torch.from_numpy(reference.astype(np.float32)))
    assert ((x == 0) | (x == 1)).all()


def test_binarized_dtype_and_package_export() -> None:
    _require(BINARIZED_NPZ)
    x = probgen.data.load_binarized_mnist(str(BINARIZED_NPZ), "valid", dtype=torch.float64)
    assert x.dtype == torch.float64
    assert torch.equal(
        x.to(torch.uint8), load_binarized_mnist(BINARIZED_NPZ, "valid", dtype=torch.uint8)
    )
    assert probgen.data.load_mnist_idx is load_mnist_idx


def test_mnist_idx_test_set_shapes_values_and_class_counts() -> None:
    _require(TEST_IMAGES, TEST_LABELS)
    x, y = load_mnist_idx(TEST_IMAGES, TEST_LABELS, dtype=torch.float64)
    assert x.shape == (10_000, 784) and x.dtype == torch.float64
    assert y.shape == (10_000,) and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == MNIST_TEST_CLASS_COUNTS
    assert x.min() == 0.0 and x.max() == 1.0
    levels = x * 255
    assert torch.equal(levels, levels.round())  # exactly pixel / 255
    assert torch.equal(
        load_mnist_idx(TEST_IMAGES, binarize="threshold", dtype=torch.float64), (x > 0.5).double()
    )


# --- round trips through files written here ---------------------------------------------------


def test_amat_directory_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        s: (rng.random((n, 784)) < 0.2).astype(np.uint8)
        for s, n in [("train", 7), ("valid", 3), ("test", 1)]
    }
    if BINARIZED_NPZ.is_file():  # real rows when available, so the file layout is the published one
        with np.load(BINARIZED_NPZ) as archive:
            arrays = {s: archive[s][: len(a)] for s, a in arrays.items()}
    for split, array in arrays.items():
        _save_amat(tmp_path, split, array)
    for split, array in arrays.items():
        x = load_binarized_mnist(tmp_path, split, dtype=torch.float64)
        assert torch.equal(x, torch.from_numpy(array.astype(np.float64)))


def test_npz_round_trip_with_any_integer_dtype(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    arrays = {s: (rng.random((4, 784)) < 0.5).astype(np.int64) for s in SPLIT_SIZES}
    np.savez(tmp_path / "b.npz", **arrays)
    for split, array in arrays.items():
        x = load_binarized_mnist(tmp_path / "b.npz", split, dtype=torch.float64)
        assert torch.equal(x, torch.from_numpy(array).double())


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=6, dtype=np.uint8)
    # Names that lie about compression: detection must go by the magic bytes.
    img_path = _write(
        tmp_path / ("img.idx" if compress else "img.gz"), _idx_bytes(images), compress=compress
    )
    lab_path = _write(tmp_path / "lab", _idx_bytes(labels), compress=compress)
    x, y = load_mnist_idx(img_path, lab_path, dtype=torch.float64)
    assert torch.equal(x, torch.from_numpy(images.reshape(6, 784) / 255.0))
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    xb = load_mnist_idx(img_path, binarize="threshold", dtype=torch.uint8)
    assert torch.equal(
        xb, torch.from_numpy((images.reshape(6, 784) / 255.0 > 0.5).astype(np.uint8))
    )


def test_idx_threshold_edges_and_other_image_sizes(tmp_path: Path) -> None:
    # 127/255 < 0.5 < 128/255: the threshold sits between these two grey levels.
    images = np.array([[[0, 127, 128], [255, 1, 254]]], dtype=np.uint8)  # one 2 x 3 image
    path = _write(tmp_path / "img", _idx_bytes(images), compress=False)
    assert load_mnist_idx(path, binarize="threshold").tolist() == [[0.0, 0.0, 1.0, 1.0, 0.0, 1.0]]
    assert load_mnist_idx(path).shape == (1, 6)


# --- bad input --------------------------------------------------------------------------------


def test_unknown_split_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="train, valid, test; got 'validation'"):
        load_binarized_mnist(tmp_path, "validation")


def test_missing_binarized_files_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(ValueError, match=re.escape(str(missing)) + ".*does not exist"):
        load_binarized_mnist(missing)
    with pytest.raises(ValueError, match=r"binarized_mnist_valid\.amat.*does not exist"):
        load_binarized_mnist(tmp_path, "valid")


def test_npz_missing_split_not_an_archive_and_corrupt(tmp_path: Path) -> None:
    np.savez(tmp_path / "b.npz", train=np.zeros((2, 784), np.uint8))
    with pytest.raises(ValueError, match="no array 'test' \\(it has: train\\)"):
        load_binarized_mnist(tmp_path / "b.npz", "test")
    np.save(tmp_path / "a.npy", np.zeros((2, 784), np.uint8))
    with pytest.raises(ValueError, match=r"single \.npy array"):
        load_binarized_mnist(tmp_path / "a.npy")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="cannot read binarized MNIST"):
        load_binarized_mnist(tmp_path / "junk.npz")


def test_non_binary_values_are_counted(tmp_path: Path) -> None:
    bad = np.zeros((3, 784))
    bad[0, 0], bad[1, 5], bad[2, 783] = 2.0, 0.5, np.nan
    np.savez(tmp_path / "b.npz", train=bad)
    with pytest.raises(ValueError, match="has 3 entries that are not 0 or 1"):
        load_binarized_mnist(tmp_path / "b.npz")
    grey = np.zeros((2, 784), np.uint8)
    grey[1, :10] = 7
    _save_amat(tmp_path, "valid", grey)
    with pytest.raises(ValueError, match="has 10 entries that are not 0 or 1"):
        load_binarized_mnist(tmp_path, "valid")


@pytest.mark.parametrize("shape", [(4, 783), (4, 28, 28), (0, 784), (784,)])
def test_wrong_shape(tmp_path: Path, shape: tuple[int, ...]) -> None:
    np.savez(tmp_path / "b.npz", train=np.zeros(shape, np.uint8))
    with pytest.raises(ValueError, match=re.escape(f"has shape {shape}; expected [N, 784]")):
        load_binarized_mnist(tmp_path / "b.npz")


def test_amat_ragged_non_integer_and_empty(tmp_path: Path) -> None:
    rows = ["0 " * 784, "1 " * 783]
    (tmp_path / "binarized_mnist_train.amat").write_text("\n".join(rows) + "\n")
    with pytest.raises(
        ValueError, match=r"cannot read binarized MNIST .*number of columns changed"
    ):
        load_binarized_mnist(tmp_path, "train")
    (tmp_path / "binarized_mnist_valid.amat").write_text("0 1 x\n")
    with pytest.raises(ValueError, match=r"cannot read binarized MNIST .*'x'"):
        load_binarized_mnist(tmp_path, "valid")
    (tmp_path / "binarized_mnist_test.amat").write_text("\n")
    with pytest.raises(ValueError, match="expected \\[N, 784\\] with N >= 1"):
        load_binarized_mnist(tmp_path, "test")


def test_idx_wrong_magic(tmp_path: Path) -> None:
    labels = _write(tmp_path / "lab", _idx_bytes(np.zeros(3, np.uint8)), compress=True)
    with pytest.raises(ValueError, match="magic number 0x00000801; expected 0x00000803"):
        load_mnist_idx(labels)
    images = _write(tmp_path / "img", _idx_bytes(np.zeros((3, 28, 28), np.uint8)), compress=False)
    with pytest.raises(ValueError, match="magic number 0x00000803; expected 0x00000801"):
        load_mnist_idx(images, images)
    signed = bytearray(_idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    signed[2] = 0x09  # IDX type code for signed bytes
    with pytest.raises(ValueError, match="0x00000903"):
        load_mnist_idx(_write(tmp_path / "s", bytes(signed), compress=False))
    with pytest.raises(ValueError, match="shorter than 4 bytes"):
        load_mnist_idx(_write(tmp_path / "tiny", b"\x00\x00", compress=False))


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_idx_truncated_or_too_long_gives_byte_counts(tmp_path: Path, compress: bool) -> None:
    payload = _idx_bytes(np.zeros((5, 28, 28), np.uint8))
    expected = 16 + 5 * 784
    assert len(payload) == expected
    short = _write(tmp_path / "short", payload[:-100], compress=compress)
    with pytest.raises(
        ValueError,
        match=re.escape(str(short))
        + f".*truncated.*needs {expected} bytes, the file has {expected - 100}",
    ):
        load_mnist_idx(short)
    long = _write(tmp_path / "long", payload + b"\x00", compress=compress)
    with pytest.raises(
        ValueError,
        match=f"longer than its header says.*needs {expected} bytes, the file has {expected + 1}",
    ):
        load_mnist_idx(long)
    header_only = _write(tmp_path / "head", payload[:10], compress=compress)
    with pytest.raises(ValueError, match="truncated: its header needs 16 bytes, the file has 10"):
        load_mnist_idx(header_only)


def test_idx_corrupt_gzip_stream(tmp_path: Path) -> None:
    packed = gzip.compress(_idx_bytes(np.arange(3 * 784, dtype=np.uint8).reshape(3, 28, 28)))
    path = _write(tmp_path / "cut.gz", packed[: len(packed) // 2], compress=False)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not a valid gzip stream"):
        load_mnist_idx(path)


def test_idx_missing_file_and_count_mismatch(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="cannot read IDX file '" + re.escape(str(tmp_path / "none"))
    ):
        load_mnist_idx(tmp_path / "none")
    images = _write(tmp_path / "img", _idx_bytes(np.zeros((4, 28, 28), np.uint8)), compress=False)
    labels = _write(tmp_path / "lab", _idx_bytes(np.zeros(3, np.uint8)), compress=False)
    with pytest.raises(ValueError, match=r"has 3 entries but images .* has 4"):
        load_mnist_idx(images, labels)


def test_idx_bad_options(tmp_path: Path) -> None:
    images = _write(tmp_path / "img", _idx_bytes(np.zeros((1, 28, 28), np.uint8)), compress=False)
    with pytest.raises(ValueError, match=r"binarize must be None .* or 'threshold'; got 'sample'"):
        load_mnist_idx(images, binarize="sample")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="dtype must be floating point"):
        load_mnist_idx(images, dtype=torch.int64)
