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

Each is one entry of the registry (flatvol.volume_settings.ESTIMATORS: options schema, class
counts, standard error, warm start) that names its implementations: the binary ones here
(`ep_volume` with its two likelihoods, `orthant_is_volume`, `laplace_volume`), the K-class
ones in flatvol.volume.multiclass, all with one signature (`EstimatorFunction`).
`VolumeEstimator.log_volume` checks the name, the class count and the options against the
registry and calls the implementation; a new estimator is one `register_estimator` call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import partial
from typing import Any, Literal

import numpy as np

from flatvol.errors import VolumeError
from flatvol.io import to_jsonable  # non-finite -> null, see flatvol.io
from flatvol.volume._numerics import (
    DEFAULT_MAX_JITTER,
    LN10,
    as_kernel,
    as_signed_labels,
    check_multiclass_labels,
    jittered_cholesky,
)
from flatvol.volume.ep import Mode, WarmPosterior, kernel_key, run_ep
from flatvol.volume.laplace import run_laplace
from flatvol.volume.orthant import estimate_orthant

# The registry (names, options schemas, which function implements each estimator for two and
# for K classes) lives in the base layer, so that spec schemas check an estimator and its
# options without loading torch; the binary implementations are here, the K-class ones in
# flatvol.volume.multiclass.
from flatvol.volume_settings import (  # noqa: F401  ESTIMATORS: re-exported
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    check_estimator,
    estimator_info,
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
    n_classes: int = 2  # K: the number of classes of the labelling
    stderr_log10: float | None = None  # estimators with an error bar (orthant-is) only
    effective_sample_size: float | None = None  # orthant-is only
    n_samples: int | None = None  # orthant-is only
    proposal: str | None = None  # orthant-is only: 'ep', 'minimax' or 'prior'
    message: str = ""
    # EP estimators: the final sites (tau, nu); in memory only, not part of to_dict.
    ep_sites: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False,
                                                           compare=False)
    # ep-orthant / ep-probit with keep_posterior=True: the posterior covariance, EP's warm start
    # of a run on a nearby label vector (log_volume(..., warm_start=this); an n x n array, in
    # memory only)
    ep_posterior: WarmPosterior | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: to_jsonable(getattr(self, f.name)) for f in fields(self)
                if f.name not in _IN_MEMORY_ONLY}


_IN_MEMORY_ONLY = ("ep_sites", "ep_posterior")


@dataclass(frozen=True)
class EstimatorOutput:
    """What one estimator implementation computes; `VolumeEstimator.log_volume` reports it as
    a VolumeResult (with the estimator's name, the size, the kernel's jitter and the time).

    Attributes:
        log_probability: ln P(f) in nats.
        converged: Whether the estimate can be trusted (its own criterion).
        iterations: EP sweeps or Newton steps (0 where none).
        message: Why it did not converge ('' if it did).
        stderr_log10: The standard error of log10 P(f), estimators with an error bar only.
        effective_sample_size, n_samples, proposal: importance sampling's diagnostics.
        extra_jitter: Diagonal jitter the implementation added to the system it ran on (e.g.
            a K-class difference covariance), on top of the kernel's.
        ep_sites, ep_posterior: EP's final sites and posterior (the warm start; in memory
            only).
    """

    log_probability: float
    converged: bool
    iterations: int = 0
    message: str = ""
    stderr_log10: float | None = None
    effective_sample_size: float | None = None
    n_samples: int | None = None
    proposal: str | None = None
    extra_jitter: float = 0.0
    ep_sites: tuple[np.ndarray, np.ndarray] | None = None
    ep_posterior: WarmPosterior | None = None


