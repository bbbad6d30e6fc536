"""Correlation between generalization and each measure: Kendall tau-b, Spearman and Pearson with
bootstrap confidence intervals, and the granulated Kendall coefficient of Jiang et al. (2019).

Point estimates and p-values come from scipy.stats; the bootstrap resamples runs (pairs) with
scipy.stats.bootstrap (BCa by default) using vectorized versions of the same statistics, which
tests check against scipy.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from flatvol.analysis.measures import Measure, numeric_column, resolve_measures
from flatvol.analysis.vectorized import KENDALL_CHUNK, VECTORIZED, kendall_tau_b
from flatvol.errors import DataError

DEFAULT_AXES: tuple[str, ...] = ("attack_size", "seed", "optimizer")
STATISTICS: tuple[str, ...] = ("kendall", "spearman", "pearson")



# --- one pair of samples ------------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """A correlation coefficient with its bootstrap confidence interval and scipy's p-value."""

    value: float
    low: float
    high: float
    pvalue: float


@dataclass(frozen=True)
class Correlation:
    """Kendall tau-b, Spearman rho and Pearson r between a measure and generalization."""

    n: int
    kendall: Estimate
    spearman: Estimate
    pearson: Estimate
    confidence_level: float
    n_resamples: int
    method: str

    def to_dict(self) -> dict[str, float]:
        out: dict[str, float] = {"n": self.n}
        for name in STATISTICS:
            est: Estimate = getattr(self, name)
            out[name] = est.value
            out[f"{name}_low"] = est.low
            out[f"{name}_high"] = est.high
            out[f"{name}_p"] = est.pvalue
        return out


