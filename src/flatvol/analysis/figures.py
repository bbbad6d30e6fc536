"""The paper's figures with matplotlib (object API on the Agg canvas: no pyplot state, no display).

- Fig. 3: generalization against log10 V(f) and against -log10 sharpness, one point per run,
  coloured by attack-set size (colorbar), Kendall tau in each panel title.
- Fig. 4: the same panels, one column per optimizer, sharing the colour scale.
- Fig. 5: sharpness and V(f) over training epochs for one run, with the zero-training-error epoch,
  the α-scaling events and an inset zoomed around the first α event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats

from flatvol.analysis.correlations import fitted_runs
from flatvol.analysis.measures import (
    SHARPNESS,
    VOLUME,
    Measure,
    numeric_column,
    resolve_measures,
)
from flatvol.analysis.temporal import RunSeries, temporal_runs
from flatvol.errors import DataError

GENERALIZATION_LABELS = {
    "test_acc_E": "test accuracy on E",
    "test_error_E": "test error on E",
    "generalization_error": "generalization error",
}
ATTACK_LABEL = "attack-set size |A|"
CMAP = "viridis"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
ZERO_ERROR_STYLE = {"color": "0.35", "linestyle": "--", "linewidth": 1.2}
ALPHA_STYLE = {"color": "tab:red", "linestyle": ":", "linewidth": 1.5}


@dataclass(frozen=True)
class FigureFiles:
    """The files one figure was saved to."""

    png: Path
    pdf: Path


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, directory: str | Path, stem: str, dpi: int = 150) -> FigureFiles:
    """Save `fig` as DIRECTORY/STEM.png and DIRECTORY/STEM.pdf."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    png, pdf = directory / f"{stem}.png", directory / f"{stem}.pdf"
    fig.savefig(png, dpi=dpi, format="png")
    fig.savefig(pdf, format="pdf")
    return FigureFiles(png, pdf)


def literal_text(text: object) -> str:
    """`text` as matplotlib draws it literally: every `$` escaped as `\\$`.

    Matplotlib parses any string with an even number of unescaped `$` as mathtext, so a
    user-supplied optimizer label such as `sgd $\\eta_{0.02$` would either render as math or
    make `savefig` raise. Every user-supplied string (optimizer labels, spec and column names,
    titles, legend entries) goes through here before it reaches matplotlib; our own deliberate
    math labels (`$\\log_{10} V(f)$`) do not. Only `$` needs escaping: outside math `\\`, `_`,
    `{`, `%` are drawn as they are, and an escaped `$` stays literal even where the string is
    joined to one of our math labels (mathtext turns `\\$` in its text parts back into `$`).

    Args:
        text: Any value; its str() is escaped.

    Returns:
        The escaped string.
    """
    return str(text).replace("$", r"\$")


def _generalization_label(column: str) -> str:
    return GENERALIZATION_LABELS.get(column) or literal_text(column)


def _measure_label(measure: Measure) -> str:
    """The measure's deliberate mathtext label from the catalogue, else its plain label drawn
    literally (a column name given by the user)."""
    return measure.plot_label or literal_text(measure.label)


def _attack_mappable(runs: pd.DataFrame, color_by: str | None) -> ScalarMappable | None:
    if color_by is None or color_by not in runs.columns:
        return None
    values = pd.to_numeric(runs[color_by], errors="coerce").dropna()
    if values.empty:
        return None
    vmin, vmax = float(values.min()), float(values.max())
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    return ScalarMappable(norm=Normalize(vmin, vmax), cmap=CMAP)


def _kendall_text(x: np.ndarray, y: np.ndarray) -> str:
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return f"n = {int(keep.sum())}"
    tau = stats.kendalltau(x[keep], y[keep]).statistic
    return f"Kendall $\\tau$ = {tau:.2f} (n = {int(keep.sum())})"


def _scatter_panel(ax, runs: pd.DataFrame, measure: Measure, generalization: str,
                   mappable: ScalarMappable | None, color_by: str | None,
                   marker_by: str | None) -> None:
    x = numeric_column(runs, generalization, "generalization column")
    y = measure.values(runs)
    groups = ([(None, runs.index)] if marker_by is None or marker_by not in runs.columns
              else [(k, g.index) for k, g in runs.groupby(marker_by, sort=True)])
    position = pd.Series(np.arange(len(runs)), index=runs.index)
    for i, (name, index) in enumerate(groups):
        rows = position.loc[index].to_numpy()
        color = (mappable.to_rgba(pd.to_numeric(runs.loc[index, color_by], errors="coerce"))
                 if mappable is not None else "tab:blue")
        ax.scatter(x[rows], y[rows], c=color, marker=MARKERS[i % len(MARKERS)], s=28,
                   edgecolors="0.2", linewidths=0.4, alpha=0.9,
                   label=None if name is None else literal_text(name))
    ax.set_xlabel(_generalization_label(generalization))
    ax.set_ylabel(_measure_label(measure))
    ax.set_title(_kendall_text(x, y), fontsize=10)
    ax.grid(True, alpha=0.3)
    if len(groups) > 1:
        # Neutral legend markers: the points' colours encode attack size, not the group.
        handles = [Line2D([], [], marker=MARKERS[i % len(MARKERS)], linestyle="", color="0.55",
                          markeredgecolor="0.2", label=literal_text(name))
                   for i, (name, _) in enumerate(groups)]
        ax.legend(handles=handles, fontsize=8, title=literal_text(marker_by), title_fontsize=8)


