"""Run a spec: expand it into runs, skip the finished ones, execute the rest, record each.

    run_sweep(spec, out, ...)  -> SweepSummary          (the driver: resume, backend, progress)

The pieces live in their own modules: plan (plan_runs, ensemble_groups), context
(prepare_context: the kernel of S u E, computed once, cached), execute (execute_run,
execute_group: train and measure, no store access) and backends (local processes or Ray, chosen
by name). Every run's record (status, results, info, series) is written by the driver in one
transaction, so killing the sweep at any point loses at most the runs in flight, and re-running
the same command resumes.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import torch
from rich.markup import escape

import flatvol
from flatvol.errors import SweepError
from flatvol.experiments.backends import get_backend, resolve_workers
from flatvol.experiments.build import train_config
from flatvol.experiments.context import (
    SweepContext,
    compute_kernel,
    discard_ensemble_checkpoints,
    prepare_context,
    sweep_tasks,
)
from flatvol.experiments.execute import (
    FITTED,
    execute_group,
    execute_run,
)
from flatvol.experiments.plan import PlannedRun, plan_runs
from flatvol.experiments.preflight import SweepOptions, check_sweep, runs_to_do
from flatvol.experiments.spec import ExperimentSpec, spec_json
from flatvol.experiments.spec_files import SpecSource
from flatvol.experiments.store import RunKey, RunRecord, Store, StoreError
from flatvol.interrupts import holding_signals
from flatvol.progress import ProgressBar, ProgressEvent

# The sweep API, importable from here as before the split into modules.
__all__ = ["PlannedRun", "SweepContext", "SweepError", "SweepProgress", "SweepSummary",
           "compute_kernel", "execute_group", "execute_run", "plan_runs", "prepare_context",
           "run_sweep", "train_config"]


@dataclass
class SweepSummary:
    """What a run_sweep call did: runs planned, skipped (already recorded), done, failed."""

    out: Path
    spec_hash: str
    planned: int
    skipped: int
    done: int
    failed: int
    seconds: float
    failures: list[tuple[str, str]] = field(default_factory=list)


STAGE_LABELS = {FITTED: "networks fitted", "volume": "volumes computed",
                "sharpness": "sharpness done"}


class SweepProgress:
    """The sweep's display, made of flatvol.progress bars: the sweep (runs recorded / planned),
    one per stage (networks fitted, then one per final measure: volumes computed, sharpness
    done, ...), and one per run in flight, live on a terminal. Elsewhere (a file, a pipe) the
    sweep's bar alone writes plain lines: the runs, each stage's count and ETA and the runs in
    flight, every FLATVOL_PROGRESS_INTERVAL seconds and whenever a stage completes.

    `report` is the library's progress callback (flatvol.progress.ProgressFn) that the
    backends call; `finish_run` takes each record as the driver writes it.
    """

    def __init__(self, total: int, done: int, enabled: bool, stream: IO[str] | None = None,
                 measures: tuple[str, ...] = ()):
        self.stream = stream  # None: each bar writes to sys.stderr as it is when it opens
        self.sweep = ProgressBar("sweep", total, enabled=enabled, unit="runs",
                                 stream=self.stream, completed=done, line=self.plain_text)
        # Rows beside the sweep's: only on a live display (the plain line speaks for them).
        self.live = self.sweep.mode == "live"
        todo = total - done
        names = [FITTED, *(m for m in measures if m != "accuracy")]
        self.stages = {name: ProgressBar(f"  {_stage_label(name)}", todo, enabled=self.live,
                                         stream=self.stream) for name in names}
        self.runs: dict[RunKey, ProgressBar] = {}
        self.seen: dict[str, set[RunKey]] = {name: set() for name in names}
        self.started: dict[str, float] = {}
        self.in_flight: dict[RunKey, str] = {}  # what each running run reported last

    def __enter__(self) -> SweepProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        for bar in [*self.runs.values(), *self.stages.values()]:
            bar.close(final_line=False)
        self.runs.clear()
        # An interrupted or failed sweep ends without a final line: its one line is the last.
        self.sweep.close(final_line=exc_type is None)

    def report(self, event: ProgressEvent) -> None:
        """The progress callback of the backends (flatvol.progress.ProgressFn).

        Args:
            event: A run's epochs (its key, text, epoch and total), or a stage it passed.
        """
        if event.stage is not None:
            self.stage_done(event.stage, event.key)
        else:
            self.update_run(event.key, event.text, event.completed, event.total)

    def update_run(self, key: RunKey, text: str, completed: int, total: int | None) -> None:
        if key not in self.runs:
            self.runs[key] = ProgressBar(f"  {key}", total, enabled=self.live,
                                         stream=self.stream)
        self.runs[key].update(completed, total=total, status=text)
        # a long training (an ensemble's hundreds of epochs) passes no stage for minutes: the
        # plain line reports it meanwhile, most recent report first. A report whose steps are
        # all done ends the entry: an ensemble reports under its first run's key, which may be
        # recorded (and dropped here) while the others still train, then ends with one report
        # at its last epoch.
        self.in_flight.pop(key, None)
        if total is None or completed < total:
            self.in_flight[key] = f"{key}: {text}, epoch {completed}" + (
                f"/{total}" if total else "")
        self.sweep.update()

    def stage_done(self, stage: str, key: RunKey) -> None:
        """Run `key` passed `stage` (FITTED or a measure name); counted once per run."""
        if stage not in self.seen or key in self.seen[stage]:
            return
        self.started.setdefault(stage, time.monotonic())
        self.seen[stage].add(key)
        bar = self.stages[stage]
        bar.advance()
        if len(self.seen[stage]) >= (bar.total or 0):
            self.sweep.milestone()
        else:
            self.sweep.update()

    def finish_run(self, record: RunRecord) -> None:
        self.in_flight.pop(record.key, None)
        bar = self.runs.pop(record.key, None)
        if bar is not None:
            bar.close(final_line=False)
        # Backends that cannot report stages live (processes, Ray): a record means its stages
        # are done. A failed run is never measured: the measure bars expect one run fewer.
        for stage, stage_bar in self.stages.items():
            if record.key in self.seen[stage]:
                continue
            if record.status == "done" or stage == FITTED:
                self.stage_done(stage, record.key)
            else:
                stage_bar.update(total=(stage_bar.total or 0) - 1)
        reason = escape(record.reason or "")
        mark = "done" if record.status == "done" else f"[red]failed[/] ({reason})"
        acc = record.results.get("test_acc_E")
        acc_text = f" test_acc_E {acc:.3f}" if acc is not None and record.status == "done" else ""
        self.sweep.status = f"last: {record.key} {mark}{acc_text}"
        self.sweep.advance()

    def plain_text(self) -> str:
        """One line: runs recorded, then each stage's count and ETA, then the runs in flight."""
        parts = [f"progress: sweep {self.sweep.completed}/{self.sweep.total or 0} runs"]
        now = time.monotonic()
        for stage, bar in self.stages.items():
            done, total = len(self.seen[stage]), bar.total or 0
            text = f"{_stage_label(stage)} {done}/{total}"
            if 0 < done < total:
                rate = (now - self.started[stage]) / done
                text += f" (ETA {_duration(rate * (total - done))})"
            parts.append(text)
        if self.in_flight:
            recent = list(self.in_flight.values())[::-1]
            parts.append("running " + ", ".join(recent[:2])
                         + (f" (+{len(recent) - 2} more)" if len(recent) > 2 else ""))
        return "; ".join(parts)


