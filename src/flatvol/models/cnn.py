"""A small ReLU CNN: [conv3x3 -> ReLU -> maxpool2] * len(channels), then a linear readout
(one logit, or K outputs for K classes)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flatvol.models.prior import Prior


class SmallCNN(nn.Module):
    def __init__(
        self,
        in_shape: Sequence[int],
        channels: Sequence[int] = (16, 32),
        prior: Prior | None = None,
        outputs: int = 1,
    ):
        super().__init__()
        c, h, w = (int(s) for s in in_shape)
        self.outputs = int(outputs)
        self.in_shape = (c, h, w)
        self.channels = tuple(int(k) for k in channels)
        self.prior = prior or Prior()
        convs = []
        for k in self.channels:
            convs.append(nn.Conv2d(c, k, kernel_size=3, padding=1))
            c, h, w = k, h // 2, w // 2
        self.convs = nn.ModuleList(convs)
        self.feature_dim = c * h * w
        self.readout = nn.Linear(self.feature_dim, self.outputs)

    @property
    def linears(self) -> list[nn.Module]:
        return [*self.convs, self.readout]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in self.convs:
            # ReLU and max-pool are both positively homogeneous, so alpha-scaling stays exact.
            h = nn.functional.max_pool2d(torch.relu(conv(h)), 2)
        return h.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.readout(self.features(x))
        return z.squeeze(-1) if self.outputs == 1 else z
