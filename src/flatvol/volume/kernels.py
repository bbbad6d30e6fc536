"""NNGP kernels: the analytic arccos recursion for ReLU FCNs, and `select_kernel`, the one place
a sweep's kernel is chosen (analytic, or Monte Carlo through flatvol.volume.mc_kernel).

Both give the prior covariance of the network's output (the readout pre-activation) over inputs,
for weights ~ N(0, sigma_w2 / fan_in) and biases ~ N(0, sigma_b2) (flatvol.models.Prior).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from flatvol.errors import VolumeError
from flatvol.models import FCN, Prior, build_model
from flatvol.volume._numerics import to_numpy
from flatvol.volume.estimate import DEFAULT_ESTIMATOR
from flatvol.volume.mc_convergence import (
    DEFAULT_MC_MAX_SAMPLES,
    DEFAULT_MC_TOLERANCE,
    MC_START_SAMPLES,
    check_full_rank,
    converged_mc_kernel,
)
from flatvol.volume.mc_kernel import (
    DEFAULT_BATCHNORM,
    FeatureDraws,
    check_batchnorm_mode,
    mc_nngp_kernel,
)
from flatvol.volume.output_kernel import leave_one_batch_out
from flatvol.volume_settings import KERNEL_KINDS, KernelKind


def _flat_inputs(x: Any) -> np.ndarray:
    array = to_numpy(x)
    if array.ndim < 1 or array.shape[0] == 0:
        raise VolumeError(f"inputs: expected a non-empty batch (n, ...), got shape {array.shape}")
    array = np.asarray(array, dtype=np.float64).reshape(array.shape[0], -1)
    if not np.all(np.isfinite(array)):
        raise VolumeError("inputs: contain non-finite values")
    return array


def _relu_step(
    k12: np.ndarray, k11: np.ndarray, k22: np.ndarray, sigma_w2: float, sigma_b2: float
) -> np.ndarray:
    """sigma_b2 + sigma_w2 E[relu(u) relu(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]])."""
    norms = np.sqrt(k11 * k22)
    cos = np.clip(k12 / norms, -1.0, 1.0)
    theta = np.arccos(cos)
    j = np.sin(theta) + (math.pi - theta) * cos
    return sigma_b2 + sigma_w2 / (2.0 * math.pi) * norms * j


def arccos_kernel(
    x: Any,
    n_hidden: int,
    sigma_w2: float = 2.0,
    sigma_b2: float = 1.0,
    *,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Analytic NNGP kernel of a ReLU FCN with `n_hidden` hidden layers, float64 (n, n).

    K0 = sigma_b2 + sigma_w2 x.x'/d on flattened inputs (d features), then one arccos(1) ReLU
    step per hidden layer:  K <- sigma_b2 + sigma_w2/(2 pi) sqrt(k k') (sin t + (pi - t) cos t),
    t = arccos(K / sqrt(k k')). Computed in row blocks, so memory is the output plus O(chunk n).

    Args:
        x: Inputs, shape (n, ...); flattened to (n, d) features.
        n_hidden: Number of hidden ReLU layers.
        sigma_w2: Prior weight variance (times fan-in).
        sigma_b2: Prior bias variance.
        chunk_size: Rows computed per block.

    Returns:
        The kernel matrix, float64 of shape (n, n).

    Raises:
        VolumeError: If the inputs or the prior variances are invalid.
    """
    if n_hidden < 0:
        raise VolumeError(f"n_hidden must be >= 0, got {n_hidden}")
    Prior(sigma_w2, sigma_b2)  # same validation as the model prior
    X = _flat_inputs(x)
    n, d = X.shape
    # Diagonal recursion first: every block needs k(x, x) of its rows and columns.
    diags = [sigma_b2 + sigma_w2 * np.einsum("ij,ij->i", X, X) / d]
    for _ in range(n_hidden):
        diags.append(sigma_b2 + 0.5 * sigma_w2 * diags[-1])
    K = np.empty((n, n))
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        block = sigma_b2 + sigma_w2 * (X[start:stop] @ X.T) / d
        for layer in range(n_hidden):
            dg = diags[layer]
            block = _relu_step(block, dg[start:stop, None], dg[None, :], sigma_w2, sigma_b2)
        K[start:stop] = block
    K[np.diag_indices(n)] = diags[-1]  # exact diagonal (arccos(1) may round away from 0)
    return 0.5 * (K + K.T)


