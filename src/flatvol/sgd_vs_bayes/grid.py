"""An sgd-vs-bayes grid: the spec's [grid] axes (width, |S|, batch size) times its optimizers,
each cell one sgd-vs-bayes experiment in one results store.

Every cell is validated (its data loaded, its model built) before any network is trained. The
cells then run one after another, in the order of SgdVsBayesSpec.grid_cells(); each records its
networks chunk by chunk and its volumes in batches in OUT/results.sqlite, so a killed grid
resumes where it stopped (finished cells cost only a read).

Outputs: OUT/cells/<cell>/ (each cell's spec.json, functions.csv, points.csv, summary.json and
figures, as for a single experiment), OUT/grid.csv and OUT/grid.json (one row per cell and
optimizer, flatvol.sgd_vs_bayes.grid_analysis.GRID_COLUMNS) and OUT/grid.png.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flatvol.data.task import TaskData
from flatvol.experiments.build import load_run_task
from flatvol.experiments.store import Store
from flatvol.io import atomic_write, atomic_write_json, dumps_json
from flatvol.models import build_model
from flatvol.progress import ProgressEvent, ProgressFn
from flatvol.sgd_vs_bayes.function_store import FunctionExperiment
from flatvol.sgd_vs_bayes.grid_analysis import GRID_COLUMNS, grid_figure, grid_rows
from flatvol.sgd_vs_bayes.run import (
    SgdVsBayesResult,
    resolve_spec,
    run_cell,
    write_csv,
)
from flatvol.sgd_vs_bayes.spec import GridCell, SgdVsBayesSpec


@dataclass(frozen=True)
class SgdVsBayesGridResult:
    """Each cell with its result, the grid table (one row per cell and optimizer) and files."""

    spec: SgdVsBayesSpec
    cells: list[tuple[GridCell, SgdVsBayesResult]]
    rows: list[dict[str, Any]]
    seconds: float  # wall time of this call
    files: dict[str, Path] = field(default_factory=dict)


def check_grid(spec: SgdVsBayesSpec, data_dir: str | Path | None) -> dict[int, TaskData]:
    """Load every cell's data and build every cell's model once, before any work.

    Args:
        spec: the grid spec.
        data_dir: the data directory (None: FLATVOL_DATA or the embedded subset).

    Returns:
        The task of each |S| in the grid.

    Raises:
        DataError, SpecError: one line naming the cell and the field.
    """
    tasks: dict[int, TaskData] = {}
    for cell in spec.grid_cells():
        size = cell.spec.data.train_size
        if size not in tasks:
            tasks[size] = load_run_task(cell.spec, 0, data_dir)
        build_model(cell.spec.model.arch, tasks[size].input_shape, cell.spec.prior(), seed=0,
                    outputs=tasks[size].outputs)
    return tasks


def run_sgd_vs_bayes_grid(spec: SgdVsBayesSpec, out: str | Path,
                          data_dir: str | Path | None = None,
                          device: str | torch.device = "cpu", progress: ProgressFn | None = None,
                          networks: int | None = None, workers: int = 1
                          ) -> SgdVsBayesGridResult:
    """Run every cell of the spec's grid (a spec without a grid is a grid of one cell).

    Args:
        spec: the validated spec (a file or packaged name is read by the caller).
        out: the output directory; re-running with the same one resumes.
        data_dir, device: as for a sweep.
        progress: called with each cell's ProgressEvents, their keys prefixed with the cell's
            name.
        networks: overrides the networks of every cell.
        workers: chunks of networks trained at once, in spawned processes (sample_functions).

    Returns:
        The cells' results, the grid table and the files written.
    """
    start = time.perf_counter()
    spec = resolve_spec(spec, networks)
    tasks = check_grid(spec, data_dir)
    out_dir = Path(out)
    results = []
    with Store(out_dir) as store:
        store.add_spec(spec.spec_hash(), spec.name, dumps_json(spec.model_dump(mode="json")))
        for cell in spec.grid_cells():
            cell_dir = out_dir / "cells" / cell.name
            cell_dir.mkdir(parents=True, exist_ok=True)

            def cell_progress(event: ProgressEvent, name: str = cell.name) -> None:
                if progress is not None:
                    progress(dataclasses.replace(event, key=f"{name} {event.key}"))

            grid = {"name": spec.name, "cell": cell.name, "values": cell.values}
            result = run_cell(cell.spec, tasks[cell.spec.data.train_size], store, cell_dir,
                              device, cell_progress, grid=grid, workers=workers)
            results.append((cell, result))
    rows = grid_rows([FunctionExperiment(r.spec.spec_hash(), r.info, r.samples, r.volumes)
                      for _, r in results])
    files = {"table": write_csv(out_dir / "grid.csv", rows, GRID_COLUMNS),
             "summary": out_dir / "grid.json", "figure": out_dir / "grid.png"}
    seconds = time.perf_counter() - start
    atomic_write_json(files["summary"], {"name": spec.name, "cells": len(results),
                                         "seconds_this_call": round(seconds, 1), "rows": rows})
    figure = grid_figure(rows)
    atomic_write(files["figure"], lambda fh: figure.savefig(fh, dpi=130, format="png"))
    return SgdVsBayesGridResult(spec, results, rows, seconds, files)
