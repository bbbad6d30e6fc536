"""Fixtures for the analysis tests (tables from analysis_helpers)."""

from __future__ import annotations

import pandas as pd
import pytest
from analysis_helpers import make_runs, make_series, write_store

from flatvol.analysis.report import ReportSettings, write_report


@pytest.fixture
def runs() -> pd.DataFrame:
    return make_runs()


@pytest.fixture
def series() -> pd.DataFrame:
    return make_series()


@pytest.fixture(scope="session")
def report(tmp_path_factory):
    """A report written from a real store (two specs: a sweep and a Fig-5 run), built once:
    (out_dir, report path, page text, the sweep's runs table)."""
    out = tmp_path_factory.mktemp("report")
    runs = make_runs(attack_sizes=range(0, 301, 100), seeds=range(2))
    write_store(out, runs, make_series())
    path = write_report(out, settings=ReportSettings(n_resamples=100))
    return out, path, path.read_text(encoding="utf-8"), runs
