from __future__ import annotations

import gzip

import numpy as np
import pytest

from flatvol.data.idx import (
    find_mnist_file,
    load_mnist_dir,
    read_idx_images,
    read_idx_labels,
    read_idx_pair,
)
from flatvol.errors import DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
# The published test counts have 958 sixes and 1028 sevens (a list with 1028 sixes and 1027 sevens,
# as once quoted in our notes, sums to 10069, not 10000).
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("gz", [True, False])
def test_roundtrip_gz_and_raw(tmp_path, images, gz, dh):
    labels = np.arange(7, dtype=np.uint8)
    xp = dh.write_file(tmp_path / "x", dh.idx_bytes(images, 2051), gz)
    yp = dh.write_file(tmp_path / "y", dh.idx_bytes(labels, 2049), gz)
    x, y = read_idx_pair(xp, yp)
    assert x.dtype == np.uint8 and x.shape == (7, 28, 28)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    x[0, 0, 0] ^= 1  # results are writable copies
    assert read_idx_images(xp)[0, 0, 0] == images[0, 0, 0]


@pytest.mark.parametrize("gz", [True, False])
def test_bad_magic(tmp_path, images, gz, dh):
    path = dh.write_file(tmp_path / "bad-images", dh.idx_bytes(images, 2049), gz)
    with pytest.raises(DataError) as e:
        read_idx_images(path)
    msg = dh.one_line(e)
    assert "bad-images" in msg and "expected 2051" in msg and "got 2049" in msg
    labels = dh.write_file(tmp_path / "bad-labels", dh.idx_bytes(images, 2051), gz)
    with pytest.raises(DataError, match="magic number expected 2049, got 2051"):
        read_idx_labels(labels)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_payload(tmp_path, images, gz, dh):
    data = dh.idx_bytes(images, 2051)
    path = dh.write_file(tmp_path / "short", data[:-100], gz)
    with pytest.raises(DataError) as e:
        read_idx_images(path)
    msg = dh.one_line(e)
    assert "short" in msg and f"expected {7 * 784} bytes" in msg and f"got {7 * 784 - 100}" in msg


def test_trailing_bytes_rejected(tmp_path, dh):
    labels = np.arange(5, dtype=np.uint8)
    path = dh.write_file(tmp_path / "long", dh.idx_bytes(labels, 2049) + b"\x00", gz=False)
    with pytest.raises(DataError, match="payload expected 5 bytes .* got 6"):
        read_idx_labels(path)


def test_truncated_header(tmp_path, images, dh):
    path = dh.write_file(tmp_path / "hdr", dh.idx_bytes(images, 2051)[:10], gz=False)
    with pytest.raises(DataError, match="header expected 16 bytes"):
        read_idx_images(path)
    empty = dh.write_file(tmp_path / "empty", b"", gz=False)
    with pytest.raises(DataError, match="empty: IDX header"):
        read_idx_labels(empty)


def test_truncated_gzip_stream(tmp_path, images, dh):
    blob = gzip.compress(dh.idx_bytes(images, 2051))
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as e:
        read_idx_images(path)
    assert "cut.gz" in dh.one_line(e) and "gzip" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope"):
        read_idx_images(tmp_path / "nope")


def test_count_mismatch(tmp_path, images, dh):
    xp = dh.write_file(tmp_path / "x", dh.idx_bytes(images, 2051), gz=False)
    yp = dh.write_file(tmp_path / "y", dh.idx_bytes(np.zeros(6, np.uint8), 2049), gz=False)
    with pytest.raises(DataError) as e:
        read_idx_pair(xp, yp)
    assert "label count expected 7" in dh.one_line(e) and "got 6" in str(e.value)


def test_load_mnist_dir_checks(tmp_path, dh):
    arrays = dh.write_fake_mnist(tmp_path / "ok", n_train=30, n_test=20, gz=False)
    ds = load_mnist_dir(tmp_path / "ok")
    for got, want in zip(ds, arrays, strict=True):
        np.testing.assert_array_equal(got, want)
    assert find_mnist_file(tmp_path / "ok", "train-images-idx3-ubyte").name == (
        "train-images-idx3-ubyte"
    )

    # a count mismatch between the train images and labels files
    dh.write_fake_mnist(tmp_path / "mismatch", n_train=30, n_test=20)
    dh.write_file(
        tmp_path / "mismatch" / "train-labels-idx1-ubyte.gz",
        dh.idx_bytes(np.zeros(29, np.uint8), 2049),
        gz=True,
    )
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: label count expected 30"):
        load_mnist_dir(tmp_path / "mismatch")

    # labels outside 0..9
    dh.write_fake_mnist(tmp_path / "labels", n_train=30, n_test=20)
    dh.write_file(
        tmp_path / "labels" / "t10k-labels-idx1-ubyte.gz",
        dh.idx_bytes(np.full(20, 10, np.uint8), 2049),
        gz=True,
    )
    with pytest.raises(DataError, match="labels expected in 0..9, got 10"):
        load_mnist_dir(tmp_path / "labels")

    # wrong image size
    dh.write_fake_mnist(tmp_path / "size", n_train=30, n_test=20)
    dh.write_file(
        tmp_path / "size" / "t10k-images-idx3-ubyte.gz",
        dh.idx_bytes(np.zeros((20, 28, 27), np.uint8), 2051),
        gz=True,
    )
    with pytest.raises(DataError, match="expected 28x28, got 28x27"):
        load_mnist_dir(tmp_path / "size")

    # a missing file
    (tmp_path / "ok" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="expected MNIST file t10k-labels-idx1-ubyte"):
        load_mnist_dir(tmp_path / "ok")


def test_full_shared_mnist_statistics(shared_data):
    ds = load_mnist_dir(shared_data / "mnist")
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert sum(MNIST_TRAIN_COUNTS) == 60000 and sum(MNIST_TEST_COUNTS) == 10000
    assert np.bincount(ds.y_train, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(ds.y_test, minlength=10).tolist() == MNIST_TEST_COUNTS
    # published mean pixel value of the training images: 33.32 of 255 (0.1307 * 255)
    assert abs(float(ds.x_train.mean()) - 33.32) < 0.01
