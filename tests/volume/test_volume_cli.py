"""`flatvol volume` through a typer app holding only volume_command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from flatvol.cli.volume import volume_command
from flatvol.errors import CheckpointError, SpecError, VolumeError
from flatvol.volume import VolumeEstimator, arccos_kernel

REQUIRED = {"log_marginal_likelihood_nats", "log10_volume", "estimator", "converged",
            "iterations", "seconds"}


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()
    app.command()(volume_command)
    return app


@pytest.fixture()
def files(tmp_path):
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    K = arccos_kernel(x, 2)
    y = (x[:, 0] > 0).numpy().astype(np.int64)
    np.save(tmp_path / "K.npy", K)
    np.save(tmp_path / "y.npy", y)
    return tmp_path, K, y


def run(app, args):
    return CliRunner().invoke(app, args)


@pytest.mark.parametrize("estimator", ["ep-orthant", "orthant-is", "ep-probit", "laplace"])
def test_kernel_and_labels_json(app, files, estimator):
    d, K, y = files
    res = run(app, ["--kernel", str(d / "K.npy"), "--labels", str(d / "y.npy"), "--json",
                    "--estimator", estimator, "--samples", "500"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert REQUIRED <= set(out) and out["estimator"] == estimator and out["converged"]
    # --samples reaches only an estimator that takes it (the registry refuses the others)
    expected = VolumeEstimator(K).log_volume(
        y, estimator, **({"n_samples": 500} if estimator == "orthant-is" else {}))
    assert out["log10_volume"] == pytest.approx(expected.log10_volume, rel=1e-9)


def test_conditional_with_n_train(app, files):
    d, _, _ = files
    res = run(app, ["--kernel", str(d / "K.npy"), "--labels", str(d / "y.npy"), "--json",
                    "--n-train", "8"])
    out = json.loads(res.output)
    assert out["log10_volume_conditional"] == pytest.approx(
        out["log10_volume"] - out["log10_volume_S"])
    assert "log10_volume_train" not in out  # one name for V(f on S): CLI, store, Python
    assert 0 < out["pac_bayes_bound"] < 1


def test_run_directory(app, tmp_path):
    from flatvol.models import build_model
    from flatvol.train import save_run

    model = build_model("fcn:20,20", (1, 28, 28), seed=0)
    info = dict(task="mnist", train_size=30, attack_size=0, test_size=40, model="fcn:20,20",
                prior={"sigma_w2": 2.0, "sigma_b2": 1.0}, seed=0, data_seed=0)
    save_run(tmp_path / "run", model, info)
    res = run(app, [str(tmp_path / "run"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert REQUIRED | {"log10_volume_conditional"} <= set(out)
    assert out["kernel"] == "analytic" and out["n"] == 70 and out["n_train"] == 30
    assert math.isfinite(out["log10_volume_conditional"])
    assert out["kernel_info"]["kind"] == "analytic" and out["kernel_info"]["seconds"] >= 0
    # An analytic kernel is exact: its error carried to the volumes is 0.
    for name in ("log10_volume", "log10_volume_S", "log10_volume_conditional"):
        assert out[f"{name}_stderr"] == 0.0


def test_run_directory_with_a_monte_carlo_kernel_records_its_settings(app, tmp_path):
    from flatvol.models import build_model
    from flatvol.train import save_run

    model = build_model("cnn:2,3", (1, 28, 28), seed=0)
    info = dict(task="mnist", train_size=20, attack_size=0, test_size=10, model="cnn:2,3",
                prior={"sigma_w2": 2.0, "sigma_b2": 1.0}, seed=0, data_seed=0)
    save_run(tmp_path / "run", model, info)
    res = run(app, [str(tmp_path / "run"), "--json", "--mc-samples", "12", "--seed", "3"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["kernel"] == "mc"
    kernel = out["kernel_info"]
    assert kernel["mc_samples"] == 12 and kernel["mc_seed"] == 3 and kernel["n"] == 30
    assert kernel["seconds"] >= 0 and kernel["max_stderr"] > 0
    # The kernel's Monte-Carlo error reaches the volumes (jackknife over 10 batches of draws).
    assert kernel["mc_batches"] == 10
    for name in ("log10_volume", "log10_volume_S", "log10_volume_conditional"):
        assert math.isfinite(out[f"{name}_stderr"]) and out[f"{name}_stderr"] > 0, name
    plain = run(app, [str(tmp_path / "run"), "--mc-samples", "12", "--seed", "3"])
    assert plain.exit_code == 0, plain.output
    lines = dict(line.split(": ", 1) for line in plain.output.splitlines() if ": " in line)
    assert float(lines["log10_volume_stderr"]) == pytest.approx(out["log10_volume_stderr"])
    assert float(lines["log10_volume_conditional_stderr"]) > 0


def test_bad_inputs_raise_one_line_errors(app, files, tmp_path):
    d, K, y = files
    np.save(tmp_path / "bad_y.npy", np.arange(20) - 1)  # 0..19 alone: 20 classes, valid
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    np.save(tmp_path / "rect.npy", np.ones((3, 4)))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    cases = [
        (["--kernel", str(d / "K.npy"), "--labels", str(tmp_path / "bad_y.npy")], VolumeError,
         "{0,1} or {-1,+1}"),
        (["--kernel", str(d / "K.npy"), "--labels", str(tmp_path / "obj.npy")], VolumeError,
         "expected a numeric labels array, got Python objects"),
        (["--kernel", str(tmp_path / "rect.npy"), "--labels", str(d / "y.npy")], VolumeError,
         "square"),
        (["--kernel", str(tmp_path / "junk.npy"), "--labels", str(d / "y.npy")], VolumeError,
         "junk.npy"),
        (["--kernel", str(tmp_path / "none.npy"), "--labels", str(d / "y.npy")], VolumeError,
         "file not found"),
        (["--kernel", str(d / "K.npy")], SpecError, "--labels"),
        (["--kernel", str(d / "K.npy"), "--labels", str(d / "y.npy"), "--proposal", "x"],
         SpecError, "--proposal"),
        (["--kernel", str(d / "K.npy"), "--labels", str(d / "y.npy"), "--estimator", "gpy"],
         VolumeError, "unknown estimator"),
        ([str(tmp_path)], CheckpointError, "run.json"),
    ]
    for args, error, text in cases:
        res = run(app, args)
        assert isinstance(res.exception, error), (args, res.exception)
        message = str(res.exception)
        assert text in message and "\n" not in message, message


def test_plain_text_output(app, files):
    d, _, _ = files
    res = run(app, ["--kernel", str(d / "K.npy"), "--labels", str(d / "y.npy")])
    assert res.exit_code == 0
    lines = dict(line.split(": ", 1) for line in res.output.strip().splitlines())
    assert lines["estimator"] == "ep-orthant" and float(lines["log10_volume"]) < 0
    assert lines["converged"] == "True"


def test_run_directory_with_an_auto_monte_carlo_count_shows_its_check(app, tmp_path):
    from flatvol.models import build_model
    from flatvol.train import save_run

    model = build_model("cnn:2,3", (1, 28, 28), seed=0)
    info = dict(task="mnist", train_size=20, attack_size=0, test_size=10, model="cnn:2,3",
                prior={"sigma_w2": 2.0, "sigma_b2": 1.0}, seed=0, data_seed=0)
    save_run(tmp_path / "run", model, info)
    res = run(app, [str(tmp_path / "run"), "--json", "--mc-samples", "auto"])
    assert res.exit_code == 0, res.output
    kernel = json.loads(res.output[res.output.index("{"):])["kernel_info"]
    check = kernel["mc_convergence"]
    assert check["converged"] and check["probe"] == "true labels y on S u E"
    assert kernel["mc_samples"] == check["rounds"][-1]["samples"]
    plain = run(app, [str(tmp_path / "run"), "--mc-samples", "auto"])
    assert plain.exit_code == 0, plain.output
    assert f"mc_convergence: {kernel['mc_samples']} draws" in plain.output
    # the check's limits come from the flags: a looser tolerance is recorded; an impossible
    # one within a small cap is refused in one line (the main CLI exits 2 on it)
    loose = run(app, [str(tmp_path / "run"), "--json", "--mc-samples", "auto",
                      "--mc-tolerance", "3", "--mc-max-samples", "128"])
    assert loose.exit_code == 0, loose.output
    check = json.loads(loose.output[loose.output.index("{"):])["kernel_info"]["mc_convergence"]
    assert check["tolerance"] == 3.0 and check["max_samples"] == 128
    refused = run(app, [str(tmp_path / "run"), "--mc-samples", "auto", "--mc-tolerance", "1e-12",
                        "--mc-max-samples", "8"])
    assert isinstance(refused.exception, VolumeError)
    assert "mc_max_samples=8" in str(refused.exception) and "\n" not in str(refused.exception)
