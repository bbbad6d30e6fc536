"""MNIST in the IDX format (LeCun et al.), gzipped or raw.

IDX layout: a big-endian magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the payload. MNIST uses type 0x08 (uint8):
magic 2051 for images (n, rows, cols) and 2049 for labels (n,).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from flatvol.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

MNIST_TRAIN_IMAGES = "train-images-idx3-ubyte"
MNIST_TRAIN_LABELS = "train-labels-idx1-ubyte"
MNIST_TEST_IMAGES = "t10k-images-idx3-ubyte"
MNIST_TEST_LABELS = "t10k-labels-idx1-ubyte"
MNIST_FILE_STEMS = (MNIST_TRAIN_IMAGES, MNIST_TRAIN_LABELS, MNIST_TEST_IMAGES, MNIST_TEST_LABELS)


class ImageDataset(NamedTuple):
    """Decoded uint8 images (n, H, W) or (n, H, W, C) and integer labels (n,) of both splits."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _read_bytes(path: Path) -> bytes:
    """The raw IDX bytes of `path`, gunzipped when it is gzip data (by magic, not by name)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None


def _read_idx(path: str | os.PathLike, magic: int, ndim: int) -> np.ndarray:
    path = Path(path)
    data = _read_bytes(path)
    header_len = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"{path}: IDX header expected 4 magic bytes, got {len(data)} bytes")
    (got_magic,) = struct.unpack(">I", data[:4])
    if got_magic != magic:
        raise DataError(f"{path}: IDX magic number expected {magic}, got {got_magic}")
    if len(data) < header_len:
        raise DataError(
            f"{path}: IDX header expected {header_len} bytes ({ndim} dims), got {len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(data) - header_len
    if got != expected:
        shape = "x".join(str(d) for d in dims)
        raise DataError(
            f"{path}: IDX payload expected {expected} bytes for shape {shape}, got {got}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """uint8 images of shape (n, rows, cols) from an IDX image file (magic 2051), `.gz` or raw.

    Args:
        path: The file to read.

    Returns:
        The uint8 images, shape (n, rows, cols).

    Raises:
        DataError: If the file is missing or not a valid IDX image file.
    """
    return _read_idx(path, IMAGES_MAGIC, 3)


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """uint8 labels of shape (n,) from an IDX label file (magic 2049), `.gz` or raw.

    Args:
        path: The file to read.

    Returns:
        The uint8 labels, shape (n,).

    Raises:
        DataError: If the file is missing or not a valid IDX label file.
    """
    return _read_idx(path, LABELS_MAGIC, 1)


def read_idx_pair(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split, checked to agree in count."""
    x = read_idx_images(images_path)
    y = read_idx_labels(labels_path)
    if len(x) != len(y):
        raise DataError(
            f"{labels_path}: label count expected {len(x)} (as in {Path(images_path).name}), "
            f"got {len(y)}"
        )
    return x, y


def find_mnist_file(directory: Path, stem: str) -> Path | None:
    """`stem.gz` or raw `stem` in `directory` (gzip preferred), else None."""
    for name in (stem + ".gz", stem):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def load_mnist_dir(directory: str | os.PathLike) -> ImageDataset:
    """The four MNIST IDX files of `directory`, checked: 28x28 images, labels 0..9.

    Args:
        directory: Folder holding the four MNIST IDX files (.gz or raw).

    Returns:
        The ImageDataset: uint8 images (n, 28, 28) and labels 0..9 of both splits.

    Raises:
        DataError: If a file is missing or malformed.
    """
    directory = Path(directory)
    paths = []
    for stem in MNIST_FILE_STEMS:
        found = find_mnist_file(directory, stem)
        if found is None:
            raise DataError(f"{directory}: expected MNIST file {stem}[.gz], got none")
        paths.append(found)
    x_train, y_train = read_idx_pair(paths[0], paths[1])
    x_test, y_test = read_idx_pair(paths[2], paths[3])
    for path, x in ((paths[0], x_train), (paths[2], x_test)):
        if x.shape[1:] != (28, 28):
            got = f"{x.shape[1]}x{x.shape[2]}"
            raise DataError(f"{path}: MNIST image size expected 28x28, got {got}")
    for path, y in ((paths[1], y_train), (paths[3], y_test)):
        if y.size and int(y.max()) > 9:
            raise DataError(f"{path}: MNIST labels expected in 0..9, got {int(y.max())}")
    return ImageDataset(x_train, y_train, x_test, y_test)
