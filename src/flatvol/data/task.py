"""The task a network is trained and measured on: S (train), A (attack), E (test)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flatvol.digest import digest


@dataclass(frozen=True)
class Split:
    """Inputs x (float32, shape (n, *input_shape)), labels y (shape (n,): float32 in {0, 1} for
    a binary task, int64 in 0..K-1 for K >= 3 classes), and the indices of these examples in
    their source array (train pool or test set)."""

    x: torch.Tensor
    y: torch.Tensor
    index: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class TaskData:
    """S: genuine training set; A: attack set (pool images disjoint from S, wrong labels);
    E: held-out test subset. S and E depend only on `data_seed`, so every network of a sweep
    shares the inputs S u E (and hence one NNGP kernel). `n_classes` is K: 2 for a binary task
    (float32 {0, 1} labels, one logit), K >= 3 for int64 labels 0..K-1 (K outputs)."""

    task: str
    classes: str
    data_seed: int
    S: Split
    A: Split
    E: Split
    n_classes: int = 2

    @property
    def outputs(self) -> int:
        """The outputs a network of this task has: one logit for two classes, else K."""
        return 1 if self.n_classes == 2 else self.n_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.S.x.shape[1:])

    @property
    def train_size(self) -> int:
        return len(self.S)

    @property
    def attack_size(self) -> int:
        return len(self.A)

    @property
    def test_size(self) -> int:
        return len(self.E)

    def fingerprint(self) -> str:
        """A hash of the examples and labels of S, A and E: caches keyed by it are never reused
        for other data (another data directory, seed or class split)."""
        return digest("data", [f"{self.task}|{self.classes}".encode(), *(
            part for split in (self.S, self.A, self.E) for tensor in (split.x, split.y)
            for part in (str(tuple(tensor.shape)).encode(),
                         tensor.detach().cpu().contiguous().numpy().tobytes()))])

    def x_SE(self) -> torch.Tensor:
        """Inputs of S then E, the points on which V(f) is measured."""
        return torch.cat([self.S.x, self.E.x])

    def y_SE(self) -> torch.Tensor:
        """True labels of S then E."""
        return torch.cat([self.S.y, self.E.y])

    def train_inputs(self, include_attack: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """What the optimizer sees: S, plus A (with flipped labels) when attacking."""
        if not include_attack or len(self.A) == 0:
            return self.S.x, self.S.y
        return torch.cat([self.S.x, self.A.x]), torch.cat([self.S.y, self.A.y])
