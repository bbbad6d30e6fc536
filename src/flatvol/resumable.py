"""A long computation's progress on disk, read back only by the same computation.

The Monte-Carlo kernel check (flatvol.volume.mc_checkpoint) and the ensemble trainer
(flatvol.train.ensemble_checkpoint) run for hours and keep their progress in a `ProgressFile`:
a dict of tensors and plain values, written atomically (flatvol.io.atomic_write of a
`torch.save`) every `every_s` seconds, read back with `torch.load(weights_only=True)`, and
used only if its fingerprint (a digest of everything that fixes the computation) matches.
An absent, unreadable or foreign file reads as no progress: the computation starts over and
overwrites it.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from flatvol.io import atomic_write

T = TypeVar("T")

# What reading a file that is not this computation's progress can raise: torch.load's errors
# on a truncated or foreign file, and the parser's on a dict of another shape.
_UNREADABLE = (OSError, RuntimeError, ValueError, KeyError, AttributeError, EOFError,
               TypeError, pickle.UnpicklingError)


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
        unreadable, of another computation, or not what `parse` expects.

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
            if not isinstance(saved, dict) or saved.get("fingerprint") != self.fingerprint:
                return None
            return parse(saved)
        except _UNREADABLE:
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
        atomic_write(self.path, lambda fh: torch.save(saved, fh))
        self._last = time.monotonic()
