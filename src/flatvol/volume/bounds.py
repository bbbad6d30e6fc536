"""The PAC-Bayes bound of Langford & Seeger (2001) in the form Valle-Perez et al. (2019) use.

For a training set S of m samples and the Bayesian posterior restricted to the functions U that fit
S (prior mass P(U), the volume V(f on S)), with probability at least 1 - delta over S the expected
error eps of that posterior satisfies (Valle-Perez, Camargo & Louis 2019, "Deep learning generalizes
because the parameter-function map is biased towards simple functions", Eq. 1; Langford & Seeger
2001, "Bounds for averaging classifiers"):

    -ln(1 - eps) <= (ln 1/P(U) + ln(2m / delta)) / (m - 1).

`pac_bayes_bound` returns the eps that makes this an equality.
"""

from __future__ import annotations

import math

from flatvol.errors import VolumeError


def pac_bayes_bound(log_probability: float, m: int, delta: float = 0.05) -> float:
    """The Langford-Seeger / Valle-Perez bound on the expected error (module doc).

    Args:
        log_probability: ln P(U) <= 0, the prior probability (volume) of the training labels on S,
            in nats.
        m: |S|, the number of training samples; at least 2 (m - 1 divides).
        delta: the confidence is 1 - delta, delta in (0, 1).

    Returns:
        eps = 1 - exp(-(ln 1/P + ln(2m/delta)) / (m - 1)), in [0, 1].

    Raises:
        VolumeError: m < 2 or not an integer, delta outside (0, 1), ln P > 0 or NaN.
    """
    if not (isinstance(m, int) and m >= 2):
        raise VolumeError(f"PAC-Bayes bound: m = |S| must be an integer >= 2, got {m!r}")
    if not 0.0 < delta < 1.0:
        raise VolumeError(f"PAC-Bayes bound: delta must be in (0, 1), got {delta}")
    if math.isnan(log_probability) or log_probability > 1e-9:
        raise VolumeError(f"PAC-Bayes bound: ln P must be <= 0, got {log_probability}")
    exponent = (-min(log_probability, 0.0) + math.log(2.0 * m / delta)) / (m - 1)
    return -math.expm1(-exponent)
