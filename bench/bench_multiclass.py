"""Multi-class volume, estimator core: accuracy against direct sampling, cost against the
expanded reference.

(a) Truth by direct sampling (flatvol.volume.multiclass.sample_labelling_counts): K iid GP
    outputs on n Gaussian inputs (arccos NNGP kernel, sigma_w2 = 2, sigma_b2 = 0.1), K = 3, 4,
    n = 6-10, 4 x 10^6 draws; the 10 most frequent labellings of each kernel. Errors in log10 of
    the expanded reference with `orthant-is` (z with both standard errors) and of step EP
    (structured; the same value as `ep-orthant` on the expanded system).
(b) Cost at K = 10 on the first n MNIST images (arccos depth 2, sigma_w2 = 2, sigma_b2 = 1),
    labellings: the argmax of one draw of the 10 prior outputs ('prior draw', a typical
    function) and uniform random classes ('random'). Seconds and multiples of one 1500 x 1500
    float64 Cholesky timed in the same run; structured EP and the expanded `ep-orthant` minus
    the EP fixed point (expanded, tol 1e-6); `orthant-is` on the expanded system.
(c) Direct sampling of the one frequent K = 10 labelling of (b) (n = 300): EP's own error.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_multiclass.py --write-results
    (3-5 minutes on one thread; --sizes 100 300 by default)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads BLAS

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

from _results import write_section  # noqa: E402  (bench/ is on sys.path as a script)
from flatvol.volume import arccos_kernel  # noqa: E402
from flatvol.volume.multiclass import (  # noqa: E402
    labelling_from_code,
    log10_volume_expanded,
    log10_volume_structured,
    sample_labelling_counts,
)

SECTION = "## Multi-class volume: estimator core"
COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python bench/bench_multiclass.py --write-results"
TRUTH_SETTINGS = ((3, 6, 2), (3, 10, 1), (4, 8, 1), (4, 10, 1))  # (K, n, arccos depth)
TRUTH_DRAWS = 4_000_000
TOP = 10
REFERENCE_TOL = 1e-6  # the expanded system's EP fixed point, for the cost table


def gaussian_kernel(n: int, depth: int) -> np.ndarray:
    x = np.random.default_rng(1).normal(size=(n, 4))
    return arccos_kernel(x, depth, 2.0, 0.1)


def truth_table() -> tuple[list[str], dict[str, float]]:
    lines = ["| K | n | depth | labelling | draws hit | log10 truth (se) | orthant-is - truth "
             "(z) | EP - truth |", "|---|---|---|---|---|---|---|---|"]
    zs, ep_errors = [], []
    for n_classes, n, depth in TRUTH_SETTINGS:
        K = gaussian_kernel(n, depth)
        counts = sample_labelling_counts(K, n_classes, TRUTH_DRAWS, seed=0)
        for code in np.argsort(counts)[::-1][:TOP]:
            f = labelling_from_code(int(code), n, n_classes)
            hits = int(counts[code])
            truth = math.log10(hits / TRUTH_DRAWS)
            truth_se = math.sqrt((1 - hits / TRUTH_DRAWS) / hits) / math.log(10)
            sampled = log10_volume_expanded(K, f, n_classes, "orthant-is", seed=0)
            z = (sampled.log10_volume - truth) / math.hypot(sampled.stderr_log10, truth_se)
            ep = log10_volume_structured(K, f, n_classes)
            zs.append(z)
            ep_errors.append(ep.log10_volume - truth)
            lines.append(
                f"| {n_classes} | {n} | {depth} | {''.join(map(str, f))} | {hits} | "
                f"{truth:.4f} ({truth_se:.4f}) | {sampled.log10_volume - truth:+.4f} ({z:+.2f})"
                f"{'' if sampled.converged else ' not converged'} | "
                f"{ep.log10_volume - truth:+.4f} |")
            print(lines[-1], flush=True)
    summary = {"max_abs_z": max(abs(z) for z in zs), "rms_z": float(np.sqrt(np.mean(
        np.square(zs)))), "ep_min": min(ep_errors), "ep_max": max(ep_errors),
        "count": len(zs)}
    return lines, summary


def cholesky_seconds(n: int = 1500, repeats: int = 3) -> float:
    A = np.random.default_rng(0).normal(size=(n, n))
    A = A @ A.T / n + np.eye(n)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scipy.linalg.cholesky(A, lower=True)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def mnist_kernel(n: int) -> np.ndarray:
    from flatvol.data import load_task

    task = load_task("mnist", n, 0, 0)
    return arccos_kernel(task.x_SE(), n_hidden=2, sigma_w2=2.0, sigma_b2=1.0)


def cost_table(sizes: list[int], n_classes: int = 10) -> list[str]:
    unit = cholesky_seconds()
    lines = [f"One 1500 x 1500 float64 Cholesky: {unit:.3f} s (median of 3, one thread).", "",
             "| n | labelling | structured EP log10 V | sweeps | s (Choleskys) | expanded "
             "ep-orthant s (Choleskys) | its - reference | structured - reference | "
             "orthant-is - reference (se) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        K = mnist_kernel(n)
        rng = np.random.default_rng(n)
        draw = rng.standard_normal((n_classes, n)) @ np.linalg.cholesky(K).T
        for name, f in (("prior draw", np.argmax(draw, axis=0)),
                        ("random", rng.integers(0, n_classes, n))):
            start = time.perf_counter()
            structured = log10_volume_structured(K, f, n_classes)
            t_structured = time.perf_counter() - start
            start = time.perf_counter()
            expanded = log10_volume_expanded(K, f, n_classes, "ep-orthant")
            t_expanded = time.perf_counter() - start
            reference = log10_volume_expanded(K, f, n_classes, "ep-orthant", tol=REFERENCE_TOL)
            sampled = log10_volume_expanded(K, f, n_classes, "orthant-is", seed=0)
            runs = (structured, expanded, reference)
            flag = "" if all(r.converged for r in runs) else " (an EP did not converge)"
            is_flag = "" if sampled.converged else ", not converged"
            lines.append(
                f"| {n} | {name} | {structured.log10_volume:.3f} | {structured.iterations} | "
                f"{t_structured:.2f} ({t_structured / unit:.0f}) | {t_expanded:.2f} "
                f"({t_expanded / unit:.0f}) | "
                f"{expanded.log10_volume - reference.log10_volume:+.1e} | "
                f"{structured.log10_volume - reference.log10_volume:+.1e}{flag} | "
                f"{sampled.log10_volume - reference.log10_volume:+.3f} "
                f"({sampled.stderr_log10:.3f}{is_flag}) |")
            print(lines[-1], flush=True)
    return lines


def direct_check(n: int = 300, n_classes: int = 10, draws: int = 200_000) -> list[str]:
    """Direct sampling of the n = 300 prior-draw labelling of the cost table, the one frequent
    enough to count (its K^n labellings are too many for sample_labelling_counts)."""
    K = mnist_kernel(n)
    rng = np.random.default_rng(n)
    L = np.linalg.cholesky(K)
    f = np.argmax(rng.standard_normal((n_classes, n)) @ L.T, axis=0)  # as in cost_table
    sampler = np.random.default_rng(123)
    hits = 0
    for _ in range(draws // 10_000):
        z = sampler.standard_normal((10_000, n_classes, n)) @ L.T
        hits += int(np.sum(np.all(np.argmax(z, axis=1) == f, axis=1)))
    truth = math.log10(hits / draws)
    truth_se = math.sqrt((1 - hits / draws) / hits) / math.log(10)
    reference = log10_volume_expanded(K, f, n_classes, "ep-orthant", tol=REFERENCE_TOL)
    sampled = log10_volume_expanded(K, f, n_classes, "orthant-is", seed=0)
    line = (f"n = {n}, K = {n_classes}, prior-draw labelling (classes used: "
            f"{np.count_nonzero(np.bincount(f, minlength=n_classes))}): direct sampling "
            f"{hits} of {draws:,} draws, log10 {truth:.3f} (se {truth_se:.3f}); orthant-is "
            f"{sampled.log10_volume:.3f} (se {sampled.stderr_log10:.3f}); EP fixed point "
            f"{reference.log10_volume:.3f} ({reference.log10_volume - truth:+.3f}).")
    print(line, flush=True)
    return [line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    truth_lines, summary = truth_table()
    cost_lines = cost_table(args.sizes)
    direct_lines = direct_check()
    text = "\n".join([
        SECTION, "",
        f"Command: `{COMMAND}` (bench/bench_multiclass.py; the tests are "
        "tests/volume/test_multiclass.py).", "",
        "**(a) Against direct sampling.** z_k ~ N(0, K) iid for K classes, "
        f"{TRUTH_DRAWS:,} draws, the {TOP} most frequent labellings of each kernel (arccos NNGP "
        "of n Gaussian inputs in 4 dimensions, sigma_w2 = 2, sigma_b2 = 0.1). orthant-is runs "
        "on the (K-1)n expanded difference system (4000 draws, seed 0); EP is the structured "
        "step EP (the expanded ep-orthant's value to 1e-6, tests).", "",
        *truth_lines, "",
        f"Over {summary['count']} labellings: orthant-is max |z| {summary['max_abs_z']:.2f}, "
        f"rms z {summary['rms_z']:.2f}; EP - truth from {summary['ep_min']:+.3f} to "
        f"{summary['ep_max']:+.3f} log10 (step EP is low, as for binary orthants).", "",
        "**(b) Cost, K = 10.** First n MNIST images, arccos depth 2 (sigma_w2 = 2, "
        "sigma_b2 = 1). Structured EP and the expanded `ep-orthant` at the default tol 1e-3; "
        f"reference: the expanded `ep-orthant` at tol {REFERENCE_TOL:g} (EP's fixed point); "
        "`orthant-is` on the expanded system (4000 draws): how far EP's fixed point is from "
        "the truth.", "",
        *cost_lines, "",
        "**(c) The K = 10 EP error, by direct sampling.**", "",
        *direct_lines, "",
        "Reading it (Dec 2026 run):", "",
        "- Structured EP reaches the expanded system's EP fixed point (to 1e-6 log10 here; "
        "tests: 1e-6 on K = 3, 4, 10) at O(K n^3) a sweep. Its cost is its sweep count times "
        "about 9K + 1 n^3-units; the random labellings converge in 10-12 sweeps, the "
        "near-constant prior draws need 50-65 (Anderson-mixed parallel sweeps), so n = 1500, "
        "K = 10 is far from the issue's 30 Choleskys: a block or Newton schedule (as binary "
        "`ep-orthant` has) is the next step. Not run at n = 1500 here (about 30 s a sweep).",
        "- The expanded `ep-orthant` at its default tol 1e-3 stops early on the correlated "
        "prior-draw labellings (-0.043 log10 at n = 300): hundreds of correlated sites creep "
        "together, each by less than tol. Structured EP's stop rule also requires the "
        "posterior's movement per unit step below tol (test_multiclass.py, "
        "test_structured_ep_does_not_stop_on_the_slow_collective_mode).",
        "- EP's fixed point itself is 0.76-0.78 log10 below `orthant-is` for the near-constant "
        "10-class labellings (both converged, se <= 0.015), and direct sampling at n = 300 "
        "(c) agrees with `orthant-is`, against 0.02-0.085 for K = 3, 4 at n <= 10 (table (a)): "
        "EP's error grows with K on correlated kernels. On the random labellings "
        "`orthant-is` does not converge (ESS too small), so no truth is known there.",
        "",
    ])
    if args.write_results:
        write_section(SECTION, text)
    else:
        print(text)


if __name__ == "__main__":
    main()
