"""The fig3_mnist_fcn panel end to end, planned by stage, against today's per-run path.

Staged (B): the whole panel (11 attack sizes x 5 seeds = 55 networks) with `train.ensemble =
true` and the default ('fast') Keskar maximizer: every network trains in one ensemble, then each
run is measured and recorded. Reported: wall time and the time of each stage (networks fitted,
volumes computed, sharpness done: from the sweep's start to the stage's last event).

Per-run (A): a subset in the same process, the 11 attack sizes x seed 0 (`--subset-seeds`),
trained one at a time with train_to_fit (`--workers` processes, 1 thread each) and measured with
the `paper` maximizer, as fig3_mnist_fcn ran before. Its numbers are checked against B's runs of
the same keys: test accuracy equal, log10 V(f) to 1e-6 relative, sharpness (fast) >= paper.

    FLATVOL_DATA=../shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sweep.py \\
        [--threads 2] [--workers 2] [--staged-workers 1|N|auto] [--seeds 5] [--subset-seeds 1]
        [--skip-per-run] [--history | --no-history]

With `--staged-workers` N > 1 (or auto), B trains in this process on `--threads` threads and
measures its runs in N worker processes of cores / N threads each (the default of `flatvol run`).

The machine may be shared: the load average is printed next to the times.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from flatvol.experiments import run_sweep, runs_frame, spec_from_dict
from flatvol.experiments.backends import BACKENDS, LocalBackend
from flatvol.experiments.spec_files import resolve_spec_path
from flatvol.experiments.store import store_path

KEYS = ["attack_size", "seed"]


class StageClock:
    """Times of each stage's events, from a start time."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.last: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def wrap(self, stages: Callable | None) -> Callable:
        def timed(stage: str, key: object) -> None:
            self.last[stage] = time.perf_counter() - self.start
            self.count[stage] = self.count.get(stage, 0) + 1
            if stages is not None:
                stages(stage, key)
        return timed


CLOCK = StageClock()


class TimedLocal(LocalBackend):
    """The local backend, timing the stage events it reports."""

    name = "timed-local"

    def run(self, todo, ctx, record, workers, progress, stages=None):  # noqa: ANN001
        super().run(todo, ctx, record, workers, progress, stages=CLOCK.wrap(stages))


def fig3_data(seeds: list[int], ensemble: bool, maximizer: str | None,
              history: bool | None = None) -> dict:
    """The shipped fig3_mnist_fcn spec with these seeds; ensemble (staged) or one network at a
    time (then without `history`, an ensemble setting); history None: the spec's."""
    data = tomllib.loads(resolve_spec_path("fig3_mnist_fcn").read_text(encoding="utf-8"))
    data["sweep"]["seeds"] = seeds
    data.setdefault("train", {})["ensemble"] = ensemble
    if not ensemble:
        data["train"].pop("history", None)
    elif history is not None:
        data["train"]["history"] = history
    if maximizer is not None:
        data["measures"]["sharpness"]["maximizer"] = maximizer
    return data