def fcn_kernel(model: nn.Module, x: Any, *, chunk_size: int = 1024) -> np.ndarray:
    """Analytic NNGP kernel of a flatvol FCN (its depth and prior), on inputs x.

    Args:
        model: A flatvol FCN built by build_model, carrying its depth and `model.prior`.
        x: Inputs, shape (n, ...).
        chunk_size: Rows computed per block.

    Returns:
        The analytic NNGP kernel, float64 of shape (n, n).

    Raises:
        VolumeError: If `model` is not an FCN with a supported prior.
    """
    if not isinstance(model, FCN):
        raise VolumeError(
            f"analytic kernel needs a flatvol FCN, got {type(model).__name__}; use mc_nngp_kernel"
        )
    prior: Prior = model.prior
    X = _flat_inputs(x)
    if X.shape[1] != model.in_dim:
        raise VolumeError(f"inputs: FCN expects {model.in_dim} features, got {X.shape[1]}")
    return arccos_kernel(X, len(model.hidden), prior.sigma_w2, prior.sigma_b2,
                         chunk_size=chunk_size)


# Batch kernels (B n^2 float64) are kept for an error bar only up to this size.
MAX_BATCH_KERNEL_BYTES = 2 * 2**30
# Batches of draws of a Monte-Carlo kernel whose error is carried to log10 V (jackknife).
DEFAULT_MC_BATCHES = 10
# A Monte-Carlo draw count: a number, or 'auto' (chosen by flatvol.volume.mc_convergence).
MCSamples = int | Literal["auto"]


@dataclass(frozen=True)
class NNGPKernel:
    """An NNGP kernel and how it was obtained.

    `info` is JSON-able: kind ('analytic' or 'monte-carlo'), n, seconds, and for a Monte-Carlo
    kernel mc_samples, mc_seed, width, rank_bound (draws x width + 1, >= n), max_stderr and,
    when batches were asked for, mc_batches (0 with an mc_error note when they were too large to
    keep); with mc_samples 'auto', mc_convergence holds the check's settings and rounds
    (flatvol.volume.mc_convergence.MCConvergence.to_info).
    """

    matrix: np.ndarray  # (n, n) float64, C-contiguous
    info: dict[str, Any]
    batch_kernels: np.ndarray | None = None  # (B, n, n), a Monte-Carlo kernel's batches, or None
    batch_counts: np.ndarray | None = None  # (B,) draws per batch

    def replicates(self) -> list[np.ndarray] | None:
        """The leave-one-batch-out kernels (jackknife replicates), or None without batches."""
        if self.batch_kernels is None or self.batch_counts is None:
            return None
        return list(leave_one_batch_out(self.batch_kernels, self.batch_counts))

    @property
    def kind(self) -> str:
        return str(self.info["kind"])

    def description(self) -> str:
        """'analytic', or 'monte-carlo (N samples)'."""
        if self.kind == "analytic":
            return "analytic"
        return f"monte-carlo ({self.info['mc_samples']} samples)"


def resolve_kernel_kind(kind: str, model: nn.Module) -> Literal["analytic", "mc"]:
    """What a kernel setting means for `model`: 'auto' is analytic for a ReLU FCN and Monte Carlo
    otherwise.

    Args:
        kind: 'auto', 'analytic' or 'mc'.
        model: the network whose prior the kernel is of.

    Returns:
        'analytic' or 'mc'; a VolumeError for an unknown kind or 'analytic' on a non-FCN.
    """
    if kind not in KERNEL_KINDS:
        raise VolumeError(f"kernel must be one of {', '.join(KERNEL_KINDS)}, got {kind!r}")
    if kind == "auto":
        return "analytic" if isinstance(model, FCN) else "mc"
    if kind == "analytic" and not isinstance(model, FCN):
        raise VolumeError(f"kernel 'analytic' needs an fcn model, got {type(model).__name__} "
                          "(use 'mc' or 'auto')")
    return "analytic" if kind == "analytic" else "mc"


