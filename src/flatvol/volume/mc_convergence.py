"""How many random networks a Monte-Carlo kernel needs: a convergence check on log10 V.

The check (`converge_draws`) runs on any stream of draws: a flatvol model's features
(mc_kernel.FeatureDraws, `converged_mc_kernel`, for sweeps and `flatvol volume`) or any model's
outputs (output_kernel.OutputDraws, `converged_output_kernel`, for `volume_of`). After it, the
jackknife's bias estimate of each log10 V is compared with its standard error, and draws too
few for the points are warned of (`MonteCarloDrawsWarning`, `too_few_draws`).

A sample-covariance kernel of `s` draws of `w` features has rank <= s w + 1 (the bias adds one),
so with s w + 1 < n it is singular and only the jitter decides the orthant probability. Even a
full-rank kernel can be too noisy for log V, which is a sum over n points. So the count is
chosen by what it is for: draws are made in rounds that double the count (from `start` to at
most `max_samples`); draws alternate between two independent halves, and each round computes
log10 V of a probe labeling (the true labels y on S u E) on the kernel of each half and of all
draws. A round passes when

- each half's kernel can be full rank (half x width + 1 >= n), and
- |log10 V(half A) - log10 V(half B)| <= tolerance (the halves agree: the full kernel's noise
  is about half that difference), and
- |log10 V(all) - mean of the halves| <= tolerance (halving the draws moves log10 V by less than
  the tolerance: what noise does to log V on average, its bias, has settled),

and the check stops at the second round in a row that passes (one passing round can be luck: on
a 4-wide FCN a single round passed at 512 draws with log10 V still 1.3 from the analytic
kernel's; two in a row did not happen before the estimate was within the tolerance).

Every round's figures go into the kernel's info (`MCConvergence.to_info`), which a sweep stores
with its kernel and runs; a check that does not pass within `max_samples` is refused.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from flatvol.errors import VolumeError
from flatvol.progress import ProgressBar
from flatvol.volume._numerics import to_numpy
from flatvol.volume.estimate import DEFAULT_ESTIMATOR, log_volume
from flatvol.volume.mc_checkpoint import DrawCheckpoint, DrawSums, draws_fingerprint
from flatvol.volume.mc_kernel import DEFAULT_BATCHNORM, FeatureDraws, MCKernel, summarize
from flatvol.volume_settings import (
    DEFAULT_MC_MAX_SAMPLES,
    DEFAULT_MC_TOLERANCE,
    MIN_MC_MAX_SAMPLES,
)

# The first round's draws (the tolerance and the most draws: flatvol.volume_settings).
MC_START_SAMPLES = 64
PROBE = "true labels y on S u E"
# A Monte-Carlo log10 V is reported with a warning when the jackknife's estimate of its bias is
# more than this many of its standard errors. The error bar assumes no bias: a 95% interval
# value +- 1.96 se of an estimate biased by b covers with probability
# Phi(1.96 - b/se) - Phi(-1.96 - b/se), 95% at b = 0 but 92% at b = 0.5 se and 83% at b = se,
# so past 0.5 se the interval no longer says what it claims. The rule is on the bias itself,
# not on draws per point, because the draws a kernel needs depend on the model and the labels
# (an FCN of 16 features converges at a few draws per point, an output kernel needs more
# than one per point just to be full rank); it flags a few-draw kernel of any model.
MAX_BIAS_IN_STDERRS = 0.5


class MonteCarloDrawsWarning(UserWarning):
    """Too few Monte-Carlo draws for the points: a log10 V's estimated bias is not small next
    to its standard error (see `too_few_draws`)."""


def check_mc_samples(samples: Any, name: str = "n_samples") -> int | Literal["auto"]:
    """A Monte-Carlo draw count as a caller gave it: an integer >= 2, or 'auto'.

    Args:
        samples: the value given.
        name: what the caller calls it (an argument, a CLI flag).

    Returns:
        The count as an int, or 'auto'.

    Raises:
        VolumeError: a float (500.0), a bool, a string other than 'auto', or a count < 2, in
            one line naming the setting.
    """
    if isinstance(samples, str) and samples == "auto":
        return "auto"
    if isinstance(samples, (int, np.integer)) and not isinstance(samples, bool) and samples >= 2:
        return int(samples)
    raise VolumeError(f"{name}: expected an integer >= 2 or 'auto', got {samples!r}")


def too_few_draws(values: dict[str, tuple[float, float | None, float | None]], samples: int,
                  n: int) -> str | None:
    """Why the draws are too few for `n` points, or None: the first value whose jackknife bias
    estimate exceeds MAX_BIAS_IN_STDERRS of its standard error.

    Args:
        values: name -> (value, standard error, bias estimate); None or nan ones are skipped.
        samples: draws of the kernel.
        n: points of the kernel.

    Returns:
        One line saying which value, its bias and standard error, and what to do; or None.
    """
    for name, (value, stderr, bias) in values.items():
        if stderr is None or bias is None or not (math.isfinite(stderr) and math.isfinite(bias)):
            continue
        if abs(bias) > MAX_BIAS_IN_STDERRS * stderr:
            return (f"{samples} Monte-Carlo draws are too few for n={n} points: {name} = "
                    f"{value:.3g} has a jackknife bias estimate of {bias:+.3g}, more than "
                    f"{MAX_BIAS_IN_STDERRS:g} of its standard error {stderr:.3g}, so its error "
                    "bar understates the error; use more draws (a larger count, or 'auto' with a "
                    "smaller mc_tolerance)")
    return None


def warn_if_too_few_draws(values: dict[str, tuple[float, float | None, float | None]],
                          samples: int, n: int) -> str | None:
    """Issue a MonteCarloDrawsWarning when `too_few_draws` finds the draws too few.

    Args:
        values: name -> (value, standard error, bias estimate), as for `too_few_draws`.
        samples: draws of the kernel.
        n: points of the kernel.

    Returns:
        The warning's message, or None when none was issued.
    """
    message = too_few_draws(values, samples, n)
    if message is not None:
        warnings.warn(message, MonteCarloDrawsWarning, stacklevel=3)
    return message


def rank_bound(samples: int, width: int) -> int:
    """The most rank a kernel of `samples` draws of `width` features can have (+1: the bias).

    Args:
        samples: Draws averaged.
        width: Features per draw (1 for a kernel sampled from outputs).

    Returns:
        samples * width + 1.
    """
    return int(samples) * int(width) + 1


def check_full_rank(samples: int, width: int, n: int) -> None:
    """Refuse a fixed draw count whose kernel must be singular on n points.

    Args:
        samples: Draws averaged.
        width: Features per draw.
        n: Points the kernel is of.

    Raises:
        VolumeError: If samples * width + 1 < n.
    """
    if rank_bound(samples, width) < n:
        raise VolumeError(
            f"mc_samples={samples}: a kernel of {samples} draws of {width} features has rank <= "
            f"{rank_bound(samples, width)} < n={n} points, so log V would be set by jitter; "
            f"use mc_samples >= {math.ceil((n - 1) / width)} or 'auto'")


@dataclass(frozen=True)
class ConvergenceRound:
    """One round of the check: log10 V of the probe on each half's kernel and on all draws."""

    samples: int
    full_rank: bool  # half x width + 1 >= n
    log10_volume_half_a: float | None  # None where a half cannot be full rank or EP failed
    log10_volume_half_b: float | None
    log10_volume: float | None
    halves_difference: float | None
    half_vs_full: float | None
    agrees: bool  # this round meets the criteria
    converged: bool  # this round and the one before meet them


