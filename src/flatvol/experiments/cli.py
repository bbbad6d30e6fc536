"""`flatvol run`: a plain function with typer annotations; flatvol.cli registers it (and turns
its FlatvolErrors into one line and exit code 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def run_command(
    spec: Annotated[str, typer.Argument(
        help="Spec file (.toml/.yaml) or the name of a shipped spec (demo, fig3_mnist_fcn, ...).")],
    out: Annotated[Path, typer.Option(
        "--out", help="Output directory (results.sqlite lives here).")],
    backend: Annotated[str, typer.Option(help="local or ray (needs flatvol\\[ray]).")] = "local",
    workers: Annotated[int, typer.Option(help="Runs in parallel (processes or Ray CPUs).")] = 1,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", envvar="FLATVOL_DATA",
        help="Data directory (MNIST idx / CIFAR files); default: embedded MNIST subset.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    threads: Annotated[int | None, typer.Option(
        help="torch threads per run (default: torch's, or cores / workers).")] = None,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Re-run runs recorded as failed (default: keep them).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Run every (optimizer, attack size, seed) of SPEC not yet in DIR; re-running resumes."""
    from rich.markup import escape

    from flatvol.experiments.runner import run_sweep

    summary = run_sweep(spec, out, backend=backend, workers=workers,  # type: ignore[arg-type]
                        data_dir=data_dir, device=device, retry_failed=retry_failed,
                        progress=not quiet, threads=threads, console=console)
    console.print(
        f"[bold]{summary.planned}[/] runs planned: {summary.skipped} already in the store, "
        f"{summary.done} done, {summary.failed} failed in {summary.seconds:.1f}s "
        f"-> {summary.out / 'results.sqlite'}", highlight=False)
    for key, reason in summary.failures[:10]:
        console.print(f"  [red]failed[/] {key}: {escape(reason)}", highlight=False,
                      soft_wrap=True)
    if len(summary.failures) > 10:
        console.print(f"  ... and {len(summary.failures) - 10} more (see runs.reason)")