def select_kernel(
    model: nn.Module,
    x: Any,
    kind: KernelKind = "auto",
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
) -> NNGPKernel:
    """The one place the NNGP kernel of a model's prior is chosen and computed.

    Args:
        model: a flatvol model carrying its prior (its weights are not used).
        x: inputs, (n, *input_shape).
        kind: 'analytic' (ReLU FCN arccos kernel), 'mc' (Monte-Carlo over `mc_samples` inits
            seeded by `mc_seed`, any model with .features) or 'auto' (analytic for an FCN).
        mc_samples: number of Monte-Carlo prior draws (kind 'mc'); a count whose kernel must
            be singular (draws x feature width + 1 < n) is refused. 'auto' doubles the draws
            until log10 V of `probe_labels` agrees within `mc_tolerance` between two
            independent halves (flatvol.volume.mc_convergence), refused if it never does.
        mc_seed: seed of the Monte-Carlo draws.
        device: torch device the Monte-Carlo features are computed on.
        progress: show the Monte-Carlo progress (see flatvol.progress).
        mc_batches: keep the kernels of this many batches of draws (>= 2) for a jackknife
            error, unless they would take more than MAX_BATCH_KERNEL_BYTES; 0 keeps none.
        mc_tolerance: with 'auto', the log10 V agreement required.
        mc_max_samples: with 'auto', the most draws tried.
        probe_labels: with 'auto', the labels of x whose log10 V is checked (y on S u E).
        probe_estimator: with 'auto', the volume estimator of the check.
        probe_options: with 'auto', that estimator's options (as the measure uses them).
        mc_batchnorm: how BatchNorm normalizes in the Monte-Carlo draws: 'eval' (reset
            statistics, the authors' code) or 'batch' (the statistics of all of x);
            flatvol.volume.mc_kernel.BATCHNORM_MODES.
        mc_checkpoint: with 'auto', a file keeping the check's draws so that a killed or
            refused check resumes (flatvol.volume.mc_checkpoint); None keeps nothing.

    Returns:
        The kernel (float64, contiguous) with its info (and its batches, if kept).

    Raises:
        VolumeError: an unknown kind, a rank-deficient count, 'auto' without probe labels or
            not converged within mc_max_samples.
    """
    start = time.perf_counter()
    check_batchnorm_mode(mc_batchnorm)
    if resolve_kernel_kind(kind, model) == "analytic":
        matrix = fcn_kernel(model, x)
        info: dict[str, Any] = {"kind": "analytic"}
        batches: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
    else:
        n = int(to_numpy(x).shape[0])
        size = mc_batches * n * n * 8
        least = min(MC_START_SAMPLES, mc_max_samples) if mc_samples == "auto" else mc_samples
        keep = bool(mc_batches) and mc_batches <= least and size <= MAX_BATCH_KERNEL_BYTES
        check = None
        if mc_samples == "auto":
            if probe_labels is None:
                raise VolumeError("mc_samples 'auto' needs probe labels (y on S u E) for its "
                                  "convergence check")
            mc, check = converged_mc_kernel(
                model, x, probe_labels, estimator=probe_estimator,
                estimator_options=probe_options, tolerance=mc_tolerance,
                max_samples=mc_max_samples, seed=mc_seed, device=device, progress=progress,
                n_batches=mc_batches if keep else 0, batchnorm=mc_batchnorm,
                checkpoint=mc_checkpoint)
        else:
            if isinstance(mc_samples, str) or mc_samples < 2:
                raise VolumeError(f"mc_samples must be an integer >= 2 or 'auto', got "
                                  f"{mc_samples!r}")
            check_full_rank(mc_samples, FeatureDraws(model, x[:1]).width, n)
            mc = mc_nngp_kernel(model, x, mc_samples, seed=mc_seed, device=device,
                                progress=progress, n_batches=mc_batches if keep else 0,
                                batchnorm=mc_batchnorm)
        matrix, batches = mc.kernel, (mc.batch_kernels, mc.batch_counts)
        info = {"kind": "monte-carlo", "mc_samples": mc.n_samples, "mc_seed": mc.seed,
                "batchnorm": mc_batchnorm,
                "width": mc.width, "rank_bound": mc.n_samples * mc.width + 1,
                "max_stderr": float(np.max(mc.stderr))}
        if check is not None:
            info["mc_convergence"] = check.to_info()
        if mc_batches:
            info["mc_batches"] = mc_batches if keep else 0
            if not keep:
                info["mc_error"] = (
                    f"no error bar: {least} draws make fewer than {mc_batches} batches"
                    if mc_batches > least else
                    f"no error bar: {mc_batches} batch kernels of {n} points would take "
                    f"{size / 2**30:.1f} GiB")
    info.update(n=int(matrix.shape[0]), seconds=round(time.perf_counter() - start, 3))
    return NNGPKernel(np.ascontiguousarray(matrix, dtype=np.float64), info, *batches)


