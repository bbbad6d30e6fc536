"""`flatvol report DIR`: the lead registers `report_command` with app.command("report")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report_command(
    directory: Annotated[Path, typer.Argument(
        metavar="DIR", help="Results directory written by `flatvol run SPEC --out DIR`.")],
    csv: Annotated[bool, typer.Option(
        "--csv", help="Also write DIR/runs.csv, DIR/series.csv and DIR/correlations.csv.")] = False,
    parquet: Annotated[bool, typer.Option(
        "--parquet", help="Also write the same tables as Parquet (needs pyarrow).")] = False,
    n_resamples: Annotated[int, typer.Option(
        "--resamples", min=0, help="Bootstrap resamples for the confidence intervals.")] = 2000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
) -> None:
    """Write DIR/report.html: figures, correlation table, spec and environment in one page."""
    from rich.console import Console

    from flatvol.analysis.export import export_csv, export_parquet, require_pyarrow
    from flatvol.analysis.report import (
        ReportSettings,
        correlations_for,
        load_results,
        write_report,
    )

    console = Console(stderr=True)
    if parquet:
        require_pyarrow()  # fail before the work, not after
    settings = ReportSettings(n_resamples=n_resamples, seed=seed)
    with console.status("reading the results store"):
        results = load_results(directory)
    with console.status(f"correlations ({n_resamples} bootstrap resamples) and figures"):
        table = correlations_for(results, settings)
        path = write_report(directory, results=results, title=title, settings=settings,
                            correlations=table)
    written = [path]
    tables = {"runs": results.runs, "series": results.series, "correlations": table}
    for name, frame in tables.items():
        if frame is None or frame.empty:
            continue
        if csv:
            written.append(export_csv(frame, directory / f"{name}.csv"))
        if parquet:
            written.append(export_parquet(frame, directory / f"{name}.parquet"))
    for p in written:
        typer.echo(str(p))
