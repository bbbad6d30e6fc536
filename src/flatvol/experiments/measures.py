"""The measure registry: name -> function(model, task, context) -> dict[str, float].

A measure is taken on the genuine training set S (flatness) or on S u E (volume), never on the
attack set. The context carries what a sweep shares: the NNGP kernel of S u E (it depends only on
the data and the prior, so it is computed once per sweep and reused by every run and epoch), the
measure settings of the spec, the run's seed and the device. Measures write their details
(estimator, convergence, maximizer, seconds, ...) into `context.details` for the run's info JSON.

Result names match flatvol.analysis.measures: log10_volume, log10_volume_conditional,
pac_bayes_bound, sharpness, log10_sharpness, hessian_top_eig, hessian_trace, hessian_frobenius,
average_sharpness, adaptive_sharpness, pac_bayes_sigma, pac_bayes_mag_sigma, fisher_rao_norm,
train_acc_S, train_acc_A, test_acc_E.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from flatvol.data.task import TaskData
from flatvol.errors import SpecError

MeasureFn = Callable[[nn.Module, TaskData, "MeasureContext"], dict[str, float]]


@dataclass
class MeasureContext:
    """What measures share within a sweep (kernel, settings) and within a run (seed, details).

    `settings` is the spec's MeasuresSpec (or None for defaults); `kernel` the NNGP kernel of
    S u E in that order (float64, n_S + n_E square), needed by 'volume'."""

    settings: Any = None
    seed: int = 0
    device: str | torch.device = "cpu"
    kernel: np.ndarray | None = None
    kernel_info: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    volume_cache: VolumeCache | None = None

    def __post_init__(self) -> None:
        if self.settings is None:
            from flatvol.experiments.spec import MeasuresSpec

            self.settings = MeasuresSpec()

    def volume(self) -> VolumeCache:
        if self.volume_cache is None:
            if self.kernel is None:
                raise SpecError("measure 'volume' needs the sweep's NNGP kernel (context.kernel)")
            self.volume_cache = VolumeCache(self.kernel)
        return self.volume_cache

    def options(self, name: str) -> dict[str, Any]:
        return dict(self.settings.options.get(name, {}))

    def measure_seed(self, salt: int) -> int:
        """A seed for a randomized measure: fixed per (run seed, epoch, measure)."""
        epoch = -1 if self.epoch is None else self.epoch
        return (self.seed * 1_000_003 + (epoch + 1) * 7919 + salt) % (2**31 - 1)


_REGISTRY: dict[str, MeasureFn] = {}


def register_measure(name: str, fn: MeasureFn) -> None:
    """Make `name` usable in specs ([measures] final, [during] measures)."""
    _REGISTRY[name] = fn


def measure_names() -> list[str]:
    return sorted(_REGISTRY)


def get_measure(name: str) -> MeasureFn:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SpecError(f"unknown measure {name!r}; expected one of {', '.join(measure_names())}") \
            from None


def compute_measures(names: Iterable[str], model: nn.Module, task: TaskData,
                     context: MeasureContext) -> dict[str, float]:
    """Run the named measures in order and merge their outputs."""
    out: dict[str, float] = {}
    model.eval()
    for name in names:
        start = time.perf_counter()
        values = get_measure(name)(model, task, context)
        context.details.setdefault(name, {})["seconds"] = round(time.perf_counter() - start, 4)
        out.update({k: float(v) for k, v in values.items()})
    return out


def _call(fn: Callable, context: MeasureContext, name: str, **defaults: Any) -> Any:
    """Call a flatness function with defaults overridden by the spec's options for `name`."""
    kwargs = {**defaults, **context.options(name)}
    try:
        return fn(**kwargs)
    except TypeError as exc:
        raise SpecError(f"measures.options.{name}: {exc}") from None


# --------------------------------------------------------------------------- accuracy
def accuracy_measure(model: nn.Module, task: TaskData, context: MeasureContext) -> dict[str, float]:
    from flatvol.train import accuracy

    return {"train_acc_S": accuracy(model, task.S.x, task.S.y),
            "train_acc_A": accuracy(model, task.A.x, task.A.y),
            "test_acc_E": accuracy(model, task.E.x, task.E.y)}


def test_accuracy_measure(model: nn.Module, task: TaskData,
                          context: MeasureContext) -> dict[str, float]:
    from flatvol.train import accuracy

    return {"test_acc_E": accuracy(model, task.E.x, task.E.y)}