# The one signature of every registered implementation (flatvol.volume_settings
# .EstimatorInfo): (factor: VolumeEstimator, labels, n_classes, **options) -> EstimatorOutput.
EstimatorFunction = Callable[..., EstimatorOutput]


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
        n_classes: int = 2,
        warm_start: VolumeResult | None = None,
        keep_posterior: bool = False,
        **options: Any,
    ) -> VolumeResult:
        """Estimate ln P(labels) with `estimator`, a name in the ESTIMATORS registry.

        Args:
            labels: n labels: {0, 1} or {-1, +1} for n_classes = 2, else integer classes
                0..n_classes-1.
            estimator: The registry name; it must support n_classes.
            n_classes: K, the number of classes (2: the binary volume, today's code exactly).
            warm_start: An earlier result on this kernel that kept its EP posterior
                (keep_posterior=True), for an estimator that can be warm-started
                (EstimatorInfo.warm_start; binary only), e.g. for labels that differ in a few
                points: EP ('ep-orthant', 'ep-probit', the orthant-is pilot) starts from that
                posterior (run_ep warm_posterior): 2.6-3.8 Choleskys of the kernel instead of
                5.6-6.3 from zero for ep-orthant (bench/RESULTS.md), the same value up to the
                EP tolerance (1e-6 relative measured). A result without a posterior is refused.
            keep_posterior: 'ep-orthant' and 'ep-probit' only: keep the posterior covariance
                in the result (ep_posterior, one n x n float64 array) to warm-start other
                label vectors.
            **options: The estimator's options (its EstimatorInfo.options: e.g. tol,
                max_iter, mode for EP; n_samples, seed, proposal for orthant-is, see
                flatvol.volume.orthant.estimate_orthant); unknown or mistyped ones are refused.

        Returns:
            The VolumeResult.

        Raises:
            VolumeError: an unknown estimator, one that does not support n_classes, a bad
                option, bad labels, or a warm start the estimator cannot use.
        """
        info = estimator_info(estimator, n_classes)
        options = info.check_options(options)
        if warm_start is not None or keep_posterior:
            if not info.warm_start or n_classes != 2:
                what = "warm_start" if warm_start is not None else "keep_posterior"
                raise VolumeError(f"{what} needs an EP-based estimator on binary labels, got "
                                  f"{estimator!r} with {n_classes} classes")
            options.update(warm_start=warm_start, keep_posterior=keep_posterior)
        if n_classes == 2:
            y = as_signed_labels(labels, self.n)
        else:
            y = check_multiclass_labels(labels, self.n, n_classes)
        start = time.perf_counter()
        out: EstimatorOutput = info.implementation(n_classes)(self, y, n_classes, **options)
        value, converged, message = out.log_probability, out.converged, out.message
        if not math.isfinite(value):
            converged = False
            message = message or "estimate is not finite"
        return VolumeResult(
            estimator=estimator,
            log_marginal_likelihood_nats=float(value),
            log10_volume=float(value) / LN10,
            converged=bool(converged),
            iterations=int(out.iterations),
            seconds=time.perf_counter() - start,
            n=self.n,
            jitter=self.jitter + out.extra_jitter,
            n_classes=int(n_classes),
            stderr_log10=out.stderr_log10,
            effective_sample_size=out.effective_sample_size,
            n_samples=out.n_samples,
            proposal=out.proposal,
            message=message,
            ep_sites=out.ep_sites,
            ep_posterior=out.ep_posterior,
        )


def _warm_posterior(factor: VolumeEstimator,
                    warm_start: VolumeResult | None) -> WarmPosterior | None:
    """The EP posterior of a warm start, checked to belong to this kernel.

    Raises:
        VolumeError: a warm start that kept no EP posterior, or one of another kernel.
    """
    if warm_start is None:
        return None
    if warm_start.ep_posterior is None:
        raise VolumeError("warm_start needs a result that kept its EP posterior "
                          "(log_volume(..., keep_posterior=True) with 'ep-orthant' or "
                          f"'ep-probit'), got one from {warm_start.estimator!r} without it")
    posterior = warm_start.ep_posterior
    if posterior.kernel_key != kernel_key(factor.kernel):
        raise VolumeError("warm_start's posterior belongs to another kernel "
                          f"(kernel_key {posterior.kernel_key}, this one "
                          f"{kernel_key(factor.kernel)})")
    return posterior


def _refuse_keep_posterior(estimator: str, keep_posterior: bool) -> None:
    """Only the EP estimators themselves return the posterior covariance a warm start uses
    (orthant-is's value is its sampler's, not its pilot's)."""
    if keep_posterior and estimator not in ("ep-orthant", "ep-probit"):
        raise VolumeError("keep_posterior needs estimator 'ep-orthant' or 'ep-probit', got "
                          f"{estimator!r}")


def ep_volume(factor: VolumeEstimator, labels: np.ndarray, n_classes: int, *,
              likelihood: Literal["step", "probit"], seed: int, tol: float, max_iter: int,
              mode: Mode, warm_start: VolumeResult | None = None,
              keep_posterior: bool = False) -> EstimatorOutput:
    """Binary EP (flatvol.volume.ep): 'ep-orthant' with the step likelihood, P(sign z = y);
    'ep-probit' with the probit likelihood Phi(y z), the paper's marginal likelihood.

    Args:
        factor: The validated, factorized kernel.
        labels: Signs in {-1, +1}.
        n_classes: 2.
        likelihood: 'step' ('ep-orthant') or 'probit' ('ep-probit').
        seed: Unused (deterministic).
        tol, max_iter: EP's options (run_ep).
        mode: 'auto' or 'blocks', both the one EP solver (flatvol.volume.ep.Mode).
        warm_start: An earlier result on this kernel that kept its EP posterior; EP starts
            from it.
        keep_posterior: Keep the posterior covariance for later warm starts.

    Returns:
        The EstimatorOutput with EP's sites and (if kept) posterior.
    """
    fit = run_ep(factor.kernel, labels, likelihood=likelihood, tol=tol, max_iter=max_iter,
                 warm_posterior=_warm_posterior(factor, warm_start),
                 keep_posterior=keep_posterior)
    return EstimatorOutput(
        fit.log_marginal_likelihood, fit.converged, fit.iterations, fit.message,
        ep_sites=(fit.site_precision, fit.site_natural_mean), ep_posterior=fit.posterior)


