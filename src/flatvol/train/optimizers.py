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


def _plain(name: str, make: OptimizerFactory) -> OptimizerFactory:
    """A torch.optim optimizer that takes no options beyond lr, momentum and weight decay."""
    def factory(params: Iterable[torch.nn.Parameter], s: OptimizerSettings) -> Optimizer:
        _check_extra(name, s, ())
        return make(params, s)

    return factory


_REGISTRY: dict[str, OptimizerFactory] = {
    "sgd": _plain("sgd", lambda p, s: torch.optim.SGD(p, lr=s.lr, weight_decay=s.weight_decay)),
    "momentum": _plain("momentum", lambda p, s: torch.optim.SGD(
        p, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)),
    "adam": _plain("adam", lambda p, s: torch.optim.Adam(
        p, lr=s.lr, weight_decay=s.weight_decay)),
}


Optimizer = torch.optim.Optimizer


def _check_extra(name: str, settings: OptimizerSettings, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(settings.extra) - set(allowed))
    if unknown:
        expected = f"some of {', '.join(allowed)}" if allowed else "none"
        raise SpecError(
            f"optimizer {name!r}: unknown option(s) {', '.join(unknown)}; expected {expected}"
        )


ENTROPY_SGD_OPTIONS = ("langevin_steps", "sgld_lr", "noise", "mean_weight", "gamma0", "gamma1",
                       "momentum", "nesterov", "seed")
SAM_OPTIONS = ("base", "rho", "adaptive")


def _entropy_sgd(params: Iterable[torch.nn.Parameter], s: OptimizerSettings) -> Optimizer:
    from flatvol.train.entropy_sgd import EntropySGD

    _check_extra("entropy-sgd", s, ENTROPY_SGD_OPTIONS)
    try:
        return EntropySGD(params, lr=s.lr, weight_decay=s.weight_decay, **s.extra)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"optimizer 'entropy-sgd': {exc}") from None


def _sam(params: Iterable[torch.nn.Parameter], s: OptimizerSettings) -> Optimizer:
    from flatvol.train.sam import SAM

    _check_extra("sam", s, SAM_OPTIONS)
    extra = dict(s.extra)
    base = str(extra.pop("base", "sgd"))
    if base == "sam" or base.startswith("sam("):
        raise SpecError("optimizer 'sam': base must not be 'sam' itself")
    base_settings = OptimizerSettings(s.lr, s.momentum, s.weight_decay)
    try:
        return SAM(params, lambda groups: make_optimizer(base, groups, base_settings), **extra)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"optimizer 'sam': {exc}") from None


_REGISTRY["entropy-sgd"] = _entropy_sgd
_REGISTRY["sam"] = _sam


def optimizer_with_options(name: str, options: dict | None = None) -> str:
    """Register (once) and return an alias of `name` whose factory also receives `options` as
    OptimizerSettings.extra (e.g. SAM's rho, Entropy-SGD's langevin_steps), since TrainConfig
    carries only lr, momentum and weight decay. Without options, returns `name` unchanged."""
    if name not in _REGISTRY:
        raise SpecError(
            f"unknown optimizer {name!r}; expected one of {', '.join(optimizer_names())}"
        )
    if not options:
        return name
    alias = f"{name}(" + ",".join(f"{k}={options[k]!r}" for k in sorted(options)) + ")"
    if alias not in _REGISTRY:
        base = _REGISTRY[name]
        fixed = dict(options)

        def factory(params: Iterable[torch.nn.Parameter], s: OptimizerSettings) -> Optimizer:
            return base(params, OptimizerSettings(s.lr, s.momentum, s.weight_decay,
                                                  **{**s.extra, **fixed}))

        _REGISTRY[alias] = factory
    return alias


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
