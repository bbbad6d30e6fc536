"""Which columns of a runs table are predictors of generalization, and how each is oriented.

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
    plot_label: str | None = None  # matplotlib mathtext; defaults to `label`

    @property
    def axis_label(self) -> str:
        return self.plot_label or self.label

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


# Known measure columns, in report order. The runner's store may hold any subset of them.
KNOWN_MEASURES: tuple[Measure, ...] = (
    Measure("log10_volume", "log10_volume", "log10 V(f)", plot_label=r"$\log_{10} V(f)$"),
    Measure("log10_volume_conditional", "log10_volume_conditional", "log10 V(f|S)",
            plot_label=r"$\log_{10} V(f\,|\,S)$"),
    Measure("neg_log10_sharpness", "log10_sharpness", "-log10 sharpness", sign=-1,
            plot_label=r"$-\log_{10}$ sharpness"),
    Measure("neg_log10_hessian_top_eig", "hessian_top_eig", "-log10 lambda_max(H)", -1, True,
            plot_label=r"$-\log_{10} \lambda_{\max}(H)$"),
    Measure("neg_log10_hessian_trace", "hessian_trace", "-log10 Tr(H)", -1, True,
            plot_label=r"$-\log_{10} \mathrm{Tr}\,H$"),
    Measure("neg_log10_hessian_frobenius", "hessian_frobenius", "-log10 ||H||_F", -1, True),
    Measure("neg_log10_average_sharpness", "average_sharpness", "-log10 avg. sharpness", -1, True),
    Measure("neg_log10_adaptive_sharpness", "adaptive_sharpness", "-log10 adaptive sharpness",
            -1, True),
    Measure("log10_pac_bayes_sigma", "pac_bayes_sigma", "log10 PAC-Bayes sigma*", 1, True),
    Measure("log10_pac_bayes_mag_sigma", "pac_bayes_mag_sigma", "log10 PAC-Bayes mag. sigma*",
            1, True),
    Measure("neg_log10_fisher_rao_norm", "fisher_rao_norm", "-log10 Fisher-Rao norm", -1, True),
    Measure("neg_pac_bayes_bound", "pac_bayes_bound", "-PAC-Bayes error bound", sign=-1),
)

VOLUME = KNOWN_MEASURES[0]
SHARPNESS = KNOWN_MEASURES[2]


def measure_by_key(key: str) -> Measure:
    for m in KNOWN_MEASURES:
        if key in (m.key, m.column):
            return m
    known = ", ".join(m.key for m in KNOWN_MEASURES)
    raise DataError(f"unknown measure {key!r} (known: {known}; or pass a Measure)")


def resolve_measures(runs: pd.DataFrame,
                     measures: Sequence[Measure | str] | None = None) -> list[Measure]:
    """The measures to analyse: the given ones (keys, column names or Measure objects), or every
    known measure whose column exists in `runs` and varies across its finite values (a constant
    column, e.g. a PAC-Bayes bound that depends only on S, carries no ranking)."""
    if measures is not None:
        out = []
        for m in measures:
            if isinstance(m, Measure):
                out.append(m)
            elif m in {k.key for k in KNOWN_MEASURES} | {k.column for k in KNOWN_MEASURES}:
                out.append(measure_by_key(m))
            else:  # an arbitrary column, taken as is
                out.append(Measure(m, m, m))
        for m in out:
            m.values(runs)  # raises DataError naming a missing column
        return out
    return [m for m in KNOWN_MEASURES if m.column in runs.columns and _varies(m.values(runs))]


def constant_measures(runs: pd.DataFrame) -> list[Measure]:
    """Known measures present in `runs` with finite values that are all equal."""
    out = []
    for m in KNOWN_MEASURES:
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
