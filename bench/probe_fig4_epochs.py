"""Epoch cost of a Fig. 4(c,f) ensemble: the 18 networks of one optimizer of `fig4_cifar_fcn`
(seeds 0-2 x attack sizes 0..5000 step 1000, CIFAR-10 car vs cat, |S| = 5000, FCN 3072-40-40-1,
batch 32, no per-epoch history) trained together for a few epochs, as the staged sweep trains
them. Prints each epoch's wall time and, at the end, every member's accuracy on S: to size the
sweep's budget before committing hours of the machine to it.

    OMP_NUM_THREADS=1 .venv/bin/python bench/probe_fig4_epochs.py --optimizer adam --threads 1 \
        --epochs 12 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from flatvol.data import load_task
from flatvol.train import TrainConfig
from flatvol.train.ensemble import EnsembleEpochInfo, train_ensemble

LR = {"sgd": 0.01, "adam": 1e-3, "amsgrad": 1e-3}  # the spec's learning rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=sorted(LR), default="adam")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--data-dir", default="../shared/data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    attack_sizes = list(range(0, 5001, 1000))
    task = load_task("cifar10", 5000, max(attack_sizes), 2000, 0, args.data_dir, classes="1v3")
    members = [(seed, attack) for seed in range(3) for attack in attack_sizes]
    config = TrainConfig(optimizer=args.optimizer, lr=LR[args.optimizer], batch_size=32,
                         max_epochs=args.epochs, fit="S")
    times: list[float] = []
    last = time.perf_counter()

    def each_epoch(info: EnsembleEpochInfo) -> None:
        nonlocal last
        now = time.perf_counter()
        times.append(now - last)
        last = now
        print(f"epoch {info.epoch}: {times[-1]:.2f} s, {info.active} active, "
              f"{info.fitted} fitted", flush=True)

    result = train_ensemble("fcn:40,40", task, config, [s for s, _ in members],
                            attack_sizes=[a for _, a in members], keep_history=False,
                            callback=each_epoch)
    print(f"{args.optimizer}, {args.threads} thread(s): median epoch "
          f"{statistics.median(times):.2f} s over {len(times)} epochs")
    for (seed, attack), acc in zip(members, result.train_acc_S, strict=True):
        print(f"  seed {seed} attack {attack}: accuracy on S {float(acc):.3f}")


if __name__ == "__main__":
    main()
