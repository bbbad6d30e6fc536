"""K-class tasks: 'all' or a listed subset of MNIST digits / CIFAR-10 classes, labels 0..K-1 in
the listed order, attack labels uniform over the other K - 1 classes (seeded, attack sets nested);
binary tasks keep their data to the byte."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flatvol.data import (
    BinaryClasses,
    MultiClasses,
    load_source,
    load_task,
    missing_classes,
    parse_classes,
)
from flatvol.data.cifar import CIFAR_NPZ_NAME, CIFAR_TEN_CLASS_NPZ_NAME
from flatvol.errors import DataError, SpecError

# TaskData.fingerprint() of binary tasks, computed on the code before K-class tasks existed
# (commit 8a6cc2f): the same images, labels and order, so every cache keyed by them stays valid.
BINARY_FINGERPRINTS = {
    "mnist-default": "f56085ade174e018",  # load_task(attack_size=20, test_size=100)
    "mnist-3v8": "3d5f4ba8cf773d1c",  # classes 3v8, attack 7, test 50, data_seed 3
}
SHARED_BINARY_FINGERPRINTS = {
    "cifar-car-cat": "a24ba9e2854560d2",  # cifar10, train 50, attack 10, test 30
    "mnist-full": "53a28baf4d34fbe8",  # full MNIST, train 100, attack 10, test 30
}


def _source_labels(task, split: str, data_dir=None) -> np.ndarray:
    data, _ = load_source(task.task, data_dir, parse_classes(task.task, task.classes))
    y = data.y_test if split == "E" else data.y_train
    return y[getattr(task, split).index]


def test_binary_tasks_keep_their_data():
    assert load_task(attack_size=20, test_size=100).fingerprint() == (
        BINARY_FINGERPRINTS["mnist-default"])
    pair = load_task(classes="3v8", attack_size=7, test_size=50, data_seed=3)
    assert pair.fingerprint() == BINARY_FINGERPRINTS["mnist-3v8"]
    assert pair.n_classes == 2 and pair.outputs == 1 and pair.S.y.dtype == torch.float32
    # two listed classes are that binary task (one logit), not a 2-output one
    listed = load_task(classes="3,8", attack_size=7, test_size=50, data_seed=3)
    assert isinstance(parse_classes("mnist", "3,8"), BinaryClasses)
    assert listed.fingerprint() == pair.fingerprint()


def test_binary_tasks_keep_their_data_on_the_shared_sets(shared_data):
    cifar = load_task("cifar10", train_size=50, attack_size=10, test_size=30,
                      data_dir=shared_data)
    assert cifar.fingerprint() == SHARED_BINARY_FINGERPRINTS["cifar-car-cat"]
    assert load_source("cifar10", shared_data)[1].endswith(CIFAR_NPZ_NAME)
    full = load_task(train_size=100, attack_size=10, test_size=30, data_dir=shared_data)
    assert full.fingerprint() == SHARED_BINARY_FINGERPRINTS["mnist-full"]


def test_all_ten_digits():
    task = load_task(classes="all", train_size=300, attack_size=200, test_size=200)
    assert (task.classes, task.n_classes, task.outputs) == ("all", 10, 10)
    for split in (task.S, task.A, task.E):
        assert split.y.dtype == torch.int64
    np.testing.assert_array_equal(task.S.y.numpy(), _source_labels(task, "S"))
    np.testing.assert_array_equal(task.E.y.numpy(), _source_labels(task, "E"))
    assert missing_classes(task) == []
    # S and E depend on data_seed alone, as for binary tasks
    other = load_task(classes="0,1,2,3,4,5,6,7,8,9", train_size=300, attack_size=0,
                      test_size=200)
    assert other.classes == "all"
    np.testing.assert_array_equal(other.S.index, task.S.index)
    np.testing.assert_array_equal(other.E.index, task.E.index)


def test_attack_labels_are_another_class_drawn_uniformly_and_reproducibly():
    kwargs = dict(classes="all", train_size=100, test_size=10, data_seed=4)
    big = load_task(attack_size=5000, **kwargs)
    true = _source_labels(big, "A")
    offset = (big.A.y.numpy() - true) % 10
    assert offset.min() >= 1  # never the true class
    # uniform over the 9 other classes: each offset's count within 5 binomial sigmas
    counts = np.bincount(offset, minlength=10)[1:]
    expected = len(offset) / 9
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected * (1 - 1 / 9))), counts
    # nested: a smaller attack set is the start of a larger one, labels included
    small = load_task(attack_size=50, **kwargs)
    np.testing.assert_array_equal(small.A.index, big.A.index[:50])
    np.testing.assert_array_equal(small.A.y.numpy(), big.A.y.numpy()[:50])
    assert load_task(attack_size=50, **kwargs).fingerprint() == small.fingerprint()
    reseeded = load_task(attack_size=50, **{**kwargs, "data_seed": 5})
    assert not np.array_equal(reseeded.A.y.numpy(), small.A.y.numpy())


def test_a_listed_subset_takes_labels_in_the_listed_order():
    forward = load_task(classes="0, 1, 2, 7", train_size=200, attack_size=40, test_size=100)
    labelling = parse_classes("mnist", "0,1,2,7")
    assert isinstance(labelling, MultiClasses) and labelling.classes == (0, 1, 2, 7)
    assert forward.classes == "0,1,2,7" and forward.n_classes == 4
    source = _source_labels(forward, "S")
    assert set(source.tolist()) == {0, 1, 2, 7}
    np.testing.assert_array_equal(forward.S.y.numpy(), np.searchsorted([0, 1, 2, 7], source))
    backward = load_task(classes="7,2,1,0", train_size=200, attack_size=40, test_size=100)
    np.testing.assert_array_equal(backward.S.index, forward.S.index)
    np.testing.assert_array_equal(backward.S.y.numpy(), 3 - forward.S.y.numpy())
    assert set(forward.A.y.tolist()) <= {0, 1, 2, 3}
    assert np.all(forward.A.y.numpy() != np.searchsorted([0, 1, 2, 7],
                                                         _source_labels(forward, "A")))


def test_cifar10_classes_come_from_the_ten_class_subset(shared_data):
    task = load_task("cifar10", classes="car,cat,dog", train_size=300, attack_size=30,
                     test_size=90, data_dir=shared_data)
    assert task.classes == "1,3,5" and task.n_classes == 3 and task.input_shape == (3, 32, 32)
    _, source = load_source("cifar10", shared_data, parse_classes("cifar10", "car,cat,dog"))
    assert source.endswith(CIFAR_TEN_CLASS_NPZ_NAME)
    np.testing.assert_array_equal(task.S.y.numpy(),
                                  np.searchsorted([1, 3, 5], _source_labels(task, "S",
                                                                            shared_data)))
    ten = load_task("cifar10", classes="all", train_size=500, test_size=100, data_dir=shared_data)
    assert ten.n_classes == 10 and missing_classes(ten) == []
    # the car/cat file alone holds no dog: refused naming the file and the labels it has
    with pytest.raises(DataError, match=r"car-cat.npz: classes 1,3,5 need labels \[1, 3, 5\], "
                                        r"got data with labels \[1, 3\] only"):
        load_task("cifar10", classes="car,cat,dog", train_size=10,
                  data_dir=shared_data / CIFAR_NPZ_NAME)


@pytest.mark.parametrize(("task", "classes", "expected"), [
    ("mnist", "3,3,5", "expected each class once, got digit 3 listed twice in '3,3,5'"),
    ("cifar10", "car,cat,automobile", "automobile listed twice"),
    ("mnist", "1,2,x", "got unknown class 'x' in '1,2,x'"),
    ("mnist", "1,2,12", "got unknown class '12'"),
    ("cifar10", "car,cat,unicorn", "got unknown class 'unicorn'"),
    ("mnist", "3,", "expected at least 2 classes, got 1 in '3,'"),
    ("mnist", "3", "or K >= 3 classes: all, or a comma-separated list"),
])
def test_bad_class_lists_are_refused_in_one_line(task, classes, expected):
    with pytest.raises(SpecError) as e:
        parse_classes(task, classes)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_a_class_missing_from_S_is_named_when_every_class_must_be_present():
    task = load_task(classes="all", train_size=8, test_size=10)
    missing = missing_classes(task)
    assert missing and set(missing).isdisjoint(task.S.y.tolist())
    with pytest.raises(DataError, match=rf"got none of class {missing[0]} \(source label "
                                        rf"{missing[0]}\) in the 8 points of data_seed 0$"):
        load_task(classes="all", train_size=8, test_size=10, every_class_in_S=True)
    assert load_task(classes="all", train_size=300, test_size=10,
                     every_class_in_S=True).n_classes == 10
