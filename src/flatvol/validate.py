"""Checks of command options that every command shares: thread counts, devices, output paths.

Each check raises a one-line SpecError naming the option, what it expects and what it got, and
touches nothing on disk, so a command can run all of them before any work (the CLI turns the
error into exit code 2).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from flatvol.errors import SpecError


def check_threads(threads: int | None, option: str = "--threads") -> int | None:
    """A torch thread count: None (torch's default) or an integer >= 1.

    Args:
        threads: the requested count.
        option: the option's name, for the message.

    Returns:
        `threads` unchanged.
    """
    if threads is not None and (isinstance(threads, bool) or int(threads) != threads
                                or threads < 1):
        raise SpecError(f"{option}: expected an integer >= 1, got {threads!r}")
    return threads


def check_positive_int(value: int, option: str, at_most: int | None = None) -> int:
    """An integer option that must be >= 1 (workers, samples, networks), and <= `at_most`
    when given (a bound of flatvol.limits)."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise SpecError(f"{option}: expected an integer >= 1, got {value!r}")
    if at_most is not None and value > at_most:
        raise SpecError(f"{option}: expected an integer in 1..{at_most}, got {value!r}")
    return value


AUTO = "auto"


def check_workers(value: int | str, option: str = "--workers") -> int | str:
    """A worker count: 'auto' or an integer >= 1 (an integer given as text is parsed).

    Args:
        value: the requested count ('auto', an int, or its text from the command line).
        option: the option's name, for the message.

    Returns:
        'auto' or the count as an int.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == AUTO:
            return AUTO
        try:
            value = int(text)
        except ValueError:
            raise SpecError(f"{option}: expected 'auto' or an integer >= 1, got {text!r}"
                            ) from None
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise SpecError(f"{option}: expected 'auto' or an integer >= 1, got {value!r}")
    return int(value)


def check_device(device: str | torch.device, option: str = "--device") -> torch.device:
    """A torch device that exists on this machine: 'cpu', or 'cuda[:i]' / 'mps' when present.

    Args:
        device: the device string (or torch.device).
        option: the option's name, for the message.

    Returns:
        The parsed torch.device.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SpecError(f"{option}: expected a torch device such as cpu, cuda or cuda:1, "
                        f"got {str(device)!r}") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SpecError(f"{option}: expected a device present on this machine, got "
                            f"{str(device)!r} (no CUDA device is available; use cpu)")
        if parsed.index is not None and parsed.index >= count:
            raise SpecError(f"{option}: expected cuda:0..cuda:{count - 1}, got {str(device)!r}")
        return parsed
    if parsed.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise SpecError(f"{option}: expected a device present on this machine, got "
                            f"{str(device)!r} (MPS is not available; use cpu)")
        return parsed
    raise SpecError(f"{option}: expected cpu, cuda[:i] or mps, got {str(device)!r}")


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): rely on os.access
        return False


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK) and not _read_only_mount(path)


def check_output_dir(path: str | Path, option: str = "--out",
                     folders: tuple[str, ...] = ()) -> Path:
    """A directory the command may create or write into: not an existing file, and writable
    (or creatable under a writable folder), as are the `folders` inside it that exist.
    Nothing is created here.

    Args:
        path: the output directory.
        option: the option's name, for the message.
        folders: folders the command writes inside it (e.g. 'cache'): each that exists must be
            a writable folder, so a file in their place is refused before anything is written.

    Returns:
        The path as a Path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SpecError(f"{option} {path}: expected a directory, got an existing file")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise SpecError(f"{option} {path}: expected a directory, but {base} is a file")
    if not _writable(base):
        what = "directory" if base == path else f"parent folder {base}"
        raise SpecError(f"{option} {path}: expected a writable directory, but the {what} "
                        "is not writable")
    for name in folders:
        inside = path / name
        if inside.exists() and not inside.is_dir():
            raise SpecError(f"{option} {path}: expected {inside} to be a folder, got a file "
                            "(move it away)")
        if inside.is_dir() and not _writable(inside):
            raise SpecError(f"{option} {path}: expected a writable folder {inside}, but it is "
                            "not writable")
    return path
