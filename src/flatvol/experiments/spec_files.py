"""Reading spec files, for every kind of spec (sweeps, sgd-vs-bayes grids).

Where a spec name points (a path, or a spec packaged in flatvol/specs), parsing TOML or YAML,
validating with pydantic into one-line SpecErrors (a spec's runs are keyed by
flatvol.digest). Each spec module (`spec`, `flatvol.sgd_vs_bayes.spec`) defines only its schema.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from flatvol.errors import SpecError

ModelT = TypeVar("ModelT", bound=BaseModel)

SPEC_SUFFIXES = (".toml", ".yaml", ".yml")


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) made one space: the form of
    every error a spec check reports."""
    return " ".join(str(text).split())


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("list[int]", "int", "RangeSpec") or "[" in str(part):
            continue  # union-branch names pydantic adds to the location
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_validation_error(exc: ValidationError, source: str) -> str:
    """`source: field.path: message (got value)` for the first error, plus a count of others."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    # A union (e.g. a list or a {start, stop, step} table) reports one error per branch: show
    # the deepest one under the same field, which is the branch the input was meant for.
    field = _loc(tuple(first["loc"]))
    same = [e for e in errors if _loc(tuple(e["loc"])).startswith(field)]
    first = max(same, key=lambda e: len(e["loc"]))
    msg = first["msg"].removeprefix("Value error, ")
    where = _loc(tuple(first["loc"]))
    got = ""
    # A validator's own message that already says what it got is not repeated.
    if first["type"] not in ("missing",) and "input" in first and not isinstance(
            first["input"], (dict, list)) and "got " not in msg:
        got = f" (got {first['input']!r})"
    more = f" [+{len(errors) - 1} more error(s)]" if len(errors) > 1 else ""
    return one_line(f"{source}: {where}: {msg}{got}{more}")


def validate_spec(model: type[ModelT], data: Mapping[str, Any],
                  source: str = "<spec>") -> ModelT:
    """Validate parsed TOML/YAML `data` as `model`; any problem is one SpecError line."""
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: expected a table/mapping at top level, got "
                        f"{type(data).__name__}")
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, source)) from None
    except SpecError as exc:  # raised by a registry lookup inside a validator
        raise SpecError(one_line(f"{source}: {exc}")) from None


@dataclass(frozen=True)
class SpecSource:
    """A spec file as read: its path and its text, which a sweep records with its runs (the
    report shows the spec as written). Parsed by `parse_spec_source`, so the text recorded is
    the text the spec was validated from."""

    path: Path
    text: str


def read_spec_source(path: str | Path) -> SpecSource:
    """Read a spec file's text (not yet parsed); errors are one line.

    Args:
        path: Path of a .toml, .yaml or .yml spec file (a name is resolved by the caller,
            with resolve_spec_path).

    Returns:
        The SpecSource: the path and its text.

    Raises:
        SpecError: If the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    try:
        return SpecSource(path, path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(one_line(f"{path}: cannot read spec ({exc})")) from None


def parse_spec_source(source: SpecSource) -> Any:
    """Parse a spec's TOML or YAML text, by its file's suffix (not yet validated).

    Args:
        source: The spec file as read.

    Returns:
        The parsed mapping (or whatever the text holds: validation refuses a non-mapping).

    Raises:
        SpecError: If the text is malformed or the suffix is not .toml, .yaml or .yml.
    """
    path, text = source.path, source.text
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(one_line(f"{path}: invalid TOML: {exc}")) from None
    if suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError(one_line(f"{path}: invalid YAML: {exc}")) from None
        return {} if data is None else data
    raise SpecError(f"{path}: unknown spec format {suffix!r}; expected .toml, .yaml or .yml")


def read_spec_file(path: str | Path) -> Any:
    """Parse a .toml, .yaml or .yml spec file (not yet validated); errors are one line."""
    return parse_spec_source(read_spec_source(path))


def packaged_spec_names() -> list[str]:
    """Specs shipped inside the package (flatvol/specs/*.toml), without the suffix.

    Returns:
        The sorted names of the packaged specs (empty if none are shipped).
    """
    root = resources.files("flatvol") / "specs"
    if not root.is_dir():
        return []
    return sorted(p.name.removesuffix(".toml") for p in root.iterdir() if p.name.endswith(".toml"))


def packaged_spec_path(name: str) -> Path:
    """Path of a shipped spec, e.g. packaged_spec_path('demo') (for `flatvol demo`).

    Args:
        name: Name of a packaged spec, with or without the .toml suffix.

    Returns:
        Path of the packaged spec file.

    Raises:
        SpecError: If no packaged spec has that name (the message lists the available ones).
    """
    path = Path(str(resources.files("flatvol") / "specs" / f"{name.removesuffix('.toml')}.toml"))
    if not path.is_file():
        raise SpecError(f"no packaged spec {name!r}; available: {', '.join(packaged_spec_names())}")
    return path


def resolve_spec_path(spec: str | Path) -> Path:
    """A spec file path, or the name of a packaged spec ('demo', 'fig3_mnist_fcn', ...).

    Args:
        spec: A spec file path, or the name of a packaged spec.

    Returns:
        The path of the spec file (a path-like argument is returned as given).

    Raises:
        SpecError: If spec looks like a name and no packaged spec has it.
    """
    path = Path(spec)
    if path.is_file() or path.suffix.lower() in SPEC_SUFFIXES or "/" in str(spec):
        return path
    return packaged_spec_path(str(spec))
