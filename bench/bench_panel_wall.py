"""A shipped panel's `flatvol run`, end to end, for two code trees side by side (issue #29).

Runs the README's command for the panel (`flatvol run SPEC --out TMP --data-dir DATA --quiet`
plus any `--run-args`; `--b-run-args` for B's instead, to compare options on one tree) with the
code of tree A and of tree B in turn, A B A B ..., each in a fresh output directory, and
between runs times the reference operation of a float32 training workload: one one-thread
3072 x 3072 `torch.mm` (best of 3). Prints each wall time, the medians, and each median as a
multiple of the median reference op, so machines can be compared.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_panel_wall.py --a /tmp/old/src --b src \\
        [--spec fig3_mnist_fcn] [--rounds 3] [--data-dir ../shared/data] [--run-args "--threads 2"]

A tree is a directory to put first on PYTHONPATH (a checkout's `src`). The fitted count and
the Kendall tau of log10 V(f) and of -log10 sharpness with test accuracy are printed per run
(scripts/panel_summary.py's numbers), so a faster tree that changed the science shows it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SUMMARY = """
import sys
from flatvol.analysis.correlations import correlation_table
from flatvol.experiments import runs_frame
runs = runs_frame(sys.argv[1])
fitted = runs[runs.train_status == 'fitted']
table = correlation_table(runs, measures=['log10_volume', 'log10_sharpness'], n_resamples=200)
taus = ' '.join(f"tau({r.label}) {r.kendall:.3f}" for _, r in table.iterrows())
print(f"{len(fitted)}/{len(runs)} fitted; {taus}")
"""


def reference_op_seconds() -> float:
    """One one-thread float32 3072 x 3072 torch.mm, best of 3 (after a warm-up)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(3072, 3072), torch.randn(3072, 3072)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        return best
    finally:
        torch.set_num_threads(threads)


def run_panel(tree: str, spec: str, data_dir: str, extra: list[str]) -> tuple[float, str]:
    """Wall seconds of one `flatvol run` with `tree` first on PYTHONPATH, and its summary."""
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
    with tempfile.TemporaryDirectory(prefix="panel-") as out:
        command = [sys.executable, "-m", "flatvol", "run", spec, "--out", out,
                   "--data-dir", data_dir, "--quiet", *extra]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{tree}: flatvol run failed: {done.stderr.strip()[-2000:]}")
        wall = time.perf_counter() - start
        summary = subprocess.run([sys.executable, "-c", SUMMARY, out], env=env, check=True,
                                 capture_output=True, text=True).stdout.strip()
    return wall, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="tree A (a src directory)")
    parser.add_argument("--b", required=True, help="tree B (a src directory)")
    parser.add_argument("--spec", default="fig3_mnist_fcn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--run-args", default="", help="more `flatvol run` options")
    parser.add_argument("--b-run-args", default=None,
                        help="tree B's `flatvol run` options instead (to compare options)")
    args = parser.parse_args()
    extra = shlex.split(args.run_args)
    extra_b = extra if args.b_run_args is None else shlex.split(args.b_run_args)
    walls: dict[str, list[float]] = {"A": [], "B": []}
    refs: list[float] = []
    print(f"spec {args.spec}, flatvol run options A {extra or 'none'}, B {extra_b or 'none'}; "
          f"load average {os.getloadavg()[0]:.2f}")
    for round_ in range(args.rounds):
        for name, tree, options in (("A", args.a, extra), ("B", args.b, extra_b)):
            refs.append(reference_op_seconds())
            wall, summary = run_panel(tree, args.spec, args.data_dir, options)
            walls[name].append(wall)
            print(f"round {round_ + 1} {name}: {wall:6.1f} s (reference op {refs[-1]:.3f} s); "
                  f"{summary}", flush=True)
    ref = statistics.median(refs)
    print(f"reference op (one-thread float32 3072^2 torch.mm): median {ref:.3f} s")
    for name in walls:
        med = statistics.median(walls[name])
        print(f"{name}: median {med:.1f} s = {med / ref:.0f} reference ops "
              f"({', '.join(f'{w:.1f}' for w in walls[name])})")


if __name__ == "__main__":
    main()
