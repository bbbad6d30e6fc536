"""Structured EP for the K-class volume: the expanded system's factorization at O(K n^3),
streamed class by class in O(n^2) memory.

The factorization is that of step EP on the (K-1)n class differences (flatvol.volume.multiclass):
one scalar site exp(-tau w^2 / 2 + nu w) per w_(p,k) = z_(f_p)(x_p) - z_k(x_p), k != f_p. So EP
here has the expanded ep-orthant's fixed points, and its log Z_EP is the same function of the
sites; only the posterior is computed differently. In the latent z (K outputs x n points,
prior I_K (x) K) the sites add a precision P that is block diagonal over points; point p's
K x K block, with f = f_p, t = (tau_k)_k (t_f = 0) and S = sum_k tau_k, is

    P_p = sum_(k != f) tau_k (e_f - e_k)(e_f - e_k)^T = diag(a) - (e_f t^T + t e_f^T),
    a = t + S e_f,
        = diag(a) - pi pi^T + omega omega^T,   pi, omega = (sqrt(S) e_f +- t / sqrt(S)) / sqrt(2).

Every diagonal entry a is positive, so each class c has G_c = (K^-1 + diag(a_c))^-1 =
A^-1/2 (I - B_c^-1) A^-1/2 with B_c = I + A^1/2 K A^1/2: one Cholesky and one inverse from it
(LAPACK potrf + potri, n^3 flops), no product with K (rows with a_i K_ii < SMALL_SITE, where
I - B^-1 cancels, come from K - K A^1/2 B^-1 A^1/2 K instead). diag(a) - pi pi^T is positive
semi-definite at every point (Cauchy-Schwarz: (t.v)^2 <= S sum_k t_k v_k^2), so the rank-2n
coupling U J U^T, U = [Pi, Omega], J = diag(-I, I), is one Woodbury step whose capacitance
C = J + U^T G U factors as two n x n Choleskys: M1 = I - Pi^T G Pi (positive definite by the
above) and its Schur complement M2 = I + Omega^T G Omega + E^T E, E = -L1^-1 Pi^T G Omega.
The blocks Pi^T G Pi, Pi^T G Omega, Omega^T G Omega are sums over classes of G_c scaled by
diagonals (n^2 each), and Sigma = G - R C^-1 R^T with R_c = G_c [Pi_c, Omega_c], so the
marginals of w need per class only diag(G_c H_c G_c), H_c = [Pi_c, Omega_c] C^-1 [.]^T (one
n x n product, 2n^3 flops), and rows-times-rows against the own class's rows R_(f_p)[p]
(n^2). Two passes over the classes (the capacitance needs every class; the marginals need
C^-1): G_c is kept between them while K n^2 floats fit in `cache_bytes`, else recomputed, so
a posterior holds about nine n x n float64 arrays whatever K (tests/volume/test_multiclass.py
bounds it with tracemalloc; bench/RESULTS.md has the peak RSS at n = 7000). Cost a
posterior: K (3 n^3 [+ n^3 recomputed]) flops + about 16 n^3 for C^-1 (triangular BLAS) and
the own rows' products, about 46 n^3 at K = 10, half the previous version's (which formed
G_c = K - V^T V and stacked (K, n, n) arrays: 9K + 1 n^3 units, 3 K n^2 floats).
log det(I + (I_K (x) K) P) = sum_c log det B_c + log det M1 + log det M2.

The marginals of all (K-1)n differences need, per class, a factorization of its own n x n
system and n quadratic forms in a dense n x n matrix: about 3 n^3 flops a class a sweep is the
floor of this factorization, so one sweep at K = 10 costs about as much as 140 Choleskys of
the same n (flops), and the issue's 30 Choleskys for a whole K = 10 run would need a schedule
of well under one sweep; parallel EP takes 10-20 sweeps on network-like labellings and 50-70
on near-constant ones (bench/RESULTS.md, "Multi-class volume").

Nested EP for the multinomial probit (Riihimaki, Jylanki & Vehtari, JMLR 2013) exploits a
similar per-class structure; the noise-free argmax has no auxiliary noise variable, which
leaves the rank-2n coupling.

The schedule is parallel EP (every site from one posterior, then refactorize), damped and
Anderson-mixed (flatvol.volume.ep.sites.anderson_step): the binary block solver's running
covariance (flatvol.volume.ep.blocks) does not apply to this structured posterior. It stops
when the largest undamped site change AND the posterior's movement per unit of step (mean in
posterior standard deviations, variance relative) are below tol: on correlated kernels hundreds
of sites creep together, each by less than tol, while the posterior and log Z_EP still move (on
the site change alone, plain damped sweeps stopped 0.48 log10 short of the fixed point at
n = 300, K = 10, and Anderson-mixed ones 2e-4 to 6e-4 short at n = 60-100:
tests/volume/test_multiclass.py). The value is log Z_EP by R&W eq. 3.65
(flatvol.volume.ep.sites.log_marginal) from the final sites and the posterior
they give. A warm start (`init_sites`: a neighbouring labelling's final sites, e.g. the true
labels') starts from their posterior instead of the prior; the fixed point is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.linalg import blas, get_lapack_funcs, lapack

from flatvol.volume.ep.sites import (
    Posterior,
    anderson_step,
    cavity,
    log_marginal,
    site_update,
)

# Parallel step updates overshoot on correlated sites (2-cycles): damped
DEFAULT_DAMPING = 0.7
MIN_DAMPING = 0.05
# Anderson mixing over the last ANDERSON_DEPTH iterates, restarted (with half the damping) when
# the site change grows ANDERSON_RESTART-fold past its best
ANDERSON_DEPTH = 5
ANDERSON_RESTART = 1e3
# G_c of every class is kept between the two passes while K n^2 float64 fit in this (else
# recomputed: one more potrf + potri a class); 1 GiB keeps it up to n = 3600 at K = 10.
DEFAULT_CACHE_BYTES = 1 << 30
# Rows per chunk of the row-wise products: temporaries of at most ROW_CHUNK x n and n^2 / 8
# (never n x n), in blocks still large enough for BLAS-3 speed.
ROW_CHUNK = 512
# a_i K_ii below this: G's row i from K - K A^1/2 B^-1 A^1/2 K, as (1 - [B^-1]_ii) / a_i
# loses about eps / (a_i K_ii) relative to cancellation (R&W Alg. 3.6 splits likewise).
SMALL_SITE = 1e-2


@dataclass(frozen=True)
class DifferencePosterior:
    """The posterior of the class differences under the sites; arrays (n, K), own class 0."""

    mean: np.ndarray  # E[w_(p,k)] (0 at k = f_p)
    var: np.ndarray  # Var[w_(p,k)] (0 at k = f_p)
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


def _row_chunks(n: int) -> list[slice]:
    """Row blocks of ROW_CHUNK rows, at most n / 8 (at least 16)."""
    rows = max(16, min(ROW_CHUNK, n // 8))
    return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]


def _mirror_lower(A: np.ndarray) -> None:
    """Copy the lower triangle of a square matrix onto its upper one, in row blocks (no n x n
    index arrays or temporaries)."""
    for chunk in _row_chunks(A.shape[0]):
        i0, i1 = chunk.start, chunk.stop
        A[i0:i1, i1:] = A[i1:, i0:i1].T
        block = A[i0:i1, i0:i1]
        upper = np.triu_indices(i1 - i0, 1)
        block[upper] = block.T[upper]


def _row_dots(A: np.ndarray, B: np.ndarray, H: np.ndarray | None = None) -> np.ndarray:
    """rowsum(A o B), or rowsum((A H) o B) with H, in chunks of ROW_CHUNK rows."""
    out = np.empty(A.shape[0])
    for rows in _row_chunks(A.shape[0]):
        left = A[rows] if H is None else A[rows] @ H
        out[rows] = np.einsum("ij,ij->i", left, B[rows])
    return out


def _cholesky(matrix: np.ndarray, what: str) -> np.ndarray:
    """Lower Cholesky factor, in place of `matrix` (symmetric: its lower triangle is read)."""
    try:
        return scipy.linalg.cholesky(matrix, lower=True, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError as err:
        raise np.linalg.LinAlgError(f"Cholesky of {what} failed") from err


def class_covariance(K: np.ndarray, a: np.ndarray, out: np.ndarray) -> float:
    """G = (K^-1 + diag(a))^-1 of one class, written into `out` (module doc).

    Args:
        K: (n, n) float64 kernel.
        a: (n,) diagonal site precisions of the class, >= 0.
        out: (n, n) C-ordered float64 buffer for G (also the factorization's workspace).

    Returns:
        log det(I + A^1/2 K A^1/2).

    Raises:
        np.linalg.LinAlgError: the factorization failed (overflowing site precisions).
    """
    n = K.shape[0]
    s = np.sqrt(a)
    np.multiply(K, s[:, None], out=out)
    out *= s[None, :]
    out.flat[:: n + 1] += 1.0
    F = out.T  # the same symmetric matrix, Fortran-ordered: LAPACK works in place
    potrf, potri = get_lapack_funcs(("potrf", "potri"), (F,))
    U, info = potrf(F, lower=0, overwrite_a=1, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError("Cholesky of I + A^1/2 K A^1/2 failed")
    logdet = 2.0 * float(np.sum(np.log(np.diag(U))))
    inverse, info = potri(U, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError("inverse of I + A^1/2 K A^1/2 failed")
    if not np.shares_memory(inverse, out):
        out.T[...] = inverse
    _mirror_lower(out)  # LAPACK's (Fortran) upper triangle is the C-ordered lower one
    small = np.flatnonzero(a * np.diag(K) < SMALL_SITE)
    if small.size:
        rows = K[small] - ((K[small] * s[None, :]) @ out * s[None, :]) @ K
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_s = 1.0 / s  # inf where a = 0: those rows are small and replaced below
        out *= -1.0
        out.flat[:: n + 1] += 1.0
        out *= inv_s[:, None]
        out *= inv_s[None, :]
    if small.size:
        out[small] = rows
        out[:, small] = rows.T
    return logdet


@dataclass(frozen=True)
class CapacitanceInverse:
    """C^-1 = [[inv11, inv12], [inv21, inv22]] of the coupling's capacitance (module doc);
    C-ordered, so that row blocks read contiguously (inv21 = inv12^T)."""

    inv11: np.ndarray
    inv12: np.ndarray
    inv21: np.ndarray
    inv22: np.ndarray
    logdet: float  # log det M1 + log det M2


def capacitance_inverse(PGP: np.ndarray, PGO: np.ndarray, OGO: np.ndarray) -> CapacitanceInverse:
    """Invert C = [[-(I - PGP), PGO], [PGO^T, I + OGO]] = F diag(-I, I) F^T by blocks.

    F = [[L1, 0], [E^T, L2]] with L1 L1^T = M1 = I - PGP, E = -L1^-1 PGO and L2 L2^T = M2 =
    I + OGO + E^T E, so C^-1 = F^-T diag(-I, I) F^-1, F^-1 = [[L1^-1, 0], [A, L2^-1]] with
    A = -L2^-1 E^T L1^-1: triangular BLAS/LAPACK throughout, about 8 n^3 flops.

    Args:
        PGP, PGO, OGO: the (n, n) Fortran-ordered blocks Pi^T G Pi, Pi^T G Omega and
            Omega^T G Omega; overwritten (they become the factors' workspace).

    Returns:
        The CapacitanceInverse (one n x n copy more: inv12 in both orders).

    Raises:
        np.linalg.LinAlgError: M1 or M2 is not positive definite (overflowing sites).
    """
    n = PGP.shape[0]
    PGP *= -1.0
    PGP.flat[:: n + 1] += 1.0
    L1 = _cholesky(PGP, "the coupling's capacitance I - Pi^T G Pi")
    E = scipy.linalg.solve_triangular(L1, PGO, lower=True, overwrite_b=True,
                                      check_finite=False)
    E *= -1.0
    M2 = blas.dsyrk(1.0, E, beta=1.0, c=OGO, trans=1, lower=1, overwrite_c=1)  # lower only
    M2.flat[:: n + 1] += 1.0
    L2 = _cholesky(M2, "the coupling's Schur complement")
    logdet = 2.0 * float(np.sum(np.log(np.diag(L1))) + np.sum(np.log(np.diag(L2))))
    L1i = lapack.dtrtri(L1, lower=1, overwrite_c=1)[0]  # upper triangle stays 0
    L2i = lapack.dtrtri(L2, lower=1, overwrite_c=1)[0]
    # A^T = -(L1^-T E) L2^-T, in place of E
    At = blas.dtrmm(1.0, L1i, E, side=0, lower=1, trans_a=1, overwrite_b=1)
    At = blas.dtrmm(-1.0, L2i, At, side=1, lower=1, trans_a=1, overwrite_b=1)
    inv11 = lapack.dlauum(L1i, lower=1, overwrite_c=1)[0]  # L1^-T L1^-1 (lower)
    inv11 = blas.dsyrk(1.0, At, beta=-1.0, c=inv11, lower=1, overwrite_c=1)  # A^T A - that
    inv12 = blas.dtrmm(1.0, L2i, At, side=1, lower=1, overwrite_b=1)  # A^T L2^-1
    inv22 = lapack.dlauum(L2i, lower=1, overwrite_c=1)[0]  # L2^-T L2^-1 (lower)
    _mirror_lower(inv11)
    _mirror_lower(inv22)
    # symmetric inv11, inv22: their transposes are the same matrices, C-ordered
    return CapacitanceInverse(inv11.T, np.ascontiguousarray(inv12), inv12.T, inv22.T, logdet)


def difference_posterior(K: np.ndarray, labels: np.ndarray, tau: np.ndarray, nu: np.ndarray,
                         *, cache_bytes: int = DEFAULT_CACHE_BYTES) -> DifferencePosterior:
    """Posterior marginals of the class differences w under the sites (module doc).

    Args:
        K: the (n, n) float64 kernel of each output (not modified).
        labels: (n,) int classes f_p.
        tau: (n, K) site precisions >= 0, 0 in each point's own class.
        nu: (n, K) site natural means, 0 in each point's own class.
        cache_bytes: keep every class's G_c between the two passes while K n^2 float64 fit
            in this many bytes; else recompute it (then about seven n x n arrays at once,
            whatever K).

    Returns:
        The DifferencePosterior.

    Raises:
        np.linalg.LinAlgError: a factorization failed (overflowing site precisions).
    """
    n, n_classes = tau.shape
    own = np.zeros((n, n_classes), dtype=bool)
    own[np.arange(n), labels] = True
    total = tau.sum(axis=1)
    root = np.sqrt(total)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(root[:, None] > 0, tau / root[:, None], 0.0)
    own_root = np.where(own, root[:, None], 0.0)
    a = np.where(own, total[:, None], tau)
    pi = (own_root + scaled) / math.sqrt(2.0)
    omega = (own_root - scaled) / math.sqrt(2.0)
    h = np.where(own, nu.sum(axis=1)[:, None], -nu)  # E^T nu: the sites' natural mean in z
    cache: list[np.ndarray] | None = [] if n_classes * n * n * 8 <= cache_bytes else None
    chunks = _row_chunks(n)
    # Pass 1: per class G_c, its terms of the capacitance and the own class's rows of R.
    G = np.empty((n, n))
    PGP, PGO, OGO = (np.zeros((n, n), order="F") for _ in range(3))
    own_R1, own_R2 = np.empty((n, n)), np.empty((n, n))
    g_diag, Gh = np.empty((n, n_classes)), np.empty((n, n_classes))
    rh1, rh2 = np.zeros(n), np.zeros(n)  # R^T h
    logdet = 0.0
    for c in range(n_classes):
        logdet += class_covariance(K, a[:, c], G)
        p_c, o_c = pi[:, c], omega[:, c]
        for r in chunks:
            PGP[r] += p_c[r, None] * G[r] * p_c[None, :]
            PGO[r] += p_c[r, None] * G[r] * o_c[None, :]
            OGO[r] += o_c[r, None] * G[r] * o_c[None, :]
        g_diag[:, c] = np.diag(G)
        Gh[:, c] = G @ h[:, c]
        rh1 += p_c * Gh[:, c]
        rh2 += o_c * Gh[:, c]
        rows = np.flatnonzero(labels == c)
        own_R1[rows] = G[rows] * p_c[None, :]
        own_R2[rows] = G[rows] * o_c[None, :]
        if cache is not None:
            cache.append(G.copy())
    inv = capacitance_inverse(PGP, PGO, OGO)
    del PGP, PGO, OGO
    logdet += inv.logdet
    x1 = inv.inv11 @ rh1 + inv.inv12 @ rh2  # C^-1 R^T h
    x2 = inv.inv21 @ rh1 + inv.inv22 @ rh2
    # The own rows times C^-1, in place of the own rows (row chunks: no n x n temporary),
    # and their quadratic forms: the own class's correction.
    own_q = np.empty(n)
    for r in chunks:
        C1 = own_R1[r] @ inv.inv11 + own_R2[r] @ inv.inv21
        C2 = own_R1[r] @ inv.inv12 + own_R2[r] @ inv.inv22
        own_q[r] = (np.einsum("ij,ij->i", own_R1[r], C1)
                    + np.einsum("ij,ij->i", own_R2[r], C2))
        own_R1[r], own_R2[r] = C1, C2
    own_C1, own_C2 = own_R1, own_R2
    # Pass 2: per class the correction's diagonal diag(G H G), H = [Pi, Omega] C^-1 [.]^T,
    # the cross terms with the own class, and the posterior mean.
    quad, cross, mu = (np.empty((n, n_classes)) for _ in range(3))
    H = np.empty((n, n))
    for c in range(n_classes):
        if cache is not None:
            G = cache[c]
        else:
            class_covariance(K, a[:, c], G)
        p_c, o_c = pi[:, c], omega[:, c]
        for r in chunks:
            H[r] = (p_c[r, None] * (inv.inv11[r] * p_c[None, :] + inv.inv12[r] * o_c[None, :])
                    + o_c[r, None] * (inv.inv21[r] * p_c[None, :]
                                      + inv.inv22[r] * o_c[None, :]))
        quad[:, c] = _row_dots(G, G, H)
        for r in chunks:
            H[r] = own_C1[r] * p_c[None, :] + own_C2[r] * o_c[None, :]
        cross[:, c] = _row_dots(H, G)
        mu[:, c] = Gh[:, c] - G @ (p_c * x1 + o_c * x2)
    # Var(z_f - z_k) = Sigma_ff + Sigma_kk - 2 Sigma_fk at each point, Sigma = G - R C^-1 R^T
    # and G has no cross-class terms
    own_var = g_diag[own] - own_q
    var = own_var[:, None] + g_diag - quad + 2.0 * cross
    mean = mu[own][:, None] - mu
    var[own] = 0.0
    mean[own] = 0.0
    return DifferencePosterior(mean=mean, var=np.maximum(var, 1e-300), logdet=logdet)


def run_multiclass_ep(K: np.ndarray, labels: np.ndarray, n_classes: int, *, tol: float = 1e-3,
                      max_iter: int = 300, damping: float = DEFAULT_DAMPING,
                      cache_bytes: int = DEFAULT_CACHE_BYTES,
                      init_sites: tuple[np.ndarray, np.ndarray] | None = None
                      ) -> MulticlassEPFit:
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
        cache_bytes: the per-class covariances are kept within a posterior while they fit
            in this many bytes (`difference_posterior`).
        init_sites: warm start: the (n, K) sites (tau, nu) of another labelling on the same
            kernel (a neighbour's final sites, e.g. the true labels'); a point whose label
            differs starts with no sites. The fixed point is the cold start's (the same
            equations); sites whose posterior cannot be factorized or is not finite are
            dropped (a cold start): a warm start changes the sweeps, never the value.

    Returns:
        The MulticlassEPFit; converged False (message says why) when the sweeps ran out, a
        factorization failed or the value is not finite.

    Raises:
        ValueError: init_sites not of shape (n, n_classes).
    """
    n = labels.size
    rival = np.arange(n_classes)[None, :] != labels[:, None]
    m = int(rival.sum())
    tau = np.zeros((n, n_classes))
    nu = np.zeros((n, n_classes))
    # zero sites: w_(p,k) = z_f(x_p) - z_k(x_p) has mean 0 and variance 2 K_pp under the prior
    post = DifferencePosterior(np.zeros((n, n_classes)),
                               np.broadcast_to(2.0 * np.diag(K)[:, None], (n, n_classes)), 0.0)
    if init_sites is not None:
        # a neighbour's sites fit where its labels are ours: its own-class entries are zero
        # exactly there; elsewhere the sites belong to other differences and are dropped
        start_tau, start_nu = (np.array(x, dtype=np.float64) for x in init_sites)
        if start_tau.shape != (n, n_classes) or start_nu.shape != (n, n_classes):
            raise ValueError(f"init_sites: expected two ({n}, {n_classes}) arrays, got "
                             f"{start_tau.shape} and {start_nu.shape}")
        kept = (start_tau[np.arange(n), labels] == 0.0) & np.all(np.isfinite(start_tau), 1) \
            & np.all(np.isfinite(start_nu), 1) & np.all(start_tau >= 0.0, 1)
        start_tau[~kept] = 0.0
        start_nu[~kept] = 0.0
        start_nu[~rival] = 0.0
        try:
            with np.errstate(all="ignore"):  # overflowing sites: checked just below
                warm = difference_posterior(K, labels, start_tau, start_nu,
                                            cache_bytes=cache_bytes)
        except np.linalg.LinAlgError:
            warm = None  # cold start
        if warm is not None and math.isfinite(warm.logdet) and np.all(
                np.isfinite(warm.mean)) and np.all(np.isfinite(warm.var)):
            post, tau, nu = warm, start_tau, start_nu
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
            post = difference_posterior(K, labels, tau, nu, cache_bytes=cache_bytes)
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
