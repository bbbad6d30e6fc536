"""Pre-flight checks of a sweep: everything that can be checked before the first run starts.

`check_sweep` validates the command's options, the output directory, and the whole expanded spec
(every run's data sizes against the pool, the architecture, each optimizer with its options and
each measure with its options) on tiny stand-ins, and reads the existing store without writing
to it. A problem is one SpecError line naming the spec file or option, expected vs got; nothing on
disk has changed when it is raised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flatvol.data.task import Split, TaskData
from flatvol.errors import FlatvolError, SpecError
from flatvol.experiments.backends import get_backend
from flatvol.experiments.build import RunTasks, spec_prior, train_config
from flatvol.experiments.context import CACHE_DIR, NETWORKS_DIR, kernel_request, sweep_tasks
from flatvol.experiments.spec import ExperimentSpec
from flatvol.experiments.spec_files import one_line
from flatvol.experiments.store import RunKey
from flatvol.experiments.store_frames import recorded_runs
from flatvol.validate import check_device, check_output_dir, check_threads, check_workers

DRY_RUN_POINTS = 4  # examples of S (and E) the measures are tried on before the sweep


@dataclass(frozen=True)
class SweepOptions:
    """A sweep command's options (flatvol run / run_sweep)."""

    backend: str = "local"
    workers: int | str = 1  # or 'auto'
    device: str = "cpu"
    threads: int | None = None
    data_dir: str | None = None
    retry_failed: bool = False
    keep_networks: bool = False


def check_options(options: SweepOptions) -> None:
    """The command-line options alone: backend, workers, threads, device."""
    get_backend(options.backend)  # a registered name
    check_workers(options.workers)
    check_threads(options.threads)
    check_device(options.device)


def runs_to_do(planned: Iterable[Any], finished: dict[RunKey, tuple[str, str]],
               retry_failed: bool, out: Path) -> list[Any]:
    """The planned runs not yet in the store (failed ones too with `retry_failed`).

    Args:
        planned: PlannedRun-like objects (key, config_hash, optimizer).
        finished: recorded (status, config_hash) by key.
        retry_failed: re-run runs recorded as failed.
        out: the output directory, for the message.

    Returns:
        The runs to execute, in plan order. A run recorded with other settings (another
        config hash under the same optimizer label) is a SpecError: its results would mix.
    """
    todo = []
    for run in planned:
        prev = finished.get(run.key)
        if prev is None or (prev[0] == "failed" and retry_failed):
            todo.append(run)
        elif prev[1] != run.config_hash:
            raise SpecError(
                f"{out}: run {run.key} is recorded with other settings for optimizer "
                f"{run.optimizer.key!r}; give the changed optimizer a new label or use a "
                "new --out")
    return todo


def _tiny_task(task: TaskData, n: int = DRY_RUN_POINTS) -> TaskData:
    def head(split: Split, k: int) -> Split:
        return Split(split.x[:k], split.y[:k], split.index[:k])

    return TaskData(task.task, task.classes, task.data_seed, head(task.S, n),
                    head(task.A, 0), head(task.E, n), task.n_classes)


def _check_optimizers(spec: ExperimentSpec, source: str, model: torch.nn.Module) -> None:
    from flatvol.train.optimizers import make_optimizer

    for i, opt in enumerate(spec.optimizers):
        try:
            config = train_config(spec, opt, seed=0)
            make_optimizer(config.optimizer, model.parameters(), config.optimizer_settings())
        except (FlatvolError, TypeError, ValueError, RuntimeError) as exc:
            raise SpecError(one_line(f"{source}: optimizers[{i}] ({opt.key}): {exc}")) from None


