"""Progress that suits where it is shown: one helper for the CLI and the library.

- On a terminal: a live rich bar (transient: it disappears when done).
- Anywhere else (a file, a pipe, CI logs): a plain line every `interval` seconds and one at the
  end, with no carriage returns and no ANSI escape codes, so a redirected log stays readable.
  The lines keep coming while the task reports nothing (one long step: a 10-class V(f), a
  Cholesky of S u E): a log that stops means a process that stopped.
- Disabled: nothing at all.

Bars opened while another is live (a CLI bar over a library one, a sweep's rows) share one
rich display, since rich allows only one live display at a time. A display of several bars
(a sweep: runs, stages, runs in flight) is several `ProgressBar`s, one of which writes the plain
lines, its text given by its owner (`line`).

The interval is `FLATVOL_PROGRESS_INTERVAL` seconds (default 10), read when a bar opens.

A library reports progress through one callback signature, `ProgressFn`: it is called with a
`ProgressEvent` (what progresses, its steps, what it does now, a stage it passed), and whoever
called the library shows it (the CLI, a sweep's display) or ignores it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from rich.console import Console
from rich.errors import LiveError
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["INTERVAL_ENV", "ProgressBar", "ProgressEvent", "ProgressFn", "progress_interval",
           "track"]

INTERVAL_ENV = "FLATVOL_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 10.0

T = TypeVar("T")

# The one live rich display per process and how many bars use it (see the module docstring).
_shared_live: Progress | None = None
_shared_users = 0


@dataclass(frozen=True)
class ProgressEvent:
    """One report of a long task's progress, from the library to whoever shows it.

    Attributes:
        key: What progresses (a sweep's RunKey, ...).
        text: What it does now, e.g. "fit  acc_S 0.930".
        completed: Steps done so far (epochs, ...).
        total: Steps in all, or None when unknown.
        stage: A stage it has just passed (a sweep run's 'fitted', or a measure's name), or
            None for a report of steps.
    """

    key: Any
    text: str = ""
    completed: int = 0
    total: int | None = None
    stage: str | None = None


# The one progress callback signature of the library.
ProgressFn = Callable[[ProgressEvent], None]


def progress_interval() -> float:
    """Seconds between plain progress lines: `FLATVOL_PROGRESS_INTERVAL`, else 10 (a value
    that is not a number counts as unset; a negative one as 0).

    Returns:
        The interval in seconds (>= 0).
    """
    raw = os.environ.get(INTERVAL_ENV)
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        return max(0.0, float(raw))
    except ValueError:
        return DEFAULT_INTERVAL_S


def _open_live(stream: IO[str]) -> Progress | None:
    """The shared live display, started on `stream` if none is; None if rich refuses one
    (a live display not made here, e.g. a caller's own rich Live, is running)."""
    global _shared_live, _shared_users
    if _shared_live is None:
        live = Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(),
                        TextColumn("{task.fields[count]}"), TextColumn("{task.fields[status]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(),
                        console=Console(file=stream), transient=True)
        try:
            live.start()
        except LiveError:
            return None
        _shared_live = live
    _shared_users += 1
    return _shared_live


def _close_live() -> None:
    global _shared_live, _shared_users
    _shared_users -= 1
    if _shared_users <= 0 and _shared_live is not None:
        _shared_live.stop()
        _shared_live, _shared_users = None, 0


class ProgressBar:
    """Progress of one task: a live bar on a terminal, plain periodic lines otherwise.

    Use it as a context manager (or call `close()`); `update`/`advance` report progress.

    Args:
        label: What is being done, e.g. "train" or "MC NNGP kernel".
        total: Number of steps, or None when unknown.
        enabled: False shows nothing (the `--quiet` / `progress=False` case).
        unit: Name of one step in plain lines, e.g. "epochs".
        leave: Whether a plain-line stream gets a final line even for a task that finished
            before its first periodic line (library bars pass False to keep logs short).
        stream: Where to write; default `sys.stderr` as it is when the bar opens.
        interval: Seconds between plain lines; default `FLATVOL_PROGRESS_INTERVAL` or 10.
        completed: Steps already done when the bar opens (a resumed task).
        line: The text of each plain line (its elapsed time is appended), for a bar that
            speaks for a display of several (a sweep's); default: label, count and status.
    """

    def __init__(self, label: str, total: int | None = None, *, enabled: bool = True,
                 unit: str = "", leave: bool = True, stream: IO[str] | None = None,
                 interval: float | None = None, completed: int = 0,
                 line: Callable[[], str] | None = None) -> None:
        self.label, self.total, self.unit, self.leave = label, total, unit, leave
        self.completed = completed
        self.status = ""
        self.line = line
        self.stream = stream if stream is not None else sys.stderr
        self.interval = progress_interval() if interval is None else interval
        self._start = self._last_line = time.monotonic()
        self._lines_written = 0
        self._closed = False
        self._lock = threading.Lock()  # the heartbeat and the task's own thread both write
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        self._live: Progress | None = None
        self._task: TaskID | None = None
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.mode = "off" if not enabled else ("live" if is_tty else "lines")
        if self.mode == "live":
            self._live = _open_live(self.stream)
            if self._live is None:
                self.mode = "off"
            else:
                self._task = self._live.add_task(label, total=total, completed=completed,
                                                 count=self._count(), status="")
        if self.mode == "lines" and self.interval > 0:
            # The thread holds the bar weakly: a bar its owner dropped without closing it (an
            # exception on the way) is collected, and its heartbeat ends with it.
            self._heartbeat = threading.Thread(
                target=_heartbeat, args=(weakref.ref(self), self._stop, self.interval),
                daemon=True, name=f"progress: {label}")
            self._heartbeat.start()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # A failed task ends without its final line: the error is then the last word, one line.
        self.close(final_line=exc_type is None)

    def update(self, completed: int | None = None, *, total: int | None = None,
               status: str | None = None) -> None:
        """Set the progress so far.

        Args:
            completed: Steps done (absolute); None keeps the current count.
            total: A new total, when it changes; None keeps it.
            status: Short text shown after the count, e.g. "loss 0.12"; None keeps it.
        """
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if status is not None:
            self.status = status
        self._show()

    def advance(self, steps: int = 1) -> None:
        """Add `steps` to the count (tqdm's `update(n)`)."""
        self.completed += steps
        self._show()

    def milestone(self) -> None:
        """Write a plain line now, whatever the interval (a stage of the task completed);
        a live bar shows it anyway."""
        with self._lock:
            if self.mode == "lines" and not self._closed:
                self._last_line = time.monotonic()
                self._write_line(done=False)

    def close(self, final_line: bool = True) -> None:
        """End the task: remove the live bar, or write a final plain line (see `leave`).

        Args:
            final_line: False ends silently (the task failed).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.mode == "lines" and final_line and (self.leave or self._lines_written):
                self._write_line(done=True)
        self._stop.set()  # the heartbeat ends (a daemon: nothing waits for it)
        if self.mode == "live" and self._live is not None and self._task is not None:
            self._live.remove_task(self._task)
            _close_live()

    def _count(self) -> str:
        count = f"{self.completed}/{self.total}" if self.total is not None else str(self.completed)
        return f"{count} {self.unit}".rstrip()

    def _show(self) -> None:
        if self.mode == "live" and self._live is not None and self._task is not None:
            self._live.update(self._task, completed=self.completed, total=self.total,
                              count=self._count(), status=self.status)
        elif self.mode == "lines":
            with self._lock:
                now = time.monotonic()
                if not self._closed and now - self._last_line >= self.interval:
                    self._last_line = now
                    self._write_line(done=False)

    def _beat(self) -> float | None:
        """One heartbeat: a line if `interval` passed without one; the seconds until the next
        is due (None: the bar is closed)."""
        with self._lock:
            if self._closed:
                return None
            now = time.monotonic()
            if now - self._last_line >= self.interval:
                try:
                    self._write_line(done=False)
                    self._last_line = now
                except Exception:  # noqa: BLE001 (an owner's `line` read its state mid-change
                    return self.interval  # in the task's thread: best effort, next beat)
            return max(0.0, self._last_line + self.interval - now)

    def _write_line(self, *, done: bool) -> None:
        elapsed = time.monotonic() - self._start
        if self.line is not None:
            parts = [self.line()]
        else:
            parts = [f"{self.label}: {self._count()}"]
            if self.status:
                parts.append(self.status)
        parts.append(f"{elapsed:.0f} s" + (", done" if done else ""))
        self.stream.write(", ".join(parts) + "\n")
        self.stream.flush()
        self._lines_written += 1


def _heartbeat(bar_ref: weakref.ref[ProgressBar], stop: threading.Event,
               interval: float) -> None:
    """A redirected bar's heartbeat thread: its line whenever `interval` passes without one,
    until the bar is closed or collected."""
    wait: float | None = interval
    while wait is not None and not stop.wait(wait):
        bar = bar_ref()
        wait = None if bar is None else bar._beat()
        del bar  # not kept alive by this thread while it waits


def track(iterable: Iterable[T], label: str, total: int | None = None, *,
          enabled: bool = True, unit: str = "", leave: bool = False) -> Iterator[T]:
    """Iterate over `iterable` with a `ProgressBar` (the replacement for `tqdm(iterable)`).

    Args:
        iterable: The steps.
        label: What is being done.
        total: Number of steps; default `len(iterable)` where it has one.
        enabled: False shows nothing.
        unit: Name of one step in plain lines.
        leave: Final plain line even for a quick task (see `ProgressBar`).

    Returns:
        An iterator over the same items, advancing the bar after each.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with ProgressBar(label, total, enabled=enabled, unit=unit, leave=leave) as bar:
        for item in iterable:
            yield item
            bar.advance()
