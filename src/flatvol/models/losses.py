"""The classification losses, one definition each, shared by training and the flatness measures.

A one-logit model is trained and measured with the sigmoid cross-entropy on labels {0, 1}; a
K-output model with the softmax cross-entropy on class labels 0..K-1 (see flatvol.models.labels
for the labels those outputs give).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def bce_with_logits_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss of a one-logit model: sigmoid cross-entropy on labels in {0, 1}, mean over
    examples.

    Args:
        logits: Network outputs, shape (n,).
        y: Labels in {0, 1}, shape (n,).

    Returns:
        The mean sigmoid cross-entropy, a scalar tensor.
    """
    return F.binary_cross_entropy_with_logits(logits, y)


def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss of a K-output model (K >= 2): softmax cross-entropy, mean over examples.

    Args:
        logits: Network outputs, shape (n, K).
        y: Class labels 0..K-1, int64, shape (n,).

    Returns:
        The mean cross-entropy, a scalar tensor.
    """
    return F.cross_entropy(logits, y)


def classification_loss(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss by the outputs' shape: `bce_with_logits_loss` on one logit per example,
    `cross_entropy_loss` on K outputs.

    Args:
        outputs: Network outputs, shape (n,) (one logit) or (n, K).
        y: Labels, float {0, 1} of shape (n,) for one logit, int64 0..K-1 for K outputs.

    Returns:
        The mean loss, a scalar tensor.
    """
    if outputs.ndim == 1:
        return bce_with_logits_loss(outputs, y)
    return cross_entropy_loss(outputs, y)
