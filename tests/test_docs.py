"""The documentation site builds with `mkdocs build --strict`: every page, every docstring of the
API reference (a docstring whose Args do not match its signature fails here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs not installed (the 'dev' extra installs it)")
    pytest.importorskip("mkdocstrings_handlers.python",
                        reason="mkdocstrings[python] not installed (the 'dev' extra installs it)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    # The interpreter's own mkdocs, so the build sees this environment's packages.
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(tmp_path / "site"), "--config-file", str(ROOT / "mkdocs.yml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "volume" / "index.html").read_text()
    for name in ("VolumeService", "select_kernel", "volume_of_model", "volume_of",
                 "monte_carlo_kernel"):
        assert name in api
    analysis = (tmp_path / "site" / "api" / "analysis" / "index.html").read_text()
    assert "correlation_table" in analysis and "generalization" in analysis
    shutil.rmtree(tmp_path / "site")
