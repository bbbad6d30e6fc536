"""Epoch cost of a Fig. 4(c,f) ensemble: the networks of one optimizer of the shipped
`fig4_cifar_fcn` spec (its data, model, seeds, attack sizes and training settings; 18 networks)
trained together for a few epochs without per-epoch history, as the staged sweep trains them.
Prints each epoch's wall time and, at the end, every member's accuracy on S: to size the
sweep's budget before committing hours of the machine to it.

    OMP_NUM_THREADS=1 .venv/bin/python bench/probe_fig4_epochs.py --optimizer adam --threads 1 \
        --epochs 12 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from flatvol.experiments.build import load_run_task, spec_prior, train_config
from flatvol.experiments.spec import load_spec
from flatvol.train.ensemble import EnsembleEpochInfo, train_ensemble

SPEC = "specs/fig4_cifar_fcn.toml"  # data, model, optimizers, seeds and attack sizes come from it


def main() -> None:
    spec = load_spec(SPEC)
    optimizers = {opt.label or opt.name: opt for opt in spec.optimizers}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=sorted(optimizers), default="adam")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--data-dir", default="../shared/data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    attack_sizes = spec.sweep.attack_values()
    task = load_run_task(spec, max(attack_sizes), args.data_dir)
    members = [(seed, attack) for seed in spec.sweep.seed_values() for attack in attack_sizes]
    config = replace(train_config(spec, optimizers[args.optimizer], 0), max_epochs=args.epochs)
    times: list[float] = []
    last = time.perf_counter()

    def each_epoch(info: EnsembleEpochInfo) -> None:
        nonlocal last
        now = time.perf_counter()
        times.append(now - last)
        last = now
        print(f"epoch {info.epoch}: {times[-1]:.2f} s, {info.active} active, "
              f"{info.fitted} fitted", flush=True)

    result = train_ensemble(spec.model.arch, task, config, [s for s, _ in members],
                            spec_prior(spec), attack_sizes=[a for _, a in members],
                            keep_history=False, callback=each_epoch)
    print(f"{args.optimizer}, {args.threads} thread(s): median epoch "
          f"{statistics.median(times):.2f} s over {len(times)} epochs")
    for (seed, attack), acc in zip(members, result.train_acc_S, strict=True):
        print(f"  seed {seed} attack {attack}: accuracy on S {float(acc):.3f}")


if __name__ == "__main__":
    main()
