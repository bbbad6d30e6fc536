"""Flatness on the K-class loss: a model with K >= 2 outputs gets the cross-entropy on class
labels 0..K-1 by default, and every measure of the catalogue is checked on a small 3-class
network against a reference built without flatvol.flatness (finite differences, the dense
Hessian of torch.autograd.functional.hessian, the measures' definitions, brute force over the
corners of a box where the loss is convex)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from flatvol.errors import SpecError
from flatvol.flatness import (
    FunctionalLoss,
    adaptive_sharpness,
    average_sharpness,
    fisher_rao_norm,
    hessian_density,
    hessian_frobenius_norm,
    hessian_top_eigenvalues,
    hessian_trace,
    keskar_sharpness,
    pac_bayes_flatness,
)
from flatvol.measures import MeasureContext, MeasuresSpec, compute_measures, measure_names

CLASSES = 3


def three_class_fcn(hidden: int | None = 5, seed: int = 0):
    """A 4-input, 3-output float64 network (tanh hidden layer, or none: softmax regression,
    whose loss is convex in the weights) and 20 examples with labels 0..2."""
    torch.manual_seed(seed)
    if hidden is None:
        model = nn.Linear(4, CLASSES)
    else:
        model = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, CLASSES))
    model = model.double()
    x = torch.randn(20, 4, dtype=torch.float64)
    y = torch.arange(20) % CLASSES
    return model, x, y


def reference_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """The mean cross-entropy as a function of a flat parameter vector, without flatvol."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def loss(w: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(w, sizes), shapes)}
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return loss, w0


def reference_grad(loss, w: torch.Tensor) -> torch.Tensor:
    u = w.detach().requires_grad_(True)
    return torch.autograd.grad(loss(u), u)[0]


