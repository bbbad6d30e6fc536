"""The volume measure's work: log10 V(f) of a network's labels on S u E, on the sweep's kernel.

`volume_values` turns a model into the stored volume columns with the volume service
(flatvol.volume.VolumeService: one factorization, estimates cached by label vector). The
catalogue's 'volume' entry is a thin call to it.

The kernel's own error is stored with them: log10_volume_stderr and
log10_volume_conditional_stderr are 0 for an analytic (exact) kernel, the jackknife standard
error over the batches of draws of a Monte-Carlo kernel (ConditionalVolume.stderr, which the
service gives with the values), and nan when that error is not available (batches too large to
keep, or an unknown kernel).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from flatvol.errors import SpecError

if TYPE_CHECKING:
    from torch import nn

    from flatvol.data.task import TaskData
    from flatvol.volume import VolumeService


def kernel_is_exact(kernel_info: dict[str, Any]) -> bool:
    """Whether the sweep's kernel (its info, as computed or cached) has no Monte-Carlo error,
    as the kernel registry says for its kind (flatvol.volume.kernels.is_exact_kind).

    Args:
        kernel_info: The kernel's info (its 'kind').

    Returns:
        True for an exact kind ('analytic', or a registered exact one).
    """
    from flatvol.volume.kernels import is_exact_kind  # the volume package only when measured

    return is_exact_kind(str(kernel_info.get("kind", "")))


def volume_values(model: nn.Module, task: TaskData, service: VolumeService, estimator: str,
                  options: dict[str, Any], *, exact_kernel: bool = False,
                  ) -> tuple[dict[str, float], dict[str, Any]]:
    """log10 V(f) of the labels f the model gives S u E, log10 V(f|S) = log10 V(f on S u E)
    - log10 V(f on S) and the PAC-Bayes bound, from the volume service on the sweep's kernel.
    For a K-class task f is the argmax labels (flatvol.models.labels_of) and the service is for
    K classes (VolumeService(n_classes=K): the sweep builds it so).

    Args:
        model: the trained network.
        task: its task; the kernel is of S u E in that order.
        service: the volume service on the sweep's NNGP kernel, for the task's K classes.
        estimator: a name in flatvol.volume.ESTIMATORS.
        options: keyword arguments of that estimator.
        exact_kernel: the kernel is analytic, so its error is 0 (else it is the jackknife
            error where the service has replicates, nan where it has none).

    Returns:
        The stored values (log10_volume, log10_volume_conditional, log10_volume_S,
        pac_bayes_bound, volume_converged, log10_volume_stderr,
        log10_volume_conditional_stderr) and the estimator's details for the run's info.
    """
    from flatvol.models import labels_of

    labels = labels_of(model, task.x_SE())
    if service.n_classes != task.n_classes:
        # a binary service would refuse (or a K-class one misread) the labels: say why here
        raise SpecError(f"measure 'volume': the volume service is for {service.n_classes}-class "
                        f"functions, but task {task.task} {task.classes} has {task.n_classes} "
                        "classes")
    if labels.shape[0] != service.n:
        raise SpecError(f"kernel is {service.n} x {service.n} but S u E has {labels.shape[0]} "
                        "points")
    try:
        v = service.conditional(labels, task.train_size, estimator, **options)
    except TypeError as exc:
        raise SpecError(f"measures.volume.options: {exc}") from None
    info, info_S = ({k: x for k, x in r.to_dict().items()
                     if isinstance(x, (str, int, float, bool)) or x is None}
                    for r in (v.full, v.train))
    values = {"log10_volume": v.full.log10_volume,
              "log10_volume_conditional": v.log10_volume_conditional,
              "log10_volume_S": v.log10_volume_S, "pac_bayes_bound": v.pac_bayes_bound,
              "volume_converged": float(v.full.converged and v.train.converged)}
    no_error = 0.0 if exact_kernel else math.nan
    values.update(
        log10_volume_stderr=no_error if v.stderr is None else v.stderr.log10_volume,
        log10_volume_conditional_stderr=(no_error if v.stderr is None
                                         else v.stderr.log10_volume_conditional))
    return values, {**info, "train": info_S}
