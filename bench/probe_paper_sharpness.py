"""How far the 'paper' Keskar maximizer (the authors' SGD ascent) has settled after k of its 100
epochs, on networks kept by `flatvol run --keep-networks` (or written by `flatvol train`).

For each run directory: keskar_sharpness(maximizer='paper') on S for `--epochs` epochs, and
log10 sharpness from the best loss found by the end of epochs 1, 2, 5, 10, 20, 50, 100
(KeskarSharpness.max_loss_by_epoch: a run of k epochs finds exactly that maximum, tested), with
the seconds the whole ascent took. One full-S loss after every minibatch step makes the
protocol cost ~16,000 forward passes of S per network (about 10 min on one core for the CIFAR
FCN, |S| = 5000): this says how many epochs a re-measurement of many networks needs.

    OMP_NUM_THREADS=1 .venv/bin/python bench/probe_paper_sharpness.py RUN_DIR [RUN_DIR ...] \\
        [--epochs 100] [--epsilon 1e-4] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from flatvol.flatness import keskar_sharpness
from flatvol.train.checkpoint import load_run

REPORTED_EPOCHS = (1, 2, 5, 10, 20, 50, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--epsilon", type=float, default=1e-4)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    shown = [k for k in REPORTED_EPOCHS if k <= args.epochs]
    print(f"'paper' maximizer, eps {args.epsilon:g}, {args.epochs} epochs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("| run | attack | seed | " + " | ".join(f"log10 s @{k}" for k in shown)
          + " | seconds |")
    print("|---|---|---|" + "---|" * len(shown) + "---|")
    for run_dir in args.run_dirs:
        run = load_run(run_dir, data_dir=args.data_dir)
        start = time.perf_counter()
        result = keskar_sharpness(run.model, run.task.S.x, run.task.S.y, maximizer="paper",
                                  epsilon=args.epsilon, epochs=args.epochs,
                                  seed=int(run.info["seed"]))
        seconds = time.perf_counter() - start
        by_epoch = [100 * (result.max_loss_by_epoch[k - 1] - result.loss) / (1 + result.loss)
                    for k in shown]
        cells = " | ".join(f"{math.log10(s):.4f}" if s > 0 else "-inf" for s in by_epoch)
        print(f"| {run_dir} | {run.info['attack_size']} | {run.info['seed']} | {cells} | "
              f"{seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
