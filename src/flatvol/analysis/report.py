"""One self-contained HTML report: headline numbers, correlation tables, figures (embedded as
base64 PNG), the Fig-5 numbers, the spec text and the environment. No scripts, no external
resources: the page renders offline in any browser."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from flatvol.analysis.correlations import (
    DEFAULT_AXES,
    correlation_table,
    fitted_runs,
    kendall_difference,
)
from flatvol.analysis.figures import make_figures
from flatvol.analysis.measures import (
    SHARPNESS,
    VOLUME,
    Measure,
    constant_measures,
    numeric_column,
    resolve_measures,
)
from flatvol.analysis.report_html import (
    ci_text,
    correlation_html,
    esc,
    figure_html,
    fmt,
    frame_html,
    page_html,
    slug,
)
from flatvol.analysis.report_sections import report_sections
from flatvol.analysis.temporal import temporal_runs, temporal_summary
from flatvol.analysis.verdicts import (
    NO,
    NOT_ESTABLISHED,
    STRONG_TAU,
    YES,
    Verdict,
    strong_correlation_verdict,
    stronger_verdict,
)
from flatvol.errors import DataError
from flatvol.io import atomic_write_text

REPORT_NAME = "report.html"
FIGURES_DIR = "figures"


# --- reading a results directory -------------------------------------------------------------

@dataclass
class Results:
    """What a report is made from: the store's runs and series tables, and the specs (the
    store's specs_frame: spec_hash, name, spec_json, path, source_text) or a plain spec text."""

    runs: pd.DataFrame
    series: pd.DataFrame | None = None
    spec_text: str | None = None
    source: str | None = None
    specs: pd.DataFrame | None = None
    # experiments of the other kinds in the store (e.g. 'sgd-vs-bayes'), by kind, each read by
    # its registered section (flatvol.analysis.report_sections)
    experiments: dict[str, Sequence[Any]] = field(default_factory=dict)


def load_results(out_dir: str | Path) -> Results:
    """Read the SQLite store of DIR (written by `flatvol run SPEC --out DIR` or `flatvol
    sgd-vs-bayes SPEC --out DIR`)."""
    from flatvol.experiments.store import store_path
    from flatvol.experiments.store_frames import runs_frame, series_frame, specs_frame

    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise DataError(f"{out_dir}: no such results directory")
    path = store_path(out_dir)
    if not path.is_file():
        runs = sorted(p.parent.name for p in out_dir.glob("*/run.json"))
        if (out_dir / "run.json").is_file() or runs:
            raise DataError(f"{out_dir}: holds `flatvol train` runs, not a results store; "
                            f"gather them first: flatvol collect {out_dir}/*/ --out DIR, then "
                            "flatvol report DIR")
        raise DataError(f"{out_dir}: no results store {path.name} "
                        "(is this a directory written by `flatvol run SPEC --out DIR`?)")
    experiments = {section.kind: section.load(path) for section in report_sections()}
    return Results(runs_frame(path), series_frame(path), source=str(path),
                   specs=specs_frame(path), experiments=experiments)


@dataclass(frozen=True)
class SpecInfo:
    spec_hash: str | None
    name: str
    text: str | None
    alphas: tuple[float, ...]
    mc_samples: int | str | None = None  # draws of a Monte-Carlo volume kernel, or 'auto'


def _first(frame: pd.DataFrame, column: str) -> str | None:
    if column not in frame.columns or not frame[column].notna().any():
        return None
    return str(frame[column].dropna().iloc[0])


def _spec_infos(results: Results) -> list[SpecInfo]:
    """One entry per spec_hash in the runs table (one entry when it has no spec_hash)."""
    runs = results.runs
    if "spec_hash" not in runs.columns or runs["spec_hash"].isna().all():
        return [SpecInfo(None, _first(runs, "spec_name") or "results", results.spec_text, ())]
    specs = results.specs
    if specs is not None and "spec_hash" not in specs.columns:
        specs = None
    out = []
    for h in sorted(runs["spec_hash"].dropna().unique(), key=str):
        name = _first(runs[runs["spec_hash"] == h], "spec_name") or str(h)[:12]
        text, alphas, mc_samples = results.spec_text, (), None
        if specs is not None and (specs["spec_hash"] == h).any():
            row = specs[specs["spec_hash"] == h].iloc[0]
            name = str(row["name"])
            text, alphas = _spec_text_and_alphas(row)
            mc_samples = _mc_samples(row)
        out.append(SpecInfo(h, name, text, alphas, mc_samples))
    return out


