"""CIFAR-style ResNets (3x3 stem, no max-pool) with one logit output (or K for K classes);
BatchNorm optional."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flatvol.models.prior import Prior


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, batch_norm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=not batch_norm)
        self.bn1 = _norm(planes, batch_norm)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=not batch_norm)
        self.bn2 = _norm(planes, batch_norm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=not batch_norm),
                _norm(planes, batch_norm),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, batch_norm: bool):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=not batch_norm)
        self.bn1 = _norm(planes, batch_norm)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=not batch_norm)
        self.bn2 = _norm(planes, batch_norm)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=not batch_norm)
        self.bn3 = _norm(out_planes, batch_norm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride, bias=not batch_norm),
                _norm(out_planes, batch_norm),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: Sequence[int],
        in_channels: int = 3,
        base_width: int = 64,
        batch_norm: bool = True,
        prior: Prior | None = None,
        outputs: int = 1,
    ):
        super().__init__()
        self.prior = prior or Prior()
        self.outputs = int(outputs)
        self.batch_norm = batch_norm
        self.stem = nn.Conv2d(in_channels, base_width, 3, 1, 1, bias=not batch_norm)
        self.stem_norm = _norm(base_width, batch_norm)
        in_planes = base_width
        stages = []
        for i, n in enumerate(num_blocks):
            planes = base_width * 2**i
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(in_planes, planes, stride, batch_norm))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.feature_dim = in_planes
        self.readout = nn.Linear(in_planes, self.outputs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem_norm(self.stem(x)))
        h = self.stages(h)
        return nn.functional.adaptive_avg_pool2d(h, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.readout(self.features(x))
        return z.squeeze(-1) if self.outputs == 1 else z


def resnet18(in_channels: int = 3, batch_norm: bool = True, base_width: int = 64,
             prior: Prior | None = None, outputs: int = 1) -> ResNet:
    """ResNet-18 (BasicBlock, stages of 2, 2, 2, 2 blocks) with one output logit (or K).

    build_model draws its parameters from the prior; this constructor does not.

    Args:
        in_channels: Number of input channels.
        batch_norm: Whether to use BatchNorm layers.
        base_width: Number of channels of the first stage.
        prior: Prior kept as model.prior (default: Prior()).
        outputs: 1 (one logit, binary) or K (K classes).

    Returns:
        The ResNet-18 model (PyTorch's default initialization).
    """
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, base_width, batch_norm, prior, outputs)


def resnet50(in_channels: int = 3, batch_norm: bool = True, base_width: int = 64,
             prior: Prior | None = None, outputs: int = 1) -> ResNet:
    """ResNet-50 (Bottleneck, stages of 3, 4, 6, 3 blocks) with one output logit (or K).

    build_model draws its parameters from the prior; this constructor does not.

    Args:
        in_channels: Number of input channels.
        batch_norm: Whether to use BatchNorm layers.
        base_width: Number of channels of the first stage.
        prior: Prior kept as model.prior (default: Prior()).
        outputs: 1 (one logit, binary) or K (K classes).

    Returns:
        The ResNet-50 model (PyTorch's default initialization).
    """
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, base_width, batch_norm, prior, outputs)
