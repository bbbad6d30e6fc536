"""The report's verdicts on the paper's two claims: V(f) correlates strongly with
generalization (Kendall tau at least 0.6), and more strongly than sharpness does.

Each verdict is 'yes', 'no' or 'not established', decided by the uncertainty of the estimate,
never by the point value alone: a tau of 1.00 over 3 runs establishes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flatvol.analysis.correlations import KendallDifference

STRONG_TAU = 0.6  # the paper's "strong" correlation
YES, NO, NOT_ESTABLISHED = "yes", "no", "not established"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one claim, the number of runs it rests on and why."""

    outcome: str  # YES, NO or NOT_ESTABLISHED
    n: int
    reason: str


def min_runs_for_kendall_test(alpha: float) -> int:
    """The fewest runs with which Kendall's exact two-sided test can reject independence.

    Under independence each of the n! orderings is equally likely, and the most extreme ones
    (every pair concordant, or every pair discordant) have probability 1/n! each, so the
    smallest two-sided p-value n runs can give is 2/n!: 0.33 at n = 3, 0.083 at n = 4, 0.017
    at n = 5. With fewer runs no data can be significant at `alpha`, and the bootstrap is
    no help: resamples of 3 monotone points are all monotone, so its interval is [1, 1].

    Args:
        alpha: Significance level, in (0, 1) (1 - the report's confidence level).

    Returns:
        The smallest n with 2/n! < alpha (5 at alpha = 0.05).
    """
    n = 2
    while 2 / math.factorial(n) >= alpha:
        n += 1
    return n


def _interval(low: float, high: float, confidence_level: float) -> str:
    return f"{confidence_level:.0%} CI [{low:.2f}, {high:.2f}]"


def _too_few(n: int, alpha: float) -> Verdict | None:
    need = min_runs_for_kendall_test(alpha)
    if n < need:
        return Verdict(NOT_ESTABLISHED, n, f"Kendall's test needs at least {need} runs to reach "
                                           f"p < {alpha:g}")
    return None


def strong_correlation_verdict(n: int, tau: float, low: float, high: float, pvalue: float, *,
                               confidence_level: float = 0.95,
                               threshold: float = STRONG_TAU) -> Verdict:
    """Whether Kendall tau is at least `threshold`, given its bootstrap interval and p-value.

    'yes' when the interval lies at or above the threshold and Kendall's test rejects
    independence at 1 - confidence_level; 'no' when the interval lies below the threshold;
    otherwise, and always with fewer runs than min_runs_for_kendall_test, 'not established'.
    The p-value guards against the bootstrap's blind spot: with few runs its resamples repeat
    the sample's own ordering, so a degenerate interval such as [1, 1] is no support.

    Args:
        n: Runs the tau was computed over.
        tau: Kendall tau-b.
        low: Lower bound of its bootstrap confidence interval.
        high: Upper bound of its bootstrap confidence interval.
        pvalue: Two-sided p-value of Kendall's test (scipy.stats.kendalltau).
        confidence_level: Of the interval, in (0, 1).
        threshold: The tau the claim asks for.

    Returns:
        The Verdict.
    """
    alpha = 1 - confidence_level
    if (few := _too_few(n, alpha)) is not None:
        return few
    if not np.all(np.isfinite([tau, low, high, pvalue])):
        return Verdict(NOT_ESTABLISHED, n, "Kendall tau or its interval is undefined")
    interval = _interval(low, high, confidence_level)
    if low >= threshold and pvalue < alpha:
        return Verdict(YES, n, f"{interval} at or above {threshold:g}, p = {pvalue:.2g}")
    if high < threshold:
        return Verdict(NO, n, f"{interval} below {threshold:g}")
    if low >= threshold:
        return Verdict(NOT_ESTABLISHED, n, f"{interval}, but p = {pvalue:.2g}")
    return Verdict(NOT_ESTABLISHED, n, f"{interval} contains {threshold:g}")


def stronger_verdict(difference: KendallDifference) -> Verdict:
    """Whether the first measure's tau exceeds the second's (correlations.kendall_difference).

    Decided by the paired bootstrap interval of the difference over the same runs: 'yes' when
    it lies above 0, 'no' when below, otherwise 'not established'. Comparing the two taus'
    separate intervals would ignore that both are computed on the same networks; the paired
    interval carries their covariance. Fewer runs than min_runs_for_kendall_test: 'not
    established', for the same reason as in strong_correlation_verdict.

    Args:
        difference: tau(first) - tau(second) with its paired bootstrap interval.

    Returns:
        The Verdict.
    """
    d = difference
    if (few := _too_few(d.n, 1 - d.confidence_level)) is not None:
        return few
    if not np.all(np.isfinite([d.value, d.low, d.high])):
        return Verdict(NOT_ESTABLISHED, d.n, "a Kendall tau or the interval is undefined")
    interval = f"{_interval(d.low, d.high, d.confidence_level)} of the tau difference"
    if d.low > 0:
        return Verdict(YES, d.n, f"{interval} above 0")
    if d.high < 0:
        return Verdict(NO, d.n, f"{interval} below 0")
    return Verdict(NOT_ESTABLISHED, d.n, f"{interval} contains 0")
