"""Train a classifier (one logit, or K outputs for K classes) until it fits S (or S u A), the
paper's protocol: sigmoid cross-entropy on one logit, softmax cross-entropy on K outputs."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from flatvol.data.task import TaskData
from flatvol.errors import SpecError
from flatvol.models.labels import labels_from_outputs
from flatvol.models.losses import classification_loss
from flatvol.train.optimizers import (
    OptimizerSettings,
    OptionValue,
    adam_second_moments,
    check_optimizer,
    flush_subnormal_,
    make_optimizer,
)
from flatvol.train.protocol import (
    DEFAULT_DATA_ORDER,
    DataOrder,
    StoppingRule,
    check_data_order,
    data_order_generator,
    epoch_order,
)


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
    order: DataOrder = DEFAULT_DATA_ORDER  # flatvol.train.protocol.DATA_ORDERS

    def __post_init__(self) -> None:
        # a private copy: the caller's dict may change later, a frozen config must not
        object.__setattr__(self, "optimizer_options", dict(self.optimizer_options))
        check_optimizer(self.optimizer, self.optimizer_options)
        self.stopping_rule()  # validates fit, max_epochs and post_train_epochs
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SpecError(f"lr must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise SpecError(f"batch_size must be >= 1, got {self.batch_size}")
        check_data_order(self.order)

    def stopping_rule(self) -> StoppingRule:
        """When a run with this config stops."""
        return StoppingRule(self.fit, self.max_epochs, self.post_train_epochs)

    def optimizer_settings(self) -> OptimizerSettings:
        """What the optimizer factory reads from this config."""
        return OptimizerSettings(self.lr, self.momentum, self.weight_decay,
                                 dict(self.optimizer_options))

    def to_dict(self) -> dict:
        """The config as recorded with a run. Options are listed only when there are some, and
        the data order only when it is not the default, so the configs of earlier versions keep
        the form (and the hashes) they always had."""
        out = asdict(self)
        if not out["optimizer_options"]:
            del out["optimizer_options"]
        if out["order"] == DEFAULT_DATA_ORDER:
            del out["order"]
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


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> float:
    """Fraction of the model's labels (flatvol.models.labels: logit > 0 for one logit, argmax
    for K outputs) equal to y; nan for an empty set.

    Args:
        model: The classifier (one logit or K outputs per input).
        x: Inputs, shape (n, ...).
        y: Labels, shape (n,): {0, 1} for one logit, 0..K-1 for K outputs.
        chunk: Inputs per forward pass.

    Returns:
        The fraction of correct predictions, or nan when y is empty.
    """
    if len(y) == 0:
        return float("nan")
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(y), chunk):
        labels = labels_from_outputs(model(x[i : i + chunk].to(device)))
        correct += int((labels == y[i : i + chunk].to(device)).sum())
    return correct / len(y)


@torch.no_grad()
def check_task_outputs(model: torch.nn.Module, task: TaskData) -> None:
    """Refuse a model whose output count does not fit the task (one logit for a binary task,
    K for K classes): its loss and labels would be silently wrong.

    Args:
        model: The classifier, evaluated on one input of S in eval mode (its mode is restored).
        task: The task it is to be trained on.

    Raises:
        SpecError: The model gives another number of outputs per input.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        outputs = model(task.S.x[:1].to(device))
    finally:
        model.train(was_training)
    got = 1 if outputs.ndim == 1 else int(outputs.shape[-1])
    if outputs.ndim > 2 or got != task.outputs:
        raise SpecError(f"model outputs: expected {task.outputs} per input for the "
                        f"{task.n_classes}-class task {task.task} {task.classes}, got "
                        f"{tuple(outputs.shape[1:]) or 1}")


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

    The loss is `classification_loss`: sigmoid cross-entropy for a one-logit model on a binary
    task, softmax cross-entropy for a K-output model on a K-class task (int64 labels).
    Stopping (`config.stopping_rule()`): at the end of the first epoch where S (fit='S') or
    S u A (fit='all') is 100% classified (labels_from_outputs equal to the labels), then
    `post_train_epochs` more epochs. Hitting `max_epochs` first gives status 'did_not_fit'.
    The data order (`config.order`: shuffled every epoch, or fixed) is drawn from `seed`
    alone (`data_order_generator`), so a run is reproducible.

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

    Raises:
        SpecError: The model's output count does not fit the task (check_task_outputs).
    """
    config = config or TrainConfig()
    device = torch.device(device)
    model.to(device)
    check_task_outputs(model, task)
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
        perm = epoch_order(n, order_rng, config.order).to(device)
        total = 0.0
        for i in range(0, n, config.batch_size):
            idx = perm[i : i + config.batch_size]

            def closure(idx: torch.Tensor = idx) -> torch.Tensor:
                optimizer.zero_grad(set_to_none=True)
                loss = classification_loss(model(x_train[idx]), y_train[idx])
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
