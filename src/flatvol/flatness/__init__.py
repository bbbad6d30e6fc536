"""Flatness measures of the training loss, on any nn.Module.

Each measure is a plain function of (model, x, y, loss_fn=None, ...) returning a typed result
dataclass (with `.to_dict()`), or of one `FunctionalLoss` built once for several measures in
place of (model, x, y) (PyHessian-style: `op = FunctionalLoss(model, x, y)`, then
`hessian_top_eigenvalues(op)`, `hessian_trace(op)`, `keskar_sharpness(op)`, ...). The
default loss follows the model's outputs: one logit -> the mean sigmoid cross-entropy with
labels in {0, 1} (or {-1, +1} with `labels="pm1"`); K >= 2 outputs -> the mean cross-entropy
with class labels 0..K-1. x and y may be tensors or NumPy arrays; a wrong input (other labels,
other output shapes) is a one-line SpecError. Pass the genuine training set S as (x, y). Models
are never changed.
"""

from flatvol.flatness._functional import (
    FunctionalLoss,
    LossFn,
    ModelOrOperator,
    bce_with_logits_loss,
    cross_entropy_loss,
)
from flatvol.flatness._inputs import LABEL_CONVENTIONS, LabelConvention
from flatvol.flatness.adaptive import AdaptiveSharpness, adaptive_sharpness
from flatvol.flatness.fisher_rao import FisherRaoNorm, fisher_rao_norm
from flatvol.flatness.hessian import (
    HessianEigenvalues,
    HessianFrobenius,
    HessianTrace,
    hessian_frobenius_norm,
    hessian_matrix,
    hessian_top_eigenvalues,
    hessian_trace,
    hessian_vector_product,
)
from flatvol.flatness.hessian_density import HessianDensity, hessian_density
from flatvol.flatness.perturbation import (
    AverageSharpness,
    PacBayesFlatness,
    average_sharpness,
    pac_bayes_flatness,
    pac_bayes_magnitude_flatness,
)
from flatvol.flatness.sharpness import MAXIMIZERS, KeskarSharpness, keskar_sharpness

__all__ = [
    "LABEL_CONVENTIONS",
    "LabelConvention",
    "MAXIMIZERS",
    "AdaptiveSharpness",
    "AverageSharpness",
    "FisherRaoNorm",
    "FunctionalLoss",
    "HessianDensity",
    "HessianEigenvalues",
    "HessianFrobenius",
    "HessianTrace",
    "KeskarSharpness",
    "LossFn",
    "ModelOrOperator",
    "PacBayesFlatness",
    "adaptive_sharpness",
    "average_sharpness",
    "bce_with_logits_loss",
    "cross_entropy_loss",
    "fisher_rao_norm",
    "hessian_density",
    "hessian_frobenius_norm",
    "hessian_matrix",
    "hessian_top_eigenvalues",
    "hessian_trace",
    "hessian_vector_product",
    "keskar_sharpness",
    "pac_bayes_flatness",
    "pac_bayes_magnitude_flatness",
]
