"""sgd-vs-bayes statistics and figures: P_opt(f|S) (how often an optimizer finds f on E) against
V(f|S) (the NNGP prior's conditional volume), per optimizer.

Pure functions of the samples and the volume table (flatvol.sgd_vs_bayes.function_store), shared
by `flatvol sgd-vs-bayes` (its CSV, summary and PNGs) and `flatvol report` (its section). A
function is its labels on E: '0'/'1' per point for binary, the class 0..K-1 for K classes, whose
per-point statistics compare whole label distributions (decisiveness, total variation) and reduce
to the binary ones for K = 2.
Figures use matplotlib's object API on the Agg canvas (no pyplot state).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from flatvol.analysis.figures import MadeFigure, literal_text, new_figure, save_figure
from flatvol.analysis.report_html import esc, figure_html, fmt, frame_html, slug
from flatvol.sgd_vs_bayes.function_store import (
    FunctionExperiment,
    FunctionSample,
    VolumeTable,
    decode_function,
)

FUNCTION_COLUMNS = ("optimizer", "function", "count", "p_opt", "log10_p_opt",
                    "log10_v_conditional", "log10_v_full", "ep_converged", "errors_E")

# what the per-point table shows: binary, K classes
POINTS_TEXT = ("Prior P(label 1 | y_S) beside each optimizer's frequency of label 1.",
               "Prior P(true label | y_S) and its most likely class beside each optimizer's "
               "frequency of the true label and its most frequent class.")


@dataclass(frozen=True)
class OptimizerSummary:
    optimizer: str
    networks: int
    fitted: int
    distinct_functions: int
    median_epochs: float
    mean_test_error: float
    resolved_functions: int  # seen >= analysis.min_count times
    pearson_log10: float  # over resolved functions: log10 P_opt vs log10 V(f|S)
    spearman: float
    top_within_10x: float  # fraction of the `top` most frequent functions with |log10 ratio| <= 1
    top_median_abs_log10_ratio: float
    # sum of V(f|S) over the functions found: how much of the NNGP posterior they hold
    posterior_mass_found: float = math.nan
    # mean over E of decisiveness(P_opt labels) - decisiveness(NNGP posterior): > 0 when the
    # trained networks are more decisive, point by point, than the posterior (binary:
    # |2 P_opt(label 1) - 1| - |2 P(label 1 | y_S) - 1|; see `decisiveness` for K classes)
    decisiveness_gap: float = math.nan
    top_functions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[k] = None
        return out


def class_frequencies(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per point, the fraction of functions giving it each class.

    Args:
        labels: (N, |E|) classes 0..K-1 (N >= 1 functions).
        n_classes: K.

    Returns:
        (|E|, K) frequencies.
    """
    return np.stack([(labels == c).mean(axis=0) for c in range(n_classes)], axis=1)


