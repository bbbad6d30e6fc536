"""Models with a recorded weight prior: FCN, a small CNN and CIFAR-style ResNets; the labels
any classifier gives (`labels_of`)."""

from flatvol.models.cnn import SmallCNN
from flatvol.models.fcn import FCN
from flatvol.models.labels import (
    OutputError,
    labels_from_outputs,
    labels_of,
    model_outputs,
    output_count,
)
from flatvol.models.prior import Prior, init_from_prior_
from flatvol.models.registry import MODEL_FAMILIES, build_model
from flatvol.models.resnet import ResNet, resnet18, resnet50

__all__ = [
    "FCN",
    "MODEL_FAMILIES",
    "OutputError",
    "Prior",
    "ResNet",
    "SmallCNN",
    "build_model",
    "init_from_prior_",
    "labels_from_outputs",
    "labels_of",
    "model_outputs",
    "output_count",
    "resnet18",
    "resnet50",
]
