"""Training-time series (Fig. 5): one run's metrics over epochs, its zero-error epoch and α events,
and the numbers the paper's claim rests on (sharpness falls after zero error while V(f) is flat;
at α sharpness jumps and V(f) does not move).

The series table is long (flatvol.experiments.store.series_frame): run key columns, `epoch`,
`phase`, `metric`, `value`. Phases are 'fit' (before S is fit), 'post' (post-training) and
'alpha' (the measurement taken right after an α-scaling, logged at the same epoch as the 'post'
measurement taken just before it). Events are read from:
- zero-error epoch: the run's `fitted_at`, else a metric `zero_error_epoch`/`fitted_at`, else the
  last epoch before the first post-training phase, else the first epoch with `train_acc_S` = 1;
- α events: rows with metric `alpha` (value = α; `alpha_layer` gives the layer), else the epochs
  of 'alpha'-phase rows (α from the spec, passed as `alphas`).
Within one epoch rows sort pre/before < other < alpha, so the measurement just before a scaling
precedes the one just after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from flatvol.errors import DataError

SERIES_COLUMNS = ("epoch", "phase", "metric", "value")
RUN_KEY_CANDIDATES = ("spec_hash", "optimizer", "attack_size", "seed")
EVENT_METRICS = ("alpha", "alpha_layer", "zero_error_epoch", "fitted_at")
POST_PHASES = ("post", "post_train", "posttrain", "post-train")

SHARPNESS_METRICS = ("log10_sharpness", "sharpness")
VOLUME_METRICS = ("log10_volume", "log10_volume_conditional")


@dataclass(frozen=True)
class AlphaEvent:
    epoch: float
    alpha: float
    layer: int | None = None  # 1-based affine layer scaled by 1/alpha (its successor by alpha)


@dataclass
class RunSeries:
    """One run's per-epoch metrics: `table` has columns epoch, phase, order and one per metric."""

    key: dict[str, object]
    table: pd.DataFrame
    zero_error_epoch: float | None = None
    alpha_events: list[AlphaEvent] = field(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        return [c for c in self.table.columns if c not in ("epoch", "phase", "order")]

    def curve(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(epoch, value) for `metric`, NaNs dropped, in time order."""
        if metric not in self.table.columns:
            raise DataError(f"series for run {self.label}: no metric {metric!r} "
                            f"(has: {', '.join(self.metrics)})")
        t = self.table[["epoch", metric]].dropna()
        return t["epoch"].to_numpy(dtype=float), t[metric].to_numpy(dtype=float)

    def first_metric(self, names: Sequence[str]) -> str | None:
        for name in names:
            if name in self.table.columns and self.table[name].notna().any():
                return name
        return None

    @property
    def label(self) -> str:
        """The run's key without the spec hash (the report already groups by spec)."""
        shown = {k: v for k, v in self.key.items() if k != "spec_hash"} or self.key
        return ", ".join(f"{k}={v}" for k, v in shown.items()) or "run"


def run_key_columns(series: pd.DataFrame) -> list[str]:
    """The columns of `series` that identify a run (everything but epoch/phase/metric/value)."""
    return [c for c in series.columns if c not in SERIES_COLUMNS]


BEFORE_RANK, PLAIN_RANK, AFTER_RANK = 0, 1, 2


def _phase_rank(phase: object) -> int:
    text = str(phase).lower()
    if "alpha" in text and "pre" not in text and "before" not in text:
        return AFTER_RANK
    return BEFORE_RANK if ("pre" in text or "before" in text) else PLAIN_RANK


def split_runs(series: pd.DataFrame, runs: pd.DataFrame | None = None,
               alphas: Sequence[float] = ()) -> list[RunSeries]:
    """One RunSeries per run in a long series table (see the module docstring). `runs` supplies
    each run's `fitted_at`; `alphas` the α of the spec's events, in epoch order, for stores that
    mark events only by phase.

    Args:
        series: Long per-epoch table (flatvol.experiments.series_frame).
        runs: Runs table supplying each run's fitted_at (optional).
        alphas: The α of the spec's events, in epoch order.

    Returns:
        One RunSeries per run.

    Raises:
        DataError: If series lacks the epoch, metric or value column.
    """
    missing = [c for c in ("epoch", "metric", "value") if c not in series.columns]
    if missing:
        raise DataError(f"series table: missing column(s) {', '.join(missing)} "
                        f"(columns: {', '.join(map(str, series.columns))})")
    series = series.copy()
    if "phase" not in series.columns:
        series["phase"] = ""
    keys = run_key_columns(series)
    groups = series.groupby(keys, sort=True, dropna=False) if keys else [((), series)]
    out = []
    for key_values, group in groups:
        if not isinstance(key_values, tuple):
            key_values = (key_values,)
        key = dict(zip(keys, key_values, strict=True))
        out.append(_one_run(key, group, _run_row(runs, key), alphas))
    return out


def _run_row(runs: pd.DataFrame | None, key: Mapping[str, object]) -> pd.Series | None:
    if runs is None or runs.empty:
        return None
    mask = np.ones(len(runs), dtype=bool)
    for k, v in key.items():
        if k in runs.columns:
            mask &= (runs[k] == v).to_numpy()
    hit = runs[mask]
    return hit.iloc[0] if len(hit) == 1 else None


def _one_run(key: dict[str, object], group: pd.DataFrame, run: pd.Series | None,
             alphas: Sequence[float] = ()) -> RunSeries:
    group = group.copy()
    group["phase"] = group["phase"].fillna("").astype(str)
    events = group[group["metric"].isin(EVENT_METRICS)]
    values = group[~group["metric"].isin(EVENT_METRICS)].copy()
    values["order"] = values["phase"].map(_phase_rank)
    table = (values.pivot_table(index=["epoch", "order", "phase"], columns="metric",
                                values="value", aggfunc="last")
             .reset_index().sort_values(["epoch", "order"], kind="stable"))
    table.columns.name = None
    table = table.reset_index(drop=True)

    alpha_rows = events[events["metric"] == "alpha"]
    layers = {float(r.epoch): int(r.value)
              for r in events[events["metric"] == "alpha_layer"].itertuples() if pd.notna(r.value)}
    alpha_events = [AlphaEvent(float(r.epoch), float(r.value), layers.get(float(r.epoch)))
                    for r in alpha_rows.itertuples()]
    if not alpha_events:
        after = group["phase"].map(_phase_rank) == AFTER_RANK
        for i, epoch in enumerate(sorted(group.loc[after, "epoch"].unique())):
            alpha = float(alphas[i]) if i < len(alphas) else float("nan")
            alpha_events.append(AlphaEvent(float(epoch), alpha))
    alpha_events.sort(key=lambda e: e.epoch)
    return RunSeries(key, table, _zero_error_epoch(events, table, run), alpha_events)


def _zero_error_epoch(events: pd.DataFrame, table: pd.DataFrame,
                      run: pd.Series | None) -> float | None:
    if run is not None and "fitted_at" in run.index and pd.notna(run["fitted_at"]):
        return float(run["fitted_at"])
    marked = events[events["metric"].isin(("zero_error_epoch", "fitted_at"))]
    if len(marked):
        return float(marked["value"].iloc[0])
    post = table[table["phase"].str.lower().isin(POST_PHASES)]
    if len(post):
        # The last training-phase epoch is the one at which S became fit.
        before = table[table["epoch"] < post["epoch"].min()]
        return float(before["epoch"].max()) if len(before) else float(post["epoch"].min())
    if "train_acc_S" in table.columns:
        fit = table[table["train_acc_S"] >= 1.0]
        if len(fit):
            return float(fit["epoch"].min())
    return None


@dataclass(frozen=True)
class TemporalSummary:
    """Values at the zero-error epoch, just before and just after the first α event, and at the end.

    `*_before_alpha`/`*_after_alpha` are the last measurement before the event and the first one
    at or after it. jump_factor = sharpness after / before (10**difference of log10 values).
    """

    run: str
    sharpness_metric: str | None
    volume_metric: str | None
    zero_error_epoch: float | None
    alpha_epoch: float | None
    alpha: float | None
    log10_sharpness: dict[str, float]
    log10_volume: dict[str, float]
    sharpness_jump_factor: float | None
    volume_change_at_alpha: float | None
    sharpness_change_zero_to_alpha: float | None
    volume_change_zero_to_alpha: float | None

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _as_log10(metric: str, values: np.ndarray) -> np.ndarray:
    if metric.startswith("log10_"):
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)


def _points(rs: RunSeries, metric: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    if metric is None:
        return out
    rows = rs.table.dropna(subset=[metric])
    if rows.empty:
        return out
    logv = _as_log10(metric, rows[metric].to_numpy(dtype=float))
    epochs = rows["epoch"].to_numpy(dtype=float)
    order = rows["order"].to_numpy() if "order" in rows.columns else np.ones(len(rows))
    idx = np.arange(len(rows))
    if rs.zero_error_epoch is not None:
        at = idx[epochs >= rs.zero_error_epoch]
        if at.size:
            out["zero_error"] = float(logv[at[0]])
    if rs.alpha_events:
        before = (epochs < rs.alpha_events[0].epoch) | _before_at_event(
            epochs, order, rs.alpha_events[0].epoch)
        if before.any():
            out["before_alpha"] = float(logv[idx[before][-1]])
        if (~before).any():
            out["after_alpha"] = float(logv[idx[~before][0]])
    out["final"] = float(logv[-1])
    return out


def _before_at_event(epochs: np.ndarray, order: np.ndarray, event: float) -> np.ndarray:
    """Rows logged at the event epoch that precede the scaling: those below an 'alpha' row, or
    'pre' rows; a lone plain row was measured before the scaling (it follows the epoch's
    update); a lone 'alpha' row after it."""
    at = epochs == event
    if (order[at] == AFTER_RANK).any():
        return at & (order < AFTER_RANK)
    if (order[at] == BEFORE_RANK).any():
        return at & (order == BEFORE_RANK)
    return at


def temporal_summary(rs: RunSeries) -> TemporalSummary:
    """The Fig-5 numbers of one run (NaN-free where the series allows).

    Args:
        rs: One run's series (from split_runs).

    Returns:
        The TemporalSummary of the run.
    """
    s_metric = rs.first_metric(SHARPNESS_METRICS)
    v_metric = rs.first_metric(("log10_volume",))
    s = _points(rs, s_metric)
    v = _points(rs, v_metric)

    def diff(d: dict[str, float], a: str, b: str) -> float | None:
        return d[b] - d[a] if a in d and b in d else None

    jump = diff(s, "before_alpha", "after_alpha")
    first = rs.alpha_events[0] if rs.alpha_events else None
    return TemporalSummary(
        run=rs.label, sharpness_metric=s_metric, volume_metric=v_metric,
        zero_error_epoch=rs.zero_error_epoch,
        alpha_epoch=first.epoch if first else None,
        alpha=first.alpha if first and np.isfinite(first.alpha) else None,
        log10_sharpness=s, log10_volume=v,
        sharpness_jump_factor=float(10 ** jump) if jump is not None else None,
        volume_change_at_alpha=diff(v, "before_alpha", "after_alpha"),
        sharpness_change_zero_to_alpha=diff(s, "zero_error", "before_alpha"),
        volume_change_zero_to_alpha=diff(v, "zero_error", "before_alpha"),
    )


def temporal_runs(series: pd.DataFrame | None, runs: pd.DataFrame | None = None,
                  alphas: Sequence[float] = ()) -> list[RunSeries]:
    """The runs of `series` that have a sharpness or volume curve (more than one epoch).

    Args:
        series: Long per-epoch table, or None.
        runs: Runs table supplying each run's fitted_at (optional).
        alphas: The α of the spec's events, in epoch order.

    Returns:
        The RunSeries with a sharpness or volume curve (empty when series is None or empty).

    Raises:
        DataError: If series lacks the epoch, metric or value column.
    """
    if series is None or series.empty:
        return []
    out = []
    for rs in split_runs(series, runs, alphas):
        for metric in SHARPNESS_METRICS + VOLUME_METRICS:
            if metric in rs.table.columns and rs.table[metric].notna().sum() > 1:
                out.append(rs)
                break
    return out
