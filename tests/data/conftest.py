"""Fixtures for the data tests: tiny IDX/CIFAR files written by the tests and a loopback HTTP server
(the shared real data fixture, shared_data, is in tests/conftest.py).

Helpers reach the tests through the `dh` fixture rather than `from conftest import ...`, which
works under every pytest import mode and cannot pick up another folder's conftest."""

from __future__ import annotations

import functools
import gzip
import http.server
import pickle
import struct
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flatvol.data.idx import MNIST_FILE_STEMS


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """IDX encoding of a uint8 array: big-endian magic, dims, payload."""
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_file(path: Path, data: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def fake_mnist_arrays(n_train: int, n_test: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x_train = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    y_train = (np.arange(n_train) % 10).astype(np.uint8)
    y_test = (np.arange(n_test) % 10).astype(np.uint8)
    rng.shuffle(y_train)
    rng.shuffle(y_test)
    return x_train, y_train, x_test, y_test


def write_fake_mnist(
    directory: Path, n_train: int = 200, n_test: int = 100, gz: bool = True, seed: int = 0
):
    """Four valid MNIST-format IDX files with random pixels; returns the arrays written."""
    arrays = fake_mnist_arrays(n_train, n_test, seed)
    suffix = ".gz" if gz else ""
    for stem, array in zip(MNIST_FILE_STEMS, arrays, strict=True):
        magic = 2051 if array.ndim == 3 else 2049
        write_file(directory / (stem + suffix), idx_bytes(array, magic), gz)
    return arrays


def write_cifar_batch(path: Path, x_hwc: np.ndarray, labels: np.ndarray, protocol: int) -> None:
    """A batch in the official cifar-10-batches-py layout: a pickled dict with bytes keys,
    b'data' uint8 (n, 3072) holding the red, green, blue planes of each image row-major."""
    data = np.ascontiguousarray(x_hwc.transpose(0, 3, 1, 2).reshape(len(x_hwc), 3072))
    batch = {
        b"batch_label": path.name.encode(),
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(x_hwc))],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder): a loopback-only HTTP server serving `folder`, stopped afterwards."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset FLATVOL_DATA so that load_task falls back to the embedded subset."""
    monkeypatch.delenv("FLATVOL_DATA", raising=False)


def one_line(e: pytest.ExceptionInfo) -> str:
    """The error message, asserted to be a single non-empty line."""
    msg = str(e.value)
    assert msg and "\n" not in msg, msg
    return msg


@pytest.fixture
def dh() -> types.SimpleNamespace:
    """The helper functions of this conftest."""
    return types.SimpleNamespace(
        idx_bytes=idx_bytes,
        write_file=write_file,
        fake_mnist_arrays=fake_mnist_arrays,
        write_fake_mnist=write_fake_mnist,
        write_cifar_batch=write_cifar_batch,
        one_line=one_line,
    )