def run_infos(out: Path) -> list[dict]:
    """Every run's info (stage timings: info.ensemble, info.measures[name].seconds)."""
    with sqlite3.connect(store_path(out)) as conn:
        return [json.loads(t) for (t,) in conn.execute("SELECT info_json FROM runs")]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (staged)")
    parser.add_argument("--workers", type=int, default=2, help="processes (per-run path)")
    parser.add_argument("--staged-workers", default="1",
                        help="measuring processes of the staged sweep (1: in this process)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--subset-seeds", type=int, default=1)
    parser.add_argument("--skip-per-run", action="store_true")
    parser.add_argument("--history", action=argparse.BooleanOptionalAction, default=None,
                        help="staged: train.history (default: the spec's)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    data_dir = os.environ.get("FLATVOL_DATA")
    if not data_dir:
        raise SystemExit("set FLATVOL_DATA to the full MNIST (e.g. ../shared/data)")
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    BACKENDS["timed-local"] = TimedLocal

    staged = spec_from_dict(fig3_data(list(range(args.seeds)), True, None,
                                      history=args.history))
    print(f"staged: {staged.name}, {args.seeds} seeds, maximizer "
          f"{staged.measures.sharpness.maximizer}, threads {args.threads}, measuring workers "
          f"{args.staged_workers}; load {load()}")
    threads: int | None = args.threads
    if args.staged_workers != "1":  # the trainer on --threads, each worker on cores / N
        torch.set_num_threads(args.threads)
        threads = None
    CLOCK.start = time.perf_counter()
    summary = run_sweep(staged, out / "staged", backend="timed-local", data_dir=data_dir,
                        progress=False, threads=threads, workers=args.staged_workers)
    wall_b = time.perf_counter() - CLOCK.start
    print(f"  {summary.done} done, {summary.failed} failed, {wall_b:.1f} s wall; load {load()}")
    for stage, t in CLOCK.last.items():
        print(f"  stage {stage:<10} {CLOCK.count[stage]:>3} runs, last one at {t:7.1f} s")
    infos = run_infos(out / "staged")
    # each run's train_seconds: the ensemble's training time until that member stopped
    print(f"  training (one ensemble of {infos[0]['ensemble']['size']}): "
          f"{max(i['ensemble']['train_seconds'] for i in infos):.1f} s")
    for name in infos[0]["measures"]:
        total = sum(i["measures"][name]["seconds"] for i in infos)
        print(f"  measure {name:<10} {total:7.1f} s in all ({total / len(infos):.2f} s/run)")
    frame = runs_frame(out / "staged")
    tau_v = kendalltau(frame["test_acc_E"], frame["log10_volume"]).statistic
    tau_s = kendalltau(frame["test_acc_E"], -np.log10(frame["sharpness"])).statistic
    print(f"  Kendall tau with test accuracy: log10 V(f) {tau_v:.3f}, -log10 sharpness "
          f"{tau_s:.3f} ({len(frame)} runs)")
    if args.skip_per_run:
        return

    per_run = spec_from_dict(fig3_data(list(range(args.subset_seeds)), False, "paper"))
    start = time.perf_counter()
    summary_a = run_sweep(per_run, out / "per_run", data_dir=data_dir, progress=False,
                          workers=args.workers, threads=1)
    wall_a = time.perf_counter() - start
    n_a = summary_a.done + summary_a.failed
    print(f"per-run (paper maximizer, {args.workers} workers x 1 thread): {n_a} runs, "
          f"{wall_a:.1f} s wall ({wall_a / max(n_a, 1):.2f} s/run); load {load()}")
    print(f"staged: {wall_b / max(summary.done + summary.failed, 1):.2f} s/run")
    infos_a = run_infos(out / "per_run")
    print(f"  run time in all (training and measures): {sum(i['seconds'] for i in infos_a):.1f} s")
    for name in infos_a[0]["measures"]:
        total = sum(i["measures"][name]["seconds"] for i in infos_a)
        print(f"  measure {name:<10} {total:7.1f} s in all ({total / len(infos_a):.2f} s/run)")

    a = runs_frame(out / "per_run").sort_values(KEYS).set_index(KEYS)
    b = runs_frame(out / "staged").sort_values(KEYS).set_index(KEYS).loc[a.index]
    same_acc = bool((a["test_acc_E"].to_numpy() == b["test_acc_E"].to_numpy()).all())
    rel_v = np.abs(b["log10_volume"].to_numpy() / a["log10_volume"].to_numpy() - 1).max()
    ratio = b["sharpness"].to_numpy() / a["sharpness"].to_numpy()
    print(f"same keys ({len(a)} runs): test accuracy equal: {same_acc}; max relative "
          f"|dlog10 V| {rel_v:.1e}; sharpness fast/paper min {ratio.min():.4f} "
          f"median {np.median(ratio):.4f}")


if __name__ == "__main__":
    main()
