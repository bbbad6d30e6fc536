"""Every experiments test uses the embedded MNIST subset, whether or not FLATVOL_DATA is set."""

import pytest


@pytest.fixture(autouse=True)
def _embedded_data(monkeypatch):
    monkeypatch.delenv("FLATVOL_DATA", raising=False)
