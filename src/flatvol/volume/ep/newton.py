"""A Newton step on the EP fixed point, and the change of log Z_EP it predicts.

EP's sites theta = (tau, nu) are a fixed point of the parallel update map F: from theta's
posterior marginals (var, mean) take each site's cavity and moment-match it. Near the fixed
point theta* a Newton step solves (I - dF) delta = F(theta) - theta. Only the marginals couple
the sites, and their first-order change along (dtau, dnu) needs two mat-vecs with the posterior
covariance Sigma and one with its elementwise square:
    d var = -(Sigma o Sigma) dtau,    d mean = Sigma dnu - Sigma (mean o dtau),
so GMRES solves the system in O(n^2) per iteration (at most GMRES_MAX_MATVECS of them),
a small fraction of the n^3 that moving the sites costs. The per-site derivative of the
moment match is a central difference of the site update itself.

log Z_EP is stationary at theta*: its value at theta differs from the fixed point's by
-1/2 g.delta + O(|delta|^3) (g its gradient along delta), so once the step is small the
predicted change 1/2 g.delta tells how far the value still is from the fixed point's; that is
the stopping rule of flatvol.volume.ep.blocks (it then reports the value at theta).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import LinearOperator, gmres

from flatvol.volume.ep.sites import SiteUpdate

MatVec = Callable[[np.ndarray], np.ndarray]
Value = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float], float]

GMRES_RTOL = 1e-3  # the step needs no more: the next one corrects it
GMRES_MAX_MATVECS = 120
_FD_STEP = 1e-6  # central difference of the moment match along the (scaled) direction
_VALUE_FD_STEP = 1e-4


def marginal_change(mean: np.ndarray, d_tau: np.ndarray, d_nu: np.ndarray, sigma_mv: MatVec,
                    sigma2_mv: MatVec) -> tuple[np.ndarray, np.ndarray]:
    """First-order change of the posterior marginals when the sites move by (d_tau, d_nu).

    Args:
        mean: the posterior mean Sigma nu now.
        d_tau, d_nu: the sites' change.
        sigma_mv, sigma2_mv: v -> Sigma v and v -> (Sigma o Sigma) v.

    Returns:
        (d var, d mean) = (-(Sigma o Sigma) d_tau, Sigma (d_nu - mean o d_tau)).
    """
    return -sigma2_mv(d_tau), sigma_mv(d_nu - mean * d_tau)


@dataclass(frozen=True)
class NewtonStep:
    """The Newton step's site targets, its size and the value change it predicts."""

    tau: np.ndarray
    nu: np.ndarray
    max_move: float  # largest site change of the step, in posterior standard deviations
    predicted_change: float  # log Z_EP(theta*) - log Z_EP(theta), to second order
    matvecs: int
    solved: bool  # GMRES reached GMRES_RTOL


def newton_step(y: np.ndarray, tau: np.ndarray, nu: np.ndarray, var: np.ndarray,
                mean: np.ndarray, logdet_B: float, sigma_mv: MatVec, sigma2_mv: MatVec,
                site_update: SiteUpdate, value: Value) -> NewtonStep | None:
    """One Newton step for the EP sites at theta = (tau, nu).

    Args:
        y: (n,) signs.
        tau, nu: the sites now; var, mean, logdet_B: their posterior marginals and
            log det(I + S^1/2 K S^1/2).
        sigma_mv, sigma2_mv: v -> Sigma v and v -> (Sigma o Sigma) v.
        site_update: (y, cavity mean, cavity variance) -> (log Z_i, tau_i, nu_i).
        value: (tau, nu, var, mean, logdet_B) -> log Z_EP.

    Returns:
        The NewtonStep, or None where a derivative is not finite (the caller keeps sweeping).
    """
    n = y.size
    cav_prec = 1.0 / var - tau
    cav_nat = mean / var - nu
    if not np.all(cav_prec > 0):
        return None
    cav_var, cav_mean = 1.0 / cav_prec, cav_nat / cav_prec
    _, tau_full, nu_full = site_update(y, cav_mean, cav_var)
    # Unknowns in posterior standard deviations, as the convergence test measures them.
    scale = np.concatenate([var, np.sqrt(var)])
    residual = np.concatenate([tau_full - tau, nu_full - nu]) * scale
    count = [0]

    def apply(u: np.ndarray) -> np.ndarray:  # (I - dF) in scaled units
        count[0] += 1
        d = u / scale
        d_tau, d_nu = d[:n], d[n:]
        d_var, d_mean = marginal_change(mean, d_tau, d_nu, sigma_mv, sigma2_mv)
        d_prec = -d_var / var**2 - d_tau
        d_nat = d_mean / var - mean * d_var / var**2 - d_nu
        d_cvar = -d_prec / cav_prec**2
        d_cmean = d_nat / cav_prec - cav_nat * d_prec / cav_prec**2
        h = _FD_STEP / max(1.0, float(np.max(np.abs(d_cvar / cav_var))))
        _, t_plus, n_plus = site_update(y, cav_mean + h * d_cmean, cav_var + h * d_cvar)
        _, t_minus, n_minus = site_update(y, cav_mean - h * d_cmean, cav_var - h * d_cvar)
        d_site = np.concatenate([t_plus - t_minus, n_plus - n_minus]) / (2.0 * h)
        return u - d_site * scale

    if not np.all(np.isfinite(residual)):
        return None
    operator = LinearOperator((2 * n, 2 * n), matvec=apply, dtype=np.float64)
    u, info = gmres(operator, residual, rtol=GMRES_RTOL, restart=GMRES_MAX_MATVECS,
                    maxiter=1)
    if not np.all(np.isfinite(u)):
        return None
    d = u / scale
    d_tau, d_nu = d[:n], d[n:]
    new_tau = np.maximum(tau + d_tau, 0.0)
    d_tau = new_tau - tau
    # log Z_EP along the step, to first order in the marginals: its slope g.delta.
    d_var, d_mean = marginal_change(mean, d_tau, d_nu, sigma_mv, sigma2_mv)
    d_logdet = float(var @ d_tau)  # d log det(K^-1 + S) / d tau_j = Sigma_jj
    h = _VALUE_FD_STEP
    plus = value(tau + h * d_tau, nu + h * d_nu, var + h * d_var, mean + h * d_mean,
                 logdet_B + h * d_logdet)
    minus = value(tau - h * d_tau, nu - h * d_nu, var - h * d_var, mean - h * d_mean,
                  logdet_B - h * d_logdet)
    slope = (plus - minus) / (2.0 * h)
    moves = np.maximum(np.abs(d_tau) * var, np.abs(d_nu) * np.sqrt(var))
    if not (math.isfinite(slope) and np.all(np.isfinite(moves))):
        return None
    return NewtonStep(new_tau, nu + d_nu, float(np.max(moves)), 0.5 * slope, count[0],
                      info == 0)
