"""Fully connected ReLU network with one logit (binary) or K outputs (K classes)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flatvol.models.prior import Prior


class FCN(nn.Module):
    """x -> [Linear -> ReLU] * len(widths) -> Linear(., outputs); forward returns logits of shape
    (n,) for one output (binary), (n, outputs) for K = outputs classes.

    `linears` lists every affine layer in order (hidden ones, then the readout), which is what
    the NNGP kernel recursion and the alpha-scaling reparameterizations walk over.
    """

    def __init__(self, in_dim: int, widths: Sequence[int] = (40, 40), prior: Prior | None = None,
                 outputs: int = 1):
        super().__init__()
        if in_dim <= 0 or any(w <= 0 for w in widths) or outputs <= 0:
            raise ValueError(f"FCN sizes must be positive, got in_dim={in_dim}, widths={widths}, "
                             f"outputs={outputs}")
        self.in_dim = int(in_dim)
        self.widths = tuple(int(w) for w in widths)
        self.outputs = int(outputs)
        self.prior = prior or Prior()
        dims = (self.in_dim, *self.widths)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.readout = nn.Linear(dims[-1], self.outputs)

    @property
    def linears(self) -> list[nn.Linear]:
        return [*self.hidden, self.readout]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate post-ReLU features Phi(x), shape (n, widths[-1])."""
        h = x.flatten(1)
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.readout(self.features(x))
        return z.squeeze(-1) if self.outputs == 1 else z
