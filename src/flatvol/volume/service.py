"""The volume service: one kernel on S u E (S first), factorized once, for every label vector.

Everything that needs V(f) goes through VolumeService: the sweep's volume measure, `flatvol
volume` and sgd-vs-bayes. From one validated, jittered Cholesky factor it gives V(f) on all
points, V(f on S) (the leading block shares the factor), V(f|S) and the PAC-Bayes bound (with
the jackknife standard errors and bias estimates of a Monte-Carlo kernel's error, when it is
made from a PriorKernel that kept batches of draws), and the per-point marginals
P(label 1 on e | y_S) (each S u {e} block's factor is read off the full one).
Estimates are cached by (block, estimator, options, labels): every network that fits S has the
same labels there, so V(y_S) is computed once. A service is for functions of K classes
(`n_classes`, default 2): binary labels are {0,1} or {-1,+1}, K-class ones integers 0..K-1,
and each estimate goes to the registry's implementation for K (flatvol.volume_settings
.ESTIMATORS; K = 2 is the binary code exactly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from flatvol.errors import VolumeError
from flatvol.io import to_jsonable
from flatvol.volume._numerics import DEFAULT_MAX_JITTER, as_signed_labels, check_multiclass_labels
from flatvol.volume.bounds import pac_bayes_bound
from flatvol.volume.estimate import (
    DEFAULT_ESTIMATOR,
    VolumeEstimator,
    VolumeResult,
    estimator_info,
)


@dataclass(frozen=True)
class VolumeStderr:
    """The Monte-Carlo kernel's error carried to the volumes: jackknife standard errors over
    its leave-one-batch-out kernels (nan where an estimate is not finite)."""

    log10_volume: float
    log10_volume_S: float
    log10_volume_conditional: float
    pac_bayes_bound: float


@dataclass(frozen=True)
class VolumeBias:
    """The jackknife estimate of the bias a Monte-Carlo kernel's noise puts into the volumes
    (`jackknife_bias`; nan where an estimate is not finite): the estimate minus this is the
    jackknife's bias-corrected value."""

    log10_volume: float
    log10_volume_S: float
    log10_volume_conditional: float
    pac_bayes_bound: float


@dataclass(frozen=True)
class ConditionalVolume:
    """log V(f|S) = log V(f on S u E) - log V(f on S), plus the PAC-Bayes bound from V(S),
    with the kernel's error carried to them where the kernel has one.

    `stderr` and `bias` are the jackknife's standard errors and bias estimates over a
    Monte-Carlo kernel's leave-one-batch-out kernels (`VolumeService.replicates`); None where
    the service has none (an exact kernel, or batches not kept).
    """

    full: VolumeResult  # on all n points (S then E)
    train: VolumeResult  # on the first n_train points (S)
    log10_volume_conditional: float
    pac_bayes_bound: float  # delta = 0.05 unless asked otherwise, m = n_train
    stderr: VolumeStderr | None = None
    bias: VolumeBias | None = None

    @property
    def log10_volume_S(self) -> float:  # noqa: N802 -- the one name of V(f on S) everywhere
        """log10 V(f on S), the train-set volume: the name the store and the CLI use too."""
        return self.train.log10_volume

    def to_dict(self) -> dict[str, Any]:
        return {
            "full": self.full.to_dict(),
            "train": self.train.to_dict(),
            "log10_volume_S": to_jsonable(self.log10_volume_S),
            "log10_volume_conditional": to_jsonable(self.log10_volume_conditional),
            "pac_bayes_bound": to_jsonable(self.pac_bayes_bound),
            **{name: {k: to_jsonable(v) for k, v in asdict(value).items()}
               for name, value in (("stderr", self.stderr), ("bias", self.bias))
               if value is not None},
        }


def conditional_values(volume: ConditionalVolume) -> tuple[float, float, float, float]:
    """(log10 V(f), log10 V(f on S), log10 V(f|S), the PAC-Bayes bound): the order of
    VolumeStderr's fields."""
    return (volume.full.log10_volume, volume.train.log10_volume,
            volume.log10_volume_conditional, volume.pac_bayes_bound)


