"""Ray backend (`pip install 'flatvol[ray]'`): each run is a Ray task; the driver writes every
result into the same store as the local backend, as the results come back.

`ray.init()` joins the cluster named by $RAY_ADDRESS, or starts a local instance with `workers`
CPUs. The sweep context (spec, kernel of S u E) is put in the object store once and shared by
all tasks; data must be readable on the workers (the embedded MNIST subset always is).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from flatvol.errors import SpecError, SweepError
from flatvol.experiments.context import SweepContext
from flatvol.experiments.execute import (
    ProgressFn,
    StageFn,
    execute_run,
    failure_reason,
    volume_estimator_name,
)
from flatvol.experiments.plan import PlannedRun
from flatvol.experiments.spec import ExperimentSpec
from flatvol.experiments.store import RunRecord


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
            progress: ProgressFn | None = None, stages: StageFn | None = None) -> None:
        """Run `todo` as Ray tasks; `record` each RunRecord in the driver (`stages` is not
        called: the driver counts a run's stages when its record arrives)."""
        ray = _import_ray()
        started_here = False
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=workers, **kwargs)
            started_here = True
        try:
            self._run_tasks(ray, todo, ctx, record, progress)
        finally:
            if started_here:
                ray.shutdown()

    @staticmethod
    def _run_tasks(ray: Any, todo: list[PlannedRun], ctx: SweepContext,
                   record: Callable[[RunRecord], None], progress: ProgressFn | None) -> None:
        remote = ray.remote(num_cpus=1, max_retries=1)(execute_run)
        # Without a thread count a task would use torch's default: all the node's cores.
        ctx_ref = ray.put(dataclasses.replace(ctx, threads=ctx.threads or 1))
        pending = {remote.remote(run, ctx_ref): run for run in todo}
        lost: list[str] = []
        for run in todo:
            if progress is not None:
                progress(run.key, "queued", 0, None)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
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
                continue
            record(rec)
        if lost:
            raise SweepError(f"{len(lost)} run(s) lost because Ray workers died, e.g. {lost[0]}; "
                             "finished runs are saved: re-run to resume")
