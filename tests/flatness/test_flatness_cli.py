"""`flatvol flatness RUN_DIR --measures ... --json` on a run directory written by save_run."""

from __future__ import annotations

import inspect
import json

import pytest
import typer
from typer.testing import CliRunner

from flatvol.cli.flatness import flatness_command, flatness_measure_names, parse_measures
from flatvol.errors import SpecError
from flatvol.flatness import keskar_sharpness
from flatvol.measures import DEFAULT_MAXIMIZER, SharpnessSpec
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
    assert set(flatness_measure_names()) <= set(out)
    assert out["train_size"] == 40  # S only, never the attack set
    # One default maximizer for the CLI and specs, and the one used is recorded.
    assert out["sharpness"]["maximizer"] == DEFAULT_MAXIMIZER == SharpnessSpec().maximizer
    # ... and it is the one that finds the largest value fastest, as keskar_sharpness's own default.
    default = inspect.signature(keskar_sharpness).parameters["maximizer"].default
    assert DEFAULT_MAXIMIZER == default == "fast"
    assert out["sharpness"]["n_examples"] == 40
    assert out["sharpness"]["sharpness"] > 0 and "log10_sharpness" in out["sharpness"]
    assert len(out["hessian_top_eig"]["eigenvalues"]) == 2
    assert out["hessian_trace"]["n_hvp"] == 9


def test_text_output_and_maximizer_option(app, run_dir):
    result = CliRunner().invoke(
        app, ["flatness", str(run_dir), "--measures", "sharpness", "--maximizer", "lbfgsb",
              "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "sharpness: sharpness=" in result.stdout and "maximizer=lbfgsb" in result.stdout


def test_bad_measure_names_are_one_line_spec_errors(app, run_dir):
    with pytest.raises(SpecError, match="unknown measure"):
        parse_measures("sharpness,volume")  # volume is a measure, but not a flatness one
    result = CliRunner().invoke(app, ["flatness", str(run_dir), "--measures", "nope"])
    assert isinstance(result.exception, SpecError)
    assert parse_measures("sharpness, hessian_top_eig,sharpness") == ["sharpness",
                                                                      "hessian_top_eig"]
    result = CliRunner().invoke(app, ["flatness", str(run_dir), "--maximizer", "best"])
    assert isinstance(result.exception, SpecError) and "--maximizer" in str(result.exception)


def test_cli_measures_are_the_catalogue_flatness_entries_with_spec_names():
    from flatvol.measures import measure_entries

    names = flatness_measure_names()
    assert names == sorted(e.name for e in measure_entries() if e.group == "flatness")
    assert {"sharpness", "hessian_top_eig", "hessian_trace", "pac_bayes_sigma"} <= set(names)
    assert "volume" not in names and "accuracy" not in names
