"""`flatvol flatness RUN_DIR --measures ... --json` on a run directory written by save_run."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from flatvol.errors import SpecError
from flatvol.flatness.cli import MEASURE_NAMES, flatness_command, parse_measures
from flatvol.models import build_model
from flatvol.train.checkpoint import save_run


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("flatness")(flatness_command)
    app.command("noop")(lambda: None)  # two commands, so 'flatness' is a subcommand
    return app


@pytest.fixture
def run_dir(tmp_path):
    model = build_model("fcn:8", (1, 28, 28), seed=0)
    info = {"task": "mnist", "train_size": 40, "attack_size": 5, "test_size": 10,
            "model": "fcn:8", "prior": {"sigma_w2": 2.0, "sigma_b2": 1.0}, "seed": 0}
    save_run(tmp_path / "run", model, info)
    return tmp_path / "run"


def test_json_has_one_field_per_measure(app, run_dir):
    result = CliRunner().invoke(
        app, ["flatness", str(run_dir), "--measures", "all", "--json", "--no-progress",
              "--top-k", "2", "--n-hvp", "9"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(MEASURE_NAMES) <= set(out)
    assert out["train_size"] == 40  # S only, never the attack set
    assert out["keskar"]["n_examples"] == 40 and out["keskar"]["maximizer"] == "fast"
    assert out["keskar"]["sharpness"] > 0 and "log10_sharpness" in out["keskar"]
    assert len(out["hessian_top"]["eigenvalues"]) == 2
    assert out["hessian_trace"]["n_hvp"] == 9


def test_text_output_and_maximizer_option(app, run_dir):
    result = CliRunner().invoke(
        app, ["flatness", str(run_dir), "--measures", "keskar", "--maximizer", "lbfgsb",
              "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "keskar: sharpness=" in result.stdout and "maximizer=lbfgsb" in result.stdout


def test_bad_measure_names_are_one_line_spec_errors(app, run_dir):
    with pytest.raises(SpecError, match="unknown measure"):
        parse_measures("keskar,volume")
    result = CliRunner().invoke(app, ["flatness", str(run_dir), "--measures", "nope"])
    assert isinstance(result.exception, SpecError)
    assert parse_measures("keskar, hessian_top,keskar") == ["keskar", "hessian_top"]
