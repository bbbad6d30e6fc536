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
(d) EP's fixed point against orthant-is at K = 10 on MNIST digits (n = 20-100), a prior draw and
    a network-like labelling (the true digits, 10% changed to another class).
(e) Speed and memory (issue #27): one structured posterior at n = 1500, the previous version
    (commit OLD_COMMIT, read with `git show`) against this one, alternating, medians; a whole
    structured EP at n = 1500; its value against the expanded reference at n = 600; the peak
    RSS of one streamed sweep at n = 7000 (a child process). Times are process CPU seconds on
    one thread (less sensitive than wall time to other jobs on the machine) and multiples of one
    1500 x 1500 float64 Cholesky timed alongside.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_multiclass.py --data-dir ../shared/data \
        --write-results
    (30-40 minutes on one thread; --sizes 100 300 by default)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

from _results import write_section  # noqa: E402  (bench/ is on sys.path as a script)
from flatvol.volume import arccos_kernel  # noqa: E402
from flatvol.volume.ep.multiclass import (  # noqa: E402
    DEFAULT_CACHE_BYTES,
    difference_posterior,
    run_multiclass_ep,
)
from flatvol.volume.multiclass import (  # noqa: E402
    labelling_from_code,
    log10_volume_expanded,
    log10_volume_structured,
    sample_labelling_counts,
)

SECTION = "## Multi-class volume: estimator core"
COMMAND = ("OMP_NUM_THREADS=1 .venv/bin/python bench/bench_multiclass.py --data-dir ../shared/data "
           "--write-results")
REPO = Path(__file__).resolve().parent.parent
OLD_COMMIT = "8a6cc2f"  # the structured EP before issue #27's speed and memory work
LN10 = math.log(10.0)
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


def mnist10(n: int, data_dir: str | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """The first n MNIST digits (10 classes): kernel (arccos depth 2, sigma_w2 = 2, sigma_b2 = 1),
    a network-like labelling (the true digits, 10% changed uniformly to another class) and the
    argmax of one prior draw of the 10 outputs."""
    from flatvol.data import load_task

    task = load_task("mnist", n, 0, 0, data_dir=data_dir, classes="all")
    K = arccos_kernel(task.x_SE(), n_hidden=2, sigma_w2=2.0, sigma_b2=1.0)
    rng = np.random.default_rng(seed)
    labels = task.y_SE().numpy().astype(np.int64)
    changed = rng.random(n) < 0.1
    labels[changed] = (labels[changed] + rng.integers(1, 10, int(changed.sum()))) % 10
    draw = np.argmax(rng.standard_normal((10, n)) @ np.linalg.cholesky(K).T, axis=0)
    return K, labels, draw


def mnist10_truth(n: int, data_dir: str | None) -> np.ndarray:
    """The true digits of `mnist10`'s points."""
    from flatvol.data import load_task

    task = load_task("mnist", n, 0, 0, data_dir=data_dir, classes="all")
    return task.y_SE().numpy().astype(np.int64)


def bias_table(sizes: list[int], data_dir: str | None, draws: int = 40_000) -> list[str]:
    """EP's fixed point (structured, tol 1e-5) against orthant-is on the expanded system."""
    lines = ["| n | labelling | classes used | EP log10 V | orthant-is (se) | EP - orthant-is | "
             "orthant-is reliable |", "|---|---|---|---|---|---|---|"]
    for n in sizes:
        K, network, draw = mnist10(n, data_dir)
        for name, f in (("network-like", network), ("prior draw", draw)):
            ep = log10_volume_structured(K, f, 10, tol=1e-5)
            sampled = log10_volume_expanded(K, f, 10, "orthant-is", seed=0, n_samples=draws)
            lines.append(
                f"| {n} | {name} | {np.unique(f).size} | {ep.log10_volume:.3f} | "
                f"{sampled.log10_volume:.3f} ({sampled.stderr_log10:.3f}) | "
                f"{ep.log10_volume - sampled.log10_volume:+.3f} | "
                f"{'yes' if sampled.converged else 'no (Pareto k-hat high)'} |")
            print(lines[-1], flush=True)
    return lines


def old_structured_ep() -> types.ModuleType:
    """The previous structured EP module (OLD_COMMIT), for the A/B timing."""
    source = subprocess.run(
        ["git", "show", f"{OLD_COMMIT}:src/flatvol/volume/multiclass_ep.py"], cwd=REPO,
        capture_output=True, text=True, check=True).stdout
    # its EP building blocks have since moved from volume/ep_parts.py to volume/ep/sites.py
    source = source.replace("flatvol.volume.ep_parts", "flatvol.volume.ep.sites")
    module = types.ModuleType(f"multiclass_ep_{OLD_COMMIT}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, module.__name__, "exec"), module.__dict__)  # noqa: S102
    return module


def cpu_seconds(call) -> tuple[float, object]:
    start = time.process_time()
    result = call()
    return time.process_time() - start, result


def cholesky_cpu_seconds(A: np.ndarray) -> float:
    return cpu_seconds(lambda: scipy.linalg.cholesky(A, lower=True))[0]


def start_memory_child(n: int, data_dir: str | None) -> subprocess.Popen:
    """The peak RSS of one sweep at n, measured in a child process of its own (it runs while
    the accuracy tables are computed; the speed timings are done before it starts)."""
    return subprocess.Popen(
        [sys.executable, __file__, "--memory-child", str(n)]
        + (["--data-dir", data_dir] if data_dir else []), stdout=subprocess.PIPE, text=True)


def memory_lines(child: subprocess.Popen, unit: float) -> list[str]:
    stdout, _ = child.communicate()
    if child.returncode != 0:
        return [f"The memory run failed (exit {child.returncode})."]
    report = json.loads(stdout.strip().splitlines()[-1])
    n = report["n"]
    streamed = 10 * n * n * 8 > DEFAULT_CACHE_BYTES
    line = (f"n = {n}, K = 10, network-like labelling, one sweep "
            f"({'streamed: K n^2 floats exceed the cache' if streamed else 'cached'}): peak RSS "
            f"{report['peak_rss_gib']:.2f} GiB (kernel and data loaded: "
            f"{report['rss_before_gib']:.2f} GiB), {report['seconds']:.0f} CPU s = "
            f"{report['seconds'] / unit:.0f} Choleskys of 1500 for that one sweep.")
    print(line, flush=True)
    return [line]


def memory_child(n: int, data_dir: str | None) -> None:
    """One streamed structured EP sweep at n (cold sites, then one posterior): prints JSON."""
    K, network, _ = mnist10(n, data_dir)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds, fit = cpu_seconds(lambda: run_multiclass_ep(K, network, 10, max_iter=1))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": n, "rss_before_gib": before / 2**20, "peak_rss_gib": peak / 2**20,
                      "seconds": seconds, "message": fit.message}))


