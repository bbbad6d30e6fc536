"""Laplace approximation against a brute-force mode search and Hessian."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from flatvol.volume import expectation_propagation, laplace_approximation


def random_kernel(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n + 2))
    return A @ A.T / n + 0.1 * np.eye(n)


def exact_laplace(K: np.ndarray, y: np.ndarray, noise_var: float) -> tuple[np.ndarray, float]:
    """The Laplace mode and log marginal likelihood, independently of flatvol: BFGS with the
    analytic gradient, then exact Newton steps until the gradient is at rounding level (~1e-16),
    so the reference is accurate to ~1e-14 (a BFGS stop alone, or finite-difference gradients,
    leave the mode ~1e-8 off, which moves log|I + K W| by as much)."""
    s = math.sqrt(noise_var)
    Kinv = np.linalg.inv(K)

    def ratio(f):
        z = y * f / s
        return z, np.exp(stats.norm.logpdf(z) - stats.norm.logcdf(z))

    def psi(f):  # negative log of the unnormalized posterior
        return 0.5 * f @ Kinv @ f - np.sum(stats.norm.logcdf(y * f / s))

    def grad(f):
        return Kinv @ f - y * ratio(f)[1] / s

    f = optimize.minimize(psi, np.zeros(len(y)), jac=grad, method="BFGS",
                          options={"gtol": 1e-12}).x
    for _ in range(6):
        z, r = ratio(f)
        f = f - np.linalg.solve(Kinv + np.diag(r * (z + r) / noise_var), grad(f))
    assert np.max(np.abs(grad(f))) < 1e-13
    z, r = ratio(f)
    W = r * (z + r) / noise_var
    return f, float(-psi(f) - 0.5 * np.linalg.slogdet(np.eye(len(y)) + K @ np.diag(W))[1])


@pytest.mark.parametrize("noise_var", [1.0, 0.3])
def test_matches_exact_laplace(noise_var):
    K = random_kernel(6, 0)
    y = np.array([1, -1, 1, 1, -1, -1.0])
    f_hat, expected = exact_laplace(K, y, noise_var)
    # Default tol=1e-10 stops Newton when an iteration gains <= 1e-10 |objective|; after the
    # quadratic phase the mode is then within ~1e-10, and log|I + K W| (first-order in the mode)
    # within ~1e-10 x O(1): 1e-9 covers it. With tol=1e-14 it is at rounding level.
    res = laplace_approximation(K, y, noise_var=noise_var)
    assert res.converged
    np.testing.assert_allclose(res.mode, f_hat, atol=1e-9)
    assert res.log_marginal_likelihood == pytest.approx(expected, abs=1e-9)
    tight = laplace_approximation(K, y, noise_var=noise_var, tol=1e-14)
    assert tight.log_marginal_likelihood == pytest.approx(expected, abs=1e-12)


def test_laplace_is_below_ep_for_probit():
    # A known property for binary GP classification (Kuss & Rasmussen 2005): Laplace
    # underestimates the marginal likelihood that EP approximates closely.
    K = 5.0 * random_kernel(40, 1)
    y = np.random.default_rng(1).choice([0, 1], 40)
    lap = laplace_approximation(K, y)
    ep = expectation_propagation(K, y, likelihood="probit")
    assert lap.log_marginal_likelihood < ep.log_marginal_likelihood
    assert ep.log_marginal_likelihood - lap.log_marginal_likelihood < 0.5 * abs(
        ep.log_marginal_likelihood)
