"""The Monte-Carlo output kernel of any model: K(x1, x2) = E[f(x1) f(x2)] over its own inits.

As in neural-tangents' `monte_carlo_kernel_fn(init_fn, apply_fn, ...)`: the network is redrawn
by its own initializer (PyTorch's `reset_parameters()` by default, a flatvol model's prior, or any
user function) and the kernel is read off its outputs, so no feature extractor or readout
assumption is needed. The prior is whatever the initializer draws.

Sums are streamed in float64 into `n_batches` round-robin batches (memory (n_batches + 2) n1 n2
floats, independent of the sample count), so any prefix of the draws has near-equal batches:
the batch means give the elementwise error and leave-one-batch-out kernels (the jackknife that
carries the kernel's Monte-Carlo error to log10 V, see flatvol.volume.own_model).
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from flatvol.errors import VolumeError
from flatvol.models import Prior, init_from_prior_
from flatvol.progress import track
from flatvol.volume._numerics import to_numpy

# init(module) or init(module, generator): redraws every parameter of `module` in place.
Initializer = Callable[..., Any]


@dataclass(frozen=True)
class MonteCarloKernel:
    """K(x1, x2) = E[f(x1) f(x2)] over `n_samples` inits, with its batch means for error bars."""

    kernel: np.ndarray  # (n1, n2) float64, the mean over all draws
    stderr: np.ndarray  # (n1, n2) float64, elementwise sample std / sqrt(n_samples)
    batch_means: np.ndarray  # (n_batches, n1, n2) float64, the mean of each batch's draws
    batch_counts: np.ndarray  # (n_batches,) draws per batch
    n_samples: int
    seed: int
    seconds: float
    init: str  # what drew the parameters, e.g. 'reset_parameters()'

    def leave_one_batch_out(self) -> Iterator[np.ndarray]:
        """The kernel without each batch's draws in turn (the jackknife replicates).

        Returns:
            An iterator over n_batches (n1, n2) float64 kernels.
        """
        return leave_one_batch_out(self.batch_means, self.batch_counts)


def leave_one_batch_out(batch_means: np.ndarray, batch_counts: np.ndarray) -> Iterator[np.ndarray]:
    """The mean kernel without each batch's draws in turn (the jackknife replicates).

    Args:
        batch_means: (n_batches, n1, n2), the mean kernel of each batch of draws.
        batch_counts: (n_batches,), the draws in each batch.

    Returns:
        An iterator over n_batches (n1, n2) float64 kernels.
    """
    n_samples = int(np.sum(batch_counts))
    total = np.tensordot(batch_counts, batch_means, axes=1)
    for count, mean in zip(batch_counts, batch_means):
        yield (total - count * mean) / (n_samples - count)


def describe_init(init: Initializer | None, model: nn.Module) -> str:
    """How `init` is named in results: 'reset_parameters()', 'prior (...)' or the function's name.

    Args:
        init: the initializer given to `monte_carlo_kernel` (None: the model's own).
        model: the network.

    Returns:
        A short description.
    """
    if init is not None:
        return getattr(init, "__qualname__", None) or repr(init)
    prior = getattr(model, "prior", None)
    if isinstance(prior, Prior):
        return f"init_from_prior_ (sigma_w2={prior.sigma_w2}, sigma_b2={prior.sigma_b2})"
    return "reset_parameters()"


def default_init(model: nn.Module) -> Callable[[nn.Module, torch.Generator], None]:
    """The model's own initializer: its flatvol prior if it carries one, else PyTorch's
    `reset_parameters()` on every submodule that has it (its default init, e.g. Kaiming-uniform
    weights and fan-in-dependent uniform biases for Linear and Conv).

    Args:
        model: the network.

    Returns:
        init(module, generator), drawing in place.
    """
    prior = getattr(model, "prior", None)
    if isinstance(prior, Prior):
        return lambda module, generator: init_from_prior_(module, prior, generator)

    def reset_all(module: nn.Module, generator: torch.Generator) -> None:
        # reset_parameters() draws from the global RNG, which monte_carlo_kernel seeds and forks.
        for layer in module.modules():
            reset = getattr(layer, "reset_parameters", None)
            if callable(reset):
                reset()

    return reset_all


def as_two_argument_init(init: Initializer) -> Callable[[nn.Module, torch.Generator], None]:
    """`init(module)` or `init(module, generator)` as a two-argument function."""
    try:
        params = [p for p in inspect.signature(init).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    except (TypeError, ValueError):  # a builtin without a signature: assume init(module)
        params = []
    if len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params):
        return init
    return lambda module, generator: init(module)


def network_outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The model's outputs on x, one per input, as float64 (n,); a VolumeError otherwise.

    Args:
        model: the network, already on x's device and in the mode wanted.
        x: inputs (n, ...).
        batch_size: inputs per forward pass.

    Returns:
        The outputs, float64, shape (n,).
    """
    with torch.no_grad():
        out = [model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    first = out[0]
    if first.ndim > 2 or (first.ndim == 2 and first.shape[1] != 1) or first.shape[0] != min(
            batch_size, x.shape[0]):
        raise VolumeError(f"{type(model).__name__} returns outputs of shape "
                          f"{tuple(first.shape)} for {first.shape[0]} inputs; expected one "
                          "output per input, shape (n,) or (n, 1)")
    values = torch.cat([o.reshape(-1) for o in out]).to(torch.float64)
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise VolumeError(f"{type(model).__name__}'s outputs are not finite on {bad} of "
                          f"{values.numel()} inputs")
    return values


def check_redrawn(model: nn.Module, init: Callable[[nn.Module, torch.Generator], None],
                  generator: torch.Generator) -> None:
    """Refuse any floating-point parameter or buffer that `init` does not write.

    Each is filled with NaN first; one still holding a NaN after `init` would carry its trained
    value (a LayerNorm gain, BatchNorm running statistics) into the prior. Integer buffers (e.g.
    BatchNorm's batch counter) are not checked. A deterministic reset (LayerNorm gain to 1) counts
    as drawn: it is a point-mass prior.

    Args:
        model: the (copied) network; its values are overwritten.
        init: the initializer.
        generator: the generator `init` receives.
    """
    tensors = [("parameter", name, t) for name, t in model.named_parameters()]
    tensors += [("buffer", name, t) for name, t in model.named_buffers()]
    tensors = [entry for entry in tensors if entry[2].is_floating_point()]
    with torch.no_grad():
        for _, _, tensor in tensors:
            tensor.fill_(math.nan)
    init(model, generator)
    for what, name, tensor in tensors:
        if bool(torch.isnan(tensor).any()):
            raise VolumeError(f"{what} {name} is not redrawn by the initializer (a trained "
                              "LayerNorm gain? a buffer?); pass init= that redraws it")


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """A context in which the global torch RNG (CPU, and `device` if CUDA) is seeded with `seed`
    and restored on exit, so the caller's random stream is untouched."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def monte_carlo_kernel(
    model: nn.Module,
    x1: Any,
    x2: Any = None,
    *,
    init: Initializer | None = None,
    n_samples: int | Sequence[int] = 1000,
    seed: int = 0,
    n_batches: int = 10,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> MonteCarloKernel | list[MonteCarloKernel]:
    """Monte-Carlo output kernel K(x1, x2) = E[f(x1) f(x2)] over the model's own random inits.

    The model is deep-copied (its weights are never changed) and evaluated in eval mode (no
    dropout; BatchNorm uses the running statistics its initializer resets, so outputs do not
    depend on batching). Every floating-point parameter and buffer must be written by the
    initializer (see `check_redrawn`). The global RNG is seeded inside a fork, so the caller's
    random stream is untouched and the same seed gives the same kernel.

    Args:
        model: any torch module with one output per input ((n,) or (n, 1)).
        x1: inputs (n1, ...), tensor or numpy array.
        x2: inputs (n2, ...) for a cross-kernel; None for K(x1, x1).
        init: `init(module)` or `init(module, generator)` redrawing every parameter in place;
            None for the model's own (its flatvol prior, else `reset_parameters()` everywhere).
        n_samples: number of inits, or an increasing list of counts to show convergence (the
            kernels then share their draws: each is a prefix of the next).
        seed: seed of the draws.
        n_batches: batches the draws are dealt into (round robin) for error bars; >= 2.
        batch_size: inputs per forward pass.
        device: torch device the copies run on.
        progress: show progress (flatvol.progress).

    Returns:
        A MonteCarloKernel, or one per count when `n_samples` is a list.

    Raises:
        VolumeError: bad counts, a model without one output per input, non-finite outputs, or
            a parameter/buffer the initializer does not redraw.
    """
    counts = [int(n_samples)] if isinstance(n_samples, (int, np.integer)) else \
        [int(c) for c in n_samples]
    if not counts or counts != sorted(set(counts)):
        raise VolumeError(f"n_samples: expected a count or an increasing list, got {n_samples}")
    if n_batches < 2 or counts[0] < n_batches:
        raise VolumeError(f"n_samples must be >= n_batches >= 2, got n_samples={counts[0]}, "
                          f"n_batches={n_batches}")
    device = torch.device(device)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    xs1 = torch.as_tensor(to_numpy(x1), dtype=dtype).to(device)
    xs2 = None if x2 is None else torch.as_tensor(to_numpy(x2), dtype=dtype).to(device)
    n1, n2 = xs1.shape[0], (xs1 if xs2 is None else xs2).shape[0]
    description = describe_init(init, model)
    draw = as_two_argument_init(init) if init is not None else default_init(model)
    net = copy.deepcopy(model).to(device).eval()
    generator = torch.Generator().manual_seed(int(seed))
    sums = torch.zeros((n_batches, n1, n2), dtype=torch.float64, device=device)
    total_sq = torch.zeros((n1, n2), dtype=torch.float64, device=device)
    results: list[MonteCarloKernel] = []
    start = time.perf_counter()
    with seeded_rng(int(seed), device):
        check_redrawn(net, draw, generator)
        for i in track(range(counts[-1]), "Monte-Carlo kernel", enabled=progress,
                       unit="inits"):
            if i:  # the check above drew the first init
                draw(net, generator)
            f1 = network_outputs(net, xs1, batch_size)
            f2 = f1 if xs2 is None else network_outputs(net, xs2, batch_size)
            sample = torch.outer(f1, f2)
            sums[i % n_batches] += sample
            total_sq += sample * sample
            if i + 1 in counts:
                results.append(_snapshot(sums, total_sq, i + 1, int(seed),
                                         time.perf_counter() - start, description))
    return results[0] if isinstance(n_samples, (int, np.integer)) else results


def _snapshot(sums: torch.Tensor, total_sq: torch.Tensor, n: int, seed: int, seconds: float,
              init: str) -> MonteCarloKernel:
    n_batches = sums.shape[0]
    batch_counts = np.array([n // n_batches + (b < n % n_batches) for b in range(n_batches)],
                            dtype=np.float64)
    sums_np = sums.cpu().numpy()
    mean = sums_np.sum(axis=0) / n
    variance = np.clip(total_sq.cpu().numpy() / n - mean * mean, 0.0, None) * n / (n - 1)
    return MonteCarloKernel(mean, np.sqrt(variance / n), sums_np / batch_counts[:, None, None],
                            batch_counts, n, seed, round(seconds, 3), init)
