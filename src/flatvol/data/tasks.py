"""Binary tasks and `load_task`: the S (train), A (attack) and E (test) sets of the paper.

The pool is the training split restricted to the task's two classes, permuted with
`np.random.default_rng(data_seed)`: S is its first `train_size` images, A the next `attack_size`
with flipped labels. E is the test split restricted to the two classes, permuted by a child of the
same seed (`SeedSequence(data_seed).spawn(1)[0]`), first `test_size`. S and E therefore depend only
on `data_seed` and the data source, never on `attack_size`: every network of an attack sweep
shares S u E, and larger attack sets contain smaller ones.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flatvol.data.cifar import (
    CIFAR10_LABEL_NAMES,
    CIFAR_NPZ_NAME,
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

    def select(self, y: np.ndarray) -> np.ndarray:
        """Indices of `y` (source labels) that belong to one of the two classes, in order."""
        return np.flatnonzero(np.isin(y, self.labels))

    def binarize(self, y: np.ndarray) -> np.ndarray:
        """float32 {0, 1} labels for source labels `y` (all in `self.labels`)."""
        return np.isin(y, self.positive).astype(np.float32)


@dataclass(frozen=True)
class TaskInfo:
    """A dataset and how to read its `classes` option."""

    name: str
    input_shape: tuple[int, ...]
    default_classes: str
    classes_help: str
    parse_classes: Callable[[str], BinaryClasses]


def _normalize(classes: str) -> str:
    """Lower case, no spaces; ' vs ', '-vs-', '_v_' and the like become a bare 'v'."""
    s = classes.strip().lower().replace("_", "-")
    s = re.sub(r"[\s_-]*\bvs?\b[\s_-]*", "v", s)
    return re.sub(r"\s+", "", s)


def _parse_mnist(classes: str) -> BinaryClasses:
    s = _normalize(classes)
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


def _parse_cifar10(classes: str) -> BinaryClasses:
    s = _normalize(classes)
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
        "0-4v5-9 (default), odd-even, or a digit pair like 3v8",
        _parse_mnist,
    ),
    "cifar10": TaskInfo(
        "cifar10",
        (3, 32, 32),
        "1v3",
        "1v3 (default, automobile vs cat) or any pair of CIFAR-10 labels 0-9 or names like "
        "car-vs-cat (" + ", ".join(CIFAR10_LABEL_NAMES) + ")",
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


def parse_classes(task: str, classes: str | None = None) -> BinaryClasses:
    """The binary labelling of `task` named by `classes` (the task's default when None).

    Args:
        task: Task name (e.g. 'mnist' or 'cifar10').
        classes: Name of the binary labelling (default: the task's).

    Returns:
        The BinaryClasses labelling.

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


def load_source(task: str, data_dir: str | os.PathLike | None = None) -> tuple[ImageDataset, str]:
    """The decoded uint8 dataset of `task` and a description of where it came from.

    MNIST: the IDX files in the data folder (or its mnist/ subfolder), else the embedded subset.
    CIFAR-10: the official python batches (`cifar-10-batches-py`) in the data folder, else the
    shared `cifar10-jpeg-car-cat.npz` there (or a path to such an npz).

    Args:
        task: Task name (e.g. 'mnist' or 'cifar10').
        data_dir: Data folder (default: $FLATVOL_DATA, else the embedded subset for MNIST).

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
            f"{CIFAR_NPZ_NAME}, got none (pass --data-dir or set {DATA_ENV_VAR})"
        )
    if root.is_file() and root.suffix == ".npz":
        return _cached_dataset("cifar-npz", str(root), _stamp(root)), str(root)
    if not root.exists():
        raise DataError(f"data dir {root}: expected an existing folder, got no such path")
    batches = find_cifar_batches_dir(root)
    if batches is not None:
        files = sorted(p for p in batches.iterdir() if p.is_file())
        return _cached_dataset("cifar-batches", str(batches), _stamp(*files)), str(batches)
    npz = root / CIFAR_NPZ_NAME
    if npz.is_file():
        return _cached_dataset("cifar-npz", str(npz), _stamp(npz)), str(npz)
    raise DataError(
        f"data dir {root}: expected cifar-10-batches-py/ or {CIFAR_NPZ_NAME} for task cifar10, "
        "got neither"
    )


def _check_size(field: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{field} expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise DataError(f"{field} expected >= {minimum}, got {value}")
    return int(value)


def _to_split(
    x: np.ndarray, y: np.ndarray, index: np.ndarray, classes: BinaryClasses, flip: bool
) -> Split:
    images = x[index].astype(np.float32)
    images /= 255.0
    if images.ndim == 3:  # MNIST (n, 28, 28) -> (n, 1, 28, 28)
        images = images[:, None]
    else:  # CIFAR channels-last (n, 32, 32, 3) -> channels-first (n, 3, 32, 32)
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    labels = classes.binarize(y[index])
    if flip:
        labels = 1.0 - labels
    return Split(
        torch.from_numpy(images),
        torch.from_numpy(labels.astype(np.float32)),
        index.astype(np.int64),
    )


def load_task(
    task: str = "mnist",
    train_size: int = 500,
    attack_size: int = 0,
    test_size: int = 1000,
    data_seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    classes: str | None = None,
) -> TaskData:
    """The binary task's S (train), A (attack, flipped labels) and E (test) sets.

    x is float32 in [0, 1], channels first ((n, 1, 28, 28) MNIST, (n, 3, 32, 32) CIFAR-10); y is
    float32 in {0, 1}; Split.index holds indices into the source split (train for S and A, test
    for E). Data comes from `data_dir`, else $FLATVOL_DATA, else (MNIST only) the embedded subset.
    Impossible sizes raise DataError naming the field.

    Args:
        task: Task name (e.g. 'mnist' or 'cifar10').
        train_size: Number of points in S.
        attack_size: Number of points in A.
        test_size: Number of points in E.
        data_seed: Seed choosing S, A and E.
        data_dir: Data folder (default: $FLATVOL_DATA, else the embedded subset for MNIST).
        classes: Binary labelling of the task (default: the task's).

    Returns:
        The TaskData with the S, A and E splits.

    Raises:
        DataError: If a size is impossible or the data cannot be loaded.
        SpecError: If the task or data_seed is invalid.
    """
    info = get_task(task)
    binary = parse_classes(info.name, classes)
    train_size = _check_size("train_size", train_size, 1)
    attack_size = _check_size("attack_size", attack_size, 0)
    test_size = _check_size("test_size", test_size, 0)
    if isinstance(data_seed, bool) or not isinstance(data_seed, (int, np.integer)) or data_seed < 0:
        raise SpecError(f"data_seed expected a non-negative integer, got {data_seed!r}")
    data, source = load_source(info.name, data_dir)

    train_pool = binary.select(data.y_train)
    test_pool = binary.select(data.y_test)
    present = sorted(set(np.unique(data.y_train).tolist()))
    absent = [c for c in binary.labels if c not in present]
    if absent:
        raise DataError(
            f"{source}: classes {binary.name} need labels {list(binary.labels)}, "
            f"got data with labels {present} only"
        )
    if train_size + attack_size > len(train_pool):
        raise DataError(
            f"train_size + attack_size expected <= {len(train_pool)} (the {info.name} "
            f"{binary.name} training pool of {source}), got {train_size} + {attack_size} = "
            f"{train_size + attack_size}"
        )
    if test_size > len(test_pool):
        raise DataError(
            f"test_size expected <= {len(test_pool)} (the {info.name} {binary.name} test set of "
            f"{source}), got {test_size}"
        )

    seeds = np.random.SeedSequence(int(data_seed))
    train_order = train_pool[np.random.default_rng(seeds).permutation(len(train_pool))]
    test_order = test_pool[np.random.default_rng(seeds.spawn(1)[0]).permutation(len(test_pool))]
    s_index = train_order[:train_size]
    a_index = train_order[train_size : train_size + attack_size]
    e_index = test_order[:test_size]
    return TaskData(
        task=info.name,
        classes=binary.name,
        data_seed=int(data_seed),
        S=_to_split(data.x_train, data.y_train, s_index, binary, flip=False),
        A=_to_split(data.x_train, data.y_train, a_index, binary, flip=True),
        E=_to_split(data.x_test, data.y_test, e_index, binary, flip=False),
    )
