"""Warm-started EP (run_ep init_sites, VolumeEstimator.log_volume warm_start): same value, fewer
iterations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from flatvol.errors import VolumeError
from flatvol.volume import VolumeEstimator, arccos_kernel
from flatvol.volume.ep import run_ep


def correlated_kernel(n: int, seed: int) -> np.ndarray:
    """An NNGP kernel of random inputs: strongly correlated, like the MNIST kernels."""
    x = np.random.default_rng(seed).random((n, 20))
    return arccos_kernel(x, n_hidden=2, sigma_w2=2.0, sigma_b2=1.0)


def flipped(y: np.ndarray, count: int, seed: int) -> np.ndarray:
    out = y.copy()
    idx = np.random.default_rng(seed).choice(len(y), count, replace=False)
    out[idx] *= -1
    return out


@pytest.mark.parametrize("likelihood, mode", [
    ("step", "parallel"), ("probit", "parallel"), ("step", "blocks"), ("probit", "blocks")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_warm_start_from_a_neighbouring_label_vector_keeps_the_value(likelihood, mode, seed):
    K = correlated_kernel(150, seed)
    y = np.sign(np.random.default_rng(seed).standard_normal(150))
    neighbour = flipped(y, 5, seed + 10)
    first = run_ep(K, y, likelihood=likelihood, mode=mode)
    cold = run_ep(K, neighbour, likelihood=likelihood, mode=mode)
    warm = run_ep(K, neighbour, likelihood=likelihood, mode=mode,
                  init_sites=(first.site_precision, first.site_natural_mean))
    assert cold.converged and warm.converged and warm.mode == mode
    assert warm.log_marginal_likelihood == pytest.approx(cold.log_marginal_likelihood, rel=1e-6)
    if mode == "parallel":  # blocks spend their first warm sweep moving to the given sites
        assert warm.iterations < cold.iterations


@pytest.mark.parametrize("mode, iterations", [("parallel", 1), ("blocks", 2)])
def test_warm_start_at_the_fixed_point_stops_at_once(mode, iterations):
    # parallel: the first check passes; blocks: one sweep builds the posterior of the given
    # sites, the next check passes
    K = correlated_kernel(80, 3)
    y = np.sign(np.random.default_rng(3).standard_normal(80))
    cold = run_ep(K, y, likelihood="step", tol=1e-6, mode=mode)
    again = run_ep(K, y, likelihood="step", tol=1e-6, mode=mode,
                   init_sites=(cold.site_precision, cold.site_natural_mean))
    assert again.converged and again.iterations == iterations
    assert again.log_marginal_likelihood == pytest.approx(cold.log_marginal_likelihood, rel=1e-9)


def test_warm_start_keeps_the_value_against_the_exact_orthant_probability():
    # Small n: the exact orthant probability from scipy's multivariate normal CDF; warm and cold
    # EP agree with each other to 1e-6 and with the truth to EP's own approximation error.
    K = correlated_kernel(5, 4) + 0.5 * np.eye(5)
    y = np.array([1.0, -1.0, 1.0, 1.0, -1.0])
    D = np.diag(y)
    exact = math.log(stats.multivariate_normal.cdf(
        np.zeros(5), np.zeros(5), D @ K @ D, abseps=1e-10, releps=1e-7, maxpts=500_000,
        rng=np.random.default_rng(0)))
    first = run_ep(K, -y, likelihood="step", tol=1e-8)
    cold = run_ep(K, y, likelihood="step", tol=1e-8)
    warm = run_ep(K, y, likelihood="step", tol=1e-8,
                  init_sites=(first.site_precision, first.site_natural_mean))
    assert warm.log_marginal_likelihood == pytest.approx(cold.log_marginal_likelihood, rel=1e-6)
    assert abs(warm.log_marginal_likelihood - exact) < 0.1


def test_auto_mode_runs_step_ep_from_zero_sites():
    # Cheaper than any warm start measured (bench/RESULTS.md): 'auto' does not use the sites
    # for the step likelihood, so the result is bit-identical to the cold one.
    K = correlated_kernel(100, 11)
    y = np.sign(np.random.default_rng(11).standard_normal(100))
    first = run_ep(K, flipped(y, 3, 12), likelihood="step")
    cold = run_ep(K, y, likelihood="step")
    warm = run_ep(K, y, likelihood="step",
                  init_sites=(first.site_precision, first.site_natural_mean))
    assert warm.mode == cold.mode == "blocks"
    assert warm.log_marginal_likelihood == cold.log_marginal_likelihood
    assert warm.iterations == cold.iterations


def test_sequential_mode_accepts_a_warm_start():
    K = correlated_kernel(40, 5)
    y = np.sign(np.random.default_rng(5).standard_normal(40))
    first = run_ep(K, y, likelihood="step", mode="sequential", tol=1e-8)
    other = flipped(y, 2, 6)
    cold = run_ep(K, other, likelihood="step", mode="sequential", tol=1e-8)
    warm = run_ep(K, other, likelihood="step", mode="sequential", tol=1e-8,
                  init_sites=(first.site_precision, first.site_natural_mean))
    assert warm.log_marginal_likelihood == pytest.approx(cold.log_marginal_likelihood, rel=1e-6)


@pytest.mark.parametrize("sites, match", [
    ((np.ones(3), np.zeros(3)), "length 4"),
    ((-np.ones(4), np.zeros(4)), ">= 0"),
    ((np.ones(4), np.full(4, np.nan)), "finite"),
    ((np.ones(4),), "pair"),
])
def test_bad_warm_starts_are_rejected(sites, match):
    with pytest.raises(ValueError, match=match):
        run_ep(correlated_kernel(4, 0), np.ones(4), likelihood="step", init_sites=sites)


def test_volume_estimator_chains_warm_starts():
    K = correlated_kernel(120, 7)
    est = VolumeEstimator(K)
    y = (np.random.default_rng(7).random(120) > 0.5).astype(float)
    first = est.log_volume(y)
    assert first.ep_sites is not None and first.ep_sites[0].shape == (120,)
    assert "ep_sites" not in first.to_dict()
    json.dumps(first.to_dict())
    other = np.where(flipped(2 * y - 1, 4, 8) > 0, 1.0, 0.0)
    cold = est.log_volume(other)
    warm = est.log_volume(other, warm_start=first)
    assert warm.log_marginal_likelihood_nats == pytest.approx(
        cold.log_marginal_likelihood_nats, rel=1e-6)
    first = est.log_volume(y, "ep-probit")
    cold = est.log_volume(other, "ep-probit")
    warm = est.log_volume(other, "ep-probit", warm_start=first)
    assert warm.log_marginal_likelihood_nats == pytest.approx(
        cold.log_marginal_likelihood_nats, rel=1e-6)
    assert warm.iterations < cold.iterations
    assert est.log_volume(other, "orthant-is", n_samples=200, warm_start=first).ep_sites \
        is not None


def test_volume_estimator_rejects_a_warm_start_it_cannot_use():
    est = VolumeEstimator(correlated_kernel(30, 9))
    y = np.ones(30)
    laplace = est.log_volume(y, "laplace")
    assert laplace.ep_sites is None
    with pytest.raises(VolumeError, match="warm_start"):
        est.log_volume(y, warm_start=laplace)
    with pytest.raises(VolumeError, match="warm_start"):
        est.log_volume(y, "laplace", warm_start=est.log_volume(y))
    with pytest.raises(VolumeError, match="warm_start"):
        est.leading(20).log_volume(y[:20], warm_start=est.log_volume(y))