def _cell(row: pd.Series, *names: str) -> str | None:
    for name in names:
        value = row.get(name)
        if value is not None and pd.notna(value) and str(value):
            return str(value)
    return None


def _spec_text_and_alphas(row: pd.Series) -> tuple[str, tuple[float, ...]]:
    """The spec as written (the store's source_text) or else its JSON, under a header naming
    it; and the alpha values of its alpha_events in epoch order."""
    try:
        data = json.loads(row["spec_json"])
    except (TypeError, ValueError, KeyError):
        data = None
    alphas: tuple[float, ...] = ()
    if isinstance(data, dict):
        events = sorted(data.get("alpha_events") or [], key=lambda e: e.get("post_epoch", 0))
        alphas = tuple(float(e["alpha"]) for e in events if "alpha" in e)
    header = f"# spec {row.get('name')!s} (hash {row.get('spec_hash')!s})"
    path = _cell(row, "path", "source")
    if path:
        header += f", from {path}"
    body = _cell(row, "source_text")
    if body is None:
        body = json.dumps(data, indent=2) if data is not None else str(row.get("spec_json"))
    return header + "\n" + body.rstrip() + "\n", alphas


def _mc_samples(row: pd.Series) -> int | str | None:
    """measures.volume.mc_samples of a store's spec row (a count or 'auto'), or None."""
    try:
        value = json.loads(row["spec_json"])["measures"]["volume"]["mc_samples"]
    except (TypeError, ValueError, KeyError):
        return None
    return value if isinstance(value, int) or value == "auto" else None


def _kernel_error_html(runs: pd.DataFrame, mc_samples: int | str | None) -> str:
    """A note on the Monte-Carlo kernel's error bars, where the runs carry any (> 0)."""
    if "log10_volume_stderr" not in runs.columns:
        return ""
    stderr = pd.to_numeric(runs["log10_volume_stderr"], errors="coerce")
    if not (stderr > 0).any():  # analytic kernel (0) or no error bar (nan)
        return ""
    samples = ("" if mc_samples is None else ", samples chosen by a convergence check"
               if mc_samples == "auto" else f", {mc_samples} samples")
    return (f"<p class='meta'>log10 V &plusmn; se (Monte-Carlo kernel{samples}): the kernel's "
            "error reaches each run's volume as a jackknife standard error over its batches "
            f"of draws; median se of log10 V(f) {fmt(float(stderr.median()), 3)}, largest "
            f"{fmt(float(stderr.max()), 3)} (columns <code>log10_volume_stderr</code> and "
            "<code>log10_volume_conditional_stderr</code> of the runs table).</p>")


VERDICT_CLASS = {YES: "good", NO: "bad", NOT_ESTABLISHED: "neutral"}


def _verdict_html(verdict: Verdict) -> str:
    return (f"<span class='{VERDICT_CLASS[verdict.outcome]}'>{verdict.outcome} "
            f"(n = {verdict.n})</span> <small>({esc(verdict.reason)})</small>")


