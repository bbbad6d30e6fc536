"""Ray backend (`pip install 'flatvol[ray]'`): each run is a Ray task; the driver writes every
result into the same store as the local backend, as the results come back.

`ray.init()` joins the cluster named by $RAY_ADDRESS, or starts a local instance with `workers`
CPUs. The sweep context (spec, kernel of S u E) is put in the object store once and shared by
all tasks; data must be readable on the workers (the embedded MNIST subset always is).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from flatvol.errors import SpecError
from flatvol.experiments.store import RunRecord


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SpecError("--backend ray needs Ray: pip install 'flatvol[ray]'") from None
    return ray


def _remote_execute(run: Any, ctx: Any) -> RunRecord:
    from flatvol.experiments.runner import execute_run

    return execute_run(run, ctx)


def run_ray(todo: list, ctx: Any, record: Callable[[RunRecord], None], workers: int,
            update: Callable | None = None) -> None:
    """Run `todo` (PlannedRun list) as Ray tasks; `record` each RunRecord in the driver."""
    from flatvol.experiments.runner import SweepError, _estimator_name, _reason

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
        threads = ctx.threads or 1
        remote = ray.remote(num_cpus=1, max_retries=1)(_remote_execute)
        ctx.threads = threads
        ctx_ref = ray.put(ctx)
        pending = {remote.remote(run, ctx_ref): run for run in todo}
        lost: list[str] = []
        for run in todo:
            if update is not None:
                update(run.key, "queued", 0, None)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            run = pending.pop(ref)
            try:
                rec = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # the task raised: the run failed
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                reason = _reason(cause)
                rec = RunRecord(run.key, run.config_hash, "failed", reason=reason,
                                info={"error": reason},
                                volume_estimator=_estimator_name(ctx.spec))
            except ray.exceptions.RayError:  # worker or node died: retry on the next sweep
                lost.append(str(run.key))
                continue
            record(rec)
        if lost:
            raise SweepError(f"{len(lost)} run(s) lost because Ray workers died, e.g. {lost[0]}; "
                             "finished runs are saved: re-run to resume")
    finally:
        if started_here:
            ray.shutdown()
