"""Why a ResNet's Monte-Carlo kernel settles or not: the spread of its draws, per BatchNorm mode.

For the reduced CPU ResNet (`fig3_cifar_resnet50_cpu`: ResNet-50 of base width 8 on the 700
CIFAR-10 car/cat images of S u E) and each BatchNorm convention of `FeatureDraws` ('eval': reset
statistics, the authors'; 'batch': the statistics of S u E), `--draws` draws' Gram matrices
give: each draw's mean squared feature norm (min, median, max, s.d. of its log10), the
effective number of draws of their mean ((sum of traces)^2 / sum of squared traces: a mean
carried by a few large draws converges slowly), and the mean cosine between two inputs'
features in the first 8 draws (near 1: all inputs look alike to the network).

    OMP_NUM_THREADS=1 .venv/bin/python bench/diag_mc_batchnorm.py --data-dir ../shared/data \
        --draws 32
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from flatvol.data.tasks import load_task
from flatvol.models import build_model
from flatvol.volume.mc_kernel import BATCHNORM_MODES, FeatureDraws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--draws", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = load_task("cifar10", train_size=500, attack_size=0, test_size=200, data_seed=0,
                     data_dir=args.data_dir, classes="1v3")
    x = task.x_SE()
    model = build_model("resnet50:width=8", tuple(x.shape[1:]), seed=0)
    print("| BatchNorm | s/draw | mean sq. norm min / median / max | log10 s.d. | effective "
          "draws | mean cosine |")
    print("|---|---|---|---|---|---|")
    for mode in BATCHNORM_MODES:
        draws = FeatureDraws(model, x, seed=0, batchnorm=mode)
        start = time.perf_counter()
        traces, cosines = [], []
        for i, gram in enumerate(draws.grams(args.draws)):
            traces.append(float(torch.trace(gram)) / draws.n)
            if i < 8:
                norms = torch.sqrt(torch.diag(gram))
                cos = gram / torch.outer(norms, norms)
                cosines.append(float(cos[~torch.eye(draws.n, dtype=torch.bool)].mean()))
        seconds = (time.perf_counter() - start) / args.draws
        tr = np.array(traces)
        print(f"| {mode} | {seconds:.2f} | {tr.min():.3g} / {np.median(tr):.3g} / {tr.max():.3g} "
              f"| {np.std(np.log10(tr)):.2f} | {tr.sum() ** 2 / (tr ** 2).sum():.1f} of "
              f"{args.draws} | {np.mean(cosines):.3f} |")


if __name__ == "__main__":
    main()
