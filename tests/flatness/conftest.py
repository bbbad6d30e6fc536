"""Fixtures for the flatness tests; the networks themselves live in flatness_helpers."""

import pytest
from flatness_helpers import MAKERS


@pytest.fixture(params=sorted(MAKERS))
def small_problem(request):
    """(model, x, y) for each small float64 network: FCN, SmallCNN, BatchNorm net (eval)."""
    return MAKERS[request.param]()
