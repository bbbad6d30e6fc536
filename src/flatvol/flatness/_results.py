"""Shared pieces of the typed results: JSON-ready dicts and a stopwatch."""

from __future__ import annotations

import math
import time
from dataclasses import fields
from typing import Any

import numpy as np
import torch


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no inf/nan
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item())
    return value


class ResultMixin:
    """`to_dict()` for result dataclasses: tensors are left out, inf/nan become None."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if torch.is_tensor(value) or not f.repr:
                continue
            out[f.name] = _jsonable(value)
        return out


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
