"""Volume V(f): the prior probability that a random network computes f on S u E.

Kernels (kernels.py): the analytic arccos NNGP kernel of ReLU FCNs and a Monte-Carlo NNGP kernel
for any model, chosen in one place (select_kernel / prior_kernel). The service (service.py):
VolumeService factorizes one kernel and gives V(f), V(S), V(f|S), per-point marginals and the
PAC-Bayes bound for any number of label vectors. Estimators (the ESTIMATORS registry,
estimate.py): 'ep-orthant' (default, noise-free orthant probability by step-likelihood EP),
'orthant-is' (importance sampling of the same, with a standard error), 'ep-probit' (the
paper's GPy value, the orthant probability under K + I) and 'laplace'. Any model, on plain
tensors (own_model.py): `volume_of(model, x_S, y_S, x_E)`, with the Monte-Carlo output kernel
over the model's own initializer (output_kernel.py) and its error carried to log10 V.
"""

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
    KERNEL_KINDS,
    NNGPKernel,
    arccos_kernel,
    fcn_kernel,
    model_kernel,
    prior_kernel,
    select_kernel,
)
from flatvol.volume.laplace import LaplaceResult, laplace_approximation
from flatvol.volume.mc_kernel import MCKernel, mc_nngp_kernel
from flatvol.volume.network_volume import ModelVolume, volume_of_model
from flatvol.volume.orthant import (
    OrthantEstimate,
    orthant_importance_sampling,
    orthant_probability_closed_form,
)
from flatvol.volume.output_kernel import MonteCarloKernel, monte_carlo_kernel
from flatvol.volume.own_model import VolumeOf, volume_of
from flatvol.volume.service import ConditionalVolume, VolumeService

__all__ = [
    "DEFAULT_ESTIMATOR",
    "ESTIMATORS",
    "KERNEL_KINDS",
    "ConditionalVolume",
    "EPResult",
    "LaplaceResult",
    "MCKernel",
    "MonteCarloKernel",
    "ModelVolume",
    "NNGPKernel",
    "OrthantEstimate",
    "VolumeEstimator",
    "VolumeOf",
    "VolumeResult",
    "VolumeService",
    "arccos_kernel",
    "check_estimator",
    "expectation_propagation",
    "fcn_kernel",
    "laplace_approximation",
    "log_volume",
    "mc_nngp_kernel",
    "model_kernel",
    "monte_carlo_kernel",
    "orthant_importance_sampling",
    "orthant_probability_closed_form",
    "pac_bayes_bound",
    "prior_kernel",
    "select_kernel",
    "volume_of",
    "volume_of_model",
]