def jackknife_stderr(full: float, replicates: Sequence[float]) -> float:
    """The jackknife standard error of a statistic from its leave-one-batch-out replicates.

    Args:
        full: the statistic on all batches (nan or inf gives nan).
        replicates: the statistic without each batch in turn.

    Returns:
        sqrt((B - 1) / B * sum (r_b - mean r)^2); nan if any value is not finite.
    """
    values = np.asarray(replicates, dtype=np.float64)
    if not (math.isfinite(full) and np.all(np.isfinite(values))):
        return math.nan
    b = len(values)
    return float(math.sqrt((b - 1) / b * np.sum((values - values.mean()) ** 2)))


def jackknife_bias(full: float, replicates: Sequence[float]) -> float:
    """The jackknife estimate of a statistic's bias from its leave-one-batch-out replicates.

    A bias that falls like 1/draws (what noise in a kernel does to a smooth function of it, such
    as log V) is B / (B - 1) times larger in a replicate of B - 1 batches than in all B, so
    the replicates' mean shift from the full value is 1 / (B - 1) of the full value's bias.

    Args:
        full: the statistic on all batches (nan or inf gives nan).
        replicates: the statistic without each batch in turn.

    Returns:
        (B - 1) (mean r - full); nan if any value is not finite.
    """
    values = np.asarray(replicates, dtype=np.float64)
    if not (math.isfinite(full) and np.all(np.isfinite(values))):
        return math.nan
    return float((len(values) - 1) * (values.mean() - full))


def bound_from_train_volume(train: VolumeResult, n_train: int, delta: float = 0.05) -> float:
    """The PAC-Bayes bound (flatvol.volume.bounds) from V(y_S); nan if the estimate is not
    finite or n_train < 2 (the bound divides by m - 1). It holds for K classes in the same
    form: it needs only the prior probability of the functions that fit S."""
    nats = train.log_marginal_likelihood_nats
    if not math.isfinite(nats) or n_train < 2:
        return math.nan
    return float(pac_bayes_bound(min(nats, 0.0), n_train, delta))


