"""The report's verdicts on the paper's claims respect the uncertainty: 'yes' only where the
confidence interval (and, for few runs, Kendall's test) supports it, else 'not established'
in a neutral colour, always with the number of runs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from flatvol.analysis.correlations import correlation_table, kendall_difference
from flatvol.analysis.report import ReportSettings, build_report_html
from flatvol.analysis.verdicts import (
    NO,
    NOT_ESTABLISHED,
    YES,
    min_runs_for_kendall_test,
    strong_correlation_verdict,
)

SETTINGS = ReportSettings(n_resamples=400)


def verdict_line(runs: pd.DataFrame, tmp_path, monkeypatch) -> str:
    """The headline's verdict item of the report on `runs` (figures left out: not tested)."""
    monkeypatch.setattr("flatvol.analysis.report.make_figures", lambda *a, **k: [])
    page = build_report_html(runs, figures_dir=tmp_path, settings=SETTINGS)
    (line,) = re.findall(r"<li>Volume correlation at least 0.6: .*?</li>", page)
    return line


def _runs(accuracy, volume, sharpness) -> pd.DataFrame:
    return pd.DataFrame({"test_acc_E": accuracy, "log10_volume": volume,
                         "log10_sharpness": sharpness})


@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.01, 0.001])
def test_min_runs_is_where_scipys_exact_test_first_reaches_alpha(alpha):
    def smallest_p(n: int) -> float:  # a perfectly monotone sample: the most extreme ordering
        return stats.kendalltau(np.arange(n), np.arange(n), method="exact").pvalue

    n = min_runs_for_kendall_test(alpha)
    assert smallest_p(n) < alpha <= smallest_p(n - 1)


def test_three_monotone_runs_establish_nothing(tmp_path, monkeypatch):
    # The case: tau = 1 with a degenerate bootstrap interval [1, 1] and p = 0.33.
    runs = _runs([0.7, 0.8, 0.9], [-300.0, -250.0, -200.0], [2.0, 1.0, 3.0])
    row = correlation_table(runs, n_resamples=400).set_index("measure").loc["log10_volume"]
    assert (row.kendall, row.kendall_low, row.kendall_high) == (1.0, 1.0, 1.0)
    line = verdict_line(runs, tmp_path, monkeypatch)
    assert "class='good'" not in line and "yes (n" not in line
    assert line.count("<span class='neutral'>not established (n = 3)</span>") == 2
    assert "needs at least 5 runs" in line


def test_clear_case_with_many_runs_is_yes(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    accuracy = np.linspace(0.6, 0.9, 24)
    runs = _runs(accuracy, -250 + 400 * accuracy + rng.normal(0, 2, 24), rng.normal(0, 1, 24))
    line = verdict_line(runs, tmp_path, monkeypatch)
    assert line.count("<span class='good'>yes (n = 24)</span>") == 2, line


def test_larger_volume_tau_with_overlapping_intervals_is_not_stronger(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    accuracy = np.linspace(0.6, 0.9, 20)
    # Both measures track accuracy equally noisily (sharpness with the sign the catalogue flips).
    runs = _runs(accuracy, accuracy + rng.normal(0, 0.08, 20),
                 -(accuracy + rng.normal(0, 0.08, 20)))
    table = correlation_table(runs, n_resamples=SETTINGS.n_resamples).set_index("measure")
    vol, sharp = table.loc["log10_volume"], table.loc["log10_sharpness"]
    assert vol.kendall > sharp.kendall and vol.kendall_low < sharp.kendall_high  # overlap
    line = verdict_line(runs, tmp_path, monkeypatch)
    stronger = line[line.index("stronger than the sharpness one"):]
    assert stronger.count("<span class='neutral'>not established (n = 20)</span>") == 1
    assert "of the tau difference" in stronger and "contains 0" in stronger


def test_interval_below_the_threshold_is_no():
    verdict = strong_correlation_verdict(30, 0.1, -0.15, 0.35, 0.4)
    assert (verdict.outcome, verdict.n) == (NO, 30)
    assert strong_correlation_verdict(30, 0.7, 0.5, 0.85, 1e-6).outcome == NOT_ESTABLISHED
    assert strong_correlation_verdict(30, 0.8, 0.65, 0.9, 1e-8).outcome == YES
    # a bootstrap interval above the threshold without a significant test is no support
    assert strong_correlation_verdict(6, 1.0, 1.0, 1.0, 0.06).outcome == NOT_ESTABLISHED


def test_kendall_difference_is_paired_and_deterministic():
    rng = np.random.default_rng(1)
    g = rng.normal(size=30)
    a, b = g + rng.normal(0, 0.5, 30), g + rng.normal(0, 1.5, 30)
    d = kendall_difference(a, b, g, n_resamples=300, seed=4)
    expected = stats.kendalltau(a, g).statistic - stats.kendalltau(b, g).statistic
    assert d.value == pytest.approx(expected, abs=1e-12)
    assert d.n == 30 and d.low < d.value < d.high
    assert kendall_difference(a, b, g, n_resamples=300, seed=4) == d
    # paired: each resample recomputes both taus on the same runs, so a measure compared with
    # itself differs by exactly 0 on every resample (separate resamples would scatter)
    same = kendall_difference(a, a.copy(), g, n_resamples=300, seed=4)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    # a NaN anywhere drops that run from all three columns
    a[0] = np.nan
    assert kendall_difference(a, b, g, n_resamples=0).n == 29
