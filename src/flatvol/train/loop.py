"""Train a binary classifier until it fits S (or S u A), the paper's protocol."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch.nn import functional as F

from flatvol.data.task import TaskData
from flatvol.errors import SpecError
from flatvol.train.optimizers import (
    OptimizerSettings,
    OptionValue,
    adam_second_moments,
    check_optimizer,
    flush_subnormal_,
    make_optimizer,
)
from flatvol.train.protocol import StoppingRule, data_order_generator


@dataclass(frozen=True)
class TrainConfig:
    """Paper defaults: SGD, lr 0.01, batch 32, stop at the end of the first epoch with S fit.

    `optimizer` is a registered optimizer name (flatvol.train.optimizer_names) and
    `optimizer_options` its own options (e.g. SAM's rho), handed to its factory."""

    optimizer: str = "sgd"
    lr: float = 0.01
    batch_size: int = 32
    max_epochs: int = 2000
    fit: Literal["S", "all"] = "S"
    momentum: float = 0.9
    weight_decay: float = 0.0
    post_train_epochs: int = 0
    # hash=False: a dict cannot be hashed; configs that differ only here still compare unequal
    optimizer_options: Mapping[str, OptionValue] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # a private copy: the caller's dict may change later, a frozen config must not
        object.__setattr__(self, "optimizer_options", dict(self.optimizer_options))
        check_optimizer(self.optimizer, self.optimizer_options)
        self.stopping_rule()  # validates fit, max_epochs and post_train_epochs
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SpecError(f"lr must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise SpecError(f"batch_size must be >= 1, got {self.batch_size}")

    def stopping_rule(self) -> StoppingRule:
        """When a run with this config stops."""
        return StoppingRule(self.fit, self.max_epochs, self.post_train_epochs)

    def optimizer_settings(self) -> OptimizerSettings:
        """What the optimizer factory reads from this config."""
        return OptimizerSettings(self.lr, self.momentum, self.weight_decay,
                                 dict(self.optimizer_options))

    def to_dict(self) -> dict:
        """The config as recorded with a run. Options are listed only when there are some, so
        configs without options keep the form (and the hashes) they always had."""
        out = asdict(self)
        if not out["optimizer_options"]:
            del out["optimizer_options"]
        return out


@dataclass(frozen=True)
class EpochInfo:
    """Passed to the per-epoch callback after every epoch."""

    epoch: int
    phase: Literal["fit", "post"]
    loss: float
    train_acc_S: float
    train_acc_A: float
    fitted_at: int | None  # epoch at which the stopping rule was first met, if yet


@dataclass
class TrainResult:
    status: Literal["fitted", "did_not_fit"]
    epochs: int
    fitted_at: int | None
    train_acc_S: float
    train_acc_A: float
    test_acc_E: float
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def bce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sigmoid cross-entropy on labels in {0, 1}.

    Args:
        logits: Network outputs, shape (n,).
        y: Labels in {0, 1}, shape (n,).

    Returns:
        The mean sigmoid cross-entropy, a scalar tensor.
    """
    return F.binary_cross_entropy_with_logits(logits, y)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> float:
    """Fraction of sign(logit) predictions equal to labels in {0,1}; nan for an empty set.

    Args:
        model: The binary classifier (one logit per input).
        x: Inputs, shape (n, ...).
        y: Labels in {0, 1}, shape (n,).
        chunk: Inputs per forward pass.

    Returns:
        The fraction of correct predictions, or nan when y is empty.
    """
    if len(y) == 0:
        return float("nan")
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(y), chunk):
        logits = model(x[i : i + chunk].to(device))
        correct += int(((logits > 0).float() == y[i : i + chunk].to(device)).sum())
    return correct / len(y)


@torch.no_grad()
def predict_labels(model: torch.nn.Module, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """The function a model expresses on x: labels in {0,1} (float32, on CPU).

    Args:
        model: The binary classifier (one logit per input).
        x: Inputs, shape (n, ...).
        chunk: Inputs per forward pass.

    Returns:
        The labels (logit > 0) in {0, 1}, float32 of shape (n,), on CPU.
    """
    device = next(model.parameters()).device
    out = [(model(x[i : i + chunk].to(device)) > 0).float().cpu() for i in range(0, len(x), chunk)]
    return torch.cat(out) if out else torch.empty(0)


def train_to_fit(
    model: torch.nn.Module,
    task: TaskData,
    config: TrainConfig | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    callback: Callable[[EpochInfo, torch.nn.Module], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> TrainResult:
    """Train on S u A with minibatch `config.optimizer` until the stopping rule holds.

    Stopping (`config.stopping_rule()`): at the end of the first epoch where S (fit='S') or
    S u A (fit='all') is 100% classified, then `post_train_epochs` more epochs. Hitting
    `max_epochs` first gives status 'did_not_fit'. The data order is drawn from `seed` alone
    (`data_order_generator`), so a run is reproducible.

    Args:
        model: trained in place.
        task: S, A and E.
        config: optimizer, batch size and stopping rule (default: the paper's).
        seed: the run seed, which fixes the data order.
        device: where to train.
        callback: called after every epoch with its EpochInfo and the model.
        optimizer: an optimizer already built over `model`'s parameters (e.g. one that SWA
            schedules); default: `config`'s optimizer, made here.

    Returns:
        The run's TrainResult.
    """
    config = config or TrainConfig()
    device = torch.device(device)
    model.to(device)
    x_train, y_train = (t.to(device) for t in task.train_inputs(include_attack=True))
    x_S, y_S = task.S.x.to(device), task.S.y.to(device)
    x_A, y_A = task.A.x.to(device), task.A.y.to(device)
    if optimizer is None:
        optimizer = make_optimizer(config.optimizer, model.parameters(),
                                   config.optimizer_settings())
    rule = config.stopping_rule()
    order_rng = data_order_generator(seed)
    n = len(y_train)
    history: list[dict] = []
    fitted_at: int | None = None
    epoch = 0
    while True:
        model.train()
        perm = torch.randperm(n, generator=order_rng).to(device)
        total = 0.0
        for i in range(0, n, config.batch_size):
            idx = perm[i : i + config.batch_size]

            def closure(idx: torch.Tensor = idx) -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                loss = bce_loss(model(x_train[idx]), y_train[idx])
                loss.backward()
                return loss

            loss = optimizer.step(closure)
            total += float(loss.detach() if torch.is_tensor(loss) else loss) * len(idx)
        flush_subnormal_(adam_second_moments(optimizer))  # keeps Adam's sqrt fast; same updates
        epoch += 1
        model.eval()
        acc_S = accuracy(model, x_S, y_S)
        acc_A = accuracy(model, x_A, y_A)
        phase = "fit" if fitted_at is None else "post"
        if fitted_at is None and rule.fitted(acc_S == 1.0, len(y_A) == 0 or acc_A == 1.0):
            fitted_at = epoch
        info = EpochInfo(epoch, phase, total / n, acc_S, acc_A, fitted_at)
        history.append(asdict(info))
        if callback is not None:
            callback(info, model)
        if rule.done(epoch, fitted_at):
            break
    model.eval()
    return TrainResult(
        status="fitted" if fitted_at is not None else "did_not_fit",
        epochs=epoch,
        fitted_at=fitted_at,
        train_acc_S=accuracy(model, x_S, y_S),
        train_acc_A=accuracy(model, x_A, y_A),
        test_acc_E=accuracy(model, task.E.x.to(device), task.E.y.to(device)),
        history=history,
    )
