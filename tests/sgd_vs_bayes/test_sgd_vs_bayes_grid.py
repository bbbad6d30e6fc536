"""sgd-vs-bayes over a grid of width, |S| and batch size: cells, outputs, resume, metrics."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import flatvol.sgd_vs_bayes.run as svb
from flatvol.errors import SpecError
from flatvol.experiments.spec_files import packaged_spec_path
from flatvol.sgd_vs_bayes.analysis import function_rows, summarize
from flatvol.sgd_vs_bayes.function_store import FunctionSample, VolumeTable, encode_function
from flatvol.sgd_vs_bayes.grid import run_sgd_vs_bayes_grid
from flatvol.sgd_vs_bayes.run import run_sgd_vs_bayes
from flatvol.sgd_vs_bayes.spec import (
    load_sgd_vs_bayes_spec,
    sgd_vs_bayes_spec_from_dict,
)

REPO = Path(__file__).resolve().parents[2]
GRID = {
    "name": "tinygrid",
    "data": {"task": "mnist", "train_size": 30, "test_size": 6},
    "model": {"arch": "fcn:8,8"},
    "train": {"max_epochs": 300},
    "optimizers": [{"name": "sgd", "lr": 0.05}],
    "sampling": {"networks": 16, "chunk": 8},
    "analysis": {"min_count": 2, "top": 4},
    "grid": {"width": [4, 8], "train_size": [20, 30], "batch_size": [8, "full"],
             "cells": [{"width": 8, "networks": 8},
                       {"width": 8, "train_size": 30, "batch_size": "full", "skip": True}]},
}


def test_cells_are_the_product_of_the_axes_with_rules_applied():
    spec = sgd_vs_bayes_spec_from_dict(GRID)
    cells = spec.grid_cells()
    assert [c.name for c in cells] == ["w4-S20-b8", "w4-S20-bfull", "w4-S30-b8", "w4-S30-bfull",
                                       "w8-S20-b8", "w8-S20-bfull", "w8-S30-b8"]
    by_name = {c.name: c.spec for c in cells}
    assert by_name["w4-S30-bfull"].model.arch == "fcn:4,4"  # depth of the spec's fcn kept
    assert by_name["w4-S30-bfull"].train.batch_size == 30  # full batch = |S|
    assert by_name["w8-S20-b8"].train.batch_size == 8
    assert by_name["w8-S20-b8"].data.train_size == 20
    assert by_name["w4-S20-b8"].sampling.networks == 16
    assert by_name["w8-S20-b8"].sampling.networks == 8  # the width-8 rule
    assert all(c.spec.grid is None for c in cells)
    assert len({c.spec.spec_hash() for c in cells}) == len(cells)
    # a spec without a grid is one cell, itself
    plain = sgd_vs_bayes_spec_from_dict({k: v for k, v in GRID.items() if k != "grid"})
    (only,) = plain.grid_cells()
    assert only.spec is plain


@pytest.mark.parametrize("grid,message", [
    ({"width": [4, 4]}, "grid.width: expected distinct values, got [4, 4]"),
    ({"train_size": [0]}, "grid.train_size: expected values >= 1, got [0]"),
    ({"batch_size": ["half"]}, "grid.batch_size: expected an integer >= 1 or 'full', got 'half'"),
    ({"cells": [{"batch_size": 0}]}, "grid.cells[0].batch_size: expected an integer >= 1"),
    ({"width": [4], "cells": [{"skip": True}]}, "grid: every cell is skipped"),
    ({"depth": [2]}, "grid.depth: Extra inputs are not permitted"),
    ({"cells": [{"width": 4, "networks": 0}]}, "grid.cells[0].networks: Input should be greater"),
])
def test_bad_grids_fail_with_one_line_naming_the_field(grid, message):
    with pytest.raises(SpecError) as err:
        sgd_vs_bayes_spec_from_dict({**GRID, "grid": grid})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_width_axis_needs_an_fcn():
    spec = {**GRID, "model": {"arch": "cnn:4"}, "grid": {"width": [4]}}
    with pytest.raises(SpecError, match="grid.width needs an fcn model"):
        sgd_vs_bayes_spec_from_dict(spec)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    spec = sgd_vs_bayes_spec_from_dict(GRID)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FLATVOL_DATA", raising=False)
        return out, spec, run_sgd_vs_bayes_grid(spec, out)


def test_each_cell_is_the_experiment_of_its_own_spec(grid_run, tmp_path, monkeypatch):
    """A grid cell gives exactly what running the cell's spec alone gives."""
    monkeypatch.delenv("FLATVOL_DATA", raising=False)
    out, spec, grid = grid_run
    for cell, result in grid.cells[::3]:
        alone = run_sgd_vs_bayes(cell.spec, tmp_path / cell.name)
        assert alone.rows == result.rows
        np.testing.assert_array_equal(alone.samples["sgd"].labels_E,
                                      result.samples["sgd"].labels_E)
        assert result.samples["sgd"].seeds.tolist() == list(range(cell.spec.sampling.networks))


