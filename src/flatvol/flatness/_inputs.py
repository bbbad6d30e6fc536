"""The one input check of every flatness measure: (x, y) and the model's outputs.

x and y may be torch tensors or NumPy arrays; floating x takes the dtype of the model's
parameters. The default loss follows the model's output count: one logit per example, (n,) or
(n, 1), takes the sigmoid cross-entropy on binary labels (integers, booleans or floats in
{0, 1}, of shape (n,) or (n, 1); labels in {-1, +1} are refused unless `labels="pm1"` says so,
because the loss would silently give a negative number for them); K >= 2 outputs, (n, K), take
the cross-entropy on integer class labels 0..K-1 (a float label is refused: it would be a
probability target or a rounding accident, not a class). A wrong input is a one-line SpecError
naming it, never a silent number or a raw torch error.
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


def check_labels_convention(labels: str, *, default_loss: bool) -> None:
    """Refuse an unknown label convention, or 'pm1' with a custom loss (which gets y as given).

    Args:
        labels: the label convention, '01' or 'pm1'.
        default_loss: whether the default loss is used.
    """
    if labels not in LABEL_CONVENTIONS:
        raise SpecError(f"labels must be one of {', '.join(LABEL_CONVENTIONS)}, got {labels!r}")
    if labels != "01" and not default_loss:
        raise SpecError("labels='pm1' applies to the default loss only; a custom loss_fn gets "
                        "y as given")


def check_examples(x: Any, y: Any, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y of a flatness measure as tensors with one entry per example each.

    Args:
        x: inputs (tensor or array), (n, *input_shape).
        y: labels or targets (tensor or array), (n, ...).
        dtype: the model's floating dtype (floating x takes it).

    Returns:
        (x, y) as tensors on their original device; y is not checked further here (see
        default_loss_targets).
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
    if y.is_floating_point():
        y = y.to(dtype)
    return x, y


def class_labels(y: torch.Tensor, n: int, classes: int, labels: LabelConvention) -> torch.Tensor:
    """Labels for the K-class default loss (cross-entropy) as int64 of shape (n,).

    Args:
        y: the labels (a tensor): integers (or booleans) in 0..classes-1, (n,) or (n, 1).
        n: the number of examples.
        classes: the model's output count K >= 2.
        labels: the label convention; only '01' (plain class indices) applies to K outputs.

    Returns:
        The labels as a 1-D int64 tensor.
    """
    if labels != "01":
        raise SpecError(f"labels={labels!r} applies to one-logit models only; a model with "
                        f"{classes} outputs takes class labels 0..{classes - 1}")
    if y.dim() == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.dim() != 1:
        raise SpecError(f"y: expected class labels of shape (n,) or (n, 1) for a model with "
                        f"{classes} outputs, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex():
        # also names the outputs: a float y usually means a one-logit (binary) set-up given to
        # a K-output model
        raise SpecError(f"y: float labels ({_values(y)}) for a model with {classes} outputs; "
                        f"its loss (cross-entropy) takes integer class labels 0..{classes - 1} "
                        f"(model outputs: one logit per example, (n,) or (n, 1), takes binary "
                        f"labels, got (n, {classes}))")
    y = y.to(torch.int64)
    if not bool(((y >= 0) & (y < classes)).all()):
        raise SpecError(f"y: expected class labels in 0..{classes - 1} for a model with "
                        f"{classes} outputs, got values {_values(y)} ({n} examples)")
    return y


def default_loss_targets(y: torch.Tensor, n: int, outputs: int, dtype: torch.dtype,
                         labels: LabelConvention) -> torch.Tensor:
    """y checked for the default loss of a model with `outputs` outputs per example.

    Args:
        y: the labels (a tensor).
        n: the number of examples.
        outputs: 1 (one logit: binary labels) or K >= 2 (class labels 0..K-1).
        dtype: the model's floating dtype (binary labels take it, as the sigmoid loss needs).
        labels: the label convention of binary labels, '01' or 'pm1'.

    Returns:
        Binary labels as 0/1 floats of `dtype`, or class labels as int64; shape (n,).
    """
    if outputs == 1:
        return binary_labels(y, n, labels).to(dtype)
    return class_labels(y, n, outputs, labels)


def output_layout(shape: torch.Size, n: int) -> tuple[int, bool]:
    """What the model's outputs for n examples mean to the default loss.

    Args:
        shape: the outputs' shape.
        n: the number of examples given.

    Returns:
        (outputs per example, flatten): (1, False) for (n,), (1, True) for (n, 1) (flattened to
        (n,) for the binary loss), (K, False) for (n, K) with K >= 2; any other shape is a
        SpecError naming it.
    """
    if tuple(shape) == (n,):
        return 1, False
    if len(shape) == 2 and shape[0] == n and shape[1] >= 1:
        return int(shape[1]), shape[1] == 1
    got = ("(n, " + ", ".join(str(d) for d in shape[1:]) + ")") if len(shape) and shape[0] == n \
        else str(tuple(shape))
    raise SpecError(f"model outputs: the default loss needs one logit per example, (n,) or "
                    f"(n, 1), or K >= 2 class scores, (n, K); got {got}; pass a loss_fn for "
                    f"other outputs")
