"""Orthant-probability importance sampling against closed forms and scipy's Genz integration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from flatvol.volume import orthant_importance_sampling, orthant_probability_closed_form
from flatvol.volume.orthant import _ordered_cholesky, summarize_log_weights


def random_kernel(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n + 2))
    return A @ A.T / n + 0.1 * np.eye(n)


def test_n1_closed_form_and_estimate():
    assert orthant_probability_closed_form([[2.0]], [0]) == 0.5
    # one site, prior proposal: GHK samples the exact truncated prior, so every weight is 1/2
    exact = orthant_importance_sampling([[2.0]], [1], n_samples=2000, proposal="prior")
    assert exact.log_probability == pytest.approx(math.log(0.5), abs=1e-12)
    assert exact.stderr_log10 < 1e-10
    est = orthant_importance_sampling([[2.0]], [-1], n_samples=2000, proposal="ep")
    assert abs(est.log_probability - math.log(0.5)) / math.log(10) < 4 * est.stderr_log10


@pytest.mark.parametrize("rho", [-0.99, -0.6, 0.0, 0.4, 0.9, 0.999])
@pytest.mark.parametrize("proposal", ["ep", "minimax", "prior", "auto"])
def test_n2_estimate_within_standard_errors_of_arcsine_law(rho, proposal):
    K = np.array([[1.5, rho * math.sqrt(1.5 * 0.7)], [rho * math.sqrt(1.5 * 0.7), 0.7]])
    for y in ([1, 1], [1, -1]):
        exact = 0.25 + math.asin(rho * y[0] * y[1]) / (2 * math.pi)
        assert orthant_probability_closed_form(K, y) == pytest.approx(exact, rel=1e-12)
        est = orthant_importance_sampling(K, y, n_samples=4000, seed=1, proposal=proposal)
        err = abs(est.log_probability - math.log(exact)) / math.log(10)
        assert err < 4 * est.stderr_log10 + 1e-9, (rho, y, est)
        assert est.stderr_log10 < (0.05 if proposal == "prior" else 0.02)


@pytest.mark.parametrize("proposal", ["ep", "minimax", "auto"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_scipy_genz_integration_n8(seed, proposal):
    K = random_kernel(8, seed)
    y = np.random.default_rng(seed + 10).choice([-1.0, 1.0], 8)
    # P(y_i z_i > 0 for all i) = P(w <= 0), w = -diag(y) z ~ N(0, D K D)
    D = np.diag(-y)
    genz = stats.multivariate_normal.cdf(
        np.zeros(8), np.zeros(8), D @ K @ D, abseps=1e-9, releps=1e-5, maxpts=500_000,
        rng=np.random.default_rng(0))
    est = orthant_importance_sampling(K, y, n_samples=8000, seed=2, proposal=proposal)
    diff = abs(est.log_probability - math.log(genz)) / math.log(10)
    assert diff < 4 * est.stderr_log10 + 2e-3, (genz, est)
    assert est.effective_sample_size > 1000
    assert proposal == "auto" or est.proposal == proposal


def test_same_seed_same_estimate_and_seeds_differ():
    K = random_kernel(10, 4)
    y = np.ones(10)
    a = orthant_importance_sampling(K, y, n_samples=500, seed=3)
    b = orthant_importance_sampling(K, y, n_samples=500, seed=3)
    c = orthant_importance_sampling(K, y, n_samples=500, seed=4)
    assert a == b
    assert a.log_probability != c.log_probability


def test_weight_summary_matches_direct_mean():
    rng = np.random.default_rng(0)
    log_w = rng.normal(-50, 1.0, 1000)
    est = summarize_log_weights(log_w, "ep")
    w = np.exp(log_w + 50)
    assert est.log_probability == pytest.approx(math.log(w.mean()) - 50, rel=1e-12)
    rel_se = w.std(ddof=1) / math.sqrt(w.size) / w.mean()
    assert est.stderr_log10 == pytest.approx(rel_se / math.log(10), rel=1e-10)
    assert est.effective_sample_size == pytest.approx(w.sum() ** 2 / (w * w).sum())


def test_minimax_n1_is_exact_and_ordered_cholesky_factorizes_the_permuted_kernel():
    est = orthant_importance_sampling([[0.7]], [0], n_samples=300, proposal="minimax")
    assert est.log_probability == pytest.approx(math.log(0.5), abs=1e-12)
    K = random_kernel(9, 3)
    L, perm = _ordered_cholesky(K)
    np.testing.assert_allclose(L @ L.T, K[np.ix_(perm, perm)], rtol=1e-10, atol=1e-12)
    assert np.allclose(L, np.tril(L)) and sorted(perm.tolist()) == list(range(9))


def test_auto_draws_only_from_proposals_whose_error_bar_holds():
    # A smooth kernel, alternating signs and a step: the EP Gaussian is much narrower than K
    # here (tail index bound ~1 > 1/2), so its weights have no variance and its error bar
    # cannot hold; 'auto' then draws from the tilted proposal alone (bounded weights), with
    # no pilot, so it is the 'minimax' estimate itself.
    x = np.linspace(-1, 1, 24)
    K = np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2) + 1e-3 * np.eye(24)
    for y in (np.where(np.arange(24) % 2 == 0, 1.0, -1.0), (x > 0).astype(float)):
        est = {p: orthant_importance_sampling(K, y, n_samples=2000, seed=5, proposal=p)
               for p in ("ep", "minimax", "auto")}
        assert est["ep"].tail_index_bound > 0.5 and not est["ep"].reliable
        assert est["auto"] == est["minimax"] and est["auto"].reliable
