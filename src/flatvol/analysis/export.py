"""Export analysis tables to CSV and Parquet (Parquet needs pyarrow: flatvol[parquet])."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from flatvol.errors import DataError, FlatvolError
from flatvol.io import atomic_write


class MissingDependencyError(FlatvolError):
    """An optional dependency needed for the requested output is not installed."""


def export_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write `frame` as CSV (no index, full float precision) atomically; returns the path.

    Args:
        frame: The table to write.
        path: Destination file.

    Returns:
        path, as a Path.
    """
    path = Path(path)
    atomic_write(path, lambda fh: frame.to_csv(fh, index=False, float_format="%.17g"))
    return path


def require_pyarrow() -> None:
    if importlib.util.find_spec("pyarrow") is None:
        raise MissingDependencyError(
            "Parquet export needs pyarrow, which is not installed "
            "(pip install 'flatvol[parquet]')")


def export_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write `frame` as Parquet with pyarrow, atomically; a one-line FlatvolError if pyarrow is
    missing or refuses the frame.

    Args:
        frame: The table to write.
        path: Destination file.

    Returns:
        path, as a Path.

    Raises:
        MissingDependencyError: If pyarrow is not installed.
        DataError: If pyarrow cannot write the frame.
    """
    require_pyarrow()
    import pyarrow as pa

    path = Path(path)
    try:
        atomic_write(path, lambda fh: frame.to_parquet(fh, index=False, engine="pyarrow"))
    except (pa.ArrowException, ValueError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot write Parquet: {message}") from None
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    """Read back a table written by export_csv (.csv) or export_parquet (.parquet).

    Args:
        path: A .csv or .parquet file.

    Returns:
        The table read.

    Raises:
        DataError: If the file is missing or has an unknown suffix.
        MissingDependencyError: If a Parquet file is read without pyarrow installed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".parquet", ".pq"):
        require_pyarrow()
        return pd.read_parquet(path, engine="pyarrow")
    raise DataError(f"{path}: unknown table format {suffix!r} (expected .csv or .parquet)")
