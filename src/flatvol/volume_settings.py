"""The names and defaults of the volume's settings, without the volume package.

The spec schemas (flatvol.measures' VolumeSpec, sgd-vs-bayes' [volume] table) validate a spec's
volume settings when it is parsed; the analysis reads the measure catalogue. Neither needs torch
or the estimators, so the names they check against live here, in the base layer, and
flatvol.volume imports them from here: one definition each, the estimator registry included.

- ESTIMATORS: the estimator registry, name -> EstimatorInfo (description, the class counts
  it supports, whether it gives a standard error or can be warm-started, its options schema,
  and its implementations named as 'module:function', imported on first use);
  register_estimator adds one, check_estimator / estimator_info refuse an unknown name or
  one that does not support K classes; DEFAULT_ESTIMATOR.
- KernelKind / KERNEL_KINDS / check_kernel_kind: the kernel kinds a spec may name (extended by
  flatvol.volume.kernels.register_kernel_kind).
- BatchNormMode / BATCHNORM_MODES / DEFAULT_BATCHNORM: how BatchNorm normalizes in a
  Monte-Carlo kernel's random networks (flatvol.volume.mc_kernel explains the choice).
- DEFAULT_MC_TOLERANCE, DEFAULT_MC_MAX_SAMPLES, MIN_MC_MAX_SAMPLES: the Monte-Carlo draw
  count's convergence check (flatvol.volume.mc_convergence explains the check).
"""

from __future__ import annotations

import importlib
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from flatvol.errors import VolumeError

# EP's 'mode' option (flatvol.volume.ep.Mode: both name the one block solver) and orthant-is'
# proposals (flatvol.volume.orthant.PROPOSALS), spelled here so that a spec's options are
# checked without importing them; a test checks both lists against the volume package's.
EP_MODES: tuple[str, ...] = ("auto", "blocks")
IS_PROPOSALS: tuple[str, ...] = ("auto", "ep", "minimax", "prior")

OptionKind = Literal["int", "float", "str"]


@dataclass(frozen=True)
class EstimatorOption:
    """One keyword option of an estimator: its name, type, default and (text) allowed values.

    kind: 'int' (an integer, not a bool), 'float' (any real number, not a bool) or 'str'.
    choices: for 'str', the allowed values (empty: any text).
    """

    name: str
    kind: OptionKind
    default: Any
    description: str
    choices: tuple[str, ...] = ()

    def check(self, value: Any, estimator: str) -> Any:
        """Return `value` if it has this option's type (and is one of its choices).

        Args:
            value: The value given.
            estimator: The estimator's name, for the message.

        Returns:
            `value`, unchanged.

        Raises:
            VolumeError: one line naming the option, expected vs got.
        """
        if self.kind == "int":
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        elif self.kind == "float":
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str) and (not self.choices or value in self.choices)
        if not ok:
            expected = (f"one of {', '.join(self.choices)}" if self.choices
                        else {"int": "an integer", "float": "a number",
                              "str": "text"}[self.kind])
            raise VolumeError(f"estimator {estimator!r} option {self.name}: expected "
                              f"{expected}, got {value!r}")
        return value


