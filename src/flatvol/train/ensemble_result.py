"""What ensemble training returns: each member's outcome and final weights
(`EnsembleResult`), the per-epoch progress (`EnsembleEpochInfo`) and a member as it stops
(`StoppedMember`), in the forms `train_to_fit` gives them for one network."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from flatvol.models.labels import labels_from_outputs
from flatvol.train.loop import TrainResult
from flatvol.train.stacked import Params, StackedEngine


@dataclass(frozen=True)
class EnsembleEpochInfo:
    """Passed to the ensemble callback after every epoch."""

    epoch: int
    active: int  # members still training after this epoch
    fitted: int  # members whose stopping rule has been met so far
    finished: int  # members that have stopped (fitted or out of epochs)
    total: int
    stopped: tuple[int, ...] = ()  # the members (indices) that stopped after this epoch


@dataclass
class EnsembleResult:
    """Per-member outcomes (as in TrainResult) and the final weights, stacked along dim 0."""

    seeds: list[int]
    attack_sizes: list[int]  # member k trained on S plus the first attack_sizes[k] points of A
    status: list[str]
    epochs: np.ndarray
    fitted_at: list[int | None]
    train_acc_S: np.ndarray
    train_acc_A: np.ndarray
    test_acc_E: np.ndarray
    params: Params
    buffers: Params
    histories: list[list[dict]] | None
    engine: str
    flops: float  # matmul FLOPs performed in training and evaluation (FCN engine; else nan)
    _template: nn.Module = field(repr=False)
    _runner: StackedEngine = field(repr=False)

    def __len__(self) -> int:
        return len(self.seeds)

    def result(self, i: int) -> TrainResult:
        """Member i's outcome in the form train_to_fit returns it."""
        return member_result(self.status[i], int(self.epochs[i]), self.fitted_at[i],
                              (self.train_acc_S[i], self.train_acc_A[i], self.test_acc_E[i]),
                              self.histories[i] if self.histories is not None else [])

    @property
    def results(self) -> list[TrainResult]:
        return [self.result(i) for i in range(len(self))]

    def model(self, i: int) -> nn.Module:
        """Member i as a standalone nn.Module (a copy; same class, spec and prior as built)."""
        return member_model(self._template, self.params, self.buffers, i)

    def models(self) -> list[nn.Module]:
        return [self.model(i) for i in range(len(self))]

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's outputs on x: shape (K, n) (one logit) or (K, n, C) (C classes)."""
        device = next(iter(self.params.values())).device
        return self._runner.logits(self.params, self.buffers, x.to(device))

    @torch.no_grad()
    def predict_labels(self, x: torch.Tensor) -> torch.Tensor:
        """The function each member expresses on x, shape (K, n), on CPU, by the one rule of
        flatvol.models.labels_from_outputs, in the task's label type: float32 {0, 1} for one
        logit, int64 argmax for C outputs."""
        outputs = self.logits(x)
        labels = torch.stack([labels_from_outputs(member) for member in outputs]).cpu()
        return labels.float() if outputs.ndim == 2 else labels


def member_result(status: str, epochs: int, fitted_at: int | None,
                  accuracies: tuple[float, float, float], history: list[dict]) -> TrainResult:
    """A member's outcome in the form train_to_fit returns it (accuracies: S, A, E)."""
    return TrainResult(status=status, epochs=epochs, fitted_at=fitted_at,  # type: ignore[arg-type]
                       train_acc_S=float(accuracies[0]), train_acc_A=float(accuracies[1]),
                       test_acc_E=float(accuracies[2]), history=list(history))


def member_model(template: nn.Module, params: Params, buffers: Params, i: int) -> nn.Module:
    """Member i of stacked params and buffers as a standalone copy of `template`."""
    module = copy.deepcopy(template)
    state = {k: v[i] for k, v in params.items()}
    state.update({k: v[i] for k, v in buffers.items()})
    module.load_state_dict(state)
    return module.to(next(iter(params.values())).device).eval()


@dataclass(frozen=True)
class StoppedMember:
    """A member that has stopped training, passed to train_models_together's `on_stopped`."""

    index: int  # its position in `models` (and in the EnsembleResult)
    result: TrainResult  # as EnsembleResult.result(index)
    model: nn.Module  # as EnsembleResult.model(index)
    engine: str  # the stacked-training engine, as EnsembleResult.engine
    seconds: float = math.nan  # the ensemble's training time until it stopped (all resumes)
