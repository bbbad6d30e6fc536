"""Files flatvol writes: atomic writes, and the one JSON convention for numbers.

Atomic writes. Every file (run.json, model.pt, kernel caches, tables, reports, sgd-vs-bayes
outputs) is written to a temporary file beside its destination, flushed and fsync'ed, then
renamed into place: a reader, or a re-run after a kill, sees the old file or the complete new
one, never a partial write.

JSON convention. JSON has no infinity or NaN, so every JSON flatvol writes (files, the results
store's `info_json`, `--json` output) stores a non-finite float as `null`; readers that need a
float read `null` back as NaN (`float_or_nan`). numpy scalars and arrays become plain numbers
and lists, tuples become lists, and any other object its `str()` (e.g. a Path).
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file atomically and durably.

    Args:
        path: The destination; its parent directories are created.
        write: Called with a binary file open on a temporary file beside `path`.

    The temporary file is fsync'ed before it replaces `path`, and removed if `write` raises.
    It is created with mode 0o666 less the umask, the permissions of a plain new file
    (tempfile.mkstemp's would be owner-only).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see atomic_write)."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` as UTF-8 to `path` atomically (see atomic_write)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write `obj` as JSON (sorted keys, the module's convention, a final newline) atomically.

    Args:
        path: The destination file.
        obj: Anything `to_jsonable` accepts.
        indent: JSON indentation (None: one line).
    """
    atomic_write_text(path, dumps_json(obj, indent=indent) + "\n")


def to_jsonable(obj: Any) -> Any:
    """`obj` with the module's JSON convention applied, recursively.

    Args:
        obj: Nested dicts, lists and tuples of numbers, strings, numpy values, ...

    Returns:
        The same structure with non-finite floats as None, numpy scalars (and anything else
        with a `tolist()`, e.g. a tensor) as Python numbers, arrays and tuples as lists. Other
        objects are left for `dumps_json` to stringify.
    """
    if isinstance(obj, dict):
        return {_plain(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors: Python values
        return to_jsonable(obj.tolist())
    return obj


def _plain(key: Any) -> Any:
    return key.item() if isinstance(key, np.generic) else key


def dumps_json(obj: Any, indent: int | None = None) -> str:
    """`obj` as JSON text with sorted keys, in the module's convention (never NaN/Infinity).

    Args:
        obj: Anything `to_jsonable` accepts; other objects are written as their `str()`.
        indent: JSON indentation (None: one line).

    Returns:
        The JSON text (valid JSON: `allow_nan=False` holds after the conversion).
    """
    return json.dumps(to_jsonable(obj), indent=indent, sort_keys=True, allow_nan=False,
                      default=str)


def finite_or_none(value: Any) -> float | None:
    """`value` as a float, or None when it is None or not finite (an SQL NULL, a JSON null).

    Args:
        value: None or anything `float()` accepts (Python or numpy numbers).

    Returns:
        The float, or None.
    """
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def float_or_nan(value: Any) -> float:
    """A number read back from JSON written in this convention: `null` becomes NaN.

    Args:
        value: None or anything `float()` accepts.

    Returns:
        The float (NaN for None).
    """
    return math.nan if value is None else float(value)
