"""The block solver (production EP, both likelihoods) reaches the fixed point of the slow
site-by-site reference (flatvol.volume.ep.reference): the same log Z to 1e-6 relative on several
kernels and labelings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flatvol.volume import arccos_kernel, orthant_probability_closed_form
from flatvol.volume.ep import run_ep
from flatvol.volume.ep.posterior import symmetric_columns
from flatvol.volume.ep.reference import sequential_ep


def nngp_kernel(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).random((n, 30))
    return arccos_kernel(x, n_hidden=2, sigma_w2=2.0, sigma_b2=1.0)


def random_kernel(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n + 2))
    return A @ A.T / n + 0.1 * np.eye(n)


def smooth_kernel(n: int) -> np.ndarray:
    x = np.linspace(-1, 1, n)
    return np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / 0.5**2) + 1e-6 * np.eye(n)


def network_like(n: int, seed: int, error: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.where(rng.random((n, 30)).mean(axis=1) > 0.5, 1.0, -1.0)
    return np.where(rng.random(n) < error, -y, y)


CASES = [
    ("nngp-300", lambda: nngp_kernel(300, 0), lambda: network_like(300, 1)),
    ("nngp-300-random-labels", lambda: nngp_kernel(300, 2),
     lambda: np.random.default_rng(3).choice([-1.0, 1.0], 300)),
    ("nngp-300-all-equal", lambda: nngp_kernel(300, 4), lambda: np.ones(300)),
    ("random-120", lambda: random_kernel(120, 5),
     lambda: np.random.default_rng(6).choice([-1.0, 1.0], 120)),
    ("smooth-alternating-40", lambda: smooth_kernel(40),
     lambda: np.where(np.arange(40) % 2 == 0, 1.0, -1.0)),
]


# The reference converged to 1e-8 (its error is second order: ~1e-14 relative) and the block
# solver to tol; both are the same EP fixed point, so the bars are the block solver's tolerance.
@pytest.mark.parametrize("likelihood", ["step", "probit"])
@pytest.mark.parametrize("name, kernel, labels", CASES, ids=[c[0] for c in CASES])
def test_blocks_match_the_sequential_reference(name, kernel, labels, likelihood):
    K, y = kernel(), labels()
    ref = sequential_ep(K, y, likelihood=likelihood, tol=1e-8, max_iter=500)
    blocks = run_ep(K, y, likelihood=likelihood, tol=1e-6)
    assert ref.converged and blocks.converged
    assert blocks.log_marginal_likelihood == pytest.approx(ref.log_marginal_likelihood, rel=1e-6)
    scale = np.sqrt(ref.posterior_var)
    assert np.max(np.abs(blocks.posterior_mean - ref.posterior_mean) / scale) < 1e-3
    np.testing.assert_allclose(blocks.posterior_var, ref.posterior_var, rtol=1e-3)


@pytest.mark.parametrize("likelihood", ["step", "probit"])
@pytest.mark.parametrize("name, kernel, labels", CASES[:2], ids=[c[0] for c in CASES[:2]])
def test_blocks_at_the_default_tolerance_keep_the_value(name, kernel, labels, likelihood):
    # The bar of the stopping rule: the default tolerance gives the fixed point's value to 1e-6
    # relative (ep-probit ran parallel EP before; it moved by at most 1e-10 relative).
    K, y = kernel(), labels()
    ref = sequential_ep(K, y, likelihood=likelihood, tol=1e-8, max_iter=500)
    blocks = run_ep(K, y, likelihood=likelihood)
    assert blocks.converged
    assert blocks.log_marginal_likelihood == pytest.approx(ref.log_marginal_likelihood, rel=1e-6)


def test_blocks_are_deterministic():
    K, y = nngp_kernel(200, 7), network_like(200, 8)
    a, b = run_ep(K, y, likelihood="step"), run_ep(K, y, likelihood="step")
    assert a.log_marginal_likelihood == b.log_marginal_likelihood
    np.testing.assert_array_equal(a.site_precision, b.site_precision)


@pytest.mark.parametrize("rho", [-0.9, 0.5, 0.95])
def test_blocks_two_points_against_the_reference_and_the_arcsine_law(rho):
    K = np.array([[2.0, rho * math.sqrt(6.0)], [rho * math.sqrt(6.0), 3.0]])
    y = np.array([1.0, 1.0])
    blocks = run_ep(K, y, likelihood="step", tol=1e-9)
    ref = sequential_ep(K, y, likelihood="step", tol=1e-9)
    assert blocks.log_marginal_likelihood == pytest.approx(ref.log_marginal_likelihood, rel=1e-6)
    exact = math.log(orthant_probability_closed_form(K, y))
    assert abs(blocks.log_marginal_likelihood - exact) < 0.06


def test_non_convergence_is_reported():
    K, y = nngp_kernel(100, 11), network_like(100, 12)
    res = run_ep(K, y, likelihood="step", max_iter=1)
    assert not res.converged and "no convergence" in res.message
    assert math.isfinite(res.log_marginal_likelihood)


def test_symmetric_columns_read_both_triangles():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((30, 30))
    S = A + A.T
    lower = np.asfortranarray(np.tril(S) + np.triu(rng.standard_normal((30, 30)), 1))
    for J in (np.arange(10, 20), np.array([0, 3, 29]), np.array([7]), np.array([0])):
        np.testing.assert_array_equal(symmetric_columns(lower, J), S[:, J])