@dataclass(frozen=True)
class EstimatorInfo:
    """One volume estimator: what it is, what it supports, its options and its code.

    The code is named, not imported ('package.module:function'), so that this registry loads
    neither torch nor the volume package; `implementation` imports it on first use. Every
    implementation has one signature (flatvol.volume.estimate.EstimatorFunction):
    `function(factor, labels, n_classes, **options) -> EstimatorOutput`, with `factor` the
    validated, factorized kernel (a VolumeEstimator), labels as {-1, +1} floats for the binary
    implementation and int64 classes 0..K-1 for the K-class one, and every option of
    `options` given (defaults filled in); a warm-startable estimator's binary implementation
    also takes `warm_start` and `keep_posterior`.

    Attributes:
        name: The registry key, as specs and `--estimator` spell it.
        description: One line for help texts and `flatvol volume`'s output.
        binary: 'module:function' of the two-class implementation.
        multiclass: 'module:function' of the K-class implementation (K > 2); None: the
            estimator is binary only.
        has_stderr: Its results carry a standard error (stderr_log10).
        warm_start: Its binary implementation can start from an earlier result's EP
            posterior (log_volume(..., warm_start=...); flatvol.volume.ep).
        options: Its keyword options; any other name, or a value of another type, is refused.
    """

    name: str
    description: str
    binary: str
    multiclass: str | None = None
    has_stderr: bool = False
    warm_start: bool = False
    options: tuple[EstimatorOption, ...] = ()

    def __post_init__(self) -> None:
        for target in (self.binary, self.multiclass):
            if target is not None and (target.count(":") != 1 or target.startswith(":")
                                       or target.endswith(":")):
                raise VolumeError(f"estimator {self.name!r}: implementation must be "
                                  f"'module:function', got {target!r}")

    def supports(self, n_classes: int) -> bool:
        """Whether this estimator estimates the volume of `n_classes`-class functions."""
        return n_classes == 2 or (n_classes > 2 and self.multiclass is not None)

    def takes(self, option: str) -> bool:
        """Whether `option` is one of this estimator's options (e.g. a caller's generic seed
        goes only to an estimator that samples)."""
        return any(o.name == option for o in self.options)

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Check options against the schema and fill in the defaults of those not given.

        Args:
            options: Option name -> value.

        Returns:
            Every option of the schema, in schema order: the given value or the default.

        Raises:
            VolumeError: one line naming an unknown option or one of the wrong type.
        """
        schema = {o.name: o for o in self.options}
        for name, value in options.items():
            if name not in schema:
                allowed = ", ".join(schema) or "none"
                raise VolumeError(f"estimator {self.name!r} has no option {name!r}; its "
                                  f"options: {allowed}")
            schema[name].check(value, self.name)
        return {name: options.get(name, option.default) for name, option in schema.items()}

    def implementation(self, n_classes: int = 2) -> Callable[..., Any]:
        """The function that estimates a volume of `n_classes` classes, imported on first use.

        Args:
            n_classes: K (2: the binary implementation).

        Returns:
            The implementation (signature: see the class docstring).

        Raises:
            VolumeError: K not supported, or a target that cannot be imported.
        """
        target = self.binary if n_classes == 2 else self.multiclass
        if target is None or n_classes < 2:
            raise VolumeError(f"estimator {self.name!r} does not support {n_classes} classes")
        module, function = target.split(":")
        try:
            return getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as exc:
            raise VolumeError(f"estimator {self.name!r}: cannot load {target} "
                              f"({type(exc).__name__})") from None


# Every estimator takes a seed, so that a caller's one seed (volume_of's, a sweep's) reaches
# those that sample without naming them; deterministic ones (EP, Laplace) ignore it.
_SEED = EstimatorOption("seed", "int", 0, "the seed of the estimator's sampling, if any")
_EP_OPTIONS = (
    _SEED,
    EstimatorOption("tol", "float", 1e-3, "EP's convergence tolerance"),
    EstimatorOption("max_iter", "int", 300, "EP sweeps at most"),
    EstimatorOption("mode", "str", "auto", "EP's solver: 'auto' and 'blocks' both name "
                    "the one block solver (flatvol.volume.ep)", EP_MODES),
)

ESTIMATORS: dict[str, EstimatorInfo] = {}


def register_estimator(info: EstimatorInfo) -> EstimatorInfo:
    """Add an estimator to the registry: specs, `flatvol volume`, the service and the
    pre-flight check accept its name from then on.

    Args:
        info: The estimator (its name must be new).

    Returns:
        `info`.

    Raises:
        VolumeError: a name already registered.
    """
    if info.name in ESTIMATORS:
        raise VolumeError(f"estimator {info.name!r} is already registered")
    ESTIMATORS[info.name] = info
    return info


def unregister_estimator(name: str) -> None:
    """Remove an estimator from the registry (e.g. a test's own); unknown names are ignored.

    Args:
        name: The estimator's registry name.
    """
    ESTIMATORS.pop(name, None)


register_estimator(EstimatorInfo(
    "ep-orthant",
    "EP with the noise-free step likelihood: log P(sign z = f), z ~ N(0, K)",
    binary="flatvol.volume.estimate:ep_orthant_volume",
    multiclass="flatvol.volume.multiclass:structured_ep_volume",
    warm_start=True,
    options=_EP_OPTIONS,
))
register_estimator(EstimatorInfo(
    "orthant-is",
    "importance sampling of P(sign z = f) (EP or minimax-tilted proposal), stderr",
    binary="flatvol.volume.estimate:orthant_is_volume",
    multiclass="flatvol.volume.multiclass:difference_is_volume",
    has_stderr=True,
    warm_start=True,
    options=_EP_OPTIONS + (
        EstimatorOption("n_samples", "int", 4000, "importance samples"),
        EstimatorOption("proposal", "str", "auto", "the importance sampler's proposal",
                        IS_PROPOSALS),
    ),
))
register_estimator(EstimatorInfo(
    "ep-probit",
    "EP with the probit likelihood Phi(y z) (the paper's GPy value; orthant of K+I)",
    binary="flatvol.volume.estimate:ep_probit_volume",
    warm_start=True,
    options=_EP_OPTIONS,
))
register_estimator(EstimatorInfo(
    "laplace",
    "Laplace approximation of the probit marginal likelihood",
    binary="flatvol.volume.estimate:laplace_volume",
    options=(_SEED, EstimatorOption("max_iter", "int", 300, "Newton steps at most")),
))
DEFAULT_ESTIMATOR = "ep-orthant"

# The kernel kinds a spec may name: 'auto' (analytic for a ReLU FCN, Monte Carlo otherwise) and
# kinds of flatvol.volume.kernels.KERNEL_REGISTRY. A list, not a Literal: a kind registered with
# register_kernel_kind(info, in_specs=True) is appended, so specs accept it with no edit here.
KernelKind = str
KERNEL_KINDS: list[str] = ["auto", "analytic", "mc"]


def check_kernel_kind(kind: Any, name: str = "kernel") -> str:
    """A kernel kind a spec may name, or a one-line refusal.

    Args:
        kind: The value given.
        name: What the caller calls the setting.

    Returns:
        `kind`, unchanged.

    Raises:
        VolumeError: naming the setting, the kinds allowed and the value.
    """
    if kind not in KERNEL_KINDS:
        raise VolumeError(f"{name} must be one of {', '.join(KERNEL_KINDS)}, got {kind!r}")
    return kind

# 'eval': the running statistics as reset (the authors' code); 'batch': the statistics of all
# the kernel's inputs in one pass (as the network normalizes while it trains).
BatchNormMode = Literal["eval", "batch"]
BATCHNORM_MODES: tuple[str, ...] = get_args(BatchNormMode)
DEFAULT_BATCHNORM: BatchNormMode = "eval"

# log10 V within which the two halves (and halves vs all draws) must agree.
DEFAULT_MC_TOLERANCE = 0.5
# The most draws before the check gives up.
DEFAULT_MC_MAX_SAMPLES = 4096
MIN_MC_MAX_SAMPLES = 4  # two halves of at least two draws each


def estimator_info(name: str, n_classes: int = 2) -> EstimatorInfo:
    """The registry's entry for `name`, checked to support `n_classes` classes.

    Args:
        name: Estimator name.
        n_classes: K, the number of classes of the functions whose volume is asked for.

    Returns:
        The EstimatorInfo.

    Raises:
        VolumeError: one line: an unknown name, a K below 2, or an estimator that does not
            support K classes (naming those that do).
    """
    info = ESTIMATORS.get(name)
    if info is None:
        raise VolumeError(
            f"unknown estimator {name!r}; expected one of {', '.join(ESTIMATORS)}"
        )
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) \
            or n_classes < 2:
        raise VolumeError(f"n_classes: expected an integer >= 2, got {n_classes!r}")
    if not info.supports(int(n_classes)):
        raise VolumeError(f"estimator {name!r} is binary only; for {n_classes} classes use "
                          f"one of {', '.join(estimators_for(int(n_classes)))}")
    return info


def check_estimator(name: str, n_classes: int = 2) -> str:
    """Return `name` if it is in the ESTIMATORS registry and supports K classes, else raise a
    one-line VolumeError.

    Args:
        name: Estimator name to check.
        n_classes: K (2: binary functions).

    Returns:
        `name`, unchanged.

    Raises:
        VolumeError: see `estimator_info`.
    """
    estimator_info(name, n_classes)
    return name


def estimators_for(n_classes: int) -> tuple[str, ...]:
    """The registered estimators that support `n_classes` classes, in registry order.

    Args:
        n_classes: K >= 2.

    Returns:
        Their names.
    """
    return tuple(e.name for e in ESTIMATORS.values() if e.supports(n_classes))


def check_batchnorm_mode(mode: str, name: str = "mc_batchnorm") -> None:
    """Refuse an unknown BatchNorm convention in one line.

    Args:
        mode: The convention asked for.
        name: What the caller calls the setting (a spec field or a CLI flag).

    Raises:
        VolumeError: naming the setting, expected vs got.
    """
    if mode not in BATCHNORM_MODES:
        raise VolumeError(f"{name} must be one of {', '.join(BATCHNORM_MODES)}, got {mode!r}")
