"""Files flatvol writes: atomic writes, and the one JSON convention for numbers.

Atomic writes. Every file (run.json, model.pt, kernel caches, tables, reports, sgd-vs-bayes
outputs) is written to a temporary file beside its destination, flushed and fsync'ed, then
renamed into place: a reader, or a re-run after a kill, sees the old file or the complete new
one, never a partial write.

Write failures. A write that cannot succeed where it is (a full disk, a quota, a read-only file
system, no permission, a file where a folder must be) raises a one-line `WriteError` naming the
path (`unwritable`), not a traceback; the temporary file is removed and the destination is left
as it was.

Verified caches. A cache that is read back (the sweep's kernel files in OUT/cache) carries a
record: a JSON file holding the cache's metadata, the schema version `CACHE_SCHEMA` and the
sha256 of every payload file and of the metadata (`write_cache_record`). `read_cache_record`
gives the metadata back only when all of them match, else raises `CacheDamage`, and the caller
recomputes the cache after one notice line (`cache_notice`). A record without a checksum (written
before caches were verified) is damaged too: unverified, never trusted.

JSON convention. JSON has no infinity or NaN, so every JSON flatvol writes (files, the results
store's `info_json`, `--json` output) stores a non-finite float as `null`; readers that need a
float read `null` back as NaN (`float_or_nan`). numpy scalars and arrays become plain numbers
and lists, tuples become lists, and any other object its `str()` (e.g. a Path).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from flatvol.errors import WriteError

# Why a write cannot succeed where it is, by errno: retrying does not help, the user must act.
_UNWRITABLE = {
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is larger than the file system or a limit allows",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a file stands where a folder must be",
    errno.EEXIST: "a file stands where a folder must be",  # mkdir(exist_ok=True) over a file
}
CACHE_SCHEMA = 1  # the version of a cache record's layout (read_cache_record)
_log = logging.getLogger("flatvol")


# Free space below which a short write without an errno is taken for a full disk.
_NEARLY_FULL_BYTES = 1 << 20


def _nearly_full(path: Path) -> bool:
    for folder in (path, *path.parents):
        try:
            usage = os.statvfs(folder)
        except (OSError, AttributeError):  # absent (yet), or no statvfs (Windows)
            continue
        return usage.f_bavail * usage.f_frsize < _NEARLY_FULL_BYTES
    return False


def unwritable(path: str | Path, exc: OSError) -> WriteError | None:
    """The one-line error of a write to `path` that failed with `exc`, if retrying cannot help.

    Args:
        path: The file or folder being written.
        exc: The OSError the write raised.

    Returns:
        A WriteError naming `path` and the cause, or None when `exc.errno` is not one of a full
        disk, a quota, a read-only file system, a denied permission or a file in the way.
    """
    why = _UNWRITABLE.get(exc.errno) if exc.errno is not None else None
    if why is None and exc.errno is None and _nearly_full(Path(path)):
        # numpy's tofile reports a short write ('10000 requested and 9712 written') without
        # the errno of the C write that stopped: the disk the write stopped on is (nearly) full.
        why = "no space left on the disk"
    if why is None:
        return None
    return WriteError(f"{path}: cannot write it: {why} ({exc.strerror or exc})")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a file atomically and durably.

    Args:
        path: The destination; its parent directories are created.
        write: Called with a binary file open on a temporary file beside `path`.

    Raises:
        WriteError: when the disk is full, the place is read-only or not permitted (see
            `unwritable`); `path` is then unchanged.

    The temporary file is fsync'ed before it replaces `path`, and removed if `write` raises.
    It is created with mode 0o666 less the umask, the permissions of a plain new file
    (tempfile.mkstemp's would be owner-only).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (unwritable(path.parent, exc) or exc) from None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
    except OSError as exc:
        raise (unwritable(path, exc) or exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        failure = unwritable(path, exc)  # before the unlink frees the space the write took
        tmp.unlink(missing_ok=True)
        raise (failure or exc) from None
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


class CacheDamage(Exception):
    """A cache that fails its verification; the message says why. Callers recompute the cache
    (after `cache_notice`): it is never a user error."""


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in chunks (a kernel cache can weigh gigabytes).

    Args:
        path: The file.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _meta_digest(meta: dict[str, Any]) -> str:
    return hashlib.sha256(dumps_json(meta).encode("utf-8")).hexdigest()


def write_cache_record(record: str | Path, files: Sequence[str | Path],
                       meta: dict[str, Any]) -> None:
    """Write the record of cache files already written beside it, atomically and last, so a
    kill between the payloads and their record leaves a record that does not match them.

    Args:
        record: The record's JSON file.
        files: The payload files, in the record's folder (named by their file names).
        meta: The cache's metadata (JSON-able, without a 'cache' key); kept at the top level
            of the record, beside 'cache': {schema, sha256 of each file, meta_sha256}.
    """
    checksums = {Path(f).name: sha256_file(f) for f in files}
    written = to_jsonable(meta)  # what is read back: the digest must be of the same values
    atomic_write_json(record, {**written, "cache": {
        "schema": CACHE_SCHEMA, "sha256": checksums, "meta_sha256": _meta_digest(written)}})


def read_cache_record(record: str | Path, required: Sequence[str | Path]) -> dict[str, Any]:
    """The metadata of a cache whose record and files all verify.

    Args:
        record: The record's JSON file (written by `write_cache_record`).
        required: Payload files the caller will read; each must be in the record.

    Returns:
        The metadata (the record less its 'cache' entry).

    Raises:
        CacheDamage: the record is unreadable, not a JSON object, of another schema or without
            checksums (written before caches were verified), or a file is missing, not in the
            record or not what the record says.
    """
    record = Path(record)
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CacheDamage(f"unreadable record ({exc.__class__.__name__})") from None
    if not isinstance(saved, dict):
        raise CacheDamage(f"record is not a JSON object (got {type(saved).__name__})")
    cache = saved.pop("cache", None)
    if not isinstance(cache, dict) or not isinstance(cache.get("sha256"), dict):
        raise CacheDamage("record has no checksum (written before caches were verified)")
    if cache.get("schema") != CACHE_SCHEMA:
        raise CacheDamage(f"record schema {cache.get('schema')!r}, expected {CACHE_SCHEMA}")
    if cache.get("meta_sha256") != _meta_digest(saved):
        raise CacheDamage("record's metadata does not match its checksum")
    checksums = cache["sha256"]
    missing = sorted({Path(f).name for f in required} - set(checksums))
    if missing:
        raise CacheDamage(f"{missing[0]} is not in the record")
    for name, expected in sorted(checksums.items()):
        path = record.parent / str(name)
        try:
            actual = sha256_file(path)
        except OSError as exc:
            raise CacheDamage(f"{name}: unreadable ({exc.strerror or exc})") from None
        if actual != expected:
            raise CacheDamage(f"{name} does not match its checksum (damaged or changed)")
    return saved


def cache_notice(path: str | Path, why: str) -> None:
    """Say in one line (a warning of the 'flatvol' logger: stderr unless logging is set up
    otherwise) that a cache is not used and is being recomputed.

    Args:
        path: The cache file.
        why: What is wrong with it.
    """
    _log.warning("%s: %s; recomputing it", path, why)
