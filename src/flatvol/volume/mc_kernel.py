"""The Monte-Carlo NNGP kernel of a flatvol model's prior from its penultimate features.

K = sigma_w2 / width * E[Phi Phi^T] + sigma_b2 over random initializations, Phi = the features
feeding the Linear readout; the readout's prior is integrated exactly, so this estimator has a
lower variance than sampling the outputs (flatvol.volume.output_kernel, for any model).
`flatvol.volume.kernels.select_kernel` chooses between it and the analytic kernel.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from flatvol.errors import VolumeError
from flatvol.models import Prior, init_from_prior_
from flatvol.progress import track
from flatvol.volume._numerics import to_numpy


@dataclass(frozen=True)
class MCKernel:
    """Monte-Carlo NNGP kernel: mean over `n_samples` inits, with its elementwise standard error."""

    kernel: np.ndarray  # (n, n) float64
    stderr: np.ndarray  # (n, n) float64, sample std / sqrt(n_samples)
    n_samples: int
    width: int
    seed: int
    # (n_batches, n, n) float64: the kernel of each batch of consecutive draws, for a jackknife
    # error (flatvol.volume.output_kernel.leave_one_batch_out); None unless n_batches was given.
    batch_kernels: np.ndarray | None = None
    batch_counts: np.ndarray | None = None  # (n_batches,) draws per batch


def _default_reinit(prior: Prior) -> Callable[[nn.Module, torch.Generator], None]:
    def reinit(module: nn.Module, generator: torch.Generator) -> None:
        init_from_prior_(module, prior, generator)

    return reinit


def _default_features(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not hasattr(module, "features"):
        raise VolumeError(
            f"{type(module).__name__} has no .features(x); pass features=callable(module, x), "
            "or use flatvol.volume_of for any model"
        )
    return module.features(x)


@torch.no_grad()
def mc_nngp_kernel(
    model: nn.Module,
    x: Any,
    n_samples: int = 100,
    *,
    prior: Prior | None = None,
    reinit: Callable[[nn.Module, torch.Generator], None] | None = None,
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    progress: bool = True,
    n_batches: int = 0,
) -> MCKernel:
    """Monte-Carlo NNGP kernel: mean over inits of sigma_w2/width Phi Phi^T + sigma_b2.

    Phi = features(model, x) are the penultimate features (default `model.features`), and each
    init redraws the parameters with `reinit(model_copy, generator)` (default: init_from_prior_
    with `prior`, default `model.prior`). The model is deep-copied first, so a trained model is
    never overwritten; the copy runs in eval mode (BatchNorm uses its reset running statistics,
    so features do not depend on how x is batched). Sums are accumulated in float64 on `device`
    (memory O(n^2)); the same seed gives the same kernel. With `n_batches` >= 2 the kernel of
    each batch of consecutive draws is kept too (memory O(n_batches n^2)), for a jackknife error;
    the kernel itself is the same with or without them.

    Args:
        model: The network whose prior kernel is estimated (deep-copied, never modified).
        x: Inputs, shape (n, ...).
        n_samples: Number of parameter draws averaged.
        prior: Prior of the redraws (default `model.prior`).
        reinit: Function redrawing a model's parameters from a generator (default
            init_from_prior_).
        features: Function giving the penultimate features (default `model.features`).
        seed: Seed of the parameter draws.
        batch_size: Inputs per forward pass.
        device: Device the draws run on.
        progress: Whether to show a progress bar.
        n_batches: With 2 or more, also keep the kernel of each of that many batches of
            consecutive draws (for a jackknife error); 0 keeps none.

    Returns:
        The MCKernel: the kernel estimate with its elementwise standard error.

    Raises:
        VolumeError: If the model, prior or inputs cannot give a kernel.
    """
    if n_samples < 2:
        raise VolumeError(f"n_samples must be >= 2 (for a standard error), got {n_samples}")
    prior = prior or getattr(model, "prior", None)
    if prior is None:
        raise VolumeError(f"{type(model).__name__} has no .prior; pass prior=Prior(...), or use "
                          "flatvol.volume_of(model, x_S, y_S, x_E) for any model")
    reinit = reinit or _default_reinit(prior)
    features = features or _default_features
    device = torch.device(device)
    xs = torch.as_tensor(to_numpy(x), dtype=torch.float32)
    n = xs.shape[0]
    net = copy.deepcopy(model).to(device).eval()
    generator = torch.Generator().manual_seed(int(seed))
    total = torch.zeros((n, n), dtype=torch.float64, device=device)
    total_sq = torch.zeros((n, n), dtype=torch.float64, device=device)
    if n_batches == 1 or n_batches < 0 or n_batches > n_samples:
        raise VolumeError(f"n_batches must be 0 or in 2..n_samples={n_samples}, got {n_batches}")
    batch_of = np.arange(n_samples) * n_batches // n_samples if n_batches else None
    batch_totals = (torch.zeros((n_batches, n, n), dtype=torch.float64, device=device)
                    if n_batches else None)
    width = 0
    for draw in track(range(n_samples), "MC NNGP kernel", enabled=progress, unit="samples"):
        reinit(net, generator)
        phi = torch.cat(
            [features(net, xs[i : i + batch_size].to(device)).reshape(min(batch_size, n - i), -1)
             for i in range(0, n, batch_size)]
        ).to(torch.float64)
        width = phi.shape[1]
        sample = phi @ phi.T
        total += sample
        total_sq += sample * sample
        if batch_totals is not None:  # a separate sum: `total` (the kernel) is unchanged
            batch_totals[int(batch_of[draw])] += sample
    scale = prior.sigma_w2 / width
    mean = total / n_samples
    var = (total_sq / n_samples - mean * mean) * n_samples / (n_samples - 1)
    kernel = (scale * mean + prior.sigma_b2).cpu().numpy()
    stderr = (scale * torch.sqrt(torch.clamp(var, min=0.0) / n_samples)).cpu().numpy()
    batch_kernels = batch_counts = None
    if batch_totals is not None:
        batch_counts = np.bincount(batch_of, minlength=n_batches)
        counts = torch.as_tensor(batch_counts, dtype=torch.float64, device=device)
        batches = (scale * batch_totals / counts[:, None, None] + prior.sigma_b2).cpu().numpy()
        batch_kernels = 0.5 * (batches + batches.transpose(0, 2, 1))
    return MCKernel(0.5 * (kernel + kernel.T), stderr, int(n_samples), int(width), int(seed),
                    batch_kernels, batch_counts)
