"""Shared pieces of the flatness measures: JSON-ready result dicts, a stopwatch and the check
of a positive argument."""

from __future__ import annotations

import math
import time
from dataclasses import fields
from typing import Any

import torch

from flatvol.errors import SpecError
from flatvol.io import to_jsonable


class ResultMixin:
    """`to_dict()` for result dataclasses: tensors are left out, inf/nan become None."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if torch.is_tensor(value) or not f.repr:
                continue
            out[f.name] = to_jsonable(value)
        return out


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def require_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Raise SpecError unless `value` is a finite positive (or, with allow_zero, non-negative)
    number; `name` is the argument named in the message."""
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and math.isfinite(value)):
        raise SpecError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                        f"number, got {value}")
