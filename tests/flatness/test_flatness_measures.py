"""Average-case sharpness, PAC-Bayes sigma*, adaptive sharpness and the Fisher-Rao norm
against closed forms: quadratic losses (least squares at its minimum), losses linear in w,
and per-example gradients computed one by one."""

from __future__ import annotations

import json
import math

import pytest
import torch
from flatness_helpers import MAKERS, flat_params, make_cnn, make_fcn, make_fitted_fcn
from torch import nn

from flatvol.errors import SpecError
from flatvol.flatness import (
    adaptive_sharpness,
    average_sharpness,
    fisher_rao_norm,
    pac_bayes_flatness,
    pac_bayes_magnitude_flatness,
)


def mse(out, target):
    return ((out - target) ** 2).mean()


@pytest.fixture
def least_squares():
    """A linear model at the least-squares minimum: L(w + u) - L(w) = u'Hu / 2 exactly,
    H = (2/n) X1'X1 with X1 = [X, 1] (weights then bias, the parameter order)."""
    torch.manual_seed(0)
    n, d = 50, 4
    x = torch.randn(n, d, dtype=torch.float64)
    target = x @ torch.randn(d, dtype=torch.float64) + 0.3 * torch.randn(n, dtype=torch.float64)
    x1 = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(x1, target[:, None]).solution[:, 0]
    model = nn.Sequential(nn.Linear(d, 1), nn.Flatten(0)).double()
    with torch.no_grad():
        model[0].weight.copy_(solution[:d][None])
        model[0].bias.copy_(solution[d:])
    return model, x, target, 2 * x1.T @ x1 / n


def test_average_sharpness_is_half_sigma_squared_trace_for_a_quadratic(least_squares):
    model, x, target, H = least_squares
    sigma, n = 0.1, 400
    result = average_sharpness(model, x, target, mse, sigma=sigma, n_samples=n, seed=1)
    expected = sigma**2 * float(H.trace()) / 2
    # u'Hu/2 with u ~ N(0, s^2 I): sd = s^2 sqrt(2 ||H||_F^2) / 2; tolerance 4 standard errors
    sd = sigma**2 * math.sqrt(2 * float((H * H).sum())) / 2 / math.sqrt(n)
    assert abs(result.sharpness - expected) < 4 * sd
    assert result.std_error == pytest.approx(sd, rel=0.25)
    # magnitude-aware noise: variance s^2 w_i^2 + eps^2 -> expected rise sum_i H_ii var_i / 2
    w = flat_params(model)
    mag = average_sharpness(model, x, target, mse, sigma=sigma, n_samples=n, seed=1,
                            magnitude_aware=True, epsilon_floor=0.01)
    variances = sigma**2 * w**2 + 0.01**2
    expected_mag = float((H.diagonal() * variances).sum()) / 2
    assert abs(mag.sharpness - expected_mag) < 4 * mag.std_error


def test_pac_bayes_sigma_star_solves_the_quadratic_equation(least_squares):
    """Expected rise sigma^2 tr(H)/2 = delta  =>  sigma* = sqrt(2 delta / tr H)."""
    model, x, target, H = least_squares
    delta, n = 0.05, 200
    result = pac_bayes_flatness(model, x, target, mse, delta=delta, n_samples=n, seed=2)
    expected = math.sqrt(2 * delta / float(H.trace()))
    # the MC rise has relative sd sqrt(2||H||_F^2)/tr(H)/sqrt(n) (~6% here); sigma* ~ rise^-1/2
    rel_sd = math.sqrt(2 * float((H * H).sum())) / float(H.trace()) / math.sqrt(n)
    assert result.sigma_star == pytest.approx(expected, rel=4 * rel_sd / 2)
    assert result.bracketed and result.flatness == pytest.approx(1 / result.sigma_star**2)
    # bisection brackets the threshold: rise(sigma*) <= delta < rise(sigma* (1 + 2 tol))
    assert result.rise_at_sigma_star <= delta
    above = average_sharpness(model, x, target, mse, sigma=result.sigma_star * 1.002,
                              n_samples=n, seed=2)
    assert above.sharpness > delta
    assert result.rise_at_sigma_star == pytest.approx(
        average_sharpness(model, x, target, mse, sigma=result.sigma_star, n_samples=n,
                          seed=2).sharpness, rel=1e-12)


def test_pac_bayes_error_metric_and_unbracketed_cases():
    model, x, y = make_fitted_fcn()
    result = pac_bayes_flatness(model, x, y, metric="error", delta=0.1, n_samples=8)
    assert result.metric == "error" and result.base_value == 0 and result.bracketed
    assert 0 < result.sigma_star < 10 and result.rise_at_sigma_star <= 0.1
    # 0-1 error cannot rise by more than 1: sigma* runs into sigma_max
    capped = pac_bayes_flatness(model, x, y, metric="error", delta=1.5, n_samples=2,
                                sigma_max=1.0)
    assert not capped.bracketed and capped.sigma_star <= 1.0
    mag = pac_bayes_magnitude_flatness(model, x, y, n_samples=4)
    assert mag.magnitude_aware and mag.epsilon_floor == 1e-3


