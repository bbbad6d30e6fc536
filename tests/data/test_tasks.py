from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flatvol.data import (
    EMBEDDED_MNIST,
    TASKS,
    TaskData,
    file_md5,
    load_mnist_dir,
    load_source,
    load_task,
    parse_classes,
)
from flatvol.data.cifar import load_image_npz
from flatvol.data.tasks import _cached_dataset
from flatvol.errors import DataError, SpecError

REPO = Path(__file__).resolve().parents[2]
EMBEDDED_README = EMBEDDED_MNIST.parent / "README.md"


def _true_labels(task: TaskData, split: str, data_dir=None) -> np.ndarray:
    """Binary labels recomputed from the source labels at the split's indices."""
    data, _ = load_source(task.task, data_dir)
    y = data.y_test if split == "E" else data.y_train
    return parse_classes(task.task, task.classes).binarize(y[getattr(task, split).index])


# ---------------------------------------------------------------- embedded subset


def test_embedded_md5_matches_readme():
    m = re.search(r"^- md5: ([0-9a-f]{32})$", EMBEDDED_README.read_text(), re.MULTILINE)
    assert m, "embedded README must record the md5"
    assert file_md5(EMBEDDED_MNIST) == m.group(1)
    assert EMBEDDED_MNIST.stat().st_size < 4_000_000


def test_embedded_subset_is_the_start_of_full_mnist(shared_data):
    embedded = load_image_npz(EMBEDDED_MNIST, (28, 28))
    full = load_mnist_dir(shared_data / "mnist")
    n_train, n_test = len(embedded.x_train), len(embedded.x_test)
    assert (n_train, n_test) == (10000, 2000)
    np.testing.assert_array_equal(embedded.x_train, full.x_train[:n_train])
    np.testing.assert_array_equal(embedded.y_train, full.y_train[:n_train])
    np.testing.assert_array_equal(embedded.x_test, full.x_test[:n_test])
    np.testing.assert_array_equal(embedded.y_test, full.y_test[:n_test])


def test_make_embedded_script_rebuilds_same_arrays(shared_data, tmp_path):
    out = tmp_path / "subset.npz"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/make_embedded_mnist.py"),
            "--source",
            str(shared_data / "mnist"),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with np.load(out) as rebuilt, np.load(EMBEDDED_MNIST) as shipped:
        assert sorted(rebuilt.files) == sorted(shipped.files)
        for key in shipped.files:
            np.testing.assert_array_equal(rebuilt[key], shipped[key])


# ---------------------------------------------------------------- split properties


@pytest.fixture
def task(no_data_env) -> TaskData:
    return load_task("mnist", train_size=500, attack_size=500, test_size=1000, data_seed=0)


def test_shapes_dtypes_ranges(task):
    assert (task.task, task.classes, task.data_seed) == ("mnist", "0-4v5-9", 0)
    assert (task.train_size, task.attack_size, task.test_size) == (500, 500, 1000)
    assert task.input_shape == (1, 28, 28) == TASKS["mnist"].input_shape
    for split in (task.S, task.A, task.E):
        assert split.x.dtype == split.y.dtype == torch.float32
        assert split.x.min() >= 0 and split.x.max() <= 1 and split.x.max() == 1
        assert set(split.y.unique().tolist()) == {0.0, 1.0}
        assert split.index.dtype == np.int64 and len(split.index) == len(split)
    assert task.x_SE().shape == (1500, 1, 28, 28)


def test_pixels_and_labels_come_from_the_indexed_images(task):
    data, source = load_source("mnist")
    assert source == "embedded MNIST subset"
    np.testing.assert_array_equal(task.S.x.numpy()[:, 0] * 255, data.x_train[task.S.index])
    np.testing.assert_array_equal(task.E.x.numpy()[:, 0] * 255, data.x_test[task.E.index])
    np.testing.assert_array_equal(task.S.y.numpy(), data.y_train[task.S.index] >= 5)
    np.testing.assert_array_equal(task.E.y.numpy(), data.y_test[task.E.index] >= 5)


def test_attack_labels_are_flipped(task):
    true_a = _true_labels(task, "A")
    np.testing.assert_array_equal(task.A.y.numpy(), 1 - true_a)
    assert 0.4 < true_a.mean() < 0.6  # both classes are attacked
    np.testing.assert_array_equal(task.S.y.numpy(), _true_labels(task, "S"))
    x, y = task.train_inputs(include_attack=True)
    assert x.shape[0] == 1000 and bool((y[500:] == task.A.y).all())


