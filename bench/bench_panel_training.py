"""A shipped panel's ensemble training alone, for two code trees side by side (issue #29).

Trains every network of the spec's panel (all seeds and attack sizes of its first optimizer) as
the staged sweep trains them, one `train_ensemble` call, in a fresh process per tree (A B A B
...), and reports the training's wall time, its achieved matmul rate (the FCN engine's count of
training and evaluation FLOPs) and the reference op measured just before it in this process:
one one-thread float32 3072 x 3072 `torch.mm` (best of 3), with each time also as a multiple
of it.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_panel_training.py --a /tmp/old/src --b src \\
        [--spec fig3_mnist_fcn] [--rounds 2] [--threads 1] [--max-epochs N] \\
        [--group-size N] [--data-dir ../shared/data]

`--profile N` prints each training's N costliest functions (cProfile, which slows it).
`--max-epochs` cuts the protocol (for a quick per-epoch comparison of a large panel, e.g. two
epochs of the CIFAR panel's 55 members); `--group-size` is passed to tree B only (A keeps its
default). A tree is a directory to put first on PYTHONPATH (a checkout's `src`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench_panel_wall import reference_op_seconds  # bench/ is on sys.path as a script

ONE_TRAINING = """
import dataclasses, json, sys, time
import torch
from flatvol.experiments.build import load_run_task, spec_prior, train_config
from flatvol.experiments.plan import plan_runs
from flatvol.experiments.spec import load_spec
from flatvol.experiments.spec_files import resolve_spec_path
from flatvol.train.ensemble import train_ensemble

spec_name, data_dir, threads, max_epochs, group_size, profile = sys.argv[1:7]
spec = load_spec(resolve_spec_path(spec_name))
runs = [r for r in plan_runs(spec) if r.optimizer.key == spec.optimizers[0].key]
task = load_run_task(spec, max(r.attack_size for r in runs), data_dir)
config = train_config(spec, runs[0].optimizer, runs[0].seed)
if int(max_epochs):
    config = dataclasses.replace(config, max_epochs=int(max_epochs))
torch.set_num_threads(int(threads))
kwargs = {"group_size": int(group_size)} if int(group_size) else {}
profiler = None
if int(profile):
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()
start = time.perf_counter()
result = train_ensemble(spec.model.arch, task, config, [r.seed for r in runs], spec_prior(spec),
                        "cpu", keep_history=spec.train.history,
                        attack_sizes=[r.attack_size for r in runs], **kwargs)
wall = time.perf_counter() - start
if profiler is not None:
    import pstats
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(int(profile))
fitted = sum(status == "fitted" for status in result.status)
print(json.dumps({"wall": wall, "flops": result.flops,
                  "epochs": int(result.epochs.sum()), "fitted": fitted}))
"""


def train_once(tree: str, args: argparse.Namespace, group_size: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
    done = subprocess.run([sys.executable, "-c", ONE_TRAINING, args.spec, args.data_dir,
                           str(args.threads), str(args.max_epochs), str(group_size),
                           str(args.profile)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{tree}: {done.stderr.strip()[-2000:]}")
    if args.profile:
        print(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--spec", default="fig3_mnist_fcn")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-epochs", type=int, default=0)
    parser.add_argument("--group-size", type=int, default=0)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--profile", type=int, default=0,
                        help="print the training's N most time-consuming functions (cProfile; "
                        "its overhead inflates the times)")
    args = parser.parse_args()
    rows: dict[str, list[dict]] = {"A": [], "B": []}
    print(f"spec {args.spec}, {args.threads} thread(s), max epochs {args.max_epochs or 'spec'}, "
          f"B group size {args.group_size or 'default'}; load average {os.getloadavg()[0]:.2f}")
    for round_ in range(args.rounds):
        for name, tree, group in (("A", args.a, 0), ("B", args.b, args.group_size)):
            ref = reference_op_seconds()
            row = {**train_once(tree, args, group), "ref": ref}
            rows[name].append(row)
            print(f"round {round_ + 1} {name}: {row['wall']:6.1f} s, "
                  f"{row['flops'] / row['wall'] / 1e9:5.1f} GFLOP/s "
                  f"({row['flops'] / row['wall'] / (2 * 3072**3 / row['ref']):.0%} of the "
                  f"one-thread mm), reference op {row['ref']:.3f} s; {row['fitted']} fitted, "
                  f"{row['epochs']} member-epochs", flush=True)
    for name, runs in rows.items():
        wall = statistics.median(r["wall"] for r in runs)
        in_ref = statistics.median(r["wall"] / r["ref"] for r in runs)
        print(f"{name}: median {wall:.1f} s = {in_ref:.0f} reference ops")


if __name__ == "__main__":
    main()
