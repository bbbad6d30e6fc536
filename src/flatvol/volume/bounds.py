"""The PAC-Bayes generalization bound of Valle-Perez, Camargo & Louis (2019)."""

from __future__ import annotations

import math

from flatvol.errors import VolumeError


def pac_bayes_bound(log_probability: float, m: int, delta: float = 0.05) -> float:
    """Upper bound on the expected error of functions consistent with the training set:

        1 - exp(-(-ln P + 2 ln m + 1 - ln delta) / m),

    with P the prior probability (volume) of the training labels on S, in nats as
    `log_probability` = ln P <= 0, m = |S|, and confidence 1 - delta.
    """
    if not (isinstance(m, int) and m >= 1):
        raise VolumeError(f"PAC-Bayes bound: m must be a positive integer, got {m!r}")
    if not 0.0 < delta < 1.0:
        raise VolumeError(f"PAC-Bayes bound: delta must be in (0, 1), got {delta}")
    if math.isnan(log_probability) or log_probability > 1e-9:
        raise VolumeError(f"PAC-Bayes bound: ln P must be <= 0, got {log_probability}")
    exponent = (-min(log_probability, 0.0) + 2.0 * math.log(m) + 1.0 - math.log(delta)) / m
    return -math.expm1(-exponent)
