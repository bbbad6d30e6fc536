"""EP's posterior covariance: the running one of the block solver, and a posterior kept as a
warm start.

Sigma = (K^-1 + S)^-1 is one n x n float64 buffer whose lower triangle is updated in place by
symmetric rank-k Woodbury updates (BLAS syrk) until it is frozen; from then on it is a float64
base (made full, both triangles, so its columns read contiguously) minus a correction C in
float32 (or float64) that takes the updates (`RunningCovariance`). A converged run's Sigma with
its sites is a `WarmPosterior`, the one warm start of EP: another label vector's run on the same
kernel shares it read-only as its base. Also here: reading Sigma[:, J] from a lower triangle,
factoring a block's Woodbury matrix M as F F^T - G G^T, ordering a sweep's sites so that most
blocks' M are semi-definite, and the dense posterior covariance of given sites.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.linalg.blas import dsymv, dsyrk, ssymv, ssyrk

_COLUMN_CHUNK = 512
_DENSE_SPAN = 4  # a block's row range read as one slice when at most 4x its size


def symmetric_columns(sigma_lower: np.ndarray, J: np.ndarray) -> np.ndarray:
    """Sigma[:, J] (J sorted) from an F-ordered matrix whose lower triangle holds Sigma.

    Rows i >= j come from column j; rows i < j from row j, read only up to max(J). The row
    gather is strided (one cache line per element); when J is dense in its range it reads the
    range's rows as one slice, a few contiguous elements per column.
    """
    W = sigma_lower[:, J]
    top = int(J[-1])
    low = int(J[0])
    if top + 1 - low <= _DENSE_SPAN * J.size:
        rows_J = sigma_lower[low:top + 1, :top][J - low].T
    else:
        rows_J = sigma_lower[J, :top].T
    rows = np.arange(low, top)[:, None]
    W[:low] = rows_J[:low]
    W[low:top] = np.where(rows >= J[None, :], W[low:top], rows_J[low:top])
    return W


def split_factor(M: np.ndarray, d_tau: np.ndarray,
                  S_JJ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F, G with M = F F^T - G G^T, for M = D (I + Sigma_JJ D)^-1 (symmetric).

    With every d_tau >= 0, M = E (I + E Sigma_JJ E)^-1 E (E = D^1/2) is positive semi-definite:
    F = E L^-T from one small Cholesky, G empty; with every d_tau <= 0, -M = E (I - E Sigma_JJ
    E)^-1 E (E = |D|^1/2; positive definite while the update keeps Sigma so) gives G likewise.
    Mixed signs: the eigen-decomposition splits M.
    """
    sign = 1.0 if np.all(d_tau >= 0) else -1.0 if np.all(d_tau <= 0) else 0.0
    if sign:  # M = sign E (I + sign E Sigma_JJ E)^-1 E, E = |D|^1/2, inner matrix PD
        root = np.sqrt(np.abs(d_tau))
        inner = np.eye(d_tau.size) + sign * (root[:, None] * S_JJ * root[None, :])
        try:
            L = np.linalg.cholesky(inner)
        except np.linalg.LinAlgError:
            pass
        else:
            F = scipy.linalg.solve_triangular(L, np.diag(root), lower=True,
                                              check_finite=False).T
            return (F, F[:, :0]) if sign > 0 else (F[:, :0], F)
    lam, V = np.linalg.eigh(M)
    scaled = V * np.sqrt(np.abs(lam))
    return scaled[:, lam > 0], scaled[:, lam <= 0]


def sign_blocks(moving: np.ndarray, heading: np.ndarray, block: int) -> list[np.ndarray]:
    """The sites `moving` in blocks of at most `block`: first those whose precision is headed
    up, then those headed down (each in index order), so most blocks' updates are
    semi-definite and factor by a small Cholesky (split_factor)."""
    up = moving[heading[moving] >= 0]
    down = moving[heading[moving] < 0]
    return [part[i:i + block] for part in (up, down) for i in range(0, part.size, block)]


