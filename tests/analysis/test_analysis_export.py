"""CSV and Parquet export round trips; Parquet without pyarrow is a one-line FlatvolError."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from flatvol.analysis.correlations import correlation_table
from flatvol.analysis.export import (
    MissingDependencyError,
    export_csv,
    export_parquet,
    read_table,
)
from flatvol.errors import DataError, FlatvolError


def _mixed() -> pd.DataFrame:
    return pd.DataFrame({
        "optimizer": ["sgd", "adam", "sam"],
        "attack_size": [0, 50, 500],
        "log10_volume": [-312.123456789012345, np.nan, 1e-300],
        "test_acc_E": [0.1 + 0.2, 2 / 3, 1.0],
    })


def test_csv_round_trip_is_exact(tmp_path, runs):
    for frame in (_mixed(), runs, correlation_table(runs, n_resamples=50)):
        path = export_csv(frame, tmp_path / "t.csv")
        back = read_table(path)
        # Full float precision (%.17g); object columns with only None come back as float NaN.
        pd.testing.assert_frame_equal(back, frame, check_dtype=False)
        num = frame.select_dtypes("number").columns
        np.testing.assert_array_equal(back[num].to_numpy(float), frame[num].to_numpy(float))
    assert not list(tmp_path.glob("*.tmp"))


def test_parquet_round_trip_keeps_dtypes(tmp_path, runs):
    pytest.importorskip("pyarrow")
    for frame in (_mixed(), runs):
        back = read_table(export_parquet(frame, tmp_path / "sub" / "t.parquet"))
        pd.testing.assert_frame_equal(back, frame)


def test_parquet_without_pyarrow_is_one_line_error(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarrow" else real(name, *a))
    with pytest.raises(MissingDependencyError) as info:
        export_parquet(_mixed(), tmp_path / "t.parquet")
    assert isinstance(info.value, FlatvolError)
    assert "pyarrow" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "t.parquet").exists()


def test_unwritable_parquet_and_unknown_format(tmp_path):
    pytest.importorskip("pyarrow")
    bad = pd.DataFrame({"x": [1, "a", 2.5]})  # mixed object column: Arrow refuses it
    with pytest.raises(DataError, match="cannot write Parquet"):
        export_parquet(bad, tmp_path / "bad.parquet")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown table format"):
        read_table(tmp_path / "t.xlsx")
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "missing.csv")