@dataclass(frozen=True)
class MCConvergence:
    """The check's settings and rounds; `to_info()` is what is stored with the kernel."""

    tolerance: float
    max_samples: int
    estimator: str
    width: int
    n: int
    rounds: tuple[ConvergenceRound, ...]
    probe: str = PROBE  # the labeling whose log10 V is checked

    @property
    def converged(self) -> bool:
        return bool(self.rounds) and self.rounds[-1].converged

    def to_info(self) -> dict[str, Any]:
        """JSON-able figures: settings, probe, every round, and the verdict."""
        return {"tolerance": self.tolerance, "max_samples": self.max_samples,
                "estimator": self.estimator, "probe": self.probe, "width": self.width, "n": self.n,
                "converged": self.converged, "rounds": [asdict(r) for r in self.rounds]}


def _probe(labels: np.ndarray, kernel: np.ndarray, estimator: str,
           options: dict[str, Any]) -> float | None:
    try:
        return float(log_volume(labels, kernel, estimator, **options).log10_volume)
    except VolumeError:  # e.g. too much jitter needed: this round cannot pass
        return None


def _judge(samples: int, kernels: tuple[np.ndarray, np.ndarray, np.ndarray], full_rank: bool,
           labels: np.ndarray, estimator: str, options: dict[str, Any], tolerance: float,
           previous: ConvergenceRound | None) -> ConvergenceRound:
    if not full_rank:
        return ConvergenceRound(samples, False, None, None, None, None, None, False, False)
    a, b, full = (_probe(labels, k, estimator, options) for k in kernels)
    if a is None or b is None or full is None:
        return ConvergenceRound(samples, True, a, b, full, None, None, False, False)
    figures = {"samples": samples, "full_rank": True, "log10_volume_half_a": a,
               "log10_volume_half_b": b, "log10_volume": full, "halves_difference": abs(a - b),
               "half_vs_full": abs(full - 0.5 * (a + b))}
    return _verdict(figures, tolerance, previous)