def prior_kernel(
    arch: str,
    x: Any,
    prior: Prior,
    kind: KernelKind = "auto",
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
) -> NNGPKernel:
    """The NNGP kernel of an architecture's prior on inputs x (e.g. S u E, S first).

    Args:
        arch: a model spec such as 'fcn:40,40' (flatvol.models.build_model).
        x: inputs, (n, *input_shape).
        prior: the weight and bias variances.
        kind: 'analytic', 'mc' or 'auto', as in `select_kernel`.
        mc_samples: Monte-Carlo prior draws, as in `select_kernel`.
        mc_seed: seed of the draws; the model is also built with it.
        device: torch device of the Monte-Carlo features.
        progress: show the Monte-Carlo progress.
        mc_batches: batch kernels to keep for a jackknife error, as in `select_kernel`.
        mc_tolerance: with mc_samples 'auto', as in `select_kernel`.
        mc_max_samples: with mc_samples 'auto', as in `select_kernel`.
        probe_labels: with mc_samples 'auto', as in `select_kernel`.
        probe_estimator: with mc_samples 'auto', as in `select_kernel`.
        probe_options: with mc_samples 'auto', as in `select_kernel`.
        mc_batchnorm: BatchNorm in the Monte-Carlo draws, as in `select_kernel`.
        mc_checkpoint: the convergence check's file of draws, as in `select_kernel`.

    Returns:
        The kernel with its info.
    """
    shape = tuple(to_numpy(x).shape[1:])
    model = build_model(arch, shape, prior, seed=mc_seed)
    return select_kernel(model, x, kind, mc_samples=mc_samples, mc_seed=mc_seed, device=device,
                         progress=progress, mc_batches=mc_batches, mc_tolerance=mc_tolerance,
                         mc_max_samples=mc_max_samples, probe_labels=probe_labels,
                         probe_estimator=probe_estimator, probe_options=probe_options,
                         mc_batchnorm=mc_batchnorm, mc_checkpoint=mc_checkpoint)


def model_kernel(
    model: nn.Module,
    x: Any,
    *,
    mc_samples: int = 100,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[np.ndarray, str]:
    """The NNGP kernel of a model's prior on x: analytic for FCNs, Monte-Carlo otherwise.

    Returns (kernel, kind) with kind 'analytic' or 'monte-carlo' (see select_kernel).

    Args:
        model: The network whose prior kernel is computed.
        x: Inputs, shape (n, ...).
        mc_samples: Parameter draws for the Monte-Carlo kernel.
        seed: Seed of the Monte-Carlo draws.
        device: Device the Monte-Carlo draws run on.
        progress: Whether to show a progress bar.

    Returns:
        A pair (kernel, kind): the float64 (n, n) kernel and 'analytic' or 'monte-carlo'.
    """
    kernel = select_kernel(model, x, "auto", mc_samples=mc_samples, mc_seed=seed,
                           device=device, progress=progress)
    return kernel.matrix, kernel.kind
