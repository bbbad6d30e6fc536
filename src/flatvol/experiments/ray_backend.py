"""Ray backend (`pip install 'flatvol[ray]'`): each run is a Ray task; the driver writes every
result into the same store as the local backend, as the results come back.

With train.ensemble the sweep is planned by stage, as on the local backend: one task per
ensemble group trains it (num_cpus = its torch threads: --threads, else --workers, at most the
largest node's CPUs) and returns one TrainedNetwork per member into the object store; then one
task per run (num_cpus=1) measures its network. A training task sends its epoch to the driver's
progress display through a Ray queue (an actor holding no CPU), at most every PROGRESS_EVERY_S,
so an ensemble that trains for hours is not shown as queued all that time. A group that does not
train together (one run, an optimizer the ensemble trainer lacks, a refused model) gets no
training task: its runs train in their own tasks, as without train.ensemble.

`ray.init()` joins the cluster named by $RAY_ADDRESS, or starts a local instance with `workers`
CPUs. The sweep context (spec, kernel of S u E) is put in the object store once and shared by
all tasks; data must be readable on the workers (the embedded MNIST subset always is).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from flatvol.errors import SpecError, SweepError
from flatvol.experiments.context import SweepContext
from flatvol.experiments.execute import (
    FITTED,
    TrainedNetwork,
    execute_run,
    failure_reason,
    train_group,
    trains_together,
    volume_estimator_name,
)
from flatvol.experiments.plan import PlannedRun, staged_plan
from flatvol.experiments.spec import ExperimentSpec
from flatvol.experiments.store import RunRecord
from flatvol.interrupts import reclaim_signals, starting_children
from flatvol.progress import ProgressEvent, ProgressFn

# A training task reports its epoch at most this often (each report is a round trip to the
# queue actor); the driver looks for reports as often while it waits for results.
PROGRESS_EVERY_S = 1.0


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SpecError("--backend ray: expected the ray package (pip install "
                        "'flatvol[ray]'), got none installed") from None
    return ray


class RayBackend:
    """One Ray task (num_cpus=1, one retry) per run; see the module docstring."""

    name = "ray"

    def check_available(self) -> None:
        _import_ray()

    def default_threads(self, spec: ExperimentSpec, workers: int) -> int | None:
        # The cores shared between the workers, as the local process pool does; a single
        # worker gets one thread (its task holds one Ray CPU).
        return max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 1

    def run(self, todo: list[PlannedRun], ctx: SweepContext,
            record: Callable[[RunRecord], None], workers: int,
            progress: ProgressFn | None = None) -> None:
        """Run `todo` as Ray tasks; `record` each RunRecord in the driver. `progress` is told
        the training tasks' epochs and when a group's networks are trained (FITTED); the driver
        counts a run's measures when its record arrives."""
        ray = _import_ray()
        started_here = False
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            # Ray's processes (raylet, workers) start deaf to Ctrl-C: ray.shutdown ends them.
            with starting_children():
                if address:
                    ray.init(address=address, **kwargs)
                else:
                    ray.init(num_cpus=workers, **kwargs)
            reclaim_signals()  # SIGTERM then ends the sweep as SIGINT does, not in an abort
            started_here = True
        try:
            self._run_tasks(ray, todo, ctx, record, progress, workers,
                            cancel_on_interrupt=not started_here)
        finally:
            if started_here:
                ray.shutdown()

    @staticmethod
    def _run_tasks(ray: Any, todo: list[PlannedRun], ctx: SweepContext,
                   record: Callable[[RunRecord], None], progress: ProgressFn | None,
                   workers: int, cancel_on_interrupt: bool) -> None:
        measure = ray.remote(num_cpus=1, max_retries=1)(execute_run)
        # Without a thread count a task would use torch's default: all the node's cores.
        ctx_ref = ray.put(dataclasses.replace(ctx, threads=ctx.threads or 1))
        pending: dict[Any, PlannedRun] = {}
        training: dict[Any, list[PlannedRun]] = {}  # a group's first network -> runs to record
        updates = None  # the training tasks' epochs, for `progress`
        if ctx.spec.train.ensemble:
            threads = _train_cpus(ray, ctx.train_threads or workers)
            train = ray.remote(num_cpus=threads, max_retries=1)(_train_members)
            if progress is not None:
                from ray.util.queue import Queue

                # num_cpus=0: the queue must not wait for a CPU that the training tasks hold
                updates = Queue(actor_options={"num_cpus": 0})
            for group, runs in staged_plan(ctx.spec, todo):
                if not trains_together(ctx.spec, group):
                    pending.update((measure.remote(run, ctx_ref), run) for run in runs)
                    continue
                networks = train.options(num_returns=len(group)).remote(group, ctx_ref, threads,
                                                                        updates)
                training[networks[0]] = runs
                row = {run.key: i for i, run in enumerate(group)}
                # a run's task starts once its network is in the object store
                pending.update((measure.remote(run, ctx_ref, None, networks[row[run.key]]),
                                run) for run in runs)
        else:
            pending.update((measure.remote(run, ctx_ref), run) for run in todo)
        lost: list[str] = []
        for run in todo:
            if progress is not None:
                progress(ProgressEvent(run.key, "queued"))
        try:
            while pending:
                done, _ = ray.wait(list(pending) + list(training), num_returns=1,
                                   timeout=PROGRESS_EVERY_S if updates is not None else None)
                if updates is not None and progress is not None:
                    for event in updates.get_nowait_batch(updates.qsize()):
                        progress(event)
                if done:
                    RayBackend._collect(ray, done[0], pending, training, lost, ctx, record,
                                        progress)
        except KeyboardInterrupt:  # Ctrl-C, or the CLI's Interrupted (SIGINT, SIGTERM)
            if cancel_on_interrupt:  # a cluster outlives this driver: its tasks would run on
                for ref in [*pending, *training]:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)
            raise
        finally:
            if updates is not None:
                updates.shutdown()
        if lost:
            raise SweepError(f"{len(lost)} run(s) lost because Ray workers died, e.g. {lost[0]}; "
                             "finished runs are saved: re-run to resume")

    @staticmethod
    def _collect(ray: Any, ref: Any, pending: dict[Any, PlannedRun],
                 training: dict[Any, list[PlannedRun]], lost: list[str], ctx: SweepContext,
                 record: Callable[[RunRecord], None], progress: ProgressFn | None) -> None:
        """Take in one finished object: a trained group (its stages) or a run's record."""
        if ref in training:  # a group trained: its networks are fitted
            runs = training.pop(ref)
            if progress is not None and _trained(ray, ref):
                for run in runs:
                    progress(ProgressEvent(run.key, stage=FITTED))
            return
        run = pending.pop(ref)
        try:
            rec = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the task raised: the run failed
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            reason = failure_reason(cause)
            rec = RunRecord(run.key, run.config_hash, "failed", reason=reason,
                            info={"error": reason},
                            volume_estimator=volume_estimator_name(ctx.spec))
        except ray.exceptions.RayError:  # worker or node died: retry on the next sweep
            lost.append(str(run.key))
            return
        record(rec)


