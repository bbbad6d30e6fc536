"""What the sign of tau(-log10 sharpness, test accuracy) follows on a panel (issue #28 item 3).

For a panel's store and stores of its networks measured again (bench/remeasure_sharpness.py;
several stores are pooled by name, e.g. one per seed): tau with test accuracy (bootstrap 95%
CI, flatvol.analysis.correlation_table) of each sharpness on the fitted networks they share,
with the panel's own sharpness on those same networks; then, on the panel: tau of log10
sharpness and of test accuracy with the training epochs, over all networks and within each
attack size, and tau(-log10 sharpness, test accuracy) within each attack size and across the
attack sizes' means.

    python bench/sharpness_sign.py PANEL_DIR [NAME=DIR[,DIR...] ...] [--resamples 2000]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from flatvol.analysis.correlations import correlation_table
from flatvol.experiments import runs_frame

KEYS = ["attack_size", "seed"]


def _tau(runs: pd.DataFrame, resamples: int) -> str:
    row = correlation_table(runs, measures=["log10_sharpness"], n_resamples=resamples).iloc[0]
    return (f"{row.kendall:+.2f} [{row.kendall_low:+.2f}, {row.kendall_high:+.2f}] "
            f"(Spearman {row.spearman:+.2f}, n = {row.n})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("panel")
    parser.add_argument("remeasured", nargs="*", help="NAME=DIR[,DIR...]")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    panel = runs_frame(args.panel)
    panel = panel[panel.train_status == "fitted"]
    for item in args.remeasured:
        name, dirs = item.split("=", 1)
        again = pd.concat([runs_frame(d) for d in dirs.split(",")], ignore_index=True)
        again = again[again.train_status == "fitted"]
        shared = again[KEYS + ["log10_sharpness", "test_acc_E"]].merge(
            panel[KEYS + ["log10_sharpness"]], on=KEYS, suffixes=("", "_panel"))
        gap = shared.log10_sharpness - shared.log10_sharpness_panel
        own = shared.drop(columns="log10_sharpness").rename(
            columns={"log10_sharpness_panel": "log10_sharpness"})
        print(f"{name}: tau {_tau(shared, args.resamples)}; the panel's sharpness on the same "
              f"networks {_tau(own, args.resamples)}; log10 sharpness minus the panel's: "
              f"median {gap.median():+.4f}, largest |.| {gap.abs().max():.4f}, "
              f"{int((gap == 0).sum())} of {len(gap)} equal")
    by_size = panel.groupby("attack_size")
    print(f"tau(log10 sharpness, epochs) {kendalltau(panel.log10_sharpness, panel.epochs)[0]:+.2f}"
          f"; tau(test accuracy, epochs) {kendalltau(panel.test_acc_E, panel.epochs)[0]:+.2f}")
    within = [kendalltau(g.log10_sharpness, g.epochs)[0] for _, g in by_size]
    print(f"within attack sizes, tau(log10 sharpness, epochs): mean {np.nanmean(within):+.2f}, "
          f"{sum(t < 0 for t in within)} of {len(within)} negative")
    within = [kendalltau(-g.log10_sharpness, g.test_acc_E)[0] for _, g in by_size]
    means = by_size[["log10_sharpness", "test_acc_E"]].mean()
    print(f"tau(-log10 sharpness, test accuracy) within attack sizes: mean "
          f"{np.nanmean(within):+.2f}; across the sizes' means: "
          f"{kendalltau(-means.log10_sharpness, means.test_acc_E)[0]:+.2f}")


if __name__ == "__main__":
    main()