def _verdict(figures: dict[str, Any], tolerance: float, previous: ConvergenceRound | None,
             can_converge: bool = True) -> ConvergenceRound:
    """A round from its figures, judged with `tolerance` (also a resumed round's, whose
    `can_converge` is False when the sums have moved past it)."""
    halves, bias = figures["halves_difference"], figures["half_vs_full"]
    agrees = halves is not None and bias is not None and halves <= tolerance and bias <= tolerance
    converged = agrees and can_converge and previous is not None and previous.agrees
    fields = {k: figures[k] for k in ("samples", "full_rank", "log10_volume_half_a",
                                      "log10_volume_half_b", "log10_volume",
                                      "halves_difference", "half_vs_full")}
    return ConvergenceRound(**fields, agrees=bool(agrees), converged=bool(converged))


def round_status(check_round: ConvergenceRound, tolerance: float) -> str:
    """One round's verdict in a few words, e.g. '512 draws: halves differ 2.31, all vs halves
    0.40 (tolerance 1.0)'.

    Args:
        check_round: The round.
        tolerance: The check's tolerance in log10 V.

    Returns:
        The text a progress line shows.
    """
    head = f"{check_round.samples} draws: "
    if not check_round.full_rank:
        return head + "halves rank-deficient"
    if check_round.halves_difference is None or check_round.half_vs_full is None:
        return head + "log10 V failed on a kernel"
    return (head + f"halves differ {check_round.halves_difference:.2f}, all vs halves "
            f"{check_round.half_vs_full:.2f} (tolerance {tolerance:g})")


def check_mc_settings(tolerance: float, max_samples: int,
                      names: tuple[str, str] = ("mc_tolerance", "mc_max_samples")) -> None:
    """Refuse a convergence check that cannot work, in one line.

    Args:
        tolerance: log10 V agreement required (> 0).
        max_samples: Most draws (>= MIN_MC_MAX_SAMPLES: two halves of at least two draws).
        names: What the caller calls the two settings (spec fields, CLI flags).

    Raises:
        VolumeError: naming both settings, expected vs got.
    """
    if not tolerance > 0 or max_samples < MIN_MC_MAX_SAMPLES:
        raise VolumeError(f"{names[0]} must be > 0 and {names[1]} >= {MIN_MC_MAX_SAMPLES}, got "
                          f"{tolerance} and {max_samples}")


class DrawStream(Protocol):
    """What the check draws from: mc_kernel.FeatureDraws (a flatvol model's features) or
    output_kernel.OutputDraws (any model's outputs)."""

    n: int  # points of the (square) kernel
    width: int  # features per draw (1 for outputs)
    device: torch.device
    generator: torch.Generator  # with a checkpoint: the draws' only randomness
    draws_per_pass: int
    net: nn.Module
    x: torch.Tensor

    def grams(self, count: int) -> Iterator[torch.Tensor]: ...

    def kernel(self, total: torch.Tensor, count: int | torch.Tensor) -> np.ndarray: ...

    def rank_bound(self, samples: int) -> int: ...


@dataclass(frozen=True)
class ConvergedDraws:
    """The sums of the draws of the check's passing round, and the check's figures."""

    total: torch.Tensor  # (n, n) float64: sum of the draws' Grams
    total_sq: torch.Tensor  # (n, n) float64: sum of their elementwise squares
    count: int  # draws summed
    batch_totals: torch.Tensor | None  # (n_batches, n, n) round-robin batch sums, or None
    batch_counts: np.ndarray | None  # (n_batches,) draws per batch, or None
    check: MCConvergence


