"""Run a spec: expand it into runs, skip the finished ones, train, measure, record.

    plan_runs(spec)            -> [PlannedRun]        (seed-major, so a partial sweep is balanced)
    prepare_context(...)       -> SweepContext         (kernel of S u E, computed once, cached)
    execute_run(run, ctx)      -> RunRecord            (pure: no store access; any backend)
    execute_group(runs, ctx)   -> iter of RunRecord    (train.ensemble: seeds trained together)
    run_sweep(spec, out, ...)  -> SweepSummary          (the driver: resume, backends, progress)

Every run's record (status, results, info, series) is written by the driver in one transaction,
so killing the sweep at any point loses at most the runs in flight, and re-running the same
command resumes. Determinism: a run's numbers depend only on the spec and its seed (model init
and data order from the seed, measure seeds from seed and epoch), not on the backend or on which
runs were done before; bitwise equality assumes the same torch build and thread count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import flatvol
from flatvol.data.task import TaskData
from flatvol.errors import FlatvolError
from flatvol.experiments.build import kernel_kind, load_run_task, spec_prior, train_config
from flatvol.experiments.preflight import SweepOptions, check_sweep, runs_to_do
from flatvol.experiments.spec import (
    ExperimentSpec,
    OptimizerSpec,
    load_spec,
    resolve_spec_path,
    spec_json,
)
from flatvol.experiments.store import RunKey, RunRecord, Store, StoreError
from flatvol.measures import MeasureContext, VolumeCache, compute_measures
from flatvol.train.checkpoint import atomic_write

ProgressFn = Callable[[RunKey, str, int, int | None], None]  # key, text, completed, total
Backend = Literal["local", "ray"]


@dataclass(frozen=True)
class PlannedRun:
    key: RunKey
    config_hash: str
    optimizer: OptimizerSpec
    attack_size: int
    seed: int


@dataclass
class SweepContext:
    """What all runs of a sweep share (picklable, shipped once to each worker)."""

    spec: ExperimentSpec
    data_dir: str | None = None
    device: str = "cpu"
    kernel: np.ndarray | None = None
    kernel_info: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    _volume_cache: VolumeCache | None = field(default=None, repr=False)

    def volume_cache(self) -> VolumeCache | None:
        """The per-process cache of volume estimators on the kernel (not shipped to workers:
        each process factorizes the kernel once and reuses it for all its runs and epochs)."""
        if self.kernel is None:
            return None
        if self._volume_cache is None:
            self._volume_cache = VolumeCache(self.kernel)
        return self._volume_cache

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_volume_cache": None}


class SweepError(FlatvolError):
    """The sweep could not finish (a worker process died); re-running resumes it."""


@dataclass
class SweepSummary:
    out: Path
    spec_hash: str
    planned: int
    skipped: int
    done: int
    failed: int
    seconds: float
    failures: list[tuple[str, str]] = field(default_factory=list)


def plan_runs(spec: ExperimentSpec) -> list[PlannedRun]:
    """All (optimizer, attack size, seed) runs of the spec, seed-major."""
    spec_hash = spec.spec_hash()
    runs = []
    for seed in spec.sweep.seed_values():
        for opt in spec.optimizers:
            config_hash = spec.config_hash(opt)
            for attack in spec.sweep.attack_values():
                runs.append(PlannedRun(RunKey(spec_hash, opt.key, attack, seed), config_hash,
                                       opt, attack, seed))
    return runs


# --------------------------------------------------------------------------- data + kernel
def needs_kernel(spec: ExperimentSpec) -> bool:
    return "volume" in spec.measures.final or "volume" in spec.during.measures


def kernel_cache_key(spec: ExperimentSpec) -> str:
    v = spec.measures.volume
    payload = {"data": spec.data.model_dump(mode="json"),
               "model": spec.model.model_dump(mode="json"), "kernel": v.kernel,
               "mc_samples": v.mc_samples if v.kernel != "analytic" else None,
               "mc_seed": v.mc_seed if v.kernel != "analytic" else None}
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compute_kernel(spec: ExperimentSpec, task: TaskData, device: str = "cpu",
                   progress: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """The NNGP kernel of the model's prior on S u E (S first): analytic for a ReLU FCN, else
    (or with kernel = 'mc') Monte-Carlo over `mc_samples` random initializations."""
    from flatvol.models import build_model
    from flatvol.volume.kernels import fcn_kernel, mc_nngp_kernel

    v = spec.measures.volume
    model = build_model(spec.model.arch, task.input_shape, spec_prior(spec), seed=v.mc_seed)
    x = task.x_SE()
    start = time.perf_counter()
    kind = kernel_kind(spec, model)
    if kind == "analytic":
        kernel = fcn_kernel(model, x)
        info: dict[str, Any] = {"kind": "analytic"}
    else:
        mc = mc_nngp_kernel(model, x, v.mc_samples, seed=v.mc_seed, device=device,
                            progress=progress)
        kernel = mc.kernel
        info = {"kind": "monte-carlo", "mc_samples": mc.n_samples, "mc_seed": mc.seed,
                "width": mc.width, "max_stderr": float(np.max(mc.stderr))}
    info.update(n=int(kernel.shape[0]), seconds=round(time.perf_counter() - start, 3))
    return np.ascontiguousarray(kernel, dtype=np.float64), info


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))


def sweep_kernel(spec: ExperimentSpec, out: Path, data_dir: str | None, device: str,
                 progress: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """The sweep's kernel, from DIR/cache/kernel-<key>.npy if a previous sweep computed it."""
    key = kernel_cache_key(spec)
    path = out / "cache" / f"kernel-{key}.npy"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file():
        try:
            kernel = np.load(path, allow_pickle=False)
            info = json.loads(meta.read_text())
            return kernel, {**info, "cached": True}
        except (OSError, ValueError):
            pass  # unreadable cache: recompute
    task = load_run_task(spec, 0, data_dir)
    kernel, info = compute_kernel(spec, task, device, progress)
    _atomic_save_npy(path, kernel)
    from flatvol.train.checkpoint import atomic_write_json

    atomic_write_json(meta, {**info, "cache_key": key})
    return kernel, {**info, "cache_key": key}


