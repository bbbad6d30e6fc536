"""The Monte-Carlo NNGP kernel of a flatvol model's prior from its penultimate features.

K = sigma_w2 / width * E[Phi Phi^T] + sigma_b2 over random initializations, Phi = the features
feeding the Linear readout; the readout's prior is integrated exactly, so this estimator has a
lower variance than sampling the outputs (flatvol.volume.output_kernel, for any model).
`flatvol.volume.kernels.prior_kernel` computes it as the kind 'mc' (the kind registry), and
flatvol.volume.mc_convergence chooses the number of draws.

Draws are batched: `FeatureDraws` redraws the model's parameters with its own initializer
`draws_per_pass` times, stacks them, and runs all those networks in one forward pass with
torch.func (functional_call under vmap); the Gram matrices are streamed into float64 sums, so
memory stays O(n^2) plus one pass of features. Networks run in eval mode. How their BatchNorm
normalizes is `batchnorm` (BATCHNORM_MODES, docs/VOLUME.md): 'eval' (the default) uses the
running statistics its reset sets (mean 0, variance 1), as in the authors' code; 'batch' uses
the statistics of all n inputs in one pass, as the network normalizes in training. Either way
features do not depend on how inputs are split and no module state is written.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from flatvol.errors import VolumeError
from flatvol.models import Prior, init_from_prior_
from flatvol.progress import track
from flatvol.volume._numerics import to_numpy

# How BatchNorm normalizes in a random network of the prior (the names: flatvol.volume_settings):
# 'eval': the running statistics as reset (mean 0, variance 1), i.e. h / sqrt(1 + eps): the
#   authors' code. A deep ResNet is then an unnormalized residual net: its features grow by
#   orders of magnitude at random from draw to draw and all inputs look alike (bench/RESULTS.md).
# 'batch': the mean and variance over all the kernel's inputs (S u E) in one pass, as BatchNorm
#   normalizes while the network trains.
from flatvol.volume_settings import (  # noqa: F401  BATCHNORM_MODES, BatchNormMode: re-exported
    BATCHNORM_MODES,
    DEFAULT_BATCHNORM,
    BatchNormMode,
    check_batchnorm_mode,
)

# Networks per vmapped forward pass on CUDA (their stacked parameters are held at once). On CPU
# draws run one at a time: vmap turns convolutions into slower grouped ones there (ResNet-50 of
# width 8 on 700 CIFAR-size inputs, 1 thread: 2.7 s per draw alone, 4.8 s per draw in fours).
DEFAULT_DRAWS_PER_PASS = 8


def draws_per_pass_for(device: str | torch.device, draws_per_pass: int | None) -> int:
    """`draws_per_pass`, or when None the default for `device` (8 on CUDA, 1 elsewhere).

    Args:
        device: Device the draws run on.
        draws_per_pass: An explicit count, or None.

    Returns:
        Networks per forward pass.
    """
    if draws_per_pass is not None:
        return int(draws_per_pass)
    return DEFAULT_DRAWS_PER_PASS if torch.device(device).type == "cuda" else 1


@dataclass(frozen=True)
class MCKernel:
    """Monte-Carlo NNGP kernel: mean over `n_samples` inits, with its elementwise standard error."""

    kernel: np.ndarray  # (n, n) float64
    stderr: np.ndarray  # (n, n) float64, sample std / sqrt(n_samples)
    n_samples: int
    width: int
    seed: int
    # (n_batches, n, n) float64: the kernel of each batch of draws, for a jackknife error
    # (flatvol.volume.output_kernel.leave_one_batch_out); None unless n_batches was given.
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


class _FeatureModule(nn.Module):
    """`features(net, x)` as a module's forward, so torch.func.functional_call can swap in
    stacked parameters (named 'net.<name>')."""

    def __init__(self, net: nn.Module, features: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.net = net
        self.features_fn = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_fn(self.net, x)


class FeatureDraws:
    """A stream of random initializations of a model and the Gram matrices of their features.

    `grams(count)` yields Phi Phi^T (float64, (n, n)) for the next `count` draws in draw order;
    draw i always uses the same random numbers whatever `draws_per_pass` is, so batching changes
    the kernel only by float rounding. `kernel(total, count)` turns a sum of Grams into
    sigma_w2 / width * mean + sigma_b2.

    Args:
        model: The network (deep-copied, never modified), with `.prior` unless `prior` is given.
        x: Inputs, shape (n, ...).
        prior: Prior of the redraws (default `model.prior`).
        reinit: Function redrawing a model's parameters from a generator (default
            init_from_prior_).
        features: Function giving the penultimate features (default `model.features`).
        seed: Seed of the parameter draws.
        batch_size: Inputs per forward pass.
        device: Device the draws run on.
        draws_per_pass: Networks per vmapped forward pass; 1 runs them one at a time; None:
            `draws_per_pass_for(device)`.
        batchnorm: How BatchNorm normalizes (BATCHNORM_MODES); with 'batch' all n inputs go
            through in one pass whatever `batch_size` is.

    Raises:
        VolumeError: If the model, prior or inputs cannot give a kernel.
    """

    def __init__(self, model: nn.Module, x: Any, *, prior: Prior | None = None,
                 reinit: Callable[[nn.Module, torch.Generator], None] | None = None,
                 features: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
                 seed: int = 0, batch_size: int = 512, device: str | torch.device = "cpu",
                 draws_per_pass: int | None = None, batchnorm: str = DEFAULT_BATCHNORM):
        prior = prior or getattr(model, "prior", None)
        if prior is None:
            raise VolumeError(f"{type(model).__name__} has no .prior; pass prior=Prior(...), or "
                              "use flatvol.volume_of(model, x_S, y_S, x_E) for any model")
        draws_per_pass = draws_per_pass_for(device, draws_per_pass)
        if draws_per_pass < 1:
            raise VolumeError(f"draws_per_pass must be >= 1, got {draws_per_pass}")
        check_batchnorm_mode(batchnorm, "batchnorm")
        self.prior = prior
        self.reinit = reinit or _default_reinit(prior)
        self.features = features or _default_features
        self.device = torch.device(device)
        self.x = torch.as_tensor(to_numpy(x), dtype=torch.float32)
        self.n = int(self.x.shape[0])
        self.batchnorm = batchnorm
        # Batch statistics are those of all n inputs: one pass, or the split would change them.
        self.batch_size = max(self.n, 1) if batchnorm == "batch" else int(batch_size)
        self.draws_per_pass = int(draws_per_pass)
        self.net = copy.deepcopy(model).to(self.device).eval()
        if batchnorm == "batch":
            # Without running statistics BatchNorm uses the batch's, even in eval mode, and
            # writes no state (so the vmapped pass is allowed).
            torch.func.replace_all_batch_norm_modules_(self.net)
        # Image batches one network at a time run channels-last on CPU: oneDNN's convolutions
        # are about 1.6x faster so (ResNet-50 of width 8, bench/bench_mc_draws.py); the
        # features change only by float rounding.
        self.channels_last = (self.x.dim() == 4 and self.device.type == "cpu"
                              and self.draws_per_pass == 1)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.module = _FeatureModule(self.net, self.features)
        self.generator = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():  # the width, from the copy's current weights (no draw is used)
            probe = self.x[: min(2, self.n)].to(self.device)  # batch statistics need 2 points
            self.width = int(self.features(self.net, probe).reshape(len(probe), -1).shape[1])

    def _inputs(self, i: int) -> torch.Tensor:
        xb = self.x[i : i + self.batch_size].to(self.device)
        return xb.contiguous(memory_format=torch.channels_last) if self.channels_last else xb

    def _one(self) -> torch.Tensor:
        self.reinit(self.net, self.generator)
        n, size = self.n, self.batch_size
        return torch.cat([self.features(self.net, self._inputs(i)).reshape(min(size, n - i), -1)
                          for i in range(0, n, size)])

    def _stacked(self, count: int) -> torch.Tensor:
        states = []
        for _ in range(count):  # the same draws, in the same order, as one at a time
            self.reinit(self.net, self.generator)
            states.append({name: t.detach().clone() for name, t in
                           [*self.module.named_parameters(), *self.module.named_buffers()]
                           if t.is_floating_point()})
        stacked = {name: torch.stack([s[name] for s in states]) for name in states[0]}

        def run(state: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self.module, state, (xb,))

        batched = vmap(run, in_dims=(0, None))
        n, size = self.n, self.batch_size
        return torch.cat([batched(stacked, self.x[i : i + size].to(self.device))
                          .reshape(count, min(size, n - i), -1) for i in range(0, n, size)],
                         dim=1)

    @torch.no_grad()
    def grams(self, count: int) -> Iterator[torch.Tensor]:
        """The Gram matrices Phi Phi^T of the next `count` draws, float64 (n, n), in order.

        Args:
            count: Number of draws.

        Returns:
            An iterator over `count` float64 (n, n) tensors on the draws' device.
        """
        done = 0
        while done < count:
            size = min(self.draws_per_pass, count - done)
            phis = [self._one()] if size == 1 else list(self._stacked(size))
            for phi in phis:
                phi = phi.to(torch.float64)
                yield phi @ phi.T
            done += size

    def rank_bound(self, samples: int) -> int:
        """The most rank a kernel of `samples` draws can have: samples x width, +1 for the
        readout bias's sigma_b2 (flatvol.volume.mc_convergence.rank_bound)."""
        return int(samples) * self.width + 1

    def kernel(self, total: torch.Tensor, count: int | torch.Tensor) -> np.ndarray:
        """sigma_w2 / width * total / count + sigma_b2 as a symmetric float64 array.

        Args:
            total: A sum of `count` Gram matrices (or a stack of sums, with counts to match).
            count: Draws in the sum.

        Returns:
            The kernel(s), float64 numpy.
        """
        scaled = self.prior.sigma_w2 / self.width * (total / count) + self.prior.sigma_b2
        out = scaled.cpu().numpy()
        return 0.5 * (out + np.swapaxes(out, -1, -2))


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
    draws_per_pass: int | None = None,
    batchnorm: str = DEFAULT_BATCHNORM,
) -> MCKernel:
    """Monte-Carlo NNGP kernel: mean over inits of sigma_w2/width Phi Phi^T + sigma_b2.

    Phi = features(model, x) are the penultimate features (default `model.features`), and each
    init redraws the parameters with `reinit(model_copy, generator)` (default: init_from_prior_
    with `prior`, default `model.prior`); see `FeatureDraws` (batched draws, the BatchNorm
    convention). Sums are accumulated in float64 on `device` (memory O(n^2)); the same seed gives
    the same kernel. With `n_batches` >= 2 the kernel of each batch of consecutive draws is kept
    too (memory O(n_batches n^2)), for a jackknife error; the kernel itself is the same with or
    without them. The count is taken as given: flatvol.volume.mc_convergence chooses one.

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
        draws_per_pass: Networks per vmapped forward pass (1: one at a time; None: 8 on CUDA,
            1 elsewhere).
        batchnorm: How BatchNorm normalizes: 'eval' (reset statistics) or 'batch' (those of
            all of x), see BATCHNORM_MODES.

    Returns:
        The MCKernel: the kernel estimate with its elementwise standard error.

    Raises:
        VolumeError: If the model, prior or inputs cannot give a kernel.
    """
    if n_samples < 2:
        raise VolumeError(f"n_samples must be >= 2 (for a standard error), got {n_samples}")
    if n_batches == 1 or n_batches < 0 or n_batches > n_samples:
        raise VolumeError(f"n_batches must be 0 or in 2..n_samples={n_samples}, got {n_batches}")
    draws = FeatureDraws(model, x, prior=prior, reinit=reinit, features=features, seed=seed,
                         batch_size=batch_size, device=device, draws_per_pass=draws_per_pass,
                         batchnorm=batchnorm)
    n, device = draws.n, draws.device
    total = torch.zeros((n, n), dtype=torch.float64, device=device)
    total_sq = torch.zeros((n, n), dtype=torch.float64, device=device)
    batch_of = np.arange(n_samples) * n_batches // n_samples if n_batches else None
    batch_totals = (torch.zeros((n_batches, n, n), dtype=torch.float64, device=device)
                    if n_batches else None)
    grams = draws.grams(n_samples)
    for draw in track(range(n_samples), "MC NNGP kernel", enabled=progress, unit="samples"):
        sample = next(grams)
        total += sample
        total_sq += sample * sample
        if batch_totals is not None:  # a separate sum: `total` (the kernel) is unchanged
            batch_totals[int(batch_of[draw])] += sample
    batch_counts = None if batch_of is None else np.bincount(batch_of, minlength=n_batches)
    return summarize(draws, total, total_sq, n_samples, int(seed), batch_totals, batch_counts)


