"""Structured EP for the K-class volume: the expanded system's factorization at O(K n^3).

The factorization is that of step EP on the (K-1)n class differences (flatvol.volume.multiclass):
one scalar site exp(-tau w^2 / 2 + nu w) per w_(p,k) = z_(f_p)(x_p) - z_k(x_p), k != f_p. So EP
here has the expanded ep-orthant's fixed points, and its log Z_EP is the same function of the
sites; only the posterior is computed differently. In the latent z (K outputs x n points,
prior I_K (x) K) the sites add a precision P that is block diagonal over points; point p's
K x K block is the Laplacian of a star around its own class f = f_p,

    P_p = sum_(k != f) tau_k (e_f - e_k)(e_f - e_k)^T
        = [diag(t) - t t^T / S]  +  u u^T / S,     t = (tau_k)_k (t_f = 0),  S = sum_k tau_k,
                                                  u = S e_f - t.

The bracket is the softmax Laplace structure of Rasmussen & Williams (2006, Sec. 3.5: diag(pi)
minus a rank-one term with pi summing to S per point), so (prior precision + bracket)^-1 costs
one Cholesky of B_c = I + D_c^1/2 K D_c^1/2 per class plus one n x n Cholesky of
M1 = S^-1/2 (sum_c D_c^1/2 B_c^-1 D_c^1/2) S^-1/2; the rank-n rest u u^T / S is one more
Woodbury step with M2 = I + U^T Sigma_1 U (n x n). About 5K + 4K + 1 n^3-flop units a
posterior (the per-class matrices G_c, the two rank-n corrections), memory 3 K n^2 floats;
never the ((K-1)n)^3 of the expanded system. Nested EP for the multinomial probit (Riihimaki,
Jylanki & Vehtari, JMLR 2013) exploits a similar per-class structure; the noise-free argmax
has no auxiliary noise variable, which leaves the extra rank-n term.

The schedule is parallel EP (every site from one posterior, then refactorize), damped and
Anderson-mixed as binary parallel step EP is (flatvol.volume.ep). It stops when the largest
undamped site change AND the posterior's movement per unit of step (mean in posterior standard
deviations, variance relative) are below tol: on correlated kernels hundreds of sites creep
together, each by less than tol, while the posterior and log Z_EP still move (on the site change
alone, plain damped sweeps stopped 0.48 log10 short of the fixed point at n = 300, K = 10, and
Anderson-mixed ones 2e-4 to 6e-4 short at n = 60-100: tests/volume/test_multiclass.py). The
value is log Z_EP by R&W eq. 3.65 (ep_parts.log_marginal) from the final sites and the posterior
they give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from flatvol.volume.ep_parts import (
    Posterior,
    anderson_step,
    cavity,
    log_marginal,
    site_update,
)

# Parallel step updates overshoot on correlated sites, as for binary parallel step EP (ep.py)
DEFAULT_DAMPING = 0.7
MIN_DAMPING = 0.05
# Anderson mixing over the last ANDERSON_DEPTH iterates, restarted (with half the damping) when
# the site change grows ANDERSON_RESTART-fold past its best, as binary parallel step EP does
ANDERSON_DEPTH = 5
ANDERSON_RESTART = 1e3


@dataclass(frozen=True)
class DifferencePosterior:
    """The posterior of the class differences under the sites; arrays (n, K), own class 0."""

    mean: np.ndarray  # E[w_(p,k)]
    var: np.ndarray  # Var[w_(p,k)]
    logdet: float  # log det(I + C T) = log det(I + (I_K (x) K) P), C the expanded covariance


@dataclass(frozen=True)
class MulticlassEPFit:
    """One structured EP run: log Z_EP in nats and the final sites, arrays (n, K)."""

    log_marginal_likelihood: float
    converged: bool
    iterations: int
    damping: float
    max_change: float
    site_precision: np.ndarray
    site_natural_mean: np.ndarray
    message: str = ""


def _cholesky(matrix: np.ndarray, what: str) -> np.ndarray:
    try:
        return scipy.linalg.cholesky(matrix, lower=True, check_finite=False)
    except np.linalg.LinAlgError as err:
        raise np.linalg.LinAlgError(f"Cholesky of {what} failed") from err


def difference_posterior(K: np.ndarray, labels: np.ndarray, tau: np.ndarray,
                         nu: np.ndarray) -> DifferencePosterior:
    """Posterior marginals of the class differences w under the sites (module doc).

    Args:
        K: the (n, n) float64 kernel of each output.
        labels: (n,) int classes f_p.
        tau: (n, K) site precisions, 0 in each point's own class, positive sum per point.
        nu: (n, K) site natural means, 0 in each point's own class.

    Returns:
        The DifferencePosterior.

    Raises:
        np.linalg.LinAlgError: a factorization failed (a point with no positive site, or
            overflowing site precisions).
    """
    n, n_classes = tau.shape
    points = np.arange(n)
    total = tau.sum(axis=1)
    root_total = np.sqrt(total)
    pi = tau / root_total[:, None]  # the bracket's rank-one vectors, t / sqrt(S)
    omega = -pi  # u / sqrt(S): sqrt(S) at the own class, -tau_k / sqrt(S) elsewhere
    omega[points, labels] = root_total
    G = np.empty((n_classes, n, n))  # (K^-1 + D_c)^-1 per class
    capacity = np.zeros((n, n))  # sum_c D_c^1/2 B_c^-1 D_c^1/2
    logdet = 0.0
    for c in range(n_classes):
        s = np.sqrt(tau[:, c])
        B = (s[:, None] * K) * s[None, :]
        B[np.diag_indices(n)] += 1.0
        L = _cholesky(B, f"I + D^1/2 K D^1/2 of class {c}")
        logdet += 2.0 * float(np.sum(np.log(np.diag(L))))
        W = scipy.linalg.solve_triangular(L, np.diag(s), lower=True, check_finite=False)
        capacity += W.T @ W
        V = W @ K  # L^-1 D^1/2 K: G_c = K - V^T V (R&W eq. 3.27's form, no K^-1)
        G[c] = K - V.T @ V
    M1 = capacity / np.outer(root_total, root_total)
    L1 = _cholesky(0.5 * (M1 + M1.T), "the rank-one correction's capacitance")
    logdet += 2.0 * float(np.sum(np.log(np.diag(L1))))
    # Sigma_1 = G + Z1 Z1^T with Z1 = (G Pi) L1^-T, stacked over classes as (K n, n)
    X1 = (G * pi.T[:, None, :]).reshape(n_classes * n, n)
    Z1 = scipy.linalg.solve_triangular(L1, X1.T, lower=True, check_finite=False).T
    Z1 = Z1.reshape(n_classes, n, n)
    # Y = Sigma_1 U: Y_c = G_c diag(omega_c) + Z1_c (Z1^T U)
    Z1tU = np.einsum("cpq,pc->qp", Z1, omega)
    Y = G * omega.T[:, None, :] + Z1 @ Z1tU
    M2 = np.einsum("qc,cqr->qr", omega, Y)
    M2[np.diag_indices(n)] += 1.0
    L2 = _cholesky(0.5 * (M2 + M2.T), "the rank-n correction's capacitance")
    logdet += 2.0 * float(np.sum(np.log(np.diag(L2))))
    Z2 = scipy.linalg.solve_triangular(L2, Y.reshape(n_classes * n, n).T, lower=True,
                                       check_finite=False).T.reshape(n_classes, n, n)
    # Sigma = G + Z1 Z1^T - Z2 Z2^T; Var(z_f - z_k) at a point reads rows p of each class
    own_Z1 = Z1[labels, points]  # (n, n): row p of Z1 in p's own class
    own_Z2 = Z2[labels, points]
    g_diag = np.einsum("cpp->cp", G)
    var = (g_diag[labels, points][:, None] + g_diag.T
           + np.sum((own_Z1[None] - Z1) ** 2, axis=2).T
           - np.sum((own_Z2[None] - Z2) ** 2, axis=2).T)
    # mu = Sigma h, h = E^T nu: the own class gets sum_k nu_k, class k gets -nu_k
    h = -nu.T.copy()
    h[labels, points] = nu.sum(axis=1)
    mu = (np.einsum("cpq,cq->cp", G, h)
          + Z1 @ np.einsum("cpq,cp->q", Z1, h)
          - Z2 @ np.einsum("cpq,cp->q", Z2, h))
    mean = mu[labels, points][:, None] - mu.T
    return DifferencePosterior(mean=mean, var=np.maximum(var, 1e-300), logdet=logdet)


def run_multiclass_ep(K: np.ndarray, labels: np.ndarray, n_classes: int, *, tol: float = 1e-3,
                      max_iter: int = 300, damping: float = DEFAULT_DAMPING) -> MulticlassEPFit:
    """Structured step EP for V(f) on a validated kernel and labels (no input checks).

    Args:
        K: (n, n) float64 kernel, positive definite.
        labels: (n,) int classes in 0..n_classes-1.
        n_classes: K >= 2.
        tol: convergence when the largest undamped site change, in posterior standard
            deviations, and the posterior's movement per unit of step are below tol (log Z_EP
            is stationary at the fixed point: its error is second order in them).
        max_iter: parallel sweeps at most.
        damping: the damping in (0, 1]; halved (down to 0.05) and the mixing restarted when
            the site change grows ANDERSON_RESTART-fold past its best.

    Returns:
        The MulticlassEPFit; converged False (message says why) when the sweeps ran out, a
        factorization failed or the value is not finite.
    """
    n = labels.size
    rival = np.arange(n_classes)[None, :] != labels[:, None]
    m = int(rival.sum())
    tau = np.zeros((n, n_classes))
    nu = np.zeros((n, n_classes))
    # zero sites: w_(p,k) = z_f(x_p) - z_k(x_p) has mean 0 and variance 2 K_pp under the prior
    post = DifferencePosterior(np.zeros((n, n_classes)),
                               np.broadcast_to(2.0 * np.diag(K)[:, None], (n, n_classes)), 0.0)
    ones = np.ones(m)
    converged, message = False, ""
    change = best = movement = math.inf
    value = math.nan
    iterations = 0
    last_step = 0.0  # the damping of the step that made `post` (0: none yet)
    history_x: list[np.ndarray] = []
    history_f: list[np.ndarray] = []
    previous_flat: Posterior | None = None
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        flat = Posterior(post.mean[rival], post.var[rival], post.logdet)
        if previous_flat is not None:
            # How far the last step moved the posterior, per unit of step: the site change
            # alone misses the slow collective mode of many correlated sites (each site moves
            # a little, the posterior a lot), where EP would stop far from its fixed point.
            sd = np.sqrt(flat.var)
            movement = float(max(np.max(np.abs(flat.mean - previous_flat.mean) / sd),
                                 np.max(np.abs(flat.var - previous_flat.var) / flat.var)))
            movement /= last_step
        cav_mean, cav_var = cavity(flat, tau[rival], nu[rival])
        log_Z, tau_new, nu_new = site_update(ones, cav_mean, cav_var, 0.0)
        d_tau, d_nu = tau_new - tau[rival], nu_new - nu[rival]
        if not (np.all(np.isfinite(d_tau)) and np.all(np.isfinite(d_nu))):
            message = f"non-finite site update at iteration {iterations}"
            break
        scale = np.concatenate([flat.var, np.sqrt(flat.var)])
        step = np.concatenate([d_tau, d_nu])
        change = float(np.max(np.abs(step) * scale))
        if change < tol and movement < tol:
            converged = True
            value = log_marginal(log_Z, cav_mean, cav_var, tau[rival], nu[rival], flat)
            break
        x = np.concatenate([tau[rival], nu[rival]])
        if change > ANDERSON_RESTART * best:  # diverging: restart mixing with more damping
            history_x.clear()
            history_f.clear()
            damping = max(0.5 * damping, MIN_DAMPING)
        best = min(best, change)
        candidate = anderson_step(history_x, history_f, x, damping * step, scale,
                                  ANDERSON_DEPTH, m)
        # the step's size relative to the undamped one, for the movement per unit of step
        last_step = max(float(np.max(np.abs(candidate - x) * scale)) / change, MIN_DAMPING)
        tau[rival], nu[rival] = np.maximum(candidate[:m], 0.0), candidate[m:]
        previous_flat = flat
        try:
            post = difference_posterior(K, labels, tau, nu)
        except np.linalg.LinAlgError as err:
            message = f"{err} at iteration {iterations}"
            break
    else:
        message = (f"no convergence after {max_iter} iterations (site change {change:.2e}, "
                   f"posterior movement {movement:.2e}; tol {tol:g})")
    if converged and not math.isfinite(value):
        converged, message = False, "log marginal likelihood is not finite"
    return MulticlassEPFit(log_marginal_likelihood=float(value), converged=converged,
                           iterations=iterations, damping=damping, max_change=change,
                           site_precision=tau, site_natural_mean=nu, message=message)
