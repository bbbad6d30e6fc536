"""`flatvol flatness RUN_DIR --measures ... --json`: flatness measures of a trained run.

`flatness_command` is a plain function with typer-annotated parameters; the main app registers
it with `app.command("flatness")(flatness_command)`. The measures use the run's genuine
training set S only (never the attack set).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from torch import nn
from tqdm.auto import tqdm

from flatvol.errors import SpecError
from flatvol.flatness.hessian import (
    hessian_density,
    hessian_frobenius_norm,
    hessian_top_eigenvalues,
    hessian_trace,
)
from flatvol.flatness.measures import (
    adaptive_sharpness,
    average_sharpness,
    fisher_rao_norm,
    pac_bayes_flatness,
    pac_bayes_magnitude_flatness,
)
from flatvol.flatness.sharpness import MAXIMIZERS, keskar_sharpness
from flatvol.train.checkpoint import load_run
from flatvol.validate import check_device, check_positive_int

MeasureRunner = Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]


def _measure_table(opts: dict[str, Any]) -> dict[str, MeasureRunner]:
    common = {"device": opts["device"], "chunk_size": opts["chunk_size"]}
    seeded = {**common, "seed": opts["seed"]}
    bar = {"progress": opts["progress"]}
    return {
        "keskar": lambda m, x, y: keskar_sharpness(
            m, x, y, epsilon=opts["epsilon"], maximizer=opts["maximizer"], **seeded, **bar),
        "hessian_top": lambda m, x, y: hessian_top_eigenvalues(m, x, y, k=opts["top_k"],
                                                               **seeded, **bar),
        "hessian_trace": lambda m, x, y: hessian_trace(m, x, y, n_hvp=opts["n_hvp"], **seeded,
                                                       **bar),
        "hessian_frobenius": lambda m, x, y: hessian_frobenius_norm(m, x, y, n_hvp=opts["n_hvp"],
                                                                    **seeded, **bar),
        "hessian_density": lambda m, x, y: hessian_density(m, x, y, **seeded, **bar),
        "average_sharpness": lambda m, x, y: average_sharpness(m, x, y, **seeded),
        "pacbayes": lambda m, x, y: pac_bayes_flatness(m, x, y, **seeded, **bar),
        "pacbayes_mag": lambda m, x, y: pac_bayes_magnitude_flatness(m, x, y, **seeded, **bar),
        "adaptive_sharpness": lambda m, x, y: adaptive_sharpness(m, x, y, **seeded),
        "fisher_rao": lambda m, x, y: fisher_rao_norm(m, x, y, **common),
    }


MEASURE_NAMES: tuple[str, ...] = tuple(_measure_table(
    {"device": None, "chunk_size": None, "seed": 0, "progress": False, "epsilon": 1e-4,
     "maximizer": "fast", "top_k": 1, "n_hvp": 99}))


def parse_measures(text: str) -> list[str]:
    """'keskar,hessian_top' -> ['keskar', 'hessian_top']; 'all' -> every measure."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(MEASURE_NAMES)
    unknown = [n for n in names if n not in MEASURE_NAMES]
    if unknown or not names:
        raise SpecError(f"--measures: unknown measure(s) {', '.join(unknown) or '(none given)'}; "
                        f"expected a comma-separated subset of {', '.join(MEASURE_NAMES)} or 'all'")
    return list(dict.fromkeys(names))


def compute_measures(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    measures: list[str],
    *,
    epsilon: float = 1e-4,
    maximizer: str = "fast",
    top_k: int = 1,
    n_hvp: int = 99,
    seed: int = 0,
    device: str | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run the named measures on (x, y); returns {measure: result.to_dict()}."""
    table = _measure_table({"device": device, "chunk_size": chunk_size, "seed": seed,
                            "progress": progress, "epsilon": epsilon, "maximizer": maximizer,
                            "top_k": top_k, "n_hvp": n_hvp})
    out: dict[str, dict[str, Any]] = {}
    with tqdm(measures, desc="flatness", disable=not progress) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            out[name] = table[name](model, x, y).to_dict()
    return out


def check_flatness_options(*, epsilon: float, maximizer: str, top_k: int, n_hvp: int,
                           chunk_size: int | None, device: str) -> None:
    """The options of `flatvol flatness`, checked before the run is loaded."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise SpecError(f"--epsilon: expected a positive number, got {epsilon}")
    if maximizer not in MAXIMIZERS:
        raise SpecError(f"--maximizer: expected one of {', '.join(MAXIMIZERS)}, "
                        f"got {maximizer!r}")
    check_positive_int(top_k, "--top-k")
    check_positive_int(n_hvp, "--n-hvp")
    if chunk_size is not None:
        check_positive_int(chunk_size, "--chunk-size")
    check_device(device)


def flatness_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by 'flatvol train'.")],
    measures: Annotated[str, typer.Option(
        "--measures", help=f"Comma-separated: {', '.join(MEASURE_NAMES)}, or 'all'.")
    ] = "keskar,hessian_top,hessian_trace",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    maximizer: Annotated[
        str, typer.Option(help="Keskar maximizer: paper | lbfgsb | fast.")
    ] = "fast",
    epsilon: Annotated[float, typer.Option(help="Keskar box size eps.")] = 1e-4,
    top_k: Annotated[int, typer.Option(help="Number of top Hessian eigenvalues.")] = 1,
    n_hvp: Annotated[int, typer.Option(help="Hessian-vector products for trace/Frobenius.")] = 99,
    seed: Annotated[int, typer.Option(help="Seed of every random probe and restart.")] = 0,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", envvar="FLATVOL_DATA", help="Data directory of the run's task.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    chunk_size: Annotated[int | None, typer.Option(help="Examples per forward pass.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress",
                                           help="Progress bars on stderr.")] = True,
) -> None:
    """Flatness measures of a trained network on its training set S."""
    names = parse_measures(measures)
    check_flatness_options(epsilon=epsilon, maximizer=maximizer, top_k=top_k, n_hvp=n_hvp,
                           chunk_size=chunk_size, device=device)
    run = load_run(run_dir, data_dir=data_dir, device=device)
    results = compute_measures(
        run.model, run.task.S.x, run.task.S.y, names, epsilon=epsilon, maximizer=maximizer,
        top_k=top_k, n_hvp=n_hvp, seed=seed, device=device, chunk_size=chunk_size,
        progress=progress,
    )
    header = {"run_dir": str(run_dir), "train_size": len(run.task.S), "device": device,
              "seed": seed}
    if json_output:
        typer.echo(json.dumps({**header, **results}, sort_keys=True))
        return
    typer.echo(f"flatness of {run_dir} on S ({len(run.task.S)} examples)")
    for name, result in results.items():
        scalars = {k: v for k, v in result.items() if not isinstance(v, list) or len(v) <= 8}
        typer.echo(f"  {name}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in scalars.items()))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)
