"""`flatvol sgd-vs-bayes SPEC --out DIR`: a plain typer-annotated function; flatvol.cli registers
it (app.command("sgd-vs-bayes")(sgd_vs_bayes_command)). The spec name is resolved here: the
runners take the validated spec."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated

import typer

from flatvol.cli.console import console


def sgd_vs_bayes_command(
    spec: Annotated[str, typer.Argument(
        help="Spec file (.toml/.yaml) or the name of a shipped spec (sgd_vs_bayes).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (re-running resumes).")],
    networks: Annotated[int | None, typer.Option(
        help="Networks per optimizer (overrides sampling.networks).")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", envvar="FLATVOL_DATA",
        help="Data directory (MNIST idx / CIFAR files); default: embedded MNIST subset.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    workers: Annotated[str, typer.Option(
        metavar="N|auto",
        help="Chunks of networks trained at once, each in its own process on its share of the "
        "threads. 'auto': one per core (at most --threads, one per chunk to train; 1 on a "
        "GPU); 1: in this process."
        )] = "auto",
    threads: Annotated[int | None, typer.Option(
        help="torch threads in all, shared by the workers (default: torch's).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Train N networks per optimizer to fit S, count their functions on E (P_opt(f|S)) and
    compare with the NNGP conditional volume V(f|S) (Mingard et al.'s test); a spec with a
    [grid] runs every cell (width x |S| x batch size) into one store."""
    import torch

    from flatvol.experiments.spec_files import resolve_spec_path
    from flatvol.limits import MAX_NETWORKS
    from flatvol.progress import ProgressBar, ProgressEvent
    from flatvol.sgd_vs_bayes.grid import run_sgd_vs_bayes_grid
    from flatvol.sgd_vs_bayes.resample import run_resampled
    from flatvol.sgd_vs_bayes.run import run_sgd_vs_bayes
    from flatvol.sgd_vs_bayes.spec import load_sgd_vs_bayes_spec
    from flatvol.validate import (
        AUTO,
        check_device,
        check_output_dir,
        check_positive_int,
        check_threads,
        check_workers,
    )

    check_threads(threads)
    workers_wanted = check_workers(workers)
    check_output_dir(out)
    check_device(device)
    if networks is not None:
        check_positive_int(networks, "--networks", at_most=MAX_NETWORKS)
    parsed = load_sgd_vs_bayes_spec(resolve_spec_path(spec))
    if threads is not None:
        torch.set_num_threads(threads)
    # 'auto': a process per core on the CPU, no more than the threads allowed (sample_functions
    # starts no more than there are chunks to train); one process drives a GPU.
    if workers_wanted != AUTO:
        n_workers = int(workers_wanted)
    elif torch.device(device).type != "cpu":
        n_workers = 1
    else:
        n_workers = max(1, min(os.cpu_count() or 1, torch.get_num_threads()))
    # Stages (one per optimizer, then the volumes) run one after another: one bar each.
    bars: dict[str, ProgressBar] = {}

    def progress(event: ProgressEvent) -> None:
        stage = str(event.key)
        if stage not in bars:
            for bar in bars.values():
                bar.close()
            # keys: '<optimizer>' (networks) and 'volumes' or '<posterior> volumes'
            # (functions), prefixed with the cell's name in a grid
            head, _, step = stage.rpartition(" ")
            label = f"{head} V(f|S)".strip() if step == "volumes" else f"train {stage}"
            bars[stage] = ProgressBar(label, total=event.total, enabled=not quiet,
                                      unit=event.text)
        bars[stage].update(event.completed, total=event.total)

    try:
        if parsed.grid is not None:
            grid = run_sgd_vs_bayes_grid(parsed, out, data_dir=data_dir, device=device,
                                         progress=progress, networks=networks,
                                         workers=n_workers)
        elif parsed.resample is not None:
            resampled = run_resampled(parsed, out, data_dir=data_dir, device=device,
                                      progress=progress, networks=networks,
                                      workers=n_workers)
        else:
            result = run_sgd_vs_bayes(parsed, out, data_dir=data_dir, device=device,
                                      progress=progress, networks=networks,
                                      workers=n_workers)
    finally:
        for bar in bars.values():
            bar.close()
    if parsed.resample is not None:
        for entry in resampled.spread:
            def spread(column: str, entry: dict = entry) -> str:
                value = entry[column]
                return f"{_fmt(value['mean'])} +- {_fmt(value['sd'])}"
            console.print(
                f"[bold]{entry['posterior']} |E|={entry['size']} {entry['optimizer']}[/] "
                f"({entry['draws']} draws): median |log10 P_opt/P_B| (top) "
                f"{spread('top_median_abs_log10_ratio')}; most frequent "
                f"{spread('log10_ratio_most_frequent')}; Spearman {spread('spearman')}",
                highlight=False)
        files = resampled.files
        console.print(f"-> {files['resample']}, {files['functions']}, {files['summary']}, "
                      f"{files['figure']} (store: {out / 'results.sqlite'})", highlight=False)
        return
    if parsed.grid is not None:
        for row in grid.rows:
            console.print(
                f"[bold]{row['cell']} {row['optimizer']}[/]: {row['fitted']}/{row['networks']} "
                f"fitted, {row['distinct_functions']} functions; Pearson "
                f"{_fmt(row['pearson_log10'])}, Spearman {_fmt(row['spearman'])}; median "
                f"|log10 P_opt/V| (top) {_fmt(row['top_median_abs_log10_ratio'])}; posterior "
                f"mass found {_fmt(row['posterior_mass_found'])}; decisiveness gap "
                f"{_fmt(row['decisiveness_gap'])}", highlight=False)
        console.print(f"-> {out / 'grid.csv'}, {out / 'grid.json'}, {out / 'grid.png'}, "
                      f"{out / 'cells'}/ (store: {out / 'results.sqlite'}; `flatvol report "
                      f"{out}` renders it)", highlight=False)
        return
    for s in result.summaries:
        console.print(
            f"[bold]{s.optimizer}[/]: {s.fitted}/{s.networks} fitted, {s.distinct_functions} "
            f"functions, {s.resolved_functions} seen >= {parsed.analysis.min_count}x; "
            f"corr(log P_opt, log V(f|S)) = {_fmt(s.pearson_log10)} (Spearman "
            f"{_fmt(s.spearman)}); top {parsed.analysis.top}: {_fmt(100 * s.top_within_10x)}% "
            f"within 10x", highlight=False)
    console.print(f"-> {out / 'functions.csv'}, {out / 'summary.json'}, "
                  f"{out / 'p_opt_vs_v.png'}, {out / 'mingard.png'} (store: "
                  f"{out / 'results.sqlite'}; `flatvol report {out}` renders it)",
                  highlight=False)


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.2f}"
