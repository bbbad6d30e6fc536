"""alpha-scaling reparameterizations keep the function and move the parameters."""

from __future__ import annotations

import pytest
import torch

from flatvol.errors import SpecError
from flatvol.models import build_model
from flatvol.reparam import (
    alpha_scale,
    functions_equal,
    max_output_difference,
    neuron_scale,
    random_neuron_scales,
)

MODELS = [("fcn:7,5,3", (10,)), ("cnn:3,4", (2, 8, 8))]


@pytest.mark.parametrize("spec,shape", MODELS)
def test_layerwise_scaling_of_every_layer_preserves_the_function(spec, shape):
    model = build_model(spec, shape, seed=0).double()
    x = torch.randn(20, *shape, dtype=torch.float64)
    for layer in range(len(model.linears) - 1):
        scaled = alpha_scale(model, 5.9, layer)
        assert functions_equal(model, scaled, x, atol=1e-10)
        a, b = model.linears[layer], scaled.linears[layer]
        torch.testing.assert_close(b.weight, a.weight / 5.9)
        torch.testing.assert_close(b.bias, a.bias / 5.9)
        torch.testing.assert_close(scaled.linears[layer + 1].weight,
                                   model.linears[layer + 1].weight * 5.9)
        torch.testing.assert_close(scaled.linears[layer + 1].bias, model.linears[layer + 1].bias)


@pytest.mark.parametrize("spec,shape", MODELS)
def test_neuron_wise_scaling_preserves_the_function(spec, shape):
    model = build_model(spec, shape, seed=1).double()
    x = torch.randn(20, *shape, dtype=torch.float64)
    for layer in range(len(model.linears) - 1):
        scales = random_neuron_scales(model, layer, log10_range=1.5, seed=layer)
        assert scales.max() / scales.min() > 2  # genuinely non-uniform
        scaled = neuron_scale(model, scales, layer)
        assert max_output_difference(model, scaled, x) < 1e-10
        w = scaled.linears[layer].weight
        torch.testing.assert_close(w[0], model.linears[layer].weight[0] / scales[0].item())


def test_copy_by_default_and_inplace_on_request():
    model = build_model("fcn:6,6", (4,), seed=0).double()
    original = model.hidden[0].weight.clone()
    scaled = alpha_scale(model, 2.0)
    assert scaled is not model and torch.equal(model.hidden[0].weight, original)
    same = alpha_scale(model, 2.0, inplace=True)
    assert same is model
    torch.testing.assert_close(model.hidden[0].weight, original / 2)


def test_functions_equal_detects_a_change_that_is_not_a_symmetry():
    model = build_model("fcn:6,6", (4,), seed=0).double()
    x = torch.randn(10, 4, dtype=torch.float64)
    broken = alpha_scale(model, 3.0)
    with torch.no_grad():
        broken.hidden[1].weight.div_(3.0)  # undo the compensation only
    assert not functions_equal(model, broken, x)
    # a negative factor is not a symmetry of ReLU: refused
    with pytest.raises(SpecError, match="positive"):
        alpha_scale(model, -1.0)


def test_float32_scaling_is_equal_to_rounding():
    model = build_model("fcn:40,40", (784,), seed=0)
    x = torch.rand(50, 784)
    assert max_output_difference(model, alpha_scale(model, 5.9), x) < 1e-4


def test_bad_requests_raise_spec_errors():
    model = build_model("fcn:6,6", (4,), seed=0)
    with pytest.raises(SpecError, match="layer must be in"):
        alpha_scale(model, 2.0, layer=2)  # the readout has no successor
    with pytest.raises(SpecError, match="one entry per unit"):
        neuron_scale(model, [1.0, 2.0], layer=0)
    with pytest.raises(SpecError, match="positive"):
        neuron_scale(model, [1.0] * 5 + [0.0], layer=0)
    resnet = build_model("resnet18:width=4", (3, 8, 8), seed=0)
    with pytest.raises(SpecError, match="linears"):
        alpha_scale(resnet, 2.0)
