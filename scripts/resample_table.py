"""The markdown table of bench/RESULTS.md for a comparison over draws of E.

    python scripts/resample_table.py RUN_DIR

RUN_DIR is the output of `flatvol sgd-vs-bayes SPEC --out RUN_DIR` for a spec with [resample]
(its resample.json and resample.csv). One row per (posterior, |E|, optimizer): mean ± sd over the
draws, and per (posterior, |E|) the range over draws of the most frequent function's ratio.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    summary = json.loads((args.run_dir / "resample.json").read_text())
    with open(args.run_dir / "resample.csv") as fh:
        rows = list(csv.DictReader(fh))

    def spread(entry: dict, column: str, digits: int = 2) -> str:
        value = entry[column]
        if value["mean"] is None:
            return "n/a"
        sd = "n/a" if value["sd"] is None else f"{value['sd']:.{digits}f}"
        return f"{value['mean']:.{digits}f} ± {sd}"

    print("| posterior | \\|E\\| | optimizer | functions seen >= 5 (range) | Spearman | median "
          "\\|log10 P_opt/P_B\\|, top 20 | log10 P_opt/P_B, most frequent | P_opt of the most "
          "frequent (median) | posterior mass found | decisiveness gap |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for e in summary["spread"]:
        mine = [r for r in rows if (r["posterior"], int(r["size"]), r["optimizer"])
                == (e["posterior"], e["size"], e["optimizer"])]
        p_top = statistics.median(float(r["p_opt_most_frequent"]) for r in mine)
        resolved = e["resolved_functions"]
        print(f"| {e['posterior']} | {e['size']} | {e['optimizer']} | {resolved['mean']:.0f} "
              f"({resolved['min']:.0f}-{resolved['max']:.0f}) | {spread(e, 'spearman')} | "
              f"{spread(e, 'top_median_abs_log10_ratio')} | "
              f"{spread(e, 'log10_ratio_most_frequent')} | {p_top:.4f} | "
              f"{spread(e, 'posterior_mass_found', 3)} | {spread(e, 'decisiveness_gap')} |")
    print()
    for e in summary["spread"]:
        v = e["log10_ratio_most_frequent"]
        print(f"{e['posterior']} |E| = {e['size']} {e['optimizer']}: most frequent function's "
              f"log10 P_opt/P_B over draws {v['min']:.2f} to {v['max']:.2f}")
    print("seconds:", summary["seconds"])


if __name__ == "__main__":
    main()
