"""Stopping cleanly on SIGINT (Ctrl-C) and SIGTERM (`kill`, `timeout`, batch schedulers).

    raising_interrupted()   the CLI: both signals raise Interrupted in the main thread
    received_signal()       which one did (Ray raises a KeyboardInterrupt of its own)
    holding_signals()       a critical section (recording a run): a signal waits for its end
    starting_children()     processes started in the block begin life deaf to Ctrl-C
    ignore_sigint()         the first thing such a child does (a pool worker's initializer)
    reclaim_signals()       the Python handlers back in force (Ray replaces SIGTERM's)

A terminal's Ctrl-C reaches every process of the foreground group. Only the driver acts on it:
its workers ignore SIGINT (a worker interrupted mid-run would print its own traceback and leave
the driver waiting for a result that never comes) and are stopped by the driver as it unwinds.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["STOP_SIGNALS", "Interrupted", "holding_signals", "ignore_sigint",
           "raising_interrupted", "received_signal", "reclaim_signals", "starting_children"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# POSIX: a thread's signal mask, inherited by the processes it starts (not on Windows)
_HAS_SIGMASK = hasattr(signal, "pthread_sigmask")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived. A KeyboardInterrupt, so that no `except Exception` (a run
    recorded as failed) swallows it, and so that code which cleans up on Ctrl-C does so for
    SIGTERM too (Ray's waits turn any other exception raised by a signal handler into a
    SystemError; they raise a KeyboardInterrupt of their own, hence `received_signal`). Code
    that knows what the interruption kept adds a note (PEP 678 `add_note`), which the CLI
    prints on its one line.

    Args:
        signum: The signal that arrived.
    """

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"interrupted by {self.signal_name}")

    @property
    def signal_name(self) -> str:
        """'SIGINT', 'SIGTERM', ..."""
        return signal.Signals(self.signum).name


def _in_main_thread() -> bool:
    # Python runs signal handlers, and lets them be changed, only in the main thread.
    return threading.current_thread() is threading.main_thread()


# The first stop signal this process turned into Interrupted (raising_interrupted).
_received: list[int] = []


def received_signal() -> int | None:
    """The signal that interrupted this process (raising_interrupted), None if none did.

    Returns:
        The signal number, or None.
    """
    return _received[0] if _received else None


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    # The first signal stops the command; later ones (an impatient second Ctrl-C, a scheduler
    # following SIGTERM with SIGINT) are ignored, so they cannot break the bounded clean-up
    # (stopping workers) into a half-done one with a traceback. SIGKILL still ends everything.
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)
    _received.append(signum)
    raise Interrupted(signum)


@contextlib.contextmanager
def raising_interrupted() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise Interrupted in the main thread (once: then
    both are ignored); the previous handlers are restored after the block, unless Interrupted
    interrupted it. Outside the main thread: does nothing.

    Returns:
        A context manager.
    """
    if not _in_main_thread():
        yield
        return
    previous = {stop: signal.signal(stop, _raise_interrupted) for stop in STOP_SIGNALS}
    try:
        yield
    finally:
        # Interrupted: the caller is stopping, and the signals stay ignored until it has (a
        # second Ctrl-C while it prints its line would otherwise raise KeyboardInterrupt).
        if received_signal() is None:
            _restore(previous)


def _restore(handlers: dict[signal.Signals, Any]) -> None:
    for stop, handler in handlers.items():
        # None: a handler installed outside Python, which cannot be put back; the default
        # is the closest
        signal.signal(stop, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def holding_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are held (recorded, not acted on); at its end the
    first one held is delivered again to the handler that was in place (raising Interrupted or
    KeyboardInterrupt there, or ending the process for SIGTERM's default action). Outside the
    main thread no signal can interrupt the block: does nothing.

    Returns:
        A context manager.
    """
    if not _in_main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        held.append(signum)

    previous = {stop: signal.signal(stop, hold) for stop in STOP_SIGNALS}
    try:
        yield
    finally:
        _restore(previous)
        if held:
            signal.raise_signal(held[0])


@contextlib.contextmanager
def starting_children() -> Iterator[None]:
    """Processes started in this block (from this thread) begin with SIGINT blocked: a
    Ctrl-C while they import (seconds, for torch) stays pending instead of printing a
    KeyboardInterrupt traceback, until `ignore_sigint` discards it. Processes they start
    inherit the mask too (Ray's raylet and its workers). Signals to this process are held
    meanwhile (holding_signals), so a process is never half started when the driver stops.

    Returns:
        A context manager.
    """
    with holding_signals():
        if not _HAS_SIGMASK:
            yield
            return
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def reclaim_signals() -> None:
    """Put this process's Python handlers of SIGINT and SIGTERM back in force, after a library
    replaced them underneath (Ray's driver installs a C handler that prints a stack trace and
    aborts on SIGTERM). Outside the main thread: does nothing."""
    if not _in_main_thread():
        return
    for stop in STOP_SIGNALS:
        handler = signal.getsignal(stop)
        if handler is not None:  # None: not Python's to put back
            signal.signal(stop, handler)


def ignore_sigint() -> None:
    """In a worker process: ignore SIGINT from now on (the driver stops its workers), and
    discard one already pending (starting_children blocked it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _HAS_SIGMASK:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
