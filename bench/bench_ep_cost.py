"""What one `ep-orthant` volume costs, in Choleskys of the same kernel: cold and warm-started.

Kernels: the analytic NNGP kernel of an FCN with two hidden layers (sigma_w2=2, sigma_b2=1) on
- n = 1500: MNIST 0-4v5-9, |S| = 500, |E| = 1000 (full MNIST from --data-dir);
- n = 7000: CIFAR-10 car vs cat, |S| = 5000, |E| = 2000 (the shared car/cat npz).
Labels imitate a trained network: the true labels on S (it fits S) and on E with a fraction
(--test-error, default 10%) flipped. The warm start is the result for a second network's labels,
which differ from these on a few % (--differ, default 3%) of the E points: the sweep's situation,
where every run shares S's labels and E's labels differ in a fraction of the points.

Per repetition, alternating (A B C D A B C D ...): A = old cold `log_volume(f,
mode='parallel')` (main's algorithm), B = new cold `log_volume(f)` (block-sequential EP, the
default for ep-orthant), C = new warm `log_volume(f, warm_start=result_for_neighbour,
mode='blocks')`, D = one scipy.linalg.cholesky of the kernel. Medians; EP times also as
multiples of the median Cholesky measured in the same run. One thread (BLAS env vars set
before numpy loads, torch too).
At n = 7000 (one repetition) the old algorithm is skipped (about 25 Choleskys of several
seconds each on a shared machine) and the new cold sample is the neighbour's run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ep_cost.py --data-dir ../shared/data \
        --reps 3 --big-reps 1 --write-results
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads BLAS

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.linalg  # noqa: E402
import torch  # noqa: E402

from _results import write_section  # noqa: E402  (bench/ is on sys.path as a script)
from flatvol.volume import VolumeEstimator, arccos_kernel  # noqa: E402

SECTION = "## Volume: ep-orthant cost in Choleskys"
# The default mode runs step EP from zero sites (cheaper); the warm measurement asks for blocks.
WARM_MODE = "blocks"


@dataclass(frozen=True)
class Case:
    name: str
    task: str
    train_size: int
    test_size: int
    reps: int


@dataclass(frozen=True)
class Row:
    case: Case
    n: int
    cholesky_s: float
    old_s: float | None
    cold_s: float
    warm_s: float
    old_value: float | None
    old_iterations: int | None
    cold_value: float
    warm_value: float
    cold_iterations: int
    warm_iterations: int
    converged: bool
    flipped_for_warm: int
    times: dict[str, list[float]]


def network_like_labels(y_true: np.ndarray, n_train: int, error: float, seed: int) -> np.ndarray:
    """True labels on S; on E each label flipped with probability `error` (seeded)."""
    rng = np.random.default_rng(seed)
    f = y_true.copy()
    flip = rng.random(f.size) < error
    flip[:n_train] = False
    f[flip] = 1.0 - f[flip]
    return f


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def run_case(case: Case, data_dir: str, error: float, differ: float) -> Row:
    from flatvol.data import load_task

    task = load_task(case.task, case.train_size, 0, case.test_size, data_dir=data_dir)
    K = arccos_kernel(task.x_SE(), n_hidden=2, sigma_w2=2.0, sigma_b2=1.0)
    y_true = task.y_SE().numpy().astype(np.float64)
    f = network_like_labels(y_true, case.train_size, error, seed=1)
    neighbour = network_like_labels(f, case.train_size, differ, seed=2)
    est = VolumeEstimator(K)
    times: dict[str, list[float]] = {"old": [], "cold": [], "warm": [], "cholesky": []}
    t, previous = timed(est.log_volume, neighbour, "ep-orthant")
    cold = warm = old = None
    if case.reps == 1:  # short protocol (n = 7000): the neighbour's cold run is the cold sample
        times["cold"].append(t)
        t, warm = timed(est.log_volume, f, "ep-orthant", warm_start=previous, mode=WARM_MODE)
        times["warm"].append(t)
        t, _ = timed(scipy.linalg.cholesky, K, lower=True, check_finite=False)
        times["cholesky"].append(t)
        cold = previous
    for _ in range(case.reps if case.reps > 1 else 0):
        t, old = timed(est.log_volume, f, "ep-orthant", mode="parallel")
        times["old"].append(t)
        t, cold = timed(est.log_volume, f, "ep-orthant")
        times["cold"].append(t)
        t, warm = timed(est.log_volume, f, "ep-orthant", warm_start=previous,
                        mode=WARM_MODE)
        times["warm"].append(t)
        t, _ = timed(scipy.linalg.cholesky, K, lower=True, check_finite=False)
        times["cholesky"].append(t)
        print(case.name, {k: round(v[-1], 3) for k, v in times.items() if v}, flush=True)
    assert cold is not None and warm is not None
    return Row(case, est.n, statistics.median(times["cholesky"]),
               statistics.median(times["old"]) if old else None,
               statistics.median(times["cold"]), statistics.median(times["warm"]),
               old.log_marginal_likelihood_nats if old else None,
               old.iterations if old else None,
               cold.log_marginal_likelihood_nats, warm.log_marginal_likelihood_nats,
               cold.iterations, warm.iterations, cold.converged and warm.converged,
               int(np.sum(f != neighbour)), times)


def report(rows: list[Row], load: str, reps: int, big_reps: int) -> str:
    lines = [
        SECTION, "",
        "`ep-orthant` (step EP, tol 1e-3; old: parallel updates with damping 0.7 + Anderson "
        "mixing, 1 Cholesky + 1 triangular inverse per iteration; new: block-sequential updates "
        "of one running posterior covariance, flatvol.volume.ep_blocks) on the FCN "
        "784-40-40-1 / 3072-40-40-1 NNGP kernel (sigma_w2=2, sigma_b2=1) of S u E; labels: true "
        "on S, 10% flipped on E (a network-like function). Warm: started from the sites of a "
        "label vector that differs on 3% of E. One thread, alternating old cold / new cold / "
        "new warm (mode 'blocks') / Cholesky, "
        "medians; each EP time also as a multiple of one scipy.linalg.cholesky of the same "
        "kernel, measured in the same run.", "",
        "| n | data | one Cholesky (s) | old cold (s) | old x Chol | old iters | new cold (s) "
        "| new cold x Chol | new sweeps | new warm (s) "
        "| new warm x Chol | warm sweeps | reps | log V new cold (nats) | new vs old, warm vs "
        "cold (rel.) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rel = (f"{abs(r.warm_value - r.cold_value) / abs(r.cold_value):.1e}"
               if r.case.reps > 1 else "n/a (1 rep)")
        if r.old_value is not None:
            rel = f"{abs(r.cold_value - r.old_value) / abs(r.old_value):.1e}, {rel}"
        old = ("| - | - | - " if r.old_s is None else
               f"| {r.old_s:.2f} | {r.old_s / r.cholesky_s:.1f} | {r.old_iterations} ")
        lines.append(
            f"| {r.n} | {r.case.name} | {r.cholesky_s:.3f} {old}| {r.cold_s:.2f} | "
            f"{r.cold_s / r.cholesky_s:.1f} | {r.cold_iterations} | {r.warm_s:.2f} | "
            f"{r.warm_s / r.cholesky_s:.1f} | {r.warm_iterations} | {r.case.reps} | "
            f"{r.cold_value:.6f} | {rel} |")
    lines += [
        "",
        "- With 1 repetition (n = 7000) the cold sample is the neighbour's cold run (the warm "
        "start's source, labels differing on 3% of E) and there is no cold run of the same "
        "labels to compare values with; the value check is at n = 1500 and in "
        "tests/volume/test_ep_warm_start.py.",
        "- Target (issue #11): cold <= 8 and warm <= 3 Choleskys at the same value to 1e-6 "
        "relative: " + "; ".join(
            f"n = {r.n}: cold {r.cold_s / r.cholesky_s:.1f} "
            f"({'pass' if r.cold_s / r.cholesky_s <= 8 else 'FAIL'}), warm "
            f"{r.warm_s / r.cholesky_s:.1f} ({'pass' if r.warm_s / r.cholesky_s <= 3 else 'FAIL'})"
            for r in rows) + ".",
        f"- Converged in every run: {all(r.converged for r in rows)}. Labels differing for the "
        "warm start: " + ", ".join(f"{r.flipped_for_warm} at n = {r.n}" for r in rows) + ".",
        "- Old: each parallel iteration costs one Cholesky and one triangular inverse of "
        "I + S^1/2 K S^1/2 in float64 (about 1.75 Choleskys with the mat-vecs). New: a full "
        "sweep is n^3 flops of symmetric rank-64 updates (about 3 Choleskys); after two full "
        "sweeps only the sites that still move are updated. A warm start spends its first "
        "sweep building the posterior of the given sites, so on these kernels, where flipping "
        "a few % of E moves every site (the common mode of a kernel with correlations ~0.97), "
        "it saves little or nothing.",
        f"- Peak RSS of the run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f}"
        " GiB (kernel, its factor, one n x n EP buffer and the float64 temporaries).",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, {load}; numpy "
        f"{np.__version__}, scipy {scipy.__version__}, torch {torch.__version__}. All times (s): "
        + "; ".join(f"n={r.n} " + ", ".join(f"{k} {[round(t, 3) for t in v]}"
                                           for k, v in r.times.items()) for r in rows) + ".",
        "",
        "Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_ep_cost.py --data-dir "
        f"../shared/data --reps {reps} --big-reps {big_reps} --write-results`",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--reps", type=int, default=3, help="repetitions at n = 1500")
    parser.add_argument("--big-reps", type=int, default=1, help="at n = 7000; 0 skips it")
    parser.add_argument("--test-error", type=float, default=0.10)
    parser.add_argument("--differ", type=float, default=0.03)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data_dir)
    cases = [Case("MNIST 0-4v5-9, 500+1000", "mnist", 500, 1000, args.reps)]
    if args.big_reps:
        cases.append(Case("CIFAR-10 car/cat, 5000+2000", "cifar10", 5000, 2000, args.big_reps))
    rows = [run_case(c, str(data / "mnist" if c.task == "mnist" else data), args.test_error,
                     args.differ) for c in cases]
    load = f"load average {os.getloadavg()[0]:.1f} at the end (shared with other jobs)"
    text = report(rows, load, args.reps, args.big_reps)
    print(text)
    if args.write_results:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
