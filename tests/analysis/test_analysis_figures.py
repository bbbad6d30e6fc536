"""Figures: each renders to non-empty PNG and PDF files and shows what it claims to show."""

from __future__ import annotations

import numpy as np
import pytest
from analysis_helpers import make_runs, make_series
from scipy import stats

from flatvol.analysis.correlations import fitted_runs
from flatvol.analysis.figures import (
    ATTACK_LABEL,
    fig3_scatter,
    fig4_optimizers,
    fig5_temporal,
    make_figures,
    save_figure,
)
from flatvol.analysis.temporal import temporal_runs
from flatvol.errors import DataError


def _small_runs():
    return make_runs(attack_sizes=range(0, 301, 100), seeds=range(2))


def _assert_files(files):
    png, pdf = files.png.read_bytes(), files.pdf.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert pdf.startswith(b"%PDF") and len(pdf) > 5_000


def _colorbar_labels(fig):
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_fig3_scatter(tmp_path):
    runs = _small_runs()
    fig = fig3_scatter(runs)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_ylabel() for ax in panels] == [r"$\log_{10} V(f)$", r"$-\log_{10}$ sharpness"]
    assert _colorbar_labels(fig) == [ATTACK_LABEL]
    fitted = fitted_runs(runs)
    tau = stats.kendalltau(fitted.log10_volume, fitted.test_acc_E).statistic
    assert f"= {tau:.2f} (n = {len(fitted)})" in panels[0].get_title()
    # every fitted run is a point, coloured by its attack size
    offsets = np.concatenate([c.get_offsets() for c in panels[0].collections])
    assert len(offsets) == len(fitted)
    _assert_files(save_figure(fig, tmp_path, "fig3"))


def test_fig4_one_column_per_optimizer(tmp_path):
    fig = fig4_optimizers(_small_runs())
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 4 and len(_colorbar_labels(fig)) == 1
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["adam", "sgd", "adam", "sgd"]
    _assert_files(save_figure(fig, tmp_path, "fig4"))


def test_fig5_markers_and_insets(tmp_path):
    (rs,) = temporal_runs(make_series())
    fig = fig5_temporal(rs)
    sharp_ax, vol_ax, acc_ax = fig.axes[:3]
    for ax in (sharp_ax, vol_ax, acc_ax):
        xs = sorted(line.get_xdata()[0] for line in ax.lines if len(line.get_xdata()) == 2
                    and line.get_xdata()[0] == line.get_xdata()[1])
        assert xs == [40, 90]  # zero-error and alpha vertical markers
    for ax in (sharp_ax, vol_ax):  # an inset zoomed around the alpha event
        (inset,) = ax.child_axes
        lo, hi = inset.get_xlim()
        assert lo < 90 < hi and hi - lo < 20
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["zero training error (epoch 40)", "α = 5.9 scaling of layer 1 (epoch 90)"]
    _assert_files(save_figure(fig, tmp_path, "fig5"))


def test_make_figures_names_and_errors(tmp_path):
    runs = _small_runs().drop(columns=["hessian_top_eig", "hessian_trace",
                                       "log10_volume_conditional"])
    made = make_figures(runs[runs.optimizer == "sgd"], None, tmp_path)
    assert [m.name for m in made] == ["fig3_scatter"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig3_scatter.pdf", "fig3_scatter.png"]
    with pytest.raises(DataError, match="Fig. 3 needs"):
        fig3_scatter(runs.drop(columns=["log10_volume", "log10_sharpness"]))
    series = make_series()
    (rs,) = temporal_runs(series)
    rs.table = rs.table.drop(columns=["log10_sharpness", "log10_volume"])
    with pytest.raises(DataError, match="no sharpness or volume metric"):
        fig5_temporal(rs)