def _point(name: str, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    with warnings.catch_warnings():
        # Constant input: scipy warns and returns NaN, which is what we report.
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        if name == "kendall":
            res = stats.kendalltau(x, y)
        elif name == "spearman":
            res = stats.spearmanr(x, y)
        else:
            res = stats.pearsonr(x, y)
    return float(res.statistic), float(res.pvalue)


def _bootstrap_ci(name: str, x: np.ndarray, y: np.ndarray, n_resamples: int,
                  confidence_level: float, method: str, seed: int) -> tuple[float, float]:
    fn = VECTORIZED[name]

    def statistic(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return fn(a, b, axis=axis)

    return _paired_bootstrap_ci(statistic, (x, y), n_resamples, confidence_level, method, seed)


def _paired_bootstrap_ci(statistic: Callable[..., np.ndarray], samples: tuple[np.ndarray, ...],
                         n_resamples: int, confidence_level: float, method: str,
                         seed: int) -> tuple[float, float]:
    """Bootstrap CI of a vectorized statistic of paired samples (the same runs resampled in
    each); BCa, with a percentile fallback where BCa is undefined."""
    n = samples[0].size
    batch = max(1, min(n_resamples, KENDALL_CHUNK // max(1, n ** 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.bootstrap(samples, statistic, n_resamples=n_resamples, batch=batch,
                              vectorized=True, paired=True, confidence_level=confidence_level,
                              method=method, rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if np.isfinite(low) and np.isfinite(high):
        return low, high
    # BCa is undefined when the bootstrap distribution is degenerate (e.g. every resample has
    # tau = 1) or contains NaN (a resample with a constant column): fall back to percentiles of
    # the finite resamples.
    dist = res.bootstrap_distribution
    dist = dist[np.isfinite(dist)]
    if dist.size == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence_level) / 2 * 100
    return float(np.percentile(dist, tail)), float(np.percentile(dist, 100 - tail))


def _check_interval(where: str, method: str, confidence_level: float) -> None:
    if method not in ("BCa", "percentile", "basic"):
        raise DataError(f"{where}: method must be BCa, percentile or basic, got {method!r}")
    if not 0 < confidence_level < 1:
        raise DataError(f"{where}: confidence_level must be in (0, 1), got {confidence_level}")


def correlate(measure: np.ndarray, generalization: np.ndarray, *, n_resamples: int = 2000,
              confidence_level: float = 0.95, method: str = "BCa", seed: int = 0) -> Correlation:
    """Kendall tau-b, Spearman and Pearson between two paired samples, with bootstrap CIs.

    Pairs with a NaN on either side are dropped. Fewer than 3 pairs, or a constant side, give
    NaN estimates. The same seed gives the same intervals (every statistic sees the same
    resampled pairs).

    Args:
        measure: Values of the measure, one per run.
        generalization: Paired generalization values (e.g. test accuracy), one per run.
        n_resamples: Number of bootstrap resamples.
        confidence_level: Confidence level of the intervals, in (0, 1).
        method: Bootstrap interval method: 'BCa', 'percentile' or 'basic'.
        seed: Seed of the resampling.

    Returns:
        The Correlation: n and the Kendall, Spearman and Pearson estimates with their intervals.

    Raises:
        DataError: If the samples differ in size, or method or confidence_level is invalid.
    """
    x = np.asarray(measure, dtype=float).ravel()
    y = np.asarray(generalization, dtype=float).ravel()
    if x.shape != y.shape:
        raise DataError(f"correlate: measure has {x.size} values, generalization {y.size}")
    _check_interval("correlate", method, confidence_level)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    nan = Estimate(float("nan"), float("nan"), float("nan"), float("nan"))
    estimates = {}
    constant = n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0
    for name in STATISTICS:
        if constant:
            estimates[name] = nan
            continue
        value, pvalue = _point(name, x, y)
        low, high = (_bootstrap_ci(name, x, y, n_resamples, confidence_level, method, seed)
                     if n_resamples > 0 else (float("nan"), float("nan")))
        estimates[name] = Estimate(value, low, high, pvalue)
    return Correlation(n, estimates["kendall"], estimates["spearman"], estimates["pearson"],
                       confidence_level, n_resamples, method)


@dataclass(frozen=True)
class KendallDifference:
    """tau(first, generalization) - tau(second, generalization) over the same runs, with a
    paired bootstrap confidence interval (NaN where either tau is undefined)."""

    n: int
    value: float
    low: float
    high: float
    confidence_level: float


def kendall_difference(first: np.ndarray, second: np.ndarray, generalization: np.ndarray, *,
                       n_resamples: int = 2000, confidence_level: float = 0.95,
                       method: str = "BCa", seed: int = 0) -> KendallDifference:
    """The difference of two measures' Kendall tau-b with generalization, over the same runs.

    Both taus are computed on the same networks, so their errors are correlated; the interval
    comes from resampling runs (all three columns together) and recomputing both taus on each
    resample, which carries that covariance. Two separate intervals cannot: whether they
    overlap says little about the difference.

    Args:
        first: Values of the first measure (e.g. log10 V(f)), one per run.
        second: Values of the second measure (e.g. -log10 sharpness), paired with first.
        generalization: Paired generalization values.
        n_resamples: Number of bootstrap resamples.
        confidence_level: Confidence level of the interval, in (0, 1).
        method: Bootstrap interval method: 'BCa', 'percentile' or 'basic'.
        seed: Seed of the resampling.

    Returns:
        The KendallDifference over the runs where all three values are finite.

    Raises:
        DataError: If the samples differ in size, or method or confidence_level is invalid.
    """
    a, b, g = (np.asarray(v, dtype=float).ravel() for v in (first, second, generalization))
    if not a.shape == b.shape == g.shape:
        raise DataError(f"kendall_difference: samples of {a.size}, {b.size} and {g.size} values")
    _check_interval("kendall_difference", method, confidence_level)
    keep = np.isfinite(a) & np.isfinite(b) & np.isfinite(g)
    a, b, g = a[keep], b[keep], g[keep]
    n = int(a.size)
    nan = float("nan")
    if n < 3 or np.ptp(a) == 0 or np.ptp(b) == 0 or np.ptp(g) == 0:
        return KendallDifference(n, nan, nan, nan, confidence_level)

    def difference(x: np.ndarray, y: np.ndarray, z: np.ndarray, axis: int = -1) -> np.ndarray:
        return kendall_tau_b(x, z, axis=axis) - kendall_tau_b(y, z, axis=axis)

    value = float(difference(a, b, g))
    low, high = (_paired_bootstrap_ci(difference, (a, b, g), n_resamples, confidence_level,
                                      method, seed) if n_resamples > 0 else (nan, nan))
    return KendallDifference(n, value, low, high, confidence_level)


# --- granulated Kendall (Jiang et al. 2019, Sec. 4) -------------------------------------------

@dataclass(frozen=True)
class GranulatedKendall:
    """Psi = mean over axes i of psi_i; psi_i = mean, over the groups in which every other axis is
    fixed, of Kendall tau-b between measure and generalization as axis i varies.

    Only axes with more than one value in the data count (Jiang et al.'s Theta holds the varied
    hyperparameters). Groups with fewer than two runs or an undefined tau (a constant side) are
    skipped and counted in `skipped`.
    """

    psi: float
    per_axis: dict[str, float]
    groups: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(self.per_axis)


def granulated_kendall(runs: pd.DataFrame, measure: Measure | str,
                       generalization: str = "test_acc_E",
                       axes: Sequence[str] = DEFAULT_AXES) -> GranulatedKendall:
    """Granulated Kendall coefficient of `measure` over the sweep axes present in `runs`.

    Args:
        runs: Runs table, one row per run.
        measure: The measure: a Measure, a measure key or a column name.
        generalization: Column of the generalization values.
        axes: Sweep axes to granulate over (those that vary in runs are used).

    Returns:
        The GranulatedKendall: Psi, the per-axis coefficients and the group counts.

    Raises:
        DataError: If the measure or generalization column is missing from runs.
    """
    m = resolve_measures(runs, [measure])[0]
    frame = pd.DataFrame({"_m": m.values(runs),
                          "_g": numeric_column(runs, generalization, "generalization column")},
                         index=runs.index)
    used = [a for a in axes if a in runs.columns and runs[a].nunique(dropna=False) > 1]
    for a in used:
        frame[a] = runs[a]
    frame = frame.dropna(subset=["_m", "_g"])
    per_axis: dict[str, float] = {}
    groups: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for axis in used:
        others = [a for a in used if a != axis]
        taus: list[float] = []
        n_skipped = 0
        grouped = frame.groupby(others, dropna=False, sort=True) if others else [((), frame)]
        for _, group in grouped:
            tau = (float(kendall_tau_b(group["_m"].to_numpy(), group["_g"].to_numpy()))
                   if len(group) >= 2 else float("nan"))
            if np.isfinite(tau):
                taus.append(tau)
            else:
                n_skipped += 1
        per_axis[axis] = float(np.mean(taus)) if taus else float("nan")
        groups[axis] = len(taus)
        skipped[axis] = n_skipped
    finite = [v for v in per_axis.values() if np.isfinite(v)]
    psi = float(np.mean(finite)) if finite else float("nan")
    return GranulatedKendall(psi, per_axis, groups, skipped)


# --- the table ---------------------------------------------------------------------------------

FINISHED_STATUSES = ("done", "fitted")


def fitted_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that finished and reached 100% training accuracy on S (the paper analyses only
    those): `status` 'done' (the store's) or 'fitted', and `train_status`, where recorded,
    'fitted'. A table with neither column is taken as is.

    Args:
        runs: Runs table (e.g. from flatvol.experiments.runs_frame).

    Returns:
        The rows of runs that finished and fitted S.
    """
    keep = pd.Series(True, index=runs.index)
    if "status" in runs.columns:
        keep &= runs["status"].isin(FINISHED_STATUSES)
    if "train_status" in runs.columns:
        keep &= runs["train_status"].isna() | (runs["train_status"] == "fitted")
    return runs[keep]


def correlation_table(runs: pd.DataFrame, *, generalization: str = "test_acc_E",
                      measures: Sequence[Measure | str] | None = None,
                      axes: Sequence[str] = DEFAULT_AXES, by: str | None = None,
                      n_resamples: int = 2000, confidence_level: float = 0.95,
                      method: str = "BCa", seed: int = 0,
                      fitted_only: bool = True) -> pd.DataFrame:
    """One row per measure (per value of `by`, if given): n, Kendall/Spearman/Pearson with CI
    bounds and p-values, and the granulated Kendall Psi with psi_<axis> for each varied axis.

    `runs` has one row per run (flatvol.experiments' runs_frame); with `fitted_only` runs whose
    status is not 'fitted' are left out. Measures default to every known measure present.

    Any DataFrame works, not only a flatvol store's: one row per trained network, a
    generalization column and one numeric column per measure. Catalogue columns such as
    `log10_volume` or `sharpness` get their sign and log scale from the catalogue; any other
    column name in `measures` is correlated as it is.

    Example:
        ```python
        runs = pd.DataFrame({"test_acc_E": [0.91, 0.85, 0.78, 0.70],
                             "log10_volume": [-80.0, -95.0, -110.0, -130.0],
                             "my_measure": [0.2, 0.3, 0.5, 0.4]})
        correlation_table(runs, measures=["log10_volume", "my_measure"], n_resamples=200)
        ```

    Args:
        runs: one row per run; optional `status`/`train_status` columns (see `fitted_runs`)
            and the sweep axes (`attack_size`, `seed`, `optimizer`) for granulated Kendall.
        generalization: the column measures are correlated with (higher = better).
        measures: catalogue keys, column names or `Measure` objects; default every known
            measure whose column is present and not constant.
        axes: columns whose variation gives the granulated Kendall psi_<axis> columns.
        by: a column to group by: one table block per value (e.g. 'optimizer').
        n_resamples: bootstrap resamples for the confidence intervals.
        confidence_level: of the intervals, e.g. 0.95.
        method: scipy.stats.bootstrap's interval method ('BCa', 'percentile', 'basic').
        seed: seed of the bootstrap.
        fitted_only: leave out runs that did not fit S (see `fitted_runs`).

    Returns:
        A DataFrame with one row per measure (and `by` value): measure, label, column, n,
        kendall, spearman, pearson with `_low`, `_high` and `_p` columns, granulated_kendall
        and psi_<axis> for each axis that varies.

    Raises:
        DataError: no fitted runs, a missing or non-numeric column, or no measure column.
    """
    if fitted_only:
        runs = fitted_runs(runs)
    if runs.empty:
        raise DataError("runs table: no fitted runs to correlate")
    numeric_column(runs, generalization, "generalization column")
    chosen = resolve_measures(runs, measures)
    if not chosen:
        raise DataError("runs table: none of the known measure columns is present "
                        "(expected e.g. log10_volume, log10_sharpness)")
    if by is not None and by not in runs.columns:
        raise DataError(f"runs table: no column {by!r} to group by")
    parts = [(None, runs)] if by is None else list(runs.groupby(by, sort=True))
    rows = []
    # psi_<axis> columns for the axes the sweep varies (Jiang et al.'s Theta)
    axes_in_data = [a for a in axes if a in runs.columns and a != by
                    and runs[a].nunique(dropna=False) > 1]
    for key, part in parts:
        g = numeric_column(part, generalization, "generalization column")
        for m in chosen:
            corr = correlate(m.values(part), g, n_resamples=n_resamples,
                             confidence_level=confidence_level, method=method, seed=seed)
            gk = granulated_kendall(part, m, generalization, axes_in_data)
            row: dict[str, object] = {}
            if by is not None:
                row[by] = key
            row.update({"measure": m.key, "label": m.label, "column": m.column})
            row.update(corr.to_dict())
            row["granulated_kendall"] = gk.psi
            for axis in axes_in_data:
                row[f"psi_{axis}"] = gk.per_axis.get(axis, float("nan"))
            rows.append(row)
    table = pd.DataFrame(rows)
    table["n"] = table["n"].astype(int)
    return table
