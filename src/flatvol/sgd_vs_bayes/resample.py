"""P_opt(f|S) against P_B(f|S) over independent draws of E, under several Bayesian posteriors.

One comparison on one E says little about its spread: which points E holds moves the ratios.
With a [resample] section the networks are trained once (labels recorded on a held-out pool of
data.test_size points), and each draw of E (`draws` per size, without replacement, seeded) is
a comparison of its own: a network's function on the draw is its labels there, P_opt(f|S) is
their frequency, and P_B(f|S) is the posterior probability of f on the draw's points under each
named posterior (flatvol.volume.predictive: 'ep-orthant', 'ep-probit', 'gp-regression'). The
statistics of each (posterior, |E|, draw, optimizer) are those of the single-E comparison
(flatvol.sgd_vs_bayes.analysis.summarize); their spread over the draws is the error bar.

P_B(f|S) is computed for the functions the analysis reads: those seen analysis.min_count times
or more, and the analysis.top most frequent. Each value is recorded in the store as it is
computed (table function_posteriors), so a killed run resumes.

Outputs in the run directory: resample.csv (one row per posterior, |E|, draw and optimizer),
resample_functions.csv (every function's P_opt and P_B on every draw), resample.json (means,
standard deviations and ranges over the draws) and resample.png.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from flatvol.data.task import TaskData
from flatvol.digest import digest
from flatvol.experiments.store import Store
from flatvol.io import atomic_write, atomic_write_json
from flatvol.progress import ProgressEvent, ProgressFn
from flatvol.sgd_vs_bayes import function_store as fs
from flatvol.sgd_vs_bayes.analysis import (
    function_rows,
    resampled_figure,
    spread_over_draws,
    summarize,
)
from flatvol.sgd_vs_bayes.function_store import FunctionSample, VolumeTable, decode_function
from flatvol.sgd_vs_bayes.run import (
    resolve_spec,
    sample_functions,
    spec_kernel,
    write_csv,
)
from flatvol.sgd_vs_bayes.spec import SgdVsBayesSpec

SAVE_EVERY_S = 30.0  # P_B values are recorded in batches at most this far apart

# per draw: what the single-E comparison reports, and the most frequent function's ratio
DRAW_COLUMNS = ("posterior", "size", "draw", "optimizer", "fitted", "distinct_functions",
                "resolved_functions", "pearson_log10", "spearman", "top_median_abs_log10_ratio",
                "top_within_10x", "p_opt_most_frequent", "log10_ratio_most_frequent",
                "posterior_mass_found", "decisiveness_gap", "mean_test_error",
                "unreliable_values")
FUNCTION_COLUMNS = ("posterior", "size", "draw", "optimizer", "function", "count", "p_opt",
                    "log10_p_opt", "log10_p_b", "stderr_log10", "reliable", "errors_E")


@dataclass(frozen=True)
class Draw:
    """One draw of E: its size, its number among the draws of that size, its pool indices."""

    size: int
    index: int
    points: np.ndarray  # sorted indices into the pool (task.E)


def draws_of_E(spec: SgdVsBayesSpec, pool_size: int) -> list[Draw]:
    """The spec's draws of E from a pool of `pool_size` points, each from its own seed
    (resample.seed, size, index), so adding draws or sizes leaves the others as they were.

    Args:
        spec: a spec with a [resample] section.
        pool_size: |pool| (the task's E).

    Returns:
        The draws, by size then index.
    """
    r = spec.resample
    assert r is not None
    out = []
    for size in r.sizes:
        for index in range(r.draws):
            rng = np.random.default_rng([r.seed, size, index])
            out.append(Draw(size, index, np.sort(rng.choice(pool_size, size, replace=False))))
    return out


@dataclass(frozen=True)
class ResampledResult:
    """Per-draw rows (DRAW_COLUMNS), per-function rows (FUNCTION_COLUMNS), the spread over the
    draws per (posterior, size, optimizer), and the files written."""

    spec: SgdVsBayesSpec
    rows: list[dict[str, Any]]
    functions: list[dict[str, Any]]
    spread: list[dict[str, Any]]
    seconds: dict[str, float]
    files: dict[str, Path] = field(default_factory=dict)


def posterior_key(spec: SgdVsBayesSpec, data_fingerprint: str, posterior: str,
                  draw: Draw) -> str:
    """What fixes P_B(f|S) on one draw: the volume key, the posterior, the draw's points and
    the sampler's settings."""
    r = spec.resample
    assert r is not None
    return digest("sgd-vs-bayes-posterior", {
        "volume_key": spec.volume_key(data_fingerprint), "posterior": posterior,
        "points": draw.points.tolist(), "n_samples": r.n_samples, "seed": r.seed})


def restrict(sample: FunctionSample, points: np.ndarray) -> FunctionSample:
    """The networks' functions on some of the pool's points."""
    return FunctionSample(sample.optimizer, sample.seeds, sample.epochs, sample.fitted,
                          sample.labels_E[:, points], sample.seconds)


def wanted(sample: FunctionSample, min_count: int, top: int) -> list[str]:
    """The functions whose P_B the analysis reads: seen min_count times or more, or among
    the `top` most frequent."""
    ranked = sample.counts().most_common()
    return [f for i, (f, c) in enumerate(ranked) if c >= min_count or i < top]


def resampled_comparison(spec: SgdVsBayesSpec, task: TaskData,
                         samples: Mapping[str, FunctionSample], store: Store,
                         device: str | torch.device = "cpu",
                         progress: ProgressFn | None = None) -> ResampledResult:
    """P_opt against P_B on every draw of E, for every posterior and optimizer.

    Args:
        spec: the spec (with [resample]).
        task: S and the pool E.
        samples: each optimizer's networks, labels on the whole pool.
        store: the results store (P_B values there are reused; new ones are recorded).
        device: torch device of a Monte-Carlo kernel.
        progress: called with ProgressEvent('<posterior> volumes', 'functions', done, total).

    Returns:
        The ResampledResult (files not yet written: see write_resampled).
    """
    from flatvol.volume.predictive import posterior_predictive

    r = spec.resample
    assert r is not None
    a = spec.analysis
    fingerprint = task.fingerprint()
    y_S = task.S.y.numpy().astype(np.float64)
    y_pool = task.E.y.numpy().astype(np.uint8)
    draws = draws_of_E(spec, task.test_size)
    kernel = spec_kernel(spec, task, device).matrix
    # each draw's functions and those whose P_B the analysis reads: the same for every posterior
    per_draw = []
    for d in draws:
        sub = {name: restrict(s, d.points) for name, s in samples.items()}
        needed = sorted(set().union(*(wanted(s, a.min_count, a.top) for s in sub.values())))
        per_draw.append((d, sub, needed))
    total = sum(len(needed) for _, _, needed in per_draw)
    rows: list[dict[str, Any]] = []
    functions: list[dict[str, Any]] = []
    seconds: dict[str, float] = {}
    for posterior in r.posteriors:
        start = time.perf_counter()
        predictive = posterior_predictive(kernel, y_S, posterior)
        # P(label 1) of each pool point under this posterior: the decisiveness gap's reference
        sd = np.sqrt(np.diag(predictive.cov) + predictive.noise_var)
        label1 = stats.norm.cdf((predictive.mean - predictive.threshold) / sd)
        done = 0
        for d, sub, needed in per_draw:
            key = posterior_key(spec, fingerprint, posterior, d)
            known = fs.read_posteriors(store, key)
            batch: dict[str, tuple[float, float, bool]] = {}
            last_save = time.perf_counter()
            for f in needed:
                if f not in known:
                    value = predictive.log10_probability(
                        decode_function(f, 2, d.size), d.points, n_samples=r.n_samples,
                        seed=r.seed)
                    batch[f] = (value.log10_probability, value.stderr_log10, value.reliable)
                done += 1
                if batch and (time.perf_counter() - last_save > SAVE_EVERY_S or f == needed[-1]):
                    fs.write_posteriors(store, key, batch)
                    known.update(batch)
                    batch, last_save = {}, time.perf_counter()
                if progress is not None:
                    progress(ProgressEvent(f"{posterior} volumes", "functions", done, total))
            if batch:
                fs.write_posteriors(store, key, batch)
                known.update(batch)
            table = VolumeTable(posterior, "", 0.0, {f: known[f][0] for f in needed},
                                {f: known[f][2] for f in needed}, label1[d.points])
            y_E = y_pool[d.points]
            for name, s in sub.items():
                f_rows = function_rows(s, table, y_E)
                summary = summarize(s, f_rows, y_E, min_count=a.min_count, top=a.top,
                                    prior_marginals=table.prior_marginals)
                first = f_rows[0] if f_rows else None
                rows.append({
                    "posterior": posterior, "size": d.size, "draw": d.index, "optimizer": name,
                    "fitted": summary.fitted, "distinct_functions": summary.distinct_functions,
                    "resolved_functions": summary.resolved_functions,
                    "pearson_log10": summary.pearson_log10, "spearman": summary.spearman,
                    "top_median_abs_log10_ratio": summary.top_median_abs_log10_ratio,
                    "top_within_10x": summary.top_within_10x,
                    "p_opt_most_frequent": first["p_opt"] if first else math.nan,
                    "log10_ratio_most_frequent": (first["log10_p_opt"]
                                                  - first["log10_v_conditional"]
                                                  if first else math.nan),
                    "posterior_mass_found": summary.posterior_mass_found,
                    "decisiveness_gap": summary.decisiveness_gap,
                    "mean_test_error": summary.mean_test_error,
                    "unreliable_values": sum(1 for row in f_rows if row["function"] in known
                                             and not known[row["function"]][2])})
                functions.extend({
                    "posterior": posterior, "size": d.size, "draw": d.index, "optimizer": name,
                    "function": row["function"], "count": row["count"], "p_opt": row["p_opt"],
                    "log10_p_opt": row["log10_p_opt"],
                    "log10_p_b": row["log10_v_conditional"],
                    "stderr_log10": known[row["function"]][1] if row["function"] in known
                    else math.nan,
                    "reliable": known[row["function"]][2] if row["function"] in known
                    else False,
                    "errors_E": row["errors_E"]} for row in f_rows if row["function"] in known)
        seconds[posterior] = round(time.perf_counter() - start, 2)
    return ResampledResult(spec, rows, functions, spread_over_draws(rows), seconds)


def write_resampled(result: ResampledResult, out_dir: Path) -> ResampledResult:
    """resample.csv, resample_functions.csv, resample.json and resample.png in `out_dir`.

    Args:
        result: the comparison.
        out_dir: the run directory.

    Returns:
        The result with its files.
    """
    files = {"resample": write_csv(out_dir / "resample.csv", result.rows, DRAW_COLUMNS),
             "functions": write_csv(out_dir / "resample_functions.csv", result.functions,
                                    FUNCTION_COLUMNS),
             "summary": out_dir / "resample.json", "figure": out_dir / "resample.png"}
    r = result.spec.resample
    assert r is not None
    atomic_write_json(files["summary"], {
        "name": result.spec.name, "resample": r.model_dump(mode="json"),
        "analysis": result.spec.analysis.model_dump(), "spread": result.spread,
        "seconds": result.seconds})
    fig = resampled_figure(result.spread)
    atomic_write(files["figure"], lambda fh: fig.savefig(fh, dpi=130, format="png"))
    return ResampledResult(result.spec, result.rows, result.functions, result.spread,
                           result.seconds, files)


def run_resampled(spec: SgdVsBayesSpec, out: str | Path, data_dir: str | Path | None = None,
                  device: str | torch.device = "cpu", progress: ProgressFn | None = None,
                  networks: int | None = None, workers: int = 1) -> ResampledResult:
    """Train (or read back) the networks, compare P_opt with P_B on every draw of E, record it
    in OUT/results.sqlite and write the files of the module doc into `out`.

    Args:
        spec: the validated spec, with a [resample] section.
        out: the run directory; re-running with the same one resumes.
        data_dir, device: as for a sweep.
        progress: called with ProgressEvents: an optimizer's networks, then
            '<posterior> volumes'.
        networks: overrides spec.sampling.networks.
        workers: chunks of networks trained at once, in spawned processes (sample_functions).

    Returns:
        The ResampledResult with its files.

    Raises:
        SpecError: a spec without [resample], or `networks` out of bounds.
    """
    from flatvol.errors import SpecError
    from flatvol.experiments.build import load_run_task
    from flatvol.io import atomic_write_text, dumps_json

    spec = resolve_spec(spec, networks)
    if spec.resample is None:
        raise SpecError(f"{spec.name}: the spec has no [resample] section; run it with "
                        "flatvol.sgd_vs_bayes.run.run_sgd_vs_bayes")
    out_dir = Path(out)
    task = load_run_task(spec, 0, data_dir)
    spec_json = dumps_json(spec.model_dump(mode="json"), indent=2)
    with Store(out_dir) as store:
        atomic_write_text(out_dir / "spec.json", spec_json + "\n")
        store.add_spec(spec.spec_hash(), spec.name, spec_json)
        samples = {o.key: sample_functions(spec, task, o, store, device, progress, workers)
                   for o in spec.optimizers}
        result = resampled_comparison(spec, task, samples, store, device, progress)
        # P_B's compute time over every call, as for the volumes of a single-E experiment (a
        # resumed call adds what it computed; the training times are recorded per chunk)
        before = (fs.read_experiment_info(store, spec.spec_hash()) or {}).get("seconds", {})
        seconds = {**{f"train_{k}": round(s.seconds, 2) for k, s in samples.items()},
                   **{f"posterior_{k}": round(before.get(f"posterior_{k}", 0.0) + v, 2)
                      for k, v in result.seconds.items()}}
        result = ResampledResult(spec, result.rows, result.functions, result.spread, seconds)
        # what `flatvol report` shows (flatvol.sgd_vs_bayes.report): the per-draw rows and
        # their spread; the networks and P_B values stay in their own tables
        fs.record_experiment(store, spec.spec_hash(), {
            "kind": fs.RESAMPLED, "name": spec.name, "task": spec.data.task,
            "classes": task.classes, "train_size": task.train_size, "pool": task.test_size,
            "model": spec.model.arch, "resample": spec.resample.model_dump(mode="json"),
            "analysis": spec.analysis.model_dump(), "rows": result.rows,
            "spread": result.spread, "seconds": seconds})
    return write_resampled(result, out_dir)
