"""alpha-scaling of the paper's FCN (784-40-40-1, float64): the function is unchanged, Keskar
sharpness and the Hessian change by large factors, and the scale-invariant measures do not
move (docs/FLATNESS.md explains which and why).

The network is trained here with the paper's SGD (lr 0.01, batch 32, sigmoid cross-entropy)
until it fits |S| = 100 real MNIST images (the embedded subset), which takes ~1.5 s.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from flatvol.data import load_task
from flatvol.flatness import (
    adaptive_sharpness,
    average_sharpness,
    fisher_rao_norm,
    hessian_top_eigenvalues,
    hessian_trace,
    keskar_sharpness,
    pac_bayes_flatness,
    pac_bayes_magnitude_flatness,
)
from flatvol.models import build_model, labels_of
from flatvol.reparam import alpha_scale, max_output_difference, neuron_scale, random_neuron_scales
from flatvol.volume import volume_of_model

ALPHA = 5.9


@pytest.fixture(scope="module")
def trained():
    task = load_task("mnist", 100, 0, 100)
    x, y = task.S.x.double(), task.S.y.double()
    model = build_model("fcn:40,40", task.input_shape, seed=0).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    for _ in range(1000):
        for index in torch.randperm(len(x), generator=generator).split(32):
            optimizer.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(model(x[index]), y[index]).backward()
            optimizer.step()
        if bool(((model(x) > 0).double() == y).all()):
            break
    assert bool(((model(x) > 0).double() == y).all()), "the FCN did not fit S"
    scaled = alpha_scale(model, ALPHA, layer=0)
    return model, scaled, x, y, task


def test_alpha_scaling_leaves_the_function_unchanged(trained):
    model, scaled, x, _, task = trained
    inputs = torch.cat([x, task.E.x.double()])
    assert max_output_difference(model, scaled, inputs) < 1e-10
    assert torch.allclose(scaled.hidden[0].weight, model.hidden[0].weight / ALPHA)
    assert torch.allclose(scaled.hidden[0].bias, model.hidden[0].bias / ALPHA)
    assert torch.allclose(scaled.hidden[1].weight, model.hidden[1].weight * ALPHA)


def test_volume_is_unchanged(trained):
    """V(f) depends only on the function: same labels on S u E, same log10 V(f)."""
    model, scaled, _, _, task = trained
    # volume_of_model feeds the task's float32 inputs as they are: use float32 copies
    nets = [copy.deepcopy(m).float() for m in (model, scaled)]
    labels = [labels_of(m, task.x_SE()) for m in nets]
    assert (labels[0] == labels[1]).all()
    volumes = [volume_of_model(m, task, progress=False) for m in nets]
    assert volumes[0].kernel_kind == "analytic"
    assert volumes[1].volume.full.log10_volume == pytest.approx(
        volumes[0].volume.full.log10_volume, rel=1e-12)
    assert volumes[0].volume.full.log10_volume < 0


def test_keskar_sharpness_and_hessian_change_by_large_factors(trained):
    model, scaled, x, y, _ = trained
    # measured: Keskar x10.2 (all three maximizers), top eigenvalue x20.7, trace x27
    for maximizer in ("fast", "lbfgsb"):
        before = keskar_sharpness(model, x, y, maximizer=maximizer).sharpness
        after = keskar_sharpness(scaled, x, y, maximizer=maximizer).sharpness
        assert after / before > 5, maximizer
    top = [hessian_top_eigenvalues(m, x, y).eigenvalues[0] for m in (model, scaled)]
    assert top[1] / top[0] > 10
    trace = [hessian_trace(m, x, y, n_hvp=30).trace for m in (model, scaled)]
    assert trace[1] / trace[0] > 10
    # the isotropic Gaussian measures are not invariant either
    sigma = [pac_bayes_flatness(m, x, y, n_samples=4).sigma_star for m in (model, scaled)]
    assert sigma[0] / sigma[1] > 2


def test_scale_invariant_measures_are_unchanged(trained):
    model, scaled, x, y, _ = trained
    fr = [fisher_rao_norm(m, x, y) for m in (model, scaled)]
    assert fr[1].fisher_rao_norm == pytest.approx(fr[0].fisher_rao_norm, rel=1e-9)
    assert fr[1].homogeneous_form_sq == pytest.approx(fr[0].homogeneous_form_sq, rel=1e-9)
    for p in ("inf", 2):
        adaptive = [adaptive_sharpness(m, x, y, p=p, rho=0.01).sharpness for m in (model, scaled)]
        assert adaptive[0] > 0
        assert adaptive[1] == pytest.approx(adaptive[0], rel=1e-6), p
    # multiplicative noise (epsilon_floor = 0): sigma* and the expected rise are invariant
    mag = [pac_bayes_magnitude_flatness(m, x, y, epsilon_floor=0.0, n_samples=4).sigma_star
           for m in (model, scaled)]
    assert mag[1] == pytest.approx(mag[0], rel=1e-9)
    avg = [average_sharpness(m, x, y, sigma=0.05, magnitude_aware=True, epsilon_floor=0.0,
                             n_samples=4).sharpness for m in (model, scaled)]
    assert avg[1] == pytest.approx(avg[0], rel=1e-9)
    # ... but with Keskar's "+1" (eta = 1) adaptive sharpness is no longer invariant
    eta = [adaptive_sharpness(m, x, y, eta=1.0).sharpness for m in (model, scaled)]
    assert eta[1] / eta[0] > 2


def test_neuron_wise_scaling_keeps_the_same_invariants(trained):
    model, _, x, y, _ = trained
    scales = random_neuron_scales(model, layer=0, log10_range=1.0, seed=3)
    scaled = neuron_scale(model, scales, layer=0)
    assert max_output_difference(model, scaled, x) < 1e-10
    fr = [fisher_rao_norm(m, x, y).fisher_rao_norm for m in (model, scaled)]
    assert fr[1] == pytest.approx(fr[0], rel=1e-9)
    adaptive = [adaptive_sharpness(m, x, y, rho=0.01).sharpness for m in (model, scaled)]
    assert adaptive[1] == pytest.approx(adaptive[0], rel=1e-6)
    keskar = [keskar_sharpness(m, x, y).sharpness for m in (model, scaled)]
    assert keskar[1] / keskar[0] > 1.5  # measured: x2.0