def _headline(table: pd.DataFrame, fitted: pd.DataFrame, settings: ReportSettings) -> str:
    """The volume and sharpness taus, and the verdicts on the paper's two claims (see
    flatvol.analysis.verdicts: decided by the intervals, not by the point values)."""
    generalization = settings.generalization
    rows = {r["measure"]: r for _, r in table.iterrows()}
    vol, sharp = rows.get(VOLUME.key), rows.get(SHARPNESS.key)
    items = []
    for m, r in ((VOLUME, vol), (SHARPNESS, sharp)):
        if r is not None:
            items.append(f"<li>Kendall &tau;({esc(m.label)}, {esc(generalization)}) = "
                         f"{ci_text(r, 'kendall')} over {int(r['n'])} runs; granulated &Psi; = "
                         f"{fmt(r['granulated_kendall'])}</li>")
    if vol is not None and sharp is not None:
        strong = strong_correlation_verdict(
            int(vol["n"]), vol["kendall"], vol["kendall_low"], vol["kendall_high"],
            vol["kendall_p"], confidence_level=settings.confidence_level)
        difference = kendall_difference(
            VOLUME.values(fitted), SHARPNESS.values(fitted),
            numeric_column(fitted, generalization, "generalization column"),
            n_resamples=settings.n_resamples, confidence_level=settings.confidence_level,
            seed=settings.seed)
        items.append(
            f"<li>Volume correlation at least {STRONG_TAU:g}: {_verdict_html(strong)}; "
            f"stronger than the sharpness one: {_verdict_html(stronger_verdict(difference))} "
            "(paper: yes and yes).</li>")
    return "<ul>" + "".join(items) + "</ul>" if items else ""


def _temporal_html(series: pd.DataFrame | None, runs: pd.DataFrame | None,
                   alphas: Sequence[float]) -> str:
    rows = []
    for rs in temporal_runs(series, runs, alphas):
        s = temporal_summary(rs)
        rows.append(
            "<tr>" + "".join([
                f'<td class="l">{esc(s.run)}</td>', f"<td>{fmt(s.zero_error_epoch, 0)}</td>",
                f"<td>{fmt(s.alpha_epoch, 0)}</td>", f"<td>{fmt(s.alpha, 2)}</td>",
                f"<td>{fmt(s.sharpness_change_zero_to_alpha)}</td>",
                f"<td>{fmt(s.volume_change_zero_to_alpha)}</td>",
                f"<td>{fmt(s.sharpness_jump_factor, 1)}</td>",
                f"<td>{fmt(s.volume_change_at_alpha)}</td>"]) + "</tr>")
    if not rows:
        return ""
    head = ("<tr><th class='l'>run</th><th>zero-error epoch</th><th>&alpha; epoch</th>"
            "<th>&alpha;</th><th>&Delta; log10 sharpness, zero error &rarr; before &alpha;</th>"
            "<th>&Delta; log10 V(f), zero error &rarr; before &alpha;</th>"
            "<th>sharpness jump factor at &alpha;</th><th>&Delta; log10 V(f) at &alpha;</th></tr>")
    return ("<h3>Training-time evolution (Fig. 5 numbers)</h3><p>Paper: after zero training "
            "error sharpness keeps falling while V(f) stays flat; at the &alpha;-scaling "
            "sharpness jumps by a large factor while V(f) does not change.</p>"
            f"<table class='temporal'><thead>{head}</thead><tbody>{''.join(rows)}"
            "</tbody></table>")


