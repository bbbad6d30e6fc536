"""The settings of a problem: its data, model and prior, training, optimizers and volume.

One set of pydantic models that every way of running flatvol composes, so a setting has one
name, one default and one check wherever it is given:

- the sweep spec (flatvol.experiments.spec.ExperimentSpec) and the sgd-vs-bayes spec
  (flatvol.sgd_vs_bayes.spec.SgdVsBayesSpec) are `ProblemSpec`s, each adding its own sections;
- `flatvol train`'s run is made of data, model, train and one optimizer (`run_spec` converts
  them to the flatvol.train.run.RunSpec it runs, `run_spec_from_options` reads its options);
- the volume's settings are `VolumeSpec` (a sweep's [measures.volume], sgd-vs-bayes' [volume]).

`train_config` is the one conversion of the train and optimizer settings to the TrainConfig
the trainers read, used by the sweep, sgd-vs-bayes and `flatvol train` alike. (This module sits
with flatvol.train in the layers and may import it; flatvol.train does not import it back, so
RunSpec and TrainConfig stay the plain runtime records the trainers read.)

A spec's `model_dump(mode="json")` is what its digests hash (tests/test_digest.py pins them):
a field keeps its name, place and default, and a new one is left out of dumps at its default
(as `data.every_class_in_S` is).

Light on purpose: importing it loads neither torch nor the data, model or train packages (their
checks are imported when a value is validated), because the measure catalogue's metadata and
the analysis read VolumeSpec and must stay light (tests/test_layers.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from flatvol.errors import SpecError, VolumeError
from flatvol.limits import (
    MAX_DATA_SIZE,
    MAX_EPOCHS,
    MAX_MC_SAMPLES,
    MAX_SEED,
    bound_problem,
    options_problem,
)
from flatvol.volume_settings import (
    DEFAULT_BATCHNORM,
    DEFAULT_ESTIMATOR,
    DEFAULT_MC_MAX_SAMPLES,
    DEFAULT_MC_TOLERANCE,
    MIN_MC_MAX_SAMPLES,
    BatchNormMode,
    KernelKind,
    check_estimator,
    check_kernel_kind,
    estimator_info,
)

if TYPE_CHECKING:
    from flatvol.models import Prior
    from flatvol.train.loop import TrainConfig
    from flatvol.train.run import RunSpec

OptionValue = bool | int | float | str


def bounded_options(options: dict[str, OptionValue]) -> dict[str, OptionValue]:
    """`options` unchanged if every integer option is within flatvol.limits' bounds (counts
    and iterations, seeds), for a pydantic validator (ValueError naming the option otherwise).

    Args:
        options: an optimizer's, estimator's or measure's options.

    Returns:
        options.

    Raises:
        ValueError: naming the first option out of bounds.
    """
    problem = options_problem(options)
    if problem is not None:
        raise ValueError(problem)
    return options


class StrictSpec(BaseModel):
    """Base of every settings and spec section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- data and model
class DataSpec(StrictSpec):
    """The task: S (train_size), E (test_size); attack sizes are a sweep axis. `classes` names
    a binary labelling ('0-4v5-9', '3v8', 'car-vs-cat') or K >= 3 classes ('all', '0,1,2,7',
    'car,cat,dog'; K outputs, attack labels drawn from the other classes): flatvol.data's
    parse_classes."""

    task: str = Field("mnist", validate_default=True)
    classes: str | None = Field(None, validate_default=True)
    train_size: int = Field(500, ge=1, le=MAX_DATA_SIZE)
    test_size: int = Field(1000, ge=1, le=MAX_DATA_SIZE)
    data_seed: int = Field(0, ge=0, le=MAX_SEED)
    # Refuse (in the pre-flight) an S that misses one of the K classes. A check, not a setting:
    # it changes no number, so it is left out of every dump and no digest or cache key moves.
    every_class_in_S: bool = Field(False, exclude=True)

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        from flatvol.data.tasks import parse_classes

        try:
            parse_classes(task)
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        return task

    @field_validator("classes")
    @classmethod
    def _labelling(cls, classes: str | None, info: ValidationInfo) -> str | None:
        # Checked when the settings are read, before any data (task is declared first, so it
        # is validated first: absent from info.data when it failed); the value is kept as
        # written (not normalized), so the digests of the specs that name it stay what they were.
        from flatvol.data.tasks import parse_classes

        if "task" in info.data:
            try:
                parse_classes(info.data["task"], classes)
            except SpecError as exc:
                raise ValueError(str(exc)) from None
        return classes


