"""The volume measure's work: log10 V(f) of a network's labels on S u E, on the sweep's kernel.

`VolumeCache` keeps one VolumeEstimator per principal block of the kernel; `volume_values` turns
a model into the stored volume columns. The catalogue's 'volume' entry is a thin call to it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from flatvol.errors import SpecError

if TYPE_CHECKING:
    from torch import nn

    from flatvol.data.task import TaskData


class VolumeCache:
    """Volume estimates on one kernel: a VolumeEstimator per principal block (S u E, and S for
    the conditional), so the kernel's checks and factorization are done once per process and
    reused for every label vector, plus a cache of estimates by label vector (every fitted
    network has the same labels on S, so log V(f on S) is computed once per sweep)."""

    def __init__(self, kernel: np.ndarray, max_cached: int = 4096):
        self.kernel = kernel
        self.max_cached = max_cached
        self._estimators: dict[int | None, Any] = {}
        self._cache: dict[tuple, tuple[float, dict]] = {}

    def estimator(self, subset: int | None) -> Any:
        from flatvol.volume import VolumeEstimator

        if None not in self._estimators:
            self._estimators[None] = VolumeEstimator(self.kernel)
        if subset not in self._estimators:  # a leading block shares the Cholesky factor
            self._estimators[subset] = self._estimators[None].leading(subset)
        return self._estimators[subset]

    def log10_volume(self, labels: np.ndarray, subset: int | None, estimator: str,
                     options: dict[str, Any]) -> tuple[float, dict]:
        key = (subset, estimator, tuple(sorted(options.items())), labels.tobytes())
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            result = self.estimator(subset).log_volume(labels, estimator, **options)
        except TypeError as exc:
            raise SpecError(f"measures.volume.options: {exc}") from None
        info = {k: v for k, v in result.to_dict().items()
                if isinstance(v, (str, int, float, bool)) or v is None}
        value = (float(result.log10_volume), info)
        if len(self._cache) >= self.max_cached:
            self._cache.clear()
        self._cache[key] = value
        return value


def volume_values(model: nn.Module, task: TaskData, cache: VolumeCache, estimator: str,
                  options: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """log10 V(f) of the labels f the model gives S u E, and log10 V(f|S) = log10 V(f on S u E)
    - log10 V(f on S), with `estimator` on the cached kernel.

    Args:
        model: the trained network.
        task: its task; the kernel is of S u E in that order.
        cache: the estimators on the sweep's NNGP kernel.
        estimator: a flatvol.volume estimator name ('ep-orthant', ...).
        options: keyword arguments of that estimator.

    Returns:
        The stored values (log10_volume, log10_volume_conditional, log10_volume_S,
        pac_bayes_bound, volume_converged) and the estimator's details for the run's info.
    """
    from flatvol.train import predict_labels

    n_S = task.train_size
    labels = predict_labels(model, task.x_SE()).numpy().astype(np.float64)
    n_kernel = cache.kernel.shape[0]
    if labels.shape[0] != n_kernel:
        raise SpecError(f"kernel is {n_kernel} x {n_kernel} but S u E has {labels.shape[0]} "
                        "points")
    log10_v, info = cache.log10_volume(labels, None, estimator, options)
    log10_v_S, info_S = cache.log10_volume(labels[:n_S], n_S, estimator, options)
    values = {"log10_volume": log10_v, "log10_volume_conditional": log10_v - log10_v_S,
              "log10_volume_S": log10_v_S,
              "pac_bayes_bound": _pac_bayes_bound(log10_v_S * math.log(10), n_S),
              "volume_converged": float(bool(info.get("converged")) and
                                        bool(info_S.get("converged")))}
    return values, {**info, "train": info_S}


def _pac_bayes_bound(log_p_nats: float, m: int, delta: float = 0.05) -> float:
    """The Langford-Seeger bound from V(f on S) (bounds.py); nan if not finite or m < 2."""
    from flatvol.volume import pac_bayes_bound

    if not math.isfinite(log_p_nats) or m < 2:  # the bound divides by m - 1: undefined at m = 1
        return math.nan
    return float(pac_bayes_bound(min(log_p_nats, 0.0), m, delta))
