"""The volume service: one kernel on S u E (S first), factorized once, for every label vector.

Everything that needs V(f) goes through VolumeService: the sweep's volume measure, `flatvol
volume` and sgd-vs-bayes. From one validated, jittered Cholesky factor it gives V(f) on all
points, V(f on S) (the leading block shares the factor), V(f|S) and the PAC-Bayes bound, and the
per-point marginals P(label 1 on e | y_S) (each S u {e} block's factor is read off the full one).
Estimates are cached by (block, estimator, options, labels): every network that fits S has the
same labels there, so V(y_S) is computed once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from flatvol.errors import VolumeError
from flatvol.io import to_jsonable
from flatvol.volume._numerics import DEFAULT_MAX_JITTER, as_signed_labels, to_numpy
from flatvol.volume.bounds import pac_bayes_bound
from flatvol.volume.estimate import (
    DEFAULT_ESTIMATOR,
    VolumeEstimator,
    VolumeResult,
    check_estimator,
)


@dataclass(frozen=True)
class ConditionalVolume:
    """log V(f|S) = log V(f on S u E) - log V(f on S), plus the PAC-Bayes bound from V(S)."""

    full: VolumeResult  # on all n points (S then E)
    train: VolumeResult  # on the first n_train points (S)
    log10_volume_conditional: float
    pac_bayes_bound: float  # delta = 0.05 unless asked otherwise, m = n_train

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
        }


@dataclass(frozen=True)
class VolumeStderr:
    """The Monte-Carlo kernel's error carried to the volumes: jackknife standard errors over
    its leave-one-batch-out kernels (nan where an estimate is not finite)."""

    log10_volume: float
    log10_volume_S: float
    log10_volume_conditional: float
    pac_bayes_bound: float


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


def bound_from_train_volume(train: VolumeResult, n_train: int, delta: float = 0.05) -> float:
    """The PAC-Bayes bound (flatvol.volume.bounds) from V(y_S); nan if the estimate is not
    finite or n_train < 2 (the bound divides by m - 1)."""
    nats = train.log_marginal_likelihood_nats
    if not math.isfinite(nats) or n_train < 2:
        return math.nan
    return float(pac_bayes_bound(min(nats, 0.0), n_train, delta))


class VolumeService:
    """Volume estimates on one kernel, factorized once, cached by label vector.

    Build one per kernel (e.g. the NNGP kernel of S u E from `select_kernel`) and ask it for
    many label vectors: `log_volume` for V(f), `conditional` for V(f|S) and the PAC-Bayes
    bound, `point_marginals` for the posterior predictive on each test point.

    Example:
        ```python
        kernel = select_kernel(model, x_SE).matrix
        service = VolumeService(kernel)
        print(service.conditional(labels, n_train=len(x_S)).log10_volume_conditional)
        ```

    Args:
        kernel: an (n, n) kernel (rows S then E), or a VolumeEstimator already built on it.
        max_relative_jitter: the jitter limit (see VolumeEstimator).
        name: how errors about the kernel name it (e.g. its file).
        max_cached: estimates kept before the cache is cleared.
        replicates: for a Monte-Carlo kernel, its leave-one-batch-out kernels, from which
            `conditional_stderr` gives jackknife standard errors; None for an exact kernel.
        reference_labels: labels of all n points (a sweep passes the true labels of S u E)
            whose 'ep-orthant' posterior is computed once, on first use, and starts every
            other 'ep-orthant' estimate on all n points (about 3 Choleskys instead of 6-8,
            the same value to 1e-6 relative: bench/RESULTS.md). The start is the same whatever
            the order of the calls, so the numbers are too. None: every estimate from zero.
    """

    def __init__(self, kernel: Any, *, max_relative_jitter: float = DEFAULT_MAX_JITTER,
                 name: str = "kernel", max_cached: int = 4096,
                 replicates: Sequence[np.ndarray] | None = None,
                 reference_labels: Any = None):
        self.factor = kernel if isinstance(kernel, VolumeEstimator) else \
            VolumeEstimator(kernel, max_relative_jitter=max_relative_jitter, name=name)
        self.max_cached = max_cached
        self._cache: dict[tuple, VolumeResult] = {}
        self.name = name
        self.max_relative_jitter = max_relative_jitter
        self.replicates = None if replicates is None else list(replicates)
        self._replicate_services: list[VolumeService] | None = None
        self.reference_labels = (None if reference_labels is None
                                 else as_signed_labels(reference_labels, self.n))
        self._references: dict[tuple, VolumeResult] = {}

    @property
    def n(self) -> int:
        return self.factor.n

    @property
    def kernel(self) -> np.ndarray:
        """The validated kernel (with its jitter on the diagonal)."""
        return self.factor.kernel

    def log_volume(self, labels: Any, estimator: str = DEFAULT_ESTIMATOR, *,
                   n: int | None = None, **options: Any) -> VolumeResult:
        """ln P(labels) on the first `n` points (default all), cached.

        Args:
            labels: n labels in {0,1} or {-1,+1}.
            estimator: a name from flatvol.volume.ESTIMATORS.
            n: size of the leading block (e.g. |S|); None for every point.
            options: estimator options (tol, max_iter, mode, n_samples, seed, proposal).

        Returns:
            The VolumeResult (the same object for a repeated call).
        """
        check_estimator(estimator)
        block = self.factor if n is None else self.factor.leading(n)
        y = as_signed_labels(labels, block.n)
        key = (block.n, estimator, tuple(sorted(options.items())), y.tobytes())
        cached = self._cache.get(key)
        if cached is None:
            reference = self._reference(estimator, n, options)
            if reference is not None:
                cached = (reference if np.array_equal(y, self.reference_labels)
                          else block.log_volume(y, estimator, warm_start=reference, **options))
            else:
                cached = block.log_volume(y, estimator, **options)
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def _reference(self, estimator: str, n: int | None,
                   options: dict[str, Any]) -> VolumeResult | None:
        """The reference labels' estimate with its posterior (the warm start), or None where
        none applies: no reference labels, a leading block, another estimator or mode."""
        if (self.reference_labels is None or n not in (None, self.n)
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
        """V(f) on all points, V(f on S) on the first n_train, V(f|S) and the bound.

        Args:
            labels: labels of all n points (S first).
            n_train: |S|.
            estimator: volume estimator name, as in `log_volume`.
            delta: the PAC-Bayes bound's confidence (the bound holds with prob. 1 - delta).
            **options: estimator options, as in `log_volume`.

        Returns:
            A ConditionalVolume.
        """
        y = as_signed_labels(labels, self.n)
        if not 1 <= n_train <= self.n:
            raise VolumeError(f"n_train must be in 1..{self.n}, got {n_train}")
        full = self.log_volume(y, estimator, **options)
        train = self.log_volume(y[:n_train], estimator, n=n_train, **options)
        return ConditionalVolume(full, train, full.log10_volume - train.log10_volume,
                                 bound_from_train_volume(train, n_train, delta))

    def conditional_stderr(self, labels: Any, n_train: int,
                           estimator: str = DEFAULT_ESTIMATOR, *, delta: float = 0.05,
                           **options: Any) -> VolumeStderr | None:
        """The Monte-Carlo error of `conditional`'s values: each is recomputed on every
        leave-one-batch-out kernel, and the spread of those replicates is the jackknife
        standard error.

        Args:
            labels: labels of all n points (S first).
            n_train: |S|.
            estimator: volume estimator name, as in `log_volume`.
            delta: the PAC-Bayes bound's confidence.
            **options: estimator options, as in `log_volume`.

        Returns:
            A VolumeStderr, or None when the service has no replicates (an exact kernel, or a
            Monte-Carlo kernel whose batches were not kept).
        """
        if self.replicates is None:
            return None
        if self._replicate_services is None:
            # Each replicate is factorized once, like the kernel, and reused across label vectors.
            self._replicate_services = [
                VolumeService(k, max_relative_jitter=self.max_relative_jitter, name=self.name,
                              max_cached=self.max_cached,
                              reference_labels=self.reference_labels)
                for k in self.replicates]
        full = conditional_values(self.conditional(labels, n_train, estimator, delta=delta,
                                                   **options))
        reps = [conditional_values(s.conditional(labels, n_train, estimator, delta=delta,
                                                 **options))
                for s in self._replicate_services]
        return VolumeStderr(*(jackknife_stderr(value, [r[i] for r in reps])
                              for i, value in enumerate(full)))

    def point_marginals(self, train_labels: Any, estimator: str = DEFAULT_ESTIMATOR,
                        **options: Any) -> np.ndarray:
        """P(label 1 on e | y_S) = V(y_S, e -> 1) / V(y_S) for each point e after S, on its own.

        Args:
            train_labels: y_S, the labels of the first |S| points.
            estimator: volume estimator name, as in `log_volume`.
            **options: estimator options, as in `log_volume`.

        Returns:
            One probability per point after S (clipped to [0, 1]).
        """
        y_S = as_signed_labels(train_labels)
        n_S = len(y_S)
        train = self.log_volume(y_S, estimator, n=n_S, **options)
        out = np.empty(self.n - n_S)
        for j in range(n_S, self.n):
            point = self.factor.with_point(n_S, j).log_volume(np.r_[y_S, 1.0], estimator,
                                                              **options)
            out[j - n_S] = 10 ** (point.log10_volume - train.log10_volume)
        return np.clip(out, 0.0, 1.0)


@dataclass(frozen=True)
class ModelVolume:
    """Volume of the function a trained network computes on S u E."""

    volume: ConditionalVolume
    kernel_kind: str  # 'analytic', 'monte-carlo' or 'given'
    n_train: int
    n_test: int
    predicted_train_accuracy: float  # agreement of the network's labels with y on S
    predicted_test_accuracy: float
    # How the kernel was made: kind, n, seconds, and for a Monte-Carlo kernel mc_samples,
    # mc_seed, width and max_stderr (empty for a given kernel).
    kernel_info: dict[str, Any] = field(default_factory=dict)
    # The kernel's error carried to the volumes: zeros for an analytic (exact) kernel, jackknife
    # standard errors for a Monte-Carlo one (nan if its batches were too large to keep), None
    # for a given kernel (its error is unknown).
    stderr: VolumeStderr | None = None

    def to_dict(self) -> dict[str, Any]:
        out = self.volume.full.to_dict()
        out.update(
            log10_volume_conditional=to_jsonable(self.volume.log10_volume_conditional),
            log10_volume_S=to_jsonable(self.volume.log10_volume_S),
            pac_bayes_bound=to_jsonable(self.volume.pac_bayes_bound),
            kernel=self.kernel_kind,
            n_train=self.n_train,
            n_test=self.n_test,
            train_accuracy=self.predicted_train_accuracy,
            test_accuracy=self.predicted_test_accuracy,
            train_estimate=self.volume.train.to_dict(),
            kernel_info={k: to_jsonable(v) for k, v in self.kernel_info.items()},
        )
        if self.stderr is not None:
            out.update({f"{name}_stderr": to_jsonable(value)
                        for name, value in asdict(self.stderr).items()})
        return out


@torch.no_grad()
def predicted_labels(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000,
                     device: str | torch.device = "cpu") -> np.ndarray:
    """The network's labels (logit > 0) as {0, 1} float64.

    Args:
        model: The network to evaluate.
        x: Inputs, shape (n, ...).
        batch_size: Inputs per forward pass.
        device: Device the forward passes run on.

    Returns:
        The predicted labels in {0, 1}, float64 of shape (n,).

    Raises:
        VolumeError: If the model's output is not one logit per input.
    """
    was_training = model.training
    model.eval()
    try:
        logits = torch.cat([model(x[i : i + batch_size].to(device)).reshape(-1).cpu()
                            for i in range(0, x.shape[0], batch_size)])
    finally:
        model.train(was_training)
    bad = int((~torch.isfinite(logits)).sum())
    if bad:  # such a network computes no function: its "labels" would be arbitrary
        raise VolumeError(f"the network's outputs are not finite on {bad} of {logits.numel()} "
                          "points; expected finite outputs (are its weights finite?)")
    return (logits > 0).to(torch.float64).numpy()


def volume_of_model(
    model: nn.Module,
    task: Any,
    estimator: str = DEFAULT_ESTIMATOR,
    *,
    kernel: Any = None,
    estimator_cache: VolumeEstimator | VolumeService | None = None,
    mc_samples: int | Literal["auto"] = 100,
    mc_tolerance: float | None = None,
    mc_max_samples: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    **options: Any,
) -> ModelVolume:
    """V(f) of the function a trained network computes on S u E (a flatvol TaskData).

    f is the network's own labels on S then E (sign of the logits). The kernel comes from the
    model's prior (flatvol.volume.kernels.select_kernel with kind 'auto'); pass `kernel` or
    `estimator_cache` (built on task.x_SE()) to reuse one across a sweep.

    Args:
        model: the trained network (one logit), carrying its `.prior` unless `kernel` or
            `estimator_cache` is given.
        task: the data (flatvol.data.TaskData, or anything with `x_SE()`, `y_SE()`,
            `train_size` and `test_size`), S first.
        estimator: a name from flatvol.volume.ESTIMATORS.
        kernel: an (n, n) kernel of S u E to use instead of the prior's.
        estimator_cache: a VolumeService or VolumeEstimator on S u E, shared across networks.
        mc_samples: Monte-Carlo draws when the prior's kernel has no closed form, or 'auto'
            (chosen by a convergence check on the true labels y on S u E, see
            flatvol.volume.mc_convergence).
        mc_tolerance: with 'auto', the log10 V agreement required (default: the check's).
        mc_max_samples: with 'auto', the most draws tried (default: the check's).
        seed: seed of the Monte-Carlo kernel and of sampling estimators.
        device: torch device for the network's predictions and the Monte-Carlo kernel.
        progress: show the Monte-Carlo kernel's progress.
        **options: estimator options (see `VolumeService.log_volume`).

    Returns:
        The ModelVolume: log10 V(f), V(f on S), V(f|S), the PAC-Bayes bound, their standard
        errors from the kernel (0 for an analytic kernel, a jackknife over 10 batches of draws
        for a Monte-Carlo one), the kernel kind and how well the network's labels agree with y
        on S and E.

    Raises:
        VolumeError: unknown estimator, or a kernel whose size is not |S u E|.
    """
    from flatvol.volume.kernels import DEFAULT_MC_BATCHES, select_kernel

    check_estimator(estimator)
    x = task.x_SE()
    n_train, n_test = task.train_size, task.test_size
    f = predicted_labels(model, x, device=device)
    if estimator_cache is not None or kernel is not None:
        given = estimator_cache if estimator_cache is not None else kernel
        service = given if isinstance(given, VolumeService) else VolumeService(given)
        kind, kernel_info = "given", {}
        if service.n != x.shape[0]:
            raise VolumeError(f"kernel has {service.n} rows but S u E has {x.shape[0]} points")
    else:
        limits = {k: v for k, v in (("mc_tolerance", mc_tolerance),
                                     ("mc_max_samples", mc_max_samples)) if v is not None}
        nngp = select_kernel(model, x, "auto", mc_samples=mc_samples, mc_seed=seed,
                             device=device, progress=progress, mc_batches=DEFAULT_MC_BATCHES,
                             probe_labels=task.y_SE(), probe_estimator=estimator,
                             probe_options=options, **limits)
        service = VolumeService(nngp.matrix, replicates=nngp.replicates())
        kind, kernel_info = nngp.kind, dict(nngp.info)
    volume = service.conditional(f, n_train, estimator, seed=seed, **options)
    stderr = service.conditional_stderr(f, n_train, estimator, seed=seed, **options)
    if stderr is None and kind == "analytic":
        stderr = VolumeStderr(0.0, 0.0, 0.0, 0.0)
    elif stderr is None and kind == "monte-carlo":
        stderr = VolumeStderr(math.nan, math.nan, math.nan, math.nan)
    y = to_numpy(task.y_SE()).astype(np.float64)
    train_acc = float(np.mean(f[:n_train] == y[:n_train]))
    test_acc = float(np.mean(f[n_train:] == y[n_train:])) if n_test else math.nan
    return ModelVolume(volume, kind, n_train, n_test, train_acc, test_acc, kernel_info, stderr)
