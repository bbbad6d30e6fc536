"""EP (probit and step likelihoods) against closed forms, quadrature and its own fixed point."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from flatvol.errors import VolumeError
from flatvol.volume import expectation_propagation, orthant_probability_closed_form
from flatvol.volume.ep.posterior import posterior_covariance
from flatvol.volume.ep.reference import dense_posterior, sequential_ep


def random_kernel(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n + 2))
    return A @ A.T / n + 0.1 * np.eye(n)


def kernel_2d(rho: float, v1: float = 2.0, v2: float = 3.0) -> np.ndarray:
    c = rho * math.sqrt(v1 * v2)
    return np.array([[v1, c], [c, v2]])


@pytest.mark.parametrize("y", [1, -1, 0])
@pytest.mark.parametrize("k", [0.3, 2.3, 40.0])
def test_n1_probit_is_exact_against_quadrature(k, y):
    sign = 1 if y == 1 else -1
    exact, _ = integrate.quad(
        lambda f: stats.norm.pdf(f, 0, math.sqrt(k)) * stats.norm.cdf(sign * f), -60, 60)
    res = expectation_propagation([[k]], [y], likelihood="probit")
    assert res.converged
    assert res.log_marginal_likelihood == pytest.approx(math.log(exact), abs=1e-9)
    # probit with noise 1 is the orthant probability under K + 1: for n=1 that is 1/2 again
    assert res.log_marginal_likelihood == pytest.approx(math.log(0.5), abs=1e-9)


def test_n1_probit_with_a_mean_shift_uses_the_noise_variance():
    # Phi(f / sqrt(s)) for s = 0.25: integral of N(f;0,k) Phi(f/0.5) = 1/2 as well; check that
    # tilted moments, not just log Z, match quadrature
    k, s = 1.7, 0.25
    res = expectation_propagation([[k]], [1], likelihood="probit", noise_var=s)
    w = lambda f: stats.norm.pdf(f, 0, math.sqrt(k)) * stats.norm.cdf(f / math.sqrt(s))  # noqa: E731
    z, _ = integrate.quad(w, -40, 40)
    mean = integrate.quad(lambda f: f * w(f), -40, 40)[0] / z
    var = integrate.quad(lambda f: f * f * w(f), -40, 40)[0] / z - mean**2
    assert res.posterior_mean[0] == pytest.approx(mean, rel=1e-8)
    assert res.posterior_var[0] == pytest.approx(var, rel=1e-8)


@pytest.mark.parametrize("k", [0.5, 3.0])
def test_n1_step_is_exactly_one_half(k):
    for y in (1, -1):
        res = expectation_propagation([[k]], [y], likelihood="step")
        assert res.converged
        assert res.log_marginal_likelihood == pytest.approx(math.log(0.5), abs=1e-9)


@pytest.mark.parametrize("rho", [-0.95, -0.5, 0.0, 0.3, 0.8, 0.95])
@pytest.mark.parametrize("y", [(1, 1), (1, -1), (-1, -1)])
def test_n2_step_ep_against_arcsine_law(rho, y):
    K = kernel_2d(rho)
    exact = math.log(orthant_probability_closed_form(K, y))
    assert exact == pytest.approx(
        math.log(0.25 + math.asin(rho * y[0] * y[1]) / (2 * math.pi)), abs=1e-12)
    res = expectation_propagation(K, y, likelihood="step", tol=1e-8)
    assert res.converged
    # EP is an approximation for n >= 2; stated tolerance 0.06 nats for |rho| <= 0.95
    # (measured error: 0 at rho = 0, up to 0.048 at rho = 0.95 with equal signs).
    assert abs(res.log_marginal_likelihood - exact) < 0.06
    if rho == 0.0:
        assert res.log_marginal_likelihood == pytest.approx(exact, abs=1e-9)


@pytest.mark.parametrize("rho", [-0.9, 0.0, 0.6, 0.95])
def test_n2_probit_against_quadrature(rho):
    K = kernel_2d(rho)
    y = np.array([1.0, -1.0])
    # integral N(f; 0, K) Phi(y1 f1) Phi(y2 f2) df: integrate f2 analytically given f1
    # (f2 | f1 ~ N(c f1, v), and E Phi(y2 f2) = Phi(y2 c f1 / sqrt(1 + v))), f1 by quadrature.
    c = K[0, 1] / K[0, 0]
    v = K[1, 1] - K[0, 1] ** 2 / K[0, 0]

    def integrand(f1):
        return (stats.norm.pdf(f1, 0, math.sqrt(K[0, 0])) * stats.norm.cdf(y[0] * f1)
                * stats.norm.cdf(y[1] * c * f1 / math.sqrt(1 + v)))

    exact, _ = integrate.quad(integrand, -60, 60, epsabs=1e-13, limit=200)
    # ... which is the orthant probability of K + I (the arcsine law)
    assert exact == pytest.approx(orthant_probability_closed_form(K + np.eye(2), y), rel=1e-9)
    res = expectation_propagation(K, y, likelihood="probit", tol=1e-8)
    assert res.converged
    # EP approximation; stated tolerance 0.01 nats (measured <= 0.006 for |rho| <= 0.95)
    assert abs(res.log_marginal_likelihood - math.log(exact)) < 0.01


@pytest.mark.parametrize("likelihood", ["probit", "step"])
def test_fixed_point_matches_tilted_moments_by_quadrature(likelihood):
    # At convergence each posterior marginal equals its tilted distribution
    # cavity(z_i) * t_i(z_i), computed here by 1-D quadrature: an exact property of EP.
    K = random_kernel(6, seed=3)
    y = np.array([1, -1, 1, 1, -1, 1.0])
    res = expectation_propagation(K, y, likelihood=likelihood, tol=1e-10)
    assert res.converged
    cav_prec = 1 / res.posterior_var - res.site_precision
    cav_var = 1 / cav_prec
    cav_mean = (res.posterior_mean / res.posterior_var - res.site_natural_mean) * cav_var
    for i in range(6):
        m, s = cav_mean[i], math.sqrt(cav_var[i])
        if likelihood == "probit":
            def lik(f, i=i):
                return stats.norm.cdf(y[i] * f)
        else:
            def lik(f, i=i):
                return float(y[i] * f > 0)
        lo, hi = (0.0, m + 12 * s) if (likelihood == "step" and y[i] > 0) else (m - 12 * s, 0.0)
        if likelihood == "probit":
            lo, hi = m - 12 * s, m + 12 * s

        def moment(p, lik=lik, m=m, s=s, lo=lo, hi=hi):
            return integrate.quad(lambda f: f**p * stats.norm.pdf(f, m, s) * lik(f), lo, hi,
                                  epsabs=1e-13, limit=200)[0]

        z = moment(0)
        mean = moment(1) / z
        var = moment(2) / z - mean**2
        assert res.posterior_mean[i] == pytest.approx(mean, rel=1e-6, abs=1e-8)
        assert res.posterior_var[i] == pytest.approx(var, rel=1e-6)


@pytest.mark.parametrize("likelihood", ["probit", "step"])
def test_the_solver_and_the_sequential_reference_reach_the_same_fixed_point(likelihood):
    K = random_kernel(30, seed=1)
    y = np.random.default_rng(2).choice([-1.0, 1.0], 30)
    par = expectation_propagation(K, y, likelihood=likelihood, tol=1e-9)
    seq = sequential_ep(K, y, likelihood=likelihood, tol=1e-9)
    assert par.converged and seq.converged
    assert par.log_marginal_likelihood == pytest.approx(seq.log_marginal_likelihood, abs=1e-7)
    np.testing.assert_allclose(par.posterior_mean, seq.posterior_mean, rtol=1e-6, atol=1e-8)


def test_reference_posterior_matches_dense_inverse():
    K = random_kernel(12, seed=5)
    rng = np.random.default_rng(6)
    tau = rng.uniform(0, 3, 12)
    tau[[1, 4]] = [1e-9, 0.0]  # flat and nearly flat sites
    tau[7] = 1e6  # a very precise site
    nu = rng.standard_normal(12)
    post = dense_posterior(K, tau, nu)
    Sigma = np.linalg.inv(np.linalg.inv(K) + np.diag(tau))
    np.testing.assert_allclose(post.var, np.diag(Sigma), rtol=1e-7)
    np.testing.assert_allclose(post.mean, Sigma @ nu, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(posterior_covariance(K, tau), Sigma, rtol=1e-6, atol=1e-10)
    sq = np.sqrt(tau)
    assert post.logdet_B == pytest.approx(
        np.linalg.slogdet(np.eye(12) + sq[:, None] * K * sq[None, :])[1], rel=1e-12)


def test_far_tail_sites_stay_finite():
    # A function against the kernel's strong correlations pushes cavities deep into the wrong
    # side of the step (site precisions >> 1/K_ii); everything must stay finite and the
    # solver and the sequential reference must still agree.
    x = np.linspace(-1, 1, 40)
    K = np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / 0.5**2) + 1e-6 * np.eye(40)
    y = np.where(np.arange(40) % 2 == 0, 1.0, -1.0)  # alternating signs on a smooth kernel
    par = expectation_propagation(K, y, likelihood="step", tol=1e-6)
    seq = sequential_ep(K, y, likelihood="step", tol=1e-6)
    assert par.converged and seq.converged
    assert np.max(par.site_precision) > 1e4
    assert math.isfinite(par.log_marginal_likelihood)
    assert par.log_marginal_likelihood == pytest.approx(seq.log_marginal_likelihood, abs=1e-6)
    assert par.log_marginal_likelihood < 20 * math.log(0.5)  # far below independent signs


def test_non_convergence_is_reported_not_nan():
    K = random_kernel(20, seed=0)
    y = np.random.default_rng(0).choice([0, 1], 20)
    res = expectation_propagation(K, y, likelihood="step", max_iter=2)
    assert not res.converged
    assert "no convergence" in res.message
    assert math.isfinite(res.log_marginal_likelihood)


def test_bad_labels_and_kernels_are_rejected():
    K = random_kernel(3, seed=0)
    with pytest.raises(VolumeError, match=r"\{0,1\} or \{-1,\+1\}"):
        expectation_propagation(K, [0, 1, 2])
    with pytest.raises(VolumeError, match=r"\{0,1\} or \{-1,\+1\}"):
        expectation_propagation(K, [0, -1, 1])
    with pytest.raises(VolumeError, match="expected 3 labels"):
        expectation_propagation(K, [0, 1])
    with pytest.raises(VolumeError, match="square"):
        expectation_propagation(np.ones((3, 2)), [0, 1, 1])
    with pytest.raises(ValueError, match="likelihood"):
        expectation_propagation(K, [0, 1, 1], likelihood="logit")
    with pytest.raises(ValueError, match="noise_var > 0"):
        expectation_propagation(K, [0, 1, 1], noise_var=0.0)
    with pytest.raises(ValueError, match="damping"):
        sequential_ep(K, np.ones(3), damping=0.0)