class VolumeService:
    """Volume estimates on one kernel, factorized once, cached by label vector.

    Build one per kernel (the PriorKernel of S u E from `prior_kernel`) and ask it for
    many label vectors: `log_volume` for V(f), `conditional` for V(f|S) and the PAC-Bayes
    bound (with their Monte-Carlo error when the kernel has one), `point_marginals` for the
    posterior predictive on each test point.

    Example:
        ```python
        service = VolumeService(prior_kernel(model, x_SE))
        print(service.conditional(labels, n_train=len(x_S)).log10_volume_conditional)
        ```

    Args:
        kernel: a PriorKernel of S u E (rows S then E; its leave-one-batch-out kernels, if it
            kept batches of draws, become the replicates), an (n, n) matrix, or a
            VolumeEstimator already built on one; for K classes, the kernel of each of the K
            iid outputs.
        n_classes: K, the number of classes of the functions (2: binary labels {0,1} or
            {-1,+1}; K > 2: integer labels 0..K-1, and only the estimators whose registry
            entry supports K classes).
        max_relative_jitter: the jitter limit (see VolumeEstimator).
        name: how errors about the kernel name it (e.g. its file).
        max_cached: estimates kept before the cache is cleared.
        replicates: leave-one-batch-out kernels of a plain matrix, from which `conditional`
            gives jackknife standard errors; None for an exact kernel. A PriorKernel brings
            its own (giving both is refused).
        reference_labels: labels of all n points (a sweep passes the true labels of S u E)
            whose 'ep-orthant' posterior is computed once, on first use, and starts every
            other 'ep-orthant' estimate on all n points (3.4-3.8 Choleskys instead of 5.6-6.3
            for a function with 10% test error, the same value to 1e-6 relative:
            bench/RESULTS.md). The start is the same whatever
            the order of the calls, so the numbers are too. None: every estimate from zero.
            For K > 2 they are checked but start nothing (K-class EP has no warm start yet).

    Raises:
        VolumeError: a bad kernel, n_classes below 2, bad reference labels, or replicates
            given beside a PriorKernel.
    """

    def __init__(self, kernel: Any, *, n_classes: int = 2,
                 max_relative_jitter: float = DEFAULT_MAX_JITTER,
                 name: str = "kernel", max_cached: int = 4096,
                 replicates: Sequence[np.ndarray] | None = None,
                 reference_labels: Any = None):
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) \
                or n_classes < 2:
            raise VolumeError(f"n_classes: expected an integer >= 2, got {n_classes!r}")
        self.n_classes = int(n_classes)
        if hasattr(kernel, "matrix") and hasattr(kernel, "replicates"):  # a PriorKernel
            if replicates is not None:
                raise VolumeError("replicates: a PriorKernel brings its own; give one or the "
                                  "other")
            kernel, replicates = kernel.matrix, kernel.replicates()
        self.factor = kernel if isinstance(kernel, VolumeEstimator) else \
            VolumeEstimator(kernel, max_relative_jitter=max_relative_jitter, name=name)
        self.max_cached = max_cached
        self._cache: dict[tuple, VolumeResult] = {}
        self.name = name
        self.max_relative_jitter = max_relative_jitter
        self.replicates = None if replicates is None else list(replicates)
        self._replicate_services: list[VolumeService] | None = None
        self.reference_labels = (None if reference_labels is None
                                 else self.labels(reference_labels, self.n))
        self._references: dict[tuple, VolumeResult] = {}

    @property
    def n(self) -> int:
        return self.factor.n

    @property
    def kernel(self) -> np.ndarray:
        """The validated kernel (with its jitter on the diagonal)."""
        return self.factor.kernel

    def labels(self, labels: Any, n: int | None = None) -> np.ndarray:
        """Labels checked for this service's class count: {-1, +1} floats for K = 2 (from
        {0,1} or {-1,+1}), int64 classes 0..K-1 for K > 2.

        Args:
            labels: the labels.
            n: how many are expected (None: any number).

        Returns:
            The checked labels.

        Raises:
            VolumeError: one line naming the problem.
        """
        if self.n_classes == 2:
            return as_signed_labels(labels, n)
        return check_multiclass_labels(labels, n, self.n_classes)

    def log_volume(self, labels: Any, estimator: str = DEFAULT_ESTIMATOR, *,
                   n: int | None = None, **options: Any) -> VolumeResult:
        """ln P(labels) on the first `n` points (default all), cached.

        Args:
            labels: n labels in {0,1} or {-1,+1} (K = 2), or classes 0..K-1.
            estimator: a name from flatvol.volume.ESTIMATORS that supports K classes.
            n: size of the leading block (e.g. |S|); None for every point.
            options: the estimator's options (its registry schema: tol, max_iter, mode;
                n_samples, seed, proposal for orthant-is).

        Returns:
            The VolumeResult (the same object for a repeated call).

        Raises:
            VolumeError: an estimator that does not support K classes, an unknown or
                mistyped option, or bad labels.
        """
        # Checked and completed with the defaults, so that an option given at its default
        # value and one left out share a cache entry.
        options = estimator_info(estimator, self.n_classes).check_options(options)
        block = self.factor if n is None else self.factor.leading(n)
        y = self.labels(labels, block.n)
        key = (block.n, estimator, tuple(sorted(options.items())), y.tobytes())
        cached = self._cache.get(key)
        if cached is None:
            reference = self._reference(estimator, n, options)
            if reference is not None:
                cached = (reference if np.array_equal(y, self.reference_labels)
                          else block.log_volume(y, estimator, warm_start=reference, **options))
            else:
                cached = block.log_volume(y, estimator, n_classes=self.n_classes, **options)
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def _reference(self, estimator: str, n: int | None,
                   options: dict[str, Any]) -> VolumeResult | None:
        """The reference labels' estimate with its posterior (the warm start), or None where
        none applies: no reference labels, K > 2 classes, a leading block, another estimator
        or mode."""
        if (self.reference_labels is None or self.n_classes != 2 or n not in (None, self.n)
                or estimator != "ep-orthant" or "warm_start" in options
                or options.get("mode", "auto") not in ("auto", "blocks")):
            return None
        key = tuple(sorted(options.items()))
        if key not in self._references:
            self._references[key] = self.factor.log_volume(
                self.reference_labels, estimator, keep_posterior=True, **options)
        return self._references[key]

    def conditional(self, labels: Any, n_train: int, estimator: str = DEFAULT_ESTIMATOR, *,
                    delta: float = 0.05, **options: Any) -> ConditionalVolume:
        """V(f) on all points, V(f on S) on the first n_train, V(f|S) and the bound, with
        their jackknife standard errors and bias estimates when the service has replicates.

        Args:
            labels: labels of all n points (S first), as in `log_volume`.
            n_train: |S|.
            estimator: volume estimator name, as in `log_volume`.
            delta: the PAC-Bayes bound's confidence (the bound holds with prob. 1 - delta).
            **options: estimator options, as in `log_volume`.

        Returns:
            A ConditionalVolume; its `stderr` and `bias` are None without replicates.
        """
        value = self._point_values(labels, n_train, estimator, delta, options)
        if self.replicates is None:
            return value
        if self._replicate_services is None:
            # Each replicate is factorized once, like the kernel, and reused across label vectors.
            self._replicate_services = [
                VolumeService(k, n_classes=self.n_classes,
                              max_relative_jitter=self.max_relative_jitter, name=self.name,
                              max_cached=self.max_cached,
                              reference_labels=self.reference_labels)
                for k in self.replicates]
        full = conditional_values(value)
        reps = [conditional_values(s._point_values(labels, n_train, estimator, delta, options))
                for s in self._replicate_services]
        columns = [[r[i] for r in reps] for i in range(len(full))]
        return replace(value, stderr=VolumeStderr(*map(jackknife_stderr, full, columns)),
                       bias=VolumeBias(*map(jackknife_bias, full, columns)))

    def _point_values(self, labels: Any, n_train: int, estimator: str, delta: float,
                      options: dict[str, Any]) -> ConditionalVolume:
        """`conditional`'s values on this service's kernel alone (no error)."""
        y = self.labels(labels, self.n)
        if not 1 <= n_train <= self.n:
            raise VolumeError(f"n_train must be in 1..{self.n}, got {n_train}")
        full = self.log_volume(y, estimator, **options)
        train = self.log_volume(y[:n_train], estimator, n=n_train, **options)
        return ConditionalVolume(full, train, full.log10_volume - train.log10_volume,
                                 bound_from_train_volume(train, n_train, delta))

    def point_marginals(self, train_labels: Any, estimator: str = DEFAULT_ESTIMATOR,
                        **options: Any) -> np.ndarray:
        """P(label 1 on e | y_S) = V(y_S, e -> 1) / V(y_S) for each point e after S, on its own.

        Args:
            train_labels: y_S, the labels of the first |S| points.
            estimator: volume estimator name, as in `log_volume`.
            **options: estimator options, as in `log_volume`.

        Returns:
            One probability per point after S (clipped to [0, 1]).

        Raises:
            VolumeError: a K-class service (K > 2): there is no single "label 1" to ask for.
        """
        if self.n_classes != 2:
            raise VolumeError(f"point_marginals: binary only, got a service for "
                              f"{self.n_classes} classes")
        y_S = as_signed_labels(train_labels)
        n_S = len(y_S)
        train = self.log_volume(y_S, estimator, n=n_S, **options)
        out = np.empty(self.n - n_S)
        for j in range(n_S, self.n):
            point = self.factor.with_point(n_S, j).log_volume(np.r_[y_S, 1.0], estimator,
                                                              **options)
            out[j - n_S] = 10 ** (point.log10_volume - train.log10_volume)
        return np.clip(out, 0.0, 1.0)
