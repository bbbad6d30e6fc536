"""P_B(f|S) under the three posteriors of flatvol.volume.predictive, against exact values:
scipy's Genz integration of the shifted orthant (abseps 1e-8, so the tolerances below are the
estimators' own error), exact Gaussian conditioning, and direct sampling of the predictive."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from flatvol.errors import VolumeError
from flatvol.volume import VolumeService
from flatvol.volume.arccos import arccos_kernel
from flatvol.volume.orthant import orthant_importance_sampling, shifted_orthant_probability
from flatvol.volume.predictive import POSTERIORS, posterior_predictive

N_S, N_E = 6, 3


def genz_orthant(cov: np.ndarray, mean: np.ndarray, y: np.ndarray) -> float:
    """P(y z >= 0), z ~ N(mean, cov), by scipy's Genz integration."""
    D = np.diag(y)
    if len(y) == 1:
        return float(stats.norm.cdf(y[0] * mean[0] / math.sqrt(cov[0, 0])))
    return float(stats.multivariate_normal.cdf(np.zeros(len(y)), mean=-(y * mean),
                                               cov=D @ cov @ D, abseps=1e-8, releps=1e-8))


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_S + N_E, 5))
    y_S = np.sign(x[:N_S, 0] + 0.3 * rng.normal(size=N_S))
    return arccos_kernel(x, 2), y_S


@pytest.mark.parametrize("d", [1, 2, 3, 5, 8])
def test_shifted_orthant_matches_genz(d: int):
    rng = np.random.default_rng(d)
    A = rng.normal(size=(d, d))
    cov = A @ A.T / d + 0.5 * np.eye(d)
    mean = 0.8 * rng.normal(size=d)
    y = rng.choice([-1.0, 1.0], size=d)
    est = shifted_orthant_probability(cov, mean, y, n_samples=4000, seed=0)
    truth = math.log10(genz_orthant(cov, mean, y))
    assert est.reliable
    # 4 standard errors of the estimate; Genz's abseps 1e-8 is far below them
    assert abs(est.log_probability / math.log(10) - truth) <= 4 * est.stderr_log10 + 1e-6


def test_shifted_orthant_without_shift_is_the_prior_orthant():
    K = np.eye(4) + 0.3
    y = np.array([1.0, -1.0, 1.0, 1.0])
    plain = orthant_importance_sampling(K, y, proposal="minimax", seed=3)
    shifted = shifted_orthant_probability(K, np.zeros(4), y, seed=3)
    assert shifted.log_probability == plain.log_probability


@pytest.mark.parametrize("posterior, noise, tol", [
    # EP's own error against the exact ratio on this problem: at most 0.030 (step) and 0.0043
    # (probit) log10 over the 8 labellings, plus the 4000-draw sampling error (~1e-3)
    ("ep-orthant", 0.0, 0.06), ("ep-probit", 1.0, 0.012)])
def test_ep_posteriors_against_exact_ratio(problem, posterior: str, noise: float, tol: float):
    K, y_S = problem
    C = K + noise * np.eye(N_S + N_E)
    pred = posterior_predictive(K, y_S, posterior)
    assert pred.converged
    v_S = genz_orthant(C[:N_S, :N_S], np.zeros(N_S), y_S)
    assert pred.log10_v_train == pytest.approx(math.log10(v_S), abs=tol)
    total = 0.0
    for f in itertools.product([-1.0, 1.0], repeat=N_E):
        y = np.r_[y_S, f]
        truth = math.log10(genz_orthant(C, np.zeros(N_S + N_E), y) / v_S)
        value = pred.log10_probability(np.array(f))
        assert value.reliable
        assert value.log10_probability == pytest.approx(truth, abs=tol), f
        total += 10 ** value.log10_probability
    # a posterior: the labellings' probabilities sum to 1 (within the sampling error)
    assert total == pytest.approx(1.0, abs=0.01)


def test_two_stage_and_joint_ep_agree(problem):
    # the joint ratio V(y_S, f_E) / V(y_S) of two EP runs is the other EP reading of P_B
    K, y_S = problem
    pred = posterior_predictive(K, y_S, "ep-orthant")
    service = VolumeService(K)
    f = np.array([1.0, -1.0, 1.0])
    joint = service.conditional(np.r_[y_S, f], N_S).log10_volume_conditional
    assert pred.log10_probability(f).log10_probability == pytest.approx(joint, abs=0.06)


def test_regression_is_exact_conditioning_and_thresholds_at_one_half(problem):
    K, y_S = problem
    pred = posterior_predictive(K, y_S, "gp-regression")
    K_SS, K_ES = K[:N_S, :N_S], K[N_S:, :N_S]
    targets = (y_S + 1) / 2
    mean = K_ES @ np.linalg.solve(K_SS, targets)
    cov = K[N_S:, N_S:] - K_ES @ np.linalg.solve(K_SS, K_ES.T)
    np.testing.assert_allclose(pred.mean, mean, atol=1e-10)
    np.testing.assert_allclose(pred.cov, cov, atol=1e-10)
    rng = np.random.default_rng(1)
    z = rng.multivariate_normal(mean, cov, size=200_000)
    for f in ([1.0, -1.0, 1.0], [-1.0, -1.0, 1.0]):
        hits = np.all(np.sign(z - 0.5) == f, axis=1)
        p = hits.mean()
        se = math.sqrt(p * (1 - p) / hits.size) / (p * math.log(10))
        value = pred.log10_probability(np.array(f), n_samples=8000)
        assert abs(value.log10_probability - math.log10(p)) <= 4 * math.hypot(
            se, value.stderr_log10)


def test_subsets_of_the_points(problem):
    K, y_S = problem
    pred = posterior_predictive(K, y_S, "ep-probit")
    # a subset of E is the predictive of that subset: its marginal
    one = pred.log10_probability(np.array([1.0]), np.array([2]))
    mean, var = pred.mean[2], pred.cov[2, 2] + 1.0
    assert one.log10_probability == pytest.approx(
        math.log10(stats.norm.cdf(mean / math.sqrt(var))), abs=1e-12)


def test_refusals(problem):
    K, y_S = problem
    with pytest.raises(VolumeError, match="posterior: expected one of"):
        posterior_predictive(K, y_S, "laplace")
    with pytest.raises(VolumeError, match="y_S: expected 1..8"):
        posterior_predictive(K, np.ones(N_S + N_E), "ep-orthant")
    pred = posterior_predictive(K, y_S, "gp-regression")
    with pytest.raises(VolumeError, match="points: expected indices in 0..2"):
        pred.log10_probability(np.ones(2), np.array([0, 3]))
    with pytest.raises(VolumeError):
        pred.log10_probability(np.ones(2), np.array([0, 1, 2]))
    assert set(POSTERIORS) == {"ep-orthant", "ep-probit", "gp-regression"}
