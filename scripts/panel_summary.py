"""Markdown summary of a sweep's results directory, as bench/RESULTS.md reports each panel.

Prints: runs fitted per optimizer; Kendall tau of log10 V(f) and -log10 sharpness with test
accuracy on E (bootstrap 95% CIs, flatvol.analysis.correlation_table) per optimizer, and over
all optimizers' networks pooled; per attack size the mean epochs, test accuracy, log10 V(f) and
log10 sharpness; and where the time went (the ensembles' training time, each measure's
summed seconds, first and last record).

    python scripts/panel_summary.py DIR [DIR ...] [--seeds 0 1 2] [--attack-sizes 0 1000 ...]
        [--optimizers sgd adam] [--resamples 2000]

`--seeds` / `--attack-sizes` / `--optimizers` restrict the runs (e.g. the Fig. 4 design
inside a larger Fig. 3 panel). With several DIRs the optimizers are named DIR/optimizer (the
directory's name), so sweeps of the same optimizer at different settings stay apart.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import pandas as pd

from flatvol.analysis.correlations import correlation_table
from flatvol.experiments import runs_frame
from flatvol.experiments.store import store_path

MEASURES = ["log10_volume", "log10_sharpness"]  # the report's rows: log10 V(f), -log10 sharpness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="+")
    parser.add_argument("--seeds", type=int, nargs="*")
    parser.add_argument("--attack-sizes", type=int, nargs="*")
    parser.add_argument("--optimizers", nargs="*")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()

    named = len(args.out) > 1  # several sweeps: optimizers are named DIR/optimizer
    runs = pd.concat([_named(runs_frame(out), out, named) for out in args.out],
                     ignore_index=True)
    for column, keep in (("seed", args.seeds), ("attack_size", args.attack_sizes),
                         ("optimizer", args.optimizers)):
        if keep:
            runs = runs[runs[column].isin(keep)]
    fitted = runs.groupby("optimizer")["train_status"].apply(
        lambda s: f"{(s == 'fitted').sum()}/{len(s)}")
    print("| optimizer | runs fitted | epochs (min-max) |")
    print("|---|---|---|")
    for opt, part in runs.groupby("optimizer"):
        print(f"| {opt} | {fitted[opt]} | {part.epochs.min()}-{part.epochs.max()} |")

    # a store of re-measured networks (bench/remeasure_sharpness.py) holds sharpness alone
    measures = [m for m in MEASURES if m in runs.columns]
    for column in MEASURES:
        if column not in runs.columns:
            runs[column] = float("nan")
    table = correlation_table(runs, measures=measures, by="optimizer",
                              n_resamples=args.resamples)
    if runs.optimizer.nunique() > 1:  # the optimizers' networks pooled (Fig. 4's question)
        pooled = correlation_table(runs, measures=measures, n_resamples=args.resamples)
        table = pd.concat([table, pooled.assign(optimizer="all, pooled")], ignore_index=True)
    print("\n| optimizer | measure vs test accuracy on E | Kendall tau [95% CI] | Spearman | n |")
    print("|---|---|---|---|---|")
    for _, r in table.iterrows():
        print(f"| {r.optimizer} | {r.label} | **{r.kendall:.2f}** [{r.kendall_low:.2f}, "
              f"{r.kendall_high:.2f}] | {r.spearman:.2f} | {r.n} |")

    means = runs[runs.train_status == "fitted"].groupby(["optimizer", "attack_size"]).agg(
        epochs=("epochs", "mean"), test_acc=("test_acc_E", "mean"),
        log10_V=("log10_volume", "mean"), log10_sharpness=("log10_sharpness", "mean"))
    print("\nFitted runs only:\n\n| optimizer | attack size | mean epochs | mean test acc | "
          "mean log10 V(f) | mean log10 sharpness |")
    print("|---|---|---|---|---|---|")
    for (opt, size), r in means.iterrows():
        print(f"| {opt} | {size} | {r.epochs:.0f} | {r.test_acc:.3f} | {r.log10_V:.1f} | "
              f"{r.log10_sharpness:.2f} |")

    rows = []
    for out in args.out:
        with sqlite3.connect(store_path(out)) as conn:
            rows += [(f"{out.name}/{o}" if named else o, json.loads(i), f) for o, i, f in
                     conn.execute("SELECT optimizer, info_json, finished_at FROM runs")]
    infos = pd.DataFrame(rows, columns=["optimizer", "info", "finished_at"])
    if args.optimizers:
        infos = infos[infos.optimizer.isin(args.optimizers)]
    print()
    for opt, part in infos.groupby("optimizer"):
        train = [i["ensemble"]["train_seconds"] for i in part["info"] if "ensemble" in i]
        measured = [i["measures"] for i in part["info"] if "measures" in i]  # not failed runs
        spent = {m: sum(one[m]["seconds"] for one in measured) for m in measured[0]}
        trained = f"ensemble trained {max(train):.0f} s" if train else "trained one at a time"
        print(f"- {opt}: {trained}; measures (summed over runs): "
              + ", ".join(f"{m} {s:.0f} s" for m, s in spent.items())
              + f"; records from {part.finished_at.min()} to {part.finished_at.max()}")


def _named(runs: pd.DataFrame, out: Path, named: bool) -> pd.DataFrame:
    return runs.assign(optimizer=out.name + "/" + runs.optimizer) if named else runs


if __name__ == "__main__":
    main()
