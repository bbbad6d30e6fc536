"""Optimizer registry: (name, options) -> a torch.optim optimizer over a model's parameters.

An optimizer is named by a registered name plus that optimizer's own options (SAM's rho,
Entropy-SGD's langevin_steps, ...); TrainConfig carries both, and `make_optimizer` resolves them
through the registry. The registry also lists, per name, the options its factory accepts, so an
unknown option is refused when the TrainConfig is made rather than mid-run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

from flatvol.errors import SpecError

OptionValue = bool | int | float | str
Optimizer = torch.optim.Optimizer


def flush_subnormal_(tensors: Iterable[torch.Tensor]) -> None:
    """Set the subnormal entries of `tensors` (|x| below the dtype's smallest normal) to zero,
    in place.

    Adam's second moment of a weight whose gradient has vanished decays by beta2 a step into the
    subnormal range, where torch's CPU sqrt is 15-20x slower (bench/bench_subnormal.py); an
    Adam ensemble on CIFAR-10 spent 68% of its time in that sqrt by epoch 486 and ran 2.7x slower
    per epoch than AMSGrad's, whose denominator does not decay. Zeroing them leaves Adam's update
    as it was: the square root of a subnormal float32 (< 1.1e-19, < 3.5e-18 after the bias
    correction) is far below half an ulp of eps = 1e-8 (4.4e-16), so sqrt(v) + eps rounds to the
    same number; the trainers do it once an epoch (tests/train/test_subnormal.py).

    Args:
        tensors: Floating-point tensors, changed in place.
    """
    for t in tensors:
        t.masked_fill_(t.abs() < torch.finfo(t.dtype).tiny, 0.0)


def adam_second_moments(optimizer: Optimizer) -> list[torch.Tensor]:
    """The second-moment tensors (Adam's exp_avg_sq) in `optimizer`'s state, or in its base
    optimizer's (SAM around Adam, as the ensemble flushes them); none for others.

    Args:
        optimizer: A torch.optim optimizer.

    Returns:
        Each parameter's exp_avg_sq, where the optimizer keeps one.
    """
    state = getattr(optimizer, "base_optimizer", optimizer).state
    return [s["exp_avg_sq"] for s in state.values() if "exp_avg_sq" in s]


@dataclass(frozen=True)
class OptimizerSettings:
    """What an optimizer factory reads: TrainConfig's lr, momentum and weight decay, and the
    optimizer's own `options`."""

    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    options: Mapping[str, OptionValue] = field(default_factory=dict)


OptimizerFactory = Callable[[Iterable[torch.nn.Parameter], OptimizerSettings], Optimizer]


@dataclass(frozen=True)
class RegisteredOptimizer:
    """A registry entry: the factory and the option names it accepts."""

    factory: OptimizerFactory
    options: tuple[str, ...] = ()


ENTROPY_SGD_OPTIONS = ("langevin_steps", "sgld_lr", "noise", "mean_weight", "gamma0", "gamma1",
                       "momentum", "nesterov", "seed")
SAM_OPTIONS = ("base", "rho", "adaptive")


def _entropy_sgd(params: Iterable[torch.nn.Parameter], s: OptimizerSettings) -> Optimizer:
    from flatvol.train.entropy_sgd import EntropySGD

    try:
        return EntropySGD(params, lr=s.lr, weight_decay=s.weight_decay, **s.options)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"optimizer 'entropy-sgd': {exc}") from None


def _sam(params: Iterable[torch.nn.Parameter], s: OptimizerSettings) -> Optimizer:
    from flatvol.train.sam import SAM

    options = dict(s.options)
    base = str(options.pop("base", "sgd"))
    if base == "sam":
        raise SpecError("optimizer 'sam': base must not be 'sam' itself")
    base_settings = OptimizerSettings(s.lr, s.momentum, s.weight_decay)
    try:
        return SAM(params, lambda groups: make_optimizer(base, groups, base_settings), **options)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"optimizer 'sam': {exc}") from None


_REGISTRY: dict[str, RegisteredOptimizer] = {
    "sgd": RegisteredOptimizer(
        lambda p, s: torch.optim.SGD(p, lr=s.lr, weight_decay=s.weight_decay)),
    "momentum": RegisteredOptimizer(
        lambda p, s: torch.optim.SGD(p, lr=s.lr, momentum=s.momentum,
                                     weight_decay=s.weight_decay)),
    "adam": RegisteredOptimizer(
        lambda p, s: torch.optim.Adam(p, lr=s.lr, weight_decay=s.weight_decay)),
    # Reddi et al. (2018): Adam with the running maximum of the second moment (Fig. 4(c,f))
    "amsgrad": RegisteredOptimizer(
        lambda p, s: torch.optim.Adam(p, lr=s.lr, weight_decay=s.weight_decay, amsgrad=True)),
    "entropy-sgd": RegisteredOptimizer(_entropy_sgd, ENTROPY_SGD_OPTIONS),
    "sam": RegisteredOptimizer(_sam, SAM_OPTIONS),
}


def register_optimizer(name: str, factory: OptimizerFactory, options: Iterable[str] = ()) -> None:
    """Make `name` available to train_to_fit, specs and the CLI.

    Args:
        name: the optimizer's name in TrainConfig and specs.
        factory: (parameters, OptimizerSettings) -> torch.optim.Optimizer.
        options: the option names the factory accepts (OptimizerSettings.options).
    """
    _REGISTRY[name] = RegisteredOptimizer(factory, tuple(options))


def optimizer_names() -> list[str]:
    """The registered optimizer names, sorted.

    Returns:
        The sorted names of the registered optimizers.
    """
    return sorted(_REGISTRY)


def check_optimizer(name: str, options: Mapping[str, OptionValue] | None = None) -> None:
    """Refuse an unregistered name or an option its factory does not accept.

    Args:
        name: an optimizer name.
        options: that optimizer's options.

    Raises:
        SpecError: with a one-line message.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise SpecError(
            f"unknown optimizer {name!r}; expected one of {', '.join(optimizer_names())}"
        )
    unknown = sorted(set(options or {}) - set(entry.options))
    if unknown:
        expected = f"some of {', '.join(entry.options)}" if entry.options else "none"
        raise SpecError(f"optimizer {name!r}: unknown option(s) {', '.join(unknown)}; "
                        f"expected {expected}")


def make_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], settings: OptimizerSettings
) -> Optimizer:
    """The optimizer `name` with `settings` over `params`.

    Args:
        name: a registered optimizer name.
        params: parameters (or param groups) to optimize.
        settings: lr, momentum, weight decay and the optimizer's options.

    Returns:
        A torch.optim.Optimizer.

    Raises:
        SpecError: unknown name or option, or options the optimizer refuses.
    """
    check_optimizer(name, settings.options)
    return _REGISTRY[name].factory(params, settings)
