"""Tasks and `load_task`: the S (train), A (attack) and E (test) sets of the paper.

A task's `classes` option names a labelling (`Labelling`): binary (`BinaryClasses`: two groups
of source classes, labels {0, 1} for one logit, e.g. '0-4v5-9', '3v8', 'car-vs-cat') or K >= 3
classes (`MultiClasses`: 'all', or a listed subset like '0,1,2,7' or 'car,cat,dog', labels
0..K-1 in the listed order, for K outputs).

The pool is the training split restricted to the task's classes, permuted with
`np.random.default_rng(data_seed)`: S is its first `train_size` images, A the next `attack_size`
with wrong labels: flipped for a binary task, drawn uniformly from the other K - 1 classes for K
classes (by a generator of its own, `attack_offsets`, one draw per pool position). E is the test
split restricted to the classes, permuted by a child of the same seed
(`SeedSequence(data_seed).spawn(1)[0]`), first `test_size`. S and E therefore depend only on
`data_seed` and the data source, never on `attack_size`: every network of an attack sweep
shares S u E, and larger attack sets contain smaller ones (with the same wrong labels).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from flatvol.data.cifar import (
    CIFAR10_LABEL_NAMES,
    CIFAR_NPZ_NAME,
    CIFAR_TEN_CLASS_NPZ_NAME,
    find_cifar_batches_dir,
    load_cifar_batches,
    load_cifar_npz,
    load_image_npz,
)
from flatvol.data.download import find_mnist_dir
from flatvol.data.idx import MNIST_FILE_STEMS, ImageDataset, find_mnist_file, load_mnist_dir
from flatvol.data.task import Split, TaskData
from flatvol.errors import DataError, SpecError

DATA_ENV_VAR = "FLATVOL_DATA"
EMBEDDED_MNIST = Path(__file__).resolve().parent / "embedded" / "mnist_subset.npz"
EMBEDDED_SOURCE = "embedded MNIST subset"


class Labelling(Protocol):
    """How a task labels the source images: which source labels it keeps, and the label
    (0..n_classes-1) of each. `BinaryClasses` and `MultiClasses` are the two kinds."""

    name: str
    description: str

    @property
    def labels(self) -> tuple[int, ...]:
        """The source labels the task keeps."""
        ...

    @property
    def n_classes(self) -> int:
        """K: how many classes the task's labels take."""
        ...

    def select(self, y: np.ndarray) -> np.ndarray:
        """Indices of `y` (source labels) that belong to the task, in order."""
        ...

    def targets(self, y: np.ndarray) -> np.ndarray:
        """The task's labels for source labels `y` (all in `self.labels`)."""
        ...


@dataclass(frozen=True)
class BinaryClasses:
    """A binary labelling: source labels in `negative` become 0, in `positive` 1, others dropped."""

    name: str
    negative: tuple[int, ...]
    positive: tuple[int, ...]
    description: str

    @property
    def labels(self) -> tuple[int, ...]:
        return self.negative + self.positive

    @property
    def n_classes(self) -> int:
        return 2

    def select(self, y: np.ndarray) -> np.ndarray:
        """Indices of `y` (source labels) that belong to one of the two classes, in order."""
        return np.flatnonzero(np.isin(y, self.labels))

    def binarize(self, y: np.ndarray) -> np.ndarray:
        """float32 {0, 1} labels for source labels `y` (all in `self.labels`)."""
        return np.isin(y, self.positive).astype(np.float32)

    def targets(self, y: np.ndarray) -> np.ndarray:
        """float32 {0, 1}: the targets of a one-logit classifier (binarize)."""
        return self.binarize(y)


