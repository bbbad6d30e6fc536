"""Run directories: run.json (metadata, written last) + model.pt (a plain state_dict).

Both files are written atomically (flatvol.io: temporary file, fsync, rename), so a killed
process never leaves a half-written run; run.json is written after the weights, so its presence
marks a complete run. run.json records the sha256 of model.pt (`weights_sha256`), checked
before the weights are read back: a damaged or swapped weights file is refused, not measured
(run directories written before the field existed are checked for finiteness and shape only).
Weights load with torch.load(weights_only=True): no arbitrary unpickling.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flatvol.data.task import TaskData
from flatvol.errors import CheckpointError, FlatvolError, SpecError
from flatvol.io import atomic_write, atomic_write_json, sha256_file
from flatvol.limits import MAX_DATA_SIZE, MAX_SEED, bound_problem
from flatvol.models import Prior, build_model
from flatvol.models.registry import parse_model_spec

RUN_JSON = "run.json"
WEIGHTS = "model.pt"
WEIGHTS_SHA256 = "weights_sha256"  # the run.json field holding model.pt's sha256
REQUIRED_FIELDS = ("task", "train_size", "attack_size", "test_size", "model", "prior", "seed")
# The numbers of a run that size its data (and key it), with their bounds (flatvol.limits):
# checked in run.json before a reload allocates anything, and in a run's options before it trains.
BOUNDED_RUN_FIELDS = {
    "train_size": (1, MAX_DATA_SIZE), "attack_size": (0, MAX_DATA_SIZE),
    "test_size": (1, MAX_DATA_SIZE), "seed": (0, MAX_SEED), "data_seed": (0, MAX_SEED),
}


def save_checkpoint(path: str | Path, model: nn.Module) -> None:
    """Save `model.state_dict()` atomically (tensors moved to CPU).

    Args:
        path: Destination file.
        model: The model whose state_dict is saved.

    Returns:
        None.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(Path(path), lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | Path, model: nn.Module, sha256: str | None = None) -> nn.Module:
    """Load a state_dict saved by save_checkpoint into `model` (safe: weights_only=True).

    Args:
        path: The checkpoint file written by save_checkpoint.
        model: Model of the same architecture, loaded in place.
        sha256: The file's recorded sha256, checked before it is read; None: not checked.

    Returns:
        model, with the loaded weights.

    Raises:
        CheckpointError: If the file is missing, unreadable, not the recorded bytes, not a
            state_dict, holds non-finite weights or does not match the model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise CheckpointError(f"{path}: weights changed since {RUN_JSON} was written "
                                  f"(sha256 expected {sha256[:16]}..., got {actual[:16]}...)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle with forbidden globals, ...
        raise CheckpointError(f"{path}: not a readable weights-only checkpoint ({exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state_dict, got {type(state).__name__}")
    # Weights that are NaN or infinite give outputs that belong to no function: refuse them
    # here, so no volume or flatness number is ever computed from them.
    for name, tensor in state.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise CheckpointError(f"{path}: weights are not finite ({bad} NaN/inf values "
                                      f"in {name!r}); expected finite weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())
        raise CheckpointError(f"{path}: weights do not match the model in {RUN_JSON} "
                              f"({first[:300]})") from None
    return model


def save_run(run_dir: str | Path, model: nn.Module, info: dict[str, Any]) -> Path:
    """Write weights, then run.json, into `run_dir`; returns the run.json path.

    Args:
        run_dir: Destination run directory.
        model: The trained model, whose weights are saved.
        info: Run metadata written to run.json.

    Returns:
        The path of the written run.json (which records the weights' sha256).
    """
    run_dir = Path(run_dir)
    save_checkpoint(run_dir / WEIGHTS, model)
    atomic_write_json(run_dir / RUN_JSON,
                      {**info, WEIGHTS_SHA256: sha256_file(run_dir / WEIGHTS)})
    return run_dir / RUN_JSON


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """The metadata of a run directory (run.json), checked for the fields a reload needs."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CheckpointError(f"{run_dir}: run directory not found")
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: expected a run directory written by 'flatvol train', "
                              "got a file")
    path = run_dir / RUN_JSON
    if not path.is_file():
        raise CheckpointError(
            f"{run_dir}: no {RUN_JSON} (expected a directory written by 'flatvol train')"
        )
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(info).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in info]
    if missing:
        raise CheckpointError(f"{path}: missing field(s) {', '.join(missing)}")
    check_run_numbers(info, path)
    return info