def _stage_label(stage: str) -> str:
    return STAGE_LABELS.get(stage, stage + " done")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _environment() -> dict[str, str]:
    return {"flatvol_version": flatvol.__version__, "torch_version": torch.__version__,
            "numpy_version": np.__version__, "python_version": sys.version.split()[0],
            "platform": platform.platform()}


def _recorded_so_far(store: Store, spec_hash: str, planned: int) -> str:
    """What an interrupted sweep kept: its runs recorded in the store (each row whole: the runs
    in flight are lost), and how to resume."""
    try:
        recorded = f"{len(store.finished(spec_hash))} of {planned} runs recorded"
    except Exception:  # noqa: BLE001 (the store unreadable now: say where it is, no number)
        recorded = "the runs recorded so far are kept"
    return f"{recorded} in {store.path}; run the same command to resume"


def run_sweep(
    spec: ExperimentSpec,
    out: str | Path,
    backend: str = "local",
    workers: int | str = 1,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    retry_failed: bool = False,
    progress: bool = True,
    threads: int | None = None,
    stream: IO[str] | None = None,
    source: SpecSource | None = None,
    keep_networks: bool = False,
) -> SweepSummary:
    """Run every planned run of `spec` not yet in DIR's store and record each as it finishes.

    Args:
        spec: The validated spec (a file or a shipped spec name is read by the caller:
            flatvol.experiments.spec_files.resolve_spec_path, then load_spec).
        out: The output directory (DIR/results.sqlite, DIR/cache).
        backend: A name registered in flatvol.experiments.backends ('local' or 'ray').
        workers: Runs in parallel (processes or Ray CPUs); 'auto': one per core, at most one
            per run to do (flatvol.experiments.backends.resolve_workers). 1: in this process.
        data_dir: Data directory (None: the embedded MNIST subset).
        device: Torch device of the runs.
        retry_failed: Re-run runs recorded as failed.
        progress: Show progress bars.
        threads: Torch threads per run, and of a staged sweep's ensemble trainer (None: the
            backend's default per run, also for the trainer). With train.ensemble and more than
            one worker, only the trainer's: the measuring workers use their share of the cores.
        stream: Where the progress bars go (default: stderr).
        source: The spec file as read (spec_files.read_spec_source), recorded with the
            runs and named in the pre-flight's messages; None: the spec's name stands for it.
        keep_networks: Also write each run's trained network as a run directory
            (DIR/networks/<spec hash>/<optimizer>-attack<A>-seed<S>: run.json + model.pt, what
            `flatvol train` writes), which `flatvol collect` measures again with other
            settings. The results and the store are the same either way.

    Returns:
        The SweepSummary.

    Raises:
        FlatvolError: from the pre-flight checks (flatvol.experiments.preflight), before
            anything is written: an invalid spec or option, a store holding the runs with other
            settings.
        SweepError: when runs were lost (a worker died); the finished ones are recorded.
        KeyboardInterrupt: on Ctrl-C (or the CLI's SIGINT / SIGTERM: flatvol.interrupts),
            with a note (PEP 678) saying how many runs the store holds; the workers are
            stopped, the runs in flight lost, and the same call resumes.
    """
    if not isinstance(spec, ExperimentSpec):  # a name or path is resolved by the caller
        raise TypeError(f"run_sweep: expected an ExperimentSpec, got {type(spec).__name__} (read a "
                        "file or shipped spec name with load_spec(resolve_spec_path(name)))")
    start = time.perf_counter()
    source_path = source.path if source is not None else None
    source_text = source.text if source is not None else None
    out = Path(out)
    data_dir = str(data_dir) if data_dir is not None else None
    runs = plan_runs(spec)
    options = SweepOptions(backend, workers, device, threads, data_dir, retry_failed,
                           keep_networks)
    # The data is read once: by the pre-flight, then kept for the kernel and the runs.
    tasks = sweep_tasks(spec, data_dir)
    check_sweep(spec, str(source_path) if source_path else spec.name, out, runs, options, tasks)
    executor = get_backend(backend)
    with Store(out) as store:
        spec_hash = spec.spec_hash()
        # Checked again inside the store (another sweep may have written since), and before
        # anything is written, so a refused re-run leaves the store's bytes as they were.
        todo = runs_to_do(runs, store.finished(spec_hash), retry_failed, out)
        store.add_spec(spec_hash, spec.name, spec_json(spec),
                       str(source_path) if source_path else None, source_text)
        store.set_meta(_environment())
        skipped = len(runs) - len(todo)
        summary = SweepSummary(out, spec_hash, len(runs), skipped, 0, 0, 0.0)
        workers = resolve_workers(workers, len(todo))
        train_threads = threads  # the ensemble trainer: the user's count, or the workers' share
        if threads is None or (spec.train.ensemble and workers > 1):
            # A staged sweep's measuring workers run beside its trainer: on their share of the
            # cores, whatever --threads gives the trainer (more threads than cores made the
            # CIFAR panel's measures ~10x slower, bench/RESULTS.md).
            threads = executor.default_threads(spec, workers) or threads
        try:
            with SweepProgress(len(runs), skipped, progress, stream,
                               measures=tuple(spec.measures.final)) as bars:
                if todo:
                    ctx = prepare_context(spec, out, data_dir, device, progress, threads,
                                          train_threads, keep_networks, tasks)

                    def record(rec: RunRecord) -> None:
                        # A signal waits for the run's row and the counts, so that both agree
                        # (the store alone would stay consistent: one transaction per run).
                        with holding_signals():
                            _record(rec)

                    def _record(rec: RunRecord) -> None:
                        try:
                            store.record(rec, replace_failed=retry_failed)
                        except StoreError:  # another `flatvol run` on DIR recorded it first
                            summary.skipped += 1
                            bars.finish_run(rec)
                            return
                        bars.finish_run(rec)
                        if rec.status == "done":
                            summary.done += 1
                        else:
                            summary.failed += 1
                            summary.failures.append((str(rec.key), rec.reason or ""))

                    # A backend that reports no stages: its runs' stages are counted as
                    # their records arrive (finish_run).
                    executor.run(todo, ctx, record, workers, bars.report)
                    # A run failed otherwise (a measure's error) keeps its group's checkpoint:
                    # its retry reuses the training.
                    discard_ensemble_checkpoints(ctx, runs, store.settled(spec_hash))
        except KeyboardInterrupt as exc:  # Ctrl-C, or the CLI's Interrupted (SIGINT, SIGTERM)
            exc.add_note(_recorded_so_far(store, spec_hash, len(runs)))
            raise
    summary.seconds = time.perf_counter() - start
    return summary