@dataclass(frozen=True)
class MultiClasses:
    """K >= 3 classes: source label `classes[k]` becomes label k, others dropped."""

    name: str
    classes: tuple[int, ...]
    description: str

    @property
    def labels(self) -> tuple[int, ...]:
        return self.classes

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def select(self, y: np.ndarray) -> np.ndarray:
        """Indices of `y` (source labels) that belong to one of the classes, in order."""
        return np.flatnonzero(np.isin(y, self.classes))

    def targets(self, y: np.ndarray) -> np.ndarray:
        """int64 labels 0..K-1: the position of each source label in `classes`."""
        lookup = np.full(max(self.classes) + 1, -1, dtype=np.int64)
        lookup[list(self.classes)] = np.arange(len(self.classes))
        return lookup[np.asarray(y, dtype=np.int64)]


def attack_offsets(n_classes: int, data_seed: int, pool_size: int) -> np.ndarray:
    """How far each pool position's attack label lies from its true label (mod K): uniform in
    1..K-1, so the attack label is uniform over the other K - 1 classes.

    Drawn for every position of the pool by a generator of its own (child 1 of data_seed's
    SeedSequence; child 0 orders E), so the draws depend neither on train_size nor on
    attack_size: a larger attack set holds a smaller one with the same labels. For K = 2 the
    offset is always 1 (the flip) and nothing is drawn.

    Args:
        n_classes: K.
        data_seed: the task's data seed.
        pool_size: positions of the permuted training pool.

    Returns:
        int64 offsets of shape (pool_size,).
    """
    if n_classes == 2:
        return np.ones(pool_size, dtype=np.int64)
    generator = np.random.default_rng(np.random.SeedSequence(int(data_seed), spawn_key=(1,)))
    return generator.integers(1, n_classes, size=pool_size, dtype=np.int64)


@dataclass(frozen=True)
class TaskInfo:
    """A dataset and how to read its `classes` option."""

    name: str
    input_shape: tuple[int, ...]
    default_classes: str
    classes_help: str
    parse_classes: Callable[[str], Labelling]


def _normalize(classes: str) -> str:
    """Lower case, no spaces; ' vs ', '-vs-', '_v_' and the like become a bare 'v'."""
    s = classes.strip().lower().replace("_", "-")
    s = re.sub(r"[\s_-]*\bvs?\b[\s_-]*", "v", s)
    return re.sub(r"\s+", "", s)


_MULTI_HELP = "; or K >= 3 classes: all, or a comma-separated list"


def _class_list(task: str, classes: str, tokens: list[str],
                label_of: Callable[[str], int | None], names: tuple[str, ...]) -> Labelling:
    """The labelling named by a list of classes: K >= 3 classes in the listed order (two
    listed classes are the binary task 'av b', one logit)."""
    found = [label_of(t) for t in tokens]
    unknown = [t for t, c in zip(tokens, found) if c is None]
    if unknown:
        raise SpecError(f"classes for task {task}: expected classes {TASKS[task].classes_help}, "
                        f"got unknown class {unknown[0]!r} in {classes!r}")
    listed = [int(c) for c in found if c is not None]
    twice = sorted({c for c in listed if listed.count(c) > 1})
    if twice:
        raise SpecError(f"classes for task {task}: expected each class once, got "
                        f"{names[twice[0]]} listed twice in {classes!r}")
    if len(listed) < 2:
        raise SpecError(f"classes for task {task}: expected at least 2 classes, got "
                        f"{len(listed)} in {classes!r}")
    if len(listed) == 2:
        a, b = listed
        return BinaryClasses(f"{a}v{b}", (a,), (b,), f"{names[a]} (0) vs {names[b]} (1)")
    name = "all" if listed == list(range(len(names))) else ",".join(str(c) for c in listed)
    return MultiClasses(name, tuple(listed), f"{len(listed)} classes: "
                        + ", ".join(f"{names[c]} ({k})" for k, c in enumerate(listed)))


def _list_tokens(s: str, count: int) -> list[str] | None:
    """The tokens of a K-class name ('all' or a comma-separated list), None for another form."""
    if s == "all":
        return [str(c) for c in range(count)]
    if "," in s:  # empty items ('3,') are dropped: a list of one class is refused by count
        return [t for t in s.split(",") if t]
    return None


