"""What a run of a spec is built from: its task, its prior and its training configuration.

The runner, the pre-flight checks and the backends all build runs through these functions, so a
spec means the same thing wherever it is read.
"""

from __future__ import annotations

import dataclasses
import os

from flatvol.data.task import Split, TaskData
from flatvol.models import Prior
from flatvol.problem_settings import OptimizerSpec, ProblemSpec
from flatvol.train import TrainConfig


def load_run_task(spec: ProblemSpec, attack_size: int,
                  data_dir: str | os.PathLike | None) -> TaskData:
    """The TaskData (S, A, E) of the spec's data settings with `attack_size` attack points
    (flipped labels for a binary task, another class for K classes).

    Args:
        spec: the spec (a sweep's or sgd-vs-bayes'), its data settings.
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


class RunTasks:
    """The tasks of a sweep's runs, read from the data once per process.

    Every run of a spec shares S and E, and a smaller attack set is the start of a larger one
    with the same labels (flatvol.data.tasks), so the task of the largest attack size holds
    every run's: `task(attack_size)` is it with A cut to its first `attack_size` points,
    equal to `load_run_task(spec, attack_size, data_dir)` (tested), without reading the data
    again. The pre-flight check, the kernel's S u E, the ensemble and each run in the driver
    share one read. Picklable without its data: a worker process reads the data once itself.

    Args:
        spec: the sweep's spec (its data settings).
        data_dir: data directory (None: FLATVOL_DATA or the embedded MNIST subset).
        largest: |A| of the largest task needed (a sweep's largest attack size).
    """

    def __init__(self, spec: ProblemSpec, data_dir: str | os.PathLike | None,
                 largest: int) -> None:
        self.spec = spec
        self.data_dir = data_dir
        self.largest = int(largest)
        self._pool: TaskData | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pool": None}

    def largest_task(self) -> TaskData:
        """The task with the largest attack set, read on first use.

        Returns:
            The task; raises what `load_run_task` raises.
        """
        if self._pool is None:
            self._pool = load_run_task(self.spec, self.largest, self.data_dir)
        return self._pool

    def task(self, attack_size: int) -> TaskData:
        """The task of a run with `attack_size` attack points.

        Args:
            attack_size: |A|, at most the largest.

        Returns:
            The task, sharing S and E (and A's storage) with the largest.
        """
        attack_size = int(attack_size)
        if not 0 <= attack_size <= self.largest:
            raise ValueError(f"attack_size expected in 0..{self.largest}, got {attack_size}")
        pool = self.largest_task()
        if attack_size == self.largest:
            return pool
        a = pool.A
        return dataclasses.replace(pool, A=Split(a.x[:attack_size], a.y[:attack_size],
                                                 a.index[:attack_size]))


def spec_classes(spec: ProblemSpec) -> int:
    """K, the number of classes of the spec's task (2 for a binary one), read from its
    data.classes without loading any data.

    Args:
        spec: the spec (a sweep's or sgd-vs-bayes'), its data settings.

    Returns:
        K >= 2.
    """
    from flatvol.data import parse_classes

    return parse_classes(spec.data.task, spec.data.classes).n_classes


def spec_prior(spec: ProblemSpec) -> Prior:
    """The prior that initializes every network of the spec (and defines its NNGP kernel)."""
    return spec.prior()


def train_config(spec: ProblemSpec, opt: OptimizerSpec, seed: int) -> TrainConfig:
    """The TrainConfig of one run: spec.train with the optimizer's overrides and options
    (Entropy-SGD's Langevin noise is seeded by the run seed).

    Args:
        spec: the spec (a sweep's or sgd-vs-bayes'), its train settings.
        opt: one of spec.optimizers.
        seed: the run's seed.

    Returns:
        The configuration train_to_fit (or the ensemble trainer) runs with: the one
        conversion, flatvol.problem_settings.train_config, as for `flatvol train`.
    """
    return spec.train_config(opt, seed)


