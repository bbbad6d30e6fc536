"""PAC-Bayes bound of Valle-Perez et al."""

from __future__ import annotations

import math

import pytest

from flatvol.errors import VolumeError
from flatvol.volume import pac_bayes_bound


def test_formula_and_monotonicity():
    ln_p, m, delta = -120.0, 500, 0.05
    expected = 1 - math.exp(-(120.0 + 2 * math.log(500) + 1 - math.log(0.05)) / 500)
    assert pac_bayes_bound(ln_p, m, delta) == pytest.approx(expected, rel=1e-14)
    assert pac_bayes_bound(-10.0, m) < pac_bayes_bound(-100.0, m) < pac_bayes_bound(-1e4, m)
    assert pac_bayes_bound(-100.0, 1000) < pac_bayes_bound(-100.0, 500)
    assert pac_bayes_bound(-1e9, 10) == pytest.approx(1.0)
    assert 0 < pac_bayes_bound(0.0, 10**6) < 1e-4


@pytest.mark.parametrize(("ln_p", "m", "delta", "match"), [
    (-1.0, 0, 0.05, "m must"), (-1.0, 10, 0.0, "delta"), (-1.0, 10, 1.0, "delta"),
    (0.5, 10, 0.05, "<= 0"), (float("nan"), 10, 0.05, "<= 0"),
])
def test_bad_inputs(ln_p, m, delta, match):
    with pytest.raises(VolumeError, match=match):
        pac_bayes_bound(ln_p, m, delta)
