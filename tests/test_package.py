"""The top-level package: lazy public submodules, cheap import, packaging files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import flatvol

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves() -> None:
    for name in flatvol.__all__:
        assert getattr(flatvol, name) is not None
    assert flatvol.flatness.keskar_sharpness is not None
    assert flatvol.volume.VolumeService is not None
    assert flatvol.volume_of is flatvol.volume.volume_of


def test_dir_lists_the_submodules() -> None:
    listed = dir(flatvol)
    for name in flatvol.SUBMODULES:
        assert name in listed


def test_unknown_attribute_is_a_clear_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'flatnes'.*public submodules: analysis"):
        _ = flatvol.flatnes  # type: ignore[attr-defined]


def test_import_flatvol_does_not_import_torch() -> None:
    # A fresh interpreter: this test process has torch loaded already.
    code = "import sys, flatvol; print('torch' in sys.modules, 'flatvol.volume' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_package_ships_license_and_py_typed() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert (ROOT / "src" / "flatvol" / "py.typed").exists()
    assert "py.typed" in (ROOT / "pyproject.toml").read_text()
