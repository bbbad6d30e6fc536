"""One complete training run: data -> model -> train_to_fit -> run directory."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import flatvol
from flatvol.data.task import TaskData
from flatvol.data.tasks import EMBEDDED, load_source, resolve_data_dir
from flatvol.errors import SpecError
from flatvol.limits import MAX_DATA_SIZE, MAX_EPOCHS, bound_problem
from flatvol.models import Prior, build_model
from flatvol.models.registry import parse_model_spec
from flatvol.train.checkpoint import run_number_problem, save_run
from flatvol.train.loop import EpochInfo, TrainConfig, TrainResult, train_to_fit


@dataclass(frozen=True)
class RunSpec:
    """What a single run is: the data, the model and prior, the optimizer and the seed."""

    task: str = "mnist"
    classes: str | None = None
    train_size: int = 500
    attack_size: int = 0
    test_size: int = 1000
    data_seed: int = 0
    model: str = "fcn:40,40"
    prior: Prior = Prior()
    train: TrainConfig = TrainConfig()
    seed: int = 0

    def __post_init__(self) -> None:
        # Bounded before any work, so a seed the store or torch cannot hold, or a network no
        # machine holds, is one line now rather than a crash after (or during) training.
        bad = run_number_problem({f: getattr(self, f) for f in (
            "train_size", "attack_size", "test_size", "seed", "data_seed")})
        if bad is not None:
            raise SpecError(f"{bad[0]}: {bad[1]}")
        for field, low, high in (("batch_size", 1, MAX_DATA_SIZE), ("max_epochs", 1, MAX_EPOCHS),
                                 ("post_train_epochs", 0, MAX_EPOCHS)):
            problem = bound_problem(getattr(self.train, field), low, high)
            if problem is not None:
                raise SpecError(f"train.{field}: {problem}")
        parse_model_spec(self.model)


def run_info(spec: RunSpec, task: TaskData, result: TrainResult, data_dir: str | None,
             seconds: float) -> dict[str, Any]:
    resolved = resolve_data_dir(data_dir)
    # Record the data actually used (never None): reloading must give the same S, A and E.
    data_dir_used = EMBEDDED if resolved is None else str(resolved.resolve())
    return {
        "status": result.status,
        "epochs": result.epochs,
        "fitted_at": result.fitted_at,
        "train_acc_S": result.train_acc_S,
        "train_acc_A": None if math.isnan(result.train_acc_A) else result.train_acc_A,
        "test_acc_E": result.test_acc_E,
        "seed": spec.seed,
        "data_seed": spec.data_seed,
        "task": spec.task,
        "classes": task.classes,
        "train_size": task.train_size,
        "attack_size": task.attack_size,
        "test_size": task.test_size,
        "model": spec.model,
        "prior": spec.prior.to_dict(),
        "train": spec.train.to_dict(),
        "data_dir": data_dir_used,
        "data_source": load_source(spec.task, data_dir_used)[1],
        "seconds": round(seconds, 3),
        "flatvol_version": flatvol.__version__,
    }


def train_run(
    spec: RunSpec,
    task: TaskData,
    out_dir: str | Path | None = None,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
    callback: Callable[[EpochInfo, torch.nn.Module], None] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the model from `spec.seed`, train it, and (optionally) save the run directory."""
    start = time.perf_counter()
    model = build_model(spec.model, task.input_shape, spec.prior, seed=spec.seed,
                        outputs=task.outputs)
    result = train_to_fit(model, task, spec.train, seed=spec.seed, device=device, callback=callback)
    info = run_info(spec, task, result, data_dir, time.perf_counter() - start)
    if out_dir is not None:
        save_run(out_dir, model, info)
    return model, info
