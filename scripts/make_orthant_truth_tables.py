"""Held-out exact tables for `orthant-is`: orthant probabilities counted by direct sampling.

Make the table (about 10 min on one core):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/make_orthant_truth_tables.py make [--resume]

Check orthant-is against it (z = |IS - truth| / sqrt(se_IS^2 + se_truth^2), per function and
seed; the table of bench/RESULTS.md "orthant-is error bars on held-out exact tables"):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/make_orthant_truth_tables.py evaluate --seeds 20 \
        [--proposal ep]

Per kernel (KERNELS: arccos FCN kernels of depth 1/2/4 on Boolean hypercubes n = 16..128,
Gaussian inputs and embedded-MNIST points, an RBF and a linear kernel with a nugget, a CNN
Monte-Carlo kernel), a pilot run of PILOT_DRAWS draws of z ~ N(0, K) lists the frequent sign
patterns, grouped into orbits of the kernel's symmetries (`symmetry_orbit`: bit permutations
on hypercubes); the most frequent orbits and others spread log-uniformly down to the rarest
whose truth will be precise enough are chosen, then a fresh run of `draws` draws (other seed:
the choice does not bias the count) counts each. Functions whose truth se exceeds MAX_TRUTH_SE
are dropped. The kernels are rebuilt from their specs by the test, never stored.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from flatvol.io import atomic_write_json
from flatvol.volume.estimate import VolumeEstimator
from flatvol.volume.orthant import PROPOSALS
from flatvol.volume.orthant_truth import (
    KernelSpec,
    TruthFunction,
    TruthKernel,
    build_kernel,
    count_orthant_hits,
    kernel_checksum,
    load_truth_table,
    rebuild_checked_kernel,
    sample_sign_patterns,
    sign_keys,
    symmetry_orbit,
    table_to_json,
)

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "volume" / "data" / "orthant_truth_tables.json"
PILOT_DRAWS = 200_000
PILOT_PATTERNS = 300  # the most frequent pilot patterns grouped into orbits
# The truth must be much sharper than the error bar it checks: orthant-is with 4000 draws
# reports 0.002-0.01 log10 on these kernels, so keep se_truth <= 0.003 (>= ~21,000 hits).
MAX_TRUTH_SE = 0.003
N_FREQUENT, N_SPREAD = 3, 4

# (spec, draws of the counting run)
KERNELS: list[tuple[KernelSpec, int]] = [
    (KernelSpec("cube4-arccos1", "hypercube", 16, 4, "arccos", depth=1), 10_000_000),
    (KernelSpec("cube5-arccos4", "hypercube", 32, 5, "arccos", depth=4), 10_000_000),
    (KernelSpec("cube6-arccos2", "hypercube", 64, 6, "arccos", depth=2), 10_000_000),
    (KernelSpec("cube7-arccos2", "hypercube", 128, 7, "arccos", depth=2), 10_000_000),
    (KernelSpec("cube7-arccos1", "hypercube", 128, 7, "arccos", depth=1), 8_000_000),
    (KernelSpec("gauss64-arccos1", "gaussian", 64, 8, "arccos", depth=1, seed=1), 20_000_000),
    (KernelSpec("mnist48-arccos2", "mnist", 48, 784, "arccos", depth=2), 20_000_000),
    (KernelSpec("gauss32-rbf", "gaussian", 32, 3, "rbf", lengthscale=1.0, nugget=0.01,
                seed=2), 30_000_000),
    (KernelSpec("gauss24-linear", "gaussian", 24, 4, "linear", nugget=0.02, seed=3),
     10_000_000),
    (KernelSpec("mnist24-cnn-mc", "mnist", 24, 784, "cnn-mc", depth=1, mc_draws=256),
     10_000_000),
]


def choose_orbits(spec: KernelSpec, K: np.ndarray, draws: int, seed: int) -> list[np.ndarray]:
    """Orbits (`symmetry_orbit`; single functions where the kernel has no symmetry): the
    N_FREQUENT most frequent in a pilot run, and N_SPREAD spread log-uniformly down to the
    rarest whose count in `draws` draws is expected to give se <= MAX_TRUTH_SE; on hypercube
    inputs also x_0."""
    labels, counts = sample_sign_patterns(K, PILOT_DRAWS, seed)
    pilot = dict(zip(map(bytes, sign_keys(labels.T)), counts.tolist(), strict=True))
    orbits, totals, seen = [], [], set()
    for f in labels[:PILOT_PATTERNS]:
        orbit = symmetry_orbit(spec, f)
        keys = list(map(bytes, sign_keys(orbit.T)))
        if min(keys) in seen:
            continue
        seen.add(min(keys))
        orbits.append(orbit)
        totals.append(sum(pilot.get(k, 0) for k in keys))
    order = np.argsort(-np.array(totals), kind="stable")
    q = np.array(totals, dtype=float)[order] / PILOT_DRAWS
    expected_se = np.sqrt((1 - q) / np.maximum(q * draws, 1)) / math.log(10)
    usable = order[expected_se <= 0.9 * MAX_TRUTH_SE]
    q_usable = q[expected_se <= 0.9 * MAX_TRUTH_SE]
    chosen = list(range(min(N_FREQUENT, usable.size)))
    if usable.size > N_FREQUENT:
        for t in np.geomspace(q_usable[N_FREQUENT], q_usable[-1], N_SPREAD):
            i = N_FREQUENT + int(np.argmin(np.abs(np.log(q_usable[N_FREQUENT:]) - math.log(t))))
            if i not in chosen:
                chosen.append(i)
    picked = [orbits[usable[i]] for i in chosen]
    if spec.inputs == "hypercube":
        # the balanced function x_0 (orbit: every x_k): there the EP proposal beats the tilted
        # one by effective sample size; kept only if its count is precise enough
        x0 = np.where(np.arange(spec.n) >> (spec.dim - 1) & 1, 1.0, -1.0)
        orbit = symmetry_orbit(spec, x0)
        if min(map(bytes, sign_keys(orbit.T))) not in seen:
            picked.append(orbit)
    return picked


def make(args: argparse.Namespace) -> None:
    done = {}
    if args.resume and args.out.is_file():  # kernels finished by an interrupted run
        done = {(e.spec, e.functions[0].n_draws): e for e in load_truth_table(args.out)
                if e.functions}
    entries = []
    for index, (spec, draws) in enumerate(KERNELS):
        start = time.perf_counter()
        n_draws = int(draws * args.scale)
        if (spec, n_draws) in done:
            entries.append(done[spec, n_draws])
            print(f"{spec.name}: kept from {args.out}", flush=True)
            continue
        K = build_kernel(spec)
        orbits = choose_orbits(spec, K, n_draws, seed=1000 + index)
        hits = count_orthant_hits(K, orbits, n_draws, seed=2000 + index)
        functions = []
        for orbit, h in zip(orbits, hits, strict=True):
            if h > 0:
                truth = TruthFunction(orbit[0], int(h), n_draws, orbit=len(orbit))
                if truth.stderr_log10 <= MAX_TRUTH_SE:
                    functions.append(truth)
        entries.append(TruthKernel(spec, kernel_checksum(K), tuple(functions)))
        # written after every kernel: an interrupted run keeps what it finished
        atomic_write_json(args.out, table_to_json(entries), indent=1)
        print(f"{spec.name}: n={spec.n}, {len(functions)} functions, log10 P (orbit) "
              f"{[(round(f.log10_probability, 3), f.orbit) for f in functions]}, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    print(f"wrote {args.out}")


def evaluate(args: argparse.Namespace) -> None:
    rows = []  # (kernel, n, function, seed, err, se, z, converged, k-hat, proposal)
    for entry in load_truth_table(args.out):
        estimator = VolumeEstimator(rebuild_checked_kernel(entry))
        for j, f in enumerate(entry.functions):
            for seed in range(args.seeds):
                result = estimator.log_volume(f.labels, "orthant-is", n_samples=args.n_samples,
                                              seed=seed, proposal=args.proposal)
                err = result.log10_volume - f.log10_probability
                z = abs(err) / math.hypot(result.stderr_log10, f.stderr_log10)
                rows.append((entry.spec.name, entry.spec.n, j, seed, err, result.stderr_log10,
                             z, result.converged, result.proposal))
                if z > args.show_z:
                    print(f"  {entry.spec.name} function {j} (log10 P {f.log10_probability:.3f}"
                          f" +- {f.stderr_log10:.4f}) seed {seed}: err {err:+.4f}, se "
                          f"{result.stderr_log10:.4f}, z {z:.2f}, converged {result.converged},"
                          f" proposal {result.proposal}", flush=True)
    print(f"\nproposal {args.proposal}, {args.n_samples} draws, seeds 0..{args.seeds - 1}\n")
    print("| kernel | n | functions | converged | max z | rms z | z > 2 | z > 3 | "
          "median se / median abs err | proposals |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(r[0] for r in rows):
        print(_summary_row(name, [r for r in rows if r[0] == name]))
    print(_summary_row("all", rows))
    for proposal in sorted({r[8] for r in rows}):  # the runs each proposal drew
        print(_summary_row(f"all, drawn from {proposal}", [r for r in rows if r[8] == proposal]))


def _summary_row(name: str, rows: list[tuple]) -> str:
    converged = [r for r in rows if r[7]]
    z = np.array([r[6] for r in converged])
    ratio = np.median([r[5] for r in converged]) / np.median([abs(r[4]) for r in converged]) \
        if converged else math.nan
    proposals = ", ".join(f"{p} {sum(r[8] == p for r in rows)}"
                          for p in sorted({r[8] for r in rows}))
    single = len({r[0] for r in rows}) == 1
    n = rows[0][1] if single else "16-128"
    functions = len({(r[0], r[2]) for r in rows})
    if not converged:
        return f"| {name} | {n} | {functions} | 0/{len(rows)} | - | - | - | - | - | " \
               f"{proposals} |"
    # a right error bar gives rms z = 1, z > 2 in 4.6% and z > 3 in 0.27% of runs
    return (f"| {name} | {n} | {functions} | {len(converged)}/{len(rows)} | "
            f"{z.max():.2f} | {math.sqrt(np.mean(z * z)):.2f} | {np.mean(z > 2):.1%} | "
            f"{int(np.sum(z > 3))} | {ratio:.2f} | {proposals} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("make", "evaluate"))
    parser.add_argument("--out", type=Path, default=TABLE)
    parser.add_argument("--scale", type=float, default=1.0, help="scale every draw count")
    parser.add_argument("--resume", action="store_true",
                        help="keep the kernels already in --out (same spec and draws)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-samples", type=int, default=4000)
    parser.add_argument("--proposal", default="auto", choices=PROPOSALS)
    parser.add_argument("--show-z", type=float, default=3.0, help="list estimates above this z")
    args = parser.parse_args(argv)
    (make if args.command == "make" else evaluate)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
