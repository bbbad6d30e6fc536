"""The `flatvol` command line: the one face of the package, and the only code that imports
typer or resolves spec names and run directories (below it, libraries take typed objects).

One module per command group (`train`, `demo`, `volume`, `flatness`, `run`: run and collect,
`report`, `sgd_vs_bayes`): each holds plain functions with typer annotations, which this module
registers; `main` turns any FlatvolError or malformed option into one line and exit code 2, and
SIGINT / SIGTERM into one line and exit code 130 / 143.
"""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable

import typer
import typer.exceptions
from rich.markup import escape

from flatvol.cli.console import console
from flatvol.errors import FlatvolError
from flatvol.interrupts import raising_interrupted, received_signal

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

__all__ = ["app", "main"]


class _CommandInterrupted(BaseException):
    """A command's KeyboardInterrupt (or Interrupted: SIGINT, SIGTERM) on its way past typer,
    which would turn it into a silent exit 130, before any line could say what was kept.

    Args:
        interrupt: The exception, with its notes.
    """

    def __init__(self, interrupt: KeyboardInterrupt):
        super().__init__()
        self.interrupt = interrupt


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="flatvol: volume vs flatness as predictors of generalization.",
)


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


def version() -> None:
    """Print the flatvol version."""
    import flatvol

    typer.echo(flatvol.__version__)


def _register_commands() -> None:
    # In the order `flatvol --help` lists them. Importing the sgd-vs-bayes command loads its
    # slice, whose report sections (flatvol.analysis.report_sections) `flatvol report` and
    # `flatvol demo` then render.
    from flatvol.cli.demo import demo
    from flatvol.cli.flatness import flatness_command
    from flatvol.cli.report import report_command
    from flatvol.cli.run import collect_command, run_command
    from flatvol.cli.sgd_vs_bayes import sgd_vs_bayes_command
    from flatvol.cli.train import train
    from flatvol.cli.volume import volume_command

    _command("train")(train)
    _command("demo")(demo)
    _command("version")(version)
    _command("volume")(volume_command)
    _command("flatness")(flatness_command)
    _command("run")(run_command)
    _command("collect")(collect_command)
    _command("report")(report_command)
    _command("sgd-vs-bayes")(sgd_vs_bayes_command)


_register_commands()


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