class ModelSpec(StrictSpec):
    """The architecture (flatvol.models' model spec, e.g. 'fcn:40,40') and the prior its
    weights are drawn from, which also defines its NNGP kernel."""

    arch: str = "fcn:40,40"
    # finite: Prior refuses infinities, which TOML and YAML can spell ('inf', '.inf')
    sigma_w2: float = Field(2.0, gt=0, allow_inf_nan=False)
    sigma_b2: float = Field(1.0, ge=0, allow_inf_nan=False)

    @field_validator("arch")
    @classmethod
    def _parsed(cls, arch: str) -> str:
        # Widths and depth are bounded here, before the pre-flight builds the network.
        from flatvol.models.registry import parse_model_spec

        try:
            parse_model_spec(arch)
        except SpecError as exc:
            raise ValueError(str(exc)) from None
        return arch

    def prior(self) -> Prior:
        """The prior that initializes every network of these settings.

        Returns:
            Prior(sigma_w2, sigma_b2).
        """
        from flatvol.models import Prior

        return Prior(self.sigma_w2, self.sigma_b2)


# --------------------------------------------------------------------------- training
class TrainSpec(StrictSpec):
    """Defaults of flatvol.train.TrainConfig (the paper's protocol)."""

    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(32, ge=1, le=MAX_DATA_SIZE)
    max_epochs: int = Field(2000, ge=1, le=MAX_EPOCHS)
    fit: Literal["S", "all"] = "S"
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    post_train_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)
    # The order of S u A in each epoch (flatvol.train.protocol.DATA_ORDERS): 'shuffled' (a new
    # permutation every epoch, the default) or 'fixed' (S then A every epoch, as the authors'
    # code trains). Left out of the keys at its default (flatvol.digest: added later).
    order: Literal["shuffled", "fixed"] = "shuffled"
    # Plan the sweep by stage: every seed and attack size of an optimizer trains as one ensemble
    # (flatvol.train.ensemble), then each run is measured and recorded. An execution choice,
    # like the backend: each member equals one-at-a-time training up to float32 rounding (which
    # long runs on flipped labels can amplify), so it is left out of spec_hash (and so of run
    # keys): a sweep may switch it and resume.
    ensemble: bool = False
    # Record each epoch's loss and accuracies on S and A (the run's series). With ensemble =
    # true, false skips that per-epoch evaluation of every member on S and A (a fifth of the
    # CIFAR FCN panel's training time): the stopping check then re-checks first the points each
    # member got wrong, with the same stopping epochs and weights, and the runs have no per-epoch
    # series. Also an execution choice, left out of spec_hash.
    history: bool = True


# [train] fields that choose how runs train, not what they give: left out of spec_hash and
# of the TrainConfig a run trains with.
TRAIN_EXECUTION_FIELDS = ("ensemble", "history")
# [train] fields an optimizer entry may override for its own runs.
OPTIMIZER_OVERRIDES = ("lr", "batch_size", "max_epochs", "momentum", "weight_decay",
                       "post_train_epochs")


class SWASpec(StrictSpec):
    """Stochastic weight averaging over the fitted and post-fit epochs (flatvol.train.swa)."""

    lr: float | None = Field(None, gt=0)
    anneal_epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    anneal_strategy: Literal["cos", "linear"] = "cos"