_DIGIT_NAMES = tuple(f"digit {d}" for d in range(10))


def _parse_mnist(classes: str) -> Labelling:
    s = _normalize(classes)
    tokens = _list_tokens(s, 10)
    if tokens is not None:
        return _class_list("mnist", classes, tokens,
                           lambda t: int(t) if t.isdigit() and len(t) == 1 else None,
                           _DIGIT_NAMES)
    if s in ("0-4v5-9", "default", "low-high", "01234v56789"):
        return BinaryClasses("0-4v5-9", (0, 1, 2, 3, 4), (5, 6, 7, 8, 9), "digits 0-4 vs 5-9")
    if s in ("odd-even", "even-odd", "parity"):
        return BinaryClasses("odd-even", (0, 2, 4, 6, 8), (1, 3, 5, 7, 9), "even (0) vs odd (1)")
    m = re.fullmatch(r"(\d)v(\d)", s)
    if m and m.group(1) != m.group(2):
        a, b = int(m.group(1)), int(m.group(2))
        return BinaryClasses(f"{a}v{b}", (a,), (b,), f"digit {a} (0) vs {b} (1)")
    raise SpecError(
        f"classes for task mnist expected {TASKS['mnist'].classes_help}, got {classes!r}"
    )


_CIFAR_ALIASES = {"car": "automobile", "plane": "airplane", "aeroplane": "airplane"}


def _cifar_label(token: str) -> int | None:
    if token.isdigit() and len(token) == 1:
        return int(token)
    name = _CIFAR_ALIASES.get(token, token)
    return CIFAR10_LABEL_NAMES.index(name) if name in CIFAR10_LABEL_NAMES else None


def _parse_cifar10(classes: str) -> Labelling:
    s = _normalize(classes)
    tokens = _list_tokens(s, len(CIFAR10_LABEL_NAMES))
    if tokens is not None:
        return _class_list("cifar10", classes, tokens, _cifar_label, CIFAR10_LABEL_NAMES)
    if s == "default":
        s = "1v3"
    # No CIFAR-10 class name contains a 'v', so 'v' separates the pair unambiguously.
    parts = s.split("v")
    if len(parts) == 2:
        a, b = _cifar_label(parts[0]), _cifar_label(parts[1])
        if a is not None and b is not None and a != b:
            return BinaryClasses(
                f"{a}v{b}",
                (a,),
                (b,),
                f"{CIFAR10_LABEL_NAMES[a]} (0) vs {CIFAR10_LABEL_NAMES[b]} (1)",
            )
    raise SpecError(
        f"classes for task cifar10 expected {TASKS['cifar10'].classes_help}, got {classes!r}"
    )


TASKS: dict[str, TaskInfo] = {
    "mnist": TaskInfo(
        "mnist",
        (1, 28, 28),
        "0-4v5-9",
        "0-4v5-9 (default), odd-even, or a digit pair like 3v8" + _MULTI_HELP
        + " of digits like 0,1,2,7",
        _parse_mnist,
    ),
    "cifar10": TaskInfo(
        "cifar10",
        (3, 32, 32),
        "1v3",
        "1v3 (default, automobile vs cat) or any pair of CIFAR-10 labels 0-9 or names like "
        "car-vs-cat (" + ", ".join(CIFAR10_LABEL_NAMES) + ")" + _MULTI_HELP
        + " of labels or names like car,cat,dog",
        _parse_cifar10,
    ),
}


def get_task(task: str) -> TaskInfo:
    """The TaskInfo named `task`; SpecError listing the valid tasks otherwise.

    Args:
        task: Task name (e.g. 'mnist' or 'cifar10').

    Returns:
        The TaskInfo of the task.

    Raises:
        SpecError: If task is not a known task.
    """
    key = task.strip().lower() if isinstance(task, str) else task
    if key not in TASKS:
        raise SpecError(f"task expected one of {', '.join(TASKS)}, got {task!r}")
    return TASKS[key]