def run_number_problem(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first of a run's sizes and seeds (BOUNDED_RUN_FIELDS) out of its bounds.

    Args:
        values: some of train_size, attack_size, test_size, seed, data_seed (others ignored;
            an absent one is not checked).

    Returns:
        None when every one given is within bounds, else (field, 'expected ..., got ...').
    """
    for field, (low, high) in BOUNDED_RUN_FIELDS.items():
        if field in values:
            problem = bound_problem(values[field], low, high)
            if problem is not None:
                return field, problem
    return None


def check_run_numbers(info: dict[str, Any], path: Path) -> None:
    """Refuse run.json sizes, seeds and model widths out of flatvol.limits' bounds.

    Args:
        info: the parsed run.json (its required fields present).
        path: the run.json file, for the message.

    Raises:
        CheckpointError: naming the file and the field, expected vs got.
    """
    bad = run_number_problem(info)  # data_seed is optional (0 when absent)
    if bad is not None:
        raise CheckpointError(f"{path}: {bad[0]}: {bad[1]}")
    try:
        parse_model_spec(info["model"])
    except SpecError as exc:
        raise CheckpointError(f"{path}: model: {exc}") from None


def _data_dir_for(info: dict[str, Any], override: str | Path | None) -> str | Path | None:
    from flatvol.data.tasks import EMBEDDED

    recorded = info.get("data_dir")
    if recorded == EMBEDDED:
        return EMBEDDED
    return override if override is not None else recorded


@dataclass
class LoadedRun:
    model: nn.Module
    task: TaskData
    info: dict[str, Any]


def load_run(
    run_dir: str | Path, data_dir: str | Path | None = None, device: str | torch.device = "cpu"
) -> LoadedRun:
    """Rebuild the trained model and its TaskData (same S, A, E) from a run directory.

    The run's recorded data directory wins; `data_dir` only relocates external data (a run dir
    moved to another machine). A run trained on the embedded subset always reloads it.

    Args:
        run_dir: Run directory written by 'flatvol train' (save_run).
        data_dir: New location of the run's external data, if it moved.
        device: Device the model is moved to.

    Returns:
        The LoadedRun: the model in eval mode, its TaskData and the run info.

    Raises:
        CheckpointError: If the run directory, its run.json or its weights are missing or
            inconsistent.
    """
    from flatvol.data import load_task  # local import keeps checkpoint usable without data deps

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    try:
        prior = Prior(**info["prior"])
        task = load_task(
            info["task"],
            train_size=int(info["train_size"]),
            attack_size=int(info["attack_size"]),
            test_size=int(info["test_size"]),
            data_seed=int(info.get("data_seed", 0)),
            data_dir=_data_dir_for(info, data_dir),
            classes=info.get("classes"),
        )
    except FlatvolError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{run_dir / RUN_JSON}: inconsistent run metadata ({exc})") from None
    try:
        model = build_model(info["model"], task.input_shape, prior, outputs=task.outputs)
    except SpecError as exc:  # e.g. more parameters on these inputs than flatvol.limits allows
        raise CheckpointError(f"{run_dir / RUN_JSON}: model: {exc}") from None
    recorded = info.get(WEIGHTS_SHA256)
    if recorded is not None and not (isinstance(recorded, str) and len(recorded) == 64):
        raise CheckpointError(f"{run_dir / RUN_JSON}: {WEIGHTS_SHA256}: expected 64 hex "
                              f"digits, got {recorded!r}")
    load_checkpoint(run_dir / WEIGHTS, model, recorded)
    model.to(device).eval()
    return LoadedRun(model=model, task=task, info=info)