class OptimizerSpec(StrictSpec):
    """One optimizer. `label` (default: `name`) is the run key's optimizer; `name` is a
    registered optimizer (flatvol.train.optimizer_names); `options` go to its factory (e.g.
    SAM's rho and base, Entropy-SGD's langevin_steps); any train field may be overridden."""

    name: str
    label: str | None = None
    options: dict[str, OptionValue] = Field(default_factory=dict)
    lr: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1, le=MAX_DATA_SIZE)
    max_epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    momentum: float | None = Field(None, ge=0)
    weight_decay: float | None = Field(None, ge=0)
    post_train_epochs: int | None = Field(None, ge=0, le=MAX_EPOCHS)
    swa: SWASpec | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from flatvol.train import optimizer_names

        if name not in optimizer_names():
            raise ValueError(f"unknown optimizer {name!r}; expected one of "
                             f"{', '.join(optimizer_names())}")
        return name

    @field_validator("options")
    @classmethod
    def _bounded(cls, options: dict[str, OptionValue]) -> dict[str, OptionValue]:
        return bounded_options(options)  # e.g. Entropy-SGD's langevin_steps, its seed

    @property
    def key(self) -> str:
        return self.label or self.name


def train_config(train: TrainSpec, optimizer: OptimizerSpec, seed: int) -> TrainConfig:
    """The TrainConfig of one run: `train` with the optimizer's overrides and options. The one
    conversion of settings to a TrainConfig: the sweep, sgd-vs-bayes and `flatvol train` all
    train with it, so the same settings train the same network whichever path runs them.

    Args:
        train: the [train] settings (its execution fields, TRAIN_EXECUTION_FIELDS, are not
            part of a run's configuration).
        optimizer: the optimizer and its overrides.
        seed: the run's seed; it also seeds Entropy-SGD's Langevin noise unless the
            optimizer's options set a seed.

    Returns:
        The configuration train_to_fit (or the ensemble trainer) runs with.

    Raises:
        SpecError: the optimizer refuses its options.
    """
    from flatvol.train.loop import TrainConfig  # torch only once a run is configured

    options = dict(optimizer.options)
    if optimizer.name == "entropy-sgd":
        options.setdefault("seed", int(seed))
    base = train.model_dump(exclude=set(TRAIN_EXECUTION_FIELDS))
    for name in OPTIMIZER_OVERRIDES:
        value = getattr(optimizer, name)
        if value is not None:
            base[name] = value
    return TrainConfig(optimizer=optimizer.name, optimizer_options=options, **base)


