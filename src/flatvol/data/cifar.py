"""CIFAR-10: the official python batches (`cifar-10-batches-py`) and the shared npz subsets
(`cifar10-jpeg-car-cat.npz`: all automobile and cat images; `cifar10-jpeg-10class.npz`: 1,000
training and 200 test images of every class).

Both loaders return channels-last uint8 images (n, 32, 32, 3) and the original CIFAR-10 labels
(0..9); `flatvol.data.tasks` converts to channels-first floats.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from flatvol.data.idx import ImageDataset
from flatvol.errors import DataError

CIFAR10_LABEL_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_BATCHES_DIRNAME = "cifar-10-batches-py"
CIFAR_NPZ_NAME = "cifar10-jpeg-car-cat.npz"
CIFAR_TEN_CLASS_NPZ_NAME = "cifar10-jpeg-10class.npz"
_NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
# What a corrupt, truncated or hostile pickle can raise while being read.
_UNPICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    UnicodeError,
    MemoryError,
)


def _numpy_core() -> Any:
    # numpy >= 2 moved numpy.core to numpy._core; resolve without importing the deprecated alias.
    core = getattr(np, "_core", None)
    return np.core if core is None else core


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batch files: only the globals a pickled numpy uint8 array needs.

    The batches are user files, so any other global (os.system, builtins.eval, ...) is refused
    instead of being imported and called."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_core().multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_core().multiarray._reconstruct,
        # pickle protocol 5 rebuilds arrays from a buffer
        ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_core().numeric._frombuffer,
        ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_core().numeric._frombuffer,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        # Protocol-2 pickles written by Python 3 encode bytes as _codecs.encode(str, "latin1").
        ("_codecs", "encode"): lambda: _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        resolve = self._ALLOWED.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return resolve()


def _get(batch: dict, key: str) -> Any:
    # Official batches were written by Python 2 (bytes keys); accept str keys from re-pickled ones.
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One official CIFAR-10 python batch: uint8 images (n, 32, 32, 3) and int64 labels (n,).

    Args:
        path: The file to read.

    Returns:
        A pair (images, labels): uint8 (n, 32, 32, 3) and int64 (n,).

    Raises:
        DataError: If the file is missing or not a valid CIFAR-10 batch.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _UNPICKLE_ERRORS as e:
        raise DataError(f"{path}: not a valid CIFAR-10 python batch ({_first_line(e)})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: CIFAR batch expected a dict, got {type(batch).__name__}")
    data, labels = _get(batch, "data"), _get(batch, "labels")
    if data is None or labels is None:
        raise DataError(
            f"{path}: CIFAR batch expected keys b'data' and b'labels', got {list(batch)}"
        )
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: CIFAR b'data' expected uint8 array (n, 3072), got {got}")
    if data.shape[1] != 3072:
        raise DataError(f"{path}: CIFAR b'data' expected 3072 columns, got {data.shape[1]}")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: CIFAR b'labels' expected a list of ints") from None
    if len(y) != len(data):
        raise DataError(f"{path}: CIFAR label count expected {len(data)}, got {len(y)}")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{path}: CIFAR labels expected in 0..9, got {y.min()}..{y.max()}")
    # Each row is 1024 red, then 1024 green, then 1024 blue values, rows of the image in order.
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return x, y


def find_cifar_batches_dir(directory: str | os.PathLike) -> Path | None:
    """`directory` or `directory/cifar-10-batches-py`, whichever holds data_batch_1, else None."""
    directory = Path(directory)
    for candidate in (directory, directory / CIFAR_BATCHES_DIRNAME):
        if (candidate / CIFAR_TRAIN_BATCHES[0]).is_file():
            return candidate
    return None


def load_cifar_batches(directory: str | os.PathLike) -> ImageDataset:
    """All of CIFAR-10 from the official python batches: data_batch_1..5 (train), test_batch.

    `directory` is the `cifar-10-batches-py` folder or its parent.

    Args:
        directory: The cifar-10-batches-py folder or its parent.

    Returns:
        The ImageDataset: uint8 images (n, 32, 32, 3) and labels of both splits.

    Raises:
        DataError: If a batch file is missing or malformed.
    """
    found = find_cifar_batches_dir(directory)
    if found is None:
        raise DataError(
            f"{directory}: expected CIFAR-10 python batches "
            f"({CIFAR_BATCHES_DIRNAME}/data_batch_1), got none"
        )
    parts = []
    for name in CIFAR_TRAIN_BATCHES:
        path = found / name
        if not path.is_file():
            raise DataError(f"{found}: expected CIFAR-10 batch file {name}, got none")
        parts.append(read_cifar_batch(path))
    test_path = found / CIFAR_TEST_BATCH
    if not test_path.is_file():
        raise DataError(f"{found}: expected CIFAR-10 batch file {CIFAR_TEST_BATCH}, got none")
    x_test, y_test = read_cifar_batch(test_path)
    x_train = np.concatenate([x for x, _ in parts])
    y_train = np.concatenate([y for _, y in parts])
    return ImageDataset(x_train, y_train, x_test, y_test)


def _read_npz_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: expected an npz file, got no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated npz ({_first_line(e)})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: expected an npz archive, got a single .npy array")
    with npz:
        missing = [k for k in keys if k not in npz.files]
        if missing:
            raise DataError(f"{path}: npz arrays expected {list(keys)}, got {sorted(npz.files)}")
        try:
            return {key: npz[key] for key in keys}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated npz ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def load_image_npz(
    path: str | os.PathLike, image_shape: tuple[int, ...], num_labels: int = 10
) -> ImageDataset:
    """An image dataset npz with uint8 arrays x_train, x_test (n, *image_shape) and integer
    labels y_train, y_test in 0..num_labels-1. Loaded without pickle; a missing, truncated or
    corrupt file is a DataError."""
    path = Path(path)
    arrays = _read_npz_arrays(path, _NPZ_ARRAYS)
    shape = "(n, " + ", ".join(str(d) for d in image_shape) + ")"
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.shape[1:] != tuple(image_shape):
            raise DataError(f"{path}: x_{split} expected uint8 {shape}, got {x.dtype} {x.shape}")
        if y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype.kind not in "iu":
            raise DataError(
                f"{path}: y_{split} expected integer labels ({x.shape[0]},), "
                f"got {y.dtype} {y.shape}"
            )
        if y.size and (int(y.min()) < 0 or int(y.max()) >= num_labels):
            raise DataError(
                f"{path}: y_{split} labels expected in 0..{num_labels - 1}, "
                f"got {y.min()}..{y.max()}"
            )
    return ImageDataset(
        arrays["x_train"],
        arrays["y_train"].astype(np.int64),
        arrays["x_test"],
        arrays["y_test"].astype(np.int64),
    )


def load_cifar_npz(path: str | os.PathLike) -> ImageDataset:
    """The shared CIFAR-10 subset npz (`cifar10-jpeg-car-cat.npz`): x_train/x_test uint8
    (n, 32, 32, 3), y_train/y_test with the original CIFAR-10 labels (automobile 1, cat 3).
    Loaded without pickle; a truncated or corrupt file is a DataError.

    Args:
        path: Path of the cifar10-jpeg-car-cat.npz file.

    Returns:
        The ImageDataset of the subset, with the original CIFAR-10 labels.

    Raises:
        DataError: If the file is missing, truncated or corrupt.
    """
    return load_image_npz(path, (32, 32, 3))
