"""Shared fixtures: a small synthetic binary task that needs no data files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flatvol.data.task import Split, TaskData


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
