"""Training to fit (the paper's protocol), optimizers and run checkpoints."""

from flatvol.models.losses import classification_loss
from flatvol.train.checkpoint import LoadedRun, load_checkpoint, load_run, save_checkpoint, save_run
from flatvol.train.ensemble import (
    EnsembleEpochInfo,
    EnsembleResult,
    train_ensemble,
    train_models_together,
)
from flatvol.train.loop import (
    EpochInfo,
    TrainConfig,
    TrainResult,
    accuracy,
    train_to_fit,
)
from flatvol.train.optimizers import make_optimizer, optimizer_names, register_optimizer

__all__ = [
    "EnsembleEpochInfo",
    "EnsembleResult",
    "EpochInfo",
    "LoadedRun",
    "TrainConfig",
    "TrainResult",
    "accuracy",
    "classification_loss",
    "load_checkpoint",
    "load_run",
    "make_optimizer",
    "optimizer_names",
    "register_optimizer",
    "save_checkpoint",
    "save_run",
    "train_ensemble",
    "train_models_together",
    "train_to_fit",
]