def scatter_figure(runs: pd.DataFrame, measures: Sequence[Measure | str] | None = None, *,
                   generalization: str = "test_acc_E", color_by: str | None = "attack_size",
                   marker_by: str | None = "optimizer", title: str | None = None,
                   fitted_only: bool = True, ncols: int | None = None) -> Figure:
    """Generalization (x) against each measure (y), one panel per measure, coloured by
    `color_by` with a colorbar; several optimizers get different markers."""
    if fitted_only:
        runs = fitted_runs(runs)
    if runs.empty:
        raise DataError("runs table: no fitted runs to plot")
    chosen = resolve_measures(runs, measures)
    if not chosen:
        raise DataError("runs table: no measure columns to plot")
    if marker_by is not None and (marker_by not in runs.columns or runs[marker_by].nunique() < 2):
        marker_by = None
    ncols = ncols or min(len(chosen), 3)
    nrows = int(np.ceil(len(chosen) / ncols))
    fig = new_figure(4.2 * ncols + 1.0, 3.6 * nrows + (0.4 if title else 0))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    mappable = _attack_mappable(runs, color_by)
    for ax, m in zip(axes, chosen, strict=False):
        _scatter_panel(ax, runs, m, generalization, mappable, color_by, marker_by)
    for ax in axes[len(chosen):]:
        ax.set_visible(False)
    if mappable is not None:
        fig.colorbar(mappable, ax=list(axes[:len(chosen)]), label=ATTACK_LABEL
                     if color_by == "attack_size" else literal_text(color_by), shrink=0.9)
    if title:
        fig.suptitle(literal_text(title))
    return fig


def _fig3_measures(runs: pd.DataFrame) -> list[Measure]:
    return [m for m in (VOLUME, SHARPNESS)
            if m.column in runs.columns and np.isfinite(m.values(runs)).any()]


def _fig3_title(measures: Sequence[Measure]) -> str:
    what = {(True, True): "volume and flatness", (True, False): "volume",
            (False, True): "flatness"}[(VOLUME in measures, SHARPNESS in measures)]
    return f"Generalization vs {what} (Fig. 3)"


def fig3_scatter(runs: pd.DataFrame, *, generalization: str = "test_acc_E",
                 title: str | None = None, fitted_only: bool = True) -> Figure:
    """Fig. 3: generalization vs log10 V(f) and vs -log10 sharpness, coloured by attack size.
    A panel whose column is absent (or all NaN) is left out; neither present raises DataError."""
    measures = _fig3_measures(runs)
    if not measures:
        raise DataError("runs table: Fig. 3 needs log10_volume or log10_sharpness")
    title = _fig3_title(measures) if title is None else title
    return scatter_figure(runs, measures, generalization=generalization, title=title,
                          fitted_only=fitted_only)


def fig4_optimizers(runs: pd.DataFrame, *, generalization: str = "test_acc_E",
                    measures: Sequence[Measure | str] | None = None,
                    optimizer_column: str = "optimizer", color_by: str | None = "attack_size",
                    title: str | None = "Per optimizer (Fig. 4)",
                    fitted_only: bool = True) -> Figure:
    """Fig. 4: one column per optimizer, one row per measure (default log10 V(f) and -log10
    sharpness), generalization on x, coloured by attack size on one shared colour scale."""
    if fitted_only:
        runs = fitted_runs(runs)
    if optimizer_column not in runs.columns:
        raise DataError(f"runs table: no column {optimizer_column!r} for Fig. 4")
    if runs.empty:
        raise DataError("runs table: no fitted runs to plot")
    if measures is None:
        measures = _fig3_measures(runs)
    chosen = resolve_measures(runs, measures)
    if not chosen:
        raise DataError("runs table: Fig. 4 needs log10_volume or log10_sharpness")
    optimizers = sorted(runs[optimizer_column].dropna().unique(), key=str)
    nrows, ncols = len(chosen), len(optimizers)
    fig = new_figure(3.4 * ncols + 1.2, 3.1 * nrows + (0.4 if title else 0))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey="row")
    mappable = _attack_mappable(runs, color_by)
    for j, opt in enumerate(optimizers):
        part = runs[runs[optimizer_column] == opt]
        for i, m in enumerate(chosen):
            ax = axes[i, j]
            _scatter_panel(ax, part, m, generalization, mappable, color_by, None)
            ax.set_title(f"{literal_text(opt)}\n{ax.get_title()}", fontsize=9)
            if j:
                ax.set_ylabel("")
    if mappable is not None:
        fig.colorbar(mappable, ax=list(axes.ravel()), label=ATTACK_LABEL
                     if color_by == "attack_size" else literal_text(color_by), shrink=0.9)
    if title:
        fig.suptitle(literal_text(title))
    return fig


