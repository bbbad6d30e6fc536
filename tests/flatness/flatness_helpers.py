"""Small float64 networks and data for the flatness tests (hundreds of parameters)."""

from __future__ import annotations

import torch
from torch import nn

from flatvol.models import FCN, SmallCNN


class TinyBatchNormNet(nn.Module):
    """conv -> BatchNorm -> ReLU -> linear readout; logits of shape (n,)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.norm = nn.BatchNorm2d(3)
        self.readout = nn.Linear(3 * 4 * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(torch.relu(self.norm(self.conv(x))).flatten(1)).squeeze(-1)


def make_fcn(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """FCN 5-12-12-1 (241 parameters), 32 examples, float64."""
    torch.manual_seed(seed)
    model = FCN(5, (12, 12)).double()
    x = torch.randn(32, 5, dtype=torch.float64)
    y = (torch.rand(32) > 0.5).double()
    return model, x, y


def make_cnn(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """SmallCNN on 1x6x6 images with channels (2, 3): 90 parameters, 24 examples, float64."""
    torch.manual_seed(seed)
    model = SmallCNN((1, 6, 6), (2, 3)).double()
    x = torch.randn(24, 1, 6, 6, dtype=torch.float64)
    y = (torch.rand(24) > 0.5).double()
    return model, x, y


def make_batchnorm(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """TinyBatchNormNet in eval mode with non-trivial running statistics, float64."""
    torch.manual_seed(seed)
    model = TinyBatchNormNet().double()
    with torch.no_grad():
        model.norm.running_mean.uniform_(-0.5, 0.5)
        model.norm.running_var.uniform_(0.5, 2.0)
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(24, 1, 6, 6, dtype=torch.float64)
    y = (torch.rand(24) > 0.5).double()
    return model, x, y


MAKERS = {"fcn": make_fcn, "cnn": make_cnn, "batchnorm": make_batchnorm}


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def independent_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """The default loss as a function of a flat vector, built without flatvol.flatness."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    buffers = dict(model.named_buffers())

    def loss(w: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(w, sizes), shapes)}
        logits = torch.func.functional_call(model, {**params, **buffers}, (x,))
        return nn.functional.binary_cross_entropy_with_logits(logits, y)

    return loss


def make_fitted_fcn(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """make_fcn trained (full-batch Adam, 300 steps) until its 32 examples are fit."""
    model, x, y = make_fcn(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()
    assert bool(((model(x) > 0).double() == y).all()), "make_fitted_fcn did not fit"
    return model, x, y
