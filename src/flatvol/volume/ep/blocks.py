"""The EP solver: sites updated a block at a time against one running posterior covariance,
then Newton steps on the fixed point; any likelihood given as a `SiteUpdate` (flatvol.volume.ep
.sites), the probit and the step ones in production.

Why blocks: parallel EP (every site from one posterior, then a refactorization of
I + S^1/2 K S^1/2, about 1.75 Choleskys) needs 15-20 iterations on the strongly correlated
NNGP kernels, since all sites see the same old posterior and overcount their shared evidence.
Here the posterior covariance Sigma = (K^-1 + S)^-1 is kept as one n x n buffer (its lower
triangle, flatvol.volume.ep.posterior.RunningCovariance) and updated after each block J of
sites by the Woodbury identity
    Sigma <- Sigma - Sigma[:, J] M Sigma[J, :],   M = D (I + Sigma_JJ D)^-1,  D = diag(d tau_J),
a symmetric rank-|J| update (BLAS syrk, n^2 |J| flops), so moving all n sites costs n^3 flops
(about 3 Choleskys) and later blocks see the earlier ones' evidence. log det(I + S^1/2 K S^1/2)
accumulates by the matrix determinant lemma, log det(I + D Sigma_JJ) per block; the mean
Sigma nu is recomputed at every sweep (one symmetric mat-vec), so it does not drift.

The schedule (bench/RESULTS.md, "ep-orthant cost in Choleskys"):
- sweeps over the sites that move by more than GS_MOVING posterior standard deviations (all
  of them in a cold start's first sweep), until the largest move is below NEWTON_FROM;
- then Newton steps (flatvol.volume.ep.newton: GMRES in O(n^2) per iteration), each applied
  to the sites it moves.
- The stopping rule: the sites are within tol of the fixed point, measured (every site's
  move, in posterior standard deviations, is < tol) or, in the Newton phase for tol >=
  VALUE_STOP_MIN_TOL, predicted by a small Newton step whose predicted change of log Z_EP is
  within value_rtol(tol) relative (log Z_EP is stationary at the fixed point, so the
  prediction is second order and its error third order); the value reported is then the
  Newton-corrected one (BlockSweepResult.value_correction).
- The warm start: a WarmPosterior (the converged posterior of a nearby label vector on the
  same kernel, shared read-only); every change goes into this run's correction.
- Mixed precision: after the first sweep the buffer is frozen as a float64 base and the
  changes accumulate in a float32 correction C (Sigma = base - C; n >= MIXED_MIN_N and
  tol >= MIXED_MIN_TOL): C is small next to the base, so its float32 rounding is small next to
  the posterior variances, and float32 syrk is twice as fast. The running covariance and
  log det B serve the iteration only: flatvol.volume.ep.run reports the value recomputed in
  float64 from the final sites (sites.site_value) and checks how far the running mean drifted
  from the float64 one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg.blas import ssymv

from flatvol.volume.ep.newton import newton_step
from flatvol.volume.ep.posterior import (
    RunningCovariance,
    WarmPosterior,
    kernel_key,
    sign_blocks,
    split_factor,
)
from flatvol.volume.ep.sites import (
    MIN_CAVITY_PRECISION,
    Posterior,
    SiteUpdate,
    cavity,
    log_marginal,
)

BLOCK = 64
# After the first two sweeps without Newton steps, a sweep updates only sites whose change
# exceeds this fraction of tol (the others are left for a later sweep, if any is still needed).
_MOVING = 0.5
GS_MOVING = 0.1  # sweeps before the Newton phase move only sites that move more than this
NEWTON_FROM = 0.6  # Newton steps once no site moves more than this (closer, they overshoot)
NEWTON_TRUST = 0.05  # a Newton step this small predicts the value to third order
# value_rtol = 5e-3 * tol: the Newton-corrected value is reported once the correction is below
# 5e-6 of log Z at the default tol 1e-3; the correction's own error is third order, ~1e-2 of it.
VALUE_RTOL_PER_TOL = 5e-3
MIXED_MIN_N = 512  # float32 corrections from this size on (below, float64 costs little)
MIXED_MIN_TOL = 1e-4  # ... and tolerances at least this (tighter ones are float32 rounding size)
# Below this tol the caller wants the sites themselves converged: no stop on the value alone.
VALUE_STOP_MIN_TOL = 1e-4


def value_rtol(tol: float) -> float:
    """Relative accuracy of log Z_EP at which a Newton-phase run stops (see module doc)."""
    return VALUE_RTOL_PER_TOL * tol


def uses_float32(n: int, tol: float) -> bool:
    """Whether a run of n sites at tolerance tol accumulates its corrections in float32."""
    return n >= MIXED_MIN_N and tol >= MIXED_MIN_TOL


@dataclass(frozen=True)
class BlockSweepResult:
    """Sites, posterior marginals and log det B at the last sweep's start (they match)."""

    converged: bool
    sweeps: int
    max_change: float
    site_precision: np.ndarray
    site_natural_mean: np.ndarray
    posterior_mean: np.ndarray
    posterior_var: np.ndarray
    logdet_B: float
    site_updates: int  # total number of single-site updates (n per full sweep)
    damping: float  # final damping of the moves (halved when the site change grows)
    message: str = ""
    newton_steps: int = 0
    posterior: WarmPosterior | None = None  # with keep_posterior=True
    # log Z_EP(fixed point) - log Z_EP(these sites) predicted by the last Newton step, when the
    # run stopped on it (else 0): add it to the value of these sites
    value_correction: float = 0.0


