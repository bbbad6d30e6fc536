"""Function-preserving reparameterizations of ReLU networks (alpha-scaling).

ReLU is positively homogeneous, relu(c z) = c relu(z) for c > 0 (and so are max-pooling and
flattening), so dividing the weights *and bias* of hidden unit j of affine layer l by
c_j > 0 and multiplying the weights leaving that unit in layer l+1 by c_j leaves the network
function unchanged. Layer-wise alpha-scaling (Dinh et al., "Sharp minima can generalize for
deep nets", ICML 2017; the paper's alpha = 5.9 experiment) uses one c for the whole layer;
neuron-wise scaling uses one c per unit (per output channel for convolutions).

These work on models whose `linears` lists the affine layers in order, joined by positively
homogeneous maps: flatvol's FCN and SmallCNN (not ResNets, whose skip connections and
normalization layers need other symmetries).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from flatvol.errors import SpecError


def _affine_layers(model: nn.Module) -> list[nn.Module]:
    layers = getattr(model, "linears", None)
    if layers is None:
        raise SpecError(
            f"{type(model).__name__} has no `linears` attribute: alpha-scaling needs a plain "
            "ReLU network (FCN or SmallCNN) listing its affine layers in order"
        )
    layers = list(layers)
    for layer in layers:
        if not isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            raise SpecError(
                f"alpha-scaling supports Linear/Conv layers, got {type(layer).__name__}"
            )
    return layers


def _scalable_layer(model: nn.Module, layer: int) -> nn.Module:
    layers = _affine_layers(model)
    if not 0 <= layer < len(layers) - 1:
        raise SpecError(
            f"layer must be in [0, {len(layers) - 2}] (the last affine layer has no successor), "
            f"got {layer}"
        )
    return layers[layer]


@torch.no_grad()
def neuron_scale(
    model: nn.Module,
    scales: torch.Tensor | Sequence[float],
    layer: int = 0,
    *,
    inplace: bool = False,
) -> nn.Module:
    """Divide unit j of affine layer `layer` (weights and bias) by scales[j] > 0 and multiply
    the next layer's weights from unit j by scales[j]. Returns a deep copy unless `inplace`."""
    units = _scalable_layer(model, layer).weight.shape[0]
    c = torch.as_tensor(scales, dtype=torch.float64).flatten()
    if c.numel() != units:
        raise SpecError(f"scales must have one entry per unit of layer {layer} ({units}), "
                        f"got {c.numel()}")
    if not bool(torch.all(torch.isfinite(c) & (c > 0))):
        raise SpecError("scales must be positive and finite (ReLU is only positively homogeneous)")
    target = model if inplace else copy.deepcopy(model)
    layers = _affine_layers(target)
    current, following = layers[layer], layers[layer + 1]
    w = current.weight
    w.div_(c.to(w).view(-1, *([1] * (w.dim() - 1))))
    if current.bias is not None:
        current.bias.div_(c.to(current.bias))
    v = following.weight
    if isinstance(following, nn.Linear) and v.shape[1] != units:
        if v.shape[1] % units:
            raise SpecError(f"layer {layer + 1} has {v.shape[1]} inputs, not a multiple of the "
                            f"{units} units of layer {layer}")
        # flattened (channel, position) features: channel j owns a contiguous block
        v.view(v.shape[0], units, -1).mul_(c.to(v).view(1, -1, 1))
    else:
        if v.shape[1] != units:
            raise SpecError(f"layer {layer + 1} has {v.shape[1]} input channels, expected {units}")
        v.mul_(c.to(v).view(1, -1, *([1] * (v.dim() - 2))))
    return target


def alpha_scale(model: nn.Module, alpha: float, layer: int = 0, *,
                inplace: bool = False) -> nn.Module:
    """Layer-wise alpha-scaling: layer `layer` weights and bias / alpha, layer+1 weights * alpha.

    Returns a deep copy unless `inplace`. The network function is unchanged for alpha > 0.
    """
    if not (alpha > 0 and math.isfinite(alpha)):
        raise SpecError(f"alpha must be a positive number, got {alpha}")
    units = _scalable_layer(model, layer).weight.shape[0]
    return neuron_scale(model, [float(alpha)] * units, layer, inplace=inplace)


def random_neuron_scales(model: nn.Module, layer: int = 0, *, log10_range: float = 1.0,
                         seed: int = 0) -> torch.Tensor:
    """Per-unit scales 10^U(-log10_range, log10_range) for `neuron_scale`, seeded."""
    units = _scalable_layer(model, layer).weight.shape[0]
    generator = torch.Generator().manual_seed(seed)
    exponents = (torch.rand(units, generator=generator, dtype=torch.float64) * 2 - 1) * log10_range
    return 10.0**exponents


@torch.no_grad()
def max_output_difference(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor) -> float:
    """max |f_a(x) - f_b(x)| over the inputs, both models in eval mode (modes restored)."""
    outputs = []
    for model in (model_a, model_b):
        modes = {m: m.training for m in model.modules()}
        model.eval()
        try:
            param = next(model.parameters())
            outputs.append(model(x.to(param.device, param.dtype)).double().cpu())
        finally:
            for module, mode in modes.items():
                module.training = mode
    if outputs[0].shape != outputs[1].shape:
        raise SpecError(f"the models' outputs differ in shape: {tuple(outputs[0].shape)} vs "
                        f"{tuple(outputs[1].shape)}")
    return float((outputs[0] - outputs[1]).abs().max())


def functions_equal(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor,
                    atol: float = 1e-10) -> bool:
    """True when the two networks' outputs on x agree to within atol everywhere."""
    return max_output_difference(model_a, model_b, x) <= atol
