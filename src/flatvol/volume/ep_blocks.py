"""Block-sequential EP: sites updated a block at a time against one running posterior covariance.

Parallel EP (flatvol.volume.ep) refactorizes I + S^1/2 K S^1/2 after every update of all n
sites, about 1.75 Choleskys a time, and on the strongly correlated NNGP kernels it needs 15-20
such iterations: all sites see the same old posterior and overcount their shared evidence.
Here the posterior covariance Sigma = (K^-1 + S)^-1 is kept as one n x n buffer (its lower
triangle) and updated after each block J of sites by the Woodbury identity
    Sigma <- Sigma - Sigma[:, J] M Sigma[J, :],   M = D (I + Sigma_JJ D)^-1,  D = diag(d tau_J),
a symmetric rank-|J| update (BLAS syrk, n^2 |J| flops), so a full sweep costs n^3 flops (about 3
Choleskys) and later blocks see the earlier ones' evidence. After the first two sweeps only the
sites that still move are updated. log det(I + S^1/2 K S^1/2) accumulates by the matrix
determinant lemma, log det(I + D Sigma_JJ) per block; the mean Sigma nu is recomputed at every
sweep (one symmetric mat-vec), so it does not drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg.blas import dsymv, dsyrk

BLOCK = 64
# After the first two sweeps, a sweep updates only sites whose change exceeds this fraction of
# tol (the others are left for a later sweep, if any is still needed).
_MOVING = 0.5
_MIN_CAVITY_PRECISION = 1e-300


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


def _symmetric_columns(sigma_lower: np.ndarray, J: np.ndarray) -> np.ndarray:
    """Sigma[:, J] (J sorted) from an F-ordered matrix whose lower triangle holds Sigma.

    Rows i >= j come from column j; rows i < j from row j, read only up to max(J) (the row
    gather is strided, so it is kept short).
    """
    W = sigma_lower[:, J]
    top = int(J[-1])
    rows = np.arange(top)[:, None]
    W[:top] = np.where(rows >= J[None, :], W[:top], sigma_lower[J, :top].T)
    return W


def block_sequential_ep(
    K: np.ndarray,
    y: np.ndarray,
    site_update,
    *,
    tol: float,
    max_sweeps: int,
    block: int | None = None,
    init_sites: tuple[np.ndarray, np.ndarray] | None = None,
) -> BlockSweepResult:
    """Run block-sequential EP on a validated float64 kernel K.

    Args:
        K: (n, n) symmetric positive definite float64 kernel.
        y: (n,) signs in {-1, +1}.
        site_update: (y_J, cavity mean, cavity variance) -> (log Z, tau, nu), the moment match.
        tol: convergence when every site's change, in posterior standard deviations, is < tol.
        max_sweeps: the most sweeps over the sites.
        block: sites per Woodbury update; default min(BLOCK, n // 16) (at least 1), so small
            problems run site by site, where within-block overcounting could oscillate.
        init_sites: warm start (tau, nu): the first sweep moves the sites there (it builds the
            posterior covariance of those sites, block by block) instead of moment matching.

    Returns:
        BlockSweepResult at the last sweep's start (the posterior of its sites).
    """
    n = K.shape[0]
    sigma = np.array(K, dtype=np.float64, order="F", copy=True)  # lower triangle is used
    tau = np.zeros(n)
    nu = np.zeros(n)
    logdet_B = 0.0
    updates = 0
    block = block or max(1, min(BLOCK, n // 16))
    damping = 1.0
    previous_change = math.inf
    change = math.inf
    message = ""
    converged = False
    sweep = 0
    mean = np.zeros(n)
    var = np.diag(sigma).copy()
    for sweep in range(1, max_sweeps + 1):  # noqa: B007 - the count is reported
        var = np.diag(sigma).copy()
        mean = dsymv(1.0, sigma, nu, lower=1)
        cav_var = 1.0 / np.maximum(1.0 / var - tau, _MIN_CAVITY_PRECISION)
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
        if sweep > 2 and change > previous_change:  # oscillating: damp the moves
            damping = max(0.5 * damping, 0.1)
        previous_change = change
        jump = init_sites is not None and sweep == 1
        moving = np.flatnonzero(moves > (_MOVING * tol if sweep > 2 else -1.0))
        for start in range(0, moving.size, block):
            J = moving[start : start + block]
            W = _symmetric_columns(sigma, J)
            S_JJ = W[J, :]
            s = np.diag(S_JJ)
            c_var = 1.0 / np.maximum(1.0 / s - tau[J], _MIN_CAVITY_PRECISION)
            c_mean = (mean[J] / s - nu[J]) * c_var
            if jump:
                t_new, n_new = init_sites[0][J], init_sites[1][J]
            else:
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
            mean = mean + W @ d_nu - W @ (M @ (mean[J] + S_JJ @ d_nu))
            # Sigma -= W M W^T as two symmetric rank updates (M may be indefinite).
            lam, V = np.linalg.eigh(M)
            P = W @ (V * np.sqrt(np.abs(lam)))
            pos = lam > 0
            if np.any(pos):
                sigma = dsyrk(-1.0, P[:, pos], beta=1.0, c=sigma, lower=1, overwrite_c=1)
            if np.any(~pos):
                sigma = dsyrk(1.0, P[:, ~pos], beta=1.0, c=sigma, lower=1, overwrite_c=1)
            logdet_B += logdet
            tau[J] += d_tau
            nu[J] += d_nu
            updates += J.size
        if message:
            break
    else:
        message = f"no convergence after {max_sweeps} sweeps (site change {change:.2e} > {tol:g})"
    if not converged:  # the marginals of the sites as they are now
        var = np.diag(sigma).copy()
        mean = dsymv(1.0, sigma, nu, lower=1)
    return BlockSweepResult(converged, sweep, change, tau, nu, mean, np.maximum(var, 1e-300),
                            logdet_B, updates, damping, message)
