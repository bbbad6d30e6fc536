"""What a run of a spec is built from: its task, its prior and its training configuration.

The runner, the pre-flight checks and the backends all build runs through these functions, so a
spec means the same thing wherever it is read.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from flatvol.data.task import TaskData
from flatvol.errors import SpecError, VolumeError
from flatvol.experiments.spec import TRAIN_EXECUTION_FIELDS, ExperimentSpec, OptimizerSpec
from flatvol.models import Prior
from flatvol.train import TrainConfig
from flatvol.volume.kernels import resolve_kernel_kind


def load_run_task(spec: ExperimentSpec, attack_size: int, data_dir: str | None) -> TaskData:
    """The TaskData (S, A, E) of the spec's data settings with `attack_size` attack points
    (flipped labels for a binary task, another class for K classes).

    Args:
        spec: the experiment spec.
        attack_size: |A| of this run.
        data_dir: data directory (None: FLATVOL_DATA or the embedded MNIST subset).

    Returns:
        The task; S and E depend only on the data settings, so every run shares them.

    Raises:
        DataError: the data cannot give it (sizes, classes; with data.every_class_in_S, a
            class missing from S).
    """
    from flatvol.data import load_task

    d = spec.data
    return load_task(d.task, train_size=d.train_size, attack_size=attack_size,
                     test_size=d.test_size, data_seed=d.data_seed, data_dir=data_dir,
                     classes=d.classes, every_class_in_S=d.every_class_in_S)


def spec_classes(spec: ExperimentSpec) -> int:
    """K, the number of classes of the spec's task (2 for a binary one), read from its
    data.classes without loading any data.

    Args:
        spec: the experiment spec.

    Returns:
        K >= 2.
    """
    from flatvol.data import parse_classes

    return parse_classes(spec.data.task, spec.data.classes).n_classes


def spec_prior(spec: ExperimentSpec) -> Prior:
    """The prior that initializes every network of the spec (and defines its NNGP kernel)."""
    return Prior(spec.model.sigma_w2, spec.model.sigma_b2)


def train_config(spec: ExperimentSpec, opt: OptimizerSpec, seed: int) -> TrainConfig:
    """The TrainConfig of one run: spec.train with the optimizer's overrides and options
    (Entropy-SGD's Langevin noise is seeded by the run seed).

    Args:
        spec: the experiment spec.
        opt: one of spec.optimizers.
        seed: the run's seed.

    Returns:
        The configuration train_to_fit (or the ensemble trainer) runs with.
    """
    options = dict(opt.options)
    if opt.name == "entropy-sgd":
        options.setdefault("seed", int(seed))
    base = spec.train.model_dump(exclude=set(TRAIN_EXECUTION_FIELDS))
    for name in ("lr", "batch_size", "max_epochs", "momentum", "weight_decay",
                 "post_train_epochs"):
        value = getattr(opt, name)
        if value is not None:
            base[name] = value
    return TrainConfig(optimizer=opt.name, optimizer_options=options, **base)


def kernel_kind(spec: ExperimentSpec, model: nn.Module) -> Literal["analytic", "mc"]:
    """Which NNGP kernel the spec's volume uses for `model` (flatvol.volume's
    resolve_kernel_kind: 'auto' is analytic for a ReLU FCN and Monte Carlo otherwise); 'analytic'
    on another architecture is a SpecError naming the field.

    Args:
        spec: the experiment spec (its measures.volume.kernel).
        model: a network built from spec.model.

    Returns:
        'analytic' or 'mc'.
    """
    try:
        return resolve_kernel_kind(spec.measures.volume.kernel, model)
    except VolumeError:
        raise SpecError(f"measures.volume.kernel: 'analytic' needs an fcn model, got "
                        f"{spec.model.arch!r} (use 'mc' or 'auto')") from None
