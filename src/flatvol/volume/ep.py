"""Expectation propagation for binary GP classification: probit and noise-free step likelihoods.

Model: z ~ N(0, K) and one likelihood factor per point,
    probit:  t_i(z_i) = Phi(y_i z_i / sqrt(noise_var))   (noise_var = 1 is GPy's Bernoulli/probit),
    step:    t_i(z_i) = 1[y_i z_i > 0]                    (noise_var = 0, the orthant indicator).
EP replaces each factor by an unnormalized Gaussian site (precision tau_i, natural mean nu_i) and
returns log Z_EP, the EP estimate of log  integral N(z; 0, K) prod_i t_i(z_i) dz.
With the probit factors that is the paper's (GPy's) marginal likelihood, which equals the orthant
probability under K + noise_var * I; with step factors it estimates the orthant probability
P(sign z = y) under K itself (Cunningham, Hennig & Lacoste-Julien 2011, "EPMGP").

Numerics follow Rasmussen & Williams (2006) Alg. 3.5/3.6: the posterior is computed from the
Cholesky factor of B = I + S^1/2 K S^1/2 (well conditioned, eigenvalues >= 1), and the site
updates use log_ndtr and a continued fraction for the far tails, so sites with huge precision
(cavity on the wrong side of a step) stay finite.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg

from flatvol.volume._numerics import (
    as_kernel,
    as_signed_labels,
)
from flatvol.volume.ep_blocks import (
    WarmPosterior,
    block_sequential_ep,
    kernel_key,
    uses_float32,
    value_rtol,
)
from flatvol.volume.ep_parts import (
    MIN_CAVITY_PRECISION,
    Workspace,
    anderson_step,
    cavity,
    noise_for,
    posterior,
    site_update,
    site_value,
)

Likelihood = Literal["probit", "step"]
Mode = Literal["auto", "parallel", "sequential", "blocks"]

# Mixed precision: float32 factorizations while the largest site change exceeds _SINGLE_UNTIL
# (float32 rounding, ~1e-6 relative for B's condition numbers here, is then irrelevant), and only
# for n >= _SINGLE_MIN_N where the factorization dominates the cost.
_SINGLE_UNTIL = 1e-2
_SINGLE_MIN_N = 256
_SINGLE_MAX_COND = 1e5
# A warm start gets this many iterations (sweeps) at most before it counts as stalled and EP
# restarts from zero: warm starts converge in 2-9 sweeps, cold ones in 5-20 (bench/RESULTS.md;
# parallel probit EP 10-30), so by then a cold run is cheaper than the rest of max_iter.
WARM_MAX_ITER = 40


@dataclass(frozen=True)
class EPResult:
    """Outcome of one EP run. Arrays are float64 of length n."""

    log_marginal_likelihood: float  # log Z_EP in nats
    converged: bool
    iterations: int
    likelihood: str
    noise_var: float
    mode: str
    damping: float  # final damping (it is reduced automatically when updates oscillate)
    max_change: float  # last relative site change
    site_precision: np.ndarray  # tau tilde
    site_natural_mean: np.ndarray  # nu tilde
    posterior_mean: np.ndarray
    posterior_var: np.ndarray
    message: str = ""
    # mode 'blocks' with keep_posterior=True: the posterior covariance, a warm start for
    # another label vector on the same kernel (run_ep(..., warm_posterior=this))
    posterior: WarmPosterior | None = None
    # The warm start (init_sites / warm_posterior) failed or could not be vouched for, and this
    # is the result of EP from zero sites instead; retry_reason says why. retry_reason without
    # retried_cold: a cold blocks run whose float32 corrections drifted, refit in float64.
    retried_cold: bool = False
    retry_reason: str = ""
    # largest difference between the posterior mean the run matched its sites against and the
    # float64 one of those sites, in posterior standard deviations (ep_parts.site_value)
    mean_drift: float = 0.0


def run_ep(
    K: np.ndarray,
    y: np.ndarray,
    *,
    likelihood: Likelihood = "probit",
    noise_var: float | None = None,
    mode: Mode = "auto",
    damping: float | None = None,
    tol: float = 1e-3,
    max_iter: int = 300,
    anderson: int | None = None,
    init_sites: tuple[np.ndarray, np.ndarray] | None = None,
    warm_posterior: WarmPosterior | None = None,
    keep_posterior: bool = False,
) -> EPResult:
    """EP on a validated float64 kernel K (n, n) and signs y in {-1, +1}; no input checks.

    Parallel mode updates every site from one posterior and then refactorizes (one Cholesky and
    one triangular inverse per iteration). The damped update map is accelerated with Anderson
    mixing over the last `anderson` iterates (default: 5 for step, 0 for probit); a mixed
    iterate with a negative site precision falls back to the plain damped step, a diverging
    residual halves the damping, and without mixing a growing site change halves the damping
    (so 2-cycles die out). Sequential mode updates one site at a time with rank-one updates of
    the full posterior covariance (O(n^2) per site, R&W Alg. 3.5), refactorizing every sweep.
    Default damping: 0.7 for parallel step EP, else 1.0 (none).
    Blocks mode (flatvol.volume.ep_blocks, docs/VOLUME.md): block sweeps against one running
    posterior covariance, then Newton steps on the fixed point; far fewer Choleskys than
    parallel step EP on correlated kernels (damping and anderson do not apply). 'auto': blocks
    for step, parallel for probit. A warm start from sites costs blocks a sweep, so 'auto'
    ignores init_sites for step EP; warm_posterior is its cheap warm start.
    Convergence: the largest undamped site change, in posterior standard deviations, is < tol
    (log Z_EP is stationary at the fixed point: its error is second order in that change); for
    tol >= 1e-4 blocks mode may stop earlier on a Newton step (flatvol.volume.ep_blocks).
    The value is computed once, at the end, in float64 from the final sites (one Cholesky,
    ep_parts.site_value), whatever precision the run used. A warm start (init_sites outside
    'auto' step EP, or warm_posterior) that does not converge within WARM_MAX_ITER, gives
    non-finite numbers or drifted (`warm_start_failure`) is replaced by a run from zero sites
    (EPResult.retried_cold, retry_reason; iterations then count both runs). A cold blocks run
    whose float32 corrections drifted (`drift_failure`) is refit with float64 corrections
    (retry_reason set, retried_cold not).

    Args:
        init_sites: optional warm start (site precisions tau >= 0, natural means nu; not used
            by mode 'auto' with the step likelihood), e.g.
            (r.site_precision, r.site_natural_mean) of an earlier EPResult r on the same kernel
            for a label vector that differs in a few points. EP has one fixed point per label
            vector, so the value is the cold-start value up to the convergence tolerance
            (second order in tol); only the iteration count changes. Default: all zeros.

        warm_posterior: a posterior of the same kernel (EPResult.posterior of an earlier run
            with keep_posterior=True), the warm start of the step likelihood's blocks mode
            (also under 'auto'): the run starts from its sites and covariance and moves only
            what the new labels change (bench/RESULTS.md). Not with init_sites.
        keep_posterior: blocks mode: return the posterior covariance in EPResult.posterior
            (one more n x n float64 array in memory).

    Returns:
        EPResult; its site_precision / site_natural_mean are the warm start for the next run.
    """
    noise = noise_for(likelihood, noise_var)
    if anderson is None:  # plain probit EP converges fast; step EP needs the acceleration
        anderson = 5 if likelihood == "step" else 0
    if damping is None:  # parallel step updates overshoot on correlated sites (2-cycles)
        damping = 0.7 if (mode == "parallel" and likelihood == "step") else 1.0
    if not 0 < damping <= 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    if mode not in ("auto", "parallel", "sequential", "blocks"):
        raise ValueError(
            f"mode must be 'auto', 'parallel', 'sequential' or 'blocks', got {mode!r}")
    n = K.shape[0]
    tau = np.zeros(n)
    nu = np.zeros(n)
    if init_sites is not None:
        tau, nu = _initial_sites(init_sites, n)
    if warm_posterior is not None:
        if init_sites is not None:
            raise ValueError("give init_sites or warm_posterior, not both")
        if warm_posterior.n != n or warm_posterior.kernel_key != kernel_key(K):
            raise ValueError(f"warm_posterior belongs to another kernel ({warm_posterior.n} "
                             f"points), not this one ({n} points)")
        if mode == "auto":
            mode = "blocks"
        if mode != "blocks":
            raise ValueError(f"warm_posterior needs mode 'blocks' or 'auto', got {mode!r}")
    if mode == "auto":
        mode = "blocks" if likelihood == "step" else "parallel"
        if mode == "blocks":
            init_sites = None  # cheaper from zero sites (see above)
    if init_sites is None and warm_posterior is None:
        return _run_cold(K, y, likelihood, noise, mode, damping, tol, max_iter, anderson,
                         keep_posterior)
    warm = _run_once(K, y, likelihood, noise, mode, damping, tol, min(max_iter, WARM_MAX_ITER),
                     anderson, (tau, nu) if init_sites is not None else None, warm_posterior,
                     keep_posterior)
    reason = warm_start_failure(warm, tol)
    if not reason:
        return warm
    cold = _run_cold(K, y, likelihood, noise, mode, damping, tol, max_iter, anderson,
                     keep_posterior)
    # the cost of both runs is reported
    return dataclasses.replace(cold, iterations=warm.iterations + cold.iterations,
                               retried_cold=True, retry_reason=reason + "; reran from zero "
                               "sites" + (f"; {cold.retry_reason}" if cold.retry_reason else ""))


def _run_cold(K: np.ndarray, y: np.ndarray, likelihood: str, noise: float, mode: str,
              damping: float, tol: float, max_iter: int, anderson: int,
              keep_posterior: bool) -> EPResult:
    """EP from zero sites; a blocks run whose float32 corrections drifted (`drift_failure`)
    is refit with float64 ones (about twice the cost of its updates)."""
    fit = _run_once(K, y, likelihood, noise, mode, damping, tol, max_iter, anderson, None,
                    None, keep_posterior)
    if mode != "blocks" or not uses_float32(K.shape[0], tol):
        return fit
    reason = drift_failure(fit, tol)
    if not reason:
        return fit
    refit = _run_blocks(K, y, likelihood, noise, tol, max_iter, None, None, keep_posterior,
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
    float32 from ep_blocks.MIXED_MIN_N on, and on ill-conditioned Monte-Carlo kernels it drifts
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


def _run_once(K: np.ndarray, y: np.ndarray, likelihood: str, noise: float, mode: str,
              damping: float, tol: float, max_iter: int, anderson: int,
              init_sites: tuple[np.ndarray, np.ndarray] | None,
              warm_posterior: WarmPosterior | None, keep_posterior: bool) -> EPResult:
    """One EP run in a resolved mode (run_ep's arguments, validated), no retry."""
    if mode == "blocks":
        return _run_blocks(K, y, likelihood, noise, tol, max_iter, init_sites, warm_posterior,
                           keep_posterior)
    n = K.shape[0]
    tau, nu = (np.zeros(n), np.zeros(n)) if init_sites is None else init_sites
    workspace = Workspace()
    # Early parallel iterations (site change > _SINGLE_UNTIL) factorize in float32, twice as
    # fast; the iterations that decide convergence and the final value are float64.
    # Only with probit sites: tau_i <= 1/noise_var there, so cond(B) <= 1 + trace(K)/noise_var
    # stays small; step sites can be arbitrarily precise.
    single_ok = (mode == "parallel" and n >= _SINGLE_MIN_N and noise > 0
                 and float(np.trace(K)) / noise <= _SINGLE_MAX_COND)
    K_single = K.astype(np.float32) if single_ok else None
    post = posterior(K, tau, nu, workspace)
    post_single = False
    converged = False
    change = math.inf
    best_change = math.inf
    previous_change = math.inf
    iterations = 0
    message = ""
    history_x: list[np.ndarray] = []
    history_f: list[np.ndarray] = []
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        cav_mean, cav_var = cavity(post, tau, nu)
        if mode == "sequential":
            tau_new, nu_new = _sequential_sweep(K, y, tau, nu, noise, damping)
            step = np.concatenate([tau_new - tau, nu_new - nu]) / damping
        else:
            _, tau_full, nu_full = site_update(y, cav_mean, cav_var, noise)
            step = np.concatenate([tau_full - tau, nu_full - nu])
        scale = np.concatenate([post.var, np.sqrt(post.var)])
        if not np.all(np.isfinite(step)):
            message = f"non-finite site update at iteration {iterations}"
            break
        change = float(np.max(np.abs(step) * scale))
        if change < _SINGLE_UNTIL:
            K_single = None
        if change < tol:
            if not post_single:
                converged = True
                break
            post, post_single = posterior(K, tau, nu, workspace), False  # confirm in float64
            continue
        x = np.concatenate([tau, nu])
        candidate = x + damping * step
        if mode == "parallel" and not anderson and iterations > 2 and change > previous_change:
            damping = max(0.5 * damping, 0.05)  # oscillating: damp more
            candidate = x + damping * step
        previous_change = change
        if mode == "parallel" and anderson and iterations > 1:  # skip the flat start
            if change > 1e3 * best_change:  # diverging: restart mixing with more damping
                history_x.clear()
                history_f.clear()
                damping = max(0.5 * damping, 0.05)
                candidate = x + damping * step
            best_change = min(best_change, change)
            candidate = anderson_step(history_x, history_f, x, damping * step, scale,
                                      anderson, n)
        tau, nu = np.maximum(candidate[:n], 0.0), candidate[n:]
        try:
            if K_single is not None:
                try:
                    post, post_single = posterior(K_single, tau, nu, workspace), True
                except np.linalg.LinAlgError:  # too ill-conditioned for float32
                    K_single = None
            if K_single is None:
                post, post_single = posterior(K, tau, nu, workspace), False
        except np.linalg.LinAlgError:
            message = f"posterior factorization failed at iteration {iterations}"
            break
    else:
        message = f"no convergence after {max_iter} iterations (site change {change:.2e} > {tol:g})"
    return _result(K, y, likelihood, noise, mode, damping, tau, nu, post.var, post.mean,
                   converged=converged, iterations=iterations, max_change=change,
                   message=message)


def _result(K: np.ndarray, y: np.ndarray, likelihood: str, noise: float, mode: str,
            damping: float, tau: np.ndarray, nu: np.ndarray, var: np.ndarray,
            run_mean: np.ndarray, *, converged: bool, iterations: int, max_change: float,
            message: str, value_correction: float = 0.0,
            posterior: WarmPosterior | None = None) -> EPResult:
    """The EPResult of a run's final sites: every path's value is computed here, in float64
    from the sites (ep_parts.site_value), never accumulated along the run."""
    value = site_value(K, y, tau, nu, var, run_mean, noise)
    log_ml = value.log_marginal + value_correction
    if not math.isfinite(log_ml):
        converged = False
        message = message or "log marginal likelihood is not finite"
    return EPResult(
        log_marginal_likelihood=log_ml, converged=converged, iterations=iterations,
        likelihood=likelihood, noise_var=noise, mode=mode, damping=damping,
        max_change=max_change, site_precision=tau, site_natural_mean=nu,
        posterior_mean=value.mean, posterior_var=var, message=message, posterior=posterior,
        mean_drift=value.mean_drift,
    )


def _run_blocks(K: np.ndarray, y: np.ndarray, likelihood: str, noise: float, tol: float,
                max_iter: int, init_sites: tuple[np.ndarray, np.ndarray] | None,
                warm_posterior: WarmPosterior | None = None,
                keep_posterior: bool = False, mixed_precision: bool = True) -> EPResult:
    """EPResult of block-sequential EP (flatvol.volume.ep_blocks), max_iter sweeps at most."""

    def update_block(y_J: np.ndarray, cav_mean: np.ndarray, cav_var: np.ndarray):
        return site_update(y_J, cav_mean, cav_var, noise)

    fit = block_sequential_ep(K, y, update_block, tol=tol, max_sweeps=max_iter,
                              init_sites=init_sites, init_posterior=warm_posterior,
                              keep_posterior=keep_posterior,
                              mixed_precision=mixed_precision)
    # plus the last Newton step's predicted change, when EP stopped on it (ep_blocks)
    return _result(K, y, likelihood, noise, "blocks", fit.damping, fit.site_precision,
                   fit.site_natural_mean, fit.posterior_var, fit.posterior_mean,
                   converged=fit.converged, iterations=fit.sweeps, max_change=fit.max_change,
                   message=fit.message, value_correction=fit.value_correction,
                   posterior=fit.posterior)


def _initial_sites(init_sites: tuple[np.ndarray, np.ndarray], n: int) -> tuple[np.ndarray, ...]:
    """Validated float64 copies of a warm start (tau, nu): shape (n,), finite, tau >= 0."""
    if len(init_sites) != 2:
        raise ValueError("init_sites must be a pair (site_precision, site_natural_mean)")
    tau, nu = (np.array(a, dtype=np.float64, copy=True) for a in init_sites)
    if tau.shape != (n,) or nu.shape != (n,):
        raise ValueError(f"init_sites must hold two vectors of length {n}, got shapes "
                         f"{tau.shape} and {nu.shape}")
    if not (np.all(np.isfinite(tau)) and np.all(np.isfinite(nu)) and np.all(tau >= 0)):
        raise ValueError("init_sites must be finite with site precisions >= 0")
    return tau, nu


def _sequential_sweep(
    K: np.ndarray, y: np.ndarray, tau: np.ndarray, nu: np.ndarray, noise: float, damping: float
) -> tuple[np.ndarray, np.ndarray]:
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


def posterior_covariance(K: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Full posterior covariance (K^-1 + diag(tau))^-1 = K - K S^1/2 B^-1 S^1/2 K."""
    n = K.shape[0]
    if not np.any(tau > 0):
        return K.copy()
    sq = np.sqrt(tau)
    B = (sq[:, None] * K) * sq[None, :]
    B[np.diag_indices(n)] += 1.0
    L = scipy.linalg.cholesky(B, lower=True, check_finite=False)
    V = scipy.linalg.solve_triangular(L, sq[:, None] * K, lower=True, check_finite=False)
    Sigma = K - V.T @ V
    return 0.5 * (Sigma + Sigma.T)


def expectation_propagation(
    kernel: np.ndarray,
    labels: np.ndarray,
    *,
    likelihood: Likelihood = "probit",
    noise_var: float | None = None,
    mode: Mode = "auto",
    damping: float | None = None,
    tol: float = 1e-3,
    max_iter: int = 300,
    anderson: int | None = None,
    init_sites: tuple[np.ndarray, np.ndarray] | None = None,
) -> EPResult:
    """EP with input checks: kernel (n, n) symmetric PD, labels in {0,1} or {-1,+1}.

    See `run_ep` for the algorithm; use `flatvol.volume.VolumeEstimator` to reuse a kernel's
    validation and factorization across many label vectors.

    Args:
        kernel: Prior covariance, symmetric positive definite, shape (n, n).
        labels: Labels in {0, 1} or {-1, +1}, shape (n,).
        likelihood: Site likelihood, 'probit' (default) or 'step'.
        noise_var: Likelihood noise variance (None for the likelihood's default).
        mode: Update schedule: 'auto', 'parallel', 'sequential' or 'blocks'.
        damping: Site update damping in (0, 1] (None for the default).
        tol: Convergence tolerance on the site parameters.
        max_iter: Maximum number of EP sweeps.
        anderson: Anderson mixing depth (None: 5 for step, 0 for probit).
        init_sites: Optional warm start (site_precision, site_natural_mean).

    Returns:
        The EPResult (log marginal likelihood, convergence information, site parameters).
    """
    K = as_kernel(kernel)
    y = as_signed_labels(labels, K.shape[0])
    return run_ep(
        K, y, likelihood=likelihood, noise_var=noise_var, mode=mode, damping=damping,
        tol=tol, max_iter=max_iter, anderson=anderson, init_sites=init_sites,
    )
