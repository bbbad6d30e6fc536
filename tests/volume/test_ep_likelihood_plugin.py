"""How a likelihood plugs into EP: a `SiteUpdate` (its moment match) is all the block solver,
its Newton steps and the float64 value read (flatvol.volume.ep.sites), so a new likelihood is a
new function, not a new solver. Shown with the Gaussian likelihood N(t_i; z_i, s2), for which EP
is exact: its sites are the likelihood itself, and log Z_EP = log N(t; 0, K + s2 I)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from flatvol.volume import arccos_kernel
from flatvol.volume.ep.blocks import block_sequential_ep
from flatvol.volume.ep.sites import site_value

NOISE = 0.3


def gaussian_update(t: np.ndarray, cav_mean: np.ndarray, cav_var: np.ndarray):
    """The moment match of N(t; z, NOISE) against the cavity N(z; m, v): exact, the site is the
    likelihood (tau = 1/NOISE, nu = t/NOISE), log Z_i = log N(t; m, v + NOISE)."""
    log_Z = stats.norm.logpdf(t, cav_mean, np.sqrt(cav_var + NOISE))
    return log_Z, np.full_like(t, 1.0 / NOISE), t / NOISE


@pytest.mark.parametrize("n", [40, 200])
def test_a_gaussian_likelihood_plugged_into_the_block_solver_is_exact(n):
    x = np.random.default_rng(n).random((n, 10))
    K = arccos_kernel(x, n_hidden=2, sigma_w2=2.0, sigma_b2=1.0)
    t = np.random.default_rng(n + 1).standard_normal(n)
    fit = block_sequential_ep(K, t, gaussian_update, tol=1e-9, max_sweeps=50)
    assert fit.converged
    np.testing.assert_allclose(fit.site_precision, 1.0 / NOISE, rtol=1e-12)
    value = site_value(K, t, fit.site_precision, fit.site_natural_mean, fit.posterior_var,
                       fit.posterior_mean, gaussian_update)
    exact = stats.multivariate_normal.logpdf(t, np.zeros(n), K + NOISE * np.eye(n))
    # both are float64 formulas of the same Cholesky-sized quantities: rounding only
    assert value.log_marginal == pytest.approx(exact, rel=1e-10)
    # the exact posterior mean K (K + s2 I)^-1 t
    mean = K @ np.linalg.solve(K + NOISE * np.eye(n), t)
    np.testing.assert_allclose(value.mean, mean, rtol=1e-8, atol=1e-10)
