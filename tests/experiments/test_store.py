"""The SQLite store: WAL, one transaction per run, no duplicates, failed runs replaced on retry,
and the pandas views the analysis reads."""

import math
import sqlite3

import pytest

from flatvol.experiments import RunKey, RunRecord, Store, StoreError, runs_frame, series_frame
from flatvol.experiments.store_frames import INFO_COLUMNS, RUN_COLUMNS, SERIES_COLUMNS


def _record(seed=0, status="done", **kw):
    key = RunKey("h1", "sgd", 50, seed)
    defaults = dict(results={"test_acc_E": 0.8 + seed / 100, "log10_volume": -120.5 - seed,
                             "log10_sharpness": -0.5},
                    info={"train_status": "fitted", "epochs": 10, "fitted_at": 10,
                          "model": "fcn:8", "nested": {"x": [1, 2]}, "bad": math.nan},
                    series=[(1, "fit", "loss", 0.7), (1, "fit", "train_acc_S", 0.5),
                            (2, "post", "log10_volume", -121.0), (2, "alpha", "alpha", 5.9),
                            (2, "alpha", "log10_volume", -121.0)],
                    seconds=1.5, volume_estimator="ep-orthant")
    defaults.update(kw)
    return RunRecord(key, "c1", status, **defaults)


def test_round_trip_and_frames(tmp_path):
    with Store(tmp_path) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        store.add_spec("h1", "tiny", "{}", "spec.toml", "name = 'tiny'")
        store.record(_record(0))
        store.record(_record(1, results={"test_acc_E": 0.7, "extra": math.inf}))
        assert store.counts() == {"specs": 1, "runs": 2, "results": 5, "series": 10}
    runs = runs_frame(tmp_path)
    assert list(runs.columns[: len(RUN_COLUMNS)]) == list(RUN_COLUMNS)
    assert set(INFO_COLUMNS) <= set(runs.columns)
    assert runs["spec_name"].tolist() == ["tiny", "tiny"]
    assert runs["volume_estimator"].tolist() == ["ep-orthant", "ep-orthant"]
    assert runs["test_acc_E"].tolist() == [0.8, 0.7]
    assert runs.loc[0, "log10_volume"] == -120.5 and math.isnan(runs.loc[1, "log10_volume"])
    assert math.isnan(runs.loc[1, "extra"])  # non-finite values are stored as NULL
    assert runs.loc[0, "fitted_at"] == 10 and runs.loc[0, "model"] == "fcn:8"
    series = series_frame(tmp_path / "results.sqlite")
    assert list(series.columns) == list(SERIES_COLUMNS)
    first = series[series.seed == 0]
    # insertion order within an epoch: the 'post' value precedes the 'alpha' ones
    assert first[["epoch", "phase", "metric"]].values.tolist() == [
        [1, "fit", "loss"], [1, "fit", "train_acc_S"], [2, "post", "log10_volume"],
        [2, "alpha", "alpha"], [2, "alpha", "log10_volume"]]


def test_no_duplicates_and_failed_runs_are_replaced(tmp_path):
    with Store(tmp_path) as store:
        store.record(_record(0))
        with pytest.raises(StoreError, match="already recorded"):
            store.record(_record(0))
        store.record(_record(1, status="failed", reason="did_not_fit", results={}, series=[]))
        with pytest.raises(StoreError, match="already recorded"):
            store.record(_record(1), replace_failed=False)
        store.record(_record(1))  # a retry replaces the failed row, in one transaction
        assert store.counts()["runs"] == 2
        assert store.run_status(RunKey("h1", "sgd", 50, 1)) == ("done", "c1")
        assert store.run_status(RunKey("h1", "sgd", 50, 2)) is None
    runs = runs_frame(tmp_path)
    assert runs["status"].tolist() == ["done", "done"]


def test_a_failing_write_leaves_nothing(tmp_path):
    with Store(tmp_path) as store:
        bad = _record(0, series=[(1, "fit", "loss", 0.1), (1, "fit", "loss", 0.2)])  # not unique
        with pytest.raises(sqlite3.IntegrityError):
            store.record(bad)
        assert store.counts() == {"specs": 0, "runs": 0, "results": 0, "series": 0}
        store.record(_record(0))
        assert store.counts()["runs"] == 1


def test_missing_or_foreign_store(tmp_path):
    with pytest.raises(StoreError, match="no results store"):
        runs_frame(tmp_path / "nothing")
    other = tmp_path / "x" / "results.sqlite"
    other.parent.mkdir()
    sqlite3.connect(other).execute("CREATE TABLE t (a)").connection.commit()
    with pytest.raises(StoreError, match="not a flatvol results store"):
        series_frame(other.parent)


def test_info_json_is_strict_json_with_null_for_non_finite(tmp_path):
    import json

    import numpy as np

    info = {"f32": np.float32("inf"), "array": np.array([1.5, np.nan]), "nested": {"x": -math.inf},
            "ok": np.float64(0.25)}
    with Store(tmp_path) as store:
        store.record(_record(0, info=info))
        text = store.conn.execute("SELECT info_json FROM runs").fetchone()[0]

    def refuse(name):
        raise AssertionError(f"info_json is not strict JSON: {name}")

    assert json.loads(text, parse_constant=refuse) == {
        "f32": None, "array": [1.5, None], "nested": {"x": None}, "ok": 0.25}
