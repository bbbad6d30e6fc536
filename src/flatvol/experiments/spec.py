"""Experiment specs: TOML (tomllib) or YAML files validated with pydantic.

A spec names the task and data sizes, the model and prior, the optimizer(s), the sweep axes
(attack sizes x seeds), the measures taken on each trained network, how often to measure during
training, post-training epochs and alpha-scaling events. See docs/EXPERIMENTS.md for the format.
Any problem is a SpecError of one line naming the file and the field (reading and validating
live in `spec_files`), e.g.

    specs/x.toml: sweep.seeds[1]: Input should be a valid integer (got 'a')
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from flatvol.digest import digest
from flatvol.errors import SpecError
from flatvol.experiments.spec_files import (
    read_spec_file,
    validate_spec,
)
from flatvol.limits import (
    MAX_ATTACK_SIZES,
    MAX_DATA_SIZE,
    MAX_DEPTH,
    MAX_EPOCHS,
    MAX_SEED,
    MAX_SEEDS,
    MAX_SWEEP_RUNS,
    bound_problem,
    range_length,
)
from flatvol.measures.catalogue import MeasuresSpec, check_measure_names

# The problem's sections are flatvol.problem_settings' models, shared with the sgd-vs-bayes
# spec and `flatvol train`; they are re-exported here for the readers of a sweep spec.
from flatvol.problem_settings import (
    TRAIN_EXECUTION_FIELDS,
    DataSpec,
    ModelSpec,
    OptimizerSpec,
    ProblemSpec,
    StrictSpec,
    SWASpec,
    TrainSpec,
)

__all__ = [
    "TRAIN_EXECUTION_FIELDS",
    "AlphaEventSpec",
    "DataSpec",
    "DuringSpec",
    "ExperimentSpec",
    "ModelSpec",
    "OptimizerSpec",
    "RangeSpec",
    "SWASpec",
    "StrictSpec",
    "SweepSpec",
    "TrainSpec",
    "load_spec",
    "spec_from_dict",
    "spec_json",
]


class RangeSpec(StrictSpec):
    """Inclusive range: {start = 0, stop = 500, step = 50} is 0, 50, ..., 500."""

    start: int = Field(0, ge=0, le=MAX_DATA_SIZE)
    stop: int = Field(ge=0, le=MAX_DATA_SIZE)
    step: int = Field(1, ge=1, le=MAX_DATA_SIZE)

    def count(self) -> int:
        """How many values, without making them (a range may name 10**12)."""
        return range_length(self.start, self.stop, self.step)

    def values(self) -> list[int]:
        return list(range(self.start, self.stop + 1, self.step))


class SweepSpec(StrictSpec):
    attack_sizes: list[int] | RangeSpec = Field(default_factory=lambda: [0])
    seeds: list[int] | int = 1  # an int n means seeds 0..n-1

    @field_validator("attack_sizes")
    @classmethod
    def _attack(cls, v: list[int] | RangeSpec) -> list[int] | RangeSpec:
        # The count first, from a range's ends: expanding {stop = 10**12} is a MemoryError.
        count = v.count() if isinstance(v, RangeSpec) else len(v)
        if count > MAX_ATTACK_SIZES:
            raise ValueError(f"expected at most {MAX_ATTACK_SIZES} attack sizes, got {count}")
        values = v.values() if isinstance(v, RangeSpec) else v
        if not values:
            raise ValueError("no attack sizes")
        if any(a < 0 for a in values):
            raise ValueError(f"attack sizes must be >= 0, got {values}")
        too_large = [a for a in values if a > MAX_DATA_SIZE]
        if too_large:
            raise ValueError(f"expected attack sizes in 0..{MAX_DATA_SIZE}, got {too_large[0]}")
        if len(set(values)) != len(values):
            raise ValueError(f"attack sizes repeat: {values}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | int) -> list[int] | int:
        if isinstance(v, int):
            if v < 1:
                raise ValueError(f"a seed count must be >= 1, got {v}")
            if v > MAX_SEEDS:
                raise ValueError(f"expected a seed count in 1..{MAX_SEEDS}, got {v}")
            return v
        if len(v) > MAX_SEEDS:
            raise ValueError(f"expected at most {MAX_SEEDS} seeds, got {len(v)}")
        if not v or len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError(f"seeds must be distinct non-negative integers, got {v}")
        # The store keys runs by seed in a signed 64-bit SQLite column.
        for i, seed in enumerate(v):
            if bound_problem(seed, 0, MAX_SEED) is not None:
                raise ValueError(f"expected seeds in 0..{MAX_SEED}, got {seed} (seeds[{i}])")
        return v

    def attack_count(self) -> int:
        """How many attack sizes, without expanding a range."""
        a = self.attack_sizes
        return a.count() if isinstance(a, RangeSpec) else len(a)

    def seed_count(self) -> int:
        """How many seeds, without expanding a count."""
        return self.seeds if isinstance(self.seeds, int) else len(self.seeds)

    def attack_values(self) -> list[int]:
        a = self.attack_sizes
        return a.values() if isinstance(a, RangeSpec) else list(a)

    def seed_values(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


class DuringSpec(StrictSpec):
    """Measure every `every` epochs (0: never) in the given phases; 'fit' is before the stopping
    rule holds, 'post' the post-training epochs. Loss and train accuracy are recorded every epoch
    regardless."""

    every: int = Field(0, ge=0, le=MAX_EPOCHS)
    measures: list[str] = Field(default_factory=list)
    phases: list[Literal["fit", "post"]] = Field(default_factory=lambda: ["fit", "post"])

    @field_validator("measures")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        check_measure_names(names)
        return names


class AlphaEventSpec(StrictSpec):
    """At post-training epoch `post_epoch` (after that epoch's update), scale layer `layer`
    (1-based, affine layers in order) by 1/alpha and layer+1's weights by alpha
    (flatvol.reparam); the function is unchanged, training continues from the scaled weights."""

    post_epoch: int = Field(ge=1, le=MAX_EPOCHS)
    layer: int = Field(1, ge=1, le=MAX_DEPTH)
    alpha: float = Field(gt=0)


class ExperimentSpec(ProblemSpec):
    """A sweep: the problem (name, data, model, train, optimizers: ProblemSpec), its axes
    (attack sizes x seeds), the measures taken and when, and alpha-scaling events."""

    sweep: SweepSpec = Field(default_factory=SweepSpec)
    measures: MeasuresSpec = Field(default_factory=MeasuresSpec)
    during: DuringSpec = Field(default_factory=DuringSpec)
    alpha_events: list[AlphaEventSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        labels = [o.key for o in self.optimizers]
        if not labels:
            raise ValueError("optimizers: at least one optimizer is needed")
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"optimizers: labels must be unique, {', '.join(dupes)} repeats "
                             "(give each entry a distinct 'label')")
        runs = len(labels) * self.sweep.attack_count() * self.sweep.seed_count()
        if runs > MAX_SWEEP_RUNS:
            raise ValueError(f"sweep: expected at most {MAX_SWEEP_RUNS} runs (optimizers x "
                             f"attack sizes x seeds), got {len(labels)} x "
                             f"{self.sweep.attack_count()} x {self.sweep.seed_count()} = {runs}")
        for o in self.optimizers:
            post = o.post_train_epochs if o.post_train_epochs is not None else \
                self.train.post_train_epochs
            if o.swa is not None and post < 1:
                raise ValueError(f"optimizers: {o.key!r} uses swa, which averages over "
                                 f"post-training epochs: set post_train_epochs >= 1")
            late = [e.post_epoch for e in self.alpha_events if e.post_epoch > post]
            if late:
                raise ValueError(f"alpha_events: post_epoch {late[0]} is after the last "
                                 f"post-training epoch ({post}) of optimizer {o.key!r}")
        if self.during.every and not self.during.measures:
            raise ValueError("during: 'every' is set but 'measures' is empty")
        if not self.train.history and not self.train.ensemble:
            raise ValueError("train.history: false only skips the ensemble trainer's per-epoch "
                             "evaluation (one-at-a-time training evaluates S every epoch "
                             "anyway): set ensemble = true or history = true")
        if self.train.ensemble and (self.during.measures or self.alpha_events):
            what = "during.measures" if self.during.measures else "alpha_events"
            raise ValueError(f"train.ensemble: ensemble training has no per-epoch hook, so it "
                             f"cannot take {what}; set ensemble = false or remove {what}")
        return self

    def spec_hash(self) -> str:
        """Hash of the protocol: everything but the name, description and the sweep axes
        (optimizers, attack sizes, seeds), so extending a sweep keeps its finished runs, and
        train.ensemble and train.history, which change how runs are trained but not (beyond
        float rounding) what they give."""
        payload = self.model_dump(mode="json", exclude={
            "name": True, "description": True, "optimizers": True, "sweep": True,
            "train": set(TRAIN_EXECUTION_FIELDS)})
        return digest("spec", payload)

    def config_hash(self, optimizer: OptimizerSpec) -> str:
        """Hash of everything that determines a run of `optimizer` (protocol + its settings)."""
        return digest("run-config", {"spec": self.spec_hash(),
                                     "optimizer": optimizer.model_dump(mode="json")})

    def optimizer(self, label: str) -> OptimizerSpec:
        for o in self.optimizers:
            if o.key == label:
                return o
        raise SpecError(f"spec {self.name!r}: no optimizer labelled {label!r}")


def spec_from_dict(data: Mapping[str, Any], source: str = "<spec>") -> ExperimentSpec:
    """Validate a mapping (e.g. a parsed spec file) as an experiment spec.

    Args:
        data: The spec's contents, as read from TOML, YAML or JSON.
        source: Where the data came from, used to prefix error messages.

    Returns:
        The validated ExperimentSpec.

    Raises:
        SpecError: If the data fails validation (a one-line message starting with source).
    """
    return validate_spec(ExperimentSpec, data, source)


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a .toml, .yaml or .yml experiment spec.

    Args:
        path: Path of a .toml, .yaml or .yml spec file.

    Returns:
        The validated ExperimentSpec.

    Raises:
        SpecError: If the file is missing, unreadable, malformed or fails validation.
    """
    return spec_from_dict(read_spec_file(path), str(path))


def spec_json(spec: ExperimentSpec) -> str:
    return json.dumps(spec.model_dump(mode="json"), sort_keys=True, indent=2)