def speed(data_dir: str | None, reps: int = 3, value_n: int = 600,
          speed_n: int = 1500) -> tuple[list[str], float]:
    """(e) without the memory: the value check, a whole run and the A/B posterior timing.

    Returns:
        The lines, and the Cholesky unit (CPU s) measured alongside the A/B timing.
    """
    A = np.random.default_rng(0).normal(size=(1500, 1500))
    A = A @ A.T / 1500 + np.eye(1500)
    lines = []
    # The value at n = 600 (the expanded reference's 5400 sites are affordable there).
    K, network, draw = mnist10(value_n, data_dir)
    lines += [f"| n = {value_n} labelling | structured EP (tol 1e-3) log10 V | sweeps | expanded "
              "ep-orthant, tol 1e-6 | structured - reference |", "|---|---|---|---|---|"]
    for name, f in (("network-like", network), ("prior draw", draw)):
        structured = log10_volume_structured(K, f, 10)
        reference = log10_volume_expanded(K, f, 10, "ep-orthant", tol=REFERENCE_TOL)
        flag = "" if structured.converged and reference.converged else " (not converged)"
        lines.append(f"| {name} | {structured.log10_volume:.4f} | {structured.iterations} | "
                     f"{reference.log10_volume:.4f} | "
                     f"{structured.log10_volume - reference.log10_volume:+.1e}{flag} |")
        print(lines[-1], flush=True)
    # n = 1500: a whole run, then one posterior of its final sites, old and new alternating.
    K, network, _ = mnist10(speed_n, data_dir)
    units = [cholesky_cpu_seconds(A) for _ in range(3)]
    seconds, fit = cpu_seconds(lambda: run_multiclass_ep(K, network, 10))
    units += [cholesky_cpu_seconds(A) for _ in range(3)]
    unit = float(np.median(units))
    lines += ["", f"One 1500 x 1500 float64 Cholesky: {unit:.4f} CPU s (median of {len(units)}, "
              "one thread).", "",
              f"Whole structured EP, n = {speed_n}, K = 10, network-like labelling (tol 1e-3): "
              f"log10 V = {fit.log_marginal_likelihood / LN10:.3f}, converged "
              f"{fit.converged}, {fit.iterations} sweeps, {seconds:.1f} CPU s = "
              f"{seconds / unit:.0f} Choleskys ({seconds / unit / fit.iterations:.1f} a sweep)."]
    print(lines[-1], flush=True)
    # warm: from the final sites of the true labels (what a sweep's volume service has)
    truth = run_multiclass_ep(K, mnist10_truth(speed_n, data_dir), 10)
    warm_seconds, warm = cpu_seconds(lambda: run_multiclass_ep(
        K, network, 10, init_sites=(truth.site_precision, truth.site_natural_mean)))
    lines += ["", f"The same, warm-started from the true labels' final sites: log10 V = "
              f"{warm.log_marginal_likelihood / LN10:.3f} (cold - warm "
              f"{(fit.log_marginal_likelihood - warm.log_marginal_likelihood) / LN10:+.1e}), "
              f"converged {warm.converged}, {warm.iterations} sweeps, {warm_seconds:.1f} CPU s "
              f"= {warm_seconds / unit:.0f} Choleskys."]
    print(lines[-1], flush=True)
    old = old_structured_ep()
    tau, nu = fit.site_precision, fit.site_natural_mean
    times: dict[str, list[float]] = {"old": [], "new": [], "new, streamed": [], "Cholesky": []}
    for _ in range(reps):
        for name, call in (
            ("old", lambda: old.difference_posterior(K, network, tau, nu)),
            ("new", lambda: difference_posterior(K, network, tau, nu)),
            ("new, streamed", lambda: difference_posterior(K, network, tau, nu,
                                                           cache_bytes=0)),
        ):
            times[name].append(cpu_seconds(call)[0])
        times["Cholesky"].append(cholesky_cpu_seconds(A))
    unit = float(np.median(times["Cholesky"]))
    new_post = difference_posterior(K, network, tau, nu)
    old_post = old.difference_posterior(K, network, tau, nu)
    rival = np.arange(10)[None, :] != network[:, None]
    agree = max(float(np.max(np.abs(new_post.var[rival] / old_post.var[rival] - 1))),
                float(np.max(np.abs(new_post.mean[rival] - old_post.mean[rival])
                             / np.sqrt(old_post.var[rival]))))
    lines += ["", f"One posterior at n = {speed_n}, K = 10 (the run's final sites), {reps} "
              "alternating repetitions, medians:", "",
              "| version | CPU s | Choleskys | all runs (s) |", "|---|---|---|---|"]
    for name in ("old", "new", "new, streamed"):
        median = float(np.median(times[name]))
        lines.append(f"| {name} | {median:.2f} | {median / unit:.0f} | "
                     f"{', '.join(f'{t:.2f}' for t in times[name])} |")
        print(lines[-1], flush=True)
    lines += ["", f"Old and new marginals agree to {agree:.1e} (relative variance, mean in "
              "posterior sd)."]
    return lines, unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--bias-sizes", type=int, nargs="+", default=[20, 30, 50, 100])
    parser.add_argument("--speed-sizes", type=int, nargs=3, default=[600, 1500, 7000],
                        help="n of (e): the value check, the timing, the memory")
    parser.add_argument("--data-dir", default=None,
                        help="MNIST folder (n = 7000 needs more than the embedded subset)")
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.data_dir)
        return
    speed_lines, unit = speed(args.data_dir, value_n=args.speed_sizes[0],
                              speed_n=args.speed_sizes[1])
    child = start_memory_child(args.speed_sizes[2], args.data_dir)
    bias_lines = bias_table(args.bias_sizes, args.data_dir)
    truth_lines, summary = truth_table()
    cost_lines = cost_table(args.sizes)
    direct_lines = direct_check()
    speed_lines += ["", *memory_lines(child, unit)]
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
        "**(d) EP's fixed point against orthant-is, K = 10.** First n MNIST digits (10 "
        "classes, kernel as in (b)); network-like: the true digits with 10% changed uniformly "
        "to another class; prior draw: the argmax of one draw of the 10 outputs. EP: "
        "structured, tol 1e-5; orthant-is: expanded system, 40,000 draws, seed 0 (its error "
        "bar holds only where its Pareto check passes).", "",
        *bias_lines, "",
        "**(e) Speed and memory (issue #27), K = 10.** Process CPU seconds on one thread (the "
        "machine had 2 cores shared with other jobs: wall times were up to 2x longer and "
        "noisy), and multiples of a 1500 x 1500 float64 Cholesky timed in the same run. Old: "
        f"the structured EP of commit {OLD_COMMIT} (read with `git show`).", "",
        *speed_lines, "",
        "Reading it (Dec 2026 run):", "",
        "- Structured EP reaches the expanded system's EP fixed point: to 1e-6 log10 at "
        "n = 100-600 here (b, e; tests: 1e-6 on K = 3, 4, 10, the streamed path included), "
        "far inside the issue's 0.05 log10.",
        "- Speed (e): one posterior at n = 1500, K = 10 costs 129 Choleskys (147 streamed), "
        "against 274 for the previous version (2.1x; the same marginals to 4e-7 at the run's final "
        "sites, 1e-12 at moderate ones, tests): per class "
        "one potrf + potri and one n x n product, no (K, n, n) stacks, the rank-2n coupling "
        "inverted by triangular BLAS. A whole cold run on the network-like labelling takes 18 "
        "sweeps, 2133 Choleskys; warm from the true labels' sites 15 sweeps, 1872. The "
        "issue's 30 Choleskys is NOT met (70x off): all (K-1)n marginals need, per class, a "
        "factorization and n quadratic forms in a dense n x n matrix (about 3 n^3 flops; "
        "about 46 n^3 a sweep at K = 10, 140 Choleskys' worth of flops), so 30 Choleskys "
        "would be a quarter of one sweep, while the Anderson-mixed parallel schedule takes "
        "10-20 sweeps on network-like and random labellings and 50-70 on near-constant ones. "
        "Meeting it needs another approximation or a schedule of very few sweeps, not a "
        "faster sweep.",
        "- Memory (e): one streamed sweep at n = 7000 fits in 8 GB (peak RSS above; about "
        "nine n x n float64 arrays whatever K, bounded by a tracemalloc test). Table (b)'s "
        "wall times are noisy on the shared machine; (e)'s CPU-time A/B is the comparison.",
        "- The expanded `ep-orthant` at its default tol 1e-3 stops early on the correlated "
        "prior-draw labellings (-0.043 log10 at n = 300): hundreds of correlated sites creep "
        "together, each by less than tol. Structured EP's stop rule also requires the "
        "posterior's movement per unit step below tol (test_multiclass.py, "
        "test_structured_ep_does_not_stop_on_the_slow_collective_mode).",
        "- EP's fixed point itself is below the truth at K = 10 (d): by 0.26-0.30 log10 on "
        "network-like labellings where `orthant-is` is reliable (n = 20, 30; at n = 50, 100 "
        "its Pareto check fails, differences 0.33-0.39), by 0.52-0.76 on prior draws "
        "(near-constant, 1-2 classes used; n = 20-100), 0.79 at n = 300 by direct sampling "
        "(c), against 0.02-0.085 for K = 3, 4 at n <= 10 (a): step EP under-estimates "
        "orthant probabilities, more with K, n and correlation. Not corrected here.",
        "",
    ])
    if args.write_results:
        write_section(SECTION, text)
    else:
        print(text)


if __name__ == "__main__":
    main()
