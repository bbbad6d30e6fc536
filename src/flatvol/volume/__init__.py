"""Volume V(f): the prior probability that a random network computes f on S u E.

Kernels (kernels.py): `prior_kernel(model, x, KernelRequest(...))` is the one place a prior's
kernel is chosen and computed, returning one type, PriorKernel, for every kind of the registry
(the analytic arccos NNGP kernel of ReLU FCNs, Monte-Carlo kernels for any model; a new kind is
one `register_kernel_kind` call). The service (service.py): VolumeService(PriorKernel)
factorizes one kernel and gives V(f), V(S), V(f|S) (with the Monte-Carlo kernel's jackknife
error), per-point marginals and the PAC-Bayes bound for any number of label vectors.
Estimators (the ESTIMATORS registry,
estimate.py): 'ep-orthant' (default, noise-free orthant probability by step-likelihood EP),
'orthant-is' (importance sampling of the same, with a standard error), 'ep-probit' (the
paper's GPy value, the orthant probability under K + I) and 'laplace'. Any model, on plain
tensors (own_model.py): `volume_of(model, x_S, y_S, x_E)`, with the Monte-Carlo output kernel
over the model's own initializer (output_kernel.py) and its error carried to log10 V.
"""

from flatvol.volume._numerics import check_multiclass_labels
from flatvol.volume.arccos import arccos_kernel, fcn_kernel
from flatvol.volume.bounds import pac_bayes_bound
from flatvol.volume.ep import EPResult, expectation_propagation
from flatvol.volume.estimate import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    VolumeEstimator,
    VolumeResult,
    check_estimator,
    log_volume,
)
from flatvol.volume.kernels import (
    KERNEL_REGISTRY,
    KernelKindInfo,
    KernelRequest,
    PriorKernel,
    prior_kernel,
    register_kernel_kind,
    select_kernel,
)
from flatvol.volume.laplace import LaplaceResult, laplace_approximation
from flatvol.volume.mc_kernel import mc_nngp_kernel
from flatvol.volume.network_volume import ModelVolume, volume_of_model
from flatvol.volume.orthant import (
    OrthantEstimate,
    orthant_importance_sampling,
    orthant_probability_closed_form,
)
from flatvol.volume.output_kernel import monte_carlo_kernel
from flatvol.volume.own_model import VolumeOf, volume_of
from flatvol.volume.service import ConditionalVolume, VolumeService
from flatvol.volume_settings import KERNEL_KINDS

__all__ = [
    "DEFAULT_ESTIMATOR",
    "ESTIMATORS",
    "KERNEL_KINDS",
    "KERNEL_REGISTRY",
    "ConditionalVolume",
    "EPResult",
    "LaplaceResult",
    "KernelKindInfo",
    "KernelRequest",
    "ModelVolume",
    "OrthantEstimate",
    "PriorKernel",
    "VolumeEstimator",
    "VolumeOf",
    "VolumeResult",
    "VolumeService",
    "arccos_kernel",
    "check_estimator",
    "check_multiclass_labels",
    "expectation_propagation",
    "fcn_kernel",
    "laplace_approximation",
    "log_volume",
    "mc_nngp_kernel",
    "monte_carlo_kernel",
    "orthant_importance_sampling",
    "orthant_probability_closed_form",
    "pac_bayes_bound",
    "prior_kernel",
    "register_kernel_kind",
    "select_kernel",
    "volume_of",
    "volume_of_model",
]