def summarize(draws: FeatureDraws, total: torch.Tensor, total_sq: torch.Tensor, n_samples: int,
              seed: int, batch_totals: torch.Tensor | None = None,
              batch_counts: np.ndarray | None = None) -> MCKernel:
    """The MCKernel of streamed sums: the kernel, its elementwise standard error, and the
    kernels of the batches of draws when their sums were kept.

    Args:
        draws: The stream the Gram matrices came from (its prior and width scale them).
        total: Sum of the `n_samples` Gram matrices.
        total_sq: Sum of their elementwise squares.
        n_samples: Draws summed.
        seed: Seed of the draws (recorded).
        batch_totals: (B, n, n) sums of each batch of draws, or None.
        batch_counts: (B,) draws per batch, with batch_totals.

    Returns:
        The MCKernel.
    """
    scale = draws.prior.sigma_w2 / draws.width
    mean = total / n_samples
    var = (total_sq / n_samples - mean * mean) * n_samples / (n_samples - 1)
    stderr = (scale * torch.sqrt(torch.clamp(var, min=0.0) / n_samples)).cpu().numpy()
    batch_kernels = None
    if batch_totals is not None and batch_counts is not None:
        counts = torch.as_tensor(batch_counts, dtype=torch.float64, device=total.device)
        batch_kernels = draws.kernel(batch_totals, counts[:, None, None])
    return MCKernel(draws.kernel(total, n_samples), stderr, int(n_samples), draws.width,
                    int(seed), batch_kernels, batch_counts)
