"""PAC-Bayes bound of Langford & Seeger (2001) as Valle-Perez et al. (2019) state it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flatvol.errors import VolumeError
from flatvol.volume import pac_bayes_bound


def test_hand_computed_values():
    # -ln(1 - eps) = (120 + ln(2 * 500 / 0.05)) / 499 = (120 + 9.9034876) / 499 = 0.26032763,
    # eps = 1 - exp(-0.26032763) = 0.22920099 (worked by hand to 8 digits).
    assert pac_bayes_bound(-120.0, 500, 0.05) == pytest.approx(0.22920099, abs=5e-9)
    # P = 100 / 2^20, m = 21, delta = 0.42: ln 1/P + ln(42/0.42) = 20 ln 2, so -ln(1-eps) = ln 2.
    ln_p = math.log(100.0) - 20 * math.log(2.0)
    assert pac_bayes_bound(ln_p, 21, 0.42) == pytest.approx(0.5, rel=1e-14)
    # m = 2, P = 1, delta = 0.04: -ln(1 - eps) = ln 100, eps = 0.99.
    assert pac_bayes_bound(0.0, 2, 0.04) == pytest.approx(0.99, rel=1e-14)


def test_monotonicity_and_limits():
    m = 500
    assert pac_bayes_bound(-10.0, m) < pac_bayes_bound(-100.0, m) < pac_bayes_bound(-1e4, m)
    assert pac_bayes_bound(-100.0, 1000) < pac_bayes_bound(-100.0, 500)
    assert pac_bayes_bound(-100.0, 500, 0.1) < pac_bayes_bound(-100.0, 500, 0.01)
    assert pac_bayes_bound(-1e9, 10) == pytest.approx(1.0)
    assert 0 < pac_bayes_bound(0.0, 10**6) < 2e-5


@pytest.mark.parametrize(("ln_p", "m", "delta", "match"), [
    (-1.0, 0, 0.05, "m = |S| must"), (-1.0, 1, 0.05, ">= 2"), (-1.0, 2.0, 0.05, "integer"),
    (-1.0, 10, 0.0, "delta"), (-1.0, 10, 1.0, "delta"),
    (0.5, 10, 0.05, "<= 0"), (float("nan"), 10, 0.05, "<= 0"),
])
def test_bad_inputs(ln_p, m, delta, match):
    with pytest.raises(VolumeError, match=match) as info:
        pac_bayes_bound(ln_p, m, delta)
    assert "\n" not in str(info.value)


def test_conditional_volume_reports_no_bound_for_one_training_point():
    # VolumeService.conditional stays usable at |S| = 1, where the bound is undefined (m - 1 = 0)
    from flatvol.volume import VolumeService

    K = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, 0.4], [0.2, 0.4, 1.0]])
    est = VolumeService(K)
    assert math.isnan(est.conditional([1, 1, 0], 1).pac_bayes_bound)
    two = est.conditional([1, 1, 0], 2)
    assert two.pac_bayes_bound == pytest.approx(
        pac_bayes_bound(two.train.log_marginal_likelihood_nats, 2))