def decisiveness(probabilities: np.ndarray) -> np.ndarray:
    """Per point, how far a label distribution is from uniform: 0 uniform, 1 certain.

    Args:
        probabilities: (|E|,) P(label 1) of binary labels, or (|E|, K) P(label k).

    Returns:
        (|E|,): |2 p - 1| for binary; (K max_k p_k - 1) / (K - 1) for K classes, which is
        the same number for K = 2 (max(p, 1 - p) = (1 + |2 p - 1|) / 2).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 1:
        return np.abs(2 * p - 1)
    k = p.shape[1]
    return (k * p.max(axis=1) - 1) / (k - 1)


def label_frequency_gap(sample: FunctionSample, prior_marginals: np.ndarray,
                        n_classes: int = 2) -> float:
    """Mean over E of the distance between the fitted networks' label frequencies and the
    NNGP posterior's marginals: |P_opt(label 1) - P(label 1 | y_S)| for binary, the total
    variation distance 1/2 sum_k |P_opt(k) - P(k | y_S)| for K classes (the same for K = 2).

    Args:
        sample: one optimizer's networks.
        prior_marginals: (|E|,) P(label 1 | y_S), or (|E|, K) P(label k | y_S).
        n_classes: K.

    Returns:
        The mean distance (nan without a fitted network).
    """
    fitted = sample.labels_E[sample.fitted]
    if not len(fitted):
        return math.nan
    prior = np.asarray(prior_marginals, dtype=np.float64)
    if n_classes == 2:
        return float(np.mean(np.abs(fitted.mean(axis=0) - prior)))
    return float(np.mean(0.5 * np.abs(class_frequencies(fitted, n_classes) - prior).sum(axis=1)))


def function_rows(sample: FunctionSample, volumes: VolumeTable, y_E: np.ndarray
                  ) -> list[dict[str, Any]]:
    """One row per function the fitted networks found, most frequent first.

    Args:
        sample: one optimizer's networks.
        volumes: V(y_S) and V(y_S, f) (functions without a volume get nan), and K.
        y_E: the true labels on E (0/1, or classes 0..K-1).

    Returns:
        Dicts with the FUNCTION_COLUMNS.
    """
    counts = sample.counts()
    n = max(sample.n_fitted, 1)
    rows = []
    for function, count in counts.most_common():
        has_v = function in volumes.log10_v_full
        rows.append({
            "optimizer": sample.optimizer,
            "function": function,
            "count": count,
            "p_opt": count / n,
            "log10_p_opt": math.log10(count / n),
            "log10_v_conditional": volumes.conditional(function) if has_v else math.nan,
            "log10_v_full": volumes.log10_v_full[function] if has_v else math.nan,
            "ep_converged": volumes.converged[function] if has_v else False,
            "errors_E": int(np.sum(decode_function(function, volumes.n_classes) != y_E)),
        })
    return rows


def summarize(sample: FunctionSample, rows: list[dict[str, Any]], y_E: np.ndarray, *,
              min_count: int, top: int, prior_marginals: np.ndarray | None = None,
              n_classes: int = 2) -> OptimizerSummary:
    """Counts, test error and the agreement of log10 P_opt with log10 V(f|S) for one optimizer.

    Args:
        sample, rows: the optimizer's networks and its function_rows.
        y_E: the true labels on E.
        min_count: functions seen fewer times are left out of the correlations.
        top: how many of the most frequent functions the summary lists.
        prior_marginals: per E point, the NNGP posterior's P(label 1 | y_S) (|E|,) or, for
            K classes, P(label k | y_S) (|E|, K), for the decisiveness gap (nan without it).
        n_classes: K.

    Returns:
        The OptimizerSummary.
    """
    resolved = [r for r in rows if r["count"] >= min_count
                and math.isfinite(r["log10_v_conditional"])]
    p = np.array([r["log10_p_opt"] for r in resolved])
    v = np.array([r["log10_v_conditional"] for r in resolved])
    if len(resolved) >= 3 and np.ptp(p) > 0 and np.ptp(v) > 0:
        pearson = float(stats.pearsonr(p, v)[0])
        spearman = float(stats.spearmanr(p, v)[0])
    else:
        pearson = spearman = math.nan
    best = [r for r in rows[:top] if math.isfinite(r["log10_v_conditional"])]
    ratios = np.array([r["log10_p_opt"] - r["log10_v_conditional"] for r in best])
    fitted_rows = sample.labels_E[sample.fitted]
    test_error = float(np.mean(fitted_rows != y_E[None, :])) if len(fitted_rows) else math.nan
    with_v = [r["log10_v_conditional"] for r in rows if math.isfinite(r["log10_v_conditional"])]
    mass = float(np.sum(np.power(10.0, with_v))) if with_v else math.nan
    gap = math.nan
    if prior_marginals is not None and len(fitted_rows) and len(prior_marginals) == len(y_E):
        found = (fitted_rows.mean(axis=0) if n_classes == 2
                 else class_frequencies(fitted_rows, n_classes))
        gap = float(np.mean(decisiveness(found) - decisiveness(prior_marginals)))
    return OptimizerSummary(
        optimizer=sample.optimizer,
        networks=len(sample.seeds),
        fitted=sample.n_fitted,
        distinct_functions=len(rows),
        median_epochs=float(np.median(sample.epochs)),
        mean_test_error=test_error,
        resolved_functions=len(resolved),
        pearson_log10=pearson,
        spearman=spearman,
        top_within_10x=float(np.mean(np.abs(ratios) <= 1)) if len(ratios) else math.nan,
        top_median_abs_log10_ratio=float(np.median(np.abs(ratios))) if len(ratios) else math.nan,
        posterior_mass_found=mass,
        decisiveness_gap=gap,
        top_functions=[{k: r[k] for k in ("function", "count", "p_opt", "log10_p_opt",
                                          "log10_v_conditional", "errors_E")} for r in best],
    )


def point_rows(samples: Mapping[str, FunctionSample], volumes: VolumeTable, y_E: np.ndarray
               ) -> list[dict[str, Any]]:
    """Per E point: its label, the prior's P(label 1 | y_S) and each optimizer's frequency of
    label 1; for K classes, the prior's probability of the true label and its most likely
    class, and each optimizer's frequency of the true label and most frequent class.

    Args:
        samples: each optimizer's networks.
        volumes: the per-point marginals and K.
        y_E: the true labels on E.

    Returns:
        One dict per E point.
    """
    if volumes.n_classes > 2:
        return _class_point_rows(samples, volumes, y_E)
    out = []
    for j in range(len(y_E)):
        row: dict[str, Any] = {"point": j, "label": int(y_E[j]),
                               "prior_p_label1": float(volumes.prior_marginals[j])}
        for name, sample in samples.items():
            fitted = sample.labels_E[sample.fitted]
            row[f"{name}_p_label1"] = float(fitted[:, j].mean()) if len(fitted) else math.nan
        out.append(row)
    return out


def _class_point_rows(samples: Mapping[str, FunctionSample], volumes: VolumeTable,
                      y_E: np.ndarray) -> list[dict[str, Any]]:
    k = volumes.n_classes
    prior = np.asarray(volumes.prior_marginals, dtype=np.float64)
    found = {name: class_frequencies(s.labels_E[s.fitted], k) if s.n_fitted else None
             for name, s in samples.items()}
    out = []
    for j, label in enumerate(int(y) for y in y_E):
        row: dict[str, Any] = {"point": j, "label": label,
                               "prior_p_label": float(prior[j, label]),
                               "prior_top_class": _top_class(prior[j])}
        for name, freq in found.items():
            row[f"{name}_p_label"] = math.nan if freq is None else float(freq[j, label])
            row[f"{name}_top_class"] = None if freq is None else _top_class(freq[j])
        out.append(row)
    return out


def _top_class(probabilities: np.ndarray) -> int | None:
    """The most likely class (the lowest on a tie), None where a probability is unknown."""
    return int(np.argmax(probabilities)) if np.all(np.isfinite(probabilities)) else None


@dataclass(frozen=True)
class SgdVsBayesAnalysis:
    """Rows (one per optimizer and function), per-optimizer summaries, per-point rows and each
    optimizer's label_frequency_gap."""

    rows: list[dict[str, Any]]
    summaries: list[OptimizerSummary]
    points: list[dict[str, Any]]
    label_frequency_gaps: dict[str, float] = field(default_factory=dict)

    def optimizer_summaries(self) -> dict[str, dict[str, Any]]:
        """Each summary as a dict, with `mean_abs_label_frequency_gap`: the mean over E of
        |P_opt(label 1) - prior P(label 1)| (K classes: of the total variation distance)."""
        return {s.optimizer: {**s.to_dict(), "mean_abs_label_frequency_gap":
                              self.label_frequency_gaps.get(s.optimizer, math.nan)}
                for s in self.summaries}