def test_splits_are_disjoint(task):
    s, a, e = set(task.S.index), set(task.A.index), set(task.E.index)
    assert len(s) == 500 and len(a) == 500 and len(e) == 1000  # no repeats inside a split
    assert not s & a
    # E indexes the test split, S and A the training split: no image of E is in S or A
    data, _ = load_source("mnist")
    train_rows = {data.x_train[i].tobytes() for i in s | a}
    assert not any(data.x_test[i].tobytes() in train_rows for i in e)


def test_deterministic_per_seed(no_data_env):
    a = load_task(attack_size=100, data_seed=3)
    b = load_task(attack_size=100, data_seed=3)
    for sa, sb in ((a.S, b.S), (a.A, b.A), (a.E, b.E)):
        np.testing.assert_array_equal(sa.index, sb.index)
        assert bool((sa.x == sb.x).all()) and bool((sa.y == sb.y).all())
    c = load_task(attack_size=100, data_seed=4)
    assert not np.array_equal(a.S.index, c.S.index)
    assert not np.array_equal(a.E.index, c.E.index)
    assert len(set(a.S.index) & set(c.S.index)) < 100  # a fresh draw, not a shifted one


def test_S_and_E_do_not_depend_on_attack_size_and_A_is_nested(no_data_env):
    tasks = [load_task(attack_size=k, data_seed=1) for k in (0, 50, 300)]
    for t in tasks[1:]:
        np.testing.assert_array_equal(t.S.index, tasks[0].S.index)
        np.testing.assert_array_equal(t.E.index, tasks[0].E.index)
    assert len(tasks[0].A) == 0 and tasks[0].A.x.shape == (0, 1, 28, 28)
    np.testing.assert_array_equal(tasks[2].A.index[:50], tasks[1].A.index)
    # a smaller S is a prefix of a larger one, and E a prefix of a larger E
    small = load_task(train_size=100, test_size=200, data_seed=1)
    np.testing.assert_array_equal(small.S.index, tasks[0].S.index[:100])
    np.testing.assert_array_equal(small.E.index, tasks[0].E.index[:200])


def test_classes_options(no_data_env):
    data, _ = load_source("mnist")
    parity = load_task(classes="odd-even", attack_size=20, test_size=300)
    assert parity.classes == "odd-even"
    np.testing.assert_array_equal(parity.S.y.numpy(), data.y_train[parity.S.index] % 2)
    np.testing.assert_array_equal(parity.A.y.numpy(), 1 - data.y_train[parity.A.index] % 2)

    pair = load_task(classes="3 vs 8", attack_size=20, test_size=300)
    assert pair.classes == "3v8"
    assert set(data.y_train[pair.S.index].tolist()) == {3, 8}
    assert set(data.y_test[pair.E.index].tolist()) == {3, 8}
    np.testing.assert_array_equal(pair.S.y.numpy(), data.y_train[pair.S.index] == 8)
    rev = load_task(classes="8v3", test_size=300)
    assert set(data.y_train[rev.S.index[rev.S.y.numpy() == 0]].tolist()) == {8}

    for alias in ("0-4 vs 5-9", "0-4-vs-5-9", "default", None):
        assert parse_classes("mnist", alias).name == "0-4v5-9"
    for alias in ("car-vs-cat", "automobile_vs_cat", "1 v 3", "CAR v CAT", None):
        assert parse_classes("cifar10", alias).name == "1v3"
    assert parse_classes("cifar10", "ship-vs-truck").name == "8v9"
    assert parse_classes("cifar10", "plane v bird").positive == (2,)


@pytest.mark.parametrize(
    ("task", "classes", "expected"),
    [
        ("mnist", "3v3", "0-4v5-9 (default), odd-even, or a digit pair like 3v8"),
        ("mnist", "cats", "odd-even"),
        ("mnist", "3v10", "digit pair"),
        ("cifar10", "car-vs-horsey", "automobile, bird, cat"),
        ("cifar10", "1v2v3", "any pair"),
    ],
)
def test_unknown_classes(task, classes, expected, dh):
    with pytest.raises(SpecError) as e:
        parse_classes(task, classes)
    msg = dh.one_line(e)
    assert expected in msg and repr(classes) in msg


def test_unknown_task(dh):
    with pytest.raises(SpecError) as e:
        load_task("fashion")
    assert "mnist, cifar10" in dh.one_line(e) and "'fashion'" in str(e.value)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"train_size": 0}, r"train_size expected >= 1, got 0"),
        ({"train_size": -5}, r"train_size expected >= 1, got -5"),
        ({"attack_size": -1}, r"attack_size expected >= 0, got -1"),
        ({"test_size": -1}, r"test_size expected >= 0, got -1"),
        ({"train_size": 2.5}, r"train_size expected an integer >= 1, got 2.5"),
        ({"attack_size": True}, r"attack_size expected an integer >= 0, got True"),
        (
            {"train_size": 9600, "attack_size": 401},
            r"train_size \+ attack_size expected <= 10000 .*got 9600 \+ 401 = 10001",
        ),
        ({"test_size": 2001}, r"test_size expected <= 2000 .*got 2001"),
        ({"classes": "3v8", "test_size": 1000}, r"test_size expected <= 399 .*got 1000"),
    ],
)
def test_out_of_range_sizes(no_data_env, kwargs, pattern, dh):
    with pytest.raises(DataError, match=pattern) as e:
        load_task(**kwargs)
    dh.one_line(e)