# --- Fig. 5 ---------------------------------------------------------------------------------------

def _mark_events(ax, rs: RunSeries) -> None:
    if rs.zero_error_epoch is not None:
        ax.axvline(rs.zero_error_epoch, **ZERO_ERROR_STYLE)
    for event in rs.alpha_events:
        ax.axvline(event.epoch, **ALPHA_STYLE)


def _plot_curve(ax, rs: RunSeries, metric: str, ylabel: str, color: str) -> None:
    epochs, values = rs.curve(metric)
    ax.plot(epochs, values, color=color, linewidth=1.4, marker="." if len(epochs) < 60 else None)
    _mark_events(ax, rs)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


INSET_CORNERS = ((0.56, 0.52), (0.06, 0.52), (0.56, 0.08), (0.06, 0.08))
INSET_SIZE = (0.38, 0.38)


def _emptiest_corner(ax, x: np.ndarray, y: np.ndarray) -> list[float]:
    """Inset bounds (axes fraction) at the corner that covers the fewest curve points."""
    ax.autoscale_view()
    xy = ax.transAxes.inverted().transform(ax.transData.transform(np.column_stack([x, y])))
    w, h = INSET_SIZE
    counts = [int(((xy[:, 0] > x0 - 0.02) & (xy[:, 0] < x0 + w + 0.02)
                   & (xy[:, 1] > y0 - 0.04) & (xy[:, 1] < y0 + h + 0.1)).sum())
              for x0, y0 in INSET_CORNERS]
    x0, y0 = INSET_CORNERS[int(np.argmin(counts))]
    return [x0, y0, w, h]


def _inset_around_alpha(ax, rs: RunSeries, metric: str, color: str) -> None:
    if not rs.alpha_events:
        return
    epochs, values = rs.curve(metric)
    t = rs.alpha_events[0].epoch
    span = float(epochs.max() - epochs.min()) if epochs.size else 0.0
    half = max(3.0, 0.03 * span)
    window = (epochs >= t - half) & (epochs <= t + half)
    if window.sum() < 2:
        return
    inset = ax.inset_axes(_emptiest_corner(ax, epochs, values))
    inset.plot(epochs[window], values[window], color=color, marker=".", linewidth=1.2)
    inset.axvline(t, **ALPHA_STYLE)
    lo, hi = float(values[window].min()), float(values[window].max())
    pad = 0.08 * (hi - lo) if hi > lo else max(0.05, 0.05 * abs(hi))
    inset.set_xlim(t - half, t + half)
    inset.set_ylim(lo - pad, hi + pad)
    inset.tick_params(labelsize=7)
    inset.set_title(f"around α (epoch {t:g})", fontsize=7)
    ax.indicate_inset_zoom(inset, edgecolor="0.3")


