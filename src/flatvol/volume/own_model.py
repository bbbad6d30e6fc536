"""The volume of any model, in one call, on plain tensors: `volume_of(model, x_S, y_S, x_E)`.

f is the model's own labels on S then E (flatvol.models.labels_of: sign of one logit, the
argmax of K outputs, whose volume is the K-class one of flatvol.volume.multiclass). The kernel
is the analytic arccos kernel where the architecture has one (a flatvol FCN drawn from its
prior) and otherwise the Monte-Carlo output kernel of one output over the model's own
initializer (flatvol.volume.output_kernel), whose error is
carried to log10 V by a jackknife over its batches of draws: log10 V is recomputed on each
leave-one-batch-out kernel, the spread of those values gives the standard error and their mean
shift from the full value the bias estimate. The draws are chosen by the convergence check of
flatvol.volume.mc_convergence unless a count is given.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats
from torch import nn

from flatvol.errors import VolumeError
from flatvol.io import to_jsonable
from flatvol.models import labels_from_outputs, model_outputs, output_count
from flatvol.volume._numerics import to_numpy
from flatvol.volume.estimate import DEFAULT_ESTIMATOR, check_estimator
from flatvol.volume.kernels import KernelRequest, prior_kernel
from flatvol.volume.mc_convergence import (
    DEFAULT_MC_MAX_SAMPLES,
    DEFAULT_MC_TOLERANCE,
    check_mc_samples,
    check_mc_settings,
    warn_if_too_few_draws,
)
from flatvol.volume.output_kernel import Initializer, describe_init
from flatvol.volume.service import ConditionalVolume, VolumeService, conditional_values
from flatvol.volume_settings import estimator_info

QUANTITIES = ("log10_volume", "log10_volume_train", "log10_volume_conditional",
              "pac_bayes_bound")


@dataclass(frozen=True)
class VolumeOf:
    """log10 V(f), V(f on S), V(f|S) and the PAC-Bayes bound of one model's function on S u E.

    The `*_stderr` fields are the Monte-Carlo kernel's error carried through (jackknife over
    `mc_batches` batches of draws); None for an analytic kernel. The `*_bias` fields are the
    same jackknife's estimate of the value's bias (`flatvol.volume.service.jackknife_bias`),
    reported, not subtracted: value - bias is the jackknife's bias-corrected estimate. A noisy
    kernel makes log10 V too low on average, the bias shrinking like 1 / mc_samples: the mean
    of the log of a noisy orthant probability is below the log of its mean (Jensen). On the
    one-hidden-layer FCN whose output kernel is exactly the arccos kernel, 100 draws on 30
    points gave log10 V(f) -0.145 +- 0.015 below the exact kernel's over 400 seeds and a bias
    estimate of -0.132 on average (50 draws: -0.22 +- 0.02 and -0.30;
    tests/volume/test_mc_volume_bias.py). So the bias fields of log10 V(f) and V(f on S) are
    typically negative, and `MonteCarloDrawsWarning` is issued when one is large next to its
    standard error (flatvol.volume.mc_convergence.too_few_draws).
    """

    log10_volume: float
    log10_volume_train: float
    log10_volume_conditional: float
    pac_bayes_bound: float
    log10_volume_stderr: float | None
    log10_volume_train_stderr: float | None
    log10_volume_conditional_stderr: float | None
    pac_bayes_bound_stderr: float | None
    log10_volume_bias: float | None
    log10_volume_train_bias: float | None
    log10_volume_conditional_bias: float | None
    pac_bayes_bound_bias: float | None
    train_accuracy: float  # the model's labels vs y_S
    n_train: int
    n_test: int
    estimator: str
    kernel: str  # the kernel's kind: 'analytic' or 'mc-output' (kernels.KERNEL_REGISTRY)
    init: str  # what the prior is: the initializer the kernel draws from
    mc_samples: int | None  # the draws used (with 'auto': those the check chose)
    mc_batches: int | None
    kernel_seconds: float
    seed: int
    volume: ConditionalVolume  # the full estimates on the whole-sample kernel
    # with n_samples 'auto': the convergence check's settings and rounds (MCConvergence.to_info)
    mc_convergence: dict[str, Any] | None = None
    warning: str | None = None  # the MonteCarloDrawsWarning issued, if any
    n_classes: int = 2  # K: 2 for one logit, else the model's output count
    # K >= 2 outputs with a Monte-Carlo kernel: the shared-kernel test the draws passed
    # (flatvol.volume.shared_outputs.SharedOutputCheck, as a dict); None otherwise
    shared_outputs: dict[str, Any] | None = None

    def interval(self, quantity: str = "log10_volume", level: float = 0.95) -> tuple[float, float]:
        """A confidence interval from the Monte-Carlo error (Student t, mc_batches - 1 dof).

        Args:
            quantity: one of log10_volume, log10_volume_train, log10_volume_conditional,
                pac_bayes_bound.
            level: coverage, e.g. 0.95.

        Returns:
            (low, high); the point value twice for an analytic kernel.
        """
        if quantity not in QUANTITIES:
            raise VolumeError(f"quantity must be one of {', '.join(QUANTITIES)}, got {quantity!r}")
        value, stderr = getattr(self, quantity), getattr(self, f"{quantity}_stderr")
        if stderr is None:
            return value, value
        half = float(stats.t.ppf(0.5 + level / 2, self.mc_batches - 1)) * stderr
        return value - half, value + half

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: to_jsonable(getattr(self, f.name)) for f in fields(self)
               if f.name != "volume"}
        out["volume"] = self.volume.to_dict()
        return out


def as_class_labels(y: Any, n: int, labels: str, n_classes: int = 2) -> np.ndarray:
    """y_S as int64 classes 0..K-1, refusing anything else in one line.

    Args:
        y: the labels, tensor or array.
        n: how many there must be (rows of x_S).
        labels: '01' or 'pm1' (-1/+1, binary only): the coding of binary labels.
        n_classes: K, the model's classes (2 for one logit).

    Returns:
        int64 labels of shape (n,).

    Raises:
        VolumeError: labels of another count, not numeric, or outside the classes.
    """
    if labels not in ("01", "pm1"):
        raise VolumeError(f"labels must be '01' or 'pm1', got {labels!r}")
    if labels == "pm1" and n_classes > 2:
        raise VolumeError(f"labels='pm1' codes binary labels, but the model has {n_classes} "
                          f"outputs; give y_S as classes 0..{n_classes - 1}")
    array = to_numpy(y)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number)
                                     or array.dtype == bool):
        raise VolumeError(f"y_S: expected numeric labels, got dtype {array.dtype}")
    array = np.asarray(array, dtype=np.float64).reshape(-1)
    if array.size != n:
        raise VolumeError(f"y_S: expected {n} labels (one per row of x_S), got {array.size}")
    allowed = ({-1.0, 1.0} if labels == "pm1" else set(map(float, range(n_classes))))
    values = set(np.unique(array).tolist())
    if not values <= allowed:
        hint = " (pass labels='pm1' for -1/+1 labels)" if values <= {-1.0, 1.0} else ""
        outputs = "one logit" if n_classes == 2 else f"{n_classes} outputs"
        raise VolumeError(f"y_S: labels must be in {sorted(int(v) for v in allowed)} (the "
                          f"model has {outputs}), got values {sorted(values)[:6]}{hint}")
    return (array > 0).astype(np.int64) if labels == "pm1" else array.astype(np.int64)


def estimator_seed(estimator: str, n_classes: int, seed: int) -> dict[str, int]:
    """The seed as an option of an estimator that samples, nothing for one that does not.

    The registry refuses options an estimator does not have, and only the samplers
    (orthant-is) have a seed, so `seed` reaches the estimate only where it changes it.

    Args:
        estimator: the registry name.
        n_classes: K.
        seed: the seed.

    Returns:
        {'seed': seed} or {}.
    """
    names = {option.name for option in estimator_info(estimator, n_classes).options}
    return {"seed": int(seed)} if "seed" in names else {}


def as_inputs(x: Any, name: str) -> torch.Tensor:
    """Inputs (n, ...) from a tensor or numpy array, as float32, finite."""
    array = to_numpy(x)
    if array.dtype == object or not np.issubdtype(array.dtype, np.number) or array.ndim < 1:
        raise VolumeError(f"{name}: expected a numeric array (n, ...), got {array.dtype} "
                          f"{array.shape}")
    tensor = torch.as_tensor(np.asarray(array, dtype=np.float32))
    if not bool(torch.isfinite(tensor).all()):
        raise VolumeError(f"{name}: contains non-finite values")
    return tensor


def volume_of(
    model: nn.Module,
    x_S: Any,
    y_S: Any,
    x_E: Any = None,
    *,
    init: Initializer | None = None,
    n_samples: int | Literal["auto"] = "auto",
    mc_tolerance: float = DEFAULT_MC_TOLERANCE,
    mc_max_samples: int = DEFAULT_MC_MAX_SAMPLES,
    estimator: str = DEFAULT_ESTIMATOR,
    kernel: Literal["auto", "mc"] = "auto",
    labels: str = "01",
    seed: int = 0,
    n_batches: int = 10,
    delta: float = 0.05,
    device: str | torch.device = "cpu",
    progress: bool = False,
    **options: Any,
) -> VolumeOf:
    """The volume of the function any trained model computes on S u E, with error bars.

    f is the model's own labels on x_S then x_E (flatvol.models.labels_of: output > 0 for one
    logit, the argmax of K >= 2 outputs); its weights are never changed. For K outputs, V(f)
    is the K-class volume (flatvol.volume.multiclass: K independent outputs with one kernel),
    on the kernel of one output pooled over the K, and a model whose outputs fail the
    Monte-Carlo test of sharing one kernel (`shared_outputs.shared_output_check`) is refused.
    The prior is whatever `init` draws. The kernel is analytic for a flatvol FCN with its own
    prior (and `kernel='auto'`, `init=None`); otherwise it is the Monte-Carlo output kernel
    E[f(x) f(x')] over the model's inits, and each log10 V gets a jackknife standard error and
    bias estimate over `n_batches` batches of draws. The draws are `n_samples`
    (`monte_carlo_kernel`), or with 'auto' (the default) as many as flatvol.volume.mc_convergence's
    check needs (`converged_output_kernel`: doubled until log10 V of f on S u E agrees within
    `mc_tolerance` between two halves of the draws, the check sweeps and `flatvol volume` use),
    since a fixed count is too few for large |S u E| (the kernel has rank at most the number of
    draws, and log10 V's bias falls only like 1 / draws). When the bias estimate of a log10 V is
    over half its standard error a `MonteCarloDrawsWarning` is issued.

    Args:
        model: any torch module with one logit ((n,) or (n, 1)) or K outputs ((n, K)) per
            input, trained.
        x_S: training inputs (n_S, ...), tensor or numpy array.
        y_S: training labels: classes 0..K-1 (K = 2 for one logit; {-1, +1} with
            labels='pm1' for binary labels).
        x_E: test inputs (n_E, ...), or None.
        init: `init(module)` or `init(module, generator)` redrawing every parameter; None for
            the model's own (its flatvol prior, else PyTorch's `reset_parameters()`). A
            parameter or floating-point buffer it does not redraw is refused.
        n_samples: Monte-Carlo inits (an integer >= 2), or 'auto' (the convergence check).
        mc_tolerance: with 'auto', the log10 V agreement between two halves of the draws.
        mc_max_samples: with 'auto', the most draws before the kernel is refused.
        estimator: a name from flatvol.volume.ESTIMATORS that supports K classes.
        kernel: 'auto' (analytic where the architecture has one) or 'mc' (always Monte Carlo).
        labels: '01' or 'pm1', the label coding of y_S ('pm1': binary only).
        seed: seed of the inits and of sampling estimators.
        n_batches: batches of draws for the jackknife (>= 2).
        delta: confidence of the PAC-Bayes bound.
        device: torch device of the model's forward passes.
        progress: show the Monte-Carlo progress.
        **options: estimator options (see `VolumeService.log_volume`).

    Returns:
        A VolumeOf: log10 V(f), V(f on S), V(f|S), the bound, their standard errors and bias
        estimates, the train accuracy and how the kernel was obtained.

    Raises:
        VolumeError: bad inputs, labels or settings (n_samples neither an integer >= 2 nor
            'auto'; labels outside the model's classes; an estimator without K classes), a
            parameter the initializer does not redraw, K outputs that do not share one
            kernel, or with 'auto' no convergence within mc_max_samples.
        OutputError: a model without one logit or K finite outputs per input.

    Warns:
        MonteCarloDrawsWarning: the draws are too few for |S u E| (the message says why).
    """
    check_estimator(estimator)  # the name; with K classes known, that it supports them
    if kernel not in ("auto", "mc"):
        raise VolumeError(f"kernel must be 'auto' or 'mc', got {kernel!r}")
    n_samples = check_mc_samples(n_samples, "n_samples")
    check_mc_settings(mc_tolerance, mc_max_samples)
    if isinstance(n_batches, bool) or not isinstance(n_batches, int) or n_batches < 2:
        raise VolumeError(f"n_batches: expected an integer >= 2, got {n_batches!r}")
    xs_S = as_inputs(x_S, "x_S")
    n_train = xs_S.shape[0]
    if n_train == 0:
        raise VolumeError("x_S: expected at least one training input")
    xs_E = xs_S[:0] if x_E is None else as_inputs(x_E, "x_E")
    if xs_E.shape[1:] != xs_S.shape[1:]:
        raise VolumeError(f"x_E: inputs of shape {tuple(xs_E.shape[1:])}, but x_S has "
                          f"{tuple(xs_S.shape[1:])}")
    x = torch.cat([xs_S, xs_E])
    # the batch size of the Monte-Carlo draws' forward passes (the same rounding)
    outputs = model_outputs(model, x, batch_size=1024)
    f, n_classes = labels_from_outputs(outputs).cpu().numpy(), output_count(outputs)
    check_estimator(estimator, n_classes)
    y = as_class_labels(y_S, n_train, labels, n_classes)
    train_accuracy = float(np.mean(f[:n_train] == y))
    seeded = estimator_seed(estimator, n_classes, seed)

    # volume_of's own arguments as a request: the analytic/Monte-Carlo choice is prior_kernel's
    # ('auto': analytic where the prior has one); a given initializer is always drawn from.
    request = KernelRequest("auto" if kernel == "auto" and init is None else "mc-output",
                            n_samples, seed, mc_tolerance, mc_max_samples, batches=n_batches,
                            estimator=estimator, options={**seeded, **options},
                            fallback="mc-output")
    # With 'auto' the check probes f itself: its log10 V is what is reported (a sweep probes
    # the true labels, which here are known on S only).
    prior = prior_kernel(model, x, request, n_classes=n_classes, probe_labels=f,
                         probe="the model's labels f on S u E", init=init, device=device,
                         progress=progress)
    service = VolumeService(prior, n_classes=n_classes)
    volume = service.conditional(f, n_train, estimator, delta=delta, **seeded, **options)
    warning = None
    errors_and_biases: tuple[float | None, ...] = (None,) * 8
    if not prior.exact:
        errors_and_biases = ((*astuple(volume.stderr), *astuple(volume.bias))
                             if volume.stderr is not None and volume.bias is not None
                             else (math.nan,) * 8)
        warning = warn_if_too_few_draws(
            {name: (value, errors_and_biases[i], errors_and_biases[4 + i]) for i, (name, value) in
             enumerate(zip(QUANTITIES[:3], conditional_values(volume)))},
            int(prior.info["mc_samples"]), int(x.shape[0]))
    seconds = prior.info.get("draw_seconds", prior.info["seconds"])
    return VolumeOf(*conditional_values(volume), *errors_and_biases,
                    train_accuracy=train_accuracy,
                    n_train=n_train, n_test=int(xs_E.shape[0]), estimator=estimator,
                    kernel=prior.kind, init=describe_init(init, model),
                    mc_samples=prior.samples, mc_batches=None if prior.exact else n_batches,
                    kernel_seconds=round(seconds, 3), seed=seed, volume=volume,
                    mc_convergence=prior.convergence, warning=warning, n_classes=n_classes,
                    shared_outputs=prior.info.get("shared_outputs"))
