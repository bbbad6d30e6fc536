"""An ensemble's training state on disk, so that a killed training resumes where it was.

Fig. 4's CIFAR ensembles train for hours (2000 epochs of 18 networks, ~3 s an epoch on one
core), longer than a machine is often held. `EnsembleCheckpoint` keeps, at an epoch boundary,
everything the rest of the training depends on: the stacked weights in the engine's training
layout, the optimizer's state, each member's data-order generator, the epoch, which members
still train, and each stopped member's outcome and final weights. It is written atomically
(`torch.save` of tensors and plain values, read back with `weights_only=True`) every `every_s`
seconds and once more when every member has stopped.

It is used only if its fingerprint matches: the training inputs and labels, the initial
weights, the members' seeds and attack sizes, the training config, engine, group size and
history setting. Then the epochs that follow are the ones an uninterrupted training runs, and
every member ends bit for bit as it would have. An absent, unreadable or foreign file is
ignored (training starts at epoch 0 and overwrites it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flatvol.digest import digest
from flatvol.resumable import ProgressFile

# Seconds between saves: a killed run loses at most this much training.
CHECKPOINT_EVERY_S = 600.0
_FORMAT = 1

Params = dict[str, torch.Tensor]


@dataclass
class EnsembleProgress:
    """An ensemble's training after `epoch` epochs (arrays indexed by member id)."""

    epoch: int
    active: np.ndarray  # member ids of the rows still training, in row order
    params: Params  # the active rows, in the engine's training layout
    optimizer_state: dict[str, Params]  # StackedOptimizer.state (active rows)
    final: Params  # stopped members' weights, training layout, by member
    restored: Params  # stopped members' weights, full layout, by member
    accuracies: np.ndarray  # (3, K): on S, A, E, measured as each member stopped
    epochs: np.ndarray  # (K,) epochs trained by each stopped member
    fitted_at: np.ndarray  # (K,) epoch the stopping rule was first met, -1 if never
    histories: list[list[dict]] | None
    generator_states: list[torch.Tensor]  # each member's data-order generator
    flops: float  # the engine's FLOP count so far
    seconds: float  # training time so far, over all resumes


def ensemble_fingerprint(initial: Params, x_train: torch.Tensor, y_train: torch.Tensor, *,
                         seeds: Sequence[int], attack_sizes: Sequence[int], config: Any,
                         engine: str, group_size: int, keep_history: bool) -> str:
    """What fixes an ensemble's training: equal fingerprints, equal epochs.

    Args:
        initial: The members' initial weights, stacked.
        x_train: The training inputs (S then A).
        y_train: Their labels.
        seeds: Each member's seed.
        attack_sizes: Each member's attack-set size.
        config: The TrainConfig (its repr is hashed).
        engine: The stacked-training engine's name.
        group_size: Members per block (the numbers do not depend on it; kept in the
            fingerprint as it was, so that earlier checkpoints keep theirs).
        keep_history: Whether histories are kept (changes the stopping check's work only,
            but the saved state holds them).

    Returns:
        A hex digest.
    """
    described = {"format": _FORMAT, "seeds": [int(s) for s in seeds],
                 "attack_sizes": [int(a) for a in attack_sizes], "config": repr(config),
                 "engine": engine, "group_size": int(group_size),
                 "keep_history": bool(keep_history), "dtype": str(x_train.dtype),
                 "shapes": {k: list(v.shape) for k, v in sorted(initial.items())}}
    return digest("ensemble-training", [
        *(np.ascontiguousarray(tensor.detach().cpu().numpy()).tobytes()
          for tensor in (x_train, y_train, *(initial[k] for k in sorted(initial)))), described])


def _progress(saved: dict[str, Any]) -> EnsembleProgress:
    return EnsembleProgress(
        epoch=int(saved["epoch"]), active=saved["active"].cpu().numpy(),
        params=saved["params"], optimizer_state=saved["optimizer_state"],
        final=saved["final"], restored=saved["restored"],
        accuracies=saved["accuracies"].cpu().numpy(), epochs=saved["epochs"].cpu().numpy(),
        fitted_at=saved["fitted_at"].cpu().numpy(), histories=json.loads(saved["histories"]),
        generator_states=[s.cpu() for s in saved["generator_states"]],
        flops=float(saved["flops"]), seconds=float(saved["seconds"]))


def _cpu(params: Params) -> Params:
    return {k: v.detach().cpu() for k, v in params.items()}


class EnsembleCheckpoint(ProgressFile):
    """Load and save an ensemble's EnsembleProgress at `path` for training with `fingerprint`.

    Args:
        path: The checkpoint file.
        fingerprint: `ensemble_fingerprint` of the training.
        every_s: Seconds between saves (default CHECKPOINT_EVERY_S).
    """

    def __init__(self, path: str | Path, fingerprint: str, every_s: float | None = None) -> None:
        super().__init__(path, fingerprint, CHECKPOINT_EVERY_S if every_s is None else every_s)

    def load(self, device: torch.device) -> EnsembleProgress | None:
        """The saved progress, or None if there is none for this training (absent, unreadable
        or of another training: it then starts at epoch 0 and overwrites the file)."""
        return self.read(device, _progress)

    def save(self, progress: EnsembleProgress) -> None:
        """Write `progress` atomically (tensors moved to CPU)."""
        self.write({
            "format": _FORMAT, "epoch": int(progress.epoch),
            "active": torch.from_numpy(np.asarray(progress.active, dtype=np.int64)),
            "params": _cpu(progress.params),
            "optimizer_state": {g: _cpu(s) for g, s in progress.optimizer_state.items()},
            "final": _cpu(progress.final), "restored": _cpu(progress.restored),
            "accuracies": torch.from_numpy(np.asarray(progress.accuracies, dtype=np.float64)),
            "epochs": torch.from_numpy(np.asarray(progress.epochs, dtype=np.int64)),
            "fitted_at": torch.from_numpy(np.asarray(progress.fitted_at, dtype=np.int64)),
            "histories": json.dumps(progress.histories),
            "generator_states": [s.cpu() for s in progress.generator_states],
            "flops": float(progress.flops), "seconds": float(progress.seconds)})
