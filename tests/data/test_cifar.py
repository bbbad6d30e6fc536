from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest

from flatvol.data import load_task
from flatvol.data.cifar import (
    CIFAR_TRAIN_BATCHES,
    load_cifar_batches,
    load_cifar_npz,
    read_cifar_batch,
)
from flatvol.errors import DataError


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = np.arange(n) % 10
    return x, y


@pytest.fixture
def batches_dir(tmp_path, dh):
    """An official-format cifar-10-batches-py folder: 5 train batches of 12 images, a test batch
    of 10. Returns (parent folder, train images, train labels, test images, test labels)."""
    root = tmp_path / "cifar-10-batches-py"
    xs, ys = [], []
    for i, name in enumerate(CIFAR_TRAIN_BATCHES):
        x, y = _images(12, seed=i)
        dh.write_cifar_batch(root / name, x, y, protocol=2)
        xs.append(x)
        ys.append(y)
    x_test, y_test = _images(10, seed=99)
    dh.write_cifar_batch(root / "test_batch", x_test, y_test, protocol=2)
    return tmp_path, np.concatenate(xs), np.concatenate(ys), x_test, y_test


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_batch_roundtrip_and_pixel_layout(tmp_path, dh, protocol):
    x, y = _images(4, seed=1)
    path = tmp_path / "data_batch_1"
    dh.write_cifar_batch(path, x, y, protocol=protocol)
    got_x, got_y = read_cifar_batch(path)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    # The official layout: row = 1024 red values (image rows in order), then green, then blue.
    with open(path, "rb") as f:
        raw = pickle.load(f)[b"data"]
    assert raw[0, 0] == x[0, 0, 0, 0] and raw[0, 1] == x[0, 0, 1, 0]
    assert raw[0, 32] == x[0, 1, 0, 0] and raw[0, 1024] == x[0, 0, 0, 1]
    assert raw[0, 2048 + 33] == x[0, 1, 1, 2]


def test_load_batches_dir_and_parent(batches_dir):
    parent, x_train, y_train, x_test, y_test = batches_dir
    for where in (parent, parent / "cifar-10-batches-py"):
        ds = load_cifar_batches(where)
        np.testing.assert_array_equal(ds.x_train, x_train)
        np.testing.assert_array_equal(ds.y_train, y_train)
        np.testing.assert_array_equal(ds.x_test, x_test)
        np.testing.assert_array_equal(ds.y_test, y_test)


def test_load_task_from_batches(batches_dir):
    parent, x_train, y_train, x_test, y_test = batches_dir
    # 5 train batches with labels 0..9, 0, 1: 5 deer (4) and 5 ships (8); test: one of each.
    td = load_task(
        "cifar10", train_size=6, attack_size=4, test_size=2, data_dir=parent, classes="deer-vs-ship"
    )
    assert td.classes == "4v8"
    assert td.S.x.shape == (6, 3, 32, 32) and td.E.x.shape == (2, 3, 32, 32)
    assert (
        sorted(td.S.index.tolist() + td.A.index.tolist())
        == np.flatnonzero(np.isin(y_train, [4, 8])).tolist()
    )
    assert set(y_train[td.S.index].tolist()) <= {4, 8}
    np.testing.assert_array_equal(td.S.y.numpy(), (y_train[td.S.index] == 8).astype(np.float32))
    np.testing.assert_array_equal(td.A.y.numpy(), (y_train[td.A.index] == 4).astype(np.float32))
    # channels first, scaled to [0, 1]
    expect = x_train[td.S.index].transpose(0, 3, 1, 2).astype(np.float32) / 255
    np.testing.assert_allclose(td.S.x.numpy(), expect, rtol=0, atol=1e-7)
    expect_e = x_test[td.E.index].transpose(0, 3, 1, 2).astype(np.float32) / 255
    np.testing.assert_allclose(td.E.x.numpy(), expect_e, rtol=0, atol=1e-7)
    with pytest.raises(DataError, match="train_size \\+ attack_size expected <= 10"):
        load_task(
            "cifar10", train_size=7, attack_size=4, test_size=2, data_dir=parent, classes="4v8"
        )


def test_malicious_pickle_is_refused_not_run(tmp_path, dh):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError) as e:
        read_cifar_batch(path)
    assert "data_batch_1" in dh.one_line(e) and "not allowed" in str(e.value)
    assert not marker.exists()


