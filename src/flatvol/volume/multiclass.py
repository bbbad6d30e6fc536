"""The volume of K-class functions: V(f) = P(argmax_k z_k(x_i) = f(x_i) for every i).

In the NNGP limit the K outputs of a random network are K independent GPs with the same kernel
K (the readout's weights are independent per output), so with labels f_i in {0..K-1}

    V(f) = P( z_(f_i)(x_i) >= z_k(x_i)  for all i and all k != f_i ),   z_k ~ N(0, K) iid.

With the differences w_(i,k) = z_(f_i)(x_i) - z_k(x_i), k != f_i, this is the orthant probability
P(w >= 0) of a (K-1)n-dimensional Gaussian with

    Cov(w_(i,k), w_(j,l)) = K_ij (d[f_i = f_j] - d[f_i = l] - d[k = f_j] + d[k = l])

(`difference_covariance`). That expanded system goes through the binary estimators unchanged
(`log10_volume_expanded`): exact by construction, the reference, but ((K-1)n)^3 in cost. It is
positive definite when K is: w = D z with D of full row rank (for each point the K-1 rows
e_f - e_k are independent) and Cov(z) = I_K (x) K. For K = 2, w_i = s_i (z_1 - z_0)(x_i) with
s_i = +-1 and covariance 2 s s^T * K; the orthant probability is invariant to that scale and
those signs, so the value is the binary one.

`log10_volume_structured` runs EP with exactly that factorization (one step site per class
difference, so the expanded ep-orthant's fixed point and value) at O(K n^3) a sweep, using the
structure of the latent prior I_K (x) K (flatvol.volume.ep.multiclass). The registry's K-class
implementations (flatvol.volume_settings.ESTIMATORS, K > 2) are `structured_ep_volume`
('ep-orthant') and `difference_is_volume` ('orthant-is': binary importance sampling on the
expanded system, with its standard error). `sample_labelling_counts`
is the direct-sampling truth for small n: the frequency of every labelling among argmaxes of K
sampled outputs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from flatvol.errors import VolumeError
from flatvol.volume._numerics import (
    LN10,
    as_kernel,
    checked_class_labels,
    jittered_cholesky,
)
from flatvol.volume.ep.multiclass import run_multiclass_ep
from flatvol.volume.estimate import (
    DEFAULT_ESTIMATOR,
    EstimatorOutput,
    VolumeEstimator,
    VolumeResult,
    check_estimator,
)

EXPANDED_METHOD = "expanded"
STRUCTURED_METHOD = "structured"
# Direct sampling enumerates K^n labellings in one count array: 2^24 int64 (128 MiB) at most.
MAX_SAMPLED_LABELLINGS = 2**24


@dataclass(frozen=True)
class MulticlassVolume:
    """One estimate of log10 V(f) for a K-class labelling f.

    estimator: the estimator that ran ('ep-orthant', 'orthant-is', ...); method: how the
    K-class problem was posed to it ('expanded': a binary estimator on the (K-1)n difference
    system; 'structured': the same EP factorization at O(K n^3), flatvol.volume.ep.multiclass).
    """

    log10_volume: float
    converged: bool
    n_classes: int
    n: int  # points (kernel rows)
    estimator: str
    method: str
    seconds: float
    stderr_log10: float | None = None  # estimators with an error bar (orthant-is) only
    jitter: float = 0.0  # absolute diagonal jitter the estimator added to the system it ran on
    iterations: int = 0  # EP sweeps (structured EP and the expanded EP estimators)
    message: str = ""


def check_multiclass_inputs(
    kernel: Any, labels: Any, n_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate a kernel and K-class labels; one-line VolumeError naming the problem.

    Args:
        kernel: the (n, n) prior covariance shared by the K outputs (symmetric, finite).
        labels: n integer class labels in 0..n_classes-1 (any integer-valued numeric dtype).
        n_classes: K >= 2; None infers it as max(labels) + 1 (refused below 2). V(f)
            depends on K, so give it whenever the labels may miss the top classes.

    Returns:
        (K as symmetric float64, labels as int64, n_classes).

    Raises:
        VolumeError: a bad kernel, labels that are not integers in 0..K-1, fewer than 2
            classes, or a kernel whose size disagrees with the number of labels.
    """
    f, n_classes = checked_class_labels(labels, None, n_classes)
    K = as_kernel(kernel)
    if K.shape[0] != f.size:
        raise VolumeError(f"kernel: expected ({f.size}, {f.size}) for {f.size} labels, got "
                          f"shape {K.shape}")
    return K, f, n_classes


