"""Shared fixtures: a small synthetic binary task that needs no data files, and the full data
(MNIST, CIFAR car/cat, Boolean-prior tables) where it is: FLATVOL_DATA, else ../shared/data."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from flatvol.data.task import Split, TaskData

# The project's checkouts (and CI's clone) sit beside shared/, which holds the full data sets.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def full_data_dir() -> Path | None:
    """The full-data folder: FLATVOL_DATA if set, else ../shared/data beside the checkout."""
    value = os.environ.get("FLATVOL_DATA", "").strip()
    if value:
        return Path(value)
    return SHARED_DATA if SHARED_DATA.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    """The full data folder; the test is skipped where neither FLATVOL_DATA nor ../shared/data
    exists (a checkout without the project's shared data)."""
    path = full_data_dir()
    if path is None:
        pytest.skip(f"full data not present: set FLATVOL_DATA or provide {SHARED_DATA}")
    if not path.is_dir():
        pytest.fail(f"FLATVOL_DATA={path} is not a folder")
    return path


def make_synthetic_task(n_train: int = 64, n_attack: int = 16, n_test: int = 64, dim: int = 10,
                        seed: int = 0) -> TaskData:
    """Linearly separable-ish Gaussian data; A holds extra points with flipped labels."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(dim)

    def split(n: int, offset: int, flip: bool = False) -> Split:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        y = (x @ w > 0).astype(np.float32)
        if flip:
            y = 1 - y
        return Split(torch.from_numpy(x), torch.from_numpy(y), np.arange(offset, offset + n))

    return TaskData("synthetic", "sign(w.x)", seed, split(n_train, 0),
                    split(n_attack, n_train, flip=True), split(n_test, 0))


@pytest.fixture
def synthetic_task() -> TaskData:
    return make_synthetic_task()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> Callable[..., tuple[int, str, str]]:
    """cli("train", "--out", ...) runs the `flatvol` entry point in this process and returns
    (exit code, stdout, stderr); a user error exits 2, so it never raises."""
    from flatvol.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["flatvol", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        return exit_info.value.code, out, err

    return run
