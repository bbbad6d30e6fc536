"""flatvol: volume (function-space prior) vs flatness as predictors of generalization."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("flatvol")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
