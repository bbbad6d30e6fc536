"""Optimizer registry: name -> torch.optim optimizer over a model's parameters."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from flatvol.errors import SpecError

OptimizerFactory = Callable[
    [Iterable[torch.nn.Parameter], "OptimizerSettings"], torch.optim.Optimizer
]


class OptimizerSettings:
    """The hyperparameters an optimizer factory may read (a view of TrainConfig)."""

    def __init__(self, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, **extra: float):
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.extra = extra


_REGISTRY: dict[str, OptimizerFactory] = {
    "sgd": lambda p, s: torch.optim.SGD(p, lr=s.lr, weight_decay=s.weight_decay),
    "momentum": lambda p, s: torch.optim.SGD(
        p, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay
    ),
    "adam": lambda p, s: torch.optim.Adam(p, lr=s.lr, weight_decay=s.weight_decay),
}


def register_optimizer(name: str, factory: OptimizerFactory) -> None:
    """Make `name` available to train_to_fit, specs and the CLI."""
    _REGISTRY[name] = factory


def optimizer_names() -> list[str]:
    return sorted(_REGISTRY)


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], settings: OptimizerSettings
) -> torch.optim.Optimizer:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise SpecError(
            f"unknown optimizer {name!r}; expected one of {', '.join(optimizer_names())}"
        ) from None
    return factory(params, settings)