def analyse(samples: Mapping[str, FunctionSample], volumes: VolumeTable, y_E: np.ndarray, *,
            min_count: int, top: int) -> SgdVsBayesAnalysis:
    """function_rows, summarize and point_rows for every optimizer (in the samples' order)."""
    rows: list[dict[str, Any]] = []
    summaries = []
    for sample in samples.values():
        opt_rows = function_rows(sample, volumes, y_E)
        rows.extend(opt_rows)
        summaries.append(summarize(sample, opt_rows, y_E, min_count=min_count, top=top,
                                   prior_marginals=volumes.prior_marginals,
                                   n_classes=volumes.n_classes))
    gaps = {name: label_frequency_gap(sample, volumes.prior_marginals, volumes.n_classes)
            for name, sample in samples.items()}
    return SgdVsBayesAnalysis(rows, summaries, point_rows(samples, volumes, y_E), gaps)


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.2f}"


def p_opt_vs_v_figure(rows: Sequence[dict[str, Any]], summaries: Sequence[OptimizerSummary], *,
                      per_optimizer: bool, estimator: str = "ep-orthant",
                      min_count: int = 5, n_classes: int = 2) -> Figure:
    """Log-log scatter of P_opt(f|S) against V(f|S) with the diagonal.

    Args:
        rows, summaries: from analyse().
        per_optimizer: True for one panel per optimizer, points coloured by the number of errors
            on E (Mingard et al.'s figure); False for all optimizers on one panel.
        estimator, min_count: named in the labels.
        n_classes: K, named in the labels of a K-class experiment (a function is its K-class
            labels on E; errors on E count the points whose class is wrong).

    Returns:
        The Figure (save it with flatvol.analysis.figures.save_figure or fig.savefig).
    """
    names = [s.optimizer for s in summaries]
    panels = len(names) if per_optimizer else 1
    fig = new_figure(5.2 * panels, 4.8)
    axes = fig.subplots(1, panels, squeeze=False)
    finite = [r for r in rows if math.isfinite(r["log10_v_conditional"])]
    lo = (min(min(r["log10_v_conditional"] for r in finite),
              min(r["log10_p_opt"] for r in finite)) - 0.3) if finite else -6.0
    max_err = max([r["errors_E"] for r in finite], default=1)
    for i, name in enumerate(names if per_optimizer else [None]):
        ax = axes[0, i]
        selected = [s for s in summaries if name is None or s.optimizer == name]
        scatter = None
        # Explicit legend handles: matplotlib's automatic legend drops every artist whose
        # label starts with "_", which would hide an optimizer named so.
        handles = []
        for k, s in enumerate(selected):
            pts = [r for r in finite if r["optimizer"] == s.optimizer]
            x = [10 ** r["log10_v_conditional"] for r in pts]
            y = [r["p_opt"] for r in pts]
            size = [8 + 4 * math.log10(r["count"]) ** 2 for r in pts]
            label = literal_text(f"{s.optimizer}: N={s.fitted}, {s.distinct_functions} "
                                 f"functions, r={_fmt(s.pearson_log10)} "
                                 f"({s.resolved_functions} with count>={min_count})")
            if per_optimizer:
                scatter = ax.scatter(x, y, c=[r["errors_E"] for r in pts], cmap="viridis",
                                     s=size, vmin=0, vmax=max(max_err, 1), alpha=0.8,
                                     edgecolors="none", label=label)
                handles.append(scatter)
            else:
                handles.append(ax.scatter(x, y, s=size, alpha=0.6, edgecolors="none",
                                          label=label, color=f"C{k}"))
        handles += ax.plot([10**lo, 1], [10**lo, 1], "k--", lw=1, label="P_opt = V")
        handles.append(ax.fill_between([10**lo, 1], [10 ** (lo - 1), 0.1],
                                       [10 ** (lo + 1), 10], color="grey", alpha=0.12,
                                       label="within 10x"))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(10**lo, 1.5)
        ax.set_ylim(10**lo, 1.5)
        classes = f"{n_classes} classes, " if n_classes > 2 else ""
        ax.set_xlabel(f"V(f|S)  (NNGP prior, {classes}{literal_text(estimator)})")
        ax.set_ylabel("P_opt(f|S)  (frequency over trained networks)")
        title = literal_text(name) if name is not None else "P_opt(f|S) vs V(f|S)"
        ax.set_title(title + (f" ({n_classes} classes)" if n_classes > 2 else ""))
        ax.legend(handles=handles, fontsize=7, loc="upper left")
        if scatter is not None and finite:
            fig.colorbar(scatter, ax=ax, label="errors on E (points whose label is wrong)"
                         if n_classes > 2 else "errors on E")
    return fig


