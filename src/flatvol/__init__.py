"""flatvol: volume (function-space prior) vs flatness as predictors of generalization.

`import flatvol` stays cheap (no torch import): the subpackages below load on first
attribute access (PEP 562), so `flatvol.flatness.keskar_sharpness` works after a bare
`import flatvol`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("flatvol")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

# The public subpackages and modules, loaded lazily by __getattr__.
SUBMODULES: tuple[str, ...] = (
    "analysis", "data", "experiments", "flatness", "io", "measures", "models", "reparam",
    "sgd_vs_bayes", "train", "volume",
)

# Functions offered at the top level (`flatvol.volume_of`), loaded lazily from their home.
FUNCTIONS: dict[str, str] = {"volume_of": "volume"}

__all__ = ["__version__", *SUBMODULES, *FUNCTIONS]


def __getattr__(name: str) -> Any:
    """Import a public subpackage on first access (`flatvol.volume`, `flatvol.flatness`, ...),
    or a top-level function (`flatvol.volume_of`).

    Args:
        name: The attribute asked for.

    Returns:
        The imported submodule `flatvol.<name>`, or a top-level function from its subpackage.

    Raises:
        AttributeError: `name` is not one of the public submodules or functions.
    """
    if name in FUNCTIONS:
        function = getattr(importlib.import_module(f"{__name__}.{FUNCTIONS[name]}"), name)
        globals()[name] = function
        return function
    if name in SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module  # later accesses skip __getattr__
        return module
    raise AttributeError(f"module 'flatvol' has no attribute {name!r}; "
                         f"public submodules: {', '.join(SUBMODULES)}")


def __dir__() -> list[str]:
    """The module's names plus the lazily loaded submodules, for tab completion."""
    return sorted(set(globals()) | set(__all__))
