"""Adam's subnormal second moments: the cost of one ensemble Adam step with and without
flush_subnormal_, on the Fig. 4(c,f) networks' shapes (CIFAR FCN 3072-40-40-1, 14 members: what
the Adam ensemble still trained at epoch 486 of the fig4_cifar_fcn sweep, where py-spy found
68% of its time in the sqrt of exp_avg_sq).

A: the state as Adam leaves it, with a fraction of exp_avg_sq subnormal (weights whose gradient
vanished decay by beta2 a step into that range); B: the same state after flush_subnormal_ (which
the trainers now run once an epoch). One torch thread; A and B alternate, medians over rounds;
each time also as a multiple of one 1500x1500 Cholesky (scipy) timed in the same rounds.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_subnormal.py [--rounds 7] [--fraction 0.25]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy.linalg
import torch

from flatvol.train.optimizers import OptimizerSettings
from flatvol.train.stacked import StackedOptimizer

MEMBERS = 14
SHAPES = {"hidden.0.weight": (40, 3072), "hidden.0.bias": (40,), "hidden.1.weight": (40, 40),
          "hidden.1.bias": (40,), "readout.weight": (1, 40), "readout.bias": (1,)}
STEPS = 50  # Adam steps per timing


def _state(fraction: float, flush: bool) -> tuple[dict, StackedOptimizer]:
    gen = torch.Generator().manual_seed(0)
    params = {k: torch.randn((MEMBERS, *s), generator=gen) * 0.05 for k, s in SHAPES.items()}
    opt = StackedOptimizer("adam", OptimizerSettings(lr=1e-3), params)
    for k, v in opt.state["exp_avg_sq"].items():
        v.copy_(torch.rand(v.shape, generator=gen) * 1e-6)
        vanished = torch.rand(v.shape, generator=gen) < fraction
        v[vanished] = 1e-40  # subnormal: sqrt on the slow path
        opt.state["exp_avg"][k].copy_(torch.randn(v.shape, generator=gen) * 1e-4)
    if flush:
        opt.flush_subnormal()
    return params, opt


def _adam_steps(fraction: float, flush: bool) -> float:
    params, opt = _state(fraction, flush)
    grads = {k: torch.zeros_like(v) for k, v in params.items()}  # vanished: v keeps decaying
    start = time.perf_counter()
    for step in range(1000, 1000 + STEPS):
        opt.step(params, grads, slice(0, MEMBERS), step)
    return (time.perf_counter() - start) / STEPS


def _cholesky() -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1500, 1500))
    k = a @ a.T / 1500 + np.eye(1500)
    start = time.perf_counter()
    scipy.linalg.cholesky(k, lower=True, check_finite=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--fraction", type=float, default=0.25,
                        help="fraction of exp_avg_sq entries that are subnormal")
    args = parser.parse_args()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {"A (subnormal)": [], "B (flushed)": [], "cholesky": []}
    for _ in range(args.rounds):
        times["A (subnormal)"].append(_adam_steps(args.fraction, flush=False))
        times["B (flushed)"].append(_adam_steps(args.fraction, flush=True))
        times["cholesky"].append(_cholesky())
    chol = statistics.median(times["cholesky"])
    print(f"one Adam step of {MEMBERS} CIFAR FCN members, {args.fraction:.0%} of exp_avg_sq "
          f"subnormal; medians of {args.rounds} rounds, one thread")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:14s} {med * 1e3:8.2f} ms  ({med / chol:6.3f} x one 1500^2 Cholesky)")
    a, b = (statistics.median(times[k]) for k in ("A (subnormal)", "B (flushed)"))
    print(f"  A / B = {a / b:.1f}")


if __name__ == "__main__":
    main()
