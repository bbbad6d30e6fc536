"""Keskar sharpness: the 'fast' maximizer vs the paper's protocol (and L-BFGS-B), side by side.

Network: the paper's FCN 784-40-40-1 (float32) trained with SGD (lr 0.01, batch 32, sigmoid
cross-entropy) until MNIST S (|S| = 500) is fit; eps = 1e-4, loss on S only.

- paper : projected SGD ascent, lr 1e-3, batch 32, 100 epochs, clip after every step, full-S
          loss after every step, max kept (1600 steps);
- fast  : full-batch projected sign-gradient ascent to box corners with backtracking,
          from 0 and 2 random corners (<= 33 full-batch gradients);
- lbfgsb: scipy L-BFGS-B, maxiter 10 (Keskar et al.), for reference.

Target: fast reaches at least the paper's value in <= 1/5 of its time. The sides alternate
(paper, fast, lbfgsb, paper, fast, ...), one thread, medians quoted.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_sharpness_fast_vs_paper.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _paper_fcn import trained_paper_fcn  # bench/ is on sys.path when run as a script
from flatvol.flatness import keskar_sharpness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None, help="MNIST dir (default: embedded subset)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, x, y = trained_paper_fcn(args.data_dir, args.seed)

    runs: dict[str, list] = {"paper": [], "fast": [], "lbfgsb": []}
    for r in range(args.repeats):
        for maximizer in runs:  # alternating: paper, fast, lbfgsb, paper, fast, ...
            start = time.perf_counter()
            result = keskar_sharpness(model, x, y, epsilon=1e-4, maximizer=maximizer, seed=r)
            runs[maximizer].append((result, time.perf_counter() - start))

    print(f"\nKeskar sharpness, eps 1e-4, |S| = {len(x)}: medians over {args.repeats} "
          "alternating repeats, 1 thread")
    print(f"{'maximizer':10s} {'sharpness':>12s} {'log10':>9s} {'max loss':>12s} "
          f"{'grads':>6s} {'loss evals':>10s} {'seconds':>9s}")
    med = {}
    for name, rows in runs.items():
        sharp = statistics.median(r.sharpness for r, _ in rows)
        seconds = statistics.median(t for _, t in rows)
        first = rows[0][0]
        med[name] = (sharp, seconds)
        print(f"{name:10s} {sharp:12.6g} {first.log10_sharpness:9.4f} {first.max_loss:12.6g} "
              f"{first.n_grad_evals:6d} {first.n_loss_evals:10d} {seconds:9.3f}")
    ratio = med["fast"][1] / med["paper"][1]
    ok = med["fast"][0] >= med["paper"][0] and ratio <= 0.2
    print(f"\nfast / paper: value {med['fast'][0] / med['paper'][0]:.4f}x, time {ratio:.4f}x "
          f"(paper {med['paper'][1] / med['fast'][1]:.0f}x slower); target value >= 1 and "
          f"time <= 0.2: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
