"""sgd-vs-bayes training in one process vs `--workers 2`: the same chunks, side by side.

    env -u OMP_NUM_THREADS python bench/bench_sgd_vs_bayes_workers.py sgd_vs_bayes_large \
        --train-size 2000 --networks 64 --chunk 16 --reps 3 --data-dir ../shared/data

Alternating per repetition: A = the chunks trained one after another in this process on one
thread (what `--workers 1 --threads 1` does), B = two worker processes of one thread each
(`--workers 2`, the default on 2 cores; its time includes starting the processes), each into a
throwaway store through the runner's own `sample_functions`; then the reference operation, a
one-thread float32 3072 x 3072 `torch.mm`. Medians, and each as a multiple of the reference.
B's networks are checked to equal A's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch

from flatvol.experiments.build import load_run_task
from flatvol.experiments.execute import torch_threads
from flatvol.experiments.store import Store
from flatvol.sgd_vs_bayes.run import sample_functions
from sgd_vs_bayes_cost import spec_at  # bench/ is the script's directory


def reference_mm() -> float:
    a, b = torch.randn(3072, 3072), torch.randn(3072, 3072)
    with torch_threads(1):
        torch.mm(a, b)  # warm-up
        start = time.perf_counter()
        torch.mm(a, b)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--networks", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    spec = spec_at(args.spec, args.train_size, args.networks, args.chunk)
    task = load_run_task(spec, 0, args.data_dir)
    times: dict[str, list[float]] = {"A": [], "B": [], "mm": []}
    labels = {}
    for rep in range(args.reps):
        for side, (workers, threads) in (("A", (1, 1)), ("B", (2, 2))):
            with tempfile.TemporaryDirectory() as out, Store(out) as store, \
                    torch_threads(threads):
                start = time.perf_counter()
                sample = sample_functions(spec, task, spec.optimizers[0], store,
                                          workers=workers)
                times[side].append(time.perf_counter() - start)
            labels.setdefault(side, sample.labels_E)
            print(f"rep {rep} {side}: {times[side][-1]:.1f} s", flush=True)
        times["mm"].append(reference_mm())
    assert np.array_equal(labels["A"], labels["B"]), "the workers trained other networks"
    mm = statistics.median(times["mm"])
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    print(f"|S| = {args.train_size}, {args.networks} networks in chunks of {args.chunk}: "
          f"A (one process) {a:.1f} s = {a / mm:.0f} mm, B (2 workers) {b:.1f} s = "
          f"{b / mm:.0f} mm; A/B {a / b:.2f}x; one-thread 3072^2 float32 mm {mm * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
