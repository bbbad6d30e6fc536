"""Which columns of a runs table are predictors of generalization, and how each is oriented.

The known predictors, their orientation and labels come from the measure catalogue
(flatvol.measures: each entry's `predictors`); a predictor is named by its stored column.
Every measure is oriented so that *larger predicts better generalization* (as the paper plots
-log10 sharpness): a flatness/sharpness/complexity column enters with sign -1. Rank statistics
(Kendall, Spearman) only see the sign; Pearson also sees the log10 transform.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from flatvol.errors import DataError
from flatvol.measures import measure_entries


@dataclass(frozen=True)
class Measure:
    """A predictor read from one column of the runs table.

    values = sign * (log10(column) if log10 else column); non-finite results (e.g. log10 of a
    non-positive Hessian trace) become NaN and are dropped pairwise by the statistics.
    """

    key: str
    column: str
    label: str
    sign: int = 1
    log10: bool = False
    # Deliberate matplotlib mathtext from the catalogue; without it figures draw `label`
    # literally (figures.literal_text), since a user's column name is no math.
    plot_label: str | None = None

    def __post_init__(self) -> None:
        if self.sign not in (1, -1):
            raise ValueError(f"Measure {self.key}: sign must be +1 or -1, got {self.sign}")

    def values(self, runs: pd.DataFrame) -> np.ndarray:
        if self.column not in runs.columns:
            raise DataError(f"runs table: no column {self.column!r} for measure {self.key!r} "
                            f"(columns: {', '.join(map(str, runs.columns))})")
        raw = pd.to_numeric(runs[self.column], errors="coerce").to_numpy(dtype=float)
        if self.log10:
            with np.errstate(divide="ignore", invalid="ignore"):
                raw = np.where(raw > 0, np.log10(np.where(raw > 0, raw, 1.0)), np.nan)
        out = self.sign * raw
        out[~np.isfinite(out)] = np.nan
        return out


def known_measures() -> tuple[Measure, ...]:
    """Every predictor of the measure catalogue (flatvol.measures), in report order, keyed by
    its stored column. Read at call time, so measures registered later are included.

    Returns:
        The Measure of every predictor in the catalogue, in report order.
    """
    return tuple(Measure(p.column, p.column, p.label, p.sign, p.log10, p.plot_label)
                 for entry in measure_entries() for p in entry.predictors)


def measure_by_key(key: str) -> Measure:
    """The catalogue predictor stored in column `key`."""
    for m in known_measures():
        if key in (m.key, m.column):
            return m
    known = ", ".join(m.key for m in known_measures())
    raise DataError(f"unknown measure {key!r} (known: {known}; or pass a Measure)")


VOLUME = measure_by_key("log10_volume")
SHARPNESS = measure_by_key("log10_sharpness")


def resolve_measures(runs: pd.DataFrame,
                     measures: Sequence[Measure | str] | None = None) -> list[Measure]:
    """The measures to analyse: the given ones (keys, column names or Measure objects), or every
    known measure whose column exists in `runs` and varies across its finite values (a constant
    column, e.g. a PAC-Bayes bound that depends only on S, carries no ranking).

    Args:
        runs: Runs table, one row per run.
        measures: Measures to use (keys, column names or Measure objects); None picks every known
            measure that varies in runs.

    Returns:
        The Measure objects to analyse.

    Raises:
        DataError: If a given measure's column is missing from runs.
    """
    if measures is not None:
        out = []
        for m in measures:
            if isinstance(m, Measure):
                out.append(m)
            elif m in {k.column for k in known_measures()}:
                out.append(measure_by_key(m))
            else:  # an arbitrary column, taken as is
                out.append(Measure(m, m, m))
        for m in out:
            m.values(runs)  # raises DataError naming a missing column
        return out
    return [m for m in known_measures() if m.column in runs.columns and _varies(m.values(runs))]


def constant_measures(runs: pd.DataFrame) -> list[Measure]:
    """Known measures present in `runs` with finite values that are all equal."""
    out = []
    for m in known_measures():
        if m.column in runs.columns:
            v = m.values(runs)
            if np.isfinite(v).any() and not _varies(v):
                out.append(m)
    return out


def _varies(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 0 and bool(np.ptp(finite) > 0)


def numeric_column(runs: pd.DataFrame, column: str, what: str = "column") -> np.ndarray:
    if column not in runs.columns:
        raise DataError(f"runs table: no {what} {column!r} "
                        f"(columns: {', '.join(map(str, runs.columns))})")
    out = np.array(pd.to_numeric(runs[column], errors="coerce"), dtype=float)
    out[~np.isfinite(out)] = np.nan
    return out


def present(runs: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    return [c for c in columns if c in runs.columns]
