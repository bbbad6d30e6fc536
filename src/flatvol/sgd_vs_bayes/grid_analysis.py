"""An sgd-vs-bayes grid in one table and one figure: how the gap between P_opt(f|S) and V(f|S)
moves with width, |S|, batch size and optimizer.

Pure functions of recorded experiments (flatvol.sgd_vs_bayes.function_store): each grid cell is
one experiment whose info carries {'grid': {'name', 'cell', 'values'}}. Shared by
`flatvol sgd-vs-bayes` (grid.csv, grid.json, grid.png) and `flatvol report` (its grid section).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from flatvol.analysis.figures import MadeFigure, literal_text, new_figure, save_figure
from flatvol.analysis.report_html import esc, figure_html, frame_html, slug
from flatvol.sgd_vs_bayes.analysis import analyse
from flatvol.sgd_vs_bayes.function_store import FunctionExperiment

GRID_COLUMNS = ("cell", "width", "train_size", "batch_size", "optimizer", "networks", "fitted",
                "distinct_functions", "resolved_functions", "pearson_log10", "spearman",
                "top_median_abs_log10_ratio", "top_within_10x", "posterior_mass_found",
                "decisiveness_gap", "mean_test_error", "median_epochs", "train_seconds",
                "volume_seconds")
# (summary key, axis label) of the figure's panels, each against width
GRID_PANELS = (("top_median_abs_log10_ratio", "median |log10(P_opt / V(f|S))|, top functions"),
               ("decisiveness_gap", "decisiveness gap (trained - NNGP posterior)"),
               ("posterior_mass_found", "NNGP posterior mass of the functions found"))


def grid_rows(experiments: Sequence[FunctionExperiment]) -> list[dict[str, Any]]:
    """One row per (grid cell, optimizer): the cell's axis values and the optimizer's summary.

    Args:
        experiments: recorded sgd-vs-bayes experiments; those without grid info are left out.

    Returns:
        Dicts with the GRID_COLUMNS, in the experiments' order.
    """
    rows = []
    for e in experiments:
        grid = e.info.get("grid")
        if grid is None:
            continue
        settings = e.info.get("analysis", {})
        result = analyse(e.samples, e.volumes, e.y_E, min_count=int(settings.get("min_count", 5)),
                         top=int(settings.get("top", 20)))
        seconds = e.info.get("seconds", {})
        for s in result.summaries:
            rows.append({"cell": grid["cell"], **grid["values"], "optimizer": s.optimizer,
                         **{k: getattr(s, k) for k in GRID_COLUMNS if hasattr(s, k)},
                         # ms: a small cell trains in a few hundredths of a second
                         "train_seconds": round(e.samples[s.optimizer].seconds, 3),
                         "volume_seconds": seconds.get("volumes", math.nan)})
    return [{k: r.get(k, math.nan) for k in GRID_COLUMNS} for r in rows]


def grid_figure(rows: Sequence[dict[str, Any]]) -> Figure:
    """The GRID_PANELS against width (log scale): one line per (|S|, batch size, optimizer);
    colour = |S|, line style = batch size, marker = optimizer.

    Args:
        rows: from grid_rows.

    Returns:
        The Figure.
    """
    fig = new_figure(5.0 * len(GRID_PANELS), 4.4)
    axes = fig.subplots(1, len(GRID_PANELS), squeeze=False)[0]
    frame = pd.DataFrame(list(rows), columns=list(GRID_COLUMNS))
    sizes = sorted(frame["train_size"].dropna().unique())
    batches = list(dict.fromkeys(str(b) for b in frame["batch_size"]))
    optimizers = list(dict.fromkeys(frame["optimizer"]))
    styles, markers = ("-", "--", ":", "-."), ("o", "s", "^", "D", "v")
    for ax, (key, label) in zip(axes, GRID_PANELS, strict=True):
        for (size, batch, opt), line in frame.groupby(
                ["train_size", frame["batch_size"].astype(str), "optimizer"], sort=False):
            line = line.sort_values("width")
            ax.plot(line["width"], line[key], color=f"C{sizes.index(size)}",
                    linestyle=styles[batches.index(batch) % len(styles)],
                    marker=markers[optimizers.index(opt) % len(markers)],
                    label=literal_text(f"|S|={size}, batch {batch}, {opt}"))
        ax.set_xscale("log")
        widths = sorted(frame["width"].dropna().unique())
        ax.set_xticks(widths, [str(int(w)) for w in widths])
        ax.minorticks_off()
        ax.set_xlabel("hidden width")
        ax.set_ylabel(label)
        if key == "decisiveness_gap":
            ax.axhline(0.0, color="k", lw=0.8)
        if key == "top_median_abs_log10_ratio":
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")  # a factor of 10
    axes[0].legend(fontsize=7)
    fig.suptitle("P_opt(f|S) against V(f|S) over the grid")
    return fig


def grid_section(experiments: Sequence[FunctionExperiment], figures_dir: Path,
                 page_dir: Path | None = None) -> str:
    """The report's HTML for the grids among `experiments` (one table and figure per grid);
    '' when none of them is a grid cell.

    Args:
        experiments: recorded sgd-vs-bayes experiments.
        figures_dir: where the figures are written.
        page_dir: figure paths in captions are relative to it.

    Returns:
        The section's HTML.
    """
    by_grid: dict[str, list[FunctionExperiment]] = {}
    for e in experiments:
        if "grid" in e.info:
            by_grid.setdefault(e.info["grid"]["name"], []).append(e)
    parts = []
    for name, cells in by_grid.items():
        rows = grid_rows(cells)
        made = MadeFigure(f"grid-{slug(name)}", f"grid {name}: the gap against width",
                          save_figure(grid_figure(rows), figures_dir, f"grid-{slug(name)}"))
        parts.append(
            f"<h2 id='grid-{esc(slug(name))}'>sgd-vs-bayes grid: {esc(name)}</h2>"
            "<p>One row per cell and optimizer. top_median_abs_log10_ratio: median "
            "|log10(P_opt / V(f|S))| over the most frequent functions; posterior_mass_found: "
            "sum of V(f|S) over the functions found; decisiveness_gap: mean over E of "
            "|2 P_opt(1) - 1| - |2 P(1 | y_S) - 1| (K classes: of (K max_k P_opt(k) - 1) / "
            "(K - 1) - (K max_k P(k | y_S) - 1) / (K - 1)).</p>"
            + frame_html(pd.DataFrame(rows, columns=list(GRID_COLUMNS)))
            + figure_html(made, page_dir))
    return "".join(parts)
