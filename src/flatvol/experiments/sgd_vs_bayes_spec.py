"""The sgd-vs-bayes spec: the sweep spec's sections (data, model, train, optimizers, volume) plus
how many networks to sample and how to analyse them. Validated and loaded by
flatvol.experiments.spec like a sweep spec (docs/EXPERIMENTS.md)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from flatvol.experiments.build import spec_prior, train_config
from flatvol.experiments.spec import (
    DataSpec,
    ModelSpec,
    OptimizerSpec,
    StrictSpec,
    TrainSpec,
    read_spec_file,
    resolve_spec_path,
    validate_spec,
)
from flatvol.measures import VolumeSpec
from flatvol.models import Prior
from flatvol.train.ensemble import ENSEMBLE_OPTIMIZERS
from flatvol.train.loop import TrainConfig


class SamplingSpec(StrictSpec):
    """How many networks per optimizer (seeds first_seed, first_seed+1, ...), trained in chunks
    of `chunk` networks at once (`group_size` per batched matmul; see flatvol.train.ensemble)."""

    networks: int = Field(10_000, ge=1)
    chunk: int = Field(500, ge=1)
    first_seed: int = Field(0, ge=0)
    group_size: int = Field(16, ge=1)
    engine: Literal["auto", "fcn", "vmap"] = "auto"


class BayesVolumeSpec(VolumeSpec):
    """The sweep's volume settings; V(f|S) is computed for each function seen `min_count` times."""

    min_count: int = Field(1, ge=1)


class AnalysisSpec(StrictSpec):
    """Correlations use functions seen at least `min_count` times (P_opt resolved); the summary
    lists the `top` most frequent functions per optimizer."""

    min_count: int = Field(5, ge=1)
    top: int = Field(20, ge=1)


class SgdVsBayesSpec(StrictSpec):
    name: str
    description: str = ""
    data: DataSpec = Field(default_factory=lambda: DataSpec(train_size=100, test_size=30))
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    optimizers: list[OptimizerSpec] = Field(
        default_factory=lambda: [OptimizerSpec(name="sgd"), OptimizerSpec(name="adam", lr=1e-3)])
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    volume: BayesVolumeSpec = Field(default_factory=BayesVolumeSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)

    @field_validator("optimizers")
    @classmethod
    def _ensemble_optimizers(cls, optimizers: list[OptimizerSpec]) -> list[OptimizerSpec]:
        if not optimizers:
            raise ValueError("at least one optimizer is needed")
        for o in optimizers:
            if o.name not in ENSEMBLE_OPTIMIZERS:
                raise ValueError(f"{o.key!r}: the ensemble trainer supports "
                                 f"{', '.join(ENSEMBLE_OPTIMIZERS)}, got {o.name!r}")
            if o.options or o.swa is not None:
                raise ValueError(f"{o.key!r}: 'options' and 'swa' are not supported here")
        labels = [o.key for o in optimizers]
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be unique, got {labels} (give each a 'label')")
        return optimizers

    @model_validator(mode="after")
    def _fit_S(self) -> SgdVsBayesSpec:
        if self.train.fit != "S":
            raise ValueError("train.fit must be 'S' (there is no attack set here)")
        return self

    def train_config(self, optimizer: OptimizerSpec) -> TrainConfig:
        """spec.train with the optimizer's overrides, merged as for a sweep's runs."""
        return train_config(self, optimizer, seed=0)  # type: ignore[arg-type]

    def prior(self) -> Prior:
        return spec_prior(self)  # type: ignore[arg-type]

    def seeds(self) -> list[int]:
        start = self.sampling.first_seed
        return list(range(start, start + self.sampling.networks))

    def spec_hash(self) -> str:
        """Hash of the whole spec: the key of its experiment in the results store."""
        return _digest(self.model_dump(mode="json"))

    def sample_key(self, optimizer: OptimizerSpec, data_fingerprint: str) -> str:
        """What determines a trained network: data, model, prior, training config."""
        return _digest({"data": self.data.model_dump(mode="json"),
                        "data_fingerprint": data_fingerprint,
                        "model": self.model.model_dump(mode="json"),
                        "train": self.train_config(optimizer).to_dict()})

    def volume_key(self, data_fingerprint: str) -> str:
        """What determines V(f|S): data, model, kernel and estimator settings."""
        return _digest({"volume": self.volume.model_dump(mode="json", exclude={"min_count"}),
                        "data": self.data.model_dump(mode="json"),
                        "data_fingerprint": data_fingerprint,
                        "model": self.model.model_dump(mode="json")})


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def sgd_vs_bayes_spec_from_dict(data: Mapping[str, Any], source: str = "<spec>"
                                ) -> SgdVsBayesSpec:
    """Validate parsed TOML/YAML as an sgd-vs-bayes spec (one-line SpecError on problems)."""
    return validate_spec(SgdVsBayesSpec, data, source)


def load_sgd_vs_bayes_spec(path: str | Path) -> SgdVsBayesSpec:
    """Read and validate a .toml/.yaml sgd-vs-bayes spec; a packaged name also works."""
    path = resolve_spec_path(path)
    return sgd_vs_bayes_spec_from_dict(read_spec_file(path), str(path))
