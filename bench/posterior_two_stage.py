"""How far the two-stage P_B(f|S) of flatvol.volume.predictive is from the joint readings.

    python bench/posterior_two_stage.py RUN_DIR [--spec sgd_vs_bayes_resampled]
        [--functions 10] [--samples 20000]

RUN_DIR is a finished `flatvol sgd-vs-bayes SPEC` run with a [resample] section (its networks
are read back from the store; the data is the embedded subset). For the most frequent SGD
functions of the first draw of each |E|, it
compares three readings of the noise-free orthant posterior P(f_E | y_S):
- two-stage: step-EP on S, then the orthant of the Gaussian predictive on E by importance
  sampling (what `[resample]` reports);
- joint EP: V(y_S, f_E) / V(y_S), two step-EP runs on S u E and S (VolumeService.conditional,
  what the single-E comparison reports);
- joint IS: the same ratio with both orthant probabilities by importance sampling (orthant-is,
  unbiased, with its standard error: the reference while |S u E| <= 300).
and the probit posterior's two-stage value against its joint EP ratio (probit-EP is accurate:
bench/RESULTS.md). Prints one row per function and the median and largest differences.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from flatvol.experiments.build import load_run_task
from flatvol.experiments.spec_files import resolve_spec_path
from flatvol.experiments.store import Store
from flatvol.models import build_model
from flatvol.sgd_vs_bayes.function_store import decode_function
from flatvol.sgd_vs_bayes.resample import draws_of_E, restrict
from flatvol.sgd_vs_bayes.run import sample_functions
from flatvol.sgd_vs_bayes.spec import load_sgd_vs_bayes_spec
from flatvol.volume import VolumeService, fcn_kernel, orthant_importance_sampling
from flatvol.volume.predictive import posterior_predictive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--spec", default="sgd_vs_bayes_resampled")
    parser.add_argument("--functions", type=int, default=10)
    parser.add_argument("--samples", type=int, default=20000)
    args = parser.parse_args()
    spec = load_sgd_vs_bayes_spec(resolve_spec_path(args.spec))
    task = load_run_task(spec, 0, None)
    K = fcn_kernel(build_model(spec.model.arch, task.input_shape, spec.prior()), task.x_SE())
    n_S = task.train_size
    y_S = task.S.y.numpy().astype(np.float64)
    with Store(args.run_dir) as store:
        sample = sample_functions(spec, task, spec.optimizers[0], store)
    step = posterior_predictive(K, y_S, "ep-orthant")
    probit = posterior_predictive(K, y_S, "ep-probit")
    log10_vS_is = orthant_importance_sampling(K[:n_S, :n_S], y_S, n_samples=args.samples,
                                              seed=1).log_probability / math.log(10)
    diffs: dict[str, list[float]] = {"two-stage - joint EP": [], "two-stage - joint IS": [],
                                     "joint EP - joint IS": [], "probit two-stage - joint": []}
    print("|E| function-rank p_opt two-stage joint-EP joint-IS(se) probit-two-stage "
          "probit-joint")
    for draw in [d for d in draws_of_E(spec, task.test_size) if d.index == 0]:
        idx = np.r_[np.arange(n_S), n_S + draw.points]
        sub = VolumeService(K[np.ix_(idx, idx)])
        counts = restrict(sample, draw.points).counts().most_common(args.functions)
        for rank, (function, count) in enumerate(counts):
            f = decode_function(function, 2).astype(np.float64)
            y = np.r_[y_S, f]
            two = step.log10_probability(f, draw.points, n_samples=args.samples).log10_probability
            joint = sub.conditional(y, n_S, "ep-orthant").log10_volume_conditional
            full_is = orthant_importance_sampling(K[np.ix_(idx, idx)], y,
                                                  n_samples=args.samples, seed=1)
            joint_is = full_is.log_probability / math.log(10) - log10_vS_is
            p_two = probit.log10_probability(f, draw.points,
                                             n_samples=args.samples).log10_probability
            p_joint = sub.conditional(y, n_S, "ep-probit").log10_volume_conditional
            diffs["two-stage - joint EP"].append(two - joint)
            diffs["two-stage - joint IS"].append(two - joint_is)
            diffs["joint EP - joint IS"].append(joint - joint_is)
            diffs["probit two-stage - joint"].append(p_two - p_joint)
            print(f"{draw.size:4d} {rank:3d} {count / sample.n_fitted:.4f} {two:8.3f} "
                  f"{joint:8.3f} {joint_is:8.3f}({full_is.stderr_log10:.3f}) {p_two:8.3f} "
                  f"{p_joint:8.3f}", flush=True)
    for name, values in diffs.items():
        a = np.abs(values)
        print(f"{name}: median {np.median(values):+.3f}, median |.| {np.median(a):.3f}, "
              f"max |.| {a.max():.3f} (log10, {len(values)} functions)")


if __name__ == "__main__":
    main()