def prepare_context(spec: ExperimentSpec, out: Path, data_dir: str | None = None,
                    device: str = "cpu", progress: bool = True,
                    threads: int | None = None) -> SweepContext:
    kernel, info = (sweep_kernel(spec, out, data_dir, device, progress) if needs_kernel(spec)
                    else (None, {}))
    return SweepContext(spec, data_dir, device, kernel, info, threads)


# --------------------------------------------------------------------------- one run
class _Recorder:
    """The per-epoch callback: series rows, during-training measures, alpha events, SWA."""

    def __init__(self, run: PlannedRun, ctx: SweepContext, task: TaskData,
                 measure_ctx: MeasureContext, swa: Any, progress: ProgressFn | None,
                 max_epochs: int, post_epochs: int):
        self.run, self.ctx, self.task, self.mctx = run, ctx, task, measure_ctx
        self.swa, self.progress = swa, progress
        self.max_epochs, self.post_epochs = max_epochs, post_epochs
        self._series: dict[tuple[int, str, str], float] = {}  # insertion-ordered, no duplicates
        self.alpha_applied: list[dict[str, Any]] = []
        spec = ctx.spec
        self.every = spec.during.every
        self.during = list(spec.during.measures)
        self.phases = set(spec.during.phases)
        self.events = {e.post_epoch: e for e in spec.alpha_events}

    @property
    def series(self) -> list[tuple[int, str, str, float]]:
        return [(e, p, m, v) for (e, p, m), v in self._series.items()]

    def _add(self, epoch: int, phase: str, values: dict[str, float]) -> None:
        for metric, value in values.items():
            self._series[(epoch, phase, metric)] = float(value)

    def _measure(self, epoch: int, phase: str, model: torch.nn.Module) -> None:
        self.mctx.epoch = epoch
        self._add(epoch, phase, compute_measures(self.during, model, self.task, self.mctx))
        model.eval()

    def __call__(self, info: Any, model: torch.nn.Module) -> None:
        from flatvol.reparam import alpha_scale

        epoch, phase = info.epoch, info.phase
        self._add(epoch, phase, {"loss": info.loss, "train_acc_S": info.train_acc_S,
                                 "train_acc_A": info.train_acc_A})
        fit_epoch = info.fitted_at is not None and info.fitted_at == epoch
        if fit_epoch:
            self._add(epoch, phase, {"zero_error_epoch": float(epoch)})
        post_index = epoch - info.fitted_at if phase == "post" else None
        event = self.events.get(post_index) if post_index is not None else None
        if self.during and phase in self.phases and (
                (self.every and epoch % self.every == 0) or fit_epoch or event is not None):
            self._measure(epoch, phase, model)
        if event is not None:
            alpha_scale(model, event.alpha, event.layer - 1, inplace=True)
            self.alpha_applied.append({"epoch": epoch, "post_epoch": event.post_epoch,
                                       "layer": event.layer, "alpha": event.alpha})
            self._add(epoch, "alpha", {"alpha": event.alpha, "alpha_layer": event.layer})
            if self.during:
                self._measure(epoch, "alpha", model)
        if self.swa is not None:
            self.swa.callback(info, model)
        if self.progress is not None:
            if info.fitted_at is None:
                total, text = self.max_epochs, f"fit  acc_S {info.train_acc_S:.3f}"
            else:
                total = info.fitted_at + self.post_epochs
                text = f"post acc_S {info.train_acc_S:.3f}"
            self.progress(self.run.key, text, epoch, total)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, FlatvolError):
        return text
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"{type(exc).__name__}: {text}{where}"


