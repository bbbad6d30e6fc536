"""orthant-is error bars: Pareto k-hat diagnostic and coverage of exact values (issue #13)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from flatvol.volume import orthant_importance_sampling
from flatvol.volume.orthant import (
    PARETO_K_RELIABLE,
    OrthantEstimate,
    gaussian_ratio_tail_index,
    pareto_tail_shape,
    summarize_log_weights,
)


@pytest.mark.parametrize(("shape", "low", "high"), [
    (-0.5, -0.8, -0.2), (0.0, -0.25, 0.25), (0.5, 0.3, 0.75), (1.0, 0.75, 1.3),
])
def test_k_hat_recovers_generalized_pareto_shape(shape, low, high):
    # Median over seeds of k-hat on 4000 GPD draws (tail of 190): within its sampling spread.
    k = [pareto_tail_shape(np.log(stats.genpareto.rvs(shape, size=4000, random_state=s)))
         for s in range(7)]
    assert low < float(np.median(k)) < high, k


def test_k_hat_separates_light_and_heavy_lognormal_weights():
    rng = np.random.default_rng(0)
    assert pareto_tail_shape(rng.normal(0.0, 0.5, 4000)) < 0.3  # light: sample se is fine
    assert pareto_tail_shape(rng.normal(0.0, 4.0, 4000)) > PARETO_K_RELIABLE  # ESS ~ 1
    assert pareto_tail_shape(np.zeros(4000)) == -math.inf  # equal weights: no tail at all
    assert pareto_tail_shape(np.zeros(10)) == math.inf  # too few to judge


def test_summary_reports_k_hat_and_reliability():
    rng = np.random.default_rng(1)
    light = summarize_log_weights(rng.normal(-30, 0.5, 2000), "minimax")
    heavy = summarize_log_weights(rng.normal(-30, 5.0, 2000), "minimax")
    assert light.reliable and light.pareto_k < 0.3
    assert not heavy.reliable and heavy.pareto_k > PARETO_K_RELIABLE
    assert not summarize_log_weights(np.full(100, -np.inf), "ep").reliable
    # the field has a default so existing constructions keep working
    assert math.isnan(OrthantEstimate(0.0, 0.0, 1, 1.0, "prior").pareto_k)


def test_error_bar_covers_exact_values_over_seeds():
    # n = 7 correlated kernels (equicorrelation 0.6 plus noise), random labels: |error| within
    # 2 reported standard errors in most of 20 seeds (95% for a Gaussian error; >= 15/20 here).
    covered, ratios = 0, []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        A = rng.standard_normal((7, 3))
        K = 0.6 + 0.4 * np.eye(7) + 0.3 * A @ A.T / 3
        y = rng.choice([-1.0, 1.0], 7)
        D = np.diag(-y)
        exact = stats.multivariate_normal.cdf(np.zeros(7), np.zeros(7), D @ K @ D,
                                              abseps=1e-12, releps=1e-5, maxpts=100_000,
                                              rng=np.random.default_rng(0))
        est = orthant_importance_sampling(K, y, n_samples=1000, seed=seed)
        ratio = abs(est.log_probability - math.log(exact)) / math.log(10) / est.stderr_log10
        ratios.append(ratio)
        covered += ratio <= 2.0
        assert est.reliable
    assert covered >= 15, ratios
    assert np.median(ratios) < 1.2, ratios  # not so wide that coverage is vacuous


@pytest.mark.parametrize("ratio", [0.36, 0.8])
def test_gaussian_ratio_tail_index_matches_the_weights_tail(ratio):
    # target N(0, 1), proposal N(0, ratio): w = N(z; 0, 1) / N(z; 0, ratio) has tail index
    # 1 - ratio (0.64: no variance; 0.2: finite); k-hat of 200,000 weights (tail of 1342) agrees
    # within its sampling spread, and the 2-d bound takes the narrowest direction.
    z = np.random.default_rng(0).normal(0.0, math.sqrt(ratio), 200_000)
    log_w = stats.norm.logpdf(z) - stats.norm.logpdf(z, scale=math.sqrt(ratio))
    bound = gaussian_ratio_tail_index(np.eye(1), np.sqrt([[ratio]]))
    assert bound == pytest.approx(1.0 - ratio, abs=1e-12)
    assert abs(pareto_tail_shape(log_w) - bound) < 0.08
    K = np.array([[2.0, 0.5], [0.5, 1.0]])
    two_d = gaussian_ratio_tail_index(np.linalg.cholesky(K), np.linalg.cholesky(ratio * K))
    assert two_d == pytest.approx(1.0 - ratio, abs=1e-12)


def test_estimate_is_unreliable_when_the_proposal_has_no_variance():
    light = OrthantEstimate(-3.0, 0.01, 4000, 2000.0, "ep", pareto_k=0.3, tail_index_bound=0.4)
    heavy = OrthantEstimate(-3.0, 0.01, 4000, 2000.0, "ep", pareto_k=0.3, tail_index_bound=0.6)
    assert light.reliable and not heavy.reliable
    # bounded weights (the default: tilted and prior proposals) leave it to k-hat
    assert OrthantEstimate(-3.0, 0.01, 4000, 2000.0, "minimax", pareto_k=0.3).reliable