def converged_mc_kernel(
    model: nn.Module,
    x: Any,
    probe_labels: Any,
    *,
    estimator: str = DEFAULT_ESTIMATOR,
    estimator_options: dict[str, Any] | None = None,
    tolerance: float = DEFAULT_MC_TOLERANCE,
    max_samples: int = DEFAULT_MC_MAX_SAMPLES,
    start: int = MC_START_SAMPLES,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    n_batches: int = 0,
    draws_per_pass: int | None = None,
    batchnorm: str = DEFAULT_BATCHNORM,
    checkpoint: str | Path | None = None,
    probe: str = PROBE,
) -> tuple[MCKernel, MCConvergence]:
    """The Monte-Carlo NNGP kernel at the first doubling of draws that passes the check.

    Args:
        model: A flatvol model with `.prior` and `.features` (deep-copied, never modified).
        x: Inputs, shape (n, ...), e.g. S u E.
        probe_labels: n labels whose log10 V is checked (the true labels y on S u E in a
            sweep): {0, 1} or {-1, +1}, or classes 0..K-1 with n_classes=K among the
            estimator options (the K-class volume, flatvol.volume.multiclass).
        estimator: Volume estimator of the probe (the sweep's).
        estimator_options: Its options (the sweep's), e.g. orthant-is's n_samples, and
            n_classes for K-class probe labels.
        tolerance: log10 V agreement required (see the module docstring).
        max_samples: Most draws before the check gives up.
        start: Draws of the first round (rounded up to even; capped by max_samples).
        seed: Seed of the draws.
        device: Device the draws run on.
        progress: Whether to show progress.
        n_batches: With 2 or more, keep the kernels of that many round-robin batches of draws
            for a jackknife error; 0 keeps none.
        draws_per_pass: Networks per vmapped forward pass (None: 8 on CUDA, 1 elsewhere).
        batchnorm: How BatchNorm normalizes in the draws (flatvol.volume.mc_kernel
            BATCHNORM_MODES).
        checkpoint: A file keeping the draws' sums (flatvol.volume.mc_checkpoint): a killed
            or refused check resumes from it, to the same kernel; None keeps nothing.
        probe: What `probe_labels` are, for the check's figures.

    Returns:
        The kernel of all draws of the passing round, and the check's figures.

    Raises:
        VolumeError: bad settings, or no round passes within max_samples (the message gives
            the last round's figures).
    """
    check_mc_settings(tolerance, max_samples)
    draws = FeatureDraws(model, x, seed=seed, device=device, draws_per_pass=draws_per_pass,
                         batchnorm=batchnorm)
    first = first_round(start, max_samples)
    store = None if checkpoint is None else DrawCheckpoint(checkpoint, draws_fingerprint(
        draws.net, draws.x, seed=seed, start=first, n_batches=n_batches, batchnorm=batchnorm))
    done = converge_draws(draws, probe_labels, estimator=estimator,
                          estimator_options=estimator_options, tolerance=tolerance,
                          max_samples=max_samples, start=start, progress=progress,
                          n_batches=n_batches, store=store, label="MC NNGP kernel check",
                          probe=probe)
    return summarize(draws, done.total, done.total_sq, done.count, int(seed), done.batch_totals,
                     done.batch_counts), done.check


def first_round(start: int, max_samples: int) -> int:
    """The draws of the check's first round: `start` rounded up to even, capped by
    `max_samples` rounded down to even (each half gets the same count)."""
    return min(start + start % 2, max_samples - max_samples % 2)