def test_the_default_loss_of_k_outputs_is_the_cross_entropy_with_its_gradient_and_hvp():
    model, x, y = three_class_fcn()
    loss, w0 = reference_loss(model, x, y)
    with FunctionalLoss(model, x, y, chunk_size=7) as op:
        assert op.n_outputs == CLASSES
        assert op.loss_value(op.w0) == pytest.approx(float(loss(w0)), rel=1e-13)
        # central differences: truncation ~ h^2 |L'''| ~ 1e-12, round-off ~ eps L / h ~ 1e-10
        h = 1e-6
        eye = torch.eye(op.n_params, dtype=torch.float64)
        fd_grad = torch.stack([(loss(w0 + h * e) - loss(w0 - h * e)) / (2 * h) for e in eye])
        torch.testing.assert_close(op.grad(op.w0), fd_grad.detach(), rtol=0, atol=1e-8)
        # H v against central differences of the (independent) gradient along v
        v = torch.randn(op.n_params, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
        fd_hvp = (reference_grad(loss, w0 + h * v) - reference_grad(loss, w0 - h * v)) / (2 * h)
        torch.testing.assert_close(op.hvp(op.w0, v), fd_hvp, rtol=0, atol=1e-7)
        # the 0-1 error of the argmax
        wrong = (model(x).argmax(dim=1) != y).double().mean()
        assert op.error_rate(op.w0) == float(wrong)
    own = model(x).argmax(dim=1)  # the network's own labels: no error; shifted: all wrong
    assert FunctionalLoss(model, x, own).error_rate(w0) == 0.0
    assert FunctionalLoss(model, x, (own + 1) % CLASSES).error_rate(w0) == 1.0


def test_hessian_measures_match_the_dense_hessian():
    model, x, y = three_class_fcn()
    loss, w0 = reference_loss(model, x, y)
    dense = torch.autograd.functional.hessian(loss, w0)
    eigenvalues = torch.linalg.eigvalsh(dense)
    p = w0.numel()
    # Lanczos run to the full dimension and Hutch++ with a sketch of all p directions are
    # exact up to round-off, so the tolerances are round-off's (1e-9 of the spectral scale)
    scale = float(eigenvalues.abs().max())
    top = hessian_top_eigenvalues(model, x, y, k=2, max_iter=p, tol=1e-12)
    assert top.eigenvalues == pytest.approx(eigenvalues.flip(0)[:2].tolist(), abs=1e-9 * scale)
    trace = hessian_trace(model, x, y, n_hvp=3 * p)
    assert trace.trace == pytest.approx(float(dense.trace()), abs=1e-9 * scale * p)
    frobenius = hessian_frobenius_norm(model, x, y, method="hutchpp", n_hvp=3 * p)
    assert frobenius.frobenius_norm == pytest.approx(float(torch.linalg.matrix_norm(dense)),
                                                     rel=1e-9)
    # one probe run to completion: its Krylov space holds every distinct eigenvalue (the probe
    # is generic), so the weighted quadrature nodes are exactly the spectrum's distinct values
    density = hessian_density(model, x, y, n_probes=1, n_iter=p)
    nodes = density.nodes[0][density.weights[0] > 1e-12]
    spectrum = eigenvalues.numpy()
    assert np.abs(nodes[:, None] - spectrum[None, :]).min(axis=1).max() <= 1e-8 * scale
    nonzero = spectrum[np.abs(spectrum) > 1e-6 * scale]
    assert np.abs(nonzero[:, None] - nodes[None, :]).min(axis=1).max() <= 1e-8 * scale
    assert density.weights.sum() == pytest.approx(1.0, rel=1e-12)


def _corner_max(x: torch.Tensor, y: torch.Tensor, w0: torch.Tensor,
                bound: torch.Tensor) -> float:
    """max over the box |z| <= bound of the softmax-regression loss at w0 + z: it is convex in
    the weights, so the maximum is at one of the 2^p corners, all evaluated here at once
    (weights (3, 4) then bias (3,), as nn.Linear orders them)."""
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=w0.numel())),
                         dtype=torch.float64)
    w = w0 + signs * bound
    logits = torch.einsum("cki,ni->cnk", w[:, :12].reshape(-1, CLASSES, 4), x) \
        + w[:, None, 12:]
    losses = nn.functional.cross_entropy(logits.permute(0, 2, 1), y.expand(len(w), -1),
                                         reduction="none").mean(dim=1)
    return float(losses.max())


def test_keskar_sharpness_is_the_maximum_over_the_box():
    """On softmax regression (12 weights) the cross-entropy is convex in w, so the maximum over
    the box is at a corner: all 4096 of them are the reference."""
    model, x, y = three_class_fcn(hidden=None)
    loss, w0 = reference_loss(model, x, y)
    epsilon = 1e-3
    bound = epsilon * (w0.abs() + 1)
    best = _corner_max(x, y, w0, bound)
    base = float(loss(w0))
    for maximizer in ("fast", "lbfgsb"):
        result = keskar_sharpness(model, x, y, epsilon=epsilon, maximizer=maximizer)
        assert result.loss == pytest.approx(base, rel=1e-13)
        assert result.max_loss == pytest.approx(best, rel=1e-12), maximizer
        assert result.sharpness == pytest.approx(100 * (best - base) / (1 + base), rel=1e-8)
        assert bool((result.perturbation.abs() <= result.bound * (1 + 1e-12)).all())


def test_adaptive_sharpness_is_the_maximum_over_the_rescaled_box():
    model, x, y = three_class_fcn(hidden=None)
    loss, w0 = reference_loss(model, x, y)
    rho = 1e-2
    best = _corner_max(x, y, w0, rho * w0.abs())
    result = adaptive_sharpness(model, x, y, rho=rho)
    assert result.max_loss == pytest.approx(best, rel=1e-12)
    assert result.sharpness == pytest.approx(best - float(loss(w0)), rel=1e-8)