@dataclass(frozen=True)
class ReportSettings:
    """How the report's statistics are computed."""

    generalization: str = "test_acc_E"
    measures: Sequence[Measure | str] | None = None
    axes: Sequence[str] = DEFAULT_AXES
    n_resamples: int = 2000
    confidence_level: float = 0.95
    seed: int = 0

    def table(self, runs: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
        return correlation_table(runs, generalization=self.generalization,
                                 measures=self.measures, axes=self.axes, by=by,
                                 n_resamples=self.n_resamples,
                                 confidence_level=self.confidence_level, seed=self.seed)


def correlations_for(results: Results, settings: ReportSettings | None = None) -> pd.DataFrame:
    """correlation_table() of every spec in `results` (rows carry spec_hash and spec_name when
    the runs do); specs without fitted runs or measure columns are left out."""
    settings = settings or ReportSettings()
    parts = []
    for info in _spec_infos(results):
        runs = results.runs if info.spec_hash is None else \
            results.runs[results.runs["spec_hash"] == info.spec_hash]
        if not _has_measures(runs, settings):
            continue
        table = settings.table(runs)
        if info.spec_hash is not None:
            table.insert(0, "spec_name", info.name)
            table.insert(0, "spec_hash", info.spec_hash)
        parts.append(table)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


MIN_RUNS = 3  # fewer fitted runs than this: no correlations (e.g. a single Fig-5 run)


def _has_measures(runs: pd.DataFrame, settings: ReportSettings) -> bool:
    fitted = fitted_runs(runs)
    return len(fitted) >= MIN_RUNS and bool(resolve_measures(fitted, settings.measures))


def spec_sections(runs: pd.DataFrame, series: pd.DataFrame | None, *, figures_dir: Path,
                  settings: ReportSettings, spec_text: str | None = None,
                  alphas: Sequence[float] = (), correlations: pd.DataFrame | None = None,
                  page_dir: Path | None = None, level: int = 2,
                  mc_samples: int | str | None = None) -> list[str]:
    """The HTML sections for the runs of one spec: counts, headline, correlation tables,
    figures, Fig-5 numbers, the runs table (with a note on the Monte-Carlo kernel's error
    bars, of `mc_samples` draws, where the runs have them) and the spec."""
    h = f"h{level}"
    out = []
    fitted = fitted_runs(runs)
    counts = ", ".join(
        f"{esc(col)} {esc(k)}: {v}" for col in ("status", "train_status") if col in runs
        for k, v in sorted(runs[col].fillna("n/a").value_counts().items()))
    runs_word = "run" if len(runs) == 1 else "runs"
    out.append(f"<p>{len(runs)} {runs_word} ({counts or 'no status recorded'}); correlations "
               f"use the {len(fitted)} finished runs that fit S; generalization = "
               f"<code>{esc(settings.generalization)}</code>.</p>")
    if "reason" in runs.columns and runs["reason"].notna().any():
        failed = runs[runs["reason"].notna()]
        keys = [c for c in ("optimizer", "attack_size", "seed") if c in failed.columns]
        items = "".join(f"<li>{esc(', '.join(f'{k}={r[k]}' for k in keys))}: {esc(r['reason'])}"
                        "</li>" for _, r in failed.head(50).iterrows())
        out.append(f"<details><summary>{len(failed)} failed run(s)</summary><ul>{items}</ul>"
                   "</details>")
    if not _has_measures(runs, settings):
        out.append(f"<p>No correlations: they need at least {MIN_RUNS} fitted runs with "
                   "measure columns (log10_volume, log10_sharpness, ...).</p>")
    else:
        table = correlations if correlations is not None else settings.table(runs)
        out.append(f"<{h}>Summary</{h}>" + _headline(table, fitted, settings))
        pct = f"{settings.confidence_level:.0%}"
        constant = ("" if settings.measures is not None else "".join(
            f"<p class='meta'>Constant across these runs, so not ranked: {esc(m.label)} "
            f"(<code>{esc(m.column)}</code> = {fmt(float(runs[m.column].dropna().iloc[0]), 4)})."
            "</p>" for m in constant_measures(fitted)))
        out.append(
            f"<{h}>Correlations with generalization</{h}><p>Each measure is oriented so that "
            f"larger should mean better generalization. Brackets: {pct} bootstrap confidence "
            f"intervals (BCa, {settings.n_resamples} resamples of runs, seed {settings.seed}). "
            "&Psi;: granulated Kendall coefficient (Jiang et al. 2019), the mean over the sweep "
            "axes of &psi;, the mean Kendall &tau; within groups where every other axis is "
            "fixed.</p>" + correlation_html(table) + constant)
        if "optimizer" in fitted.columns and fitted["optimizer"].nunique() > 1:
            out.append("<p><b>Per optimizer</b></p>"
                       + correlation_html(settings.table(runs, by="optimizer"), "optimizer"))
    made = make_figures(runs, series, figures_dir, generalization=settings.generalization,
                        alphas=alphas)
    if made:
        out.append(f"<{h}>Figures</{h}>" + "".join(figure_html(f, page_dir) for f in made))
    out.append(_temporal_html(series, runs, alphas))
    out.append(f"<{h}>Runs</{h}><details><summary>Show the runs table</summary>"
               + frame_html(runs) + "</details>" + _kernel_error_html(runs, mc_samples))
    out.append(f"<{h}>Spec</{h}>" + (f"<pre class='spec'>{esc(spec_text)}</pre>"
                                     if spec_text else "<p>No spec text recorded.</p>"))
    return [x for x in out if x]


def build_report_html(runs: pd.DataFrame, series: pd.DataFrame | None = None, *,
                      figures_dir: str | Path, spec_text: str | None = None,
                      title: str = "flatvol report", source: str | None = None,
                      settings: ReportSettings | None = None, alphas: Sequence[float] = (),
                      correlations: pd.DataFrame | None = None) -> str:
    """The report page for the runs of one spec, as a string; the figures are written to
    `figures_dir` (PNG + PDF) and embedded as base64 PNG."""
    sections = spec_sections(runs, series, figures_dir=Path(figures_dir),
                             settings=settings or ReportSettings(), spec_text=spec_text,
                             alphas=alphas, correlations=correlations)
    return page_html(title, sections, source)


def write_report(out_dir: str | Path, *, results: Results | None = None,
                 title: str | None = None, settings: ReportSettings | None = None,
                 correlations: pd.DataFrame | None = None) -> Path:
    """Write OUT_DIR/report.html and OUT_DIR/figures/*.png|pdf for the results in OUT_DIR's
    store (or `results`, e.g. frames built in memory). Several specs in one store each get their
    own section and figures/<spec name>-<hash>/; so does each experiment of a registered kind
    (flatvol.analysis.report_sections: e.g. sgd-vs-bayes).
    `correlations`: correlations_for(results, settings), when the caller has it already."""
    out_dir = Path(out_dir)
    settings = settings or ReportSettings()
    if results is None:
        results = load_results(out_dir)
    has_runs = results.runs is not None and not results.runs.empty
    kinds = [(section, results.experiments.get(section.kind, ())) for section in report_sections()]
    n_experiments = sum(len(experiments) for _, experiments in kinds)
    if not has_runs and not n_experiments:
        raise DataError(f"{results.source or out_dir}: no finished runs to report")
    infos = _spec_infos(results) if has_runs else []
    sections: list[str] = []
    several = len(infos) + n_experiments > 1
    for info in infos:
        runs, series = results.runs, results.series
        figures = out_dir / FIGURES_DIR
        if info.spec_hash is not None:
            runs = runs[runs["spec_hash"] == info.spec_hash]
            if series is not None and "spec_hash" in series.columns:
                series = series[series["spec_hash"] == info.spec_hash]
        if several:
            figures = figures / slug(f"{info.name}-{str(info.spec_hash)[:8]}")
            sections.append(f"<h2 id='{esc(slug(info.name))}'>Spec {esc(info.name)} "
                            f"<small>({esc(info.spec_hash)})</small></h2>")
        table = None
        if correlations is not None and not correlations.empty:
            table = (correlations if info.spec_hash is None or "spec_hash" not in correlations
                     else correlations[correlations["spec_hash"] == info.spec_hash])
            table = table.drop(columns=["spec_hash", "spec_name"], errors="ignore")
            table = table.reset_index(drop=True) if len(table) else None
        sections += spec_sections(runs, series, figures_dir=figures, settings=settings,
                                  spec_text=info.text, alphas=info.alphas, page_dir=out_dir,
                                  level=3 if several else 2, correlations=table,
                                  mc_samples=info.mc_samples)
    for section, experiments in kinds:
        if experiments:
            sections += section.render(experiments, out_dir / FIGURES_DIR, out_dir, several)
    names = [info.name for info in infos] + [section.name_of(e) for section, experiments in kinds
                                             for e in experiments]
    default_title = f"flatvol report: {names[0]}" if len(names) == 1 else \
        f"flatvol report: {out_dir.name}"
    page = page_html(title or default_title, sections, results.source)
    path = out_dir / REPORT_NAME
    atomic_write_text(path, page)
    return path
