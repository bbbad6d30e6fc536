"""Stochastic Weight Averaging (Izmailov et al., UAI 2018) via torch.optim.swa_utils.

SWA is not an optimizer but a procedure around one, so it hooks into `train_to_fit` without a
change to the loop: the tracker is given the optimizer the run trains with (built with the
registry and passed to `train_to_fit(..., optimizer=...)`) so SWALR can schedule it, and its
`callback` runs after every epoch. From the epoch at which the stopping rule is met (the fitted
weights are the first average point) through every post-training epoch, the tracker adds the
weights to an `AveragedModel` and steps `SWALR`.

After training, `averaged_model(task)` recomputes BatchNorm statistics with `update_bn` on the
training inputs (S u A) and returns the averaged network, which is what gets measured. So SWA
needs `post_train_epochs > 0`: the average is over the fitted weights and the post-fit epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from flatvol.data.task import TaskData
from flatvol.errors import SpecError
from flatvol.train.loop import EpochInfo


@dataclass(frozen=True)
class SWAConfig:
    """`lr`: the SWA learning rate SWALR anneals to (None: keep the base lr);
    `anneal_epochs`, `anneal_strategy`: how SWALR gets there."""

    lr: float | None = None
    anneal_epochs: int = 1
    anneal_strategy: Literal["cos", "linear"] = "cos"

    def __post_init__(self) -> None:
        if self.lr is not None and not self.lr > 0:
            raise SpecError(f"swa lr must be positive, got {self.lr}")
        if self.anneal_epochs < 1:
            raise SpecError(f"swa anneal_epochs must be >= 1, got {self.anneal_epochs}")
        if self.anneal_strategy not in ("cos", "linear"):
            raise SpecError(
                f"swa anneal_strategy must be 'cos' or 'linear', got {self.anneal_strategy!r}"
            )


class SWATracker:
    """Averages the weights from the fit epoch on. Pass the same `optimizer` to train_to_fit,
    use `callback` as (or inside) train_to_fit's callback; then call `averaged_model(task)`."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: SWAConfig | None = None):
        """Args:
            optimizer: the optimizer the run trains with (SWALR sets its learning rate).
            config: the SWA learning rate and its annealing (default: keep the base lr).
        """
        self.config = config or SWAConfig()
        self.optimizer = optimizer
        self.swa_model: AveragedModel | None = None
        self.scheduler: SWALR | None = None
        self.epochs_averaged: list[int] = []

    def callback(self, info: EpochInfo, model: torch.nn.Module) -> None:
        if info.fitted_at is None:
            return
        if self.swa_model is None:  # the fit epoch: first average point; SWALR from here on
            first = next(model.parameters())
            if not any(p is first for g in self.optimizer.param_groups for p in g["params"]):
                raise RuntimeError("SWATracker: its optimizer does not train this model "
                                   "(pass the same optimizer to train_to_fit)")
            self.swa_model = AveragedModel(model)
            if self.config.lr is not None:
                self.scheduler = SWALR(self.optimizer, swa_lr=self.config.lr,
                                       anneal_epochs=self.config.anneal_epochs,
                                       anneal_strategy=self.config.anneal_strategy)
        elif self.scheduler is not None:
            self.scheduler.step()  # after each post-fit epoch, as in the swa_utils recipe
        self.swa_model.update_parameters(model)
        self.epochs_averaged.append(info.epoch)

    @torch.no_grad()
    def averaged_model(self, task: TaskData, batch_size: int = 256) -> torch.nn.Module:
        """The averaged network (BatchNorm statistics recomputed on S u A), in eval mode."""
        if self.swa_model is None:
            raise RuntimeError("SWATracker: nothing averaged (the run never fit its training set)")
        averaged = self.swa_model.module
        device = next(averaged.parameters()).device
        x, _ = task.train_inputs(include_attack=True)
        update_bn((x[i : i + batch_size] for i in range(0, len(x), batch_size)), averaged,
                  device=device)
        averaged.eval()
        return averaged
