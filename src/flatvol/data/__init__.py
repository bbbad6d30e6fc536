"""Data: MNIST/CIFAR-10 readers, checksummed downloads, and the tasks S, A, E (binary or K-class).

`load_task` is the entry point; with no data folder it uses a small real MNIST subset shipped
inside the package (see data/embedded/README.md).
"""

from flatvol.data.cifar import (
    CIFAR10_LABEL_NAMES,
    load_cifar_batches,
    load_cifar_npz,
    read_cifar_batch,
)
from flatvol.data.download import (
    CIFAR10_MD5,
    CIFAR10_URL,
    MNIST_FILES,
    MNIST_MIRRORS,
    download,
    ensure_cifar10,
    ensure_mnist,
    file_md5,
)
from flatvol.data.idx import ImageDataset, load_mnist_dir, read_idx_images, read_idx_labels
from flatvol.data.task import Split, TaskData
from flatvol.data.tasks import (
    DATA_ENV_VAR,
    EMBEDDED,
    EMBEDDED_MNIST,
    TASKS,
    BinaryClasses,
    Labelling,
    MultiClasses,
    TaskInfo,
    get_task,
    load_source,
    load_task,
    missing_classes,
    parse_classes,
    resolve_data_dir,
)

__all__ = [
    "CIFAR10_LABEL_NAMES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATA_ENV_VAR",
    "EMBEDDED",
    "EMBEDDED_MNIST",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "TASKS",
    "BinaryClasses",
    "ImageDataset",
    "Labelling",
    "MultiClasses",
    "Split",
    "TaskData",
    "TaskInfo",
    "download",
    "ensure_cifar10",
    "ensure_mnist",
    "file_md5",
    "get_task",
    "load_cifar_batches",
    "load_cifar_npz",
    "load_mnist_dir",
    "load_source",
    "load_task",
    "missing_classes",
    "parse_classes",
    "read_cifar_batch",
    "read_idx_images",
    "read_idx_labels",
    "resolve_data_dir",
]