def parse_classes(task: str, classes: str | None = None) -> Labelling:
    """The labelling of `task` named by `classes` (the task's default when None).

    Args:
        task: Task name (e.g. 'mnist' or 'cifar10').
        classes: Name of the labelling: binary ('0-4v5-9', '3v8', 'car-vs-cat', ...) or
            K >= 3 classes ('all', '0,1,2,7', 'car,cat,dog').

    Returns:
        A BinaryClasses (two classes) or MultiClasses (K >= 3) labelling.

    Raises:
        SpecError: If task is not a known task or classes is not a valid labelling.
    """
    info = get_task(task)
    return info.parse_classes(info.default_classes if classes is None else str(classes))


EMBEDDED = "embedded"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The data folder to use: `data_dir`, else $FLATVOL_DATA, else None (embedded data).

    `data_dir="embedded"` forces the embedded subset even when $FLATVOL_DATA is set, so a run
    trained on it is reloaded with the same S, A and E.

    Args:
        data_dir: Data folder, "embedded", or None.

    Returns:
        The data folder, or None for the embedded data.
    """
    if data_dir is not None and str(data_dir) == EMBEDDED:
        return None
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV_VAR, "").strip()
    return Path(env).expanduser() if env else None


def _stamp(*paths: Path) -> tuple:
    """What identifies the content of files for the in-process cache (path, mtime, size)."""
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p.resolve()), st.st_mtime_ns, st.st_size))
    return tuple(out)


def _read_only(ds: ImageDataset) -> ImageDataset:
    # Cached arrays are shared between calls: make accidental in-place edits fail loudly.
    for a in ds:
        a.setflags(write=False)
    return ds


@functools.lru_cache(maxsize=8)
def _cached_dataset(kind: str, location: str, stamp: tuple) -> ImageDataset:
    del stamp  # part of the cache key only: a changed file is read again
    if kind == "mnist-idx":
        return _read_only(load_mnist_dir(location))
    if kind == "mnist-npz":
        return _read_only(load_image_npz(location, (28, 28)))
    if kind == "cifar-batches":
        return _read_only(load_cifar_batches(location))
    if kind == "cifar-npz":
        return _read_only(load_cifar_npz(location))
    raise AssertionError(kind)


def load_source(task: str, data_dir: str | os.PathLike | None = None,
                classes: Labelling | None = None) -> tuple[ImageDataset, str]:
    """The decoded uint8 dataset of `task` and a description of where it came from.

    MNIST: the IDX files in the data folder (or its mnist/ subfolder), else the embedded subset.
    CIFAR-10: the official python batches (`cifar-10-batches-py`) in the data folder, else the
    shared `cifar10-jpeg-car-cat.npz` there for a binary task, the shared
    `cifar10-jpeg-10class.npz` there (else the car/cat one) for K >= 3 classes (or a path to
    such an npz).

    Args:
        task: Task name (e.g. 'mnist' or 'cifar10').
        data_dir: Data folder (default: $FLATVOL_DATA, else the embedded subset for MNIST).
        classes: The labelling the data is for (default: the task's default labelling).

    Returns:
        A pair (dataset, description): the decoded uint8 ImageDataset and where it came from.

    Raises:
        DataError: If the data folder does not exist or holds no usable data for the task.
        SpecError: If task is not a known task.
    """
    info = get_task(task)
    root = resolve_data_dir(data_dir)
    if info.name == "mnist":
        if root is None:
            if not EMBEDDED_MNIST.is_file():
                raise DataError(f"{EMBEDDED_MNIST}: embedded MNIST subset expected, got no file")
            return _cached_dataset("mnist-npz", str(EMBEDDED_MNIST), _stamp(EMBEDDED_MNIST)), (
                EMBEDDED_SOURCE
            )
        if not root.exists():
            raise DataError(f"data dir {root}: expected an existing folder, got no such path")
        found = find_mnist_dir(root)
        if found is None:
            raise DataError(
                f"data dir {root}: expected MNIST files {', '.join(MNIST_FILE_STEMS)} (.gz or raw) "
                f"in {root} or {root / 'mnist'}, got none complete"
            )
        files = [find_mnist_file(found, stem) for stem in MNIST_FILE_STEMS]
        return _cached_dataset("mnist-idx", str(found), _stamp(*files)), str(found)
    # cifar10
    if root is None:
        raise DataError(
            "task cifar10: expected a data folder with cifar-10-batches-py/ or "
            f"{CIFAR_NPZ_NAME} (K classes: {CIFAR_TEN_CLASS_NPZ_NAME}), got none (pass "
            f"--data-dir or set {DATA_ENV_VAR})"
        )
    if root.is_file() and root.suffix == ".npz":
        return _cached_dataset("cifar-npz", str(root), _stamp(root)), str(root)
    if not root.exists():
        raise DataError(f"data dir {root}: expected an existing folder, got no such path")
    batches = find_cifar_batches_dir(root)
    if batches is not None:
        files = sorted(p for p in batches.iterdir() if p.is_file())
        return _cached_dataset("cifar-batches", str(batches), _stamp(*files)), str(batches)
    # Binary tasks read the car/cat subset they always read (same images, same refusals);
    # K-class tasks the ten-class subset, where there is one.
    binary = (classes or parse_classes(info.name)).n_classes == 2
    names = (CIFAR_NPZ_NAME,) if binary else (CIFAR_TEN_CLASS_NPZ_NAME, CIFAR_NPZ_NAME)
    for name in names:
        npz = root / name
        if npz.is_file():
            return _cached_dataset("cifar-npz", str(npz), _stamp(npz)), str(npz)
    raise DataError(
        f"data dir {root}: expected cifar-10-batches-py/ or {' or '.join(names)} for task "
        "cifar10, got none"
    )


def _check_size(field: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{field} expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise DataError(f"{field} expected >= {minimum}, got {value}")
    return int(value)


def _to_split(x: np.ndarray, y: np.ndarray, index: np.ndarray, classes: Labelling,
              offsets: np.ndarray | None = None) -> Split:
    """The split of source examples `index`: images as float32 channels-first, labels the
    labelling's targets, moved by `offsets` (mod K) for an attack set."""
    images = x[index].astype(np.float32)
    images /= 255.0
    if images.ndim == 3:  # MNIST (n, 28, 28) -> (n, 1, 28, 28)
        images = images[:, None]
    else:  # CIFAR channels-last (n, 32, 32, 3) -> channels-first (n, 3, 32, 32)
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    labels = classes.targets(y[index])
    if offsets is not None:
        # for K = 2 (float32 {0, 1}, offsets 1) this is the flip 1 - y, value for value
        labels = ((labels + offsets) % classes.n_classes).astype(labels.dtype)
    return Split(torch.from_numpy(images), torch.from_numpy(labels), index.astype(np.int64))


def missing_classes(task: TaskData) -> list[int]:
    """The classes (labels 0..K-1) that no example of S carries.

    Args:
        task: a loaded task.

    Returns:
        The absent labels, in order (empty when S holds every class).
    """
    present = set(np.unique(task.S.y.numpy().astype(np.int64)).tolist())
    return [k for k in range(task.n_classes) if k not in present]


def load_task(
    task: str = "mnist",
    train_size: int = 500,
    attack_size: int = 0,
    test_size: int = 1000,
    data_seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    classes: str | None = None,
    every_class_in_S: bool = False,
) -> TaskData:
    """The task's S (train), A (attack, wrong labels) and E (test) sets.

    x is float32 in [0, 1], channels first ((n, 1, 28, 28) MNIST, (n, 3, 32, 32) CIFAR-10); y is
    float32 in {0, 1} for a binary task, int64 in 0..K-1 for K >= 3 classes; an attack label is
    the flip (binary) or uniform over the other K - 1 classes (`attack_offsets`). Split.index
    holds indices into the source split (train for S and A, test for E). Data comes from
    `data_dir`, else $FLATVOL_DATA, else (MNIST only) the embedded subset. Impossible sizes
    raise DataError naming the field.

    Args:
        task: Task name (e.g. 'mnist' or 'cifar10').
        train_size: Number of points in S.
        attack_size: Number of points in A.
        test_size: Number of points in E.
        data_seed: Seed choosing S, A and E (and A's labels for K classes).
        data_dir: Data folder (default: $FLATVOL_DATA, else the embedded subset for MNIST).
        classes: Labelling of the task (default: the task's): binary ('0-4v5-9', '3v8',
            'car-vs-cat') or K >= 3 classes ('all', '0,1,2,7', 'car,cat,dog').
        every_class_in_S: Refuse an S that misses one of the K classes.

    Returns:
        The TaskData with the S, A and E splits.

    Raises:
        DataError: If a size is impossible, the data cannot be loaded, or (every_class_in_S)
            a class is missing from S.
        SpecError: If the task, the classes or data_seed is invalid.
    """
    info = get_task(task)
    labelling = parse_classes(info.name, classes)
    train_size = _check_size("train_size", train_size, 1)
    attack_size = _check_size("attack_size", attack_size, 0)
    test_size = _check_size("test_size", test_size, 0)
    if isinstance(data_seed, bool) or not isinstance(data_seed, (int, np.integer)) or data_seed < 0:
        raise SpecError(f"data_seed expected a non-negative integer, got {data_seed!r}")
    data, source = load_source(info.name, data_dir, labelling)

    train_pool = labelling.select(data.y_train)
    test_pool = labelling.select(data.y_test)
    present = sorted(set(np.unique(data.y_train).tolist()))
    absent = [c for c in labelling.labels if c not in present]
    if absent:
        raise DataError(
            f"{source}: classes {labelling.name} need labels {list(labelling.labels)}, "
            f"got data with labels {present} only"
        )
    if train_size + attack_size > len(train_pool):
        raise DataError(
            f"train_size + attack_size expected <= {len(train_pool)} (the {info.name} "
            f"{labelling.name} training pool of {source}), got {train_size} + {attack_size} = "
            f"{train_size + attack_size}"
        )
    if test_size > len(test_pool):
        raise DataError(
            f"test_size expected <= {len(test_pool)} (the {info.name} {labelling.name} test set "
            f"of {source}), got {test_size}"
        )

    seeds = np.random.SeedSequence(int(data_seed))
    train_order = train_pool[np.random.default_rng(seeds).permutation(len(train_pool))]
    test_order = test_pool[np.random.default_rng(seeds.spawn(1)[0]).permutation(len(test_pool))]
    s_index = train_order[:train_size]
    a_index = train_order[train_size : train_size + attack_size]
    e_index = test_order[:test_size]
    offsets = attack_offsets(labelling.n_classes, int(data_seed), len(train_pool))
    loaded = TaskData(
        task=info.name,
        classes=labelling.name,
        data_seed=int(data_seed),
        S=_to_split(data.x_train, data.y_train, s_index, labelling),
        A=_to_split(data.x_train, data.y_train, a_index, labelling,
                    offsets[train_size : train_size + attack_size]),
        E=_to_split(data.x_test, data.y_test, e_index, labelling),
        n_classes=labelling.n_classes,
    )
    missing = missing_classes(loaded) if every_class_in_S else []
    if missing:
        raise DataError(
            f"train_size: expected S to hold every one of the {labelling.n_classes} classes "
            f"({labelling.name}), got none of class {missing[0]} (source label "
            f"{labelling.labels[missing[0]]}) in the {train_size} points of data_seed {data_seed}"
        )
    return loaded
