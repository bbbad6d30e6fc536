"""Do a model's K outputs share one prior kernel, uncorrelated? A test on Monte-Carlo draws.

The K-class volume (flatvol.volume.multiclass) assumes the NNGP limit's K independent GPs with
one kernel; a user's model (`volume_of`) may break it. Per draw, `output_statistics` projects
the outputs' outer products; `shared_output_check` t-tests, over the draws, that the outputs'
diagonal statistics agree and their cross terms vanish, at a stated family-wise false-alarm
rate. flatvol.volume.output_kernel collects the statistics from the draws that estimate the
kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from flatvol.errors import VolumeError

# The shared-kernel test's family-wise false-alarm rate: a model whose outputs do share a kernel
# is refused by `volume_of` with at most this probability (another seed then decides); small,
# because a refusal stops the user, while a real difference grows in t like sqrt(draws).
SHARED_OUTPUT_FALSE_ALARM = 1e-3
# What each per-draw statistic of `output_statistics` measures, by its index on axis 1.
OUTPUT_STATISTICS = ("mean square over the inputs", "square of the mean over the inputs")


@dataclass(frozen=True)
class SharedOutputCheck:
    """Whether a model's K outputs share one kernel and are uncorrelated, within Monte-Carlo error.

    Two projections of each output's kernel are compared across outputs, per draw (the outputs
    of one draw are dependent through the shared layers, the draws are independent): the mean
    of the kernel's diagonal (each output's mean square over the inputs) and the mean of all
    its entries (the square of each output's mean over the inputs). For each, every output's
    value minus the mean over outputs (zero in expectation when the kernels are equal), and
    every pair's cross term (zero when the outputs are uncorrelated), averaged over the draws
    and divided by its standard error is a t statistic with draws - 1 degrees of freedom. The
    check fails when the largest |t| passes the Bonferroni threshold of its K (K + 1) tests,
    so a model whose outputs do share a kernel fails with probability at most `false_alarm`.
    The t law is exact for normal per-draw values; those of random networks are far from
    normal, but their means over tens of draws are close enough: at a nominal 0.1, 20 of 300
    checks of 40 draws of 16-wide networks fired (tests/volume/test_own_model_multiclass.py).
    Power: one output of three scaled by 1.5 (its kernel by 2.25) was caught by 59 of 60
    checks of 200 draws at the default rate, 7 of 300 at 40 draws (a mean square over a few
    correlated inputs varies by about its mean from draw to draw); scaled by 10, at once.
    Kernels that differ only in directions these two projections do not see are not detected.
    """

    n_outputs: int  # K
    n_draws: int
    false_alarm: float  # the family-wise false-alarm rate of the test
    threshold: float  # |t| above which it fails
    max_t: float  # the largest |t| of the tests (inf: a difference without any spread)
    worst: str  # the test with the largest |t|, in words
    passed: bool
    # each output's mean square over the inputs (its kernel's mean diagonal) over that of all
    # outputs: 1 each for a shared kernel; e.g. (0.03, 0.03, 2.94) for output 2 scaled by 10
    relative_scales: tuple[float, ...]

    def message(self) -> str:
        """One line saying what the test found, e.g. for a refusal."""
        verdict = "share one kernel" if self.passed else "do not share one kernel"
        return (f"the model's {self.n_outputs} outputs {verdict} within Monte-Carlo error: "
                f"{self.worst} is {self.max_t:.3g} standard errors from equal over "
                f"{self.n_draws} draws (threshold {self.threshold:.3g}, false-alarm rate "
                f"{self.false_alarm:g}; mean squares relative to all outputs': "
                f"{', '.join(f'{r:.3g}' for r in self.relative_scales)})")


def output_statistics(outputs: torch.Tensor) -> torch.Tensor:
    """The per-draw values `shared_output_check` tests, from draws' outputs.

    Args:
        outputs: (..., n, K) float64: a draw's (or a stack of draws') outputs on n inputs.

    Returns:
        (..., 2, K, K) float64 on the outputs' device: [F^T F / n, m m^T] with m = F^T 1 / n,
        the projections OUTPUT_STATISTICS names (diagonals) and the outputs' cross terms.
    """
    n = outputs.shape[-2]
    means = outputs.mean(dim=-2)
    return torch.stack([outputs.transpose(-1, -2) @ outputs / n,
                        means.unsqueeze(-1) * means.unsqueeze(-2)], dim=-3)


def shared_output_check(statistics: np.ndarray,
                        false_alarm: float = SHARED_OUTPUT_FALSE_ALARM) -> SharedOutputCheck:
    """Test that K outputs share one kernel and are uncorrelated (see SharedOutputCheck).

    Args:
        statistics: (draws, 2, K, K), `output_statistics` of each draw; draws >= 2, K >= 2.
        false_alarm: the family-wise false-alarm rate, in (0, 1).

    Returns:
        The SharedOutputCheck.

    Raises:
        VolumeError: fewer than 2 draws or 2 outputs, or a rate outside (0, 1).
    """
    draws, _, k, _ = statistics.shape
    if draws < 2 or k < 2 or not 0 < false_alarm < 1:
        raise VolumeError(f"shared_output_check: expected >= 2 draws of >= 2 outputs and a "
                          f"false-alarm rate in (0, 1), got {draws} draws of {k} outputs and "
                          f"{false_alarm!r}")
    diagonal = np.diagonal(statistics, axis1=2, axis2=3)  # (draws, 2, K)
    upper = np.triu_indices(k, 1)
    tested = np.concatenate([diagonal - diagonal.mean(axis=2, keepdims=True),
                             statistics[:, :, upper[0], upper[1]]], axis=2)
    names = [[f"output {i}'s {what} minus the mean over outputs" for i in range(k)]
             + [f"the cross term of outputs {i} and {j} ({what})" for i, j in zip(*upper)]
             for what in OUTPUT_STATISTICS]
    mean = tested.mean(axis=0)
    spread = tested.std(axis=0, ddof=1) / math.sqrt(draws)
    # A value without any spread over the draws is exact: 0 passes, anything else fails.
    scale = np.abs(tested).max(axis=0) + np.finfo(np.float64).tiny
    exact = spread <= 1e-12 * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(exact, np.where(np.abs(mean) <= 1e-12 * scale, 0.0, np.inf),
                     np.abs(mean) / np.where(exact, 1.0, spread))
    worst = np.unravel_index(int(np.argmax(t)), t.shape)
    threshold = float(stats.t.isf(false_alarm / (2 * t.size), draws - 1))
    max_t = float(t[worst])
    squares = diagonal[:, 0].mean(axis=0)
    relative = tuple(float(v) for v in squares / squares.mean()) if squares.mean() > 0 else \
        (math.nan,) * k
    return SharedOutputCheck(int(k), int(draws), float(false_alarm), threshold, max_t,
                             names[worst[0]][worst[1]], bool(max_t <= threshold), relative)
