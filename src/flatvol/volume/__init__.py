"""Volume V(f): the prior probability that a random network computes f on S u E.

Kernels (kernels.py): the analytic arccos NNGP kernel of ReLU FCNs and a Monte-Carlo NNGP kernel
for any model. Estimators (estimate.py): 'ep-orthant' (default, noise-free orthant probability by
step-likelihood EP), 'orthant-is' (importance sampling of the same, with a standard error),
'ep-probit' (the paper's GPy value, the orthant probability under K + I) and 'laplace'.
"""

from flatvol.volume.bounds import pac_bayes_bound
from flatvol.volume.ep import EPResult, expectation_propagation
from flatvol.volume.estimate import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    ConditionalVolume,
    ModelVolume,
    VolumeEstimator,
    VolumeResult,
    log_volume,
    predicted_labels,
    volume_of_model,
)
from flatvol.volume.kernels import (
    MCKernel,
    arccos_kernel,
    fcn_kernel,
    mc_nngp_kernel,
    model_kernel,
)
from flatvol.volume.laplace import LaplaceResult, laplace_approximation
from flatvol.volume.orthant import (
    OrthantEstimate,
    orthant_importance_sampling,
    orthant_probability_closed_form,
)

__all__ = [
    "DEFAULT_ESTIMATOR",
    "ESTIMATORS",
    "ConditionalVolume",
    "EPResult",
    "LaplaceResult",
    "MCKernel",
    "ModelVolume",
    "OrthantEstimate",
    "VolumeEstimator",
    "VolumeResult",
    "arccos_kernel",
    "expectation_propagation",
    "fcn_kernel",
    "laplace_approximation",
    "log_volume",
    "mc_nngp_kernel",
    "model_kernel",
    "orthant_importance_sampling",
    "orthant_probability_closed_form",
    "pac_bayes_bound",
    "predicted_labels",
    "volume_of_model",
]
