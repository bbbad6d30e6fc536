"""Newton steps on the EP fixed point, float32 corrections and warm starts from a posterior
(flatvol.volume.ep.newton, flatvol.volume.ep.blocks), against independent references: the exact
posterior by a fresh factorization, finite differences, and EP converged far past the default
tolerance in float64 without Newton steps."""

from __future__ import annotations

import numpy as np
import pytest

from flatvol.errors import VolumeError
from flatvol.volume import VolumeEstimator, VolumeService, arccos_kernel
from flatvol.volume.ep import blocks as ep_blocks
from flatvol.volume.ep import run_ep
from flatvol.volume.ep.blocks import block_sequential_ep
from flatvol.volume.ep.newton import marginal_change, newton_step
from flatvol.volume.ep.posterior import posterior_covariance
from flatvol.volume.ep.sites import Posterior, cavity, log_marginal, site_update


def nngp_kernel(n: int, seed: int, dim: int = 30) -> np.ndarray:
    x = np.random.default_rng(seed).random((n, dim))
    return arccos_kernel(x, n_hidden=2, sigma_w2=2.0, sigma_b2=1.0)


def network_like(n: int, seed: int, error: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.where(rng.random((n, 30)).mean(axis=1) > 0.5, 1.0, -1.0)
    return np.where(rng.random(n) < error, -y, y)


def flip(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = y.copy()
    idx = rng.choice(y.size, int(fraction * y.size), replace=False)
    out[idx] = -out[idx]
    return out


def step_update(y, cav_mean, cav_var):
    return site_update(y, cav_mean, cav_var, 0.0)


def exact_marginals(K, tau, nu):
    sigma = posterior_covariance(K, tau)
    return sigma, np.diag(sigma).copy(), sigma @ nu


def value_at(K, y, tau, nu):
    """log Z_EP of given sites from a fresh factorization (R&W eq. 3.65)."""
    sigma, var, mean = exact_marginals(K, tau, nu)
    sq = np.sqrt(tau)
    B = np.eye(K.shape[0]) + sq[:, None] * K * sq[None, :]
    logdet = np.linalg.slogdet(B)[1]
    post = Posterior(mean, var, logdet)
    cav_mean, cav_var = cavity(post, tau, nu)
    log_Z, _, _ = site_update(y, cav_mean, cav_var, 0.0)
    return log_marginal(log_Z, cav_mean, cav_var, tau, nu, post), sigma, var, mean, logdet


def converged_reference(K, y):
    """Float64 sweeps without Newton steps, sites converged to 1e-9."""
    fit = block_sequential_ep(K, y, step_update, tol=1e-9, max_sweeps=500, newton=False)
    assert fit.converged
    return fit


def test_marginal_change_matches_finite_differences_of_the_exact_posterior():
    K = nngp_kernel(60, 0)
    rng = np.random.default_rng(1)
    tau, nu = rng.uniform(0.5, 5.0, 60), rng.normal(size=60)
    d_tau, d_nu = rng.normal(size=60), rng.normal(size=60)
    sigma, _, mean = exact_marginals(K, tau, nu)
    d_var, d_mean = marginal_change(mean, d_tau, d_nu, lambda v: sigma @ v,
                                    lambda v: (sigma * sigma) @ v)
    h = 1e-6
    _, var_p, mean_p = exact_marginals(K, tau + h * d_tau, nu + h * d_nu)
    _, var_m, mean_m = exact_marginals(K, tau - h * d_tau, nu - h * d_nu)
    np.testing.assert_allclose(d_var, (var_p - var_m) / (2 * h), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(d_mean, (mean_p - mean_m) / (2 * h), rtol=1e-5, atol=1e-8)


def test_newton_step_moves_to_the_fixed_point_and_predicts_its_value():
    K, y = nngp_kernel(200, 2), network_like(200, 3)
    ref = converged_reference(K, y)
    target, *_ = value_at(K, y, ref.site_precision, ref.site_natural_mean)
    rng = np.random.default_rng(4)
    tau = ref.site_precision * np.exp(0.05 * rng.normal(size=200))
    nu = ref.site_natural_mean + 0.05 * np.sqrt(ref.site_precision) * rng.normal(size=200)
    now, sigma, var, mean, logdet = value_at(K, y, tau, nu)

    def value(t, v, var_, mean_, logdet_):
        post = Posterior(mean_, var_, logdet_)
        cm, cv = cavity(post, t, v)
        log_Z, _, _ = site_update(y, cm, cv, 0.0)
        return log_marginal(log_Z, cm, cv, t, v, post)

    step = newton_step(y, tau, nu, var, mean, logdet, lambda v: sigma @ v,
                       lambda v: (sigma * sigma) @ v, step_update, value)
    assert step is not None and step.solved
    scale = np.sqrt(ref.posterior_var)
    before = np.max(np.abs(nu - ref.site_natural_mean) * scale)
    after = np.max(np.abs(step.nu - ref.site_natural_mean) * scale)
    assert after < 0.1 * before  # quadratic convergence: far closer
    error_now = abs(now - target)
    assert error_now > 1e-6 * abs(target)  # the perturbation matters ...
    assert abs(now + step.predicted_change - target) < 0.05 * error_now  # ... and is predicted


CASES = [("nngp-600", 600, 5), ("nngp-700-dim10", 700, 6)]


@pytest.mark.parametrize("name, n, seed", CASES, ids=[c[0] for c in CASES])
def test_default_and_warm_posterior_give_the_converged_value(name, n, seed):
    # n >= MIXED_MIN_N: float32 corrections, Newton steps and the value-based stop all run.
    assert n >= ep_blocks.MIXED_MIN_N
    K = nngp_kernel(n, seed, dim=30 if seed == 5 else 10)
    y = network_like(n, seed + 10)
    ref = converged_reference(K, y)
    exact, *_ = value_at(K, y, ref.site_precision, ref.site_natural_mean)
    cold = run_ep(K, y, likelihood="step")
    assert cold.converged
    assert cold.log_marginal_likelihood == pytest.approx(exact, rel=1e-6)
    for fraction, seed_flip in ((0.03, 1), (0.15, 2)):  # a neighbour; a far reference
        source = run_ep(K, flip(y, fraction, seed_flip), likelihood="step", keep_posterior=True)
        assert source.posterior is not None
        before = source.posterior.sigma.copy()
        warm = run_ep(K, y, likelihood="step", warm_posterior=source.posterior)
        assert warm.converged
        assert warm.log_marginal_likelihood == pytest.approx(exact, rel=1e-6)
        np.testing.assert_array_equal(source.posterior.sigma, before)  # shared, not written
    fit_cold = block_sequential_ep(K, y, step_update, tol=1e-3, max_sweeps=300)
    fit_warm = block_sequential_ep(K, y, step_update, tol=1e-3, max_sweeps=300,
                                   init_posterior=source.posterior)
    assert fit_cold.newton_steps >= 1 and fit_warm.newton_steps >= 1
    assert fit_warm.site_updates < fit_cold.site_updates
    for fit in (fit_cold, fit_warm):  # the reported correction moves toward the fixed point
        plain, *_ = value_at(K, y, fit.site_precision, fit.site_natural_mean)
        if fit.value_correction:
            assert abs(plain + fit.value_correction - exact) < 0.2 * abs(plain - exact)


def test_float32_corrections_give_the_float64_value(monkeypatch):
    K, y = nngp_kernel(600, 7), network_like(600, 8)
    mixed = run_ep(K, y, likelihood="step")
    monkeypatch.setattr(ep_blocks, "MIXED_MIN_N", 10**9)
    double = run_ep(K, y, likelihood="step")
    assert mixed.log_marginal_likelihood == pytest.approx(double.log_marginal_likelihood,
                                                          rel=1e-7)


def test_tight_tolerances_converge_the_sites_themselves():
    # Below VALUE_STOP_MIN_TOL the value alone does not stop EP: the sites reach tol.
    K, y = nngp_kernel(600, 9), network_like(600, 10)
    fit = block_sequential_ep(K, y, step_update, tol=1e-6, max_sweeps=300)
    assert fit.converged and fit.max_change < 1e-6 and fit.value_correction == 0.0


def test_a_warm_posterior_is_refused_on_another_kernel():
    K, other = nngp_kernel(100, 11), nngp_kernel(100, 12)
    y = network_like(100, 13)
    source = run_ep(K, y, likelihood="step", keep_posterior=True)
    with pytest.raises(ValueError, match="another kernel"):
        run_ep(other, y, likelihood="step", warm_posterior=source.posterior)
    kept = VolumeEstimator(K).log_volume(y, keep_posterior=True)
    with pytest.raises(VolumeError, match="another kernel"):
        VolumeEstimator(other).log_volume(y, warm_start=kept)
    with pytest.raises(VolumeError, match="keep_posterior needs"):
        VolumeEstimator(K).log_volume(y, "orthant-is", keep_posterior=True)


def test_service_reference_labels_keep_values_and_do_not_depend_on_order():
    n = 600
    K = nngp_kernel(n, 14)
    truth = network_like(n, 15, error=0.0)
    functions = [flip(truth, f, s) for f, s in ((0.02, 1), (0.1, 2), (0.3, 3))]
    plain = VolumeService(K)
    a = VolumeService(K, reference_labels=(truth + 1) / 2)  # {0, 1} labels are accepted
    b = VolumeService(K, reference_labels=truth)
    values_a = [a.log_volume(f).log_marginal_likelihood_nats for f in functions]
    values_b = [b.log_volume(f).log_marginal_likelihood_nats for f in functions[::-1]][::-1]
    assert values_a == values_b  # the start is the reference's, whatever came before
    for f, value in zip(functions, values_a, strict=True):
        assert value == pytest.approx(plain.log_volume(f).log_marginal_likelihood_nats,
                                      rel=1e-6)
    # V(f on S) (a leading block) and other estimators run as without a reference
    assert (a.log_volume(functions[0][:300], n=300).log_marginal_likelihood_nats
            == plain.log_volume(functions[0][:300], n=300).log_marginal_likelihood_nats)