# The two registered implementations (volume_settings.ESTIMATORS names them): one EP, two
# likelihoods.
ep_orthant_volume = partial(ep_volume, likelihood="step")
ep_probit_volume = partial(ep_volume, likelihood="probit")


def orthant_is_volume(factor: VolumeEstimator, labels: np.ndarray, n_classes: int, *,
                      tol: float, max_iter: int, mode: Mode, n_samples: int, seed: int,
                      proposal: str, warm_start: VolumeResult | None = None,
                      keep_posterior: bool = False) -> EstimatorOutput:
    """'orthant-is': importance sampling of P(sign z = y) with a standard error.

    Args:
        factor: The validated, factorized kernel.
        labels: Signs in {-1, +1}.
        n_classes: 2.
        tol, max_iter: The step-EP pilot's options (its Gaussian is the 'ep' proposal).
        mode: 'auto' or 'blocks', both the one EP solver (flatvol.volume.ep.Mode).
        n_samples, seed, proposal: The sampler's (flatvol.volume.orthant.estimate_orthant).
        warm_start: An earlier result on this kernel that kept its EP posterior; the pilot
            starts from it.
        keep_posterior: Refused (only ep-orthant and ep-probit keep a posterior).

    Returns:
        The EstimatorOutput with the standard error and the sampler's diagnostics;
        converged False when the effective sample size is below MIN_EFFECTIVE_SAMPLES or
        the Pareto-k check fails.
    """
    _refuse_keep_posterior("orthant-is", keep_posterior)
    warm_posterior = _warm_posterior(factor, warm_start)
    ep_fit, iterations, sites = None, 0, None
    if proposal in ("auto", "ep"):
        fit = run_ep(factor.kernel, labels, likelihood="step", tol=tol, max_iter=max_iter,
                     warm_posterior=warm_posterior)
        ep_fit, iterations = (fit.site_precision, fit.posterior_mean), fit.iterations
        sites = (fit.site_precision, fit.site_natural_mean)
    est = estimate_orthant(factor.kernel, labels, factor.chol, ep_fit=ep_fit,
                           n_samples=n_samples, seed=seed, proposal=proposal)
    value, ess, samples = est.log_probability, est.effective_sample_size, est.n_samples
    converged = math.isfinite(value) and ess >= MIN_EFFECTIVE_SAMPLES and est.reliable
    bound = "" if not math.isfinite(est.tail_index_bound) else (
        f", proposal '{est.proposal}' tail index bound {est.tail_index_bound:.2f} (a variance"
        " needs < 0.5)")
    message = "" if converged else (
        f"importance weights degenerate (effective sample size {ess:.1f} of {samples},"
        f" Pareto k-hat {est.pareto_k:.2f}{bound}); the estimate and its standard"
        " error are unreliable")
    return EstimatorOutput(value, converged, iterations, message,
                           stderr_log10=est.stderr_log10, effective_sample_size=ess,
                           n_samples=samples, proposal=est.proposal, ep_sites=sites)


def laplace_volume(factor: VolumeEstimator, labels: np.ndarray, n_classes: int, *,
                   seed: int, max_iter: int) -> EstimatorOutput:
    """'laplace': the Laplace approximation of the probit marginal likelihood.

    Args:
        factor: The validated, factorized kernel.
        labels: Signs in {-1, +1}.
        n_classes: 2.
        seed: Unused (deterministic).
        max_iter: Newton steps at most.

    Returns:
        The EstimatorOutput.
    """
    lap = run_laplace(factor.kernel, labels, max_iter=max_iter)
    return EstimatorOutput(lap.log_marginal_likelihood, lap.converged, lap.iterations,
                           lap.message)


def log_volume(labels: Any, kernel: Any, estimator: str = DEFAULT_ESTIMATOR,
               **options: Any) -> VolumeResult:
    """One-shot estimate of ln P(labels) under N(0, kernel); see VolumeEstimator.

    For many label vectors on one kernel use `VolumeService`, which factorizes it once.

    Args:
        labels: n labels in {0, 1} or {-1, +1} (n_classes = 2), else classes 0..K-1.
        kernel: the (n, n) prior covariance of the latent function (e.g. an NNGP kernel).
        estimator: a name from flatvol.volume.ESTIMATORS (default: EP on the orthant).
        **options: n_classes (K, default 2) and the estimator's options (its schema in the
            registry: tol, max_iter, mode; n_samples, seed, proposal for orthant-is).

    Returns:
        The VolumeResult: `log10_volume` = log10 P(f) and how it was estimated.

    Raises:
        VolumeError: a kernel that is not a symmetric PSD (n, n) matrix, labels of another
            length, an unknown estimator, or an unknown option.
    """
    return VolumeEstimator(kernel).log_volume(labels, estimator, **options)
