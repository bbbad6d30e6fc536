"""The top-level package: lazy public submodules, cheap import, packaging files."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

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


def _runtime_requirements() -> list[Requirement]:
    requires = importlib.metadata.requires("flatvol") or []
    return [r for r in map(Requirement, requires) if r.marker is None]  # extras have a marker


def test_installed_metadata_matches_pyproject() -> None:
    # A stale install (pyproject edited, not reinstalled) would make the checks below test
    # old metadata; `make test` reinstalls whenever pyproject.toml changes.
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    installed = {(r.name, str(r.specifier)) for r in _runtime_requirements()}
    assert installed == {(r.name, str(r.specifier)) for r in map(Requirement, declared)}, \
        "installed flatvol metadata is stale: reinstall with pip install -e ."


def test_installed_metadata_names_authors_license_urls_and_classifiers() -> None:
    meta = importlib.metadata.metadata("flatvol")
    assert meta["Author"] == "flatvol developers"
    assert meta["License-Expression"] == "MIT"
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Issues"}
    assert all(url.startswith("https://") for url in urls.values())
    classifiers = set(meta.get_all("Classifier") or [])
    running = f"Programming Language :: Python :: {sys.version_info.major}.{sys.version_info.minor}"
    assert {running, "Operating System :: OS Independent",
            "Intended Audience :: Science/Research",
            "Topic :: Scientific/Engineering :: Artificial Intelligence"} <= classifiers


def test_runtime_dependencies_are_bounded_by_the_tested_versions() -> None:
    requirements = _runtime_requirements()
    assert {r.name.lower() for r in requirements} >= {"torch", "numpy", "scipy", "pandas",
                                                      "matplotlib"}
    for r in requirements:
        bounds = {s.operator: Version(s.version) for s in r.specifier}
        assert set(bounds) == {">=", "<"}, f"{r}: expected a >= and a < bound"
        low, high = bounds[">="], bounds["<"]
        assert high == Version(f"{low.major + 1}"), f"{r}: upper bound is not the next major"
        # this environment, where the suite runs, lies inside the declared range
        assert r.specifier.contains(importlib.metadata.version(r.name), prereleases=True), r