# --------------------------------------------------------------------------- volume
class VolumeSpec(StrictSpec):
    """V(f) on S u E with the NNGP kernel of the model's prior. `kernel`: 'analytic' (ReLU FCN
    arccos kernel), 'mc' (Monte-Carlo NNGP kernel, any model) or 'auto' (analytic for fcn).
    `mc_samples`: the Monte-Carlo draws, or 'auto' to double them until log10 V of the true
    labels agrees within `mc_tolerance` between two independent halves of the draws, refused
    past `mc_max_samples` (flatvol.volume.mc_convergence). `mc_batchnorm`: how BatchNorm
    normalizes in the draws, 'eval' (reset statistics, the authors' code) or 'batch' (the
    statistics of S u E; flatvol.volume.mc_kernel.BATCHNORM_MODES)."""

    estimator: str = DEFAULT_ESTIMATOR  # a name in the registry, flatvol.volume.ESTIMATORS
    kernel: KernelKind = "auto"
    mc_samples: int | Literal["auto"] = 100
    mc_seed: int = Field(0, ge=0, le=MAX_SEED)
    mc_tolerance: float = Field(DEFAULT_MC_TOLERANCE, gt=0)  # in log10 V
    mc_max_samples: int = Field(DEFAULT_MC_MAX_SAMPLES, ge=MIN_MC_MAX_SAMPLES, le=MAX_MC_SAMPLES)
    mc_batchnorm: BatchNormMode = DEFAULT_BATCHNORM  # BatchNorm in the draws: 'eval' or 'batch'
    options: dict[str, OptionValue] = Field(default_factory=dict)

    @field_validator("mc_samples", mode="before")
    @classmethod
    def _count_or_auto(cls, samples: Any) -> Any:
        if samples == "auto":
            return samples
        if isinstance(samples, bool) or not isinstance(samples, int) or not (
                2 <= samples <= MAX_MC_SAMPLES):
            raise ValueError(f"expected an integer in 2..{MAX_MC_SAMPLES} or 'auto'")
        return samples

    @field_validator("options")
    @classmethod
    def _bounded(cls, options: dict[str, OptionValue]) -> dict[str, OptionValue]:
        return bounded_options(options)

    @field_validator("estimator")
    @classmethod
    def _registered(cls, name: str) -> str:
        try:
            return check_estimator(name)
        except VolumeError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("kernel")
    @classmethod
    def _kernel_kind(cls, kind: str) -> str:
        try:  # the kinds registered for specs (flatvol.volume.kernels.register_kernel_kind)
            return check_kernel_kind(kind)
        except VolumeError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("options")
    @classmethod
    def _estimator_takes(cls, options: dict[str, OptionValue],
                         info: ValidationInfo) -> dict[str, OptionValue]:
        # each option must be one the estimator's registry entry takes, of its type (the
        # estimator field is validated first: it is declared first)
        name = info.data.get("estimator")
        if name is not None:
            try:
                estimator_info(name).check_options(options)
            except VolumeError as exc:
                raise ValueError(str(exc)) from None
        return options


# --------------------------------------------------------------------------- a spec file
class ProblemSpec(StrictSpec):
    """What every spec file states first: its name, and the problem (data, model and prior,
    training, optimizers). A kind of spec adds its own sections after these, so its dump (and
    the digests of it) lists these first, in this order."""

    name: str
    description: str = ""
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    optimizers: list[OptimizerSpec] = Field(default_factory=lambda: [OptimizerSpec(name="sgd")])

    def prior(self) -> Prior:
        """The prior that initializes every network of the spec (and defines its kernel).

        Returns:
            The model settings' prior.
        """
        return self.model.prior()

    def train_config(self, optimizer: OptimizerSpec, seed: int) -> TrainConfig:
        """The TrainConfig of a run of `optimizer` with `seed` (train_config).

        Args:
            optimizer: one of the spec's optimizers.
            seed: the run's seed.

        Returns:
            spec.train with the optimizer's overrides and options.
        """
        return train_config(self.train, optimizer, seed)


# --------------------------------------------------------------------------- one run
def run_spec(data: DataSpec, model: ModelSpec, train: TrainSpec, optimizer: OptimizerSpec,
             attack_size: int = 0, seed: int = 0) -> RunSpec:
    """The RunSpec `flatvol train` runs (flatvol.train.run.train_run) from the same settings a
    spec's run is made of, so it trains the network a sweep's run of them would.

    Args:
        data: the data settings (|S|, |E|, classes, data seed).
        model: the architecture and prior.
        train: the training settings (their execution fields play no part in one run).
        optimizer: the optimizer, its options and overrides; `swa` is refused (one run has
            no weight averaging, and silently ignoring it would train another network).
        attack_size: |A|.
        seed: the initialization and data-order seed.

    Returns:
        The RunSpec, its TrainConfig made by train_config.

    Raises:
        SpecError: a seed or size out of flatvol.limits' bounds, or an swa setting.
    """
    from flatvol.train.run import RunSpec  # torch only once a run is made

    if optimizer.swa is not None:
        raise SpecError("optimizer.swa: expected none: a single run has no weight averaging "
                        "(a sweep's optimizers do)")
    return RunSpec(task=data.task, classes=data.classes, train_size=data.train_size,
                   attack_size=attack_size, test_size=data.test_size, data_seed=data.data_seed,
                   model=model.arch, prior=model.prior(),
                   train=train_config(train, optimizer, seed), seed=seed)


