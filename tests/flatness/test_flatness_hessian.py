"""Hessian estimates against the exact Hessian of small float64 networks.

Ground truth: torch.func.hessian of a loss written here independently of flatvol.flatness
(see flatness_helpers.independent_loss) on networks with 90-241 parameters, and central
finite differences of autograd gradients for the Hessian-vector products.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flatness_helpers import flat_params, independent_loss, make_batchnorm, make_fcn

from flatvol.errors import SpecError
from flatvol.flatness import (
    hessian_density,
    hessian_frobenius_norm,
    hessian_matrix,
    hessian_top_eigenvalues,
    hessian_trace,
    hessian_vector_product,
)

HVP_METHODS = ("double-backward", "forward-over-reverse")


def exact_hessian(model, x, y) -> torch.Tensor:
    return torch.func.hessian(independent_loss(model, x, y))(flat_params(model))


def test_hessian_matrix_is_the_exact_symmetric_hessian(small_problem):
    model, x, y = small_problem
    exact = exact_hessian(model, x, y)
    ours = hessian_matrix(model, x, y, chunk_size=7)
    assert ours.shape == exact.shape
    torch.testing.assert_close(ours, exact, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours, ours.T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", HVP_METHODS)
def test_hvp_matches_exact_hessian_and_finite_differences(small_problem, method):
    model, x, y = small_problem
    exact = exact_hessian(model, x, y)
    w = flat_params(model)
    v = torch.randn(w.shape, generator=torch.Generator().manual_seed(1), dtype=w.dtype)
    hv = hessian_vector_product(model, x, y, v, hvp_method=method, chunk_size=10)
    torch.testing.assert_close(hv, exact @ v, rtol=1e-9, atol=1e-11)

    # central differences of gradients: error O(h^2) ~ 1e-10 away from ReLU kinks
    loss = independent_loss(model, x, y)
    h = 1e-5
    fd = (torch.func.grad(loss)(w + h * v) - torch.func.grad(loss)(w - h * v)) / (2 * h)
    assert float((fd - hv).norm() / hv.norm()) < 1e-6


def test_lanczos_top_and_bottom_eigenvalues_match_eigh(small_problem):
    model, x, y = small_problem
    exact = torch.linalg.eigvalsh(exact_hessian(model, x, y)).numpy()
    scale = np.abs(exact).max()
    top = hessian_top_eigenvalues(model, x, y, k=3, tol=1e-8)
    assert top.converged and top.which == "largest"
    # tolerance: 1e-7 of the spectral norm (Ritz residuals are below 1e-8 of it)
    np.testing.assert_allclose(top.eigenvalues, exact[::-1][:3], rtol=0, atol=1e-7 * scale)
    assert top.n_hvp == top.n_iter < exact.size  # fewer HVPs than parameters
    # the Ritz vectors are eigenvectors: ||H u - lambda u|| small
    H = exact_hessian(model, x, y)
    for lam, u in zip(top.eigenvalues, top.eigenvectors.T):
        assert float((H @ u - lam * u).norm()) < 1e-5 * scale
    bottom = hessian_top_eigenvalues(model, x, y, k=2, which="smallest", tol=1e-8, max_iter=300)
    np.testing.assert_allclose(bottom.eigenvalues, exact[:2], rtol=0, atol=1e-6 * scale)


def test_lanczos_runs_in_float32_on_the_paper_sized_readout():
    model, x, y = make_fcn()
    model = model.float()
    exact = torch.linalg.eigvalsh(exact_hessian(model.double(), x, y))[-1].item()
    top = hessian_top_eigenvalues(model.float(), x.float(), y.float(), k=1, tol=1e-5)
    assert top.eigenvalues[0] == pytest.approx(exact, rel=1e-4)


def test_hutchpp_is_exact_once_its_sketch_spans_the_space():
    model, x, y = make_fcn()
    H = exact_hessian(model, x, y)
    p = H.shape[0]
    trace = hessian_trace(model, x, y, method="hutchpp", n_hvp=3 * p)
    assert trace.n_hvp == 3 * p
    assert trace.trace == pytest.approx(float(H.trace()), rel=1e-9)
    frob = hessian_frobenius_norm(model, x, y, method="hutchpp", n_hvp=3 * p)
    assert frob.frobenius_norm == pytest.approx(float(torch.linalg.norm(H)), rel=1e-9)


@pytest.mark.parametrize("make", [make_fcn, make_batchnorm])
def test_hutchinson_trace_and_frobenius_within_four_exact_standard_errors(make):
    model, x, y = make()
    H = exact_hessian(model, x, y)
    H2 = H @ H
    n = 200
    # Rademacher: Var(v'Av) = 2 (||A||_F^2 - sum_i A_ii^2)
    sd_trace = math.sqrt(2 * (float((H * H).sum()) - float((H.diagonal() ** 2).sum())) / n)
    sd_square = math.sqrt(2 * (float((H2 * H2).sum()) - float((H2.diagonal() ** 2).sum())) / n)
    trace = hessian_trace(model, x, y, method="hutchinson", n_hvp=n, seed=3)
    frob = hessian_frobenius_norm(model, x, y, method="hutchinson", n_hvp=n, seed=3)
    assert abs(trace.trace - float(H.trace())) < 4 * sd_trace
    assert abs(frob.frobenius_norm_sq - float(H2.trace())) < 4 * sd_square
    # the reported standard errors estimate the exact ones (within 35% at n = 200)
    assert trace.std_error == pytest.approx(sd_trace, rel=0.35)
    assert frob.std_error == pytest.approx(sd_square, rel=0.35)


def test_hutchpp_trace_within_four_reported_standard_errors(small_problem):
    model, x, y = small_problem
    H = exact_hessian(model, x, y)
    est = hessian_trace(model, x, y, method="hutchpp", n_hvp=60, seed=5)
    assert est.n_hvp == 60
    assert abs(est.trace - float(H.trace())) < 4 * est.std_error + 1e-9
    frob = hessian_frobenius_norm(model, x, y, method="hutchpp", n_hvp=60, seed=5)
    assert abs(frob.frobenius_norm_sq - float((H * H).sum())) < 4 * frob.std_error + 1e-9


def test_relu_hessian_trace_equals_gauss_newton_trace():
    """For a piecewise-linear ReLU net every d^2 f / d w_j^2 = 0, so tr H equals the trace of
    the Gauss-Newton part (1/n) sum_i s_i (1 - s_i) ||grad f_i||^2 (the bench uses this as
    the exact trace of the 33k-parameter FCN)."""
    model, x, y = make_fcn()
    H = exact_hessian(model, x, y)
    w = flat_params(model)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def logit(u, xi):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(u, sizes), shapes)}
        return torch.func.functional_call(model, params, (xi[None],))[0]

    grads = torch.func.vmap(torch.func.grad(logit), in_dims=(None, 0))(w, x)
    s = torch.sigmoid(model(x).detach())
    gn_trace = float((s * (1 - s) * (grads**2).sum(dim=1)).mean())
    assert float(H.trace()) == pytest.approx(gn_trace, rel=1e-10)


def test_slq_density_matches_the_exact_spectrum():
    model, x, y = make_fcn()
    eig = torch.linalg.eigvalsh(exact_hessian(model, x, y)).numpy()
    p = eig.size
    n_probes = 20
    slq = hessian_density(model, x, y, n_probes=n_probes, n_iter=60, seed=0)
    # a density: non-negative, integrates to 1 on its grid
    step = slq.grid[1] - slq.grid[0]
    assert (slq.values >= 0).all() and slq.values.sum() * step == pytest.approx(1, abs=1e-6)
    np.testing.assert_allclose(slq.weights.sum(axis=1), 1, atol=1e-10)
    # nodes lie in the spectrum's hull
    assert slq.nodes.min() >= eig.min() - 1e-8 and slq.nodes.max() <= eig.max() + 1e-8
    # first moment = tr(H)/p: for u uniform on the sphere Var(u'Hu) =
    # (tr^2 + 2||H||_F^2) / (p (p + 2)) - tr^2 / p^2; tolerance four standard errors
    tr, fro2 = eig.sum(), (eig**2).sum()
    sd = math.sqrt(((tr**2 + 2 * fro2) / (p * (p + 2)) - tr**2 / p**2) / n_probes)
    assert abs(slq.moment(1) - tr / p) < 4 * sd
    # spectral CDFs agree: Kolmogorov distance < 0.08 (probe noise ~0.015, quadrature ~1/60)
    t = np.linspace(eig.min(), eig.max(), 400)
    exact_cdf = (eig[None, :] <= t[:, None]).mean(axis=1)
    nodes, weights = slq.nodes.reshape(-1), slq.weights.reshape(-1) / n_probes
    slq_cdf = ((nodes[None, :] <= t[:, None]) * weights[None, :]).sum(axis=1)
    assert np.abs(slq_cdf - exact_cdf).max() < 0.08
    # broadened densities agree in L1 (same sigma): < 0.15
    sigma = 0.05 * (eig.max() - eig.min())
    grid = np.linspace(eig.min() - 5 * sigma, eig.max() + 5 * sigma, 2000)
    exact_density = np.exp(-0.5 * ((grid[:, None] - eig[None, :]) / sigma) ** 2).sum(axis=1) / (
        p * sigma * math.sqrt(2 * math.pi))
    l1 = np.abs(slq.density(grid, sigma) - exact_density).sum() * (grid[1] - grid[0])
    assert l1 < 0.15


def test_slq_is_exact_when_lanczos_spans_the_space():
    model, x, y = make_fcn()
    eig = torch.linalg.eigvalsh(exact_hessian(model, x, y)).numpy()
    slq = hessian_density(model, x, y, n_probes=1, n_iter=eig.size, seed=0)
    # every eigenvalue with weight above round-off is a node, to 1e-8 of ||H||
    heavy = slq.nodes[0][slq.weights[0] > 1e-8]
    assert np.abs(heavy[:, None] - eig[None, :]).min(axis=1).max() < 1e-8 * np.abs(eig).max()


def test_estimates_are_seeded_and_model_is_left_unchanged():
    model, x, y = make_batchnorm()
    model.train()  # measures evaluate in eval mode and restore the flag
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = hessian_trace(model, x, y, method="hutchinson", n_hvp=5, seed=9)
    b = hessian_trace(model, x, y, method="hutchinson", n_hvp=5, seed=9)
    assert a.trace == b.trace
    assert model.training and model.norm.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    model.eval()
    assert hessian_trace(model, x, y, method="hutchinson", n_hvp=5, seed=9).trace == a.trace


def test_bad_arguments_raise_spec_errors():
    model, x, y = make_fcn()
    with pytest.raises(SpecError, match="k must be"):
        hessian_top_eigenvalues(model, x, y, k=0)
    with pytest.raises(SpecError, match="method"):
        hessian_trace(model, x, y, method="exact")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="n_hvp must be >= 3"):
        hessian_trace(model, x, y, method="hutchpp", n_hvp=2)
    with pytest.raises(SpecError, match="hvp_method"):
        hessian_trace(model, x, y, hvp_method="finite")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="too large"):
        hessian_matrix(model, x, y, max_params=10)
    with pytest.raises(SpecError, match="flat vector"):
        hessian_vector_product(model, x, y, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(SpecError, match="disagree"):
        hessian_trace(model, x, y[:-1])
