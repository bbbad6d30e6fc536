"""Ensemble trainer vs a one-at-a-time loop of train_to_fit: networks fitted per minute.

The paper's setting: FCN 784-40-40-1 on MNIST 0-4 vs 5-9, |S| = 500 (embedded subset), SGD
lr 0.01, batch 32, trained until S is 100% fit. Each round trains `--ensemble` networks
(seeds r*K .. r*K+K-1) with train_ensemble (B) and the first `--single` of those seeds one at
a time with train_to_fit (A), alternating A B A B; the A networks are checked to be the same as
their B counterparts (same fitted epoch). Reported per thread count: median networks/minute of
each side, their ratio, the ratio per trained epoch (seed-independent), and the ensemble's
achieved matmul FLOP rate against this machine's float32 torch.mm peak measured in the same run.
Rates are given per wall-clock minute and per CPU minute (this process's time.process_time
divided by the thread count: steadier on a shared machine at 1 thread, flattering at 2 when a
thread idles). The one-at-a-time loop gains nothing from a second thread, so the last lines
also compare each ensemble rate with the best loop rate at any thread count.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ensemble.py [--rounds 3] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

from flatvol.data import load_task
from flatvol.models import build_model
from flatvol.train import TrainConfig, train_to_fit
from flatvol.train.ensemble import train_ensemble


def matmul_peak(size: int = 3072, reps: int = 5) -> float:
    """Best float32 GFLOP/s of a square torch.mm (the machine's practical peak), per wall and
    per CPU second, whichever is higher (contention only ever lowers either)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        wall, cpu = time.perf_counter() - t, (time.process_time() - c) / torch.get_num_threads()
        best = max(best, 2 * size**3 / min(wall, max(cpu, 1e-9)) / 1e9)
    return best


class Clock:
    """Wall-clock and process CPU seconds of a block."""

    def __enter__(self) -> Clock:
        self.t, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t
        self.cpu = time.process_time() - self.c


def dense_flops_single(epochs: int, n_train: int, n_S: int, n_E: int, dims: list[int]) -> float:
    """Matmul FLOPs train_to_fit performs: per epoch forward+backward on S, then a forward on S;
    finally forward on S and E."""
    fwd = sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))
    bwd = fwd + sum(2 * a * b for a, b in zip(dims[1:-1], dims[2:]))
    return epochs * (n_train * (fwd + bwd) + n_S * fwd) + (n_S + n_E) * fwd


def run(threads: int, rounds: int, k: int, m: int, group_size: int | None) -> dict:
    torch.set_num_threads(threads)
    task = load_task("mnist", 500, 0, 1000)
    config = TrainConfig()  # SGD lr 0.01, batch 32, fit S
    dims = [784, 40, 40, 1]
    peak = matmul_peak()
    rates: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        rates.setdefault(name, []).append(value)

    for r in range(rounds):
        seeds = list(range(r * k, (r + 1) * k))
        with Clock() as a:  # A: one at a time
            single_epochs = []
            for s in seeds[:m]:
                model = build_model("fcn:40,40", task.input_shape, seed=s)
                single_epochs.append(train_to_fit(model, task, config, seed=s).epochs)
        with Clock() as b:  # B: together
            ens = train_ensemble("fcn:40,40", task, config, seeds, keep_history=False,
                                 group_size=group_size)
        assert ens.epochs[:m].tolist() == single_epochs, "ensemble members differ from A"
        assert all(s == "fitted" for s in ens.status)
        single_flops = sum(dense_flops_single(e, 500, 500, 1000, dims) for e in single_epochs)
        for clock, name in ((lambda c: c.wall, "wall"), (lambda c: c.cpu / threads, "cpu")):
            record(f"A_{name}", 60 * m / clock(a))
            record(f"B_{name}", 60 * k / clock(b))
            record(f"A_epochs_{name}", sum(single_epochs) / clock(a))
            record(f"B_epochs_{name}", float(ens.epochs.sum()) / clock(b))
            record(f"A_gflops_{name}", single_flops / clock(a) / 1e9)
            record(f"B_gflops_{name}", ens.flops / clock(b) / 1e9)
        print(f"  threads={threads} round {r}: A {rates['A_wall'][-1]:.1f} nets/min "
              f"({m} nets, {a.wall:.1f}s wall, {a.cpu:.1f}s cpu), B {rates['B_wall'][-1]:.1f} "
              f"nets/min ({k} nets, {b.wall:.1f}s wall, {b.cpu:.1f}s cpu, median epochs "
              f"{np.median(ens.epochs):.0f}, max {ens.epochs.max()}), "
              f"B {rates['B_gflops_wall'][-1]:.1f} GFLOP/s", flush=True)
    med = {key: statistics.median(v) for key, v in rates.items()}
    out = {"threads": threads, "peak_gflops": peak}
    for name in ("wall", "cpu"):
        out[f"single_nets_per_min_{name}"] = med[f"A_{name}"]
        out[f"ensemble_nets_per_min_{name}"] = med[f"B_{name}"]
        out[f"speedup_{name}"] = med[f"B_{name}"] / med[f"A_{name}"]
        out[f"speedup_per_epoch_{name}"] = med[f"B_epochs_{name}"] / med[f"A_epochs_{name}"]
        out[f"ensemble_gflops_{name}"] = med[f"B_gflops_{name}"]
        out[f"single_gflops_{name}"] = med[f"A_gflops_{name}"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ensemble", type=int, default=256, help="networks per ensemble (K)")
    parser.add_argument("--single", type=int, default=4, help="networks per one-at-a-time block")
    parser.add_argument("--group-size", type=int, default=None,
                        help="members per block (default: the trainer's, by its cache budget)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    results = [run(t, args.rounds, args.ensemble, args.single, args.group_size)
               for t in args.threads]
    print("\n| threads | clock | one-at-a-time (nets/min) | ensemble (nets/min) | speedup | "
          "speedup per epoch | ensemble GFLOP/s (% of mm peak) | loop GFLOP/s (% of peak) | "
          "mm peak GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        peak = r["peak_gflops"]
        for name in ("wall", "cpu"):
            print(f"| {r['threads']} | {name} | {r[f'single_nets_per_min_{name}']:.1f} | "
                  f"{r[f'ensemble_nets_per_min_{name}']:.1f} | {r[f'speedup_{name}']:.1f}x | "
                  f"{r[f'speedup_per_epoch_{name}']:.1f}x | "
                  f"{r[f'ensemble_gflops_{name}']:.1f} "
                  f"({100 * r[f'ensemble_gflops_{name}'] / peak:.0f}%) | "
                  f"{r[f'single_gflops_{name}']:.1f} "
                  f"({100 * r[f'single_gflops_{name}'] / peak:.0f}%) | {peak:.1f} |")
    best = max(r["single_nets_per_min_wall"] for r in results)
    for r in results:
        print(f"threads={r['threads']}: ensemble {r['ensemble_nets_per_min_wall']:.1f} nets/min "
              f"= {r['ensemble_nets_per_min_wall'] / best:.1f}x the best one-at-a-time rate "
              f"({best:.1f} nets/min, wall clock)")


if __name__ == "__main__":
    main()
