"""The Monte-Carlo output kernel of any model: K(x1, x2) = E[f(x1) f(x2)] over its own inits.

As in neural-tangents' `monte_carlo_kernel_fn(init_fn, apply_fn, ...)`: the network is redrawn
by its own initializer (PyTorch's `reset_parameters()` by default, a flatvol model's prior, or any
user function) and the kernel is read off its outputs, so no feature extractor or readout
assumption is needed. The prior is whatever the initializer draws.

Sums are streamed in float64 into `n_batches` round-robin batches (memory (n_batches + 2) n1 n2
floats, independent of the sample count), so any prefix of the draws has near-equal batches:
the batch means give the elementwise error and leave-one-batch-out kernels (the jackknife that
carries the kernel's Monte-Carlo error to log10 V, see flatvol.volume.own_model).

A model with K outputs: in the NNGP limit they are K independent GPs with one kernel (the
readout's weights are independent per output), which the K-class volume assumes
(flatvol.volume.multiclass). Each draw's K outputs are identically distributed, so the kernel of
one output is estimated from all of them, F F^T / K per draw (F the n x K outputs): unbiased,
and K times the rank of one output's. Whether the outputs do share a kernel and are uncorrelated
is tested on the same draws (flatvol.volume.shared_outputs), with a stated false-alarm rate.
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
from flatvol.models import Prior, init_from_prior_, model_outputs
from flatvol.progress import track
from flatvol.volume._numerics import to_numpy
from flatvol.volume.estimate import DEFAULT_ESTIMATOR
from flatvol.volume.mc_convergence import (
    DEFAULT_MC_MAX_SAMPLES,
    DEFAULT_MC_TOLERANCE,
    MC_START_SAMPLES,
    MCConvergence,
    check_mc_settings,
    converge_draws,
)
from flatvol.volume.shared_outputs import SharedOutputCheck, output_statistics, shared_output_check

# init(module) or init(module, generator): redraws every parameter of `module` in place.
Initializer = Callable[..., Any]

@dataclass(frozen=True)
class MonteCarloKernel:
    """K(x1, x2) = E[f(x1) f(x2)] over `n_samples` inits, with its batch means for error bars.

    For a model with K outputs, the kernel of one output, pooled over the K (module doc); the
    batch means and the elementwise error are those of the per-draw pooled F F^T / K.
    """

    kernel: np.ndarray  # (n1, n2) float64, the mean over all draws
    stderr: np.ndarray  # (n1, n2) float64, elementwise sample std / sqrt(n_samples)
    batch_means: np.ndarray  # (n_batches, n1, n2) float64, the mean of each batch's draws
    batch_counts: np.ndarray  # (n_batches,) draws per batch
    n_samples: int
    seed: int
    seconds: float
    init: str  # what drew the parameters, e.g. 'reset_parameters()'
    n_outputs: int = 1  # K: the outputs each draw gives (1 for one logit)
    # K >= 2: whether the outputs share a kernel and are uncorrelated (None for one output)
    shared_outputs: SharedOutputCheck | None = None

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
    """How `init` is named in results: 'reset_parameters()', 'Model.reset_parameters()' (a model
    class's own), 'init_from_prior_ (...)' or the function's name.

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
    if callable(getattr(model, "reset_parameters", None)):
        return f"{type(model).__name__}.reset_parameters()"
    return "reset_parameters()"


def reset_with_own_initializers(module: nn.Module) -> None:
    """Redraw `module` with PyTorch's `reset_parameters()`, each subtree by its own initializer.

    A module that defines `reset_parameters()` is reset by it alone and its submodules are left
    to it: a model class's own initializer (weights scaled, a layer zeroed) is the prior its
    author meant, and resetting its layers after it (parent first, as walking `modules()` does)
    would silently replace it by PyTorch's per-layer defaults. A module without one (Sequential,
    a plain container class) is descended into, down to the layers (Linear, Conv, norms) that
    have theirs, in `modules()` order, each shared module once.

    Args:
        module: the network to redraw in place (from the global RNG, as reset_parameters does).
    """
    seen: set[int] = set()

    def reset(node: nn.Module) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        own = getattr(node, "reset_parameters", None)
        if callable(own):
            own()
            return
        for child in node.children():
            reset(child)

    reset(module)


def default_init(model: nn.Module) -> Callable[[nn.Module, torch.Generator], None]:
    """The model's own initializer: its flatvol prior if it carries one, else PyTorch's
    `reset_parameters()` (`reset_with_own_initializers`): the model's own if its class defines
    one, else each layer's default (e.g. Kaiming-uniform weights and fan-in-dependent uniform
    biases for Linear and Conv).

    Args:
        model: the network.

    Returns:
        init(module, generator), drawing in place.
    """
    prior = getattr(model, "prior", None)
    if isinstance(prior, Prior):
        return lambda module, generator: init_from_prior_(module, prior, generator)
    # reset_parameters() draws from the global RNG, which OutputDraws seeds and keeps apart.
    return lambda module, generator: reset_with_own_initializers(module)


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
    """The model's outputs on x as float64 (n, K): K = 1 for one logit ((n,) or (n, 1)).

    Args:
        model: the network, already on x's device and in the mode wanted.
        x: inputs (n, ...).
        batch_size: inputs per forward pass.

    Returns:
        The outputs, float64, shape (n, K).

    Raises:
        OutputError: outputs that are not finite or not one logit / K outputs per input
            (flatvol.models.model_outputs).
    """
    values = model_outputs(model, x, batch_size=batch_size, device=x.device)
    return values.reshape(x.shape[0], -1).to(torch.float64)


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


class OutputDraws:
    """A stream of the model's own random inits and the outer products of their outputs.

    The draw stream of flatvol.volume.mc_convergence's check (as mc_kernel.FeatureDraws is for a
    flatvol model's features): `grams(count)` yields f(x1) f(x2)^T (float64) for the next
    `count` inits in order (with K outputs F1 F2^T / K, the pooled kernel of one output),
    `kernel(total, count)` is the mean of such a sum and `rank_bound(samples)` the most rank a
    mean of `samples` of them can have. With K >= 2 outputs every draw's `output_statistics`
    (of x1) are kept in `statistics`, for `shared_output_check`. The model is
    deep-copied (its weights are never changed) and evaluated in eval mode; every floating-point
    parameter and buffer must be written by the initializer (`check_redrawn`, which makes the
    first draw).

    `reset_parameters()` draws from the global RNG, so the stream keeps its own global RNG
    state: seeded with `seed`, swapped in around each draw and out again, so the caller's random
    stream is untouched, and whatever runs between draws (the check's EP) cannot change them.

    Args:
        model: any torch module with one logit ((n,) or (n, 1)) or K outputs ((n, K)) per
            input.
        x1: inputs (n1, ...), tensor or numpy array.
        x2: inputs (n2, ...) for a cross-kernel; None for K(x1, x1).
        init: `init(module)` or `init(module, generator)`; None for the model's own
            (`default_init`).
        seed: seed of the draws.
        batch_size: inputs per forward pass.
        device: torch device the copy runs on.

    Raises:
        VolumeError: a parameter or buffer the initializer does not redraw.
        OutputError: a model without one logit or K finite outputs per input.
    """

    draws_per_pass = 1

    def __init__(self, model: nn.Module, x1: Any, x2: Any = None, *,
                 init: Initializer | None = None, seed: int = 0, batch_size: int = 1024,
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                     torch.float32)
        self.x = torch.as_tensor(to_numpy(x1), dtype=dtype).to(self.device)
        self.x2 = None if x2 is None else torch.as_tensor(to_numpy(x2), dtype=dtype).to(
            self.device)
        self.n = int(self.x.shape[0])
        self.batch_size = int(batch_size)
        self.description = describe_init(init, model)
        self._draw = as_two_argument_init(init) if init is not None else default_init(model)
        self.net = copy.deepcopy(model).to(self.device).eval()
        self.generator = torch.Generator().manual_seed(int(seed))
        self._cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with seeded_rng(int(seed), self.device):
            check_redrawn(self.net, self._draw, self.generator)  # also the first draw
            self._rng_states = self._global_states()
        # The first draw's outputs tell the output count; its Gram is the first one yielded.
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = self._outputs()
        self.n_outputs = int(self._pending[0].shape[1])
        # each draw's pooled F F^T / K has rank at most K (mc_convergence names it the width)
        self.width = self.n_outputs
        self.statistics: list[torch.Tensor] = []

    def _outputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        f1 = network_outputs(self.net, self.x, self.batch_size)
        return f1, f1 if self.x2 is None else network_outputs(self.net, self.x2, self.batch_size)

    def _global_states(self) -> list[torch.Tensor]:
        return [torch.default_generator.get_state(),
                *(torch.cuda.get_rng_state(index) for index in self._cuda)]

    def _redraw(self) -> None:
        with torch.random.fork_rng(devices=self._cuda):
            torch.default_generator.set_state(self._rng_states[0])
            for index, state in zip(self._cuda, self._rng_states[1:]):
                torch.cuda.set_rng_state(state, index)
            self._draw(self.net, self.generator)
            self._rng_states = self._global_states()

    @torch.no_grad()
    def grams(self, count: int) -> Iterator[torch.Tensor]:
        """f(x1) f(x2)^T of the next `count` inits, float64 (n1, n2), in draw order.

        Args:
            count: Number of draws.

        Returns:
            An iterator over `count` float64 tensors on the draws' device.
        """
        for _ in range(count):
            if self._pending is not None:  # check_redrawn drew it
                (f1, f2), self._pending = self._pending, None
            else:
                self._redraw()
                f1, f2 = self._outputs()
            if self.n_outputs == 1:
                yield torch.outer(f1[:, 0], f2[:, 0])
            else:
                # The K outputs are identically distributed: each f_k f_k^T is an unbiased
                # draw of one output's kernel, so their mean is too (and K times the rank).
                self.statistics.append(output_statistics(f1))
                yield f1 @ f2.T / self.n_outputs

    def kernel(self, total: torch.Tensor, count: int | torch.Tensor) -> np.ndarray:
        """The mean kernel of a sum of `count` draws' outer products.

        Args:
            total: A sum of `count` outer products (or a stack of sums, with counts to match).
            count: Draws in the sum.

        Returns:
            The kernel(s), float64 numpy.
        """
        return (total / count).cpu().numpy()

    def rank_bound(self, samples: int) -> int:
        """The most rank a mean of `samples` draws of rank K (the outputs) can have."""
        return int(samples) * self.n_outputs

    def shared_check(self, draws: int) -> SharedOutputCheck | None:
        """`shared_output_check` of the first `draws` draws; None for one output.

        Args:
            draws: draws made so far to test (a prefix of the stream).

        Returns:
            The check, or None for a model with one output.
        """
        if self.n_outputs == 1:
            return None
        return shared_output_check(torch.stack(self.statistics[:draws]).cpu().numpy())


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
    initializer (see `check_redrawn`). The draws are `OutputDraws`': the global RNG they use is
    their own, so the caller's random stream is untouched and the same seed gives the same
    kernel. The count is taken as given; `converged_output_kernel` chooses one. A model with
    K outputs gives the kernel of one output pooled over the K (module doc), with the
    `shared_output_check` of its draws, which the caller must heed (`volume_of` refuses a
    model that fails it).

    Args:
        model: any torch module with one logit ((n,) or (n, 1)) or K outputs ((n, K)) per
            input.
        x1: inputs (n1, ...), tensor or numpy array.
        x2: inputs (n2, ...) for a cross-kernel; None for K(x1, x1).
        init: `init(module)` or `init(module, generator)` redrawing every parameter in place;
            None for the model's own (its flatvol prior, else its `reset_parameters()`: see
            `default_init`).
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
        VolumeError: bad counts, or a parameter/buffer the initializer does not redraw.
        OutputError: a model without one logit or K finite outputs per input.
    """
    single = isinstance(n_samples, (int, np.integer)) and not isinstance(n_samples, bool)
    several = isinstance(n_samples, (list, tuple)) and all(
        isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in n_samples)
    if not (single or several):
        raise VolumeError(f"n_samples: expected a count or an increasing list of counts, got "
                          f"{n_samples!r}")
    counts = [int(n_samples)] if single else [int(c) for c in n_samples]
    if not counts or counts != sorted(set(counts)):
        raise VolumeError(f"n_samples: expected a count or an increasing list, got {n_samples}")
    if n_batches < 2 or counts[0] < n_batches:
        raise VolumeError(f"n_samples must be >= n_batches >= 2, got n_samples={counts[0]}, "
                          f"n_batches={n_batches}")
    draws = OutputDraws(model, x1, x2, init=init, seed=seed, batch_size=batch_size,
                        device=device)
    n1 = draws.n
    n2 = n1 if draws.x2 is None else int(draws.x2.shape[0])
    sums = torch.zeros((n_batches, n1, n2), dtype=torch.float64, device=draws.device)
    total_sq = torch.zeros((n1, n2), dtype=torch.float64, device=draws.device)
    results: list[MonteCarloKernel] = []
    start = time.perf_counter()
    grams = draws.grams(counts[-1])
    for i in track(range(counts[-1]), "Monte-Carlo kernel", enabled=progress, unit="inits"):
        sample = next(grams)
        sums[i % n_batches] += sample
        total_sq += sample * sample
        if i + 1 in counts:
            results.append(_snapshot(draws, sums, total_sq, i + 1, int(seed),
                                     time.perf_counter() - start))
    return results[0] if single else results


def converged_output_kernel(
    model: nn.Module,
    x: Any,
    probe_labels: Any,
    *,
    init: Initializer | None = None,
    probe: str = "the labels probed",
    estimator: str = DEFAULT_ESTIMATOR,
    estimator_options: dict[str, Any] | None = None,
    tolerance: float = DEFAULT_MC_TOLERANCE,
    max_samples: int = DEFAULT_MC_MAX_SAMPLES,
    seed: int = 0,
    n_batches: int = 10,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[MonteCarloKernel, MCConvergence]:
    """The Monte-Carlo output kernel K(x, x) at the draw count flatvol.volume.mc_convergence's
    check chooses: draws doubled until log10 V of `probe_labels` agrees within `tolerance`
    between two independent halves of the draws, two rounds in a row (the check a sweep's and
    `flatvol volume`'s kernels pass, here on `OutputDraws`).

    Args:
        model: any torch module with one logit or K outputs per input (deep-copied, never
            modified).
        x: inputs (n, ...).
        probe_labels: n labels whose log10 V is checked: {0, 1} or {-1, +1}, or classes
            0..K-1 with n_classes=K among the estimator options.
        init: the initializer, as in `monte_carlo_kernel`.
        probe: what the probe labels are, recorded in the check's figures.
        estimator: volume estimator of the probe.
        estimator_options: its options (and n_classes for K-class probe labels).
        tolerance: log10 V agreement required.
        max_samples: most draws before the kernel is refused (>= n_batches).
        seed: seed of the draws.
        n_batches: round-robin batches of draws for the jackknife (>= 2).
        batch_size: inputs per forward pass.
        device: torch device the copies run on.
        progress: show the check's progress.

    Returns:
        The kernel of the passing round's draws (a prefix of `monte_carlo_kernel`'s draws with
        the same seed, with the `shared_output_check` of those draws for K outputs) and the
        check's figures.

    Raises:
        VolumeError: bad settings, a model the draws refuse, or no round passing within
            max_samples.
        OutputError: a model without one logit or K finite outputs per input.
    """
    check_mc_settings(tolerance, max_samples)
    if n_batches < 2 or max_samples < n_batches:
        raise VolumeError(f"mc_max_samples must be >= n_batches >= 2, got mc_max_samples="
                          f"{max_samples}, n_batches={n_batches}")
    start = time.perf_counter()
    draws = OutputDraws(model, x, init=init, seed=seed, batch_size=batch_size, device=device)
    # Every batch must get draws: the first round has at least n_batches of them.
    done = converge_draws(draws, probe_labels, estimator=estimator,
                          estimator_options=estimator_options, tolerance=tolerance,
                          max_samples=max_samples, start=max(MC_START_SAMPLES, n_batches),
                          progress=progress, n_batches=n_batches,
                          label="Monte-Carlo kernel check", probe=probe)
    assert done.batch_totals is not None  # n_batches >= 2 keeps them
    return _snapshot(draws, done.batch_totals, done.total_sq, done.count, int(seed),
                     time.perf_counter() - start), done.check


def _snapshot(draws: OutputDraws, sums: torch.Tensor, total_sq: torch.Tensor, n: int, seed: int,
              seconds: float) -> MonteCarloKernel:
    n_batches = sums.shape[0]
    batch_counts = np.array([n // n_batches + (b < n % n_batches) for b in range(n_batches)],
                            dtype=np.float64)
    sums_np = sums.cpu().numpy()
    mean = sums_np.sum(axis=0) / n
    variance = np.clip(total_sq.cpu().numpy() / n - mean * mean, 0.0, None) * n / (n - 1)
    return MonteCarloKernel(mean, np.sqrt(variance / n), sums_np / batch_counts[:, None, None],
                            batch_counts, n, seed, round(seconds, 3), draws.description,
                            draws.n_outputs, draws.shared_check(n))
