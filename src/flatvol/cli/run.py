"""`flatvol run` and `flatvol collect`: plain functions with typer annotations; flatvol.cli
registers them (and turns their FlatvolErrors into one line and exit code 2). A spec name is
resolved here (`load_sweep_spec`): the sweep takes the validated spec and its file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flatvol.cli.console import console

if TYPE_CHECKING:
    from flatvol.experiments.spec import ExperimentSpec
    from flatvol.experiments.spec_files import SpecSource


def load_sweep_spec(name: str) -> tuple[ExperimentSpec, SpecSource]:
    """A sweep spec by file path or shipped name, read once: the text recorded with the runs is
    the text validated.

    Args:
        name: A spec file (.toml/.yaml/.yml) or the name of a shipped spec ('demo', ...).

    Returns:
        The validated spec and the file it was read from.

    Raises:
        SpecError: No such file or shipped spec, or the file is unreadable, malformed or
            invalid (one line naming the file and the field).
    """
    from flatvol.experiments.spec import spec_from_dict
    from flatvol.experiments.spec_files import (
        parse_spec_source,
        read_spec_source,
        resolve_spec_path,
    )

    source = read_spec_source(resolve_spec_path(name))
    return spec_from_dict(parse_spec_source(source), str(source.path)), source


def run_command(
    spec: Annotated[str, typer.Argument(
        help="Spec file (.toml/.yaml) or the name of a shipped spec (demo, fig3_mnist_fcn, ...).")],
    out: Annotated[Path, typer.Option(
        "--out", help="Output directory (results.sqlite lives here).")],
    backend: Annotated[str, typer.Option(help="local or ray (needs flatvol\\[ray]).")] = "local",
    workers: Annotated[str, typer.Option(
        metavar="N|auto",
        help="Runs measured (and, without train.ensemble, trained) in parallel: spawned "
        "processes, or Ray CPUs. 'auto': one per core, at most one per run to do; 1: in this "
        "process.")] = "auto",
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", envvar="FLATVOL_DATA",
        help="Data directory (MNIST idx / CIFAR files); default: embedded MNIST subset.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    threads: Annotated[int | None, typer.Option(
        help="torch threads per run, and of the ensemble trainer with train.ensemble "
        "(default: cores / workers per run, torch's for a single worker; the trainer: the "
        "same; 2+ helps wide inputs such as CIFAR-10's). With train.ensemble and several "
        "workers, the trainer's only: the workers measure on cores / workers.")] = None,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Re-run runs recorded as failed (default: keep them).")] = False,
    keep_networks: Annotated[bool, typer.Option(
        "--keep-networks",
        help="Also write each run's trained network to DIR/networks/<spec hash>/<run>/ "
        "(run.json + model.pt, as 'flatvol train' writes), to measure again with "
        "'flatvol collect' or 'flatvol flatness'.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Run every (optimizer, attack size, seed) of SPEC not yet in DIR; re-running resumes."""
    from rich.markup import escape

    from flatvol.experiments.runner import run_sweep

    parsed, source = load_sweep_spec(spec)
    summary = run_sweep(parsed, out, backend=backend, workers=workers,
                        data_dir=data_dir, device=device, retry_failed=retry_failed,
                        progress=not quiet, threads=threads, source=source,
                        keep_networks=keep_networks)
    console.print(
        f"[bold]{summary.planned}[/] runs planned: {summary.skipped} already in the store, "
        f"{summary.done} done, {summary.failed} failed in {summary.seconds:.1f}s "
        f"-> {summary.out / 'results.sqlite'}", highlight=False)
    for key, reason in summary.failures[:10]:
        console.print(f"  [red]failed[/] {key}: {escape(reason)}", highlight=False,
                      soft_wrap=True)
    if len(summary.failures) > 10:
        console.print(f"  ... and {len(summary.failures) - 10} more (see runs.reason)")


def collect_command(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="Run directories written by 'flatvol train' (same data, model and prior).")],
    out: Annotated[Path, typer.Option(
        "--out", help="Output directory (results.sqlite lives here).")],
    measures: Annotated[str, typer.Option(
        "--measures", help="Comma-separated catalogue measures (accuracy is always taken), "
        "or 'none'.")] = "volume,sharpness",
    estimator: Annotated[str | None, typer.Option(
        help="Volume estimator [default: the specs' default].")] = None,
    kernel: Annotated[str, typer.Option(help="NNGP kernel: auto, analytic or mc.")] = "auto",
    mc_samples: Annotated[str, typer.Option(
        help="Inits of a Monte-Carlo kernel, or 'auto': doubled until log10 V of the true "
        "labels converges.")] = "auto",
    maximizer: Annotated[str | None, typer.Option(
        help="Keskar maximizer: paper | lbfgsb | fast [default: the specs' default].")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Keskar box size eps.")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", envvar="FLATVOL_DATA", help="Data directory of the runs' task.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Measure 'flatvol train' runs into DIR's store, for 'flatvol report DIR'; re-running
    skips the runs already collected."""
    from flatvol.experiments.collect import (
        collect_runs,
        collect_settings,
        parse_collect_measures,
    )

    # a count as an int ('auto' as it is): the spec's check refuses any other text
    draws = int(mc_samples) if mc_samples.isdecimal() else mc_samples
    settings = collect_settings(parse_collect_measures(measures), estimator=estimator,
                                kernel=kernel, mc_samples=draws, maximizer=maximizer,
                                epsilon=epsilon)
    try:
        summary = collect_runs(run_dirs, out, settings, data_dir=data_dir, device=device,
                               progress=not quiet)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM: flatvol.cli.main prints one line
        from flatvol.experiments.store import store_path

        # each run is recorded whole as it is measured: those in flight are lost
        exc.add_note(f"the runs collected so far are kept in {store_path(out)}; run the "
                     "same command to resume")
        raise
    console.print(
        f"[bold]{summary.given}[/] runs given: {summary.skipped} already in the store, "
        f"{summary.collected} collected, {summary.failed} recorded as failed (did not fit S) "
        f"-> {summary.store}", highlight=False, soft_wrap=True)