@dataclass
class _Trained:
    """A run's network already trained (by execute_group): execute_run only measures it."""

    task: TaskData
    model: torch.nn.Module
    result: Any  # TrainResult, with its per-epoch history
    seconds: float  # this run's share of the group's training time
    ensemble: dict[str, Any]


def execute_run(run: PlannedRun, ctx: SweepContext,
                progress: ProgressFn | None = None, trained: _Trained | None = None) -> RunRecord:
    """Train and measure one run. Never raises for a problem of the run itself: it returns a
    'failed' record with the reason (an unfit training set, a diverging loss, a bad option)."""
    start = time.perf_counter() - (trained.seconds if trained is not None else 0.0)
    info: dict[str, Any] = {"seed": run.seed, "attack_size": run.attack_size,
                            "optimizer_label": run.optimizer.key}
    holder: list[_Recorder] = []
    with _threads(ctx.threads):
        try:
            return _execute(run, ctx, progress, info, start, holder, trained)
        except (FlatvolError, RuntimeError, ValueError, ArithmeticError, TypeError,
                IndexError, KeyError) as exc:
            reason = _reason(exc)
            info.update(error=reason, seconds=round(time.perf_counter() - start, 3))
            return RunRecord(run.key, run.config_hash, "failed", reason=reason, info=info,
                             series=holder[0].series if holder else [],
                             seconds=time.perf_counter() - start,
                             volume_estimator=_estimator_name(ctx.spec))