def test_corrupt_batches(tmp_path, dh):
    x, y = _images(3, seed=2)
    path = tmp_path / "b"
    dh.write_cifar_batch(path, x, y, protocol=2)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as e:
        read_cifar_batch(path)
    assert "b: not a valid CIFAR-10 python batch" in dh.one_line(e)

    path.write_bytes(pickle.dumps({b"data": np.zeros((3, 3071), np.uint8), b"labels": [0, 1, 2]}))
    with pytest.raises(DataError, match="expected 3072 columns, got 3071"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match="label count expected 3, got 2"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps({b"labels": [0]}))
    with pytest.raises(DataError, match="expected keys b'data' and b'labels'"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="expected a dict, got list"):
        read_cifar_batch(path)


def test_missing_batches(batches_dir):
    parent = batches_dir[0]
    (parent / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match="expected CIFAR-10 batch file test_batch"):
        load_cifar_batches(parent)
    with pytest.raises(DataError, match="cifar-10-batches-py/data_batch_1"):
        load_cifar_batches(parent / "elsewhere")


def _write_npz(path, n_train=6, n_test=4):
    x_train, _ = _images(n_train, seed=5)
    x_test, _ = _images(n_test, seed=6)
    y_train = np.array([1, 3] * (n_train // 2), np.uint8)
    y_test = np.array([1, 3] * (n_test // 2), np.uint8)
    np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return x_train, y_train, x_test, y_test


def test_npz_roundtrip(tmp_path):
    arrays = _write_npz(tmp_path / "c.npz")
    ds = load_cifar_npz(tmp_path / "c.npz")
    for got, want in zip(ds, arrays, strict=True):
        np.testing.assert_array_equal(got, want)


def test_truncated_npz(tmp_path, dh):
    path = tmp_path / "c.npz"
    _write_npz(path)
    blob = path.read_bytes()
    for cut in (len(blob) // 2, len(blob) - 10, 100):
        path.write_bytes(blob[:cut])
        with pytest.raises(DataError) as e:
            load_cifar_npz(path)
        assert "c.npz: corrupt or truncated npz" in dh.one_line(e)


def test_corrupt_npz_member(tmp_path, dh):
    path = tmp_path / "c.npz"
    _write_npz(path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("x_train.npy")
    blob = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    for i in range(start, start + 50):  # damage deflate data, keep the zip directory intact
        blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError) as e:
        load_cifar_npz(path)
    assert "c.npz: corrupt or truncated npz" in dh.one_line(e)


def test_npz_wrong_content(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, x_train=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="npz arrays expected"):
        load_cifar_npz(path)
    np.savez(
        path,
        x_train=np.zeros((2, 3, 32, 32), np.uint8),
        y_train=np.zeros(2, np.uint8),
        x_test=np.zeros((1, 32, 32, 3), np.uint8),
        y_test=np.zeros(1, np.uint8),
    )
    with pytest.raises(DataError, match=r"x_train expected uint8 \(n, 32, 32, 3\)"):
        load_cifar_npz(path)
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(DataError, match="single .npy array"):
        load_cifar_npz(tmp_path / "single.npy")
    np.savez(
        path,
        x_train=np.zeros((2, 32, 32, 3), np.uint8),
        y_train=np.array([None, None], dtype=object),
        x_test=np.zeros((1, 32, 32, 3), np.uint8),
        y_test=np.zeros(1, np.uint8),
    )
    with pytest.raises(DataError, match="corrupt or truncated npz"):  # pickled object array
        load_cifar_npz(path)
    with pytest.raises(DataError, match="no such file"):
        load_cifar_npz(tmp_path / "absent.npz")


def test_shared_cifar_npz(shared_data):
    ds = load_cifar_npz(shared_data / "cifar10-jpeg-car-cat.npz")
    assert ds.x_train.shape == (10000, 32, 32, 3) and ds.x_test.shape == (2000, 32, 32, 3)
    assert np.bincount(ds.y_train, minlength=10)[[1, 3]].tolist() == [5000, 5000]
    assert np.bincount(ds.y_test, minlength=10)[[1, 3]].tolist() == [1000, 1000]
    assert set(np.unique(ds.y_train).tolist()) == {1, 3}
    td = load_task(
        "cifar10", train_size=5000, test_size=2000, data_dir=shared_data, classes="car-vs-cat"
    )
    assert td.classes == "1v3" and td.S.x.shape == (5000, 3, 32, 32)
    # automobile -> 0, cat -> 1
    np.testing.assert_array_equal(td.S.y.numpy(), (ds.y_train[td.S.index] == 3).astype(np.float32))
    assert td.E.y.sum().item() == 1000
    with pytest.raises(DataError, match="classes 0v9 need labels \\[0, 9\\]"):
        load_task("cifar10", data_dir=shared_data, classes="0v9")
