"""The function a classifier computes: its labels on a set of inputs, one definition for all.

A binary classifier has one output (a logit): label 1 where it is > 0, else 0. A K-class
classifier has K outputs: its label is the argmax. Training's fit check, generalization, the
volume of a trained network and `volume_of` on a user's model all read labels through
`labels_of`, so "the function f" means the same thing everywhere.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from flatvol.errors import FlatvolError


class OutputError(FlatvolError):
    """A model whose outputs do not define labels: wrong shape or not finite."""


def labels_from_outputs(outputs: torch.Tensor) -> torch.Tensor:
    """Labels from a batch of outputs: (n,) or (n, 1) logits -> {0, 1}; (n, K >= 2) -> argmax.

    Args:
        outputs: the model's outputs on n inputs, shape (n,), (n, 1) or (n, K).

    Returns:
        int64 labels of shape (n,), on the outputs' device.

    Raises:
        OutputError: outputs of another shape.
    """
    if outputs.ndim == 1 or (outputs.ndim == 2 and outputs.shape[1] == 1):
        return (outputs.reshape(-1) > 0).to(torch.int64)
    if outputs.ndim == 2:
        # ties go to the lowest class (torch.argmax returns the first maximum)
        return outputs.argmax(dim=1)
    raise OutputError(f"outputs of shape {tuple(outputs.shape)}; expected (n,), (n, 1) or "
                      "(n, K) for n inputs")


def output_count(outputs: torch.Tensor) -> int:
    """The number of classes K that outputs of this shape stand for.

    Args:
        outputs: a model's outputs on n inputs, shape (n,), (n, 1) or (n, K).

    Returns:
        K: 2 for one logit, the number of columns for K >= 2 outputs.
    """
    return 2 if outputs.ndim == 1 or outputs.shape[1] == 1 else int(outputs.shape[1])


@torch.no_grad()
def model_outputs(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000,
                  device: str | torch.device | None = None) -> torch.Tensor:
    """The model's outputs on x, in eval mode (its mode is restored after), checked.

    Args:
        model: a classifier with one logit (binary) or K >= 2 outputs per input.
        x: inputs, shape (n, ...).
        batch_size: inputs per forward pass.
        device: where the forward passes run; None: where the model's parameters are.

    Returns:
        The outputs as the model returns them, shape (n,), (n, 1) or (n, K), on `device`
        (an empty (0,) tensor for no inputs).

    Raises:
        OutputError: outputs that are not finite or not one logit / K outputs per input.
    """
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if device is None:
        device = "cpu" if param is None else param.device
    if param is not None and x.is_floating_point():
        x = x.to(param.dtype)  # a float64 model fed float32 data computes in float64
    was_training = model.training
    model.eval()
    try:
        outputs = [model(x[i : i + batch_size].to(device)).detach()
                   for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    if not outputs:
        return torch.zeros(0)
    values = torch.cat(outputs)
    if values.ndim > 2 or values.shape[0] != x.shape[0]:
        raise OutputError(f"{type(model).__name__} returns outputs of shape "
                          f"{tuple(values.shape)} for {x.shape[0]} inputs; expected (n,), (n, 1) "
                          "or (n, K): one logit or K outputs per input")
    bad = int((~torch.isfinite(values)).sum())
    if bad:  # such a network computes no function: its "labels" would be arbitrary
        raise OutputError(f"{type(model).__name__}'s outputs are not finite on {bad} of "
                          f"{values.numel()} values; expected finite outputs (are its weights "
                          "finite?)")
    return values


def labels_of(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000,
              device: str | torch.device | None = None) -> np.ndarray:
    """The labels `model` gives to x, in eval mode (its mode is restored after).

    Args:
        model: a classifier with one logit (binary) or K >= 2 outputs per input.
        x: inputs, shape (n, ...).
        batch_size: inputs per forward pass.
        device: where the forward passes run; None: where the model's parameters are.

    Returns:
        int64 labels of shape (n,): 0/1 for one logit, 0..K-1 for K outputs.

    Raises:
        OutputError: outputs that are not finite or not one logit / K outputs per input.
    """
    outputs = model_outputs(model, x, batch_size=batch_size, device=device)
    return labels_from_outputs(outputs).cpu().numpy()
