"""Fig-5 series: event detection under the store's conventions and the summary numbers."""

from __future__ import annotations

import pandas as pd
import pytest
from analysis_helpers import make_series

from flatvol.analysis.temporal import AlphaEvent, split_runs, temporal_runs, temporal_summary
from flatvol.errors import DataError


def test_events_from_event_metrics(series):
    (rs,) = temporal_runs(series)
    assert rs.zero_error_epoch == 40
    assert rs.alpha_events == [AlphaEvent(90.0, 5.9, 1)]
    assert not {"alpha", "alpha_layer", "zero_error_epoch"} & set(rs.metrics)


def test_events_and_summary_from_phases():
    series = make_series(event_metrics=False)
    (rs,) = temporal_runs(series, alphas=[5.9])
    assert rs.zero_error_epoch == 40  # last 'fit' epoch
    assert [(e.epoch, e.alpha) for e in rs.alpha_events] == [(90.0, 5.9)]
    # At the event epoch the 'post' row (before scaling) precedes the 'alpha' row (after).
    at = rs.table[rs.table.epoch == 90]
    assert list(at.phase) == ["post", "alpha"]
    s = temporal_summary(rs)
    sharp = series[series.metric == "log10_sharpness"]
    before = sharp[(sharp.epoch == 90) & (sharp.phase == "post")].value.item()
    after = sharp[(sharp.epoch == 90) & (sharp.phase == "alpha")].value.item()
    assert s.log10_sharpness["before_alpha"] == before
    assert s.log10_sharpness["after_alpha"] == after
    assert s.sharpness_jump_factor == pytest.approx(1000.0)  # make_series jumps by 10**3
    assert s.volume_change_at_alpha == 0.0
    zero = sharp[sharp.epoch == 40].value.item()
    assert s.sharpness_change_zero_to_alpha == pytest.approx(before - zero)
    assert s.sharpness_change_zero_to_alpha < 0  # sharpness falls after zero error


def test_fitted_at_from_runs_and_alpha_metric_convention():
    series = make_series(event_metrics=False)
    series = series[series.phase != "alpha"].copy()
    series["phase"] = ""  # no phases at all
    alpha = series.iloc[:1].assign(epoch=90, metric="alpha", value=2.0)
    series = pd.concat([series, alpha], ignore_index=True)
    runs = pd.DataFrame([{"spec_hash": "t5", "optimizer": "sgd", "attack_size": 0, "seed": 0,
                          "fitted_at": 37}])
    (rs,) = split_runs(series, runs)
    assert rs.zero_error_epoch == 37
    assert [(e.epoch, e.alpha) for e in rs.alpha_events] == [(90.0, 2.0)]
    assert "alpha" not in rs.metrics
    # A lone row at the event epoch was measured before the scaling (after the epoch's update).
    s = temporal_summary(rs)
    sharp = series[series.metric == "log10_sharpness"].set_index("epoch").value
    assert s.log10_sharpness["before_alpha"] == sharp[90]
    assert s.log10_sharpness["after_alpha"] == sharp[91]


def test_zero_error_from_train_accuracy_and_runs_without_curves():
    series = make_series(fitted_at=30, event_metrics=False)
    series["phase"] = "train"
    (rs,) = split_runs(series)
    assert rs.zero_error_epoch == 30  # first epoch with train_acc_S = 1
    only_loss = series[series.metric == "train_acc_S"]
    assert temporal_runs(only_loss) == []
    assert temporal_runs(None) == []


def test_raw_sharpness_is_summarized_in_log10():
    series = make_series()
    sharp = series.metric == "log10_sharpness"
    series.loc[sharp, "value"] = 10 ** series.loc[sharp, "value"]
    series.loc[sharp, "metric"] = "sharpness"
    (rs,) = temporal_runs(series)
    s = temporal_summary(rs)
    assert s.sharpness_metric == "sharpness"
    assert s.sharpness_jump_factor == pytest.approx(1000.0)
    assert s.alpha == 5.9


def test_missing_series_columns_error():
    with pytest.raises(DataError, match="missing column"):
        split_runs(pd.DataFrame({"epoch": [1], "value": [0.0]}))
