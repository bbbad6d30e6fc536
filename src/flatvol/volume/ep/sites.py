"""EP's sites: cavities, the moment match of a site against its likelihood factor, log Z_EP,
and `site_value`, log Z_EP of a run's final sites in float64 (the value every EP run reports).

A likelihood enters EP only through its moment match, a `SiteUpdate`:
    (y_J, cavity mean, cavity variance) -> (log Z_i, new tau_i, new nu_i)
for the sites J: the block solver (flatvol.volume.ep.blocks), its Newton steps and the value
call nothing else, so a new likelihood is a new `SiteUpdate`, not a new solver. Two are here,
`likelihood_update`: probit Phi(y z / sqrt(noise_var)) and the noise-free step 1[y z > 0]
(noise_var = 0). The K-class structured EP (flatvol.volume.ep.multiclass) reuses `cavity`,
`site_update` (its class-difference sites are step sites), `log_marginal` and `anderson_step`.
The numerics follow Rasmussen & Williams (2006) Alg. 3.5/3.6: log_ndtr and a continued
fraction for the far tails, so sites with huge precision (a cavity on the wrong side of a
step) stay finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from flatvol.volume._numerics import truncated_gaussian_terms

MIN_CAVITY_PRECISION = 1e-300

# (y_J, cavity mean, cavity variance) -> (log Z_J, tau_J, nu_J): a likelihood's moment match.
SiteUpdate = Callable[[np.ndarray, np.ndarray, np.ndarray],
                      tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Posterior:
    """Posterior marginals of z under the sites: means, variances and log det B."""

    mean: np.ndarray
    var: np.ndarray
    logdet_B: float  # log det(I + S^1/2 K S^1/2)


def cavity(post: Posterior, tau: np.ndarray, nu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cavity mean and variance; its precision 1/var_i - tau_i >= 0 for log-concave sites."""
    cav_prec = np.maximum(1.0 / post.var - tau, MIN_CAVITY_PRECISION)
    cav_nat = post.mean / post.var - nu
    cav_var = 1.0 / cav_prec
    return cav_nat * cav_var, cav_var