def sgd_vs_bayes_section(experiment: FunctionExperiment, figures_dir: Path,
                         page_dir: Path | None = None, level: int = 2) -> str:
    """The report's HTML for one recorded sgd-vs-bayes experiment: per-optimizer summary, the
    two P_opt vs V figures (saved as PNG + PDF under `figures_dir`), the most frequent functions
    and the per-point label frequencies.

    Args:
        experiment: read back by flatvol.sgd_vs_bayes.function_store.load_experiments.
        figures_dir: where the figures are written.
        page_dir: figure paths in captions are relative to it.
        level: heading level of the section.

    Returns:
        The section's HTML.
    """
    info, h = experiment.info, f"h{level}"
    settings = info.get("analysis", {})
    min_count, top = int(settings.get("min_count", 5)), int(settings.get("top", 20))
    result = analyse(experiment.samples, experiment.volumes, experiment.y_E,
                     min_count=min_count, top=top)
    n_classes = experiment.n_classes
    classes = (f" ({n_classes} classes: a function is its classes on E, one digit "
               f"0..{n_classes - 1} per point)" if n_classes > 2 else "")
    head = (f"<{h} id='{esc(slug(info['name']))}'>sgd-vs-bayes: {esc(info['name'])} "
            f"<small>({esc(experiment.spec_hash)})</small></{h}>"
            f"<p>P_opt(f|S), the frequency of each function f on E among networks trained to fit "
            f"S, against the NNGP prior's conditional volume V(f|S) ({esc(info['estimator'])}, "
            f"{esc(experiment.volumes.kernel)} kernel); {esc(info['task'])} "
            f"{esc(info['classes'])}{esc(classes)}, |S| = {info['train_size']}, "
            f"|E| = {info['test_size']}, "
            f"model {esc(info['model'])}, log10 V(y_S) = "
            f"{fmt(experiment.volumes.log10_v_train)}. Correlations over functions seen at least "
            f"{min_count} times.</p>")
    summary = pd.DataFrame([{k: v for k, v in s.items() if k != "top_functions"}
                            for s in result.optimizer_summaries().values()])
    made = []
    for stem, per_optimizer, caption in (
            ("p_opt_vs_v", False, "P_opt(f|S) against V(f|S), all optimizers"),
            ("mingard", True, "one panel per optimizer, coloured by errors on E")):
        fig = p_opt_vs_v_figure(result.rows, result.summaries, per_optimizer=per_optimizer,
                                estimator=info["estimator"], min_count=min_count,
                                n_classes=n_classes)
        made.append(MadeFigure(stem, caption, save_figure(fig, figures_dir, stem)))
    rows = pd.DataFrame(result.rows, columns=list(FUNCTION_COLUMNS))
    return "".join([
        head, f"<{h}>Per optimizer</{h}>", frame_html(summary),
        "".join(figure_html(f, page_dir) for f in made),
        f"<{h}>Most frequent functions</{h}>", frame_html(rows, max_rows=4 * top),
        f"<{h}>Per E point</{h}><p>{esc(POINTS_TEXT[n_classes > 2])}</p>",
        frame_html(pd.DataFrame(result.points))])


