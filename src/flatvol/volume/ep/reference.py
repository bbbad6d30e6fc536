"""The slow reference EP solver for tests: site-by-site updates (Rasmussen & Williams 2006,
Alg. 3.5) with rank-one updates of the dense posterior covariance, O(n^2) per site.

Production never runs it (flatvol.volume.ep.run runs the block solver). It shares only the
moment match and the value formula (sites.site_update, sites.log_marginal) with production, not
the schedule, the running covariance, the Newton steps, the mixed precision or site_value: EP
has one fixed point per label vector, so converged to a tight tol it is the independent check
of the block solver's value and posterior.
"""

from __future__ import annotations

import math

import numpy as np

from flatvol.volume.ep.posterior import posterior_covariance
from flatvol.volume.ep.run import EPResult, Likelihood
from flatvol.volume.ep.sites import (
    MIN_CAVITY_PRECISION,
    Posterior,
    cavity,
    log_marginal,
    noise_for,
    site_update,
)


def sequential_ep(K: np.ndarray, y: np.ndarray, *, likelihood: Likelihood = "probit",
                  noise_var: float | None = None, damping: float = 1.0, tol: float = 1e-3,
                  max_iter: int = 300) -> EPResult:
    """EP from zero sites, one site at a time, until a sweep moves no site by tol or more.

    Args:
        K: (n, n) symmetric positive definite float64 kernel.
        y: (n,) signs in {-1, +1}.
        likelihood: 'probit' or 'step'.
        noise_var: probit's noise variance (None: 1); ignored for step.
        damping: the fraction of each site's move taken, in (0, 1].
        tol: convergence when every site's undamped move in a sweep, in posterior standard
            deviations, is < tol.
        max_iter: the most sweeps.

    Returns:
        EPResult (iterations: sweeps; its value from R&W eq. 3.65 with the dense posterior).

    Raises:
        ValueError: damping outside (0, 1], an unknown likelihood or probit noise_var <= 0.
    """
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    noise = noise_for(likelihood, noise_var)
    n = K.shape[0]
    tau, nu = np.zeros(n), np.zeros(n)
    post = dense_posterior(K, tau, nu)
    converged, change, sweeps, message = False, math.inf, 0, ""
    for sweeps in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        tau_new, nu_new = _sweep(K, y, tau, nu, noise, damping)
        step = np.concatenate([tau_new - tau, nu_new - nu]) / damping
        scale = np.concatenate([post.var, np.sqrt(post.var)])
        if not np.all(np.isfinite(step)):
            message = f"non-finite site update in sweep {sweeps}"
            break
        change = float(np.max(np.abs(step) * scale))
        if change < tol:  # measured at the sweep's start: the sites are those of `post`
            converged = True
            break
        tau, nu = np.maximum(tau_new, 0.0), nu_new
        post = dense_posterior(K, tau, nu)
    else:
        message = f"no convergence after {max_iter} sweeps (site change {change:.2e} > {tol:g})"
    cav_mean, cav_var = cavity(post, tau, nu)
    log_Z, _, _ = site_update(y, cav_mean, cav_var, noise)
    value = log_marginal(log_Z, cav_mean, cav_var, tau, nu, post)
    return EPResult(log_marginal_likelihood=value, converged=converged, iterations=sweeps,
                    likelihood=likelihood, noise_var=noise, damping=damping, max_change=change,
                    site_precision=tau, site_natural_mean=nu, posterior_mean=post.mean,
                    posterior_var=post.var, message=message)


def dense_posterior(K: np.ndarray, tau: np.ndarray, nu: np.ndarray) -> Posterior:
    """Posterior marginals and log det(I + S^1/2 K S^1/2) of the sites, from the dense
    covariance (posterior_covariance) and one slogdet: plain, not fast.

    Args:
        K: (n, n) kernel.
        tau, nu: site precisions (>= 0) and natural means.

    Returns:
        The Posterior.
    """
    sigma = posterior_covariance(K, tau)
    sq = np.sqrt(tau)
    _, logdet_B = np.linalg.slogdet(np.eye(tau.size) + sq[:, None] * K * sq[None, :])
    return Posterior(sigma @ nu, np.maximum(np.diag(sigma).copy(), 1e-300), float(logdet_B))


def _sweep(K: np.ndarray, y: np.ndarray, tau: np.ndarray, nu: np.ndarray, noise: float,
           damping: float) -> tuple[np.ndarray, np.ndarray]:
    """One sweep of site-by-site EP (R&W Alg. 3.5) with rank-one posterior updates."""
    tau, nu = tau.copy(), nu.copy()
    Sigma = posterior_covariance(K, tau)
    mu = Sigma @ nu
    for i in range(K.shape[0]):
        s_ii = Sigma[i, i]
        cav_prec = max(1.0 / s_ii - tau[i], MIN_CAVITY_PRECISION)
        cav_var = 1.0 / cav_prec
        cav_mean = (mu[i] / s_ii - nu[i]) * cav_var
        _, t_new, n_new = site_update(
            y[i : i + 1], np.array([cav_mean]), np.array([cav_var]), noise
        )
        d_tau = damping * (t_new[0] - tau[i])
        d_nu = damping * (n_new[0] - nu[i])
        tau[i] += d_tau
        nu[i] += d_nu
        column = Sigma[:, i].copy()
        c = d_tau / (1.0 + d_tau * s_ii)
        # mu_new = Sigma_new nu_new, written as an update of mu (GPy's posteriorParams form)
        mu = mu - (c * (mu[i] + s_ii * d_nu) - d_nu) * column
        Sigma -= c * np.outer(column, column)
    return tau, nu