class RunningCovariance:
    """Sigma = base - C (lower triangles): base float64; C None, float32 or float64.

    Args:
        base: the (n, n) float64 F-ordered buffer (a copy of K, or a shared posterior).
        owned: whether the buffer may be written (False: a shared warm start).
    """

    def __init__(self, base: np.ndarray, owned: bool):
        self.base, self.owned = base, owned
        self.C: np.ndarray | None = None

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the rank updates: the correction's once frozen, else the base's."""
        return self.base.dtype if self.C is None else self.C.dtype

    def freeze(self, dtype: type) -> None:
        """From now on changes go to a correction C of `dtype`; the base, no longer written,
        is made full (both triangles) once, so its columns are read contiguously."""
        if self.C is None:
            if self.owned:
                mirror_lower(self.base)
            self.C = np.zeros(self.base.shape, dtype=dtype, order="F")

    def columns(self, J: np.ndarray) -> np.ndarray:
        if self.C is None:
            return symmetric_columns(self.base, J)
        W = self.base[:, J]  # full once frozen
        W -= symmetric_columns(self.C, J)
        return W

    def diagonal(self) -> np.ndarray:
        d = np.diag(self.base).copy()
        if self.C is not None:
            d -= np.diag(self.C)
        return d

    def matvec(self, v: np.ndarray) -> np.ndarray:
        out = dsymv(1.0, self.base, v, lower=1)
        if self.C is not None:
            symv = ssymv if self.C.dtype == np.float32 else dsymv
            out -= symv(1.0, self.C, v.astype(self.C.dtype), lower=1)
        return out

    def subtract(self, P: np.ndarray, sign: float) -> None:
        """Sigma -= sign * P P^T."""
        if self.C is None:
            self.base = dsyrk(-sign, P, beta=1.0, c=self.base, lower=1, overwrite_c=1)
        else:
            syrk = ssyrk if self.C.dtype == np.float32 else dsyrk
            self.C = syrk(sign, P, beta=1.0, c=self.C, lower=1, overwrite_c=1)

    def squared(self, out: np.ndarray | None) -> np.ndarray:
        """Sigma o Sigma (lower triangle) in float32, column chunk by chunk."""
        n = self.base.shape[0]
        out = np.empty((n, n), dtype=np.float32, order="F") if out is None else out
        for j in range(0, n, _COLUMN_CHUNK):
            chunk = out[:, j:j + _COLUMN_CHUNK]
            chunk[...] = self.base[:, j:j + _COLUMN_CHUNK]
            if self.C is not None:
                chunk -= self.C[:, j:j + _COLUMN_CHUNK]
            np.square(chunk, out=chunk)
        return out

    def combined(self) -> np.ndarray:
        """Sigma itself, float64 with both triangles (in the base when it is owned)."""
        sigma = self.base if self.owned else np.array(self.base, order="F", copy=True)
        if self.C is not None:
            for j in range(0, sigma.shape[0], _COLUMN_CHUNK):
                sigma[:, j:j + _COLUMN_CHUNK] -= self.C[:, j:j + _COLUMN_CHUNK]
        return mirror_lower(sigma)


def mirror_lower(a: np.ndarray) -> np.ndarray:
    """Copy the lower triangle of the F-ordered square `a` onto its upper one, in place."""
    n = a.shape[0]
    for j in range(0, n, _COLUMN_CHUNK):
        end = min(j + _COLUMN_CHUNK, n)
        a[:j, j:end] = a[j:end, :j].T
        diag = a[j:end, j:end]
        diag[...] = np.tril(diag) + np.tril(diag, -1).T
    return a


@dataclass(frozen=True)
class WarmPosterior:
    """A converged EP posterior to start another label vector's EP from (same kernel).

    sigma: (n, n) float64, Fortran order, the posterior covariance with both triangles
    (read-only, shared: runs started from it never write to it). tau, nu: its sites; logdet_B their
    log det(I + S^1/2 K S^1/2).
    """

    sigma: np.ndarray
    tau: np.ndarray
    nu: np.ndarray
    logdet_B: float
    kernel_key: tuple[float, ...]  # kernel_key(K) of the kernel it belongs to

    @property
    def n(self) -> int:
        return int(self.tau.size)


def kernel_key(K: np.ndarray) -> tuple[float, ...]:
    """A fingerprint of a kernel (size, trace, first and last rows' sums, O(n)): a warm
    posterior is refused on another kernel, where it would give another kernel's value."""
    return (float(K.shape[0]), float(np.trace(K)), float(K[0].sum()), float(K[-1].sum()))


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
