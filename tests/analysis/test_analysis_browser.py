"""The report opens in a real browser (headless Chromium) with every figure decoded and shown.
Skipped where no chromium is installed (Debian: apt-get install chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib.image import imread

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH (make test installs it as root: apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
# Counts images, those decoded, and those laid out wider than 300 px.
PROBE = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
         "document.body.setAttribute('data-images',[i.length,"
         "i.filter(x=>x.complete&&x.naturalWidth>0).length,"
         "i.filter(x=>x.getBoundingClientRect().width>300).length].join('/'));});</script>")


def _chromium(*args: str, cwd) -> str:
    profile = f"--user-data-dir={cwd / 'chromium-profile'}"
    done = subprocess.run([CHROMIUM, *FLAGS, profile, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    return done.stdout


def test_every_figure_renders_in_chromium(report, tmp_path):
    out, path, page, _ = report
    n_figures = page.count("<img ")
    assert n_figures == 4
    # The report itself has no scripts; a probe copy reports what the browser made of the images.
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), cwd=tmp_path)
    match = re.search(r'data-images="(\d+)/(\d+)/(\d+)"', dom)
    assert match, dom[-2000:]
    assert tuple(map(int, match.groups())) == (n_figures,) * 3

    shot = tmp_path / "report.png"
    _chromium(f"--screenshot={shot}", "--window-size=1400,3000", path.as_uri(), cwd=tmp_path)
    pixels = imread(shot)
    assert pixels.shape[:2] == (3000, 1400)
    # Not a blank page: many distinct colours (text, tables, plots).
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200