def _estimator_name(spec: ExperimentSpec) -> str | None:
    measures = set(spec.measures.final) | set(spec.during.measures)
    return spec.measures.volume.estimator if "volume" in measures else None


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _execute(run: PlannedRun, ctx: SweepContext, progress: ProgressFn | None,
             info: dict[str, Any], start: float, holder: list,
             trained: _Trained | None = None) -> RunRecord:
    from flatvol.models import build_model
    from flatvol.train import train_to_fit
    from flatvol.train.loop import EpochInfo
    from flatvol.train.swa import SWAConfig, SWATracker

    spec = ctx.spec
    task = trained.task if trained is not None else load_run_task(spec, run.attack_size,
                                                                   ctx.data_dir)
    config = train_config(spec, run.optimizer, run.seed)
    swa = None
    if run.optimizer.swa is not None:
        s = run.optimizer.swa
        swa = SWATracker(config.optimizer, SWAConfig(s.lr, s.anneal_epochs, s.anneal_strategy))
        config = type(config)(**{**config.to_dict(), "optimizer": swa.optimizer_name})
    mctx = MeasureContext(spec.measures, seed=run.seed, device=ctx.device, kernel=ctx.kernel,
                          kernel_info=ctx.kernel_info, volume_cache=ctx.volume_cache())
    recorder = _Recorder(run, ctx, task, mctx, swa, progress if trained is None else None,
                         config.max_epochs, config.post_train_epochs)
    holder.append(recorder)
    if trained is None:
        model = build_model(spec.model.arch, task.input_shape, spec_prior(spec), seed=run.seed)
        result = train_to_fit(model, task, config, seed=run.seed, device=ctx.device,
                              callback=recorder)
    else:  # replay the ensemble member's history: the same series rows train_to_fit gives
        model, result = trained.model, trained.result
        for row in result.history:
            recorder(EpochInfo(**row), model)
        info["ensemble"] = trained.ensemble
    info.update(
        train_status=result.status, epochs=result.epochs, fitted_at=result.fitted_at,
        task=spec.data.task, classes=task.classes, train_size=task.train_size,
        test_size=task.test_size, data_seed=spec.data.data_seed, model=spec.model.arch,
        prior={"sigma_w2": spec.model.sigma_w2, "sigma_b2": spec.model.sigma_b2},
        optimizer_name=run.optimizer.name, optimizer_options=dict(run.optimizer.options),
        lr=config.lr, batch_size=config.batch_size, train=config.to_dict(),
        alpha_events=recorder.alpha_applied, device=str(ctx.device),
        flatvol_version=flatvol.__version__, torch_version=torch.__version__,
        last_iterate={"train_acc_S": result.train_acc_S, "train_acc_A": result.train_acc_A,
                      "test_acc_E": result.test_acc_E},
    )
    if result.status != "fitted":
        reason = (f"did_not_fit: {'S' if config.fit == 'S' else 'S u A'} not fit after "
                  f"{result.epochs} epochs (train_acc_S {result.train_acc_S:.4f})")
        info.update(seconds=round(time.perf_counter() - start, 3))
        return RunRecord(run.key, run.config_hash, "failed", reason=reason,
                         results={"train_acc_S": result.train_acc_S,
                                  "train_acc_A": result.train_acc_A,
                                  "test_acc_E": result.test_acc_E},
                         info=info, series=recorder.series, seconds=time.perf_counter() - start,
                         volume_estimator=_estimator_name(spec))
    measured = model
    info["measured_model"] = "final"
    if swa is not None:
        measured = swa.averaged_model(task)
        info.update(measured_model="swa-average", swa_epochs=swa.epochs_averaged)
    mctx.epoch = None
    mctx.details = {}
    names = ["accuracy"] + [m for m in spec.measures.final if m != "accuracy"]
    results = compute_measures(names, measured, task, mctx)
    info["measures"] = mctx.details
    info["seconds"] = round(time.perf_counter() - start, 3)
    return RunRecord(run.key, run.config_hash, "done", results=results, info=info,
                     series=recorder.series, seconds=time.perf_counter() - start,
                     volume_estimator=_estimator_name(spec))


# --------------------------------------------------------------------------- ensembles
def ensemble_groups(runs: list[PlannedRun]) -> list[list[PlannedRun]]:
    """`runs` split into groups that differ only by seed (same optimizer and attack size), in
    order of first appearance, each group in plan order."""
    groups: dict[tuple[str, int], list[PlannedRun]] = {}
    for run in runs:
        groups.setdefault((run.optimizer.key, run.attack_size), []).append(run)
    return list(groups.values())


def ensemble_eligible(spec: ExperimentSpec, opt: OptimizerSpec) -> bool:
    """Whether `opt`'s runs can train together: train.ensemble is on, and the optimizer is a
    plain sgd / momentum / adam (no factory options, no SWA). During-training measures and
    alpha events are refused with train.ensemble at spec validation."""
    from flatvol.train.ensemble import ENSEMBLE_OPTIMIZERS

    return (spec.train.ensemble and opt.name in ENSEMBLE_OPTIMIZERS and not opt.options
            and opt.swa is None and not spec.during.measures and not spec.alpha_events)


def execute_group(runs: list[PlannedRun], ctx: SweepContext,
                  progress: ProgressFn | None = None) -> Iterator[RunRecord]:
    """Records of `runs` (one ensemble_groups group), yielded one at a time as each is measured.
    If the group can use the ensemble trainer its seeds train together, each member then being
    measured and recorded as execute_run does; otherwise (or if the ensemble trainer refuses
    the model, e.g. BatchNorm, or fails) each run trains on its own with execute_run."""
    from flatvol.train.ensemble import train_ensemble

    spec = ctx.spec
    ens = None
    if len(runs) > 1 and ensemble_eligible(spec, runs[0].optimizer):
        first = runs[0]
        start = time.perf_counter()

        def on_epoch(e: Any) -> None:
            if progress is not None:
                progress(first.key, f"ensemble of {e.total}: {e.finished} stopped", e.epoch,
                         config.max_epochs)

        with _threads(ctx.threads):
            try:
                task = load_run_task(spec, first.attack_size, ctx.data_dir)
                config = train_config(spec, first.optimizer, first.seed)
                ens = train_ensemble(spec.model.arch, task, config, [r.seed for r in runs],
                                     spec_prior(spec), ctx.device, callback=on_epoch,
                                     keep_history=True)
            except (FlatvolError, RuntimeError, ValueError, ArithmeticError, TypeError,
                    IndexError, KeyError):
                ens = None  # one at a time, where each run gets its own outcome
        train_seconds = time.perf_counter() - start
    if ens is None:
        for run in runs:
            yield execute_run(run, ctx, progress)
        return
    about = {"size": len(runs), "engine": ens.engine, "train_seconds": round(train_seconds, 3)}
    for i, run in enumerate(runs):
        yield execute_run(run, ctx, progress, trained=_Trained(
            task, ens.model(i), ens.result(i), train_seconds / len(runs), about))