def _dry_run_measures(spec: ExperimentSpec, source: str, model: torch.nn.Module,
                      task: TaskData) -> None:
    """Run the measures the runs will take on tiny stand-ins, so a bad option or a measure that
    cannot take K classes fails now in one line rather than in every run: the volume's
    estimator with its options on a 3 x 3 kernel (labels of the task's class count), and each
    other measure on a few points of S: those with options for a binary task, all of them for a
    K-class one. (A Monte-Carlo draw count 'auto' is fine: its check probes the labels.)"""
    from flatvol.measures import MeasureContext, compute_measures
    from flatvol.volume import VolumeService

    k = task.n_classes
    m = spec.measures
    names = list(dict.fromkeys([*m.final, *spec.during.measures]))
    if "volume" in names and (m.volume.options or k > 2):
        labels = np.array([1.0, 0.0, 1.0]) if k == 2 else np.array([0, 1, 2])
        where = ("measures.volume.options" if k == 2
                 else f"measures.volume.estimator: {k} classes ({spec.data.classes})")
        try:
            VolumeService(np.eye(3), n_classes=k).log_volume(labels, m.volume.estimator,
                                                             **m.volume.options)
        except (FlatvolError, TypeError, ValueError) as exc:
            raise SpecError(one_line(f"{source}: {where}: {exc}")) from None
    def has_options(name: str) -> bool:
        return name in m.options or (name == "sharpness" and bool(m.sharpness.options))

    tried = [n for n in names if n != "volume" and (k > 2 or has_options(n))]
    if not tried:
        return
    tiny = _tiny_task(task)
    context = MeasureContext(m, seed=0, device="cpu")
    for name in tried:
        where = "measures.sharpness.options" if name == "sharpness" else f"measures.options.{name}"
        try:
            compute_measures([name], model, tiny, context)
        except (FlatvolError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            if not has_options(name):  # tried for its class count
                raise SpecError(one_line(f"{source}: measures: {name!r} cannot measure a "
                                         f"{k}-class network yet ({exc})")) from None
            text = str(exc)
            prefix = "" if text.startswith("measures.") else f"{where}: "
            raise SpecError(one_line(f"{source}: {prefix}{text}")) from None


def _check_kernel(spec: ExperimentSpec, source: str, model: torch.nn.Module,
                  task: TaskData) -> None:
    """The sweep's kernel request, checked for the model and S u E as `prior_kernel` will
    check it (KernelRequest.check): its kind ('analytic' on a non-FCN is refused), and a fixed
    Monte-Carlo draw count whose kernel must be singular (draws x feature width + 1 < n:
    log V would be set by the jitter)."""
    try:
        kernel_request(spec).check(model, task.x_SE())
    except FlatvolError as exc:
        raise SpecError(one_line(f"{source}: measures.volume.{exc}")) from None


def check_spec(spec: ExperimentSpec, source: str, data_dir: str | None,
               tasks: RunTasks | None = None) -> None:
    """The whole expanded spec: data sizes of the largest attack set against the pool, the
    architecture on the task's input shape, every optimizer, every measure's options.

    Args:
        spec: the validated spec.
        source: the spec file (or name), for the messages.
        data_dir: the data directory the sweep will read.
        tasks: the sweep's tasks, whose largest is read here (None: a RunTasks of this check).
    """
    largest = max(spec.sweep.attack_values())
    if tasks is None:
        tasks = sweep_tasks(spec, data_dir)
    try:
        task = tasks.largest_task()
    except FlatvolError as exc:
        field = "sweep.attack_sizes / data" if largest else "data"
        raise SpecError(one_line(f"{source}: {field}: {exc}")) from None
    from flatvol.models import build_model

    try:
        model = build_model(spec.model.arch, task.input_shape, spec_prior(spec), seed=0,
                            outputs=task.outputs)
    except (FlatvolError, TypeError, ValueError, RuntimeError) as exc:
        raise SpecError(one_line(f"{source}: model.arch: {exc}")) from None
    if "volume" in set(spec.measures.final) | set(spec.during.measures):
        _check_kernel(spec, source, model, task)
    _check_optimizers(spec, source, model)
    _dry_run_measures(spec, source, model, task)


def check_sweep(spec: ExperimentSpec, source: str, out: Path, planned: list[Any],
                options: SweepOptions, tasks: RunTasks | None = None) -> None:
    """Every check of a sweep command, before any work and without writing anything.

    Args:
        spec: the validated spec.
        source: the spec file (or name), for the messages.
        out: the output directory.
        planned: the sweep's planned runs.
        options: the command's options.
        tasks: the sweep's tasks (the data is read here, once, and kept for the runs);
            None: read for this check alone.
    """
    check_options(options)
    # OUT/cache: the kernel, checkpoints; OUT/networks: the kept networks
    check_output_dir(out, folders=(CACHE_DIR, NETWORKS_DIR) if options.keep_networks
                     else (CACHE_DIR,))
    get_backend(options.backend).check_available()
    runs_to_do(planned, recorded_runs(out, spec.spec_hash()), options.retry_failed, out)
    check_spec(spec, source, options.data_dir, tasks)
