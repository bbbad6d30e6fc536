"""The measure catalogue: one entry per measure, read by specs, the runner, the CLI and analysis.

An entry (`MeasureEntry`) holds the measure's name (the one name used in specs, in
`flatvol flatness --measures`, in a run's info and in the docs), its function
`(model, task, context) -> {field: float}`, the result fields it stores (one store column each),
its predictors of generalization (which stored column, oriented so that larger predicts better
generalization, with its report label), where its options are set, and its default options.

    register_measure(MeasureEntry("my_measure", fn, fields=("my_value",),
                                  predictors=(Predictor("my_value", "-log10 my", -1, True),)))

is all it takes for a spec to list 'my_measure', for the runner to store `my_value` and for
the report to rank it. The built-in entries are registered by flatvol.measures.builtin when the
flatvol.measures package is imported.

This module also holds the option models of the [measures] table of a spec (MeasuresSpec and
its sharpness section; its volume section is flatvol.problem_settings.VolumeSpec), which
flatvol.experiments.spec embeds, and `MeasureContext`,
what a measure function is given besides the model and the task.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from flatvol.errors import SpecError
from flatvol.limits import options_problem

# The settings models are flatvol.problem_settings' (the volume's shared with the sgd-vs-bayes
# spec), a light module: the catalogue's metadata (names, fields, predictors, option schemas)
# is read by the analysis and by spec parsing, which must not load torch and the estimators;
# only a measure that runs needs them.
from flatvol.problem_settings import OptionValue, StrictSpec, VolumeSpec, bounded_options

if TYPE_CHECKING:
    import torch
    from torch import nn

    from flatvol.data.task import TaskData
    from flatvol.flatness import FunctionalLoss
    from flatvol.volume import VolumeService

MaximizerName = Literal["paper", "lbfgsb", "fast"]
# The one default Keskar maximizer, for specs and `flatvol flatness` alike: the one that finds
# the largest value fastest. 'fast' reaches at least the 'paper' value with about 10x fewer
# gradients (bench/bench_sharpness_fast_vs_paper.py); 'paper' stays available as an option.
DEFAULT_MAXIMIZER: MaximizerName = "fast"
DEFAULT_SHARPNESS_EPSILON = 1e-4


# --------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class Predictor:
    """A stored column read as a predictor of generalization, oriented so that larger predicts
    better generalization: values = sign * (log10(column) if log10 else column)."""

    column: str
    label: str
    sign: int = 1
    log10: bool = False
    plot_label: str | None = None  # matplotlib mathtext; defaults to `label`

    def __post_init__(self) -> None:
        if self.sign not in (1, -1):
            raise ValueError(f"Predictor {self.column}: sign must be +1 or -1, got {self.sign}")


MeasureFn = Callable[["nn.Module", "TaskData", "MeasureContext"], dict[str, float]]
MeasureGroup = Literal["flatness", "volume", "accuracy"]
# Where a spec sets a measure's options: measures.options.<name>, its own [measures.<name>]
# table (volume, sharpness), or nowhere (accuracy).
OptionsIn = Literal["options", "own_table", "none"]


@dataclass(frozen=True)
class MeasureEntry:
    """One measure of the catalogue.

    `fn(model, task, context)` returns exactly `fields` (the stored columns); it may write its
    details (estimator, convergence, seconds, ...) into `context.details[name]`. `group`
    'flatness' measures use the training set S only and are offered by `flatvol flatness`.
    `defaults` are the keyword arguments it passes unless the spec or CLI overrides them.
    """

    name: str
    fn: MeasureFn
    fields: tuple[str, ...]
    label: str
    predictors: tuple[Predictor, ...] = ()
    group: MeasureGroup = "flatness"
    options_in: OptionsIn = "options"
    defaults: Mapping[str, OptionValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        stray = [p.column for p in self.predictors if p.column not in self.fields]
        if stray:
            raise ValueError(f"measure {self.name!r}: predictor column {stray[0]!r} is not one "
                             f"of its fields ({', '.join(self.fields)})")


_CATALOGUE: dict[str, MeasureEntry] = {}


def register_measure(entry: MeasureEntry, replace: bool = False) -> None:
    """Add `entry` to the catalogue: specs may then list it, the runner stores its fields and
    the analysis ranks its predictors.

    Args:
        entry: the measure.
        replace: allow replacing an entry of the same name.
    """
    if entry.name in _CATALOGUE and not replace:
        raise ValueError(f"measure {entry.name!r} is already in the catalogue")
    _CATALOGUE[entry.name] = entry


def unregister_measure(name: str) -> None:
    """Remove a measure (e.g. one a test registered); unknown names are ignored.

    Args:
        name: Name of the measure to remove.

    Returns:
        None.
    """
    _CATALOGUE.pop(name, None)


def measure_entries() -> tuple[MeasureEntry, ...]:
    """Every entry, in registration order (the built-ins first, in report order).

    Returns:
        Every MeasureEntry of the catalogue, in registration order.
    """
    return tuple(_CATALOGUE.values())


def measure_names(group: MeasureGroup | None = None) -> list[str]:
    """The names of the catalogue's measures (of one group, if given), sorted.

    Args:
        group: Only the measures of this group (default: all).

    Returns:
        The sorted measure names.
    """
    return sorted(n for n, e in _CATALOGUE.items() if group is None or e.group == group)


def measure_entry(name: str) -> MeasureEntry:
    """The entry named `name`; a one-line SpecError naming the known ones otherwise.

    Args:
        name: Name of a registered measure.

    Returns:
        The MeasureEntry named name.

    Raises:
        SpecError: If name is not in the catalogue (the message names the known ones).
    """
    try:
        return _CATALOGUE[name]
    except KeyError:
        raise SpecError(f"unknown measure {name!r}; expected one of {', '.join(measure_names())}") \
            from None


def check_measure_names(names: Iterable[str], what: str = "") -> None:
    """Raise ValueError (for a pydantic validator) on the first name not in the catalogue.

    Args:
        names: Measure names to check.
        what: Prefix of the error message naming what lists them (e.g. a spec field).

    Returns:
        None.

    Raises:
        ValueError: On the first name not in the catalogue (for a pydantic validator).
    """
    known = measure_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        prefix = f"{what} " if what else ""
        raise ValueError(f"{prefix}unknown measure {unknown[0]!r}; expected one of "
                         f"{', '.join(known)}")


# --------------------------------------------------------------------------- spec options
class SharpnessSpec(StrictSpec):
    """Keskar sharpness on S (flatvol.flatness.keskar_sharpness)."""

    epsilon: float = Field(DEFAULT_SHARPNESS_EPSILON, gt=0)
    maximizer: MaximizerName = DEFAULT_MAXIMIZER
    options: dict[str, OptionValue] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _bounded(cls, options: dict[str, OptionValue]) -> dict[str, OptionValue]:
        return bounded_options(options)


class MeasuresSpec(StrictSpec):
    """`final`: catalogue measure names (flatvol.measures.measure_names()) taken after training;
    `volume`, `sharpness` configure those two; `options.<measure>` are keyword arguments for the
    other flatness measures (e.g. options.hessian_trace = {n_hvp = 50})."""

    final: list[str] = Field(default_factory=lambda: ["volume", "sharpness"])
    volume: VolumeSpec = Field(default_factory=VolumeSpec)
    sharpness: SharpnessSpec = Field(default_factory=SharpnessSpec)
    options: dict[str, dict[str, OptionValue]] = Field(default_factory=dict)

    @field_validator("final")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        check_measure_names(names)
        return names

    @field_validator("options")
    @classmethod
    def _bounded(cls, options: dict[str, dict[str, OptionValue]]
                 ) -> dict[str, dict[str, OptionValue]]:
        for name, values in options.items():
            problem = options_problem(values)
            if problem is not None:
                raise ValueError(f"{name}.{problem}")
        return options

    @model_validator(mode="after")
    def _option_names(self) -> MeasuresSpec:
        check_measure_names(list(self.options), what="options for")
        for name in self.options:
            where = measure_entry(name).options_in
            if where == "own_table":
                raise ValueError(f"options.{name}: set {name} options in [measures.{name}]")
            if where == "none":
                raise ValueError(f"options.{name}: {name} takes no options")
        return self


# --------------------------------------------------------------------------- context
@dataclass
class MeasureContext:
    """What measures share within a sweep (kernel, settings) and within a run (seed, details).

    `settings` is the spec's [measures] table; `kernel` the NNGP kernel of S u E in that order
    (float64, n_S + n_E square), needed by 'volume'. A sweep derives each randomized measure's
    seed from (seed, epoch, measure); `derive_seeds=False` (the CLI's --seed) gives every
    measure `seed` itself. `chunk_size` sizes the flatness measures' shared loss operator and
    `progress` is passed to every flatness function."""

    settings: MeasuresSpec = field(default_factory=MeasuresSpec)
    seed: int = 0
    device: str | torch.device = "cpu"
    kernel: np.ndarray | None = None
    kernel_info: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    volume_cache: VolumeService | None = None
    derive_seeds: bool = True
    chunk_size: int | None = None
    progress: bool = False
    # The loss operator of the network measured (flatvol.flatness.FunctionalLoss on S), built
    # by the first flatness measure and shared by the others (measures.builtin).
    flatness_operator: FunctionalLoss | None = field(default=None, repr=False, compare=False)

    def volume(self, n_classes: int = 2) -> VolumeService:
        """The volume service on the sweep's kernel (made on first use) for K = n_classes.

        Args:
            n_classes: the task's class count K (the kernel is that of each of K outputs).

        Returns:
            The service (the sweep's own, volume_cache, where it gave one).

        Raises:
            SpecError: no kernel.
        """
        if self.volume_cache is None:
            if self.kernel is None:
                raise SpecError("measure 'volume' needs the sweep's NNGP kernel (context.kernel)")
            from flatvol.volume import VolumeService  # on first use: the catalogue stays light

            self.volume_cache = VolumeService(self.kernel, n_classes=n_classes)
        return self.volume_cache  # one for another K is refused by measures.volume

    def options(self, name: str) -> dict[str, Any]:
        """The spec's measures.options.<name> (keyword arguments of that measure)."""
        return dict(self.settings.options.get(name, {}))

    def measure_seed(self, salt: int) -> int:
        """A seed for a randomized measure: fixed per (run seed, epoch, measure)."""
        if not self.derive_seeds:
            return self.seed
        epoch = -1 if self.epoch is None else self.epoch
        return (self.seed * 1_000_003 + (epoch + 1) * 7919 + salt) % (2**31 - 1)


def compute_measures(names: Iterable[str], model: nn.Module, task: TaskData,
                     context: MeasureContext) -> dict[str, float]:
    """Run the named catalogue measures in order and merge their stored values.

    Args:
        names: catalogue measure names.
        model: the network (put in eval mode).
        task: its task (S, A, E).
        context: settings, seeds and kernel; each measure's details land in context.details.

    Returns:
        {field: value} over the measures' fields.
    """
    out: dict[str, float] = {}
    model.eval()
    for name in names:
        entry = measure_entry(name)
        start = time.perf_counter()
        values = entry.fn(model, task, context)
        context.details.setdefault(name, {})["seconds"] = round(time.perf_counter() - start, 4)
        if set(values) != set(entry.fields):
            raise SpecError(f"measure {name!r} returned {', '.join(sorted(values)) or 'nothing'}"
                            f" but its catalogue entry declares {', '.join(entry.fields)}")
        out.update({k: float(v) for k, v in values.items()})
    return out