def site_update(
    y: np.ndarray, cav_mean: np.ndarray, cav_var: np.ndarray, noise_var: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matched sites for factors Phi(y z / sqrt(noise_var)) (step if noise_var = 0).

    Returns (log Z_i, new tau_i, new nu_i).
    """
    d2 = cav_var + noise_var
    d = np.sqrt(d2)
    z = y * cav_mean / d
    log_Z, r, one_minus_g = truncated_gaussian_terms(z)
    rho = cav_var / d2
    # Tilted variance / cavity variance = 1 - rho*g, written so it never cancels.
    ratio = noise_var / d2 + rho * one_minus_g
    rho_g = rho * (1.0 - one_minus_g)
    tau_new = rho_g / (ratio * cav_var)
    nu_new = cav_mean * tau_new + y * r / (d * ratio)
    return log_Z, tau_new, nu_new


def log_marginal(
    log_Z: np.ndarray,
    cav_mean: np.ndarray,
    cav_var: np.ndarray,
    tau: np.ndarray,
    nu: np.ndarray,
    post: Posterior,
) -> float:
    """log Z_EP (R&W eq. 3.65) rearranged so no term diverges as a site precision goes to 0."""
    one_plus = 1.0 + tau * cav_var
    logdet_B = post.logdet_B
    total = (
        np.sum(log_Z)
        + 0.5 * np.sum(np.log(one_plus))
        - 0.5 * logdet_B
        + 0.5 * float(nu @ post.mean)
        + 0.5 * np.sum((tau * cav_mean**2 - 2.0 * cav_mean * nu - nu**2 * cav_var) / one_plus)
    )
    return float(total)


@dataclass(frozen=True)
class SiteValue:
    """log Z_EP of a run's final sites, computed in float64 (what every EP path reports)."""

    log_marginal: float  # nan where the float64 factorization fails or the value overflows
    mean: np.ndarray  # float64 posterior mean Sigma nu of the sites
    logdet_B: float  # float64 log det(I + S^1/2 K S^1/2)
    # largest |mean the run matched its sites against - float64 mean|, in posterior standard
    # deviations: how far the run's own (running, possibly float32-corrected) posterior drifted
    mean_drift: float


def site_value(K: np.ndarray, y: np.ndarray, tau: np.ndarray, nu: np.ndarray,
               var: np.ndarray, run_mean: np.ndarray, update: SiteUpdate) -> SiteValue:
    """log Z_EP of the sites (tau, nu) from one float64 Cholesky of B = I + S^1/2 K S^1/2.

    log Z_EP (R&W eq. 3.65, `log_marginal`) is the normalizer of q(z) ~ N(0, K) prod_i site_i,
    a function of the sites alone (-1/2 log det B and nu^T Sigma nu: here in float64, where a
    run may have accumulated them in float32), plus one term per site, log Z_i - log of the
    cavity times the site's mass, whose derivatives in the cavity mean and variance are the
    tilted moments minus the site-times-cavity moments: zero when the site is moment-matched.
    So the marginal variances (whose exact diagonal would cost a triangular inverse, as much as
    the Cholesky) are taken from the run: their error moves the value only to second order.
    The mean is recomputed, as it costs two triangular solves.

    Args:
        K: (n, n) float64 kernel.
        y: (n,) signs.
        tau, nu: the final site precisions (>= 0) and natural means.
        var: the run's posterior marginal variances of these sites.
        run_mean: the posterior mean the run matched the sites against.
        update: the likelihood's moment match (`likelihood_update`), for the log Z_i.

    Returns:
        SiteValue; log_marginal nan (mean_drift inf) if B cannot be factorized in float64.
    """
    n = tau.size
    failed = SiteValue(math.nan, np.asarray(run_mean, dtype=np.float64), math.nan, math.inf)
    if not (np.all(np.isfinite(tau)) and np.all(np.isfinite(nu)) and np.all(tau >= 0)):
        return failed
    sq = np.sqrt(tau)
    with np.errstate(over="ignore", invalid="ignore"):
        B = K * sq[:, None]  # the one n x n temporary: B is factorized in place
        B *= sq[None, :]
    B.flat[:: n + 1] += 1.0
    try:
        L = scipy.linalg.cholesky(B, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        return failed
    logdet_B = 2.0 * float(np.sum(np.log(np.diag(L))))
    if not math.isfinite(logdet_B):  # B overflowed (a site precision near the float limit)
        return failed
    Knu = K @ nu
    mean = Knu - K @ (sq * scipy.linalg.cho_solve((L, True), sq * Knu, check_finite=False))
    post = Posterior(mean, var, logdet_B)
    cav_mean, cav_var = cavity(post, tau, nu)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        log_Z, _, _ = update(y, cav_mean, cav_var)
        value = log_marginal(log_Z, cav_mean, cav_var, tau, nu, post)
        drift = float(np.max(np.abs(mean - run_mean) / np.sqrt(var)))
    if not (math.isfinite(value) and math.isfinite(drift)):
        return SiteValue(math.nan, mean, logdet_B, math.inf)
    return SiteValue(value, mean, logdet_B, drift)


def noise_for(likelihood: str, noise_var: float | None) -> float:
    """The noise variance of a likelihood: probit's (default 1, GPy's Bernoulli), 0 for step.

    Args:
        likelihood: 'probit' or 'step'.
        noise_var: probit's noise variance (None: 1); ignored for step.

    Returns:
        The noise variance, > 0 for probit, 0 for step.

    Raises:
        ValueError: an unknown likelihood, or a probit noise variance <= 0.
    """
    if likelihood == "probit":
        noise = 1.0 if noise_var is None else float(noise_var)
        if not noise > 0:
            raise ValueError(f"probit likelihood needs noise_var > 0, got {noise}")
        return noise
    if likelihood == "step":
        return 0.0
    raise ValueError(f"likelihood must be 'probit' or 'step', got {likelihood!r}")


def likelihood_update(noise_var: float) -> SiteUpdate:
    """The SiteUpdate of the probit factors Phi(y z / sqrt(noise_var)), the step if noise_var = 0.

    Args:
        noise_var: the noise variance (`noise_for`).

    Returns:
        (y_J, cavity mean, cavity variance) -> (log Z_J, tau_J, nu_J).
    """

    def update(y: np.ndarray, cav_mean: np.ndarray, cav_var: np.ndarray):
        return site_update(y, cav_mean, cav_var, noise_var)

    return update


def anderson_mix(history_x: list[np.ndarray], history_f: list[np.ndarray],
                 scale: np.ndarray) -> np.ndarray | None:
    """Anderson-mixed next iterate from iterates x_k and their scaled damped steps f_k.

    Type-II Anderson mixing, used by the parallel schedule of K-class EP: the
    combination of the damped images x_k + f_k / scale whose scaled residuals are least in norm.

    Args:
        history_x: the last iterates (sites concatenated), oldest first.
        history_f: their damped steps times `scale`.
        scale: posterior variances and standard deviations, the units of the steps.

    Returns:
        The mixed iterate, or None with fewer than two iterates or a failed least squares.
    """
    if len(history_x) < 2:
        return None
    F = np.stack(history_f, axis=1)
    G = np.stack(history_x, axis=1) + F / scale[:, None]
    try:
        gamma, *_ = np.linalg.lstsq(np.diff(F, axis=1), F[:, -1], rcond=1e-10)
    except np.linalg.LinAlgError:
        return None
    return G[:, -1] - np.diff(G, axis=1) @ gamma


def anderson_step(history_x: list[np.ndarray], history_f: list[np.ndarray], x: np.ndarray,
                  damped_step: np.ndarray, scale: np.ndarray, depth: int,
                  n_precisions: int) -> np.ndarray:
    """The next sites of a damped, Anderson-mixed EP iteration (K-class EP's schedule).

    Records (x, damped_step * scale) in the histories, keeping the last depth + 1, and mixes
    them (`anderson_mix`). A mixed iterate with a negative site precision or a non-finite entry
    left the valid region: the damped step is taken instead and the mixing restarts.

    Args:
        history_x: the last iterates, oldest first (updated in place).
        history_f: their scaled damped steps (updated in place).
        x: the current sites, precisions (the first `n_precisions`) then natural means.
        damped_step: the damped step from x.
        scale: posterior variances and standard deviations, the units of the steps.
        depth: how many earlier iterates the mixing uses.
        n_precisions: how many leading entries of x are site precisions (kept >= 0).

    Returns:
        The next sites.
    """
    history_x.append(x)
    history_f.append(damped_step * scale)
    del history_x[: -(depth + 1)], history_f[: -(depth + 1)]
    mixed = anderson_mix(history_x, history_f, scale)
    if mixed is None:
        return x + damped_step
    if np.all(mixed[:n_precisions] >= 0) and np.all(np.isfinite(mixed)):
        return mixed
    history_x.clear()
    history_f.clear()
    return x + damped_step
