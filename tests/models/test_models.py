import math

import pytest
import torch

from flatvol.errors import SpecError
from flatvol.models import FCN, Prior, build_model


@pytest.mark.parametrize(
    "spec,shape",
    [("fcn", (1, 28, 28)), ("fcn:7,5,3", (10,)), ("cnn:4,8", (1, 28, 28)),
     ("resnet18:width=4", (3, 32, 32)), ("resnet50:nobn,width=4", (3, 32, 32))],
)
def test_models_output_one_logit_per_input(spec, shape):
    model = build_model(spec, shape, seed=0)
    x = torch.randn(3, *shape)
    assert model(x).shape == (3,)
    assert model.features(x).shape[0] == 3
    assert model.prior == Prior()
    assert model.spec == spec


def test_same_seed_same_weights_different_seed_different_weights():
    a = build_model("fcn:40,40", (784,), seed=5)
    b = build_model("fcn:40,40", (784,), seed=5)
    c = build_model("fcn:40,40", (784,), seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.hidden[0].weight, c.hidden[0].weight)


def test_initialization_matches_the_prior_variances():
    prior = Prior(sigma_w2=3.0, sigma_b2=0.5)
    model = FCN(2000, (1000,), prior)
    build = build_model("fcn:1000", (2000,), prior, seed=0)
    w, b = build.hidden[0].weight.detach(), build.hidden[0].bias.detach()
    # Sample variances of 2e6 and 1e3 draws: relative standard errors ~1e-3 and ~4.5e-2.
    assert float(w.var()) == pytest.approx(prior.sigma_w2 / 2000, rel=0.01)
    assert float(b.var()) == pytest.approx(prior.sigma_b2, rel=0.2)
    assert model.prior is prior


@pytest.mark.parametrize("bad", ["mlp", "fcn:40,-1", "fcn:a,b", "resnet18:wide"])
def test_bad_model_specs_raise_one_line_errors(bad):
    with pytest.raises(SpecError) as err:
        build_model(bad, (3, 32, 32))
    assert "\n" not in str(err.value)


def test_prior_rejects_invalid_variances():
    with pytest.raises(ValueError):
        Prior(sigma_w2=0.0)
    with pytest.raises(ValueError):
        Prior(sigma_b2=math.nan)


def test_init_from_prior_resets_trained_normalization_layers():
    """A trained LayerNorm gain must not flow into the prior: it is reset to its identity."""
    from torch import nn

    from flatvol.models import init_from_prior_

    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 1))
    with torch.no_grad():
        model[1].weight.fill_(10.0)
        model[1].bias.fill_(3.0)
    init_from_prior_(model, Prior(), torch.Generator().manual_seed(0))
    assert torch.equal(model[1].weight, torch.ones(6))
    assert torch.equal(model[1].bias, torch.zeros(6))


def test_init_from_prior_refuses_a_layer_it_cannot_redraw():
    from torch import nn

    from flatvol.models import init_from_prior_

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.full((3,), 5.0))

        def forward(self, x):
            return x * self.gain

    model = nn.Sequential(nn.Linear(2, 3), Scale())
    with pytest.raises(SpecError, match="layer 1 \\(Scale\\) has parameters but no "
                                        "reset_parameters"):
        init_from_prior_(model, Prior())
