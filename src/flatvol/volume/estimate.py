"""High-level volume estimates: one kernel factorized once, many label vectors.

Estimators (all return ln P in nats and log10 V):
- 'ep-orthant' (default): EP with the noise-free step likelihood 1[y z > 0]; estimates the
  volume as the mission defines it, the orthant probability P(sign z = f), z ~ N(0, K).
- 'orthant-is': importance sampling of that same orthant probability (unbiased, with a standard
  error) from the better, by a pilot run, of the step-EP Gaussian (only where its weights have a
  variance: tail index 1 - lambda_min(C, K) < 1/2) and Botev's minimax-tilted sampler. Reliable
  while the effective sample size is not tiny: hundreds of points on correlated kernels (ESS ~100
  of 4000 at n=300 on the MNIST NNGP kernel); flagged converged=False below MIN_EFFECTIVE_SAMPLES
  (e.g. MNIST S u E, n=1500).
- 'ep-probit': EP with the probit likelihood Phi(y z), the paper's (GPy's Bernoulli) marginal
  likelihood. It is the orthant probability under K + I, not K: it adds independent unit noise
  to every point, which makes it far smaller than the network's P(f) for balanced functions.
- 'laplace': Laplace approximation of the same probit marginal likelihood (cheaper, biased low).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from flatvol.errors import VolumeError
from flatvol.io import to_jsonable  # non-finite -> null, see flatvol.io
from flatvol.volume._numerics import (
    DEFAULT_MAX_JITTER,
    LN10,
    as_kernel,
    as_signed_labels,
    jittered_cholesky,
)
from flatvol.volume.ep import Mode, run_ep
from flatvol.volume.ep_blocks import WarmPosterior, kernel_key
from flatvol.volume.laplace import run_laplace
from flatvol.volume.orthant import PROPOSALS, estimate_orthant

# The registry's names and descriptions live in the base layer, so that spec schemas check an
# estimator's name without loading torch; the estimators themselves are here.
from flatvol.volume_settings import (  # noqa: F401  ESTIMATORS: re-exported
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    check_estimator,
)

# Below this effective sample size the importance-sampling standard error is not trustworthy.
MIN_EFFECTIVE_SAMPLES = 50.0


@dataclass(frozen=True)
class VolumeResult:
    """One volume estimate. `log_marginal_likelihood_nats` = ln P(f); log10_volume = log10 P(f)."""

    estimator: str
    log_marginal_likelihood_nats: float
    log10_volume: float
    converged: bool
    iterations: int
    seconds: float
    n: int
    jitter: float  # absolute diagonal jitter added to the kernel (0.0 if none was needed)
    stderr_log10: float | None = None  # orthant-is only
    effective_sample_size: float | None = None  # orthant-is only
    n_samples: int | None = None  # orthant-is only
    proposal: str | None = None  # orthant-is only: 'ep', 'minimax' or 'prior'
    message: str = ""
    # EP estimators: the final sites (tau, nu), the warm start of a run on a nearby label vector
    # (log_volume(..., warm_start=this)); in memory only, not part of to_dict.
    ep_sites: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False,
                                                           compare=False)
    # ep-orthant with keep_posterior=True: the posterior covariance too, the cheapest warm
    # start (an n x n array; in memory only)
    ep_posterior: WarmPosterior | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: to_jsonable(getattr(self, f.name)) for f in fields(self)
                if f.name not in _IN_MEMORY_ONLY}


_IN_MEMORY_ONLY = ("ep_sites", "ep_posterior")




class VolumeEstimator:
    """Validate and factorize a kernel once, then estimate V(f) for many label vectors.

    The kernel gets the smallest diagonal jitter that makes it positive definite (reported in
    every result; past `max_relative_jitter` x mean diagonal a VolumeError is raised). Leading
    blocks (e.g. the training set S when rows are ordered S then E) reuse the same factor: the
    Cholesky factor of a leading block is the leading block of the Cholesky factor.
    """

    def __init__(
        self,
        kernel: Any,
        *,
        max_relative_jitter: float = DEFAULT_MAX_JITTER,
        name: str = "kernel",
        _validated: tuple[np.ndarray, np.ndarray, float] | None = None,
    ):
        if _validated is None:
            K = as_kernel(kernel, name=name)
            chol, jitter = jittered_cholesky(K, max_relative_jitter, name=name)
            if jitter:
                K[np.diag_indices(K.shape[0])] += jitter
        else:
            K, chol, jitter = _validated
        self.kernel = K
        self.chol = chol
        self.jitter = float(jitter)
        self.n = int(K.shape[0])
        self._leading: dict[int, VolumeEstimator] = {}

    def leading(self, m: int) -> VolumeEstimator:
        """Estimator for the first m points (shares this kernel's jitter and factor)."""
        if not 1 <= m <= self.n:
            raise VolumeError(f"leading block size must be in 1..{self.n}, got {m}")
        if m == self.n:
            return self
        if m not in self._leading:
            K = np.ascontiguousarray(self.kernel[:m, :m])
            chol = np.ascontiguousarray(self.chol[:m, :m])
            self._leading[m] = VolumeEstimator(None, _validated=(K, chol, self.jitter))
        return self._leading[m]

    def with_point(self, m: int, j: int) -> VolumeEstimator:
        """Estimator for the first m points plus point j (j >= m), e.g. S u {e}.

        Its factor comes from this one without refactorizing: the rows of a lower Cholesky
        factor restricted to the first m columns are L_m^{-1} k_m(x_j), and the new diagonal
        entry is the norm of the rest of row j.
        """
        if not 1 <= m <= j < self.n:
            raise VolumeError(f"need 1 <= m <= j < {self.n}, got m={m}, j={j}")
        rows = np.r_[np.arange(m), j]
        K = np.ascontiguousarray(self.kernel[np.ix_(rows, rows)])
        chol = np.zeros((m + 1, m + 1))
        chol[:m, :m] = self.chol[:m, :m]
        chol[m, :m] = self.chol[j, :m]
        chol[m, m] = float(np.linalg.norm(self.chol[j, m : j + 1]))
        return VolumeEstimator(None, _validated=(K, chol, self.jitter))

    def log_volume(
        self,
        labels: Any,
        estimator: str = DEFAULT_ESTIMATOR,
        *,
        tol: float = 1e-3,
        max_iter: int = 300,
        mode: Mode = "auto",
        n_samples: int = 4000,
        seed: int = 0,
        proposal: str = "auto",
        warm_start: VolumeResult | None = None,
        keep_posterior: bool = False,
    ) -> VolumeResult:
        """Estimate ln P(labels) with `estimator` (see ESTIMATORS).

        tol/max_iter/mode apply to EP; n_samples/seed/proposal to orthant-is (see
        flatvol.volume.orthant.estimate_orthant). warm_start: an earlier EP-based result on this
        kernel (e.g. for labels that differ in a few points); its sites start EP (run_ep
        init_sites), which leaves the value unchanged up to the EP tolerance. It saves
        iterations for 'ep-probit' and mode='parallel'; with the default mode, step EP
        ('ep-orthant', the orthant-is pilot) is cheaper from zero sites and does not use them.
        A warm start that kept its posterior (keep_posterior=True, ep-orthant) starts
        'ep-orthant' from that posterior under the default mode: 2.6-3.8 Choleskys of the
        kernel instead of 5.6-6.3 from zero (bench/RESULTS.md), the same value to 1e-6 relative.
        keep_posterior: 'ep-orthant' only: keep the posterior covariance in the result
            (ep_posterior, one n x n float64 array) to warm-start other label vectors.
        """
        check_estimator(estimator)
        init_sites = warm_posterior = None
        if warm_start is not None:
            init_sites = warm_start.ep_sites
            if init_sites is None or init_sites[0].shape != (self.n,) or estimator == "laplace":
                raise VolumeError("warm_start needs an EP-based result on the same kernel "
                                  f"({self.n} points) and an EP-based estimator")
            if (estimator == "ep-orthant" and mode in ("auto", "blocks")
                    and warm_start.ep_posterior is not None):
                init_sites, warm_posterior = None, warm_start.ep_posterior
                if warm_posterior.kernel_key != kernel_key(self.kernel):
                    raise VolumeError("warm_start's posterior belongs to another kernel "
                                      f"(kernel_key {warm_posterior.kernel_key}, this one "
                                      f"{kernel_key(self.kernel)})")
        if keep_posterior and (estimator != "ep-orthant" or mode not in ("auto", "blocks")):
            raise VolumeError("keep_posterior needs estimator 'ep-orthant' with mode 'auto' or "
                              f"'blocks', got {estimator!r} with mode {mode!r}")
        if proposal not in PROPOSALS:
            raise VolumeError(f"proposal must be one of {', '.join(PROPOSALS)}, got {proposal!r}")
        y = as_signed_labels(labels, self.n)
        start = time.perf_counter()
        stderr = ess = samples = used = sites = posterior = None
        if estimator in ("ep-orthant", "ep-probit"):
            fit = run_ep(self.kernel, y, likelihood="step" if estimator == "ep-orthant"
                         else "probit", mode=mode, tol=tol, max_iter=max_iter,
                         init_sites=init_sites, warm_posterior=warm_posterior,
                         keep_posterior=keep_posterior)
            value, converged, iterations, message = (
                fit.log_marginal_likelihood, fit.converged, fit.iterations, fit.message)
            sites = (fit.site_precision, fit.site_natural_mean)
            posterior = fit.posterior
        elif estimator == "laplace":
            lap = run_laplace(self.kernel, y, max_iter=max_iter)
            value, converged, iterations, message = (
                lap.log_marginal_likelihood, lap.converged, lap.iterations, lap.message)
        else:  # orthant-is
            ep_fit, iterations = None, 0
            if proposal in ("auto", "ep"):
                fit = run_ep(self.kernel, y, likelihood="step", mode=mode, tol=tol,
                             max_iter=max_iter, init_sites=init_sites)
                ep_fit, iterations = (fit.site_precision, fit.posterior_mean), fit.iterations
                sites = (fit.site_precision, fit.site_natural_mean)
            est = estimate_orthant(self.kernel, y, self.chol, ep_fit=ep_fit,
                                   n_samples=n_samples, seed=seed, proposal=proposal)
            value, used = est.log_probability, est.proposal
            stderr, ess, samples = est.stderr_log10, est.effective_sample_size, est.n_samples
            converged = math.isfinite(value) and ess >= MIN_EFFECTIVE_SAMPLES and est.reliable
            bound = "" if not math.isfinite(est.tail_index_bound) else (
                f", proposal '{used}' tail index bound {est.tail_index_bound:.2f} (a variance"
                " needs < 0.5)")
            message = "" if converged else (
                f"importance weights degenerate (effective sample size {ess:.1f} of {samples},"
                f" Pareto k-hat {est.pareto_k:.2f}{bound}); the estimate and its standard"
                " error are unreliable")
        if not math.isfinite(value):
            converged = False
            message = message or "estimate is not finite"
        return VolumeResult(
            estimator=estimator,
            log_marginal_likelihood_nats=float(value),
            log10_volume=float(value) / LN10,
            converged=bool(converged),
            iterations=int(iterations),
            seconds=time.perf_counter() - start,
            n=self.n,
            jitter=self.jitter,
            stderr_log10=stderr,
            effective_sample_size=ess,
            n_samples=samples,
            proposal=used,
            message=message,
            ep_sites=sites,
            ep_posterior=posterior,
        )


def log_volume(labels: Any, kernel: Any, estimator: str = DEFAULT_ESTIMATOR,
               **options: Any) -> VolumeResult:
    """One-shot estimate of ln P(labels) under N(0, kernel); see VolumeEstimator.

    For many label vectors on one kernel use `VolumeService`, which factorizes it once.

    Args:
        labels: n labels in {0, 1} or {-1, +1}.
        kernel: the (n, n) prior covariance of the latent function (e.g. an NNGP kernel).
        estimator: a name from flatvol.volume.ESTIMATORS (default: EP on the orthant).
        **options: estimator options (tol, max_iter, mode, n_samples, seed, proposal).

    Returns:
        The VolumeResult: `log10_volume` = log10 P(f) and how it was estimated.

    Raises:
        VolumeError: a kernel that is not a symmetric PSD (n, n) matrix, labels of another
            length, or an unknown estimator.
    """
    return VolumeEstimator(kernel).log_volume(labels, estimator, **options)