# --------------------------------------------------------------------------- volume
def volume_measure(model: nn.Module, task: TaskData, context: MeasureContext) -> dict[str, float]:
    """log10 V(f) of the labels f the model gives S u E, and log10 V(f|S) = log10 V(f on S u E)
    - log10 V(f on S), with the spec's estimator (default 'ep-orthant') on the shared kernel."""
    from flatvol.train import predict_labels

    if context.kernel is None and context.volume_cache is None:
        raise SpecError("measure 'volume' needs the sweep's NNGP kernel (context.kernel)")
    n_S = task.train_size
    labels = predict_labels(model, task.x_SE()).numpy().astype(np.float64)
    n_kernel = context.volume().kernel.shape[0]
    if labels.shape[0] != n_kernel:
        raise SpecError(f"kernel is {n_kernel} x {n_kernel} but S u E has {labels.shape[0]} "
                        "points")
    log10_v, info = _log10_volume(context, labels, subset=None)
    log10_v_S, info_S = _log10_volume(context, labels[:n_S], subset=n_S)
    out = {"log10_volume": log10_v, "log10_volume_conditional": log10_v - log10_v_S,
           "log10_volume_S": log10_v_S,
           "pac_bayes_bound": _pac_bayes_bound(log10_v_S * math.log(10), n_S),
           "volume_converged": float(bool(info.get("converged")) and
                                     bool(info_S.get("converged")))}
    context.details["volume"] = {**info, "train": info_S, "kernel": context.kernel_info}
    return out


def _pac_bayes_bound(log_p_nats: float, m: int, delta: float = 0.05) -> float:
    """Valle-Perez et al. (2019) bound from V(f on S); nan if the estimate is not finite."""
    from flatvol.volume import pac_bayes_bound

    if not math.isfinite(log_p_nats):
        return math.nan
    return float(pac_bayes_bound(min(log_p_nats, 0.0), m, delta))


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


def _log10_volume(context: MeasureContext, labels: np.ndarray,
                  subset: int | None) -> tuple[float, dict]:
    settings = context.settings.volume
    return context.volume().log10_volume(labels, subset, settings.estimator,
                                         _volume_options(context, settings))


def _volume_options(context: MeasureContext, settings: Any) -> dict[str, Any]:
    options = dict(settings.options)
    if settings.estimator == "orthant-is":
        options.setdefault("seed", context.measure_seed(11))
    return options


# --------------------------------------------------------------------------- flatness
def sharpness_measure(model: nn.Module, task: TaskData,
                      context: MeasureContext) -> dict[str, float]:
    """Keskar sharpness on S (box eps (|w| + 1)) with the spec's maximizer."""
    from flatvol.flatness import keskar_sharpness

    s = context.settings.sharpness
    kwargs = {"epsilon": s.epsilon, "maximizer": s.maximizer, "seed": context.measure_seed(1),
              "device": context.device, **s.options}
    try:
        result = keskar_sharpness(model, task.S.x, task.S.y, **kwargs)
    except TypeError as exc:
        raise SpecError(f"measures.sharpness.options: {exc}") from None
    context.details["sharpness"] = {"maximizer": result.maximizer, "epsilon": result.epsilon,
                                    "loss": result.loss, "max_loss": result.max_loss}
    return {"sharpness": result.sharpness, "log10_sharpness": result.log10_sharpness}


def _flatness(fn_name: str, column: str, attr: str, salt: int, **defaults: Any) -> MeasureFn:
    def measure(model: nn.Module, task: TaskData, context: MeasureContext) -> dict[str, float]:
        import flatvol.flatness as flatness

        fn = getattr(flatness, fn_name)
        result = _call(lambda **kw: fn(model, task.S.x, task.S.y, **kw), context, column,
                       seed=context.measure_seed(salt), device=context.device, **defaults)
        value = getattr(result, attr)
        if isinstance(value, (list, tuple)):
            value = value[0]
        context.details[column] = {k: v for k, v in result.to_dict().items()
                                   if isinstance(v, (str, int, float, bool)) or v is None}
        return {column: float(value)}

    measure.__doc__ = f"flatvol.flatness.{fn_name} on S -> {column} (its .{attr})."
    return measure


def fisher_rao_measure(model: nn.Module, task: TaskData,
                       context: MeasureContext) -> dict[str, float]:
    from flatvol.flatness import fisher_rao_norm

    result = _call(lambda **kw: fisher_rao_norm(model, task.S.x, task.S.y, **kw), context,
                   "fisher_rao_norm", device=context.device)
    return {"fisher_rao_norm": result.fisher_rao_norm}


for _name, _fn in {
    "accuracy": accuracy_measure,
    "test_accuracy": test_accuracy_measure,
    "volume": volume_measure,
    "sharpness": sharpness_measure,
    "hessian_top_eig": _flatness("hessian_top_eigenvalues", "hessian_top_eig", "eigenvalues", 2),
    "hessian_trace": _flatness("hessian_trace", "hessian_trace", "trace", 3),
    "hessian_frobenius": _flatness("hessian_frobenius_norm", "hessian_frobenius",
                                   "frobenius_norm", 4),
    "average_sharpness": _flatness("average_sharpness", "average_sharpness", "sharpness", 5),
    "adaptive_sharpness": _flatness("adaptive_sharpness", "adaptive_sharpness", "sharpness", 6),
    "pac_bayes_sigma": _flatness("pac_bayes_flatness", "pac_bayes_sigma", "sigma_star", 7),
    "pac_bayes_mag_sigma": _flatness("pac_bayes_magnitude_flatness", "pac_bayes_mag_sigma",
                                     "sigma_star", 8),
    "fisher_rao_norm": fisher_rao_measure,
}.items():
    register_measure(_name, _fn)
