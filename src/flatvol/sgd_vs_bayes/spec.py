"""The sgd-vs-bayes spec: the problem's sections (data, model, train, optimizers, volume:
flatvol.problem_settings, shared with the sweep spec and `flatvol train`) plus
how many networks to sample and how to analyse them, and optionally a [grid] of settings (width,
|S|, batch size) each run as its own cell. Validated and loaded by flatvol.experiments.spec like
a sweep spec (docs/EXPERIMENTS.md)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from flatvol.digest import digest
from flatvol.errors import VolumeError
from flatvol.experiments.build import spec_classes
from flatvol.experiments.spec_files import (
    read_spec_file,
    validate_spec,
)
from flatvol.limits import (
    MAX_CHUNK,
    MAX_DATA_SIZE,
    MAX_GRID_CELLS,
    MAX_NETWORKS,
    MAX_SEED,
    MAX_WIDTH,
)
from flatvol.problem_settings import (
    DataSpec,
    OptimizerSpec,
    ProblemSpec,
    StrictSpec,
    VolumeSpec,
)
from flatvol.train.ensemble import ENSEMBLE_OPTIMIZERS
from flatvol.train.loop import TrainConfig
from flatvol.volume_settings import estimator_info


class SamplingSpec(StrictSpec):
    """How many networks per optimizer (seeds first_seed, first_seed+1, ...), trained in chunks
    of `chunk` networks at once (`group_size` per batched matmul; see flatvol.train.ensemble)."""

    networks: int = Field(10_000, ge=1, le=MAX_NETWORKS)
    chunk: int = Field(500, ge=1, le=MAX_CHUNK)
    first_seed: int = Field(0, ge=0, le=MAX_SEED)
    group_size: int = Field(16, ge=1, le=MAX_CHUNK)
    engine: Literal["auto", "fcn", "vmap"] = "auto"


class BayesVolumeSpec(VolumeSpec):
    """The sweep's volume settings; V(f|S) is computed for each function seen `min_count` times."""

    min_count: int = Field(1, ge=1)


class ResampleSpec(StrictSpec):
    """Draws of E from the held-out pool (data.test_size points): `draws` independent draws of
    each size in `sizes`, without replacement within a draw; P_opt(f|S) of each draw is read off
    the same trained networks (a function on a draw is the networks' labels there), and
    P_B(f|S) comes from each named posterior (flatvol.volume.predictive.POSTERIORS), estimated
    with `n_samples` importance samples. Replaces the single-E comparison of the spec."""

    sizes: list[int] = Field(default_factory=lambda: [20, 50, 100])
    draws: int = Field(10, ge=1, le=1000)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    posteriors: list[str] = Field(
        default_factory=lambda: ["ep-orthant", "ep-probit", "gp-regression"])
    n_samples: int = Field(4000, ge=100, le=1_000_000)

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, values: list[int]) -> list[int]:
        if not values or any(v < 1 for v in values) or len(set(values)) != len(values):
            raise ValueError(f"expected distinct sizes >= 1, got {values}")
        if max(values) > MAX_RESAMPLED_E:
            # P_B(f|S) is an |E|-dimensional orthant by importance sampling, trusted to here
            raise ValueError(f"expected sizes <= {MAX_RESAMPLED_E}, got {max(values)}")
        return sorted(values)

    @field_validator("posteriors")
    @classmethod
    def _posteriors(cls, values: list[str]) -> list[str]:
        from flatvol.volume.predictive import POSTERIORS

        unknown = [v for v in values if v not in POSTERIORS]
        if not values or unknown or len(set(values)) != len(values):
            raise ValueError(f"expected distinct names from {', '.join(POSTERIORS)}, got "
                             f"{values}")
        return values


# The largest resampled |E|: the importance-sampling error bars of shifted orthants hold
# there (bench/RESULTS.md: se 0.03-0.05 log10 up to 300 dimensions on the MNIST kernel).
MAX_RESAMPLED_E = 300


class AnalysisSpec(StrictSpec):
    """Correlations use functions seen at least `min_count` times (P_opt resolved); the summary
    lists the `top` most frequent functions per optimizer."""

    min_count: int = Field(5, ge=1)
    top: int = Field(20, ge=1)


FULL_BATCH = "full"
GRID_AXES = ("width", "train_size", "batch_size")  # the order cells are named and run in


class GridCellRule(StrictSpec):
    """Settings of the grid cells that match every axis value given here (None matches any):
    `networks` overrides sampling.networks, `skip` leaves the cells out. Later rules win."""

    width: int | None = Field(None, ge=1, le=MAX_WIDTH)
    train_size: int | None = Field(None, ge=1, le=MAX_DATA_SIZE)
    batch_size: int | Literal["full"] | None = None
    networks: int | None = Field(None, ge=1, le=MAX_NETWORKS)
    skip: bool = False

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch(cls, value: Any) -> Any:
        return value if value is None else check_batch_size(value)

    def matches(self, cell: Mapping[str, Any]) -> bool:
        return all(getattr(self, axis) is None or getattr(self, axis) == cell[axis]
                   for axis in GRID_AXES)


