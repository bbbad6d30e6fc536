"""`flatvol flatness RUN_DIR --measures ... --json`: flatness measures of a trained run.

`flatness_command` is a plain function with typer-annotated parameters; flatvol.cli registers
it as `flatvol flatness`. The measures are the catalogue's flatness
entries (flatvol.measures, group 'flatness'), under the same names and defaults as in specs,
and use the run's genuine training set S only (never the attack set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from flatvol.errors import SpecError
from flatvol.io import dumps_json
from flatvol.limits import MAX_OPTION_COUNT, MAX_SEED, bound_problem
from flatvol.measures import (
    DEFAULT_MAXIMIZER,
    DEFAULT_SHARPNESS_EPSILON,
    MeasureContext,
    MeasuresSpec,
    SharpnessSpec,
    compute_measures,
    measure_names,
)
from flatvol.progress import ProgressBar
from flatvol.train.checkpoint import load_run
from flatvol.validate import check_device, check_positive_int


def flatness_measure_names() -> list[str]:
    """The measures `flatvol flatness` offers: the catalogue's 'flatness' group."""
    return measure_names(group="flatness")


def parse_measures(text: str) -> list[str]:
    """'sharpness,hessian_top_eig' -> ['sharpness', 'hessian_top_eig']; 'all' -> every one.

    Args:
        text: comma-separated catalogue flatness measure names, or 'all'.

    Returns:
        The names, in order, without repeats.
    """
    known = flatness_measure_names()
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return known
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise SpecError(f"--measures: unknown measure(s) {', '.join(unknown) or '(none given)'}; "
                        f"expected a comma-separated subset of {', '.join(known)} or 'all'")
    return list(dict.fromkeys(names))


def cli_settings(maximizer: str, epsilon: float, top_k: int | None,
                 n_hvp: int | None) -> MeasuresSpec:
    """The [measures] settings the CLI options stand for (unset options keep the catalogue's
    defaults, as in a spec).

    Args:
        maximizer: Keskar maximizer.
        epsilon: Keskar box size.
        top_k: number of top Hessian eigenvalues, or None.
        n_hvp: Hessian-vector products of the trace and Frobenius estimates, or None.

    Returns:
        The settings, validated like a spec's.
    """
    options: dict[str, dict[str, Any]] = {}
    if top_k is not None:
        options["hessian_top_eig"] = {"k": top_k}
    if n_hvp is not None:
        options["hessian_trace"] = {"n_hvp": n_hvp}
        options["hessian_frobenius"] = {"n_hvp": n_hvp}
    try:
        sharpness = SharpnessSpec(epsilon=epsilon, maximizer=maximizer)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        option = "--" + str(error["loc"][-1]).replace("_", "-")
        raise SpecError(f"{option}: {error['msg']} (got {error['input']!r})") from None
    return MeasuresSpec(sharpness=sharpness, options=options)


def flatness_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by 'flatvol train'.")],
    measures: Annotated[str, typer.Option(
        "--measures", help=f"Comma-separated: {', '.join(flatness_measure_names())}, or 'all'.")
    ] = "sharpness,hessian_top_eig,hessian_trace",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    maximizer: Annotated[
        str, typer.Option(help="Keskar maximizer: paper | lbfgsb | fast (as in specs).")
    ] = DEFAULT_MAXIMIZER,
    epsilon: Annotated[float, typer.Option(help="Keskar box size eps.")] = \
        DEFAULT_SHARPNESS_EPSILON,
    top_k: Annotated[int | None, typer.Option(
        help="Number of top Hessian eigenvalues [default: the measure's, 1].")] = None,
    n_hvp: Annotated[int | None, typer.Option(
        help="Hessian-vector products for trace/Frobenius [default: the measures' own].")
    ] = None,
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
    for option, value in (("--top-k", top_k), ("--n-hvp", n_hvp), ("--chunk-size", chunk_size)):
        if value is not None:
            check_positive_int(value, option, at_most=MAX_OPTION_COUNT)
    if (problem := bound_problem(seed, 0, MAX_SEED)) is not None:
        raise SpecError(f"--seed: {problem}")
    settings = cli_settings(maximizer, epsilon, top_k, n_hvp)
    check_device(device)
    run = load_run(run_dir, data_dir=data_dir, device=device)
    # --seed is the seed of every measure as given (a sweep derives one per measure instead).
    context = MeasureContext(settings, seed=seed, device=device, derive_seeds=False,
                             chunk_size=chunk_size, progress=progress)
    with ProgressBar("flatness", total=len(names), enabled=progress, unit="measures") as bar:
        for done, name in enumerate(names):
            bar.update(done, status=name)
            compute_measures([name], run.model, run.task, context)
        bar.update(len(names), status="")
    results = {name: context.details[name] for name in names}
    header = {"run_dir": str(run_dir), "train_size": len(run.task.S), "device": device,
              "seed": seed}
    if json_output:
        typer.echo(dumps_json({**header, **results}))
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
