"""Parse model specs such as 'fcn:40,40', 'cnn:16,32', 'resnet18:nobn,width=16'.

Widths and depth are bounded when the spec is parsed (flatvol.limits), and the parameter count
on the task's input shape before any weight is allocated, so a spec naming a network no machine
holds is one SpecError line rather than an allocator failure.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from flatvol.errors import SpecError
from flatvol.limits import MAX_DEPTH, MAX_PARAMETERS, MAX_SEED, MAX_WIDTH, bound_problem
from flatvol.models.cnn import SmallCNN
from flatvol.models.fcn import FCN
from flatvol.models.prior import Prior, init_from_prior_
from flatvol.models.resnet import resnet18, resnet50

MODEL_FAMILIES = ("fcn", "cnn", "resnet18", "resnet50")
DEFAULT_SIZES = {"fcn": (40, 40), "cnn": (16, 32), "resnet18": (64,), "resnet50": (64,)}


@dataclass(frozen=True)
class ParsedModelSpec:
    """A model spec taken apart: the family, its sizes (an FCN's hidden widths, a CNN's
    channels, a ResNet's base width as a 1-tuple) and, for a ResNet, BatchNorm on or off."""

    family: str
    sizes: tuple[int, ...]
    batch_norm: bool = True


def _shown(spec: str, most: int = 60) -> str:
    """The spec as a message quotes it: a spec of a thousand layers is cut short."""
    return repr(spec if len(spec) <= most else spec[:most] + "...")


def _int_list(text: str, spec: str) -> tuple[int, ...]:
    # The layer count is checked on the text first: 'fcn:1,1,...' may name millions of layers.
    if text.count(",") >= MAX_DEPTH:
        raise SpecError(f"model spec {_shown(spec)}: expected at most {MAX_DEPTH} layers, got "
                        f"{text.count(',') + 1}")
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SpecError(
            f"model spec {_shown(spec)}: expected comma-separated integers, got "
            f"{_shown(text)}"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise SpecError(f"model spec {_shown(spec)}: widths must be positive integers, got "
                        f"{_shown(text)}")
    too_wide = [v for v in values if v > MAX_WIDTH]
    if too_wide:
        raise SpecError(f"model spec {_shown(spec)}: expected widths in 1..{MAX_WIDTH}, got "
                        f"{too_wide[0]}")
    return values


def parse_model_spec(spec: str) -> ParsedModelSpec:
    """Take a model spec apart and check its sizes, without building anything.

    Args:
        spec: Model spec, e.g. 'fcn:40,40', 'cnn:16,32' or 'resnet18:nobn,width=16'.

    Returns:
        The family, sizes and BatchNorm choice.

    Raises:
        SpecError: If the family is unknown, an option is malformed, or a width or the layer
            count is out of bounds (flatvol.limits.MAX_WIDTH, MAX_DEPTH).
    """
    if not isinstance(spec, str):
        raise SpecError(f"model spec: expected a string such as 'fcn:40,40', got {spec!r}")
    family, _, args = spec.strip().partition(":")
    family = family.lower()
    if family in ("fcn", "cnn"):
        sizes = _int_list(args, spec) if args.strip() else DEFAULT_SIZES[family]
        return ParsedModelSpec(family, sizes)
    if family in ("resnet18", "resnet50"):
        batch_norm, width = True, DEFAULT_SIZES[family][0]
        for opt in filter(None, (o.strip() for o in args.split(","))):
            if opt == "nobn":
                batch_norm = False
            elif opt == "bn":
                batch_norm = True
            elif opt.startswith("width="):
                width = _int_list(opt[len("width="):], spec)[0]
            else:
                raise SpecError(
                    f"model spec {spec!r}: unknown option {opt!r} (expected nobn, bn, width=N)"
                )
        return ParsedModelSpec(family, (width,), batch_norm)
    raise SpecError(
        f"unknown model {family!r} in spec {spec!r}; "
        f"expected one of {', '.join(MODEL_FAMILIES)}"
    )


def _constructor(parsed: ParsedModelSpec, input_shape: tuple[int, ...],
                 prior: Prior, outputs: int = 1) -> Callable[[], nn.Module]:
    """The call that builds the (uninitialized) network, checked against the input shape."""
    if isinstance(outputs, bool) or not isinstance(outputs, int) or outputs < 1:
        raise SpecError(f"model outputs: expected 1 (one logit) or K >= 3 (K classes), got "
                        f"{outputs!r}")
    if parsed.family == "fcn":
        return lambda: FCN(math.prod(input_shape), parsed.sizes, prior, outputs)
    if len(input_shape) != 3:
        raise SpecError(f"model {parsed.family!r} needs image inputs (C,H,W), got shape "
                        f"{input_shape}")
    if parsed.family == "cnn":
        return lambda: SmallCNN(input_shape, parsed.sizes, prior, outputs)
    build = resnet18 if parsed.family == "resnet18" else resnet50
    return lambda: build(input_shape[0], batch_norm=parsed.batch_norm,
                         base_width=parsed.sizes[0], prior=prior, outputs=outputs)


@functools.lru_cache(maxsize=64)
def parameter_count(spec: str, input_shape: tuple[int, ...], outputs: int = 1) -> int:
    """The parameters of `spec` on inputs of `input_shape`, counted without allocating them
    (the network is built on torch's meta device; cached, as an ensemble builds many).

    Args:
        spec: Model spec, e.g. 'fcn:40,40'.
        input_shape: Input shape of one example, channels first.
        outputs: 1 (one logit) or K (K classes).

    Returns:
        The number of parameters.

    Raises:
        SpecError: If the spec is invalid or does not fit input_shape.
    """
    make = _constructor(parse_model_spec(spec), input_shape, Prior(), outputs)
    with torch.device("meta"):
        return sum(p.numel() for p in make().parameters())


def build_model(
    spec: str,
    input_shape: Sequence[int],
    prior: Prior | None = None,
    seed: int | None = None,
    outputs: int = 1,
) -> nn.Module:
    """Build a model from `spec` and draw its parameters from `prior`.

    The model keeps `model.prior` and `model.spec` so the volume code uses the same prior.
    With `seed`, initialization is reproducible and independent of global RNG state.

    Args:
        spec: Model spec (e.g. 'fcn' or 'resnet18').
        input_shape: Input shape of one example, channels first.
        prior: Prior the parameters are drawn from (default: Prior()).
        seed: Seed of the initialization (default: the global RNG).
        outputs: 1 (one logit, a binary task) or K (a K-class task: TaskData.outputs).

    Returns:
        The model, with model.prior and model.spec set.

    Raises:
        SpecError: If the spec is invalid or does not fit input_shape.
    """
    if seed is not None and (problem := bound_problem(seed, 0, MAX_SEED)):
        raise SpecError(f"seed: {problem}")  # beyond torch's manual_seed and the store's keys
    prior = prior or Prior()
    input_shape = tuple(int(s) for s in input_shape)
    make = _constructor(parse_model_spec(spec), input_shape, prior, outputs)
    count = parameter_count(spec, input_shape, outputs)
    if count > MAX_PARAMETERS:
        raise SpecError(f"model spec {spec!r}: expected at most {MAX_PARAMETERS} parameters, "
                        f"got {count} on inputs of shape {input_shape}")
    try:
        model = make()
    except RuntimeError as exc:  # the allocator (or CUDA) refused even a bounded network
        first = " ".join(str(exc).split())[:200]
        raise SpecError(f"model spec {spec!r}: cannot allocate its {count} parameters "
                        f"({first})") from None
    model.spec = spec  # type: ignore[attr-defined]
    model.prior = prior  # type: ignore[attr-defined]
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    init_from_prior_(model, prior, generator)
    return model
