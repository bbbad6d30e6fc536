"""Stochastic Weight Averaging (Izmailov et al., UAI 2018) via torch.optim.swa_utils.

SWA is not an optimizer but a procedure around one, so it hooks into `train_to_fit` through its
two extension points and needs no change to the loop:

- the optimizer registry: `SWATracker.optimizer_name` is a registered alias of the base
  optimizer whose factory also hands the created optimizer to the tracker (for SWALR);
- the per-epoch callback: from the epoch at which the stopping rule is met (the fitted weights
  are the first average point) through every post-training epoch, the tracker adds the weights
  to an `AveragedModel` and steps `SWALR`.

After training, `averaged_model(task)` recomputes BatchNorm statistics with `update_bn` on the
training inputs (S u A) and returns the averaged network, which is what gets measured. So SWA
needs `post_train_epochs > 0`: the average is over the fitted weights and the post-fit epochs.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Literal

import torch
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from flatvol.data.task import TaskData
from flatvol.errors import SpecError
from flatvol.train.loop import EpochInfo
from flatvol.train.optimizers import (
    OptimizerSettings,
    make_optimizer,
    optimizer_names,
    register_optimizer,
)

# id(first parameter) -> the optimizer built over it by a `swa:` alias (weak: no leak).
_CREATED: weakref.WeakValueDictionary[int, torch.optim.Optimizer] = weakref.WeakValueDictionary()


def _first_param(params: list) -> torch.Tensor:
    first = params[0]
    return first["params"][0] if isinstance(first, dict) else first


def swa_optimizer_name(base: str) -> str:
    """Register (once) and return the alias `swa:<base>`: the base optimizer, made findable."""
    if base not in optimizer_names():
        raise SpecError(
            f"unknown optimizer {base!r}; expected one of {', '.join(optimizer_names())}"
        )
    name = f"swa:{base}"
    if name not in optimizer_names():

        def factory(params, settings: OptimizerSettings) -> torch.optim.Optimizer:
            params = list(params)
            optimizer = make_optimizer(base, params, settings)
            _CREATED[id(_first_param(params))] = optimizer
            return optimizer

        register_optimizer(name, factory)
    return name


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
    """Averages the weights from the fit epoch on. Use `optimizer_name` in the TrainConfig and
    `callback` as (or inside) train_to_fit's callback; then call `averaged_model(task)`."""

    def __init__(self, base_optimizer: str, config: SWAConfig | None = None):
        self.config = config or SWAConfig()
        self.optimizer_name = swa_optimizer_name(base_optimizer)
        self.swa_model: AveragedModel | None = None
        self.scheduler: SWALR | None = None
        self.epochs_averaged: list[int] = []

    def callback(self, info: EpochInfo, model: torch.nn.Module) -> None:
        if info.fitted_at is None:
            return
        if self.swa_model is None:  # the fit epoch: first average point; SWALR from here on
            self.swa_model = AveragedModel(model)
            optimizer = _CREATED.get(id(next(model.parameters())))
            if optimizer is None:
                raise RuntimeError(
                    f"SWATracker: train with optimizer {self.optimizer_name!r} so SWALR can find it"
                )
            if self.config.lr is not None:
                self.scheduler = SWALR(optimizer, swa_lr=self.config.lr,
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