def converge_draws(
    draws: DrawStream,
    probe_labels: Any,
    *,
    estimator: str = DEFAULT_ESTIMATOR,
    estimator_options: dict[str, Any] | None = None,
    tolerance: float = DEFAULT_MC_TOLERANCE,
    max_samples: int = DEFAULT_MC_MAX_SAMPLES,
    start: int = MC_START_SAMPLES,
    progress: bool = True,
    n_batches: int = 0,
    store: DrawCheckpoint | None = None,
    label: str = "MC kernel check",
    probe: str = PROBE,
) -> ConvergedDraws:
    """The check itself, on any stream of draws: rounds doubling the draws until two in a row
    pass (see the module docstring).

    Args:
        draws: The stream (FeatureDraws, OutputDraws); its kernels are `draws.kernel` of sums.
        probe_labels: n labels in {0, 1} or {-1, +1} whose log10 V is checked.
        estimator: Volume estimator of the probe.
        estimator_options: Its options.
        tolerance: log10 V agreement required.
        max_samples: Most draws before the check gives up.
        start: Draws of the first round (see `first_round`).
        progress: Whether to show progress.
        n_batches: With 2 or more, also keep that many round-robin batch sums; 0 keeps none.
        store: A checkpoint of the sums to resume from and write (only for a stream whose
            `generator` is its only randomness, as FeatureDraws'); None keeps nothing.
        label: The progress bar's title.
        probe: What `probe_labels` are, for the check's figures.

    Returns:
        The sums of the passing round's draws and the check's figures.

    Raises:
        VolumeError: bad settings, probe labels not one per point, or no round passes within
            max_samples (the message gives the last round's figures).
    """
    check_mc_settings(tolerance, max_samples)
    if n_batches == 1 or n_batches < 0:
        raise VolumeError(f"n_batches must be 0 or >= 2, got {n_batches}")
    n = draws.n
    labels = np.asarray(to_numpy(probe_labels), dtype=np.float64).reshape(-1)
    if labels.shape[0] != n:
        raise VolumeError(f"probe labels: expected {n} (one per input), got {labels.shape[0]}")
    zeros = lambda *shape: torch.zeros(shape, dtype=torch.float64, device=draws.device)  # noqa: E731
    halves, total_sq = zeros(2, n, n), zeros(n, n)
    batch_totals = zeros(n_batches, n, n) if n_batches else None
    count = first_round(start, max_samples)
    resumed = None if store is None else store.load(draws.device)
    drawn, known = 0, {}
    if resumed is not None:
        drawn, known = resumed.drawn, {r["samples"]: r for r in resumed.rounds}
        halves, total_sq, batch_totals = resumed.halves, resumed.total_sq, resumed.batch_totals
        draws.generator.set_state(resumed.generator_state)
    rounds: list[ConvergenceRound] = []

    def sums() -> DrawSums:
        return DrawSums(drawn, halves, total_sq, batch_totals, draws.generator.get_state(),
                        [asdict(r) for r in rounds])

    # One bar for the whole check; its status is the last round's verdict, so a check that runs
    # for hours shows how far from agreement it is.
    with ProgressBar(label, count, enabled=progress, unit="draws", leave=False) as bar:
        while True:
            bar.update(min(drawn, count), total=count)
            previous = rounds[-1] if rounds else None
            if count in known:  # judged before a resume: its figures, this tolerance
                rounds.append(_verdict(known[count], tolerance, previous,
                                       can_converge=drawn == count))
            else:
                grams, first = draws.grams(count - drawn), drawn
                while drawn < count:
                    sample = next(grams)
                    halves[drawn % 2] += sample  # even draws make half A, odd ones half B
                    total_sq += sample * sample
                    if batch_totals is not None:
                        batch_totals[drawn % n_batches] += sample
                    drawn += 1
                    bar.advance()
                    # between passes the generator stands exactly before the next draw
                    if (store is not None and store.due()
                            and (drawn - first) % draws.draws_per_pass == 0):
                        store.save(sums())
                total = halves[0] + halves[1]
                kernels = (draws.kernel(halves[0], count // 2),
                           draws.kernel(halves[1], count // 2), draws.kernel(total, count))
                rounds.append(_judge(count, kernels, draws.rank_bound(count // 2) >= n,
                                     labels, estimator, dict(estimator_options or {}),
                                     tolerance, previous))
                if store is not None:
                    store.save(sums())
            bar.update(status=round_status(rounds[-1], tolerance))
            if rounds[-1].converged or 2 * count > max_samples:
                break
            count *= 2
    check = MCConvergence(float(tolerance), int(max_samples), estimator, draws.width, n,
                          tuple(rounds), probe)
    if not check.converged:
        last = rounds[-1]
        why = (f"each half of {last.samples} draws of {draws.width} features has rank < n={n}"
               if not last.full_rank else
               f"log10 V of two halves of {last.samples} draws: {last.log10_volume_half_a} and "
               f"{last.log10_volume_half_b}, all draws {last.log10_volume}")
        raise VolumeError(f"Monte-Carlo kernel not converged within mc_max_samples={max_samples} "
                          f"(mc_tolerance={tolerance} in log10 V): {why}; raise mc_max_samples "
                          "or mc_tolerance")
    counts = None
    if batch_totals is not None:
        counts = np.array([count // n_batches + (b < count % n_batches)
                           for b in range(n_batches)])
    return ConvergedDraws(halves[0] + halves[1], total_sq, count, batch_totals, counts, check)
