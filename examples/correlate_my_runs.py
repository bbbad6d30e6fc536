"""Correlate your own runs: any table with one row per trained network, no flatvol store needed.

    python examples/correlate_my_runs.py                 # a made-up table of 40 networks
    python examples/correlate_my_runs.py my_runs.csv     # your CSV (test_acc_E + measure columns)

The table needs a generalization column (here `test_acc_E`) and one numeric column per measure.
Catalogue columns (`log10_volume`, `log10_sharpness`, `hessian_trace`, ...) get the catalogue's
sign and log scale; any other column is correlated as it is.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from flatvol.analysis import correlation_table


def made_up_runs(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """A plausible runs table: more label noise (attack set) gives a smaller volume and worse
    generalization; sharpness is only loosely related."""
    rng = np.random.default_rng(seed)
    attack_size = rng.choice([0, 50, 100, 150, 200], size=n)
    test_acc = 0.95 - attack_size / 800 + rng.normal(0, 0.01, n)
    return pd.DataFrame({
        "attack_size": attack_size,
        "seed": np.arange(n) % 4,
        "test_acc_E": test_acc,
        "log10_volume": -150 - 0.4 * attack_size + rng.normal(0, 8, n),
        "log10_sharpness": rng.normal(0, 0.3, n) - attack_size / 1000,
        "my_measure": rng.normal(size=n),
    })


def main(argv: list[str]) -> pd.DataFrame:
    """Read the CSV named in argv (or make a table up), print and return its correlations."""
    runs = pd.read_csv(argv[0]) if argv else made_up_runs()
    measures = [c for c in runs.columns if c not in ("test_acc_E", "attack_size", "seed")]
    table = correlation_table(runs, generalization="test_acc_E", measures=measures,
                              n_resamples=500)
    columns = ["measure", "n", "kendall", "kendall_low", "kendall_high", "spearman", "pearson",
               "granulated_kendall"]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
