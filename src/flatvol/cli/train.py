"""`flatvol train`: train one network to fit S and write its run directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from flatvol.cli.console import console
from flatvol.progress import ProgressBar

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="FLATVOL_DATA",
                 help="Data directory (MNIST idx / CIFAR files); default: embedded MNIST subset."),
]


def train(
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    task: Annotated[str, typer.Option(help="mnist or cifar10.")] = "mnist",
    classes: Annotated[
        str | None, typer.Option(help="Binary split, e.g. 'odd-even' or '3v8', or K >= 3 "
                                 "classes: 'all' or a list such as '0,1,2,7'.")
    ] = None,
    attack_size: Annotated[int, typer.Option(
        help="Attack-set size (flipped labels; for K classes, another class).")] = 0,
    train_size: Annotated[int, typer.Option(help="|S|.")] = 500,
    test_size: Annotated[int, typer.Option(help="|E|.")] = 1000,
    seed: Annotated[int, typer.Option(help="Initialization and data-order seed.")] = 0,
    data_seed: Annotated[int, typer.Option(help="Seed choosing S, A and E.")] = 0,
    data_dir: DataDirOption = None,
    model: Annotated[
        str, typer.Option(help="fcn:40,40 | cnn:16,32 | resnet18[:nobn] | resnet50")
    ] = "fcn:40,40",
    sigma_w2: Annotated[float, typer.Option(help="Prior weight variance (x 1/fan_in).")] = 2.0,
    sigma_b2: Annotated[float, typer.Option(help="Prior bias variance.")] = 1.0,
    optimizer: Annotated[str, typer.Option(help="sgd | momentum | adam | ...")] = "sgd",
    lr: Annotated[float, typer.Option()] = 0.01,
    batch_size: Annotated[int, typer.Option()] = 32,
    max_epochs: Annotated[int, typer.Option()] = 2000,
    fit: Annotated[str, typer.Option(help="Stop when S ('S') or S u A ('all') is 100% fit.")] = "S",
    order: Annotated[str, typer.Option(
        help="Data order each epoch: 'shuffled' (a new permutation) or 'fixed' (S then A, as "
        "the authors' code trains).")] = "shuffled",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
) -> None:
    """Train one network to fit S (with an optional attack set) and write RUN_DIR/run.json."""
    from flatvol.data import load_task
    from flatvol.errors import SpecError
    from flatvol.problem_settings import run_spec_from_options
    from flatvol.train.checkpoint import RUN_JSON
    from flatvol.train.run import train_run
    from flatvol.validate import check_device, check_output_dir

    check_output_dir(out)
    if (out / RUN_JSON).exists():
        raise SpecError(f"--out {out}: already holds a run ({RUN_JSON}); expected a new or empty "
                        "directory (a finished run is never overwritten)")
    check_device(device)
    # The run's settings are a spec's (flatvol.problem_settings), checked before the data is
    # read (which checks |S| and |E| against the pool); it trains with a sweep run's config.
    spec = run_spec_from_options({
        "task": task, "classes": classes, "train_size": train_size, "attack_size": attack_size,
        "test_size": test_size, "data_seed": data_seed, "model": model, "sigma_w2": sigma_w2,
        "sigma_b2": sigma_b2, "optimizer": optimizer, "lr": lr, "batch_size": batch_size,
        "max_epochs": max_epochs, "fit": fit, "order": order, "seed": seed})
    data = load_task(task, train_size=train_size, attack_size=attack_size, test_size=test_size,
                     data_seed=data_seed, data_dir=data_dir, classes=classes)
    # run.json records the labelling by the task's own name for it (e.g. '0-4v5-9' for the
    # default), as `flatvol collect` compares it
    spec = dataclasses.replace(spec, classes=data.classes)
    # A live bar on a terminal; redirected, a plain line every ~10 s (epoch, loss, acc_S).
    with ProgressBar("train", total=max_epochs, unit="epochs") as bar:

        def on_epoch(info, _model) -> None:
            bar.update(info.epoch, status=f"loss {info.loss:.4f}, acc_S {info.train_acc_S:.3f}")

        _, info = train_run(spec, data, out_dir=out,
                            data_dir=str(data_dir) if data_dir else None,
                            device=device, callback=on_epoch)
    console.print(
        f"[bold]{info['status']}[/] after {info['epochs']} epochs: "
        f"acc S {info['train_acc_S']:.3f}, A {info['train_acc_A'] or float('nan'):.3f}, "
        f"E (test) {info['test_acc_E']:.3f} -> {out / 'run.json'}",
        soft_wrap=True,
    )
