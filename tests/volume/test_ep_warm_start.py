"""EP's one warm start, a posterior (run_ep warm_posterior, VolumeEstimator.log_volume
keep_posterior / warm_start): the same value up to the tolerance, fewer sweeps."""

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


@pytest.mark.parametrize("likelihood", ["step", "probit"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_warm_start_from_a_neighbouring_label_vector_keeps_the_value(likelihood, seed):
    K = correlated_kernel(150, seed)
    y = np.sign(np.random.default_rng(seed).standard_normal(150))
    neighbour = flipped(y, 5, seed + 10)
    first = run_ep(K, y, likelihood=likelihood, keep_posterior=True)
    cold = run_ep(K, neighbour, likelihood=likelihood)
    warm = run_ep(K, neighbour, likelihood=likelihood, warm_posterior=first.posterior)
    assert cold.converged and warm.converged and not warm.retried_cold
    assert warm.log_marginal_likelihood == pytest.approx(cold.log_marginal_likelihood, rel=1e-6)
    assert warm.iterations <= cold.iterations


@pytest.mark.parametrize("likelihood", ["step", "probit"])
def test_warm_start_at_the_fixed_point_stops_at_once(likelihood):
    # the first sweep's check passes: the posterior is that of the converged sites
    K = correlated_kernel(80, 3)
    y = np.sign(np.random.default_rng(3).standard_normal(80))
    cold = run_ep(K, y, likelihood=likelihood, tol=1e-6, keep_posterior=True)
    again = run_ep(K, y, likelihood=likelihood, tol=1e-6, warm_posterior=cold.posterior)
    assert again.converged and again.iterations == 1
    assert again.log_marginal_likelihood == pytest.approx(cold.log_marginal_likelihood, rel=1e-9)


def test_a_posterior_of_one_likelihood_warm_starts_the_other():
    # the fixed point is the new likelihood's: only the start differs
    K = correlated_kernel(120, 12)
    y = np.sign(np.random.default_rng(12).standard_normal(120))
    step = run_ep(K, y, likelihood="step", keep_posterior=True)
    cold = run_ep(K, y, likelihood="probit")
    warm = run_ep(K, y, likelihood="probit", warm_posterior=step.posterior)
    assert warm.converged and not warm.retried_cold
    assert warm.log_marginal_likelihood == pytest.approx(cold.log_marginal_likelihood, rel=1e-6)


def test_warm_start_keeps_the_value_against_the_exact_orthant_probability():
    # Small n: the exact orthant probability from scipy's multivariate normal CDF; warm and cold
    # EP agree with each other to 1e-6 and with the truth to EP's own approximation error.
    K = correlated_kernel(5, 4) + 0.5 * np.eye(5)
    y = np.array([1.0, -1.0, 1.0, 1.0, -1.0])
    D = np.diag(y)
    exact = math.log(stats.multivariate_normal.cdf(
        np.zeros(5), np.zeros(5), D @ K @ D, abseps=1e-10, releps=1e-7, maxpts=500_000,
        rng=np.random.default_rng(0)))
    first = run_ep(K, -y, likelihood="step", tol=1e-8, keep_posterior=True)
    cold = run_ep(K, y, likelihood="step", tol=1e-8)
    warm = run_ep(K, y, likelihood="step", tol=1e-8, warm_posterior=first.posterior)
    assert warm.log_marginal_likelihood == pytest.approx(cold.log_marginal_likelihood, rel=1e-6)
    assert abs(warm.log_marginal_likelihood - exact) < 0.1


@pytest.mark.parametrize("estimator", ["ep-orthant", "ep-probit"])
def test_volume_estimator_chains_warm_starts(estimator):
    K = correlated_kernel(120, 7)
    est = VolumeEstimator(K)
    y = (np.random.default_rng(7).random(120) > 0.5).astype(float)
    first = est.log_volume(y, estimator, keep_posterior=True)
    assert first.ep_posterior is not None and first.ep_sites[0].shape == (120,)
    assert "ep_sites" not in first.to_dict() and "ep_posterior" not in first.to_dict()
    json.dumps(first.to_dict())
    other = np.where(flipped(2 * y - 1, 4, 8) > 0, 1.0, 0.0)
    cold = est.log_volume(other, estimator)
    warm = est.log_volume(other, estimator, warm_start=first)
    assert warm.log_marginal_likelihood_nats == pytest.approx(
        cold.log_marginal_likelihood_nats, rel=1e-6)
    assert warm.iterations < cold.iterations


def test_the_orthant_is_pilot_starts_from_a_kept_posterior():
    # Before, its warm start was the sites, which the default mode ignored for step EP.
    K = correlated_kernel(120, 7)
    est = VolumeEstimator(K)
    y = (np.random.default_rng(7).random(120) > 0.5).astype(float)
    first = est.log_volume(y, keep_posterior=True)
    cold = est.log_volume(y, "orthant-is", n_samples=200)
    warm = est.log_volume(y, "orthant-is", n_samples=200, warm_start=first)
    assert warm.iterations == 1 < cold.iterations  # the pilot: one sweep at its fixed point
    assert warm.ep_sites is not None


def test_a_warm_start_without_a_posterior_is_refused():
    # EP has one warm start, the posterior: a result that did not keep one cannot start EP
    est = VolumeEstimator(correlated_kernel(30, 9))
    y = np.ones(30)
    plain = est.log_volume(y)
    assert plain.ep_posterior is None
    for estimator in ("ep-orthant", "ep-probit", "orthant-is"):
        with pytest.raises(VolumeError, match="keep_posterior=True"):
            est.log_volume(y, estimator, warm_start=plain)


def test_volume_estimator_rejects_a_warm_start_it_cannot_use():
    est = VolumeEstimator(correlated_kernel(30, 9))
    y = np.ones(30)
    laplace = est.log_volume(y, "laplace")
    assert laplace.ep_sites is None
    with pytest.raises(VolumeError, match="warm_start"):
        est.log_volume(y, warm_start=laplace)
    with pytest.raises(VolumeError, match="warm_start"):
        est.log_volume(y, "laplace", warm_start=est.log_volume(y, keep_posterior=True))
    with pytest.raises(VolumeError, match="warm_start"):
        est.leading(20).log_volume(y[:20], warm_start=est.log_volume(y, keep_posterior=True))
