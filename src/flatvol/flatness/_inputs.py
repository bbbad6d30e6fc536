"""The one input check of every flatness measure: (x, y) and the model's outputs.

x and y may be torch tensors or NumPy arrays; floating x takes the dtype of the model's
parameters. With the default loss (sigmoid cross-entropy on one logit) y holds binary labels:
integers, booleans or floats in {0, 1}, of shape (n,) or (n, 1); labels in {-1, +1} are refused
unless `labels="pm1"` says so (they are then mapped to {0, 1}), because the loss would silently
give a negative number for them. The model must give one logit per example, (n,) or (n, 1).
A wrong input is a one-line SpecError naming it, never a silent number or a raw torch error.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from flatvol.errors import SpecError

LabelConvention = Literal["01", "pm1"]
LABEL_CONVENTIONS: tuple[str, ...] = ("01", "pm1")


def as_tensor(value: Any, name: str) -> torch.Tensor:
    """`value` as a tensor: a tensor as is, a NumPy array converted (numeric dtypes only).

    Args:
        value: a torch tensor or a NumPy array.
        name: the argument's name, for the message.

    Returns:
        The tensor.
    """
    if torch.is_tensor(value):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise SpecError(f"{name}: expected a numeric array, got dtype {value.dtype}")
        return torch.from_numpy(np.ascontiguousarray(value))
    raise SpecError(f"{name}: expected a torch tensor or a NumPy array, got "
                    f"{type(value).__name__}")


def _values(y: torch.Tensor) -> str:
    found = torch.unique(y.detach().cpu().double())
    shown = ", ".join(f"{float(v):g}" for v in found[:5])
    return shown + (", ..." if len(found) > 5 else "")


def binary_labels(y: torch.Tensor, n: int, labels: LabelConvention) -> torch.Tensor:
    """Labels for the default loss as {0, 1} values of shape (n,), in y's float or int dtype.

    Args:
        y: the labels (a tensor).
        n: the number of examples.
        labels: '01' (labels in {0, 1}) or 'pm1' (labels in {-1, +1}, mapped to {0, 1}).

    Returns:
        The labels as a 1-D tensor of 0s and 1s.
    """
    if labels not in LABEL_CONVENTIONS:
        raise SpecError(f"labels must be one of {', '.join(LABEL_CONVENTIONS)}, got {labels!r}")
    if y.dim() == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.dim() != 1:
        raise SpecError(f"y: expected binary labels of shape (n,) or (n, 1), got shape "
                        f"{tuple(y.shape)}")
    if y.is_complex():
        raise SpecError("y: expected real binary labels, got complex numbers")
    if y.dtype == torch.bool:
        y = y.to(torch.uint8)
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise SpecError("y: labels are not finite (NaN or inf)")
    zero_one = bool(((y == 0) | (y == 1)).all())
    plus_minus = bool(((y == -1) | (y == 1)).all())
    if labels == "pm1":
        if not plus_minus:
            raise SpecError(f"y: labels='pm1' expects labels in {{-1, +1}}, got values "
                            f"{_values(y)}")
        return (y + 1) // 2 if not y.is_floating_point() else (y + 1) / 2
    if zero_one:
        return y
    if plus_minus:
        raise SpecError("y: labels are in {-1, +1} but the default loss expects {0, 1}; pass "
                        "labels='pm1' to map -1 to 0, or give 0/1 labels")
    raise SpecError(f"y: expected binary labels in {{0, 1}}, got values {_values(y)} "
                    f"({n} examples)")


def check_training_data(x: Any, y: Any, dtype: torch.dtype, *, labels: LabelConvention,
                        default_loss: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y of a flatness measure, checked and converted.

    Args:
        x: inputs (tensor or array), (n, *input_shape).
        y: labels (tensor or array); for the default loss binary labels of shape (n,) or (n, 1).
        dtype: the model's floating dtype (floating x, and y of the default loss, take it).
        labels: the label convention of the default loss, '01' or 'pm1'.
        default_loss: whether the default loss is used (a custom loss gets y unchecked).

    Returns:
        (x, y) as tensors on their original device.
    """
    x, y = as_tensor(x, "x"), as_tensor(y, "y")
    if x.dim() == 0 or y.dim() == 0:
        which = "x" if x.dim() == 0 else "y"
        raise SpecError(f"{which}: expected one entry per example, got a scalar")
    if x.shape[0] != y.shape[0]:
        raise SpecError(
            f"x and y disagree on the number of examples: {x.shape[0]} vs {y.shape[0]}"
        )
    if x.shape[0] == 0:
        raise SpecError("x is empty: a flatness measure needs at least one example")
    if x.is_floating_point():
        x = x.to(dtype)
    if default_loss:
        y = binary_labels(y, int(x.shape[0]), labels).to(dtype)
    elif labels != "01":
        raise SpecError("labels='pm1' applies to the default loss only; a custom loss_fn gets "
                        "y as given")
    elif y.is_floating_point():
        y = y.to(dtype)
    return x, y


def check_output_shape(shape: torch.Size, n: int) -> bool:
    """Whether the model's outputs for n examples fit the default loss; True when they are
    (n, 1) and must be flattened to (n,).

    Args:
        shape: the outputs' shape.
        n: the number of examples given.

    Returns:
        True for (n, 1), False for (n,); any other shape is a SpecError naming it.
    """
    if tuple(shape) == (n,):
        return False
    if tuple(shape) == (n, 1):
        return True
    got = ("(n, " + ", ".join(str(d) for d in shape[1:]) + ")") if len(shape) and shape[0] == n \
        else str(tuple(shape))
    raise SpecError(f"model outputs: the default loss needs one logit per example, shape (n,) "
                    f"or (n, 1), got {got}; pass a loss_fn for other outputs")