# the columns summarized over draws
SPREAD_COLUMNS = ("resolved_functions", "pearson_log10", "spearman",
                  "top_median_abs_log10_ratio", "top_within_10x", "log10_ratio_most_frequent",
                  "posterior_mass_found", "decisiveness_gap", "mean_test_error")


def spread_over_draws(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, standard deviation, minimum and maximum over the draws of each SPREAD_COLUMNS
    statistic, per (posterior, size, optimizer); nan values (a statistic a draw could not
    give, e.g. a correlation over fewer than 3 functions) are left out and counted.

    Args:
        rows: per-draw rows (DRAW_COLUMNS).

    Returns:
        One dict per (posterior, size, optimizer), in the rows' order.
    """
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    out = []
    for (posterior, size, optimizer), group in frame.groupby(
            ["posterior", "size", "optimizer"], sort=False):
        entry: dict[str, Any] = {"posterior": posterior, "size": int(size),
                                 "optimizer": optimizer, "draws": len(group)}
        for column in SPREAD_COLUMNS:
            values = group[column].astype(float)
            finite = values[np.isfinite(values)]
            entry[column] = {
                "mean": float(finite.mean()) if len(finite) else math.nan,
                "sd": float(finite.std(ddof=1)) if len(finite) > 1 else math.nan,
                "min": float(finite.min()) if len(finite) else math.nan,
                "max": float(finite.max()) if len(finite) else math.nan,
                "draws": len(finite)}
        out.append(entry)
    return out


def resampled_figure(spread: list[dict[str, Any]]) -> Any:
    """Three panels against |E|: median |log10 P_opt/P_B| over the top functions, log10
    P_opt/P_B of the most frequent function, and the Spearman correlation; a line per
    posterior and optimizer, its bar the standard deviation over the draws."""
    fig = new_figure(13, 4.2)
    axes = fig.subplots(1, 3)
    panels = (("top_median_abs_log10_ratio", "median |log10 P_opt / P_B|, top functions"),
              ("log10_ratio_most_frequent", "log10 P_opt / P_B, most frequent function"),
              ("spearman", "Spearman(log P_opt, log P_B), resolved functions"))
    frame = pd.DataFrame(spread)
    # a colour per posterior, a line style and marker per optimizer
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    posteriors = list(dict.fromkeys(frame["posterior"]))
    optimizers = list(dict.fromkeys(frame["optimizer"]))
    for ax, (column, title) in zip(axes, panels, strict=True):
        for (posterior, optimizer), group in frame.groupby(["posterior", "optimizer"],
                                                           sort=False):
            line, marker = styles[optimizers.index(optimizer) % len(styles)]
            # a spread read back from the store holds None where a statistic was nan
            mean, sd = ([math.nan if g[column][k] is None else g[column][k]
                         for g in group.to_dict("records")] for k in ("mean", "sd"))
            ax.errorbar(group["size"], mean, yerr=np.nan_to_num(sd), capsize=3,
                        linestyle=line, marker=marker,
                        color=f"C{posteriors.index(posterior)}",
                        label=f"{posterior}, {optimizer}")
        ax.set_xlabel("|E|")
        ax.set_title(title, fontsize=9)
        ax.axhline(0.0, color="0.7", linewidth=0.8)
    axes[0].legend(fontsize=7)
    return fig


def resampled_section(info: dict[str, Any], figures_dir: Path, page_dir: Path | None = None,
                      level: int = 2) -> str:
    """The report's HTML of a comparison over draws of E: what was run, the spread over the
    draws of each statistic per (posterior, |E|, optimizer), and the figure.

    Args:
        info: the recorded experiment (flatvol.sgd_vs_bayes.resample.run_resampled).
        figures_dir: where the figure is written.
        page_dir: figure paths in captions are relative to it.
        level: the heading level.

    Returns:
        The section's HTML.
    """
    name = str(info["name"])
    r = info["resample"]
    rows = []
    for entry in info["spread"]:
        row: dict[str, Any] = {k: entry[k] for k in ("posterior", "size", "optimizer", "draws")}
        for column in SPREAD_COLUMNS:
            value = entry[column]
            mean, sd = (math.nan if value[k] is None else value[k] for k in ("mean", "sd"))
            row[column] = f"{_fmt(mean)} ± {_fmt(sd)}"
        rows.append(row)
    stem = f"resample-{slug(name)}"
    made = MadeFigure(stem, f"{name}: P_opt against P_B over draws of E (mean ± sd over the "
                      "draws)", save_figure(resampled_figure(info["spread"]), figures_dir, stem))
    return (f"<h{level} id='{esc(stem)}'>sgd-vs-bayes over draws of E: {esc(name)}</h{level}>"
            f"<p>|S| = {esc(info['train_size'])} ({esc(info['task'])} {esc(info['classes'])}), "
            f"{esc(info['model'])}; E drawn {esc(r['draws'])} times at each |E| in "
            f"{esc(r['sizes'])} from a pool of {esc(info['pool'])}; P_B(f|S) under "
            f"{esc(', '.join(r['posteriors']))} (flatvol.volume.predictive), "
            f"{esc(r['n_samples'])} importance samples each. Each cell: mean ± sd over the "
            "draws.</p>" + frame_html(pd.DataFrame(rows)) + figure_html(made, page_dir))
