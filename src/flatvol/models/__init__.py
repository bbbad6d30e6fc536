"""Models with a recorded weight prior: FCN, a small CNN and CIFAR-style ResNets."""

from flatvol.models.cnn import SmallCNN
from flatvol.models.fcn import FCN
from flatvol.models.prior import Prior, init_from_prior_
from flatvol.models.registry import MODEL_FAMILIES, build_model
from flatvol.models.resnet import ResNet, resnet18, resnet50

__all__ = [
    "FCN",
    "MODEL_FAMILIES",
    "Prior",
    "ResNet",
    "SmallCNN",
    "build_model",
    "init_from_prior_",
    "resnet18",
    "resnet50",
]