def test_grid_table_files_and_report(grid_run):
    from flatvol.analysis.report import write_report

    out, spec, grid = grid_run
    assert len(grid.rows) == 7  # 7 cells x 1 optimizer
    with open(out / "grid.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [r["cell"] for r in table] == [c.name for c, _ in grid.cells]
    for row, (cell, result) in zip(table, grid.cells, strict=True):
        (summary,) = result.summaries
        assert int(row["networks"]) == cell.spec.sampling.networks
        assert int(row["fitted"]) == summary.fitted
        assert row["width"] == str(cell.values["width"])
        assert row["batch_size"] == str(cell.values["batch_size"])
        assert float(row["posterior_mass_found"]) == pytest.approx(summary.posterior_mass_found)
        assert float(row["train_seconds"]) > 0  # recorded with the chunks
        assert (out / "cells" / cell.name / "functions.csv").is_file()
    saved = json.loads((out / "grid.json").read_text())
    assert saved["cells"] == 7 and len(saved["rows"]) == 7
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = write_report(out).read_text()
    assert "sgd-vs-bayes grid: tinygrid" in page and "w4-S30-bfull" in page


def test_rerun_resumes_without_training_and_keeps_compute_time(grid_run, monkeypatch):
    out, spec, first = grid_run

    def no_training(*args, **kwargs):
        raise AssertionError("every chunk should have been reused")

    monkeypatch.setattr(svb, "train_ensemble", no_training)
    again = run_sgd_vs_bayes_grid(spec, out, data_dir="embedded")
    # the same rows, including the training seconds read from the store; the volume seconds
    # add up over calls (this one only reads them)
    for new, old in zip(again.rows, first.rows, strict=True):
        assert new["volume_seconds"] >= old["volume_seconds"]
        assert {**new, "volume_seconds": 0} == {**old, "volume_seconds": 0}


def test_killed_grid_resumes_to_the_same_table(tmp_path, monkeypatch):
    """Killed in the third cell (after two cells are recorded), a re-run finishes the grid with
    the numbers of an uninterrupted run, without retraining the recorded cells."""
    monkeypatch.delenv("FLATVOL_DATA", raising=False)
    small = {**GRID, "grid": {"width": [4], "train_size": [20], "batch_size": [8, 10, "full"]}}
    spec = sgd_vs_bayes_spec_from_dict(small)
    whole = run_sgd_vs_bayes_grid(spec, tmp_path / "whole")

    class Killed(Exception):
        pass

    def progress(event) -> None:
        if event.key.startswith("w4-S20-bfull"):
            raise Killed

    with pytest.raises(Killed):
        run_sgd_vs_bayes_grid(spec, tmp_path / "killed", progress=progress)
    trained = []
    real = svb.train_ensemble
    monkeypatch.setattr(svb, "train_ensemble",
                        lambda *a, **k: trained.append(a[2].batch_size) or real(*a, **k))
    resumed = run_sgd_vs_bayes_grid(spec, tmp_path / "killed")
    assert set(trained) == {20}  # only the full-batch cell trained again
    drop = ("train_seconds", "volume_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.rows] == \
        [{k: v for k, v in r.items() if k not in drop} for r in whole.rows]


def test_posterior_mass_and_decisiveness_gap_by_hand():
    """Three networks on |E| = 2; volumes and prior marginals given."""
    labels = np.array([[1, 0], [1, 0], [1, 1]], dtype=np.uint8)
    sample = FunctionSample("sgd", np.arange(3), np.ones(3, dtype=np.int64),
                            np.ones(3, dtype=bool), labels)
    volumes = VolumeTable("ep-orthant", "analytic", -1.0,
                          {"10": math.log10(0.4) - 1.0, "11": math.log10(0.1) - 1.0},
                          {"10": True, "11": True}, np.array([0.7, 0.5]))
    rows = function_rows(sample, volumes, np.array([1, 0], dtype=np.uint8))
    s = summarize(sample, rows, np.array([1, 0]), min_count=1, top=2,
                  prior_marginals=volumes.prior_marginals)
    assert s.posterior_mass_found == pytest.approx(0.5)
    # P_opt(label 1) = (1, 1/3): decisiveness (1, 1/3) vs prior (0.4, 0)
    assert s.decisiveness_gap == pytest.approx(((1 - 0.4) + (1 / 3 - 0)) / 2)
    assert encode_function(labels[0]) == "10"


def test_shipped_grid_spec_is_valid_and_packaged():
    shipped = REPO / "specs" / "sgd_vs_bayes_grid.toml"
    packaged = REPO / "src" / "flatvol" / "specs" / "sgd_vs_bayes_grid.toml"
    assert shipped.read_text() == packaged.read_text()
    spec = load_sgd_vs_bayes_spec(packaged_spec_path("sgd_vs_bayes_grid"))
    cells = spec.grid_cells()
    widths = {c.values["width"] for c in cells}
    assert widths == {40, 256, 1024}
    assert {c.values["train_size"] for c in cells} == {200, 1000}
    assert {c.values["batch_size"] for c in cells} == {32, "full"}
