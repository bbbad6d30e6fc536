"""The `flatvol` command line: thin wrappers that parse options and call the library."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
import typer.exceptions
from rich.console import Console
from rich.markup import escape

from flatvol.errors import FlatvolError
from flatvol.interrupts import raising_interrupted, received_signal
from flatvol.progress import ProgressBar

# Recent typer raises its own (vendored click) exceptions; older typer raises click's, and then
# depends on click, so click is importable exactly when it is needed.
_USAGE_ERRORS: tuple[type[Exception], ...] = (typer.exceptions.TyperException,)
_ABORTS: tuple[type[BaseException], ...] = (typer.Abort,)
try:
    import click

    _USAGE_ERRORS += (click.ClickException,)
    _ABORTS += (click.Abort,)
except ImportError:
    pass


class _CommandInterrupted(BaseException):
    """A command's KeyboardInterrupt (or Interrupted: SIGINT, SIGTERM) on its way past typer,
    which would turn it into a silent exit 130, before any line could say what was kept.

    Args:
        interrupt: The exception, with its notes.
    """

    def __init__(self, interrupt: KeyboardInterrupt):
        super().__init__()
        self.interrupt = interrupt


def _command(name: str | None = None) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """app.command(name), with the command's interruption carried past typer to main().

    Args:
        name: The command's name (None: the function's).

    Returns:
        A decorator registering the command.
    """

    def register(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)  # typer reads the signature and annotations through it
        def run(*args: object, **kwargs: object) -> None:
            try:
                command(*args, **kwargs)
            except KeyboardInterrupt as exc:
                raise _CommandInterrupted(exc) from exc

        app.command(name)(run)
        return command

    return register


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="flatvol: volume vs flatness as predictors of generalization.",
)
console = Console(stderr=True)

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="FLATVOL_DATA",
                 help="Data directory (MNIST idx / CIFAR files); default: embedded MNIST subset."),
]


@_command()
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
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
) -> None:
    """Train one network to fit S (with an optional attack set) and write RUN_DIR/run.json."""
    from flatvol.data import load_task
    from flatvol.errors import SpecError
    from flatvol.models import Prior
    from flatvol.models.registry import parse_model_spec
    from flatvol.train import TrainConfig
    from flatvol.train.checkpoint import RUN_JSON, run_number_problem
    from flatvol.train.run import RunSpec, train_run
    from flatvol.validate import check_device, check_output_dir

    check_output_dir(out)
    if (out / RUN_JSON).exists():
        raise SpecError(f"--out {out}: already holds a run ({RUN_JSON}); expected a new or empty "
                        "directory (a finished run is never overwritten)")
    check_device(device)
    # flatvol.limits, before the data is read (which checks |S| and |E| against the pool)
    bad = run_number_problem({"seed": seed, "data_seed": data_seed, "attack_size": attack_size})
    if bad is not None:
        raise SpecError(f"--{bad[0].replace('_', '-')}: {bad[1]}")
    parse_model_spec(model)
    try:
        prior = Prior(sigma_w2, sigma_b2)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    config = TrainConfig(optimizer=optimizer, lr=lr, batch_size=batch_size,
                         max_epochs=max_epochs, fit=fit)  # type: ignore[arg-type]
    data = load_task(task, train_size=train_size, attack_size=attack_size, test_size=test_size,
                     data_seed=data_seed, data_dir=data_dir, classes=classes)
    spec = RunSpec(task=task, classes=data.classes, train_size=train_size, attack_size=attack_size,
                   test_size=test_size, data_seed=data_seed, model=model, prior=prior,
                   train=config, seed=seed)
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


@_command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("demo_out"),
    data_dir: Annotated[
        str, typer.Option("--data-dir", help="Data directory; default: the embedded MNIST subset.")
    ] = "embedded",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Run the CPU-sized Fig-3 MNIST sweep (spec 'demo') and write OUT/report.html."""
    from flatvol.analysis.report import write_report
    from flatvol.experiments.runner import run_sweep

    # One torch thread per run and one run per core: oversubscribed threads are many times slower.
    workers = max(1, min(2, os.cpu_count() or 1))
    summary = run_sweep("demo", out, workers=workers, threads=1, data_dir=data_dir,
                        progress=not quiet, console=console)
    report = write_report(out)
    console.print(
        f"demo: {summary.planned} runs ({summary.skipped} resumed, {summary.done} new, "
        f"{summary.failed} failed) in {summary.seconds:.0f}s; report -> {report}",
        highlight=False, soft_wrap=True,
    )


@_command()
def version() -> None:
    """Print the flatvol version."""
    import flatvol

    typer.echo(flatvol.__version__)


def _register_subcommands() -> None:
    # Each measure family owns its command; the CLI only wires them up. Importing the
    # sgd-vs-bayes slice also registers its report sections (flatvol.analysis.report_sections),
    # so `flatvol report` and `flatvol demo` render its experiments.
    from flatvol.analysis.cli import report_command
    from flatvol.experiments.cli import collect_command, run_command
    from flatvol.measures.cli import flatness_command
    from flatvol.sgd_vs_bayes.cli import sgd_vs_bayes_command
    from flatvol.volume.cli import volume_command

    _command("volume")(volume_command)
    _command("flatness")(flatness_command)
    _command("run")(run_command)
    _command("collect")(collect_command)
    _command("report")(report_command)
    _command("sgd-vs-bayes")(sgd_vs_bayes_command)


_register_subcommands()


def main() -> None:
    """Entry point: user errors, including malformed options, become one line on stderr and
    exit code 2 (never a traceback); SIGINT and SIGTERM one line saying what was kept, and
    exit code 130 / 143."""
    try:
        # SIGINT and SIGTERM raise Interrupted, which each command carries past typer
        # (_command): typer turns a KeyboardInterrupt into a silent exit 130, before any line
        # could say what was recorded; and SIGTERM would end the process without unwinding
        # (no worker stopped, no line).
        with raising_interrupted():
            code = app(standalone_mode=False)
    except _CommandInterrupted as stop:
        _interrupted(stop.interrupt)
    except KeyboardInterrupt as exc:  # before or after a command ran
        _interrupted(exc)
    except FlatvolError as exc:
        _fail(str(exc))
    except _USAGE_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `flatvol` / `flatvol run`: help
            exc.show()
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "flatvol"
        _fail(f"{where}: {exc.format_message()} (see '{where} --help')")
    except _ABORTS:
        console.print("aborted", highlight=False)
        sys.exit(130)
    if received_signal() is not None:  # interrupted outside a command: typer said nothing
        _interrupted(None)
    sys.exit(code if isinstance(code, int) else 0)


def _interrupted(exc: KeyboardInterrupt | None) -> None:
    # One line: what the command kept (the notes added on the way up), then the exit code a
    # shell expects of a process ended by that signal (Ray raises a KeyboardInterrupt of its
    # own for SIGTERM too: the signal is the one the handler saw).
    signum = received_signal() or signal.SIGINT
    notes = "; ".join(getattr(exc, "__notes__", ()))
    name = signal.Signals(signum).name
    console.print(escape(f"interrupted ({name})" + (f": {notes}" if notes else "")),
                  highlight=False, soft_wrap=True)
    sys.exit(128 + signum)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/] {escape(' '.join(message.split()))}", highlight=False,
                  soft_wrap=True)
    sys.exit(2)