def block_sequential_ep(
    K: np.ndarray,
    y: np.ndarray,
    site_update: SiteUpdate,
    *,
    tol: float,
    max_sweeps: int,
    block: int | None = None,
    init_posterior: WarmPosterior | None = None,
    newton: bool = True,
    keep_posterior: bool = False,
    mixed_precision: bool = True,
) -> BlockSweepResult:
    """Run block-sequential EP on a validated float64 kernel K.

    Args:
        K: (n, n) symmetric positive definite float64 kernel.
        y: (n,) signs in {-1, +1}.
        site_update: (y_J, cavity mean, cavity variance) -> (log Z, tau, nu), the moment match.
        tol: convergence when every site's change, in posterior standard deviations, is < tol,
            or (Newton phase) when log Z_EP is predicted within value_rtol(tol) relative.
        max_sweeps: the most sweeps (a Newton step counts as one).
        block: sites per Woodbury update; default min(BLOCK, n // 16) (at least 1), so small
            problems run site by site, where within-block overcounting could oscillate.
        init_posterior: warm start from a posterior of the same kernel (its sites and
            covariance, not copied; K is then not read).
        newton: use Newton steps once the sites are close (False: sweeps only, for tests).
        mixed_precision: float32 corrections where `uses_float32` allows them (False: float64
            throughout: the refit when float32 drifted, flatvol.volume.ep.run).
        keep_posterior: return the final posterior as a WarmPosterior (one more n x n array
            when the covariance was shared).

    Returns:
        BlockSweepResult at the last sweep's start (the posterior of its sites).
    """
    n = y.size
    if init_posterior is not None:
        cov = RunningCovariance(init_posterior.sigma, owned=False)
        tau, nu = init_posterior.tau.copy(), init_posterior.nu.copy()
        logdet_B = float(init_posterior.logdet_B)
    else:
        cov = RunningCovariance(np.array(K, dtype=np.float64, order="F", copy=True), owned=True)
        tau, nu, logdet_B = np.zeros(n), np.zeros(n), 0.0
    correction_dtype = np.float32 if mixed_precision and uses_float32(n, tol) else np.float64
    if not cov.owned:
        cov.freeze(correction_dtype)
    updates = newton_steps = 0
    block = block or max(1, min(BLOCK, n // 16))
    damping = 1.0
    previous_change = change = math.inf
    message = ""
    converged = False
    use_newton = newton
    value_correction = 0.0
    last_newton = False
    squared: np.ndarray | None = None

    def value(t: np.ndarray, v: np.ndarray, var_: np.ndarray, mean_: np.ndarray,
              logdet: float) -> float:
        post = Posterior(mean_, var_, logdet)
        cav_mean, cav_var = cavity(post, t, v)
        log_Z, _, _ = site_update(y, cav_mean, cav_var)
        return log_marginal(log_Z, cav_mean, cav_var, t, v, post)

    sweep = 0
    for sweep in range(1, max_sweeps + 1):  # noqa: B007 - the count is reported
        var = cov.diagonal()
        mean = cov.matvec(nu)
        cav_var = 1.0 / np.maximum(1.0 / var - tau, MIN_CAVITY_PRECISION)
        cav_mean = (mean / var - nu) * cav_var
        _, tau_full, nu_full = site_update(y, cav_mean, cav_var)
        moves = np.maximum(np.abs(tau_full - tau) * var, np.abs(nu_full - nu) * np.sqrt(var))
        if not np.all(np.isfinite(moves)):
            message = f"non-finite site update in sweep {sweep}"
            break
        change = float(np.max(moves))
        if change < tol:
            converged = True
            break
        if last_newton and change > previous_change:  # the step made things worse
            use_newton = False
        if sweep > 2 and change > previous_change and not last_newton:  # oscillating
            damping = max(0.5 * damping, 0.1)
        previous_change = change
        if cov.owned and sweep > 1:  # the first sweep's posterior becomes the float64 base
            cov.freeze(correction_dtype)
        last_newton = False
        if use_newton and change < NEWTON_FROM:
            squared = sq = cov.squared(squared)

            def sigma2_mv(v: np.ndarray, sq: np.ndarray = sq) -> np.ndarray:
                return ssymv(1.0, sq, v.astype(np.float32), lower=1).astype(np.float64)

            step = newton_step(y, tau, nu, var, mean, logdet_B, cov.matvec, sigma2_mv,
                               site_update, value)
            if step is not None and step.solved:
                if step.max_move < NEWTON_TRUST and tol >= VALUE_STOP_MIN_TOL:
                    now = value(tau, nu, var, mean, logdet_B)
                    if abs(step.predicted_change) <= value_rtol(tol) * max(abs(now), 1.0):
                        converged = True
                        value_correction = step.predicted_change
                        break
                step_moves = np.maximum(np.abs(step.tau - tau) * var,
                                        np.abs(step.nu - nu) * np.sqrt(var))
                targets = (step.tau, step.nu)
                moving = np.flatnonzero(step_moves > 0.1 * tol)
                newton_steps += 1
                last_newton = True
            else:
                use_newton = False
        if not last_newton:
            targets = None
            if use_newton:  # all sites in a cold start's first sweep, then the far ones
                cold_first = sweep == 1 and init_posterior is None
                moving = np.flatnonzero(moves > (-1.0 if cold_first else GS_MOVING))
            else:  # plain sweeps: all sites twice, then those that still move
                moving = np.flatnonzero(moves > (_MOVING * tol if sweep > 2 else -1.0))
        heading = (tau_full if targets is None else targets[0]) - tau
        for J in sign_blocks(moving, heading, block):
            W = cov.columns(J)
            S_JJ = W[J, :]
            if targets is not None:
                t_new, n_new = targets[0][J], targets[1][J]
                d_tau = np.maximum(t_new, 0.0) - tau[J]
                d_nu = n_new - nu[J]
            else:
                s = np.diag(S_JJ)
                c_var = 1.0 / np.maximum(1.0 / s - tau[J], MIN_CAVITY_PRECISION)
                c_mean = (mean[J] / s - nu[J]) * c_var
                _, t_new, n_new = site_update(y[J], c_mean, c_var)
                d_tau = damping * (np.maximum(t_new, 0.0) - tau[J])
                d_nu = damping * (n_new - nu[J])
            A = np.eye(J.size) + d_tau[:, None] * S_JJ  # I + D Sigma_JJ
            sign, logdet = np.linalg.slogdet(A)
            if not (sign > 0 and math.isfinite(logdet)):
                message = f"block update lost positive definiteness in sweep {sweep}"
                break
            M = np.linalg.solve(A, np.diag(d_tau))
            M = 0.5 * (M + M.T)
            mean = mean + W @ (d_nu - M @ (mean[J] + S_JJ @ d_nu))
            # Sigma -= W M W^T as symmetric rank updates: M = F F^T - G G^T.
            F, G = split_factor(M, d_tau, S_JJ)
            Wc = W.astype(cov.dtype, copy=False)
            if F.shape[1]:
                cov.subtract(Wc @ F.astype(cov.dtype, copy=False), 1.0)
            if G.shape[1]:
                cov.subtract(Wc @ G.astype(cov.dtype, copy=False), -1.0)
            logdet_B += logdet
            tau[J] += d_tau
            nu[J] += d_nu
            updates += J.size
        if message:
            break
    else:
        message = f"no convergence after {max_sweeps} sweeps (site change {change:.2e} > {tol:g})"
    if not converged:  # the marginals of the sites as they are now
        var = cov.diagonal()
        mean = cov.matvec(nu)
    posterior = None
    if keep_posterior:
        sigma = cov.combined()
        sigma.setflags(write=False)
        posterior = WarmPosterior(sigma, tau.copy(), nu.copy(), logdet_B, kernel_key(K))
    return BlockSweepResult(converged, sweep, change, tau, nu, mean, np.maximum(var, 1e-300),
                            logdet_B, updates, damping, message, newton_steps, posterior,
                            value_correction)
