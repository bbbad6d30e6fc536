"""`flatvol demo`: the CPU-sized Fig-3 MNIST sweep and its report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from flatvol.cli.console import console


def demo(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("demo_out"),
    data_dir: Annotated[
        str, typer.Option("--data-dir", help="Data directory; default: the embedded MNIST subset.")
    ] = "embedded",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Run the CPU-sized Fig-3 MNIST sweep (spec 'demo') and write OUT/report.html."""
    from flatvol.analysis.report import write_report
    from flatvol.cli.run import load_sweep_spec
    from flatvol.experiments.runner import run_sweep

    spec, source = load_sweep_spec("demo")
    # One torch thread per run and one run per core: oversubscribed threads are many times slower.
    workers = max(1, min(2, os.cpu_count() or 1))
    summary = run_sweep(spec, out, workers=workers, threads=1, data_dir=data_dir,
                        progress=not quiet, source=source)
    report = write_report(out)
    console.print(
        f"demo: {summary.planned} runs ({summary.skipped} resumed, {summary.done} new, "
        f"{summary.failed} failed) in {summary.seconds:.0f}s; report -> {report}",
        highlight=False, soft_wrap=True,
    )
