"""`flatvol report DIR`: the report of a results directory (flatvol.cli registers
`report_command` as `flatvol report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flatvol.cli.console import console


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
    to: Annotated[Path | None, typer.Option(
        "--to", metavar="REPORT_DIR", help="Write report.html, figures/ and the tables here "
        "instead of DIR (for a store in a read-only place).")] = None,
) -> None:
    """Write DIR/report.html: figures, correlation table, spec and environment in one page."""
    from flatvol.analysis.export import export_csv, export_parquet, require_pyarrow
    from flatvol.analysis.report import (
        ReportSettings,
        correlations_for,
        load_results,
        write_report,
    )
    from flatvol.errors import WriteError
    from flatvol.io import unwritable
    from flatvol.validate import check_output_dir

    target = directory if to is None else to
    if to is not None:
        check_output_dir(to, "--to")  # refused before the store is read
    if parquet:
        require_pyarrow()  # fail before the work, not after
    settings = ReportSettings(n_resamples=n_resamples, seed=seed)
    with console.status("reading the results store"):
        results = load_results(directory)
    with console.status(f"correlations ({n_resamples} bootstrap resamples) and figures"):
        table = correlations_for(results, settings)
        try:
            path = write_report(target, results=results, title=title, settings=settings,
                                correlations=table)
        except OSError as exc:  # the store was read (read-only), but the target takes no report
            failure = exc if isinstance(exc, WriteError) else unwritable(
                exc.filename or target, exc)
            if failure is None:
                raise
            hint = " (write the report elsewhere with --to REPORT_DIR)" if to is None else ""
            raise WriteError(f"{failure}{hint}") from None
    written = [path]
    tables = {"runs": results.runs, "series": results.series, "correlations": table}
    for name, frame in tables.items():
        if frame is None or frame.empty:
            continue
        if csv:
            written.append(export_csv(frame, target / f"{name}.csv"))
        if parquet:
            written.append(export_parquet(frame, target / f"{name}.parquet"))
    for p in written:
        typer.echo(str(p))