def difference_index(labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The coordinates of the difference system: w_r = z_(f_p)(x_p) - z_c(x_p) for r = (p, c).

    Point-major: point 0's K-1 rival classes in increasing order, then point 1's, ...

    Args:
        labels: validated int labels, shape (n,).
        n_classes: K.

    Returns:
        (points, classes), each int64 of length (K-1)n: the point p and rival class c of each
        coordinate.
    """
    n = labels.size
    classes = np.tile(np.arange(n_classes), n).reshape(n, n_classes)
    rival = classes != labels[:, None]
    points = np.broadcast_to(np.arange(n)[:, None], rival.shape)[rival]
    return points.astype(np.int64), classes[rival].astype(np.int64)


def difference_covariance(kernel: Any, labels: Any, n_classes: int | None = None) -> np.ndarray:
    """Covariance of the (K-1)n class differences w (module doc), coordinates as in
    `difference_index`.

    Args:
        kernel: the (n, n) kernel of each output.
        labels: n class labels in 0..n_classes-1.
        n_classes: K (None: inferred, see `check_multiclass_inputs`).

    Returns:
        The ((K-1)n, (K-1)n) float64 covariance, positive definite when the kernel is.

    Raises:
        VolumeError: bad inputs (see `check_multiclass_inputs`).
    """
    K, f, n_classes = check_multiclass_inputs(kernel, labels, n_classes)
    points, rivals = difference_index(f, n_classes)
    own = f[points]
    # Cov(z_a(x_p) - z_b(x_p), z_c(x_q) - z_d(x_q)) = K_pq (d[a=c] - d[a=d] - d[b=c] + d[b=d])
    # because different outputs are independent and each has kernel K.
    signs = ((own[:, None] == own[None, :]).astype(np.float64)
             - (own[:, None] == rivals[None, :])
             - (rivals[:, None] == own[None, :])
             + (rivals[:, None] == rivals[None, :]))
    return K[np.ix_(points, points)] * signs


def log10_volume_expanded(
    kernel: Any,
    labels: Any,
    n_classes: int | None = None,
    estimator: str = DEFAULT_ESTIMATOR,
    **options: Any,
) -> MulticlassVolume:
    """log10 V(f) of a K-class labelling through a binary estimator on the difference system.

    The reference: exact by construction (V(f) = P(w >= 0), all signs +1), as accurate as the
    binary estimator, but its cost is that of a (K-1)n-point binary volume.

    Args:
        kernel: the (n, n) kernel of each output.
        labels: n class labels in 0..n_classes-1.
        n_classes: K (None: inferred, see `check_multiclass_inputs`).
        estimator: a binary estimator name (flatvol.volume.ESTIMATORS); 'orthant-is' gives a
            standard error.
        **options: that estimator's options (tol, max_iter, mode, n_samples, seed, proposal).

    Returns:
        The MulticlassVolume (method 'expanded').

    Raises:
        VolumeError: bad inputs, an unknown estimator, or a kernel that is not positive
            definite even with the largest jitter.
    """
    check_estimator(estimator)
    K, f, n_classes = check_multiclass_inputs(kernel, labels, n_classes)
    start = time.perf_counter()
    result = _difference_estimate(K, f, n_classes, estimator, options)
    value = result.log10_volume
    return MulticlassVolume(
        log10_volume=value,
        converged=bool(result.converged and math.isfinite(value)),
        n_classes=n_classes,
        n=int(f.size),
        estimator=estimator,
        method=EXPANDED_METHOD,
        seconds=time.perf_counter() - start,
        stderr_log10=result.stderr_log10,
        jitter=result.jitter,
        iterations=result.iterations,
        message=result.message,
    )


def _difference_estimate(K: np.ndarray, labels: np.ndarray, n_classes: int, estimator: str,
                         options: dict[str, Any]) -> VolumeResult:
    """A binary estimator on the difference system of validated K-class labels: V(f) is its
    positive orthant, all signs +1."""
    C = difference_covariance(K, labels, n_classes)
    return VolumeEstimator(C, name="difference covariance").log_volume(
        np.ones(C.shape[0]), estimator, **options)


def log10_volume_structured(
    kernel: Any,
    labels: Any,
    n_classes: int | None = None,
    *,
    tol: float = 1e-3,
    max_iter: int = 300,
) -> MulticlassVolume:
    """log10 V(f) of a K-class labelling by structured step EP (flatvol.volume.ep.multiclass).

    The expanded ep-orthant's factorization (one step site per class difference), so the same
    EP fixed point and value, at O(K n^3) a sweep instead of O(((K-1)n)^3). The kernel gets the
    smallest diagonal jitter that makes it positive definite, as for the binary estimators.

    Args:
        kernel: the (n, n) kernel of each output.
        labels: n class labels in 0..n_classes-1.
        n_classes: K (None: inferred, see `check_multiclass_inputs`).
        tol: EP's convergence tolerance (largest site change in posterior standard deviations).
        max_iter: parallel EP sweeps at most.

    Returns:
        The MulticlassVolume (estimator 'ep-orthant', method 'structured'); converged False
        with a message when EP did not converge.

    Raises:
        VolumeError: bad inputs, or a kernel that is not positive definite even with the
            largest jitter.
    """
    K, f, n_classes = check_multiclass_inputs(kernel, labels, n_classes)
    start = time.perf_counter()
    # called directly, not through the registry, so that K = 2 runs structured EP too (the
    # registry sends K = 2 to the binary estimator)
    factor = VolumeEstimator(K)
    fit = structured_ep_volume(factor, f, n_classes, seed=0, tol=tol, max_iter=max_iter,
                               mode="auto")
    value = fit.log_probability / LN10
    return MulticlassVolume(
        log10_volume=value,
        converged=bool(fit.converged and math.isfinite(value)),
        n_classes=n_classes,
        n=int(f.size),
        estimator=DEFAULT_ESTIMATOR,
        method=STRUCTURED_METHOD,
        seconds=time.perf_counter() - start,
        jitter=factor.jitter,
        iterations=fit.iterations,
        message=fit.message,
    )


def structured_ep_volume(factor: VolumeEstimator, labels: np.ndarray, n_classes: int, *,
                         seed: int, tol: float, max_iter: int, mode: str) -> EstimatorOutput:
    """'ep-orthant' for K > 2 classes (the registry's K-class implementation): structured
    step EP (flatvol.volume.ep.multiclass), the expanded ep-orthant's value at O(K n^3).

    Args:
        factor: The validated, jittered, factorized kernel of each output.
        labels: int64 classes in 0..n_classes-1, one per kernel row.
        n_classes: K > 2.
        seed: Unused (deterministic).
        tol: EP's convergence tolerance (largest site change in posterior standard deviations).
        max_iter: Parallel EP sweeps at most.
        mode: 'auto' only: structured EP has one schedule (damped, Anderson-mixed parallel).

    Returns:
        The EstimatorOutput; converged False with a message when EP did not converge.

    Raises:
        VolumeError: a non-positive tol or max_iter, or a mode other than 'auto'.
    """
    if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and math.isfinite(tol)
                                     and tol > 0):
        raise VolumeError(f"tol: expected a positive number, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise VolumeError(f"max_iter: expected a positive integer, got {max_iter!r}")
    if mode != "auto":
        raise VolumeError(f"mode: {n_classes}-class EP has one schedule; expected 'auto', got "
                          f"{mode!r}")
    fit = run_multiclass_ep(factor.kernel, labels, n_classes, tol=float(tol), max_iter=max_iter)
    return EstimatorOutput(fit.log_marginal_likelihood, bool(fit.converged), fit.iterations,
                           fit.message)


def difference_is_volume(factor: VolumeEstimator, labels: np.ndarray, n_classes: int, *,
                         tol: float, max_iter: int, mode: str, n_samples: int, seed: int,
                         proposal: str) -> EstimatorOutput:
    """'orthant-is' for K > 2 classes (the registry's K-class implementation): binary
    importance sampling, with its standard error, on the (K-1)n difference system.

    Exact by construction as the binary sampler is; its cost is that of a (K-1)n-point binary
    estimate (one ((K-1)n)^3 Cholesky), so for n up to a few hundred.

    Args:
        factor: The validated, jittered kernel of each output.
        labels: int64 classes in 0..n_classes-1, one per kernel row.
        n_classes: K > 2.
        tol, max_iter, mode: The step-EP pilot's options on the difference system.
        n_samples, seed, proposal: The sampler's (flatvol.volume.orthant.estimate_orthant).

    Returns:
        The EstimatorOutput with the standard error and the sampler's diagnostics; its
        extra_jitter is the jitter the difference covariance needed.
    """
    r = _difference_estimate(factor.kernel, labels, n_classes, "orthant-is",
                             dict(tol=tol, max_iter=max_iter, mode=mode, n_samples=n_samples,
                                  seed=seed, proposal=proposal))
    return EstimatorOutput(r.log_marginal_likelihood_nats, r.converged, r.iterations,
                           r.message, stderr_log10=r.stderr_log10,
                           effective_sample_size=r.effective_sample_size,
                           n_samples=r.n_samples, proposal=r.proposal, extra_jitter=r.jitter)


def labelling_code(labels: np.ndarray, n_classes: int) -> int:
    """The index of a labelling among all K^n: sum_i f_i K^i (point 0 is the least digit)."""
    return int(np.asarray(labels, dtype=np.int64) @ (n_classes ** np.arange(labels.size)))


def labelling_from_code(code: int, n: int, n_classes: int) -> np.ndarray:
    """The labels f (int64, shape (n,)) of `labelling_code` value `code`."""
    return (code // n_classes ** np.arange(n)) % n_classes


def sample_labelling_counts(kernel: Any, n_classes: int, n_draws: int, *, seed: int,
                            chunk: int = 100_000) -> np.ndarray:
    """Direct-sampling truth: how often each labelling is the argmax of K iid GP outputs.

    z_k = L e_k, e_k ~ N(0, I), L the kernel's Cholesky factor, drawn chunk by chunk; draw m's
    labelling is argmax_k z_k(x_i) for each i. counts[labelling_code(f)] / n_draws is an
    unbiased estimate of V(f), independent of every estimator, with binomial standard error
    sqrt((1 - c/N) / c) / ln 10 in log10 for c hits of N.

    Args:
        kernel: the (n, n) positive definite kernel of each output.
        n_classes: K >= 2.
        n_draws: draws in all.
        seed: numpy Generator seed; the counts are a function of (seed, chunk): the chunking
            is part of the random stream.
        chunk: draws per vectorized batch (memory chunk * K * n floats).

    Returns:
        int64 counts of shape (K^n,), indexed by `labelling_code`.

    Raises:
        VolumeError: a bad kernel, fewer than 2 classes, too many labellings to count
            (K^n > MAX_SAMPLED_LABELLINGS), or a non-positive draw count.
    """
    K = as_kernel(kernel)
    n = K.shape[0]
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise VolumeError(f"n_classes: expected an integer >= 2, got {n_classes!r}")
    if n_classes**n > MAX_SAMPLED_LABELLINGS:
        raise VolumeError(f"{n_classes}^{n} labellings are too many to count directly "
                          f"(limit {MAX_SAMPLED_LABELLINGS})")
    if n_draws < 1 or chunk < 1:
        raise VolumeError(f"n_draws and chunk must be positive, got {n_draws} and {chunk}")
    L, _ = jittered_cholesky(K, 0.0)  # the truth is for this kernel exactly: no jitter
    rng = np.random.default_rng(seed)
    place = n_classes ** np.arange(n)
    counts = np.zeros(n_classes**n, dtype=np.int64)
    done = 0
    while done < n_draws:
        m = min(chunk, n_draws - done)
        z = rng.standard_normal((m, n_classes, n)) @ L.T
        counts += np.bincount(np.argmax(z, axis=1) @ place, minlength=counts.size)
        done += m
    return counts
