"""Run backends: how the pending runs of a sweep are executed, chosen by name.

    get_backend("local" | "ray") -> Backend

A backend executes runs (execute_run / execute_group) wherever it likes and hands each RunRecord
back to the driver, which alone writes the store. Every backend gives the same records for the
same runs (bitwise, at the same torch thread count).

- `local`: in the driver process (one worker, or the ensemble trainer's groups with
  train.ensemble), or a pool of spawned processes (workers > 1).
- `ray`: one Ray task per run (flatvol.experiments.ray_backend).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, Protocol

from flatvol.errors import SpecError, SweepError
from flatvol.experiments.context import SweepContext
from flatvol.experiments.execute import ProgressFn, StageFn, execute_group, execute_run
from flatvol.experiments.plan import PlannedRun, ensemble_groups, plan_runs
from flatvol.experiments.ray_backend import RayBackend
from flatvol.experiments.spec import ExperimentSpec
from flatvol.experiments.store import RunKey, RunRecord

RecordFn = Callable[[RunRecord], None]


class Backend(Protocol):
    """Executes the runs of a sweep; the driver records what comes back."""

    name: str

    def check_available(self) -> None:
        """Raise a FlatvolError if the backend cannot run here (called before the store is
        touched)."""

    def default_threads(self, spec: ExperimentSpec, workers: int) -> int | None:
        """Torch threads per run when the user gives none (None: leave torch's setting)."""

    def run(self, todo: list[PlannedRun], ctx: SweepContext, record: RecordFn, workers: int,
            progress: ProgressFn, stages: StageFn | None = None) -> None:
        """Execute `todo` on `workers` workers, calling `record` in this process with each
        run's record as it finishes, and `stages` (where the backend can) as each run's network
        is trained and each of its measures computed. Raise SweepError after the others finish
        if runs were lost (a worker died): they are not recorded, so re-running resumes
        them."""


class LocalBackend:
    """Runs on this machine: in this process, or in `workers` spawned processes."""

    name = "local"

    def check_available(self) -> None:
        pass

    def default_threads(self, spec: ExperimentSpec, workers: int) -> int | None:
        # Share the cores between worker processes; ensemble groups run in this process only
        # and use torch's threads.
        if workers > 1 and not spec.train.ensemble:
            return max(1, (os.cpu_count() or 1) // workers)
        return None

    def run(self, todo: list[PlannedRun], ctx: SweepContext, record: RecordFn, workers: int,
            progress: ProgressFn, stages: StageFn | None = None) -> None:
        if ctx.spec.train.ensemble:  # in this process; the ensemble trainer uses the threads
            # Planned by stage: each optimizer's whole group trains as one ensemble (the same
            # one on a resume, so the numbers repeat), then its missing runs are measured and
            # recorded one by one.
            missing = {run.key for run in todo}
            for group in ensemble_groups(plan_runs(ctx.spec)):
                runs = [run for run in group if run.key in missing]
                if runs:
                    for rec in execute_group(runs, ctx, progress, trains_with=group,
                                             stages=stages):
                        record(rec)
        elif workers == 1:
            for run in todo:
                record(execute_run(run, ctx, progress, stages=stages))
        else:
            _run_processes(todo, ctx, record, workers, progress)


# Per worker process: set once by the pool initializer, so the context is pickled once per
# worker rather than once per run.
_WORKER_QUEUE: Any = None
_WORKER_CTX: SweepContext | None = None


def _init_worker(queue: Any, ctx: SweepContext) -> None:
    global _WORKER_QUEUE, _WORKER_CTX
    _WORKER_QUEUE, _WORKER_CTX = queue, ctx


def _queue_progress(key: RunKey, text: str, completed: int, total: int | None) -> None:
    if _WORKER_QUEUE is not None:
        with contextlib.suppress(Exception):  # progress is best effort
            _WORKER_QUEUE.put_nowait((key, text, completed, total))


def _worker_execute(run: PlannedRun) -> RunRecord:
    assert _WORKER_CTX is not None
    return execute_run(run, _WORKER_CTX, _queue_progress)


def _run_processes(todo: list[PlannedRun], ctx: SweepContext, record: RecordFn, workers: int,
                   update: ProgressFn) -> None:
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    mpctx = mp.get_context("spawn")  # no fork after torch threads started
    progress_queue = mpctx.Queue()
    lost: list[str] = []
    with ProcessPoolExecutor(workers, mp_context=mpctx, initializer=_init_worker,
                             initargs=(progress_queue, ctx)) as pool:
        pending = {pool.submit(_worker_execute, run): run for run in todo}
        while pending:
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            with contextlib.suppress(queue_mod.Empty):
                while True:
                    update(*progress_queue.get_nowait())
            for future in done:
                run = pending.pop(future)
                exc = future.exception()
                if isinstance(exc, BrokenProcessPool):  # a worker died: not the run's fault
                    lost.append(str(run.key))
                    continue
                if exc is not None:  # an error execute_run does not turn into a failed run
                    raise exc
                record(future.result())
    if lost:
        raise SweepError(f"{len(lost)} run(s) lost because a worker process died (out of memory?)"
                         f", e.g. {lost[0]}; finished runs are saved: re-run to resume")


BACKENDS: dict[str, Callable[[], Backend]] = {"local": LocalBackend, "ray": RayBackend}


def get_backend(name: str) -> Backend:
    """The backend registered as `name`.

    Args:
        name: A key of BACKENDS ('local' or 'ray').

    Returns:
        A new backend instance.

    Raises:
        SpecError: for an unknown name.
    """
    factory = BACKENDS.get(name)
    if factory is None:
        raise SpecError(f"--backend: expected one of {', '.join(BACKENDS)}, got {name!r}")
    return factory()