class GridSpec(StrictSpec):
    """The axes of an sgd-vs-bayes grid: every combination is a cell, run like a spec of its own
    (hidden width of each layer of the fcn, |S|, and batch size, 'full' meaning |S|); the spec's
    optimizers run in every cell. An axis left out keeps the spec's value."""

    width: list[int] = Field(default_factory=list)
    train_size: list[int] = Field(default_factory=list)
    batch_size: list[int | Literal["full"]] = Field(default_factory=list)
    cells: list[GridCellRule] = Field(default_factory=list)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batches(cls, values: Any) -> Any:
        return [check_batch_size(v) for v in values] if isinstance(values, list) else values

    @field_validator("width", "train_size", "batch_size")
    @classmethod
    def _positive_unique(cls, values: list[Any], info: ValidationInfo) -> list[Any]:
        if any(isinstance(v, int) and v < 1 for v in values):
            raise ValueError(f"expected values >= 1, got {values}")
        high = MAX_WIDTH if info.field_name == "width" else MAX_DATA_SIZE
        too_large = [v for v in values if isinstance(v, int) and v > high]
        if too_large:
            raise ValueError(f"expected values in 1..{high}, got {too_large[0]}")
        if len(set(values)) != len(values):
            raise ValueError(f"expected distinct values, got {values}")
        return values

    @model_validator(mode="after")
    def _cell_count(self) -> GridSpec:
        # Counted before any cell is made: each cell is a whole experiment.
        cells = math.prod(max(1, len(getattr(self, axis))) for axis in GRID_AXES)
        if cells > MAX_GRID_CELLS:
            raise ValueError(f"expected at most {MAX_GRID_CELLS} cells (width x train_size x "
                             f"batch_size), got {cells}")
        return self


@dataclass(frozen=True)
class GridCell:
    """One cell of a grid: its axis values, its name and the spec it runs."""

    values: dict[str, Any]  # width, train_size, batch_size ('full' or an int)
    name: str  # e.g. 'w40-S200-b32'
    spec: SgdVsBayesSpec


