"""flatvol: volume (function-space prior) vs flatness as predictors of generalization.

`import flatvol` stays cheap (no torch import): the subpackages below load on first
attribute access (PEP 562), so `flatvol.flatness.keskar_sharpness` works after a bare
`import flatvol`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType

try:
    __version__ = version("flatvol")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

# The public subpackages and modules, loaded lazily by __getattr__.
SUBMODULES: tuple[str, ...] = (
    "analysis", "data", "experiments", "flatness", "io", "measures", "models", "reparam",
    "train", "volume",
)

__all__ = ["__version__", *SUBMODULES]


def __getattr__(name: str) -> ModuleType:
    """Import a public subpackage on first access (`flatvol.volume`, `flatvol.flatness`, ...).

    Args:
        name: The attribute asked for.

    Returns:
        The imported submodule `flatvol.<name>`.

    Raises:
        AttributeError: `name` is not one of the public submodules.
    """
    if name in SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module  # later accesses skip __getattr__
        return module
    raise AttributeError(f"module 'flatvol' has no attribute {name!r}; "
                         f"public submodules: {', '.join(SUBMODULES)}")


def __dir__() -> list[str]:
    """The module's names plus the lazily loaded submodules, for tab completion."""
    return sorted(set(globals()) | set(__all__))
