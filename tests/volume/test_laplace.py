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


@pytest.mark.parametrize("noise_var", [1.0, 0.3])
def test_matches_brute_force_laplace(noise_var):
    K = random_kernel(6, 0)
    y = np.array([1, -1, 1, 1, -1, -1.0])
    s = math.sqrt(noise_var)
    Kinv = np.linalg.inv(K)

    def psi(f):  # negative log of the unnormalized posterior
        return 0.5 * f @ Kinv @ f - np.sum(stats.norm.logcdf(y * f / s))

    f_hat = optimize.minimize(psi, np.zeros(6), method="BFGS", options={"gtol": 1e-12}).x
    z = y * f_hat / s
    r = np.exp(stats.norm.logpdf(z) - stats.norm.logcdf(z))
    W = r * (z + r) / noise_var
    expected = -psi(f_hat) - 0.5 * np.linalg.slogdet(np.eye(6) + K @ np.diag(W))[1]
    res = laplace_approximation(K, y, noise_var=noise_var)
    assert res.converged
    np.testing.assert_allclose(res.mode, f_hat, atol=1e-5)
    assert res.log_marginal_likelihood == pytest.approx(expected, abs=1e-8)


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