def test_noise_measures_follow_their_definitions():
    """Average sharpness and PAC-Bayes sigma* on the mean over the same fixed Gaussian
    directions (float64 draws from the seeded CPU generator, in order), with the reference loss."""
    model, x, y = three_class_fcn()
    loss, w0 = reference_loss(model, x, y)
    base = float(loss(w0))

    def mean_rise(sigma: float, n_samples: int, seed: int) -> float:
        generator = torch.Generator().manual_seed(seed)
        draws = [torch.randn(w0.numel(), generator=generator, dtype=torch.float64)
                 for _ in range(n_samples)]
        return float(np.mean([float(loss(w0 + sigma * xi)) for xi in draws])) - base

    average = average_sharpness(model, x, y, sigma=0.05, n_samples=8, seed=4)
    assert average.sharpness == pytest.approx(mean_rise(0.05, 8, 4), rel=1e-10)
    pac = pac_bayes_flatness(model, x, y, delta=0.05, n_samples=8, seed=4)
    assert pac.bracketed
    assert mean_rise(pac.sigma_star, 8, 4) <= 0.05
    assert mean_rise(pac.sigma_star * (1 + 2e-3), 8, 4) > 0.05


def test_fisher_rao_norm_is_the_mean_squared_directional_derivative():
    model, x, y = three_class_fcn()
    loss, w0 = reference_loss(model, x, y)
    squares = [float(torch.dot(w0, reference_grad(reference_loss(model, x[i:i + 1],
                                                                 y[i:i + 1])[0], w0))) ** 2
               for i in range(len(y))]
    result = fisher_rao_norm(model, x, y, chunk_size=6)
    assert result.fisher_rao_norm_sq == pytest.approx(float(np.mean(squares)), rel=1e-10)


def test_every_catalogue_measure_runs_on_a_three_class_network():
    model, x, y = three_class_fcn()
    settings = MeasuresSpec(options={"hessian_trace": {"n_hvp": 9},
                                     "hessian_frobenius": {"n_hvp": 6},
                                     "hessian_density": {"n_probes": 1, "n_iter": 5}})
    task = SimpleNamespace(S=SimpleNamespace(x=x, y=y))
    values = compute_measures(measure_names(group="flatness"), model, task,
                              MeasureContext(settings, seed=1))
    assert values and all(np.isfinite(v) for v in values.values())
    assert values["hessian_top_eig"] > 0 and values["sharpness"] > 0


@pytest.mark.parametrize("labels,match", [
    (torch.arange(20) % 4, r"^y: expected class labels in 0\.\.2 for a model with 3 outputs, "
                           r"got values 0, 1, 2, 3"),
    (torch.arange(20) % 3 - 1, r"^y: expected class labels in 0\.\.2 .* got values -1, 0, 1"),
    ((torch.arange(20) % 3).double(), r"^y: float labels \(0, 1, 2\) for a model with 3 "
                                      r"outputs; .* integer class labels 0\.\.2"),
    (torch.zeros(20, 3, dtype=torch.int64), r"^y: expected class labels of shape \(n,\) or "
                                            r"\(n, 1\) for a model with 3 outputs"),
])
def test_bad_class_labels_are_one_line_errors(labels, match):
    model, x, _ = three_class_fcn()
    with pytest.raises(SpecError, match=match) as error:
        keskar_sharpness(model, x, labels)
    assert "\n" not in str(error.value)


def test_class_labels_in_other_forms_give_the_same_number_and_pm1_is_refused():
    model, x, y = three_class_fcn()
    expected = hessian_trace(model, x, y, n_hvp=6).trace
    assert hessian_trace(model, x, y.reshape(-1, 1), n_hvp=6).trace == expected
    assert hessian_trace(model, x, y.int().numpy(), n_hvp=6).trace == expected
    with pytest.raises(SpecError, match=r"^labels='pm1' applies to one-logit models only"):
        hessian_trace(model, x, y, labels="pm1")
