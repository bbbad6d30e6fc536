"""flatvol.io: atomic writes and the one JSON convention (non-finite -> null) of every producer."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest
import torch

from flatvol.io import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    dumps_json,
    finite_or_none,
    float_or_nan,
    to_jsonable,
)


def _strict_loads(text: str):
    def refuse(name: str):
        raise AssertionError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(path, b"old")
    atomic_write(path, lambda fh: fh.write(b"new"))
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]


def test_atomic_write_gives_plain_file_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "é")
    finally:
        os.umask(mask)
    assert (tmp_path / "f.txt").read_text(encoding="utf-8") == "é"
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644  # mkstemp's are 0600


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.json"
    atomic_write_json(path, {"a": 1})

    def half(fh):
        fh.write(b"{\"a\":")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, half)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_non_finite_numbers_are_null_everywhere_in_the_structure():
    obj = {"inf": math.inf, "ninf": -math.inf, "nan": math.nan, "f32": np.float32("inf"),
           "f64": np.float64("-inf"), "array": np.array([1.0, np.nan]), "tuple": (1, math.inf),
           "nested": {"x": [np.float32(0.5), np.int64(3)]}, "tensor": torch.tensor([2.0, math.inf]),
           "path": os.sep}
    text = dumps_json(obj)
    assert _strict_loads(text) == {
        "inf": None, "ninf": None, "nan": None, "f32": None, "f64": None,
        "array": [1.0, None], "tuple": [1, None], "nested": {"x": [0.5, 3]},
        "tensor": [2.0, None], "path": os.sep}
    assert _strict_loads(dumps_json({np.int64(7): np.float32(1.5)})) == {"7": 1.5}
    assert to_jsonable(np.float64(0.1)) == 0.1 and type(to_jsonable(np.float64(0.1))) is float


def test_finite_values_are_written_as_plain_json_would():
    # Stored info_json and run.json keep their bytes for finite values.
    obj = {"b": [0.1, 1e-300, 2 / 3, 10, True, None, "s"], "a": {"z": 1.5, "y": -0.0}}
    assert dumps_json(obj) == json.dumps(obj, sort_keys=True)
    assert dumps_json(obj, indent=2) == json.dumps(obj, sort_keys=True, indent=2)


def test_unknown_objects_are_written_as_their_text(tmp_path):
    assert _strict_loads(dumps_json({"p": tmp_path})) == {"p": str(tmp_path)}


def test_number_helpers():
    assert finite_or_none(np.float32(2.5)) == 2.5 and finite_or_none(None) is None
    assert finite_or_none(math.inf) is None and finite_or_none(np.nan) is None
    assert math.isnan(float_or_nan(None)) and float_or_nan(-3) == -3.0


def test_volume_and_flatness_results_follow_the_convention():
    from flatvol.volume.estimate import VolumeResult

    res = VolumeResult("orthant-is", -math.inf, -math.inf, False, 0, 0.0, 3, 0.0,
                       stderr_log10=math.inf)
    d = res.to_dict()
    assert d["log10_volume"] is None and d["stderr_log10"] is None  # not the string "-inf"
    _strict_loads(dumps_json(d))
