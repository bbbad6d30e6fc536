"""Shared numerics: input validation, jittered Cholesky, stable truncated-Gaussian moments."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
from scipy.special import log_ndtr, ndtri_exp

from flatvol.errors import VolumeError

LOG_2PI = math.log(2.0 * math.pi)
LN10 = math.log(10.0)

# Jitter escalation: first try the kernel as given, then add JITTER_START * mean(diag K) to the
# diagonal, times 10 per try, up to DEFAULT_MAX_JITTER * mean(diag K).
JITTER_START = 1e-10
DEFAULT_MAX_JITTER = 1e-4


def to_numpy(array: Any) -> np.ndarray:
    """A numpy view of a numpy array, torch tensor or nested sequence (never pickled objects)."""
    if hasattr(array, "detach"):  # torch tensor, possibly on an accelerator
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def as_kernel(kernel: Any, name: str = "kernel") -> np.ndarray:
    """Validate a covariance matrix and return it as symmetric float64."""
    K = to_numpy(kernel)
    if K.dtype == object or not (np.issubdtype(K.dtype, np.number) or K.dtype == bool):
        raise VolumeError(f"{name}: expected a numeric matrix, got dtype {K.dtype}")
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise VolumeError(f"{name}: expected a non-empty square matrix (n, n), got shape {K.shape}")
    K = np.array(K, dtype=np.float64, copy=True)
    if not np.all(np.isfinite(K)):
        raise VolumeError(f"{name}: contains {int(np.sum(~np.isfinite(K)))} non-finite entries")
    diag = np.diag(K)
    if np.any(diag <= 0):
        i = int(np.argmin(diag))
        raise VolumeError(f"{name}: diagonal must be positive, got K[{i},{i}]={diag[i]}")
    # Check and symmetrize in row blocks: no n x n temporaries (n can be 1e4 or more).
    n = K.shape[0]
    scale = max(float(K.max()), -float(K.min()))
    block = max(1, 2**22 // n)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        asym = float(np.max(np.abs(K[rows, start:] - K[start:, rows].T)))
        if asym > 1e-6 * scale:
            raise VolumeError(
                f"{name}: not symmetric (max |K - K^T| = {asym:.3g}, scale {scale:.3g})"
            )
        average = 0.5 * (K[rows, start:] + K[start:, rows].T)
        K[rows, start:] = average
        K[start:, rows] = average.T
    return K


def as_signed_labels(labels: Any, n: int | None = None, name: str = "labels") -> np.ndarray:
    """Labels in {0,1} or {-1,+1} (any numeric/bool dtype) as float64 signs in {-1,+1}."""
    y = to_numpy(labels)
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise VolumeError(f"{name}: labels must be {{0,1}} or {{-1,+1}}, got dtype {y.dtype}")
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1 or y.size == 0:
        raise VolumeError(f"{name}: expected a non-empty vector of labels, got shape {y.shape}")
    if n is not None and y.size != n:
        raise VolumeError(f"{name}: expected {n} labels (one per kernel row), got {y.size}")
    values = set(np.unique(y[np.isfinite(y)]).tolist())
    if not np.all(np.isfinite(y)) or not (values <= {0.0, 1.0} or values <= {-1.0, 1.0}):
        shown = sorted(np.unique(y).tolist())[:6]
        raise VolumeError(f"{name}: labels must be {{0,1}} or {{-1,+1}}, got values {shown}")
    return np.where(y > 0, 1.0, -1.0)


def check_multiclass_labels(labels: Any, n: int | None = None,
                            n_classes: int | None = None) -> np.ndarray:
    """Validate K-class labels; one-line VolumeError naming the problem.

    Args:
        labels: integer class labels in 0..n_classes-1 (any integer-valued numeric dtype).
        n: the number of labels expected (the kernel's rows); None: any.
        n_classes: K >= 2; None infers it as max(labels) + 1 (refused below 2). V(f)
            depends on K, so give it whenever the labels may miss the top classes.

    Returns:
        The labels as int64, shape (n,).

    Raises:
        VolumeError: labels that are not integers in 0..K-1, fewer than 2 classes, or a
            count other than n.
    """
    return checked_class_labels(labels, n, n_classes)[0]


def checked_class_labels(labels: Any, n: int | None,
                    n_classes: int | None) -> tuple[np.ndarray, int]:
    """`check_multiclass_labels` that also returns K (inferred where None was given)."""
    f = to_numpy(labels)
    if f.dtype == object or not (np.issubdtype(f.dtype, np.number) or f.dtype == bool):
        raise VolumeError(f"labels: expected integer class labels, got dtype {f.dtype}")
    if f.ndim != 1 or f.size == 0:
        raise VolumeError(f"labels: expected a non-empty vector of class labels, got shape "
                          f"{f.shape}")
    values = np.asarray(f, dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise VolumeError(f"labels: expected integer class labels, got labels[{i}]={f[i]}")
    f = values.astype(np.int64)
    if n_classes is None:
        # inferred as max + 1: a caller whose labels may miss the top classes must give K,
        # since V(f) depends on it
        n_classes = int(f.max()) + 1
        if n_classes < 2:
            raise VolumeError(f"n_classes: labels use class 0 only ({f.size} labels), so the "
                              "number of classes cannot be inferred; give n_classes >= 2")
    elif isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)):
        raise VolumeError(f"n_classes: expected an integer >= 2, got {n_classes!r}")
    n_classes = int(n_classes)
    if n_classes < 2:
        raise VolumeError(f"n_classes: expected at least 2 classes, got {n_classes}")
    outside = (f < 0) | (f >= n_classes)
    if np.any(outside):
        i = int(np.argmax(outside))
        raise VolumeError(f"labels: expected classes in 0..{n_classes - 1}, got "
                          f"labels[{i}]={f[i]}")
    if n is not None and f.size != n:
        raise VolumeError(f"labels: expected {n} labels (one per kernel row), got {f.size}")
    return f, n_classes


def jittered_cholesky(
    K: np.ndarray, max_relative_jitter: float = DEFAULT_MAX_JITTER, name: str = "kernel"
) -> tuple[np.ndarray, float]:
    """Lower Cholesky factor of K + jitter*I with the smallest jitter that works.

    Returns (L, jitter) with jitter an absolute diagonal increment (0.0 when K is PD as given).
    """
    mean_diag = float(np.mean(np.diag(K)))
    jitter = 0.0
    relative = JITTER_START
    while True:
        try:
            A = K.copy()
            A.flat[:: K.shape[0] + 1] += jitter
            L = scipy.linalg.cholesky(A, lower=True, overwrite_a=True, check_finite=False)
            if np.all(np.isfinite(np.diag(L))):
                return L, jitter
        except np.linalg.LinAlgError:
            pass
        if relative > max_relative_jitter * (1 + 1e-12):
            raise VolumeError(
                f"{name}: not positive definite even with jitter {jitter:.3g} "
                f"({jitter / mean_diag:.1e} x mean diagonal; limit {max_relative_jitter:.1e})"
            )
        jitter = relative * mean_diag
        relative *= 10.0


def _continued_fraction_tail(t: np.ndarray, terms: int = 80) -> tuple[np.ndarray, ...]:
    """c_k = k / (t + c_{k+1}) for k = 1, 2, 3 (Laplace's continued fraction for Mills' ratio).

    1/R(t) = t + c_1 with R the Mills ratio, so c_1 = phi/Phi(-t) - t without cancellation.
    """
    c = np.zeros_like(t)
    tail = []
    for k in range(terms, 0, -1):
        c = k / (t + c)
        if k <= 3:
            tail.append(c)
    c3, c2, c1 = tail
    return c1, c2, c3


def truncated_gaussian_terms(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For z = y*m/d: (log Phi(z), r = phi(z)/Phi(z), 1 - r*(z + r)), all stable for any z.

    1 - r(z + r) is the variance ratio of a standard normal truncated to (-z, inf); for z << 0 it
    is about 1/z^2 and the direct formula cancels catastrophically, so we use the continued
    fraction there.
    """
    z = np.asarray(z, dtype=np.float64)
    log_Z = log_ndtr(z)
    r = np.exp(-0.5 * z * z - 0.5 * LOG_2PI - log_ndtr(z))
    one_minus_g = 1.0 - r * (z + r)
    tail = z < -5.0
    if np.any(tail):
        t = -z[tail]
        c1, c2, c3 = _continued_fraction_tail(t)
        r[tail] = t + c1
        one_minus_g[tail] = c1 * (t + 2.0 * c2 - c3) / ((t + c3) * (t + c2))
    return log_Z, r, np.clip(one_minus_g, 1e-300, 1.0)


def sample_positive_truncated_normal(
    a: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw t ~ N(0,1) truncated to (a, inf), elementwise; also return log P(t > a).

    Inverse-CDF in log space (ndtri_exp), accurate far into the tails.
    """
    log_mass = log_ndtr(-a)
    u = rng.random(a.shape)
    t = -ndtri_exp(np.log(u) + log_mass)
    return np.maximum(t, a), log_mass


def logdet_from_cholesky(L: np.ndarray) -> float:
    return float(2.0 * np.sum(np.log(np.diag(L))))


def check_finite_result(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values)
