"""The kernel of a network's prior: one request, one place it is chosen, one result type.

    prior_kernel(model, x, KernelRequest(kind, samples, seed, ...)) -> PriorKernel

A `KernelRequest` is everything that fixes the kernel besides the model and the inputs; it
owns the kernel's cache keys and the check that it can give a usable kernel. `prior_kernel`
resolves its kind ('auto': analytic for a ReLU FCN, else Monte Carlo) and computes it through
the kind registry (`KERNEL_REGISTRY`; a new kind is one `register_kernel_kind` call):

- 'analytic': the arccos recursion of a ReLU FCN (flatvol.volume.arccos), exact;
- 'mc': Monte Carlo over the flatvol prior's draws of the readout's features
  (flatvol.volume.mc_kernel), the draw count fixed or chosen by flatvol.volume.mc_convergence;
- 'mc-output': Monte Carlo over any model's own initializer, of one output
  (flatvol.volume.output_kernel), for `volume_of`.

Every kind gives the prior covariance of the network's output (the readout pre-activation)
over inputs, for the flatvol kinds weights ~ N(0, sigma_w2 / fan_in) and biases ~
N(0, sigma_b2) (flatvol.models.Prior).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn

from flatvol.digest import digest
from flatvol.errors import VolumeError
from flatvol.models import FCN, model_outputs
from flatvol.volume._numerics import to_numpy
from flatvol.volume.arccos import fcn_kernel
from flatvol.volume.estimate import DEFAULT_ESTIMATOR
from flatvol.volume.mc_convergence import (
    DEFAULT_MC_MAX_SAMPLES,
    DEFAULT_MC_TOLERANCE,
    MC_START_SAMPLES,
    PROBE,
    check_full_rank,
    check_mc_samples,
    check_mc_settings,
    converged_mc_kernel,
)
from flatvol.volume.mc_kernel import (
    DEFAULT_BATCHNORM,
    FeatureDraws,
    check_batchnorm_mode,
    mc_nngp_kernel,
)
from flatvol.volume.output_kernel import (
    MonteCarloKernel,
    converged_output_kernel,
    leave_one_batch_out,
    monte_carlo_kernel,
)
from flatvol.volume_settings import KERNEL_KINDS

# Batch kernels (B n^2 float64) are kept for an error bar only up to this size.
MAX_BATCH_KERNEL_BYTES = 2 * 2**30
# Batches of draws of a Monte-Carlo kernel whose error is carried to log10 V (jackknife).
DEFAULT_MC_BATCHES = 10
# A Monte-Carlo draw count: a number, or 'auto' (chosen by flatvol.volume.mc_convergence).
MCSamples = int | Literal["auto"]
# Kinds stored under another name before the one vocabulary: kernel records and run details
# written before it say 'monte-carlo' for 'mc', and are read back through `canonical_kind`.
OLD_KIND_SPELLINGS = {"monte-carlo": "mc"}


def is_exact_kind(kind: str) -> bool:
    """Whether a kernel of this kind (as stored, old spellings included) has no Monte-Carlo
    error: the registry's word, so a new exact kind's volumes get a standard error of 0.

    Args:
        kind: A kernel kind, e.g. a kernel info's 'kind'.

    Returns:
        True for an exact registered kind, False otherwise (unknown kinds included).
    """
    info = KERNEL_REGISTRY.get(canonical_kind(kind))
    return info is not None and info.exact


def canonical_kind(kind: str) -> str:
    """A kernel kind as stored, in today's vocabulary ('monte-carlo' -> 'mc').

    Args:
        kind: A kind read back from disk (a cache record, a run's details).

    Returns:
        The kind's one name.
    """
    return OLD_KIND_SPELLINGS.get(kind, kind)


@dataclass(frozen=True)
class KernelRequest:
    """Everything that fixes a prior's kernel besides the model and the inputs.

    One request is what a sweep's [measures.volume], `flatvol volume`, `volume_of_model` and
    `volume_of` ask `prior_kernel` for; it owns the kernel's cache keys (`cache_key`,
    `draws_key`) and the check that the request can give a usable kernel (`check`).

    kind: 'auto' or a registered kind (`KERNEL_REGISTRY`: 'analytic', 'mc', 'mc-output', ...);
        'auto' is 'analytic' where the model has an analytic kernel, else `fallback`.
    samples: Monte-Carlo draws (an integer >= 2), or 'auto' (flatvol.volume.mc_convergence's
        check chooses them).
    seed: seed of the draws.
    tolerance, cap: with samples 'auto', the log10 V agreement required and the most draws.
    batchnorm: how BatchNorm normalizes in the draws (volume_settings.BATCHNORM_MODES).
    batches: batches of draws kept for a jackknife error (0: none; else >= 2).
    estimator, options: with samples 'auto', the estimator (and its options) of the check's
        probe: the one the volume is then computed with.
    fallback: what 'auto' means for a model without an analytic kernel ('mc': the flatvol
        prior's feature draws; 'mc-output': any model's own initializer).
    """

    kind: str = "auto"
    samples: MCSamples = 100
    seed: int = 0
    tolerance: float = DEFAULT_MC_TOLERANCE
    cap: int = DEFAULT_MC_MAX_SAMPLES
    batchnorm: str = DEFAULT_BATCHNORM
    batches: int = 0
    estimator: str = DEFAULT_ESTIMATOR
    options: Mapping[str, Any] = field(default_factory=dict)
    fallback: str = "mc"

    def __post_init__(self) -> None:
        for name, kind in (("kernel", self.kind), ("fallback", self.fallback)):
            if kind not in (*(("auto",) if name == "kernel" else ()), *KERNEL_REGISTRY):
                allowed = ", ".join(("auto", *KERNEL_REGISTRY) if name == "kernel"
                                    else KERNEL_REGISTRY)
                raise VolumeError(f"{name} must be one of {allowed}, got {kind!r}")
        check_mc_samples(self.samples, "mc_samples")
        check_batchnorm_mode(self.batchnorm)
        if self.samples == "auto":
            check_mc_settings(self.tolerance, self.cap)
        if isinstance(self.batches, bool) or not isinstance(self.batches, int) \
                or self.batches == 1 or self.batches < 0:
            raise VolumeError(f"mc_batches must be 0 or an integer >= 2, got {self.batches!r}")

    def resolve(self, model: nn.Module) -> str:
        """The kind this request means for `model`.

        Args:
            model: The network whose prior the kernel is of.

        Returns:
            A registered kind: 'auto' is 'analytic' for a flatvol FCN (its arccos kernel is
            exact), else `fallback`.

        Raises:
            VolumeError: a kind that cannot be computed for the model (e.g. 'analytic' for a
                CNN).
        """
        kind = self.kind
        if kind == "auto":
            kind = "analytic" if isinstance(model, FCN) else self.fallback
        KERNEL_REGISTRY[kind].supports(model)
        return kind

    def check(self, model: nn.Module, x: Any) -> str:
        """Refuse, before any draw, a request whose kernel would be unusable on x.

        Args:
            model: The network whose prior the kernel is of.
            x: The inputs (only their count and one row are used).

        Returns:
            The kind the request resolves to.

        Raises:
            VolumeError: an unusable kind, or a fixed draw count whose kernel must be singular
                on n points (its log V would be set by the jitter).
        """
        kind = self.resolve(model)
        KERNEL_REGISTRY[kind].check(model, x, self)
        return kind

    def is_exact(self) -> bool:
        """Whether the kind asked for has no Monte-Carlo error whatever the model ('auto' may
        resolve to a Monte-Carlo kind)."""
        return self.kind != "auto" and KERNEL_REGISTRY[self.kind].exact

    def cache_key(self, data: Any, model: Any) -> str:
        """The key of this request's kernel of a data set: what fixes the kernel (data,
        model, kind; a Monte-Carlo kernel's draws, seed, batches and BatchNorm mode; with
        samples 'auto', what judged the draw count). Schema 1 of `flatvol.digest`'s 'kernel'
        keys, so a cache written before the request existed is found again.

        Args:
            data: The data settings, as JSON (a spec's [data] table).
            model: The model settings, as JSON (a spec's [model] table).

        Returns:
            The 16-hex-digit key.
        """
        drawn = not self.is_exact()
        payload = {"data": data, "model": model, "kernel": self.kind,
                   "mc_samples": self.samples if drawn else None,
                   "mc_seed": self.seed if drawn else None}
        if drawn and self.samples == "auto":  # what the check converged on
            payload.update(mc_tolerance=self.tolerance, mc_max_samples=self.cap,
                           estimator=self.estimator)
        if drawn:  # a kernel cached before batches were kept is not reused
            payload.update(mc_batches=self.batches, mc_batchnorm=self.batchnorm)
        return digest("kernel", payload)

    def draws_key(self, data: Any, model: Any) -> str:
        """The key of this request's Monte-Carlo draws: the kernel's key less what only judges
        the draws (tolerance, cap, probe estimator), so a check refused at its cap resumes
        with a higher one (flatvol.volume.mc_checkpoint).

        Args:
            data: The data settings, as JSON.
            model: The model settings, as JSON.

        Returns:
            The 16-hex-digit key.
        """
        return digest("mc-draws", {"data": data, "model": model, "mc_seed": self.seed,
                                   "mc_batches": self.batches, "mc_batchnorm": self.batchnorm})


@dataclass(frozen=True)
class PriorKernel:
    """A prior's kernel on some inputs, and how it was obtained: what `prior_kernel` returns
    for every kind.

    `info` is JSON-able: kind, n, seconds, and for a Monte-Carlo kernel mc_samples, mc_seed,
    width, rank_bound, max_stderr and, when batches were asked for, mc_batches (0 with an
    mc_error note when they were too large to keep); with samples 'auto', mc_convergence holds
    the check's settings and rounds (flatvol.volume.mc_convergence.MCConvergence.to_info).
    """

    matrix: np.ndarray  # (n, n) float64, C-contiguous
    kind: str  # a registered kind ('analytic', 'mc', 'mc-output', ...)
    info: dict[str, Any]
    batch_kernels: np.ndarray | None = None  # (B, n, n), a Monte-Carlo kernel's batches
    batch_counts: np.ndarray | None = None  # (B,) draws per batch
    exact: bool = False  # no Monte-Carlo error (its volumes' standard errors are 0)

    def replicates(self) -> list[np.ndarray] | None:
        """The leave-one-batch-out kernels (jackknife replicates), or None without batches."""
        if self.batch_kernels is None or self.batch_counts is None:
            return None
        return list(leave_one_batch_out(self.batch_kernels, self.batch_counts))

    @property
    def convergence(self) -> dict[str, Any] | None:
        """The draw count's convergence check (MCConvergence.to_info), or None."""
        return self.info.get("mc_convergence")

    @property
    def samples(self) -> int | None:
        """The draws of a Monte-Carlo kernel, None for an exact one."""
        value = self.info.get("mc_samples")
        return None if value is None else int(value)

    def description(self) -> str:
        """'analytic', or e.g. 'mc (N samples)'."""
        return self.kind if self.samples is None else f"{self.kind} ({self.samples} samples)"


@dataclass(frozen=True)
class KernelInputs:
    """What a kind's builder gets besides the model, the inputs and the request."""

    n_classes: int = 2  # K of the probe labels (the check's log10 V is K-class for K > 2)
    probe_labels: Any = None  # with samples 'auto': the labels the check probes
    probe: str = PROBE  # what those labels are, for the check's figures
    init: Any = None  # 'mc-output': the initializer redrawing the model (None: its own)
    device: str | torch.device = "cpu"
    progress: bool = True
    checkpoint: str | Path | None = None  # 'mc': where the check keeps its draws

    def probe_options(self, request: KernelRequest) -> dict[str, Any]:
        """The check's estimator options: the request's, with K for K-class probe labels (a
        binary probe's options stay exactly as they were)."""
        return {**request.options, **({"n_classes": self.n_classes} if self.n_classes > 2
                                      else {})}

    def labels(self) -> Any:
        if self.probe_labels is None:
            raise VolumeError("mc_samples 'auto' needs probe labels (y on S u E) for its "
                              "convergence check")
        return self.probe_labels


def _any_model(model: nn.Module) -> None:
    """A kind that any model supports."""


def _no_check(model: nn.Module, x: Any, request: KernelRequest) -> None:
    """A kind whose request needs no check before it is computed."""


@dataclass(frozen=True)
class KernelKindInfo:
    """One kernel kind: how its kernel is computed and what it needs.

    build(model, x, request, inputs) -> (matrix, info, batch kernels, batch counts);
    supports(model) refuses a model the kind cannot serve; check(model, x, request) refuses,
    before any work, a request whose kernel would be unusable (a singular draw count); exact:
    the kernel has no Monte-Carlo error.
    """

    name: str
    description: str
    build: Callable[[nn.Module, Any, KernelRequest, KernelInputs], KernelParts]
    supports: Callable[[nn.Module], None] = _any_model
    check: Callable[[nn.Module, Any, KernelRequest], None] = _no_check
    exact: bool = False


# What a builder returns: the matrix, its info, and its batch kernels and counts (or None).
KernelParts = tuple[np.ndarray, dict[str, Any], np.ndarray | None, np.ndarray | None]

# The kinds, by name: a new kind is one `register_kernel_kind` call.
KERNEL_REGISTRY: dict[str, KernelKindInfo] = {}


def register_kernel_kind(info: KernelKindInfo, *, in_specs: bool = False) -> None:
    """Add (or replace) a kernel kind, usable by every request from then on.

    Args:
        info: The kind.
        in_specs: Also let specs name it ([measures.volume] kernel, sgd-vs-bayes' [volume]):
            it joins volume_settings.KERNEL_KINDS, which the spec schemas check against.

    Raises:
        VolumeError: the reserved name 'auto'.
    """
    if info.name == "auto":
        raise VolumeError("kernel kind 'auto' is reserved (it chooses among the kinds)")
    KERNEL_REGISTRY[info.name] = info
    if in_specs and info.name not in KERNEL_KINDS:
        KERNEL_KINDS.append(info.name)


def _fcn_only(model: nn.Module) -> None:
    if not isinstance(model, FCN):
        raise VolumeError(f"kernel: 'analytic' needs an fcn model, got "
                          f"{type(model).__name__} (use 'mc' or 'auto')")


def _analytic(model: nn.Module, x: Any, request: KernelRequest,
              inputs: KernelInputs) -> KernelParts:
    return fcn_kernel(model, x), {}, None, None


def _kept_batches(request: KernelRequest, n: int) -> tuple[int, str | None]:
    """The batches a Monte-Carlo kernel keeps (0 or request.batches), and why none if none:
    too few draws to fill them, or more than MAX_BATCH_KERNEL_BYTES."""
    least = min(MC_START_SAMPLES, request.cap) if request.samples == "auto" else request.samples
    size = request.batches * n * n * 8
    if not request.batches or (request.batches <= least and size <= MAX_BATCH_KERNEL_BYTES):
        return request.batches, None
    return 0, (f"no error bar: {least} draws make fewer than {request.batches} batches"
               if request.batches > least else
               f"no error bar: {request.batches} batch kernels of {n} points would take "
               f"{size / 2**30:.1f} GiB")


def _check_feature_rank(model: nn.Module, x: Any, request: KernelRequest) -> None:
    if request.samples != "auto":
        check_full_rank(request.samples, FeatureDraws(model, x[:1]).width,
                        int(to_numpy(x).shape[0]))


def _feature_draws(model: nn.Module, x: Any, request: KernelRequest,
                   inputs: KernelInputs) -> KernelParts:
    """The Monte-Carlo NNGP kernel of a flatvol model's prior (flatvol.volume.mc_kernel)."""
    n = int(to_numpy(x).shape[0])
    kept, why_not = _kept_batches(request, n)
    check = None
    if request.samples == "auto":
        mc, check = converged_mc_kernel(
            model, x, inputs.labels(), estimator=request.estimator,
            estimator_options=inputs.probe_options(request), tolerance=request.tolerance,
            max_samples=request.cap, seed=request.seed, device=inputs.device,
            progress=inputs.progress, n_batches=kept, batchnorm=request.batchnorm,
            checkpoint=inputs.checkpoint, probe=inputs.probe)
    else:
        _check_feature_rank(model, x, request)
        mc = mc_nngp_kernel(model, x, request.samples, seed=request.seed, device=inputs.device,
                            progress=inputs.progress, n_batches=kept,
                            batchnorm=request.batchnorm)
    info: dict[str, Any] = {"mc_samples": mc.n_samples, "mc_seed": mc.seed,
                            "batchnorm": request.batchnorm, "width": mc.width,
                            "rank_bound": mc.n_samples * mc.width + 1,
                            "max_stderr": float(np.max(mc.stderr))}
    if check is not None:
        info["mc_convergence"] = check.to_info()
    if request.batches:
        info["mc_batches"] = kept
        if why_not is not None:
            info["mc_error"] = why_not
    return mc.kernel, info, mc.batch_kernels, mc.batch_counts


def _check_output_rank(model: nn.Module, x: Any, request: KernelRequest) -> None:
    """A fixed count whose leave-one-batch-out kernels must be singular is refused: each has
    rank at most its draws times the outputs (F F^T / K per draw)."""
    if request.samples == "auto" or request.batches < 2:
        return
    n, samples = int(to_numpy(x).shape[0]), request.samples
    outputs = model_outputs(model, torch.as_tensor(x[:1]), batch_size=1)
    per_draw = 1 if outputs.ndim == 1 else int(outputs.shape[1])  # outputs in each draw
    if per_draw * (samples - math.ceil(samples / request.batches)) < n:
        least = math.ceil(n / per_draw * request.batches / (request.batches - 1))
        raise VolumeError(f"n_samples={samples} gives rank-deficient kernels on {n} points; "
                          f"use n_samples > {least} or 'auto'")


def _output_draws(model: nn.Module, x: Any, request: KernelRequest,
                  inputs: KernelInputs) -> KernelParts:
    """The Monte-Carlo output kernel over any model's own initializer
    (flatvol.volume.output_kernel), refused for K outputs that do not share one kernel."""
    check = None
    if request.samples == "auto":
        mc, check = converged_output_kernel(
            model, x, inputs.labels(), init=inputs.init, probe=inputs.probe,
            estimator=request.estimator, estimator_options=inputs.probe_options(request),
            tolerance=request.tolerance, max_samples=request.cap, seed=request.seed,
            n_batches=request.batches, device=inputs.device, progress=inputs.progress)
    else:
        _check_output_rank(model, x, request)
        mc = cast(MonteCarloKernel, monte_carlo_kernel(
            model, x, init=inputs.init, n_samples=request.samples, seed=request.seed,
            n_batches=request.batches, device=inputs.device, progress=inputs.progress))
    if mc.shared_outputs is not None and not mc.shared_outputs.passed:
        raise VolumeError(f"{type(model).__name__}: {mc.shared_outputs.message()}; the "
                          "K-class volume assumes K outputs with one kernel")
    info: dict[str, Any] = {"mc_samples": mc.n_samples, "mc_seed": mc.seed,
                            "mc_batches": request.batches, "init": mc.init,
                            "draw_seconds": mc.seconds,
                            "max_stderr": float(np.max(mc.stderr))}
    if mc.shared_outputs is not None:
        info["shared_outputs"] = asdict(mc.shared_outputs)
    if check is not None:
        info["mc_convergence"] = check.to_info()
    return mc.kernel, info, mc.batch_means, mc.batch_counts


register_kernel_kind(KernelKindInfo(
    "analytic", "the arccos NNGP kernel of a ReLU FCN (exact)", _analytic, _fcn_only,
    exact=True))
register_kernel_kind(KernelKindInfo(
    "mc", "Monte Carlo over the flatvol prior's draws of the readout's features", _feature_draws,
    check=_check_feature_rank))
register_kernel_kind(KernelKindInfo(
    "mc-output", "Monte Carlo over any model's own initializer, of one output",
    _output_draws, check=_check_output_rank))


def prior_kernel(
    model: nn.Module,
    x: Any,
    request: KernelRequest | None = None,
    *,
    n_classes: int = 2,
    probe_labels: Any = None,
    probe: str = PROBE,
    init: Any = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    checkpoint: str | Path | None = None,
) -> PriorKernel:
    """The one place the kernel of a model's prior is chosen and computed.

    Args:
        model: The network whose prior the kernel is of (its weights are not used; a
            'mc-output' kernel redraws a copy).
        x: Inputs, (n, *input_shape).
        request: What kernel: kind, draws, seed, check settings, BatchNorm mode, batches
            (None: KernelRequest(), 'auto' with 100 draws).
        n_classes: K of the probe labels (the check's log10 V is K-class for K > 2).
        probe_labels: With samples 'auto', the labels of x whose log10 V the check probes (a
            sweep's true labels y on S u E; `volume_of`'s model labels).
        probe: What the probe labels are, for the check's figures.
        init: A 'mc-output' kernel's initializer (None: the model's own).
        device: Torch device of the draws.
        progress: Show the draws' progress.
        checkpoint: With samples 'auto' and kind 'mc', a file keeping the check's draws so
            that a killed or refused check resumes (flatvol.volume.mc_checkpoint).

    Returns:
        The PriorKernel (float64, contiguous), its info (kind, n, seconds, ...) and its batches
        of draws if kept.

    Raises:
        VolumeError: a kind the model does not support, a rank-deficient draw count, 'auto'
            without probe labels or not converged within the cap.
    """
    request = KernelRequest() if request is None else request
    start = time.perf_counter()
    kind = request.check(model, x)
    info_of_kind = KERNEL_REGISTRY[kind]
    inputs = KernelInputs(n_classes, probe_labels, probe, init, device, progress, checkpoint)
    matrix, extra, batch_kernels, batch_counts = info_of_kind.build(model, x, request, inputs)
    info = {"kind": kind, **extra, "n": int(matrix.shape[0]),
            "seconds": round(time.perf_counter() - start, 3)}
    return PriorKernel(np.ascontiguousarray(matrix, dtype=np.float64), kind, info,
                       batch_kernels, batch_counts, info_of_kind.exact)


def select_kernel(
    model: nn.Module,
    x: Any,
    kind: str = "auto",
    *,
    mc_samples: MCSamples = 100,
    mc_seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    mc_batches: int = 0,
    mc_tolerance: float = DEFAULT_MC_TOLERANCE,
    mc_max_samples: int = DEFAULT_MC_MAX_SAMPLES,
    probe_labels: Any = None,
    probe_estimator: str = DEFAULT_ESTIMATOR,
    probe_options: dict[str, Any] | None = None,
    mc_batchnorm: str = DEFAULT_BATCHNORM,
    mc_checkpoint: str | Path | None = None,
) -> PriorKernel:
    """`prior_kernel` with the request spelled as keywords (the names of a spec's
    [measures.volume] settings); it chooses nothing itself.

    Args:
        model: A flatvol model carrying its prior.
        x: Inputs, (n, *input_shape).
        kind: 'auto', 'analytic', 'mc' or another registered kind (KernelRequest.kind).
        mc_samples: Draws, or 'auto' (KernelRequest.samples).
        mc_seed: Seed of the draws.
        device: Torch device of the draws.
        progress: Show the draws' progress.
        mc_batches: Batch kernels kept for a jackknife error (0: none).
        mc_tolerance: With 'auto', the log10 V agreement required.
        mc_max_samples: With 'auto', the most draws tried.
        probe_labels: With 'auto', the labels of x the check probes.
        probe_estimator: With 'auto', the check's estimator.
        probe_options: With 'auto', that estimator's options.
        mc_batchnorm: BatchNorm in the draws, 'eval' or 'batch'.
        mc_checkpoint: With 'auto', the check's file of draws.

    Returns:
        The PriorKernel.
    """
    if mc_batches and mc_batches < 2:
        raise VolumeError(f"mc_batches must be 0 or >= 2, got {mc_batches}")
    request = KernelRequest(kind, mc_samples, mc_seed, mc_tolerance, mc_max_samples,
                            mc_batchnorm, mc_batches, probe_estimator, dict(probe_options or {}))
    return prior_kernel(model, x, request, probe_labels=probe_labels, device=device,
                        progress=progress, checkpoint=mc_checkpoint)
