"""V(f) of a trained network: its labels on S u E and their volume on the prior's kernel.

`volume_of_model` evaluates the network on S u E (its labels, flatvol.models.labels_of: the sign
of one logit, the argmax of K outputs), takes the kernel of its prior
(flatvol.volume.kernels.prior_kernel; the readout's outputs are independent with that one
kernel) or a given one, and asks a VolumeService for V(f), V(f on S), V(f|S) and the PAC-Bayes
bound (K-class for K outputs, flatvol.volume.multiclass), with the Monte-Carlo kernel's error
carried to them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, astuple, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from flatvol.errors import VolumeError
from flatvol.io import to_jsonable
from flatvol.models import labels_from_outputs, model_outputs, output_count
from flatvol.volume._numerics import to_numpy
from flatvol.volume.estimate import DEFAULT_ESTIMATOR, VolumeEstimator, check_estimator
from flatvol.volume.mc_convergence import check_mc_samples, warn_if_too_few_draws
from flatvol.volume.own_model import estimator_seed
from flatvol.volume.service import (
    ConditionalVolume,
    VolumeBias,
    VolumeService,
    VolumeStderr,
    conditional_values,
)


@dataclass(frozen=True)
class ModelVolume:
    """Volume of the function a trained network computes on S u E."""

    volume: ConditionalVolume
    kernel_kind: str  # a kernel kind ('analytic', 'mc', ...: kernels.KERNEL_REGISTRY) or 'given'
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
    # The same jackknife's bias estimates (flatvol.volume.service.jackknife_bias), reported, not
    # subtracted: negative for log10 V of a noisy kernel, shrinking like 1 / draws; zeros for an
    # analytic kernel, nan without batches, None for a given kernel.
    bias: VolumeBias | None = None
    warning: str | None = None  # the MonteCarloDrawsWarning issued, if any
    n_classes: int = 2  # K: 2 for one logit, else the network's output count

    def to_dict(self) -> dict[str, Any]:
        out = self.volume.full.to_dict()
        out.update(
            log10_volume_conditional=to_jsonable(self.volume.log10_volume_conditional),
            log10_volume_S=to_jsonable(self.volume.log10_volume_S),
            pac_bayes_bound=to_jsonable(self.volume.pac_bayes_bound),
            kernel=self.kernel_kind,
            n_classes=self.n_classes,
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
        if self.bias is not None:
            out.update({f"{name}_bias": to_jsonable(value)
                        for name, value in asdict(self.bias).items()})
        if self.warning is not None:
            out["warning"] = self.warning
        return out


def volume_of_model(
    model: nn.Module,
    task: Any,
    estimator: str = DEFAULT_ESTIMATOR,
    *,
    kernel: Any = None,
    estimator_cache: VolumeEstimator | VolumeService | None = None,
    mc_samples: int | Literal["auto"] = "auto",
    mc_tolerance: float | None = None,
    mc_max_samples: int | None = None,
    mc_batchnorm: str | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    **options: Any,
) -> ModelVolume:
    """V(f) of the function a trained network computes on S u E (a flatvol TaskData).

    f is the network's own labels on S then E (the sign of one logit, the argmax of K outputs:
    then V(f) is the K-class volume, flatvol.volume.multiclass). The kernel comes from the
    model's prior (flatvol.volume.kernels.prior_kernel with kind 'auto'); pass `kernel` or
    `estimator_cache` (built on task.x_SE()) to reuse one across a sweep.

    Args:
        model: the trained network (one logit or K outputs), carrying its `.prior` unless
            `kernel` or `estimator_cache` is given.
        task: the data (flatvol.data.TaskData, or anything with `x_SE()`, `y_SE()`,
            `train_size` and `test_size`), S first; its labels y are classes 0..K-1.
        estimator: a name from flatvol.volume.ESTIMATORS that supports K classes.
        kernel: an (n, n) kernel of S u E to use instead of the prior's.
        estimator_cache: a VolumeService or VolumeEstimator on S u E, shared across networks
            (a service must be for the network's K classes).
        mc_samples: Monte-Carlo draws when the prior's kernel has no closed form (an integer
            >= 2), or 'auto' (the default: chosen by a convergence check on the true labels y
            on S u E, see flatvol.volume.mc_convergence).
        mc_tolerance: with 'auto', the log10 V agreement required (default: the check's).
        mc_max_samples: with 'auto', the most draws tried (default: the check's).
        mc_batchnorm: BatchNorm in the Monte-Carlo draws, 'eval' or 'batch' (default 'eval';
            flatvol.volume.mc_kernel.BATCHNORM_MODES).
        seed: seed of the Monte-Carlo kernel and of sampling estimators.
        device: torch device for the network's predictions and the Monte-Carlo kernel.
        progress: show the Monte-Carlo kernel's progress.
        **options: estimator options (see `VolumeService.log_volume`).

    Returns:
        The ModelVolume: log10 V(f), V(f on S), V(f|S), the PAC-Bayes bound, their standard
        errors and bias estimates from the kernel (0 for an analytic kernel, a jackknife over
        10 batches of draws for a Monte-Carlo one), the kernel kind and how well the network's
        labels agree with y on S and E.

    Raises:
        VolumeError: unknown estimator or one without K classes, mc_samples neither an
            integer >= 2 nor 'auto', a kernel whose size is not |S u E|, a service for another
            number of classes, or task labels outside the network's classes.
        OutputError: a network without one logit or K finite outputs per input.

    Warns:
        MonteCarloDrawsWarning: a Monte-Carlo kernel's draws are too few for |S u E| (a bias
            estimate over half its standard error; flatvol.volume.mc_convergence).
    """
    from flatvol.volume.kernels import DEFAULT_MC_BATCHES, KernelRequest, prior_kernel

    check_estimator(estimator)  # the name; with K classes known, that it supports them
    mc_samples = check_mc_samples(mc_samples, "mc_samples")
    x = task.x_SE()
    n_train, n_test = task.train_size, task.test_size
    outputs = model_outputs(model, x, device=device)
    f, n_classes = labels_from_outputs(outputs).cpu().numpy(), output_count(outputs)
    check_estimator(estimator, n_classes)
    task_classes = getattr(task, "n_classes", None)  # a TaskData says its K; a duck may not
    if task_classes is not None and task_classes != n_classes:
        raise VolumeError(f"the task has {task_classes} classes but the network's outputs give "
                          f"{n_classes} (one logit: 2; K outputs: K)")
    y = to_numpy(task.y_SE())
    outside = (y < 0) | (y >= n_classes) | (y != np.round(y))
    if np.any(outside):
        i = int(np.argmax(outside))
        raise VolumeError(f"task labels: expected classes 0..{n_classes - 1} (the classes of the "
                          f"network's outputs), got y[{i}]={y[i]}")
    if estimator_cache is not None or kernel is not None:
        given = estimator_cache if estimator_cache is not None else kernel
        service = (given if isinstance(given, VolumeService)
                   else VolumeService(given, n_classes=n_classes))
        kind, kernel_info, exact = "given", {}, False
        if service.n != x.shape[0]:
            raise VolumeError(f"kernel has {service.n} rows but S u E has {x.shape[0]} points")
        if service.n_classes != n_classes:
            raise VolumeError(f"estimator_cache: a service for {service.n_classes} classes, but "
                              f"the network's outputs give {n_classes}")
    else:
        limits = {k: v for k, v in (("tolerance", mc_tolerance), ("cap", mc_max_samples),
                                     ("batchnorm", mc_batchnorm)) if v is not None}
        request = KernelRequest("auto", mc_samples, seed, batches=DEFAULT_MC_BATCHES,
                                estimator=estimator, options=dict(options), **limits)
        nngp = prior_kernel(model, x, request, n_classes=n_classes, probe_labels=task.y_SE(),
                            device=device, progress=progress)
        service = VolumeService(nngp, n_classes=n_classes)
        kind, kernel_info = nngp.kind, dict(nngp.info)
        exact = nngp.exact
    seeded = estimator_seed(estimator, n_classes, seed)
    volume = service.conditional(f, n_train, estimator, **seeded, **options)
    stderr, bias = volume.stderr, volume.bias
    if stderr is None and exact:
        stderr, bias = VolumeStderr(0.0, 0.0, 0.0, 0.0), VolumeBias(0.0, 0.0, 0.0, 0.0)
    elif stderr is None and kind != "given":  # a Monte-Carlo kernel whose batches were not kept
        stderr = VolumeStderr(math.nan, math.nan, math.nan, math.nan)
        bias = VolumeBias(math.nan, math.nan, math.nan, math.nan)
    warning = None
    if kernel_info.get("mc_samples") is not None and stderr is not None and bias is not None:
        errors, biases = astuple(stderr), astuple(bias)
        warning = warn_if_too_few_draws(
            {name: (value, errors[i], biases[i]) for i, (name, value) in enumerate(zip(
                ("log10_volume", "log10_volume_S", "log10_volume_conditional"),
                conditional_values(volume)))},
            int(kernel_info["mc_samples"]), int(x.shape[0]))
    train_acc = float(np.mean(f[:n_train] == y[:n_train]))
    test_acc = float(np.mean(f[n_train:] == y[n_train:])) if n_test else math.nan
    return ModelVolume(volume, kind, n_train, n_test, train_acc, test_acc, kernel_info, stderr,
                       bias, warning, n_classes)
