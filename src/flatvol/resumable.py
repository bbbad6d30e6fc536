"""A long computation's progress on disk, read back only by the same computation.

The Monte-Carlo kernel check (flatvol.volume.mc_checkpoint) and the ensemble trainer
(flatvol.train.ensemble_checkpoint) run for hours and keep their progress in a `ProgressFile`:
a dict of tensors and plain values, written atomically (flatvol.io.atomic_write of a
`torch.save`) every `every_s` seconds, read back with `torch.load(weights_only=True)`, and
used only if its fingerprint (a digest of everything that fixes the computation) matches.
An absent, unreadable or foreign file reads as no progress: the computation starts over and
overwrites it.

Each file also carries the schema version `PROGRESS_SCHEMA` and the sha256 of its content
(`content_digest`), checked before use: a damaged file (flipped bytes that torch.load still
reads, a truncated one, one without a checksum written before files were verified) is never
trusted; it reads as no progress after a one-line notice (flatvol.io.cache_notice).
"""

from __future__ import annotations

import hashlib
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from flatvol.io import atomic_write, cache_notice

T = TypeVar("T")

# What reading a file that is not this computation's progress can raise: torch.load's errors
# on a truncated or foreign file, and the parser's on a dict of another shape.
_UNREADABLE = (OSError, RuntimeError, ValueError, KeyError, AttributeError, EOFError,
               TypeError, pickle.UnpicklingError)
PROGRESS_SCHEMA = 1  # the layout of a progress file's checksum entries
_CHECK_KEYS = ("progress_schema", "progress_sha256")


def _feed(digest: Any, value: Any) -> None:
    # Type tags and lengths keep different structures from hashing alike.
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{flat.dtype}{tuple(value.shape)}|".encode())
        if flat.numel():  # the bytes as they are, without a copy
            digest.update(flat.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}|".encode())
        for key in sorted(value, key=repr):
            digest.update(f"{key!r}|".encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}|".encode())
        for item in value:
            _feed(digest, item)
    else:  # plain values: repr is exact for int, float (round-trips), str, bool, None
        digest.update(f"{type(value).__name__}:{value!r}|".encode())


def content_digest(payload: dict[str, Any]) -> str:
    """The sha256 of a progress dict's content: every tensor's dtype, shape and bytes and every
    plain value, keys sorted; equal for a dict saved and loaded back.

    Args:
        payload: Tensors, plain values, and dicts and lists of them.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    _feed(digest, payload)
    return digest.hexdigest()


class ProgressFile:
    """The progress file at `path` of the computation with `fingerprint`.

    Args:
        path: The file.
        fingerprint: A digest of everything that fixes the computation.
        every_s: Seconds between saves (`due`).
    """

    def __init__(self, path: str | Path, fingerprint: str, every_s: float) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.every_s = float(every_s)
        self._last = time.monotonic()

    def read(self, device: torch.device, parse: Callable[[dict[str, Any]], T]) -> T | None:
        """`parse` of the saved dict (tensors on `device`), or None if the file is absent,
        unreadable, of another computation, fails its checksum, or is not what `parse`
        expects (each but an absent file or another computation's after a notice).

        Args:
            device: Where the saved tensors are loaded.
            parse: Turns the saved dict into the caller's progress.

        Returns:
            The parsed progress, or None.
        """
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location=device, weights_only=True)
        except _UNREADABLE as exc:
            cache_notice(self.path, f"unreadable progress file not used ({exc.__class__.__name__})")
            return None
        if not isinstance(saved, dict):
            cache_notice(self.path, f"progress file holding a {type(saved).__name__}, not a "
                         "dict, not used")
            return None
        schema, checksum = (saved.pop(key, None) for key in _CHECK_KEYS)
        if schema != PROGRESS_SCHEMA or checksum is None:
            cache_notice(self.path, "progress file without a checksum (written before progress "
                         "files were verified) not used")
            return None
        if checksum != content_digest(saved):
            cache_notice(self.path, "progress file does not match its checksum (damaged) and is "
                         "not used")
            return None
        if saved.get("fingerprint") != self.fingerprint:
            return None  # another computation's progress: not damage, simply not ours
        try:
            return parse(saved)
        except _UNREADABLE as exc:
            cache_notice(self.path, f"progress file of an unexpected layout not used "
                         f"({exc.__class__.__name__})")
            return None

    def due(self) -> bool:
        """Whether `every_s` seconds have passed since the last save (or the start)."""
        return time.monotonic() - self._last >= self.every_s

    def write(self, payload: dict[str, Any]) -> None:
        """Save `payload` (tensors on CPU, plain values) with the fingerprint, atomically.

        Args:
            payload: What the computation needs to resume.
        """
        saved = {**payload, "fingerprint": self.fingerprint}
        saved.update(zip(_CHECK_KEYS, (PROGRESS_SCHEMA, content_digest(saved)), strict=True))
        atomic_write(self.path, lambda fh: torch.save(saved, fh))
        self._last = time.monotonic()
