"""P_opt(f|S) vs V(f|S): does an optimizer find a function as often as its prior volume says?

Mingard et al. ("Is SGD a Bayesian sampler? Well, almost", JMLR 2021) train many networks to
fit S and count how often each function f on a test set E comes out: P_opt(f|S). The Bayesian
counterpart is the conditional volume V(f|S) = P(f on S u E) / P(y_S on S) under the NNGP
prior. This driver trains N networks per optimizer with the ensemble trainer (chunks of networks
trained together, each recorded in the results store as it finishes, so a re-run resumes), asks
the volume service for V(f|S) of every function seen (one kernel factorization) and hands the
statistics and figures to flatvol.sgd_vs_bayes.analysis.

Outputs in the run directory (`flatvol report DIR` renders the store as HTML):
- results.sqlite: the spec, every network (seed, epochs, fitted, labels on E) and every volume
  (see flatvol.sgd_vs_bayes.function_store and docs/EXPERIMENTS.md);
- spec.json, functions.csv (one row per (optimizer, function); the function is its labels on E
  as one digit per point, '0'/'1' for binary, the class 0..K-1 for K <= 10 classes: read it as
  text), points.csv (per E point, the prior's P(label 1 | y_S) and each optimizer's label
  frequency; for K classes, those of the true label and the most likely class),
  summary.json, p_opt_vs_v.png and mingard.png.

K classes (data.classes 'all', '0,1,7', ...): the networks have K outputs and their function is
the argmax (flatvol.models.labels_of, as the ensemble trainer predicts it); V(f|S) comes from
VolumeService(kernel, n_classes=K), the same kernel for each of the K iid outputs.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from flatvol.data.task import TaskData
from flatvol.errors import SpecError
from flatvol.experiments.build import load_run_task
from flatvol.experiments.spec import OptimizerSpec
from flatvol.experiments.store import Store
from flatvol.interrupts import holding_signals
from flatvol.io import atomic_write, atomic_write_json, atomic_write_text, dumps_json
from flatvol.limits import MAX_NETWORKS, MAX_SEED, bound_problem
from flatvol.progress import ProgressEvent, ProgressFn
from flatvol.sgd_vs_bayes import function_store as fs
from flatvol.sgd_vs_bayes.analysis import FUNCTION_COLUMNS, analyse, p_opt_vs_v_figure
from flatvol.sgd_vs_bayes.function_store import FunctionSample, VolumeTable, decode_function
from flatvol.sgd_vs_bayes.spec import SgdVsBayesSpec
from flatvol.train.ensemble import EnsembleEpochInfo, train_ensemble

if TYPE_CHECKING:
    from flatvol.volume import PriorKernel, VolumeService

SAVE_EVERY_S = 30.0  # volumes are recorded in batches at most this far apart


def sample_functions(spec: SgdVsBayesSpec, task: TaskData, optimizer: OptimizerSpec,
                     store: Store, device: str | torch.device = "cpu",
                     progress: ProgressFn | None = None, workers: int = 1) -> FunctionSample:
    """Train spec.sampling.networks networks with `optimizer` to fit S, in ensemble chunks;
    chunks already in `store` (same data, model and training config) are reused.

    Args:
        spec, task: the experiment and its S and E.
        optimizer: one of spec.optimizers.
        store: the results store; each chunk is recorded as it finishes (one transaction).
        device: torch device.
        progress: called with ProgressEvent(optimizer.key, 'networks', done, total).
        workers: chunks trained at once, each in its own spawned process on its share of this
            process's torch threads (1: one after another in this process). A chunk's networks
            do not depend on where or beside what it trains.

    Returns:
        The sample in seed order; its `seconds` is the training time of all its chunks, as
        recorded when they were trained.
    """
    seeds = spec.seeds()
    key = spec.sample_key(optimizer, task.fingerprint())
    chunks = {c0: seeds[c0 : c0 + spec.sampling.chunk]
              for c0 in range(0, len(seeds), spec.sampling.chunk)}
    done = {c0: fs.read_chunk(store, key, part, n_points=task.test_size,
                              n_classes=task.n_classes) for c0, part in chunks.items()}
    todo = [c0 for c0, chunk in done.items() if chunk is None]
    finished = dict.fromkeys(chunks, 0)  # networks stopped so far, per chunk

    def report(c0: int, count: int) -> None:
        finished[c0] = count
        if progress is not None:
            progress(ProgressEvent(optimizer.key, "networks", sum(finished.values()),
                                   len(seeds)))

    def record(chunk: FunctionSample) -> None:
        with holding_signals():  # a chunk is recorded whole or not at all
            fs.write_chunk(store, key, chunk)
        c0 = int(chunk.seeds[0]) - spec.sampling.first_seed
        done[c0] = chunk
        report(c0, len(chunk.seeds))

    for c0 in chunks:
        if done[c0] is not None:
            report(c0, len(chunks[c0]))
    if workers > 1 and len(todo) > 1:
        from flatvol.experiments.backends import WorkerPool

        processes = min(workers, len(todo))
        threads = max(1, torch.get_num_threads() // processes)
        shared = ChunkContext(spec, task, optimizer, str(device), threads)

        def forward(event: ProgressEvent) -> None:  # a worker's chunk -> the whole sample
            if done[event.key] is None:  # (an epoch's event may arrive after its chunk)
                report(event.key, event.completed)

        with WorkerPool(shared, _train_chunk_in_worker, processes, threads=threads) as pool:
            for c0 in todo:
                pool.submit(f"{optimizer.key} seeds {chunks[c0][0]}..{chunks[c0][-1]}",
                            c0, chunks[c0])
            pool.collect(record, forward, wait=True)
        pool.raise_lost("chunk(s) of networks")
    else:
        for c0 in todo:
            record(train_chunk(spec, task, optimizer, chunks[c0], device,
                               lambda count, c0=c0: report(c0, count)))
    parts = [done[c0] for c0 in chunks]
    return FunctionSample(optimizer.key, *(np.concatenate([getattr(p, k) for p in parts])
                                           for k in ("seeds", "epochs", "fitted", "labels_E")),
                          seconds=sum(p.seconds for p in parts))


def train_chunk(spec: SgdVsBayesSpec, task: TaskData, optimizer: OptimizerSpec,
                seeds: list[int], device: str | torch.device = "cpu",
                stopped: Callable[[int], None] | None = None) -> FunctionSample:
    """Train one chunk of networks as one ensemble and read off their functions on E.

    Args:
        spec, task, optimizer: as for sample_functions.
        seeds: the chunk's seeds.
        device: torch device.
        stopped: called with the count of the chunk's networks that have stopped, each epoch.

    Returns:
        The chunk's FunctionSample, `seconds` its training time.
    """
    start = time.perf_counter()

    def on_epoch(info: EnsembleEpochInfo) -> None:
        if stopped is not None:
            stopped(info.finished)

    ens = train_ensemble(spec.model.arch, task, spec.train_config(optimizer), seeds,
                         prior=spec.prior(), device=device, callback=on_epoch,
                         keep_history=False, engine=spec.sampling.engine,
                         group_size=spec.sampling.group_size)
    return FunctionSample(
        optimizer.key, np.asarray(seeds, dtype=np.int64), ens.epochs.astype(np.int64),
        np.array([s == "fitted" for s in ens.status]),
        ens.predict_labels(task.E.x).numpy().astype(np.uint8),
        seconds=time.perf_counter() - start)


@dataclass(frozen=True)
class ChunkContext:
    """What the chunks of one sample share, sent once to each worker process."""

    spec: SgdVsBayesSpec
    task: TaskData
    optimizer: OptimizerSpec
    device: str
    threads: int


def _train_chunk_in_worker(ctx: ChunkContext, c0: int, seeds: list[int],
                           progress: ProgressFn) -> FunctionSample:
    from flatvol.experiments.execute import torch_threads

    with torch_threads(ctx.threads):
        return train_chunk(ctx.spec, ctx.task, ctx.optimizer, seeds, ctx.device,
                           lambda count: progress(ProgressEvent(c0, "networks", count)))


def conditional_volumes(spec: SgdVsBayesSpec, task: TaskData, functions: list[str], store: Store,
                        device: str | torch.device = "cpu", progress: ProgressFn | None = None
                        ) -> VolumeTable:
    """V(f|S) for each function on E from the volume service: one kernel on S u E, factorized
    once (for K classes, the kernel of each of the K iid outputs). Values in `store` for the
    same data, model and volume settings are reused.

    Args:
        spec: the experiment's spec (its volume settings).
        task: S and E; task.n_classes is K.
        functions: the function strings on E whose V(f|S) is wanted.
        store: the results store.
        device: torch device of a Monte-Carlo kernel.
        progress: called with ProgressEvent('volumes', 'functions', done, total).

    Returns:
        The VolumeTable: log10 V(y_S), log10 V(y_S, f) of every function, the per-point marginals.
    """
    from flatvol.volume import VolumeService

    v = spec.volume
    key = spec.volume_key(task.fingerprint())
    k = task.n_classes
    # binary labels as the service's {0, 1} floats (as ever); K-class ones as classes 0..K-1
    label_type = np.float64 if k == 2 else np.int64
    y_S = task.S.y.numpy().astype(label_type)
    built: dict[str, Any] = {}

    def service() -> VolumeService:  # the kernel is only built if something is missing
        if not built:
            kernel = spec_kernel(spec, task, device)
            built.update(service=VolumeService(kernel, n_classes=k),
                         kernel=kernel.description())
        return built["service"]

    shape = fs.marginals_shape(task.test_size, k)
    prior = fs.read_prior(store, key, shape)
    if prior is None:
        train = service().log_volume(y_S, v.estimator, n=len(y_S), **v.options)
        marginals = (service().point_marginals(y_S, v.estimator, **v.options) if k == 2
                     else class_marginals(service(), y_S, v.estimator, v.options))
        fs.write_prior(store, key, built["kernel"], train.log10_volume, marginals)
        prior = fs.read_prior(store, key, shape)
        assert prior is not None
    known = fs.read_volumes(store, key)
    todo = [f for f in functions if f not in known]
    batch: dict[str, tuple[float, bool]] = {}
    last_save = time.perf_counter()
    for i, function in enumerate(todo):
        f_E = decode_function(function, k, task.test_size).astype(label_type)
        res = service().log_volume(np.concatenate([y_S, f_E]), v.estimator, **v.options)
        batch[function] = (res.log10_volume, bool(res.converged))
        if progress is not None:
            progress(ProgressEvent("volumes", "functions", len(functions) - len(todo) + i + 1,
                                   len(functions)))
        if time.perf_counter() - last_save > SAVE_EVERY_S or i == len(todo) - 1:
            fs.write_volumes(store, key, batch)
            known.update(batch)
            batch, last_save = {}, time.perf_counter()
    kernel, log10_v_train, marginals = prior
    return VolumeTable(v.estimator, kernel, log10_v_train,
                       {f: known[f][0] for f in functions}, {f: known[f][1] for f in functions},
                       marginals, k)


def spec_kernel(spec: SgdVsBayesSpec, task: TaskData, device: str | torch.device = "cpu"
                ) -> PriorKernel:
    """The prior's kernel of S u E as the spec's volume settings ask for it.

    Args:
        spec: the experiment's spec (model, prior and volume settings).
        task: S and E (S first in the kernel).
        device: torch device of a Monte-Carlo kernel.

    Returns:
        The PriorKernel (for K classes, that of each of the K iid outputs).
    """
    from flatvol.models import build_model
    from flatvol.volume import KernelRequest, prior_kernel

    v = spec.volume
    x = task.x_SE()
    # only the architecture and the prior matter: the draws redraw the weights
    model = build_model(spec.model.arch, tuple(x.shape[1:]), spec.prior(), seed=v.mc_seed)
    request = KernelRequest(v.kernel, v.mc_samples, v.mc_seed, v.mc_tolerance,
                            v.mc_max_samples, v.mc_batchnorm, estimator=v.estimator,
                            options=dict(v.options))
    return prior_kernel(model, x, request, n_classes=task.n_classes, probe_labels=task.y_SE(),
                        device=device, progress=False)


def class_marginals(service: VolumeService, y_S: np.ndarray, estimator: str,
                    options: dict[str, Any]) -> np.ndarray:
    """The K-class posterior's marginals P(label k on e | y_S) = V(y_S, e -> k) / V(y_S), each
    point e after S on its own (the K-class counterpart of VolumeService.point_marginals).

    Args:
        service: a flatvol.volume.VolumeService for K > 2 classes on S u E (S first).
        y_S: the classes of S.
        estimator, options: the volume estimator and its options.

    Returns:
        (|E|, K) probabilities, each clipped to [0, 1] but not renormalized: a row's sum
        differs from 1 by the estimator's error, which is shown rather than hidden.
    """
    from flatvol.volume import VolumeService

    n_S = len(y_S)
    train = service.log_volume(y_S, estimator, n=n_S, **options)
    out = np.empty((service.n - n_S, service.n_classes))
    for j in range(n_S, service.n):
        # S u {e}: its factor is read off the kernel's (no refactorization)
        point = VolumeService(service.factor.with_point(n_S, j), n_classes=service.n_classes)
        for c in range(service.n_classes):
            full = point.log_volume(np.r_[y_S, c], estimator, **options)
            out[j - n_S, c] = 10 ** (full.log10_volume - train.log10_volume)
    return np.clip(out, 0.0, 1.0)


@dataclass(frozen=True)
class SgdVsBayesResult:
    spec: SgdVsBayesSpec
    task: TaskData
    samples: dict[str, FunctionSample]
    volumes: VolumeTable
    rows: list[dict[str, Any]]
    summaries: list[Any]  # flatvol.sgd_vs_bayes.analysis.OptimizerSummary
    points: list[dict[str, Any]]
    summary: dict[str, Any]
    info: dict[str, Any]  # what the store records for the experiment (FunctionExperiment.info)
    files: dict[str, Path] = field(default_factory=dict)


def run_sgd_vs_bayes(spec: SgdVsBayesSpec, out: str | Path,
                     data_dir: str | Path | None = None, device: str | torch.device = "cpu",
                     progress: ProgressFn | None = None, networks: int | None = None,
                     workers: int = 1) -> SgdVsBayesResult:
    """Train, count, measure V(f|S), record it all in OUT/results.sqlite and write the table,
    summary and plots into `out`. A spec with a [grid] runs with
    flatvol.sgd_vs_bayes.grid.run_sgd_vs_bayes_grid instead.

    Args:
        spec: the validated spec (a file or packaged name is read by the caller:
            load_sgd_vs_bayes_spec(resolve_spec_path(name))).
        out: the run directory; re-running with the same one resumes.
        data_dir, device: as for a sweep.
        progress: called with a flatvol.progress.ProgressEvent per step: key an optimizer's
            name (text 'networks') or 'volumes' (text 'functions').
        networks: overrides spec.sampling.networks.
        workers: chunks of networks trained at once, in spawned processes (sample_functions).

    Returns:
        The samples, volumes, rows, summaries and the files written.
    """
    spec = resolve_spec(spec, networks)
    if spec.grid is not None:
        raise SpecError(f"{spec.name}: the spec has a [grid]; run it with `flatvol sgd-vs-bayes` "
                        "or flatvol.sgd_vs_bayes.grid.run_sgd_vs_bayes_grid")
    if spec.resample is not None:
        raise SpecError(f"{spec.name}: the spec has a [resample] section; run it with `flatvol "
                        "sgd-vs-bayes` or flatvol.sgd_vs_bayes.resample.run_resampled")
    task = load_run_task(spec, 0, data_dir)
    with Store(out) as store:
        return run_cell(spec, task, store, Path(out), device, progress, workers=workers)


def resolve_spec(spec: SgdVsBayesSpec, networks: int | None = None) -> SgdVsBayesSpec:
    """The spec, with `networks` overriding sampling.networks (and every grid cell's count).

    Args:
        spec: the validated spec (names and files are read by the caller).
        networks: the override, or None (the spec as it is).

    Returns:
        The spec with the override.

    Raises:
        TypeError: `spec` is not an SgdVsBayesSpec (such as a name or a path).
        SpecError: `networks` out of bounds (one line).
    """
    if not isinstance(spec, SgdVsBayesSpec):  # a name or path is resolved by the caller
        raise TypeError(f"expected an SgdVsBayesSpec, got {type(spec).__name__} (read a file or "
                        "packaged name with load_sgd_vs_bayes_spec(resolve_spec_path(name)))")
    if networks is not None:
        # first_seed + networks keys the stored samples in a signed 64-bit column
        most = min(MAX_NETWORKS, MAX_SEED - spec.sampling.first_seed)
        problem = bound_problem(networks, 1, most)
        if problem is not None:
            raise SpecError(f"networks: {problem}")
        grid = spec.grid
        if grid is not None:
            grid = grid.model_copy(update={"cells": [
                r.model_copy(update={"networks": None}) for r in grid.cells]})
        spec = spec.model_copy(update={"grid": grid, "sampling": spec.sampling.model_copy(
            update={"networks": int(networks)})})
    return spec


def run_cell(spec: SgdVsBayesSpec, task: TaskData, store: Store, out_dir: Path,
             device: str | torch.device = "cpu", progress: ProgressFn | None = None,
             grid: dict[str, Any] | None = None, workers: int = 1) -> SgdVsBayesResult:
    """One sgd-vs-bayes experiment (a spec without a grid, or one grid cell) in an open store.

    Args:
        spec: the experiment's spec (no grid).
        task: its S and E.
        store: the results store (networks and volumes already there are reused).
        out_dir: where spec.json, the CSVs, summary.json and the PNGs go.
        device: torch device.
        progress: called with a flatvol.progress.ProgressEvent per step: key an optimizer's
            name (text 'networks') or 'volumes' (text 'functions').
        grid: for a grid cell, {'name': the grid spec's name, 'cell': the cell's name,
            'values': its axis values}, recorded with the experiment.
        workers: chunks of networks trained at once, in spawned processes (sample_functions).

    Returns:
        The samples, volumes, rows, summaries and the files written.
    """
    d = spec.data
    spec_json = dumps_json(spec.model_dump(mode="json"), indent=2)
    files = {"spec": out_dir / "spec.json"}
    atomic_write_text(files["spec"], spec_json + "\n")
    seconds: dict[str, float] = {}
    store.add_spec(spec.spec_hash(), spec.name, spec_json)
    samples = {}
    for optimizer in spec.optimizers:
        samples[optimizer.key] = sample_functions(spec, task, optimizer, store, device, progress,
                                                  workers)
        seconds[f"train_{optimizer.key}"] = round(samples[optimizer.key].seconds, 2)
    needed = {f for s in samples.values() for f, c in s.counts().items()
              if c >= spec.volume.min_count}
    start = time.perf_counter()
    volumes = conditional_volumes(spec, task, sorted(needed), store, device, progress)
    # the volumes' compute time over every call (a resumed call adds what it computed)
    before = (fs.read_experiment_info(store, spec.spec_hash()) or {}).get("seconds", {})
    seconds["volumes"] = round(before.get("volumes", 0.0) + time.perf_counter() - start, 2)
    y_E = task.E.y.numpy().astype(np.uint8)
    # K is recorded for K-class experiments only: a binary record stays byte for byte as before
    classes = {"n_classes": task.n_classes} if task.n_classes > 2 else {}
    info = {"name": spec.name, "task": d.task, "classes": task.classes, **classes,
            "train_size": task.train_size, "test_size": task.test_size,
            "model": spec.model.arch, "estimator": volumes.estimator,
            "analysis": spec.analysis.model_dump(), "labels_E": fs.encode_function(y_E),
            "first_seed": spec.sampling.first_seed, "networks": spec.sampling.networks,
            "sample_keys": [[o.key, spec.sample_key(o, task.fingerprint())]
                            for o in spec.optimizers],  # a list: optimizer order
            "volume_key": spec.volume_key(task.fingerprint()), "seconds": seconds,
            **({"grid": grid} if grid is not None else {})}
    fs.record_experiment(store, spec.spec_hash(), info)
    a = spec.analysis
    result = analyse(samples, volumes, y_E, min_count=a.min_count, top=a.top)
    summary = {**{k: info[k] for k in ("name", "task", "classes", "train_size", "test_size",
                                       "model", "estimator", "analysis")}, **classes,
               "kernel": volumes.kernel, "log10_v_train": volumes.log10_v_train,
               "optimizers": result.optimizer_summaries(), "E_points": result.points,
               "seconds": seconds}
    files["functions"] = write_csv(out_dir / "functions.csv", result.rows, FUNCTION_COLUMNS)
    files["points"] = write_csv(out_dir / "points.csv", result.points)
    files["summary"] = out_dir / "summary.json"
    atomic_write_json(files["summary"], summary)
    for name, stem, per_optimizer in (("scatter", "p_opt_vs_v", False),
                                      ("mingard", "mingard", True)):
        fig = p_opt_vs_v_figure(result.rows, result.summaries, per_optimizer=per_optimizer,
                                estimator=spec.volume.estimator, min_count=a.min_count,
                                n_classes=task.n_classes)
        files[name] = out_dir / f"{stem}.png"
        atomic_write(files[name], lambda fh, f=fig: f.savefig(fh, dpi=130, format="png"))
    return SgdVsBayesResult(spec, task, samples, volumes, result.rows, result.summaries,
                            result.points, summary, info, files)


def write_csv(path: Path, rows: list[dict[str, Any]],
               columns: tuple[str, ...] | None = None) -> Path:
    columns = columns if columns is not None else (tuple(rows[0]) if rows else ())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] for k in columns} for r in rows)
    atomic_write_text(path, buffer.getvalue())
    return path
