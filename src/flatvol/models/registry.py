"""Parse model specs such as 'fcn:40,40', 'cnn:16,32', 'resnet18:nobn,width=16'."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from flatvol.errors import SpecError
from flatvol.models.cnn import SmallCNN
from flatvol.models.fcn import FCN
from flatvol.models.prior import Prior, init_from_prior_
from flatvol.models.resnet import resnet18, resnet50

MODEL_FAMILIES = ("fcn", "cnn", "resnet18", "resnet50")


def _int_list(text: str, spec: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SpecError(
            f"model spec {spec!r}: expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise SpecError(f"model spec {spec!r}: widths must be positive integers, got {text!r}")
    return values


def build_model(
    spec: str,
    input_shape: Sequence[int],
    prior: Prior | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Build a model from `spec` and draw its parameters from `prior`.

    The model keeps `model.prior` and `model.spec` so the volume code uses the same prior.
    With `seed`, initialization is reproducible and independent of global RNG state.

    Args:
        spec: Model spec (e.g. 'fcn' or 'resnet18').
        input_shape: Input shape of one example, channels first.
        prior: Prior the parameters are drawn from (default: Prior()).
        seed: Seed of the initialization (default: the global RNG).

    Returns:
        The model, with model.prior and model.spec set.

    Raises:
        SpecError: If the spec is invalid or does not fit input_shape.
    """
    prior = prior or Prior()
    family, _, args = spec.strip().partition(":")
    family = family.lower()
    input_shape = tuple(int(s) for s in input_shape)
    if family == "fcn":
        widths = _int_list(args, spec) if args else (40, 40)
        model: nn.Module = FCN(math.prod(input_shape), widths, prior)
    elif family == "cnn":
        if len(input_shape) != 3:
            raise SpecError(f"model 'cnn' needs image inputs (C,H,W), got shape {input_shape}")
        channels = _int_list(args, spec) if args else (16, 32)
        model = SmallCNN(input_shape, channels, prior)
    elif family in ("resnet18", "resnet50"):
        if len(input_shape) != 3:
            raise SpecError(f"model {family!r} needs image inputs (C,H,W), got shape {input_shape}")
        batch_norm, width = True, 64
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
        build = resnet18 if family == "resnet18" else resnet50
        model = build(input_shape[0], batch_norm=batch_norm, base_width=width, prior=prior)
    else:
        raise SpecError(
            f"unknown model {family!r} in spec {spec!r}; "
            f"expected one of {', '.join(MODEL_FAMILIES)}"
        )
    model.spec = spec  # type: ignore[attr-defined]
    model.prior = prior  # type: ignore[attr-defined]
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    init_from_prior_(model, prior, generator)
    return model
