"""The weight prior (sigma_w^2, sigma_b^2) shared by initialization and the NNGP kernel."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from flatvol.errors import SpecError


@dataclass(frozen=True)
class Prior:
    """Weights ~ N(0, sigma_w2 / fan_in), biases ~ N(0, sigma_b2).

    The default (2, 1) is He-normal weights with N(0, 1) biases, as in the paper's code.
    """

    sigma_w2: float = 2.0
    sigma_b2: float = 1.0

    def __post_init__(self) -> None:
        if not (self.sigma_w2 > 0 and math.isfinite(self.sigma_w2)):
            raise ValueError(f"sigma_w2 must be a positive number, got {self.sigma_w2}")
        if not (self.sigma_b2 >= 0 and math.isfinite(self.sigma_b2)):
            raise ValueError(f"sigma_b2 must be a non-negative number, got {self.sigma_b2}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _fan_in(weight: torch.Tensor) -> int:
    return int(weight[0].numel())  # in_features * kernel area for linear and conv alike


@torch.no_grad()
def init_from_prior_(
    module: nn.Module, prior: Prior, generator: torch.Generator | None = None
) -> nn.Module:
    """Re-draw every Linear/Conv parameter of `module` from `prior`, in place.

    Every other layer with parameters of its own (BatchNorm, LayerNorm, GroupNorm, ...) is reset
    with its `reset_parameters()` (identity: weight 1, bias 0), so nothing a trained network
    learned flows into the prior; a layer with parameters and no `reset_parameters()` is refused
    (SpecError naming it), since its prior would be undefined.

    Args:
        module: The module whose parameters are redrawn in place.
        prior: Prior the Linear/Conv parameters are drawn from.
        generator: Random generator of the draws (default: the global RNG).

    Returns:
        module, redrawn.

    Raises:
        SpecError: If a layer has parameters but no reset_parameters().
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            std_w = math.sqrt(prior.sigma_w2 / _fan_in(layer.weight))
            layer.weight.copy_(
                torch.randn(layer.weight.shape, generator=generator, dtype=layer.weight.dtype)
                * std_w
            )
            if layer.bias is not None:
                std_b = math.sqrt(prior.sigma_b2)
                layer.bias.copy_(
                    torch.randn(layer.bias.shape, generator=generator, dtype=layer.bias.dtype)
                    * std_b
                )
        elif any(True for _ in layer.parameters(recurse=False)) or isinstance(
                layer, nn.modules.batchnorm._BatchNorm):
            reset = getattr(layer, "reset_parameters", None)
            if reset is None:
                name = next((n for n, m in module.named_modules() if m is layer), "?")
                raise SpecError(f"init_from_prior_: layer {name or '(root)'} "
                                f"({type(layer).__name__}) has parameters but no "
                                "reset_parameters(); expected Linear/Conv layers or layers that "
                                "can reset themselves")
            reset()
    return module
