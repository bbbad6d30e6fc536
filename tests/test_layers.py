"""The package's layers (docs/ARCHITECTURE.md): every module imports only from its own layer or
the ones below, lazy imports inside functions included, with no cycle between packages; and
`import flatvol.analysis` stays light (no torch, no volume package)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "flatvol"

# Lowest first, as docs/ARCHITECTURE.md states them. Each name is a top-level module or
# subpackage of flatvol; `reparam` sits with flatness, `problem_settings` with train (it checks
# settings against data, models and train's optimizers, importing them only to validate).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "io", "validate", "limits", "progress", "interrupts", "resumable",
     "volume_settings", "digest"),
    ("data",),
    ("models",),
    ("train", "problem_settings"),
    ("volume", "flatness", "reparam"),
    ("measures",),
    ("experiments",),
    ("analysis",),
    ("sgd_vs_bayes",),
    ("cli", "__main__"),
)
LAYER_OF = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
# The top-level package imports its subpackages on first attribute access (PEP 562): it is
# the entry point above every layer, not part of one.
EXEMPT = {"flatvol/__init__.py"}


def _part_of(module: str) -> str | None:
    """'flatvol.volume.kernels' -> 'volume'; None for a module outside flatvol (or flatvol)."""
    names = module.split(".")
    return names[1] if names[0] == "flatvol" and len(names) > 1 else None


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every flatvol import in `path`: at module level, under
    TYPE_CHECKING and inside functions alike; `from flatvol import x` yields flatvol.x."""
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package up
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            if base == "flatvol":
                yield from ((node.lineno, f"flatvol.{alias.name}") for alias in node.names)
            else:
                yield node.lineno, base


def _package_imports() -> dict[Path, list[tuple[int, str, str]]]:
    """Per source file (but the exempt ones): (line, its part, the imported part) of every
    import of another part of flatvol."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        if str(path.relative_to(SRC.parent)) in EXEMPT:
            continue
        own = _part_of(_module_name(path))
        assert own in LAYER_OF, f"{path}: {own!r} is in no layer of LAYERS (add it)"
        out[path] = [(line, own, part) for line, module in _imported(path)
                     if (part := _part_of(module)) is not None and part != own]
    return out


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = []
    for path, imports in _package_imports().items():
        for line, own, part in imports:
            assert part in LAYER_OF, f"{path}:{line} imports flatvol.{part}, in no layer"
            if LAYER_OF[part] > LAYER_OF[own]:
                upward.append(f"{path.relative_to(SRC.parent)}:{line}: {own} imports {part}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = {}
    for imports in _package_imports().values():
        for _, own, part in imports:
            edges.setdefault(own, set()).add(part)

    def cycle_from(start: str) -> list[str] | None:
        # Depth-first search for a path from start back to itself.
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    return [*path, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [" -> ".join(c) for part in sorted(edges) if (c := cycle_from(part))]
    assert not cycles, "package cycles:\n" + "\n".join(cycles)


def test_import_flatvol_analysis_loads_neither_torch_nor_the_volume_package() -> None:
    # A fresh interpreter: this test process may have torch loaded already. The analysis
    # reads the measure catalogue's metadata (predictors, labels), which must stay light.
    code = ("import sys, flatvol.analysis, flatvol.measures; "
            "print(*(m in sys.modules for m in ('torch', 'flatvol.volume')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]


def test_the_volume_package_uses_the_base_layers_settings() -> None:
    # One definition: the spec schemas validate against the names the volume package uses.
    import flatvol.volume as volume
    import flatvol.volume_settings as settings
    from flatvol.volume import kernels, mc_convergence, mc_kernel

    assert volume.ESTIMATORS is settings.ESTIMATORS
    assert volume.DEFAULT_ESTIMATOR is settings.DEFAULT_ESTIMATOR
    assert volume.check_estimator is settings.check_estimator
    assert kernels.KERNEL_KINDS is settings.KERNEL_KINDS
    assert mc_kernel.BATCHNORM_MODES is settings.BATCHNORM_MODES
    assert mc_kernel.check_batchnorm_mode is settings.check_batchnorm_mode
    assert mc_convergence.DEFAULT_MC_MAX_SAMPLES is settings.DEFAULT_MC_MAX_SAMPLES


# The face (docs/ARCHITECTURE.md): the `cli` package alone talks to a user through typer and
# turns spec names into files; every layer below it takes typed objects. (progress.py, the one
# display of the library, keeps rich: it is not a command line.)
FACE = "cli"
COMMAND_LINE_LIBRARIES = {"typer", "click"}
SPEC_NAME_RESOLVERS = {"resolve_spec_path", "packaged_spec_path"}


def _below_the_face() -> list[Path]:
    return [path for path in sorted(SRC.rglob("*.py"))
            if _part_of(_module_name(path)) not in (FACE, "__main__")]


def test_only_the_cli_package_imports_typer() -> None:
    outside = [f"{path.relative_to(SRC.parent)}:{line}: imports {module}"
               for path in _below_the_face() for line, module in _imported(path)
               if module.split(".")[0] in COMMAND_LINE_LIBRARIES]
    assert not outside, "typer imported below flatvol.cli:\n" + "\n".join(outside)
    # the scan sees the face's own imports, lazy ones included (it would pass vacuously else)
    face = {module for path in (SRC / FACE).rglob("*.py") for _, module in _imported(path)}
    assert "typer" in face


def test_only_the_cli_and_the_progress_display_import_a_console() -> None:
    # a library reports progress through flatvol.progress and is given a stream, not a console
    display = SRC / "progress.py"
    outside = [f"{path.relative_to(SRC.parent)}:{line}: imports {module}"
               for path in _below_the_face() if path != display
               for line, module in _imported(path) if module.startswith("rich.console")]
    assert not outside, "a console below flatvol.cli:\n" + "\n".join(outside)


def test_only_the_cli_package_resolves_spec_names() -> None:
    # spec_files defines the resolver (packaged_spec_path is its half for shipped names); a
    # library function below the face takes the parsed spec, never a name it resolves itself.
    calls = []
    for path in _below_the_face():
        if path.name == "spec_files.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in SPEC_NAME_RESOLVERS:
                    calls.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: {name}()")
    assert not calls, "spec names resolved below flatvol.cli:\n" + "\n".join(calls)
