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
  as a '0'/'1' string: read it as text), points.csv (per E point, the prior's P(label 1 | y_S)
  and each optimizer's label frequency), summary.json, p_opt_vs_v.png and mingard.png.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flatvol.data.task import TaskData
from flatvol.errors import SpecError
from flatvol.experiments.build import load_run_task
from flatvol.experiments.spec import OptimizerSpec
from flatvol.experiments.store import Store
from flatvol.io import atomic_write, atomic_write_json, atomic_write_text, dumps_json
from flatvol.limits import MAX_NETWORKS, MAX_SEED, bound_problem
from flatvol.sgd_vs_bayes import function_store as fs
from flatvol.sgd_vs_bayes.analysis import FUNCTION_COLUMNS, analyse, p_opt_vs_v_figure
from flatvol.sgd_vs_bayes.function_store import FunctionSample, VolumeTable, labels_of
from flatvol.sgd_vs_bayes.spec import SgdVsBayesSpec, load_sgd_vs_bayes_spec
from flatvol.train.ensemble import EnsembleEpochInfo, train_ensemble

Progress = Callable[[str, int, int], None]  # (stage, done, total)
SAVE_EVERY_S = 30.0  # volumes are recorded in batches at most this far apart


def sample_functions(spec: SgdVsBayesSpec, task: TaskData, optimizer: OptimizerSpec,
                     store: Store, device: str | torch.device = "cpu",
                     progress: Progress | None = None) -> FunctionSample:
    """Train spec.sampling.networks networks with `optimizer` to fit S, in ensemble chunks;
    chunks already in `store` (same data, model and training config) are reused. The sample's
    `seconds` is the training time of all its chunks, as recorded when they were trained."""
    config = spec.train_config(optimizer)
    seeds = spec.seeds()
    key = spec.sample_key(optimizer, task.fingerprint())
    parts: list[FunctionSample] = []
    for c0 in range(0, len(seeds), spec.sampling.chunk):
        chunk_seeds = seeds[c0 : c0 + spec.sampling.chunk]
        chunk = fs.read_chunk(store, key, chunk_seeds)
        if chunk is None:
            start = time.perf_counter()

            def on_epoch(info: EnsembleEpochInfo, base: int = c0) -> None:
                if progress is not None:
                    progress(optimizer.key, base + info.finished, len(seeds))

            ens = train_ensemble(spec.model.arch, task, config, chunk_seeds, prior=spec.prior(),
                                 device=device, callback=on_epoch, keep_history=False,
                                 engine=spec.sampling.engine, group_size=spec.sampling.group_size)
            chunk = FunctionSample(
                optimizer.key, np.asarray(chunk_seeds, dtype=np.int64),
                ens.epochs.astype(np.int64), np.array([s == "fitted" for s in ens.status]),
                ens.predict_labels(task.E.x).numpy().astype(np.uint8),
                seconds=time.perf_counter() - start)
            fs.write_chunk(store, key, chunk)
        parts.append(chunk)
        if progress is not None:
            progress(optimizer.key, c0 + len(chunk_seeds), len(seeds))
    return FunctionSample(optimizer.key, *(np.concatenate([getattr(p, k) for p in parts])
                                           for k in ("seeds", "epochs", "fitted", "labels_E")),
                          seconds=sum(p.seconds for p in parts))


def conditional_volumes(spec: SgdVsBayesSpec, task: TaskData, functions: list[str], store: Store,
                        device: str | torch.device = "cpu", progress: Progress | None = None
                        ) -> VolumeTable:
    """V(f|S) for each function on E from the volume service: one kernel on S u E, factorized
    once. Values in `store` for the same data, model and volume settings are reused."""
    from flatvol.volume import VolumeService, prior_kernel

    v = spec.volume
    key = spec.volume_key(task.fingerprint())
    y_S = task.S.y.numpy().astype(np.float64)
    built: dict[str, Any] = {}

    def service() -> VolumeService:  # the kernel is only built if something is missing
        if not built:
            kernel = prior_kernel(spec.model.arch, task.x_SE(), spec.prior(), v.kernel,
                                  mc_samples=v.mc_samples, mc_seed=v.mc_seed, device=device,
                                  progress=False, mc_tolerance=v.mc_tolerance,
                                  mc_max_samples=v.mc_max_samples, probe_labels=task.y_SE(),
                                  probe_estimator=v.estimator, probe_options=dict(v.options),
                                  mc_batchnorm=v.mc_batchnorm)
            built.update(service=VolumeService(kernel.matrix), kernel=kernel.description())
        return built["service"]

    prior = fs.read_prior(store, key)
    if prior is None:
        train = service().log_volume(y_S, v.estimator, n=len(y_S), **v.options)
        marginals = service().point_marginals(y_S, v.estimator, **v.options)
        fs.write_prior(store, key, built["kernel"], train.log10_volume, marginals)
        prior = fs.read_prior(store, key)
        assert prior is not None
    known = fs.read_volumes(store, key)
    todo = [f for f in functions if f not in known]
    batch: dict[str, tuple[float, bool]] = {}
    last_save = time.perf_counter()
    for i, bits in enumerate(todo):
        res = service().log_volume(np.concatenate([y_S, labels_of(bits).astype(np.float64)]),
                                   v.estimator, **v.options)
        batch[bits] = (res.log10_volume, bool(res.converged))
        if progress is not None:
            progress("volumes", len(functions) - len(todo) + i + 1, len(functions))
        if time.perf_counter() - last_save > SAVE_EVERY_S or i == len(todo) - 1:
            fs.write_volumes(store, key, batch)
            known.update(batch)
            batch, last_save = {}, time.perf_counter()
    kernel, log10_v_train, marginals = prior
    return VolumeTable(v.estimator, kernel, log10_v_train,
                       {f: known[f][0] for f in functions}, {f: known[f][1] for f in functions},
                       marginals)


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


def run_sgd_vs_bayes(spec: SgdVsBayesSpec | str | Path, out: str | Path,
                     data_dir: str | Path | None = None, device: str | torch.device = "cpu",
                     progress: Progress | None = None, networks: int | None = None
                     ) -> SgdVsBayesResult:
    """Train, count, measure V(f|S), record it all in OUT/results.sqlite and write the table,
    summary and plots into `out`. A spec with a [grid] runs with
    flatvol.sgd_vs_bayes.grid.run_sgd_vs_bayes_grid instead.

    Args:
        spec: a spec, a spec file or a packaged spec name.
        out: the run directory; re-running with the same one resumes.
        data_dir, device: as for a sweep.
        progress: called with (stage, done, total).
        networks: overrides spec.sampling.networks.

    Returns:
        The samples, volumes, rows, summaries and the files written.
    """
    spec = resolve_spec(spec, networks)
    if spec.grid is not None:
        raise SpecError(f"{spec.name}: the spec has a [grid]; run it with `flatvol sgd-vs-bayes` "
                        "or flatvol.sgd_vs_bayes.grid.run_sgd_vs_bayes_grid")
    task = load_run_task(spec, 0, data_dir)  # type: ignore[arg-type]
    with Store(out) as store:
        return run_cell(spec, task, store, Path(out), device, progress)


def resolve_spec(spec: SgdVsBayesSpec | str | Path, networks: int | None = None
                 ) -> SgdVsBayesSpec:
    """The spec itself, or the spec file / packaged name loaded; `networks` overrides
    sampling.networks (and every grid cell's count)."""
    if not isinstance(spec, SgdVsBayesSpec):
        spec = load_sgd_vs_bayes_spec(spec)
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
             device: str | torch.device = "cpu", progress: Progress | None = None,
             grid: dict[str, Any] | None = None) -> SgdVsBayesResult:
    """One sgd-vs-bayes experiment (a spec without a grid, or one grid cell) in an open store.

    Args:
        spec: the experiment's spec (no grid).
        task: its S and E.
        store: the results store (networks and volumes already there are reused).
        out_dir: where spec.json, the CSVs, summary.json and the PNGs go.
        device: torch device.
        progress: called with (stage, done, total).
        grid: for a grid cell, {'name': the grid spec's name, 'cell': the cell's name,
            'values': its axis values}, recorded with the experiment.

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
        samples[optimizer.key] = sample_functions(spec, task, optimizer, store, device, progress)
        seconds[f"train_{optimizer.key}"] = round(samples[optimizer.key].seconds, 2)
    needed = {f for s in samples.values() for f, c in s.counts().items()
              if c >= spec.volume.min_count}
    start = time.perf_counter()
    volumes = conditional_volumes(spec, task, sorted(needed), store, device, progress)
    # the volumes' compute time over every call (a resumed call adds what it computed)
    before = (fs.read_experiment_info(store, spec.spec_hash()) or {}).get("seconds", {})
    seconds["volumes"] = round(before.get("volumes", 0.0) + time.perf_counter() - start, 2)
    y_E = task.E.y.numpy().astype(np.uint8)
    info = {"name": spec.name, "task": d.task, "classes": task.classes,
            "train_size": task.train_size, "test_size": task.test_size,
            "model": spec.model.arch, "estimator": volumes.estimator,
            "analysis": spec.analysis.model_dump(), "labels_E": fs.bits_of(y_E),
            "first_seed": spec.sampling.first_seed, "networks": spec.sampling.networks,
            "sample_keys": [[o.key, spec.sample_key(o, task.fingerprint())]
                            for o in spec.optimizers],  # a list: optimizer order
            "volume_key": spec.volume_key(task.fingerprint()), "seconds": seconds,
            **({"grid": grid} if grid is not None else {})}
    fs.record_experiment(store, spec.spec_hash(), info)
    a = spec.analysis
    result = analyse(samples, volumes, y_E, min_count=a.min_count, top=a.top)
    summary = {**{k: info[k] for k in ("name", "task", "classes", "train_size", "test_size",
                                       "model", "estimator", "analysis")},
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
                                estimator=spec.volume.estimator, min_count=a.min_count)
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