class SgdVsBayesSpec(ProblemSpec):
    """The problem (ProblemSpec: name, data, model, train, optimizers; smaller defaults), how
    many networks to sample, the volume's settings, the analysis and an optional grid."""

    data: DataSpec = Field(default_factory=lambda: DataSpec(train_size=100, test_size=30))
    optimizers: list[OptimizerSpec] = Field(
        default_factory=lambda: [OptimizerSpec(name="sgd"), OptimizerSpec(name="adam", lr=1e-3)])
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    volume: BayesVolumeSpec = Field(default_factory=BayesVolumeSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    grid: GridSpec | None = None
    resample: ResampleSpec | None = None

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
        if self.grid is not None and self.grid.width and fcn_depth(self.model.arch) is None:
            raise ValueError(f"grid.width needs an fcn model (model.arch 'fcn:W,W,...'), got "
                             f"{self.model.arch!r}")
        if self.grid is not None and not self.grid_cells():
            raise ValueError("grid: every cell is skipped")
        if self.resample is not None:
            if self.grid is not None:
                raise ValueError("resample: not with a [grid] (each cell would need its pool)")
            if max(self.resample.sizes) > self.data.test_size:
                raise ValueError(f"resample.sizes: expected at most data.test_size = "
                                 f"{self.data.test_size} (the pool E is drawn from), got "
                                 f"{max(self.resample.sizes)}")
            if spec_classes(self) != 2:
                raise ValueError(f"resample: binary tasks only (the posteriors of "
                                 f"flatvol.volume.predictive), got data.classes "
                                 f"{self.data.classes!r}")
        # Seeds first_seed .. first_seed + networks key the stored samples (signed 64-bit).
        networks = max([self.sampling.networks, *(r.networks or 0 for r in
                                                  (self.grid.cells if self.grid else []))])
        if self.sampling.first_seed + networks > MAX_SEED:
            raise ValueError(f"sampling: expected first_seed + networks <= {MAX_SEED}, got "
                             f"{self.sampling.first_seed} + {networks}")
        return self

    @model_validator(mode="after")
    def _classes_supported(self) -> SgdVsBayesSpec:
        # A K-class task (data.classes 'all', '0,1,7', ...) is refused now, in one line, where
        # its volume cannot be computed, rather than after every network has been trained.
        k = spec_classes(self)
        if k == 2:
            return self
        v = self.volume
        try:
            estimator_info(v.estimator, k).check_options(dict(v.options))
        except VolumeError as exc:
            raise ValueError(f"volume.estimator: {k} classes ({self.data.classes}): {exc}"
                             ) from None
        return self

    def grid_cells(self) -> list[GridCell]:
        """The cells of the grid (axes in GRID_AXES order, the last varying fastest), without
        the skipped ones; a spec without a grid is one cell named after the spec.

        Returns:
            Each cell's values, name and spec (the spec with the cell's settings and no grid).
        """
        if self.grid is None:
            return [GridCell({}, self.name, self)]
        grid = self.grid
        axes = {"width": grid.width or [None], "train_size": grid.train_size or [None],
                "batch_size": grid.batch_size or [None]}
        cells = []
        for values in itertools.product(*(axes[a] for a in GRID_AXES)):
            cell = dict(zip(GRID_AXES, values, strict=True))
            cell["train_size"] = cell["train_size"] or self.data.train_size
            cell["batch_size"] = cell["batch_size"] or self.train.batch_size
            networks, skip = self.sampling.networks, False
            for rule in grid.cells:
                if rule.matches(cell):
                    networks = rule.networks or networks
                    skip = rule.skip
            if skip:
                continue
            cells.append(self._cell(cell, networks))
        return cells

    def _cell(self, cell: dict[str, Any], networks: int) -> GridCell:
        arch = self.model.arch
        if cell["width"] is not None:
            arch = "fcn:" + ",".join([str(cell["width"])] * (fcn_depth(arch) or 1))
        batch = cell["batch_size"]
        size = cell["train_size"]
        name = "-".join(([f"w{cell['width']}"] if cell["width"] is not None else [])
                        + [f"S{size}", f"b{batch}"])
        spec = self.model_copy(update={
            "name": f"{self.name}[{name}]", "grid": None,
            "data": self.data.model_copy(update={"train_size": size}),
            "model": self.model.model_copy(update={"arch": arch}),
            "train": self.train.model_copy(update={
                "batch_size": size if batch == FULL_BATCH else int(batch)}),
            "sampling": self.sampling.model_copy(update={"networks": networks})})
        return GridCell(cell, name, spec)

    def train_config(self, optimizer: OptimizerSpec, seed: int = 0) -> TrainConfig:
        """spec.train with the optimizer's overrides, merged as for a sweep's runs.

        Args:
            optimizer: one of the spec's optimizers.
            seed: the seed train_config gives an Entropy-SGD's Langevin noise when its
                options set none; 0 by default, so an optimizer has one config, which keys
                its samples (sample_key) as it always has.

        Returns:
            The configuration the ensemble trainer runs with.
        """
        return super().train_config(optimizer, seed)

    def seeds(self) -> list[int]:
        start = self.sampling.first_seed
        return list(range(start, start + self.sampling.networks))

    def spec_hash(self) -> str:
        """Hash of the whole spec: the key of its experiment in the results store."""
        return digest("sgd-vs-bayes-spec", self.model_dump(mode="json"))

    def sample_key(self, optimizer: OptimizerSpec, data_fingerprint: str) -> str:
        """What determines a trained network: data, model, prior, training config."""
        return digest("sgd-vs-bayes-sample", {
            "data": self.data.model_dump(mode="json"), "data_fingerprint": data_fingerprint,
            "model": self.model.model_dump(mode="json"),
            "train": self.train_config(optimizer).to_dict()})

    def volume_key(self, data_fingerprint: str) -> str:
        """What determines V(f|S): data, model, kernel and estimator settings."""
        return digest("sgd-vs-bayes-volume", {
            "volume": self.volume.model_dump(mode="json", exclude={"min_count"}),
            "data": self.data.model_dump(mode="json"), "data_fingerprint": data_fingerprint,
            "model": self.model.model_dump(mode="json")})


def check_batch_size(value: Any) -> int | str:
    """A grid batch size: an integer >= 1 or 'full' (ValueError naming the value otherwise)."""
    if value == FULL_BATCH or (isinstance(value, int) and not isinstance(value, bool)
                               and value >= 1):
        if value != FULL_BATCH and value > MAX_DATA_SIZE:
            raise ValueError(f"expected a batch size <= {MAX_DATA_SIZE} or {FULL_BATCH!r}, "
                             f"got {value}")
        return value
    raise ValueError(f"expected an integer >= 1 or {FULL_BATCH!r}, got {value!r}")


def fcn_depth(arch: str) -> int | None:
    """Hidden layers of an 'fcn:W,W,...' arch string, or None for another architecture."""
    kind, _, widths = arch.partition(":")
    if kind.strip() != "fcn" or not widths.strip():
        return None
    return len(widths.split(","))


def sgd_vs_bayes_spec_from_dict(data: Mapping[str, Any], source: str = "<spec>"
                                ) -> SgdVsBayesSpec:
    """Validate parsed TOML/YAML as an sgd-vs-bayes spec (one-line SpecError on problems)."""
    return validate_spec(SgdVsBayesSpec, data, source)


def load_sgd_vs_bayes_spec(path: str | Path) -> SgdVsBayesSpec:
    """Read and validate a .toml/.yaml sgd-vs-bayes spec file.

    Args:
        path: the spec file (a packaged name is resolved by the caller, with
            flatvol.experiments.spec_files.resolve_spec_path).

    Returns:
        The validated SgdVsBayesSpec.

    Raises:
        SpecError: the file is missing, unreadable, malformed or fails validation (one line).
    """
    return sgd_vs_bayes_spec_from_dict(read_spec_file(path), str(path))
