"""Fully connected ReLU network with one logit output."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flatvol.models.prior import Prior


class FCN(nn.Module):
    """x -> [Linear -> ReLU] * len(widths) -> Linear(., 1); forward returns logits of shape (n,).

    `linears` lists every affine layer in order (hidden ones, then the readout), which is what
    the NNGP kernel recursion and the alpha-scaling reparameterizations walk over.
    """

    def __init__(self, in_dim: int, widths: Sequence[int] = (40, 40), prior: Prior | None = None):
        super().__init__()
        if in_dim <= 0 or any(w <= 0 for w in widths):
            raise ValueError(f"FCN sizes must be positive, got in_dim={in_dim}, widths={widths}")
        self.in_dim = int(in_dim)
        self.widths = tuple(int(w) for w in widths)
        self.prior = prior or Prior()
        dims = (self.in_dim, *self.widths)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.readout = nn.Linear(dims[-1], 1)

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
        return self.readout(self.features(x)).squeeze(-1)