# --------------------------------------------------------------------------- the driver
class SweepProgress:
    """Rich bars: the sweep (runs done / planned) and one bar per run in flight."""

    def __init__(self, total: int, done: int, enabled: bool, console: Console | None = None):
        self.enabled = enabled
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                 TimeElapsedColumn(), console=console or Console(stderr=True),
                                 transient=False, disable=not enabled)
        self.sweep = self.progress.add_task("[bold]sweep[/]", total=total, completed=done,
                                            status="")
        self.runs: dict[RunKey, Any] = {}

    def __enter__(self) -> SweepProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def update_run(self, key: RunKey, text: str, completed: int, total: int | None) -> None:
        if key not in self.runs:
            self.runs[key] = self.progress.add_task(f"  {key}", total=total, status="")
        self.progress.update(self.runs[key], completed=completed, total=total, status=text)

    def finish_run(self, record: RunRecord) -> None:
        task = self.runs.pop(record.key, None)
        if task is not None:
            self.progress.remove_task(task)
        self.progress.advance(self.sweep)
        reason = escape(record.reason or "")
        mark = "done" if record.status == "done" else f"[red]failed[/] ({reason})"
        acc = record.results.get("test_acc_E")
        acc_text = f" test_acc_E {acc:.3f}" if acc is not None and record.status == "done" else ""
        self.progress.update(self.sweep, status=f"last: {record.key} {mark}{acc_text}")


def _environment() -> dict[str, str]:
    return {"flatvol_version": flatvol.__version__, "torch_version": torch.__version__,
            "numpy_version": np.__version__, "python_version": sys.version.split()[0],
            "platform": platform.platform()}


def run_sweep(
    spec: str | Path | ExperimentSpec,
    out: str | Path,
    backend: Backend = "local",
    workers: int = 1,
    data_dir: str | Path | None = None,
    device: str = "cpu",
    retry_failed: bool = False,
    progress: bool = True,
    threads: int | None = None,
    console: Console | None = None,
) -> SweepSummary:
    """Run every planned run of `spec` not yet in DIR's store and record each as it finishes."""
    start = time.perf_counter()
    source_path, source_text = None, None
    if not isinstance(spec, ExperimentSpec):
        source_path = resolve_spec_path(spec)
        spec = load_spec(source_path)
        source_text = source_path.read_text(encoding="utf-8")
    out = Path(out)
    data_dir = str(data_dir) if data_dir is not None else None
    console = console or Console(stderr=True)
    runs = plan_runs(spec)
    options = SweepOptions(backend, workers, device, threads, data_dir, retry_failed)
    check_sweep(spec, str(source_path) if source_path else spec.name, out, runs, options)
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
        grouped = backend == "local" and spec.train.ensemble
        if threads is None and workers > 1 and not grouped:
            threads = max(1, (os.cpu_count() or 1) // workers)
        with SweepProgress(len(runs), skipped, progress, console) as bars:
            if todo:
                ctx = prepare_context(spec, out, data_dir, device, progress, threads)

                def record(rec: RunRecord) -> None:
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

                if backend == "ray":
                    from flatvol.experiments.ray_backend import run_ray

                    run_ray(todo, ctx, record, workers, bars.update_run)
                elif grouped:  # in this process; the ensemble trainer uses the threads
                    for group in ensemble_groups(todo):
                        for rec in execute_group(group, ctx, bars.update_run):
                            record(rec)
                elif workers == 1:
                    for run in todo:
                        record(execute_run(run, ctx, bars.update_run))
                else:
                    _run_processes(todo, ctx, record, workers, bars.update_run)
    summary.seconds = time.perf_counter() - start
    return summary


# --------------------------------------------------------------------------- local processes
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


def _run_processes(todo: list[PlannedRun], ctx: SweepContext,
                   record: Callable[[RunRecord], None], workers: int,
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