def test_adaptive_sharpness_of_a_linear_loss_has_its_closed_form():
    """L(w) = mean logit of a linear model; with T = diag|w|:
    p = inf: max = rho * sum_i |w_i g_i|;   p = 2: max = rho * || |w| * g ||_2."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 1), nn.Flatten(0)).double()
    x = torch.randn(40, 6, dtype=torch.float64)
    y = torch.zeros(40, dtype=torch.float64)

    def mean_logit(logits, _y):
        return logits.mean()

    w = flat_params(model)
    g = torch.cat([x.mean(0), torch.ones(1, dtype=x.dtype)])
    rho = 0.01
    inf = adaptive_sharpness(model, x, y, mean_logit, rho=rho, p="inf")
    assert inf.sharpness == pytest.approx(rho * float((w.abs() * g.abs()).sum()), rel=1e-10)
    assert bool((inf.perturbation.abs() <= rho * w.abs() * (1 + 1e-12)).all())
    two = adaptive_sharpness(model, x, y, mean_logit, rho=rho, p=2)
    assert two.sharpness == pytest.approx(rho * float((w.abs() * g).norm()), rel=1e-10)
    assert float((two.perturbation / w.abs()).norm()) <= rho * (1 + 1e-12)
    with_eta = adaptive_sharpness(model, x, y, mean_logit, rho=rho, p="inf", eta=1.0)
    assert with_eta.sharpness == pytest.approx(
        rho * float(((w.abs() + 1) * g.abs()).sum()), rel=1e-10)


def test_fisher_rao_norm_matches_per_example_gradients(small_problem):
    model, x, y = small_problem
    w = flat_params(model)
    inner = []
    for i in range(len(x)):
        model.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, list(model.parameters()))
        inner.append(float(w @ torch.cat([g.reshape(-1) for g in grads])))
    expected = sum(v * v for v in inner) / len(inner)
    result = fisher_rao_norm(model, x, y, chunk_size=5)
    assert result.fisher_rao_norm_sq == pytest.approx(expected, rel=1e-10)
    assert result.fisher_rao_norm == pytest.approx(math.sqrt(expected), rel=1e-10)


def test_fisher_rao_homogeneous_identity_for_bias_free_relu_nets():
    """Liang et al.: <w, grad_w f> = (L+1) f for ReLU nets without biases."""
    for make in (make_fcn, make_cnn):
        model, x, y = make()
        with torch.no_grad():
            for layer in model.linears:
                layer.bias.zero_()
        result = fisher_rao_norm(model, x, y)
        assert result.depth == len(model.linears)
        assert result.homogeneous_form_sq == pytest.approx(result.fisher_rao_norm_sq, rel=1e-10)
    model, x, y = make_fcn()  # with biases the identity does not hold
    result = fisher_rao_norm(model, x, y)
    assert abs(result.homogeneous_form_sq - result.fisher_rao_norm_sq) > 0.01


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_every_measure_runs_on_every_model_and_leaves_it_unchanged(name):
    model, x, y = MAKERS[name]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    results = [
        average_sharpness(model, x, y, n_samples=4),
        pac_bayes_flatness(model, x, y, n_samples=4),
        pac_bayes_magnitude_flatness(model, x, y, n_samples=4),
        adaptive_sharpness(model, x, y),
        adaptive_sharpness(model, x, y, p=2, rho=0.05),
        fisher_rao_norm(model, x, y),
    ]
    for result in results:
        json.dumps(result.to_dict())
    assert results[3].sharpness >= 0 and results[4].sharpness >= 0
    assert results[1].sigma_star > 0 and results[5].fisher_rao_norm > 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_bad_options_raise_spec_errors():
    model, x, y = make_fcn()
    with pytest.raises(SpecError, match="sigma"):
        average_sharpness(model, x, y, sigma=-1)
    with pytest.raises(SpecError, match="metric"):
        pac_bayes_flatness(model, x, y, metric="accuracy")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="sigma_min"):
        pac_bayes_flatness(model, x, y, sigma_init=1e4)
    with pytest.raises(SpecError, match="p must be"):
        adaptive_sharpness(model, x, y, p=3)
    with pytest.raises(SpecError, match="depth"):
        fisher_rao_norm(model, x, y, depth=0)


def test_pac_bayes_treats_an_overflowing_loss_as_an_infinite_rise(least_squares):
    model, x, target, _ = least_squares

    def overflowing(out, t):
        return mse(out, t) if float(out.abs().max()) < 50 else out.sum() * math.inf

    result = pac_bayes_flatness(model, x, target, overflowing, delta=1e6, n_samples=8)
    assert result.bracketed and 0 < result.sigma_star < 1e3
    assert math.isfinite(result.rise_at_sigma_star) and result.rise_at_sigma_star <= 1e6
