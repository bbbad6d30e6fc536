"""Compare the stored numbers of two results directories run by different flatvol versions.

    python scripts/compare_stores.py OLD_DIR NEW_DIR [--rtol 0]

Prints every run whose status, scalar results or per-epoch series differ (wall-clock columns,
finished_at and run info that names versions are ignored) and exits 1 if any do, 0 if all
stored numbers agree (exactly with --rtol 0, the default).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from flatvol.experiments.store_frames import runs_frame, series_frame

KEYS = ["optimizer", "attack_size", "seed"]
IGNORED = {"seconds", "finished_at", "spec_hash", "config_hash", "spec_name"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rtol", type=float, default=0.0)
    parser.add_argument("--ignore", action="append", default=[],
                        help="a column whose change is expected (repeatable)")
    args = parser.parse_args()
    old, new = runs_frame(args.old), runs_frame(args.new)
    if len(old) != len(new):
        print(f"run counts differ: {len(old)} vs {len(new)}")
        return 1
    old, new = old.sort_values(KEYS).reset_index(drop=True), new.sort_values(KEYS)
    new = new.reset_index(drop=True)
    bad = 0
    columns = sorted((set(old.columns) | set(new.columns)) - IGNORED - set(args.ignore))
    for column in columns:
        if column not in old or column not in new:
            print(f"column {column!r} only in {'new' if column in new else 'old'}")
            bad += 1
            continue
        a, b = old[column], new[column]
        if a.dtype.kind in "fi" and b.dtype.kind in "fi":
            same = np.isclose(a, b, rtol=args.rtol, atol=0.0, equal_nan=True)
        else:  # None and NaN both mean "no value"
            same = ((a.astype(str) == b.astype(str)) | (a.isna() & b.isna())).to_numpy()
        for i in np.flatnonzero(~same):
            print(f"{tuple(old.loc[i, KEYS])} {column}: {a[i]!r} -> {b[i]!r}")
            bad += 1
    s_old, s_new = series_frame(args.old), series_frame(args.new)
    cols = [*KEYS, "epoch", "phase", "metric"]
    s_old = s_old.sort_values(cols).reset_index(drop=True)
    s_new = s_new.sort_values(cols).reset_index(drop=True)
    if len(s_old) != len(s_new) or not (s_old[cols].astype(str) == s_new[cols].astype(str)).all(
            axis=None):
        print(f"series rows differ: {len(s_old)} vs {len(s_new)}")
        bad += 1
    elif not np.allclose(s_old["value"].to_numpy(float), s_new["value"].to_numpy(float),
                         rtol=args.rtol, atol=0.0, equal_nan=True):  # (empty: object dtype)
        print("series values differ")
        bad += 1
    print(f"{len(old)} runs, {len(columns)} columns, {len(s_old)} series rows compared: "
          f"{bad} difference(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
