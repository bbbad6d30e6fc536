"""What one Monte-Carlo kernel draw of the reduced CPU ResNet costs, by memory layout and compiler.

The draw of `fig3_cifar_resnet50_cpu` (ResNet-50 of base width 8, BatchNorm on the statistics of
S u E, |S| = 500 and |E| = 200 CIFAR-10 car/cat images): one redraw of the parameters and one
forward pass of the 700 images, as `flatvol.volume.mc_kernel.FeatureDraws` makes it on CPU one
network at a time. Alternating per repetition: A = contiguous (NCHW) memory, B = channels-last
(what FeatureDraws uses), with `--compiled` also B' = channels-last through `torch.compile`
(inductor; its one-off compile time printed apart, not in the median), then one
scipy.linalg.cholesky of a 1500 x 1500 kernel (the reference operation). One thread; medians;
draws also as multiples of the median Cholesky. All layouts use the same draws (generators with
one seed), and their features are compared with the contiguous ones.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_mc_draws.py --data-dir ../shared/data \
        --reps 5 [--compiled] [--profile]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads BLAS

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402
import torch  # noqa: E402

from flatvol.data.tasks import load_task  # noqa: E402
from flatvol.models import build_model, init_from_prior_  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--compiled", action="store_true",
                        help="also time the channels-last network through torch.compile")
    parser.add_argument("--profile", action="store_true",
                        help="also print where one channels-last draw spends its time "
                        "(torch.profiler, by operator)")
    args = parser.parse_args()
    layouts = ("contiguous", "channels-last", *(("compiled",) if args.compiled else ()))
    torch.set_num_threads(1)
    task = load_task("cifar10", train_size=500, attack_size=0, test_size=200, data_seed=0,
                     data_dir=args.data_dir, classes="1v3")
    x = torch.cat([task.S.x, task.E.x])
    nets, generators, inputs = {}, {}, {}
    features_of = {}
    for layout in layouts:
        net = build_model("resnet50:width=8", tuple(x.shape[1:]), seed=0).eval()
        torch.func.replace_all_batch_norm_modules_(net)  # mc_batchnorm = "batch"
        if layout != "contiguous":
            net.to(memory_format=torch.channels_last)
        nets[layout], generators[layout] = net, torch.Generator().manual_seed(0)
        inputs[layout] = (x.contiguous(memory_format=torch.channels_last)
                          if layout != "contiguous" else x)
        features_of[layout] = (torch.compile(net.features) if layout == "compiled"
                               else net.features)
    if args.compiled:  # compile once, before the timed draws (the draws' weights change in place)
        start = time.perf_counter()
        with torch.no_grad():
            features_of["compiled"](inputs["compiled"])
        print(f"torch.compile: first call (compiling) {time.perf_counter() - start:.1f} s")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1500, 1600))
    kernel = a @ a.T / 1600 + np.eye(1500)
    times: dict[str, list[float]] = {layout: [] for layout in (*layouts, "cholesky")}
    worst = dict.fromkeys(layouts[1:], 0.0)
    worst_gram = dict.fromkeys(layouts[1:], 0.0)
    for _ in range(args.reps):
        features = {}
        for layout in layouts:
            start = time.perf_counter()
            with torch.no_grad():
                init_from_prior_(nets[layout], nets[layout].prior, generators[layout])
                features[layout] = features_of[layout](inputs[layout])
            times[layout].append(time.perf_counter() - start)
        start = time.perf_counter()
        scipy.linalg.cholesky(kernel, lower=True)
        times["cholesky"].append(time.perf_counter() - start)
        a_ = features["contiguous"]
        gram_a = a_.double() @ a_.double().T
        for layout in layouts[1:]:
            b_ = features[layout]
            worst[layout] = max(worst[layout], float((a_ - b_).abs().max() / a_.abs().max()))
            gram_b = b_.double() @ b_.double().T
            worst_gram[layout] = max(worst_gram[layout], float(
                (gram_a - gram_b).abs().max() / gram_a.abs().max()))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        net = nets["channels-last"]
        with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
            init_from_prior_(net, net.prior, generators["channels-last"])
            net.features(inputs["channels-last"])
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"one thread, {args.reps} alternating repetitions, medians (torch {torch.__version__})")
    print("| layout | one draw (s) | x one 1500^2 Cholesky |")
    print("|---|---|---|")
    for layout in layouts:
        print(f"| {layout} | {med[layout]:.2f} | {med[layout] / med['cholesky']:.0f} |")
    print(f"one 1500^2 Cholesky: {med['cholesky']:.4f} s")
    for layout in layouts[1:]:
        print(f"{layout}: {med['contiguous'] / med[layout]:.2f}x the contiguous draws, "
              f"{med['channels-last'] / med[layout]:.2f}x channels-last; features differ from "
              f"the contiguous ones by at most {worst[layout]:.1e} of their largest value, "
              f"their Gram matrices by {worst_gram[layout]:.1e}")


if __name__ == "__main__":
    main()