def _train_members(members: list[PlannedRun], ctx: SweepContext, threads: int,
                   updates: Any = None) -> list[TrainedNetwork | None]:
    """A Ray task: the group's networks (train_group), one object per member; all None when
    the group cannot train together, so each run's task trains its own network. Its epochs go
    to the `updates` queue (if any), at most every PROGRESS_EVERY_S."""
    last_sent = -float("inf")
    sent: list[Any] = []  # the queue's receipts, waited for once training is over

    def send(event: ProgressEvent) -> None:
        nonlocal last_sent
        # Epochs only: the driver reports the group's stage (FITTED) when its networks arrive.
        if event.stage is None and time.monotonic() - last_sent >= PROGRESS_EVERY_S:
            last_sent = time.monotonic()
            # Not Queue.put_nowait, which waits for the queue's reply with ray.get: a task
            # blocked in ray.get lends its CPU out, and Ray started a third 1-CPU training
            # task on 2 CPUs (--workers 2: three ensembles on two cores).
            sent.append(updates.actor.put_nowait.remote(event))

    trained = train_group(members, ctx, progress=send if updates is not None else None,
                          threads=threads)
    if sent:  # every epoch is in the queue before the networks are: none shown after its end
        _import_ray().get(sent)
    return ([network.on_cpu() for network in trained] if trained is not None
            else [None] * len(members))


def _trained(ray: Any, ref: Any) -> bool:
    """Whether a training task's first object is a network (not None: the runs train alone)."""
    try:
        return ray.get(ref) is not None
    except ray.exceptions.RayError:  # the measuring tasks will say what went wrong
        return False


def _train_cpus(ray: Any, wanted: int) -> int:
    """The CPUs (and torch threads) of a training task: `wanted`, at most the largest live
    node's CPUs, so that the task can be scheduled."""
    largest = max((node.get("Resources", {}).get("CPU", 0) for node in ray.nodes()
                   if node.get("Alive")), default=1)
    return max(1, min(wanted, int(largest)))
