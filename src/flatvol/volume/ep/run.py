"""One EP run as production does it: the block solver, its value in float64, and the checks
that decide whether the run can be reported or must be rerun.

Model: z ~ N(0, K) and one likelihood factor per point,
    probit:  t_i(z_i) = Phi(y_i z_i / sqrt(noise_var))   (noise_var = 1 is GPy's Bernoulli/probit),
    step:    t_i(z_i) = 1[y_i z_i > 0]                    (noise_var = 0, the orthant indicator).
EP replaces each factor by an unnormalized Gaussian site (precision tau_i, natural mean nu_i) and
returns log Z_EP, the EP estimate of log  integral N(z; 0, K) prod_i t_i(z_i) dz.
With the probit factors that is the paper's (GPy's) marginal likelihood, which equals the orthant
probability under K + noise_var * I; with step factors it estimates the orthant probability
P(sign z = y) under K itself (Cunningham, Hennig & Lacoste-Julien 2011, "EPMGP").

Both likelihoods run the one solver, flatvol.volume.ep.blocks (block sweeps against one running
posterior covariance, then Newton steps), with its one stopping rule and its one warm start, a
WarmPosterior. The value is computed once, at the end, in float64 from the final sites
(sites.site_value). A warm start that stalls, is non-finite or drifted is rerun from zero sites;
a cold run whose float32 corrections drifted is refit in float64.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from flatvol.volume._numerics import as_kernel, as_signed_labels
from flatvol.volume.ep.blocks import block_sequential_ep, uses_float32, value_rtol
from flatvol.volume.ep.posterior import WarmPosterior, kernel_key
from flatvol.volume.ep.sites import likelihood_update, noise_for, site_value

Likelihood = Literal["probit", "step"]
# The estimators' 'mode' option (flatvol.volume_settings.EP_MODES): both name the one solver;
# 'blocks' is kept so that specs and scripts naming it stay valid.
Mode = Literal["auto", "blocks"]

# A warm start gets this many sweeps at most before it counts as stalled and EP restarts from
# zero: warm starts converge in 2-9 sweeps, cold ones in 3-20 (bench/RESULTS.md), so by then a
# cold run is cheaper than the rest of max_iter.
WARM_MAX_ITER = 40


@dataclass(frozen=True)
class EPResult:
    """Outcome of one EP run. Arrays are float64 of length n."""

    log_marginal_likelihood: float  # log Z_EP in nats
    converged: bool
    iterations: int  # sweeps (a Newton step counts as one), of both runs after a retry
    likelihood: str
    noise_var: float
    damping: float  # final damping of the block moves (halved when the site change grows)
    max_change: float  # last largest site move, in posterior standard deviations
    site_precision: np.ndarray  # tau tilde
    site_natural_mean: np.ndarray  # nu tilde
    posterior_mean: np.ndarray
    posterior_var: np.ndarray
    message: str = ""
    # with keep_posterior=True: the posterior covariance, the warm start for another label
    # vector on the same kernel (run_ep(..., warm_posterior=this))
    posterior: WarmPosterior | None = None
    # The warm start failed or could not be vouched for, and this is the result of EP from zero
    # sites instead; retry_reason says why. retry_reason without retried_cold: a cold run whose
    # float32 corrections drifted, refit in float64.
    retried_cold: bool = False
    retry_reason: str = ""
    # largest difference between the posterior mean the run matched its sites against and the
    # float64 one of those sites, in posterior standard deviations (sites.site_value)
    mean_drift: float = 0.0


def run_ep(
    K: np.ndarray,
    y: np.ndarray,
    *,
    likelihood: Likelihood = "probit",
    noise_var: float | None = None,
    tol: float = 1e-3,
    max_iter: int = 300,
    warm_posterior: WarmPosterior | None = None,
    keep_posterior: bool = False,
) -> EPResult:
    """EP on a validated float64 kernel K (n, n) and signs y in {-1, +1}; no input checks.

    The block solver (flatvol.volume.ep.blocks) for either likelihood. Convergence: every
    site's undamped move, in posterior standard deviations, is < tol (log Z_EP is stationary
    at the fixed point: its error is second order in that move), or, for tol >= 1e-4, a small
    Newton step predicts the value within blocks.value_rtol(tol) relative. The value is
    computed once, at the end, in float64 from the final sites (sites.site_value), whatever
    precision the run used. A warm start that does not converge within WARM_MAX_ITER sweeps,
    gives non-finite numbers or drifted (`warm_start_failure`) is replaced by a run from zero
    sites (EPResult.retried_cold, retry_reason; iterations then count both runs). A cold run
    whose float32 corrections drifted (`drift_failure`) is refit with float64 corrections
    (retry_reason set, retried_cold not). EP has one fixed point per label vector, so a warm
    start changes the value only within the tolerance.

    Args:
        K: (n, n) symmetric positive definite float64 kernel.
        y: (n,) signs in {-1, +1}.
        likelihood: 'probit' or 'step'.
        noise_var: probit's noise variance (None: 1); ignored for step.
        tol: the convergence tolerance (above).
        max_iter: the most sweeps (a Newton step counts as one).
        warm_posterior: a posterior of the same kernel (EPResult.posterior of an earlier run
            with keep_posterior=True, either likelihood): the run starts from its sites and
            covariance and moves only what the new labels change (bench/RESULTS.md).
        keep_posterior: return the posterior covariance in EPResult.posterior (one more n x n
            float64 array in memory).

    Returns:
        EPResult; its posterior (with keep_posterior) is the warm start of the next run.

    Raises:
        ValueError: an unknown likelihood, probit noise_var <= 0, or a warm_posterior of
            another kernel.
    """
    noise = noise_for(likelihood, noise_var)
    n = K.shape[0]
    if warm_posterior is not None and (warm_posterior.n != n
                                       or warm_posterior.kernel_key != kernel_key(K)):
        raise ValueError(f"warm_posterior belongs to another kernel ({warm_posterior.n} "
                         f"points), not this one ({n} points)")
    if warm_posterior is None:
        return _run_cold(K, y, likelihood, noise, tol, max_iter, keep_posterior)
    warm = _run_once(K, y, likelihood, noise, tol, min(max_iter, WARM_MAX_ITER),
                     warm_posterior, keep_posterior)
    reason = warm_start_failure(warm, tol)
    if not reason:
        return warm
    cold = _run_cold(K, y, likelihood, noise, tol, max_iter, keep_posterior)
    # the cost of both runs is reported
    return dataclasses.replace(cold, iterations=warm.iterations + cold.iterations,
                               retried_cold=True, retry_reason=reason + "; reran from zero "
                               "sites" + (f"; {cold.retry_reason}" if cold.retry_reason else ""))


def _run_cold(K: np.ndarray, y: np.ndarray, likelihood: str, noise: float, tol: float,
              max_iter: int, keep_posterior: bool) -> EPResult:
    """EP from zero sites; a run whose float32 corrections drifted (`drift_failure`) is refit
    with float64 ones (about twice the cost of its updates)."""
    fit = _run_once(K, y, likelihood, noise, tol, max_iter, None, keep_posterior)
    if not uses_float32(K.shape[0], tol):
        return fit
    reason = drift_failure(fit, tol)
    if not reason:
        return fit
    refit = _run_once(K, y, likelihood, noise, tol, max_iter, None, keep_posterior,
                      mixed_precision=False)
    return dataclasses.replace(refit, iterations=fit.iterations + refit.iterations,
                               retry_reason=reason + "; refit with float64 corrections")


def drift_failure(result: EPResult, tol: float) -> str:
    """Why a result's sites cannot be vouched for by the drift of its running posterior ("" if
    they can).

    The test is cheap (site_value computes the float64 mean anyway) and sound to second
    order: the sites were moment-matched against a mean that was off by up to `mean_drift`
    posterior standard deviations, so each site sits about that far (in the units of tol) from
    the float64 fixed point; log Z_EP is stationary there with a curvature of order one per
    site in these units, so its error is at most about n * mean_drift^2 (measured errors were
    below 1e-2 of it). Past what the stop rule promises, value_rtol(tol) |log Z_EP|, the
    result is refused. A full reference run as the check would cost more than EP itself.

    Args:
        result: a finished run.
        tol: its convergence tolerance.

    Returns:
        The reason, or "".
    """
    value = result.log_marginal_likelihood
    scale = max(abs(value), 1.0) if math.isfinite(value) else 1.0
    bound = result.site_precision.size * result.mean_drift**2  # inf: no float64 factor
    if bound > value_rtol(tol) * scale:
        return (f"the running posterior drifted {result.mean_drift:.2g} posterior standard "
                f"deviations from the float64 one (value error up to ~{bound:.2g})")
    return ""


def warm_start_failure(result: EPResult, tol: float) -> str:
    """Why a warm-started EP result cannot be reported (empty if it can): not converged
    within WARM_MAX_ITER (stalled), a non-finite value or sites, or a drifted posterior
    (`drift_failure`: a warm run puts every change into one correction of a shared posterior,
    float32 from blocks.MIXED_MIN_N on, and on ill-conditioned Monte-Carlo kernels it drifts
    most).

    Args:
        result: the warm-started run.
        tol: its convergence tolerance.

    Returns:
        The reason for a cold retry, or "".
    """
    if not result.converged:
        return f"warm start did not converge ({result.message or 'no reason given'})"
    if not (math.isfinite(result.log_marginal_likelihood)
            and np.all(np.isfinite(result.site_precision))
            and np.all(np.isfinite(result.site_natural_mean))):
        return "warm start gave a non-finite value or sites"
    reason = drift_failure(result, tol)
    return f"warm start: {reason}" if reason else ""


def _run_once(K: np.ndarray, y: np.ndarray, likelihood: str, noise: float, tol: float,
              max_iter: int, warm_posterior: WarmPosterior | None, keep_posterior: bool,
              mixed_precision: bool = True) -> EPResult:
    """One block-solver run (run_ep's arguments, validated), no retry; its value in float64
    from the final sites (never accumulated along the run), plus the last Newton step's
    predicted change when EP stopped on it (blocks)."""
    update = likelihood_update(noise)
    fit = block_sequential_ep(K, y, update, tol=tol, max_sweeps=max_iter,
                              init_posterior=warm_posterior, keep_posterior=keep_posterior,
                              mixed_precision=mixed_precision)
    value = site_value(K, y, fit.site_precision, fit.site_natural_mean, fit.posterior_var,
                       fit.posterior_mean, update)
    log_ml = value.log_marginal + fit.value_correction
    converged, message = fit.converged, fit.message
    if not math.isfinite(log_ml):
        converged = False
        message = message or "log marginal likelihood is not finite"
    return EPResult(
        log_marginal_likelihood=log_ml, converged=converged, iterations=fit.sweeps,
        likelihood=likelihood, noise_var=noise, damping=fit.damping,
        max_change=fit.max_change, site_precision=fit.site_precision,
        site_natural_mean=fit.site_natural_mean, posterior_mean=value.mean,
        posterior_var=fit.posterior_var, message=message, posterior=fit.posterior,
        mean_drift=value.mean_drift,
    )


def expectation_propagation(
    kernel: np.ndarray,
    labels: np.ndarray,
    *,
    likelihood: Likelihood = "probit",
    noise_var: float | None = None,
    tol: float = 1e-3,
    max_iter: int = 300,
) -> EPResult:
    """EP with input checks: kernel (n, n) symmetric PD, labels in {0,1} or {-1,+1}.

    See `run_ep` for the algorithm; use `flatvol.volume.VolumeEstimator` to reuse a kernel's
    validation and factorization across many label vectors.

    Args:
        kernel: Prior covariance, symmetric positive definite, shape (n, n).
        labels: Labels in {0, 1} or {-1, +1}, shape (n,).
        likelihood: Site likelihood, 'probit' (default) or 'step'.
        noise_var: Likelihood noise variance (None for the likelihood's default).
        tol: Convergence tolerance on the site parameters.
        max_iter: Maximum number of EP sweeps.

    Returns:
        The EPResult (log marginal likelihood, convergence information, site parameters).
    """
    K = as_kernel(kernel)
    y = as_signed_labels(labels, K.shape[0])
    return run_ep(K, y, likelihood=likelihood, noise_var=noise_var, tol=tol, max_iter=max_iter)