# `flatvol train`'s options: the section and field of the settings each one sets (attack_size
# and seed are the run's own).
RUN_OPTIONS: dict[str, tuple[str, str]] = {
    **{name: ("data", name) for name in ("task", "classes", "train_size", "test_size",
                                         "data_seed")},
    "model": ("model", "arch"), "sigma_w2": ("model", "sigma_w2"),
    "sigma_b2": ("model", "sigma_b2"),
    **{name: ("train", name) for name in ("lr", "batch_size", "max_epochs", "fit", "momentum",
                                          "weight_decay", "post_train_epochs", "order")},
    "optimizer": ("optimizer", "name"),
}
_RUN_SECTIONS: dict[str, type[BaseModel]] = {"data": DataSpec, "model": ModelSpec,
                                             "train": TrainSpec, "optimizer": OptimizerSpec}


def run_spec_from_options(options: Mapping[str, Any]) -> RunSpec:
    """The RunSpec of `flatvol train`'s options: the settings sections they name (RUN_OPTIONS),
    validated as a spec's are, then run_spec. An option left out keeps its default.

    Args:
        options: option name (with underscores) -> value, e.g. {"train_size": 100,
            "model": "fcn:8", "optimizer": "adam", "lr": 1e-3, "seed": 3}.

    Returns:
        The RunSpec.

    Raises:
        SpecError: one line for the first bad value, naming the option (--train-size) or the
            field (train.max_epochs), expected vs got; or an unknown option.
    """
    known = [*RUN_OPTIONS, "attack_size", "seed"]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise SpecError(f"unknown run option {unknown[0]!r}; expected one of "
                        f"{', '.join(sorted(known))}")
    # flatvol.limits' bounds first, in their words (expected low..high, got x), as a run.json
    # read back is checked; the sections' own checks follow.
    from flatvol.train.checkpoint import run_number_problem

    bad = run_number_problem(options)
    if bad is not None:
        raise SpecError(f"{_option_and_field(bad[0])}: {bad[1]}")
    for name, low, high in (("batch_size", 1, MAX_DATA_SIZE), ("max_epochs", 1, MAX_EPOCHS),
                            ("post_train_epochs", 0, MAX_EPOCHS)):
        problem = bound_problem(options[name], low, high) if name in options else None
        if problem is not None:
            raise SpecError(f"{_option_and_field(name)}: {problem}")
    fields: dict[str, dict[str, Any]] = {section: {} for section in _RUN_SECTIONS}
    for option, value in options.items():
        if option in RUN_OPTIONS:
            section, name = RUN_OPTIONS[option]
            fields[section][name] = value
    sections: dict[str, Any] = {}
    for section, kind in _RUN_SECTIONS.items():
        try:
            sections[section] = kind(**fields[section])
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            name = str(error["loc"][0]) if error["loc"] else ""
            option = next((o for o, at in RUN_OPTIONS.items() if at == (section, name)),
                          f"{section}.{name}")
            msg = error["msg"].removeprefix("Value error, ")
            # a check's own message that already says what it got is not repeated
            got = "" if "got " in msg else f" (got {error.get('input')!r})"
            raise SpecError(" ".join(f"{_option_and_field(option)}: {msg}{got}".split())
                            ) from None
    return run_spec(**sections, attack_size=options.get("attack_size", 0),
                    seed=options.get("seed", 0))


def _option_and_field(option: str) -> str:
    """'--train-size (data.train_size)': the option as typed and the settings field it sets."""
    if option not in RUN_OPTIONS:
        return f"--{option.replace('_', '-')}" if "." not in option else option
    section, name = RUN_OPTIONS[option]
    return f"--{option.replace('_', '-')} ({section}.{name})"