def test_bad_seed():
    with pytest.raises(SpecError, match="data_seed expected a non-negative integer, got -1"):
        load_task(data_seed=-1)


def test_largest_sizes_fit(no_data_env):
    t = load_task(train_size=9500, attack_size=500, test_size=2000, data_seed=2)
    assert sorted(np.concatenate([t.S.index, t.A.index]).tolist()) == list(range(10000))
    assert sorted(t.E.index.tolist()) == list(range(2000))


# ---------------------------------------------------------------- data folder resolution


def test_data_dir_precedence(tmp_path, monkeypatch, dh):
    env_arrays = dh.write_fake_mnist(tmp_path / "env" / "mnist", n_train=60, n_test=30, seed=1)
    arg_arrays = dh.write_fake_mnist(tmp_path / "arg", n_train=80, n_test=40, seed=2, gz=False)
    monkeypatch.setenv("FLATVOL_DATA", str(tmp_path / "env"))
    t = load_task(train_size=10, test_size=5)
    np.testing.assert_array_equal(t.S.x.numpy()[:, 0] * 255, env_arrays[0][t.S.index])
    with pytest.raises(DataError, match=r"expected <= 60 \(.*env/mnist\)"):
        load_task(train_size=61, test_size=5)
    t = load_task(train_size=70, test_size=5, data_dir=tmp_path / "arg")
    np.testing.assert_array_equal(t.E.x.numpy()[:, 0] * 255, arg_arrays[2][t.E.index])
    monkeypatch.delenv("FLATVOL_DATA")
    assert load_source("mnist")[1] == "embedded MNIST subset"
    with pytest.raises(DataError, match="expected MNIST files .* got none complete"):
        load_task(data_dir=tmp_path)
    with pytest.raises(DataError, match="no such path"):
        load_task(data_dir=tmp_path / "absent")


def test_cifar10_without_data(no_data_env, dh):
    with pytest.raises(DataError) as e:
        load_task("cifar10")
    msg = dh.one_line(e)
    assert "--data-dir" in msg and "FLATVOL_DATA" in msg


def test_decoded_arrays_are_cached(tmp_path, dh):
    dh.write_fake_mnist(tmp_path, n_train=50, n_test=20)
    load_task(data_dir=tmp_path, train_size=10, test_size=5)
    hits = _cached_dataset.cache_info().hits
    load_task(data_dir=tmp_path, train_size=20, test_size=5, data_seed=1)
    assert _cached_dataset.cache_info().hits == hits + 1
    data, _ = load_source("mnist", tmp_path)
    with pytest.raises(ValueError):  # shared cached arrays are read-only
        data.x_train[0, 0, 0] = 1
    # a rewritten file is read again
    new = dh.write_fake_mnist(tmp_path, n_train=55, n_test=20, seed=3)
    t = load_task(data_dir=tmp_path, train_size=55, test_size=5)
    np.testing.assert_array_equal(t.S.x.numpy()[:, 0] * 255, new[0][t.S.index])


# ---------------------------------------------------------------- full shared data


def test_full_mnist_reference_task(shared_data):
    t = load_task(train_size=500, attack_size=500, test_size=1000, data_dir=shared_data)
    data, source = load_source("mnist", shared_data)
    assert source.endswith("mnist")
    assert len(data.y_train) == 60000 and len(data.y_test) == 10000
    assert t.S.index.max() >= 10000 or t.A.index.max() >= 10000  # drawn from the full pool
    np.testing.assert_array_equal(t.A.y.numpy(), 1 - (data.y_train[t.A.index] >= 5))
    with pytest.raises(DataError, match="expected <= 60000"):
        load_task(train_size=59600, attack_size=401, data_dir=shared_data)


def test_fingerprint_identifies_the_examples_of_a_task():
    from flatvol.data import load_task

    a = load_task("mnist", 50, 10, 40, data_seed=0, data_dir="embedded")
    b = load_task("mnist", 50, 10, 40, data_seed=0, data_dir="embedded")
    c = load_task("mnist", 50, 10, 40, data_seed=1, data_dir="embedded")
    d = load_task("mnist", 50, 11, 40, data_seed=0, data_dir="embedded")
    assert a.fingerprint() == b.fingerprint()
    assert len({a.fingerprint(), c.fingerprint(), d.fingerprint()}) == 3