def fig5_temporal(rs: RunSeries, *, title: str | None = None) -> Figure:
    """Fig. 5 for one run: log10 sharpness and log10 V(f) (and the training/test accuracy when
    logged) against epoch, a dashed line at the zero-training-error epoch, dotted red lines at
    α events, and insets zoomed around the first α event."""
    sharp = rs.first_metric(("log10_sharpness", "sharpness"))
    volume = rs.first_metric(("log10_volume",))
    accuracy = [m for m in ("train_acc_S", "test_acc_E") if rs.first_metric((m,))]
    panels: list[tuple[str, str, str]] = []
    if sharp:
        panels.append((sharp, r"$\log_{10}$ sharpness" if sharp.startswith("log10")
                       else "sharpness", "tab:orange"))
    if volume:
        panels.append((volume, r"$\log_{10} V(f)$", "tab:blue"))
    if not panels:
        raise DataError(f"series for run {rs.label}: no sharpness or volume metric "
                        f"(has: {', '.join(rs.metrics)})")
    nrows = len(panels) + (1 if accuracy else 0)
    fig = new_figure(7.5, 2.6 * len(panels) + (1.6 if accuracy else 0) + 0.6)
    ratios = [1.0] * len(panels) + ([0.6] if accuracy else [])
    axes = fig.subplots(nrows, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": ratios})[:, 0]
    for ax, (metric, ylabel, color) in zip(axes, panels, strict=False):
        _plot_curve(ax, rs, metric, ylabel, color)
        _inset_around_alpha(ax, rs, metric, color)
    if sharp == "sharpness":
        axes[0].set_yscale("log")
    if accuracy:
        ax = axes[-1]
        for metric, color in zip(accuracy, ("tab:green", "tab:purple"), strict=False):
            epochs, values = rs.curve(metric)
            ax.plot(epochs, values, color=color, linewidth=1.2, label=literal_text(metric))
        _mark_events(ax, rs)
        ax.set_ylabel("accuracy")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[-1].set_xlabel("epoch")
    handles = []
    if rs.zero_error_epoch is not None:
        handles.append(Line2D([], [], **ZERO_ERROR_STYLE,
                              label=f"zero training error (epoch {rs.zero_error_epoch:g})"))
    for event in rs.alpha_events[:1]:
        alpha = f"α = {event.alpha:g}" if np.isfinite(event.alpha) else "α"
        layer = f" of layer {event.layer}" if event.layer is not None else ""
        handles.append(Line2D([], [], **ALPHA_STYLE,
                              label=f"{alpha} scaling{layer} (epoch {event.epoch:g})"))
    fig.suptitle(literal_text(title) if title
                 else f"Training-time evolution (Fig. 5)\n{literal_text(rs.label)}", fontsize=11)
    if handles:
        fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncols=len(handles),
                   frameon=False)
    return fig


# --- everything at once -----------------------------------------------------------------------

@dataclass(frozen=True)
class MadeFigure:
    name: str
    caption: str
    files: FigureFiles


def make_figures(runs: pd.DataFrame | None, series: pd.DataFrame | None,
                 out_dir: str | Path, *, generalization: str = "test_acc_E",
                 max_temporal: int = 4, fitted_only: bool = True,
                 alphas: Sequence[float] = ()) -> list[MadeFigure]:
    """Every figure the data allows, saved under OUT_DIR as PNG + PDF:
    fig3_scatter (volume and sharpness), fig3_all_measures (when there are other measures),
    fig4_optimizers (more than one optimizer), fig5_temporal[_i] (runs with a sharpness or volume
    series, at most `max_temporal`; `alphas`: the spec's α values, for stores that mark α
    events by phase only)."""
    made: list[MadeFigure] = []

    def keep(name: str, fig: Figure, caption: str) -> None:
        made.append(MadeFigure(name, caption, save_figure(fig, out_dir, name)))

    if runs is not None and not runs.empty:
        usable = fitted_runs(runs) if fitted_only else runs
        # A scatter needs a few runs: a single-run spec (e.g. Fig. 5's) gets no Fig. 3.
        main = [m for m in (VOLUME, SHARPNESS)
                if m.column in usable.columns and np.isfinite(m.values(usable)).sum() >= 3]
        if main:
            keep("fig3_scatter", fig3_scatter(runs, generalization=generalization,
                                              fitted_only=fitted_only),
                 f"Generalization against {' and '.join(m.label for m in main)}; one point per "
                 "fitted run, coloured by attack-set size.")
            others = [m for m in resolve_measures(usable) if m not in main]
            if others:
                keep("fig3_all_measures",
                     scatter_figure(runs, [*main, *others], generalization=generalization,
                                    title="Generalization vs every measure",
                                    fitted_only=fitted_only),
                     "Generalization against every measure in the store (oriented so that "
                     "larger should mean better generalization).")
            if "optimizer" in usable.columns and usable["optimizer"].nunique() > 1:
                keep("fig4_optimizers", fig4_optimizers(runs, generalization=generalization,
                                                        fitted_only=fitted_only),
                     "The Fig. 3 panels for each optimizer, on one colour scale.")
    temporal = temporal_runs(series, runs, alphas)
    for i, rs in enumerate(temporal[:max_temporal]):
        name = "fig5_temporal" if len(temporal) == 1 else f"fig5_temporal_{i}"
        keep(name, fig5_temporal(rs),
             f"Sharpness and V(f) over training for {rs.label}: dashed line = zero training "
             "error, dotted red = alpha scaling; insets zoom on the first alpha event.")
    return made


__all__ = [
    "FigureFiles", "MadeFigure", "fig3_scatter", "fig4_optimizers",
    "fig5_temporal", "literal_text", "make_figures", "save_figure", "scatter_figure",
]
