"""sgd-vs-bayes end to end on a tiny MNIST problem (S=30, E=8, 48 networks per optimizer)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import flatvol.sgd_vs_bayes.run as svb
from flatvol.cli.sgd_vs_bayes import sgd_vs_bayes_command
from flatvol.data import load_task
from flatvol.errors import SpecError
from flatvol.experiments.spec_files import packaged_spec_path
from flatvol.models import build_model
from flatvol.models import labels_of as labels_of_model
from flatvol.sgd_vs_bayes.function_store import decode_function, encode_function
from flatvol.sgd_vs_bayes.run import run_sgd_vs_bayes
from flatvol.sgd_vs_bayes.spec import (
    load_sgd_vs_bayes_spec,
    sgd_vs_bayes_spec_from_dict,
)
from flatvol.train import train_to_fit
from flatvol.volume import VolumeEstimator, fcn_kernel

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "name": "tiny",
    "data": {"task": "mnist", "train_size": 30, "test_size": 8},
    "model": {"arch": "fcn:8"},
    "train": {"max_epochs": 300},
    "optimizers": [{"name": "sgd", "lr": 0.05}, {"name": "adam", "lr": 0.005}],
    "sampling": {"networks": 48, "chunk": 20},
    "analysis": {"min_count": 2, "top": 4},
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("svb")
    spec = sgd_vs_bayes_spec_from_dict(TINY)
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before the autouse fixture
        mp.delenv("FLATVOL_DATA", raising=False)
        return out, spec, run_sgd_vs_bayes(spec, out)


def test_counts_are_the_functions_of_networks_trained_alone(tiny_run):
    """P_opt(f|S) counts what train_to_fit's networks compute on E, seed by seed."""
    out, spec, result = tiny_run
    task = load_task("mnist", train_size=30, test_size=8)
    sgd = result.samples["sgd"]
    assert sgd.seeds.tolist() == list(range(48))
    for seed in (0, 17, 47):
        model = build_model("fcn:8", task.input_shape, spec.prior(), seed=seed)
        alone = train_to_fit(model, task, spec.train_config(spec.optimizers[0]), seed=seed)
        assert bool(sgd.fitted[seed]) == (alone.status == "fitted")
        assert sgd.epochs[seed] == alone.epochs
        assert encode_function(labels_of_model(model, task.E.x)) == encode_function(
            sgd.labels_E[seed])
    rows = [r for r in result.rows if r["optimizer"] == "sgd"]
    assert sum(r["count"] for r in rows) == sgd.n_fitted
    assert sum(r["p_opt"] for r in rows) == pytest.approx(1.0)
    expected = Counter(encode_function(b) for b in sgd.labels_E[sgd.fitted])
    assert {r["function"]: r["count"] for r in rows} == dict(expected)


def test_conditional_volume_is_ratio_of_volumes_on_one_kernel(tiny_run):
    """V(f|S) = V(y_S, f_E) / V(y_S), both from the FCN's arccos kernel on S u E."""
    out, spec, result = tiny_run
    task = load_task("mnist", train_size=30, test_size=8)
    estimator = VolumeEstimator(fcn_kernel(build_model("fcn:8", task.input_shape),
                                           task.x_SE()))
    y_S = task.S.y.numpy().astype(float)
    log10_train = estimator.leading(30).log_volume(y_S).log10_volume
    assert result.volumes.log10_v_train == pytest.approx(log10_train, abs=1e-9)
    top = result.rows[0]
    full = estimator.log_volume(np.concatenate([y_S, decode_function(top["function"])]))
    assert top["log10_v_conditional"] == pytest.approx(full.log10_volume - log10_train,
                                                       abs=1e-9)
    # a conditional probability of 8 labels: at most 1, and at least 2^-8 / 100 for functions
    # the networks actually find (EP is accurate to ~0.3 log10 on such tiny problems)
    values = [r["log10_v_conditional"] for r in result.rows]
    assert max(values) <= 1e-9 and min(values) > math.log10(2**-8) - 2
    assert all(r["ep_converged"] for r in result.rows)
    # per-point marginals: P(1 | y_S) = V(y_S, 1) / V(y_S); with P(0 | y_S) they sum to 1
    K = estimator.kernel
    for j in (0, 5):
        rows = np.r_[np.arange(30), 30 + j]
        point = VolumeEstimator(K[np.ix_(rows, rows)])
        p1, p0 = (10 ** (point.log_volume(np.r_[y_S, label]).log10_volume - log10_train)
                  for label in (1.0, 0.0))
        assert result.volumes.prior_marginals[j] == pytest.approx(p1, abs=1e-6)
        assert p1 + p0 == pytest.approx(1.0, abs=0.01)


def test_outputs_table_summary_and_figures(tiny_run):
    out, spec, result = tiny_run
    for name in ("spec.json", "functions.csv", "points.csv", "summary.json", "results.sqlite",
                 "p_opt_vs_v.png", "mingard.png"):
        assert (out / name).is_file(), name
    with open(out / "functions.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(result.rows)
    assert {r["optimizer"] for r in table} == {"sgd", "adam"}
    summary = json.loads((out / "summary.json").read_text())
    for name in ("sgd", "adam"):
        s = summary["optimizers"][name]
        assert s["networks"] == 48 and 0 < s["fitted"] <= 48
        assert s["distinct_functions"] == sum(r["optimizer"] == name for r in table)
        assert len(s["top_functions"]) <= 4
        counts = [f["count"] for f in s["top_functions"]]
        assert counts == sorted(counts, reverse=True)
    assert (out / "mingard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = summary["E_points"]
    assert [p["point"] for p in points] == list(range(8))
    sgd = result.samples["sgd"]
    for p in points:
        assert 0 <= p["prior_p_label1"] <= 1
        assert p["sgd_p_label1"] == pytest.approx(sgd.labels_E[sgd.fitted][:, p["point"]].mean())


def test_rerun_resumes_from_saved_chunks_and_volumes(tiny_run, monkeypatch):
    out, spec, first = tiny_run

    def no_training(*args, **kwargs):
        raise AssertionError("chunks should have been reused")

    monkeypatch.setattr(svb, "train_ensemble", no_training)
    monkeypatch.setattr(VolumeEstimator, "log_volume", no_training)
    again = run_sgd_vs_bayes(spec, out, data_dir="embedded")
    assert again.rows == first.rows
    # more networks: only the new chunk is trained
    monkeypatch.undo()
    trained = []
    real = svb.train_ensemble
    monkeypatch.setattr(svb, "train_ensemble",
                        lambda *a, **k: trained.append(list(a[3])) or real(*a, **k))
    more = run_sgd_vs_bayes(spec, out, data_dir="embedded", networks=60)
    assert trained == [list(range(40, 60)), list(range(40, 60))]  # sgd, then adam
    assert more.samples["sgd"].seeds.tolist() == list(range(60))


def test_cli_runs_and_reports(tmp_path):
    spec_path = tmp_path / "cli.toml"
    spec_path.write_text(
        'name = "cli"\n[data]\ntrain_size = 20\ntest_size = 5\n[model]\narch = "fcn:4"\n'
        '[[optimizers]]\nname = "adam"\nlr = 0.01\n[sampling]\nnetworks = 8\nchunk = 8\n')
    app = typer.Typer()
    app.command()(sgd_vs_bayes_command)
    result = CliRunner().invoke(app, [str(spec_path), "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "adam" in result.output and (tmp_path / "o" / "mingard.png").is_file()


@pytest.mark.parametrize("patch,message", [
    ({"sampling": {"networks": 0}}, "sampling.networks: Input should be greater than or equal"),
    ({"data": {"train_size": "many"}}, "data.train_size: Input should be a valid integer"),
    ({"volume": {"estimator": "exact"}}, "volume.estimator"),
    ({"train": {"fit": "all"}}, "train.fit must be 'S'"),
    ({"optimizers": [{"name": "sgd"}, {"name": "sgd"}]}, "labels must be unique"),
])
def test_bad_specs_fail_with_one_line_naming_the_field(tmp_path, patch, message):
    spec = {**TINY, **patch}
    text = _toml(spec)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_sgd_vs_bayes_spec(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_shipped_spec_is_valid_and_packaged():
    shipped = REPO / "specs" / "sgd_vs_bayes.toml"
    packaged = REPO / "src" / "flatvol" / "specs" / "sgd_vs_bayes.toml"
    assert shipped.read_text() == packaged.read_text()
    spec = load_sgd_vs_bayes_spec(packaged_spec_path("sgd_vs_bayes"))
    assert {o.name for o in spec.optimizers} == {"sgd", "adam"}
    assert spec.sampling.networks >= 10_000 and 20 <= spec.data.test_size <= 50


def _toml(spec: dict) -> str:
    """Just enough TOML for these specs (tables, arrays of tables, scalars)."""
    lines = []
    for key, value in spec.items():
        if not isinstance(value, (dict, list)):
            lines.append(f"{key} = {json.dumps(value)}")
    for key, value in spec.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
        elif isinstance(value, list):
            for item in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def test_other_data_never_reuses_saved_chunks(tiny_run, monkeypatch):
    """Same spec, different data (the full MNIST instead of the embedded subset): retrain."""
    shared = REPO.parent / "shared" / "data"
    if not (shared / "mnist").is_dir():
        pytest.skip("full MNIST not available")
    out, spec, _ = tiny_run

    def training(*args, **kwargs):
        raise RuntimeError("trained again")

    monkeypatch.setattr(svb, "train_ensemble", training)
    with pytest.raises(RuntimeError, match="trained again"):
        run_sgd_vs_bayes(spec, out, data_dir=shared)


def test_store_holds_samples_and_volumes_and_the_report_renders_them(tiny_run):
    """The experiment is in the results store (the same numbers read back) and `flatvol report`
    renders it from there."""
    from flatvol.analysis.report import load_results, write_report
    from flatvol.sgd_vs_bayes.function_store import load_experiments

    out, spec, result = tiny_run
    (experiment,) = [e for e in load_experiments(out) if e.spec_hash == spec.spec_hash()]
    assert experiment.info["name"] == "tiny" and list(experiment.samples) == ["sgd", "adam"]
    for name, sample in result.samples.items():
        stored = experiment.samples[name]
        np.testing.assert_array_equal(stored.labels_E, sample.labels_E)
        np.testing.assert_array_equal(stored.fitted, sample.fitted)
        np.testing.assert_array_equal(stored.epochs, sample.epochs)
    assert experiment.volumes.log10_v_train == result.volumes.log10_v_train
    np.testing.assert_array_equal(experiment.volumes.prior_marginals,
                                  result.volumes.prior_marginals)
    for bits, value in result.volumes.log10_v_full.items():
        assert experiment.volumes.log10_v_full[bits] == value
    results = load_results(out)
    assert results.runs.empty and results.experiments["sgd-vs-bayes"]
    page = write_report(out).read_text()
    assert "sgd-vs-bayes: tiny" in page and "data:image/png;base64" in page
    assert result.rows[0]["function"] in page
    assert (out / "figures").is_dir() and any((out / "figures").rglob("mingard.png"))


def test_flatvol_report_in_a_fresh_process_renders_the_experiment(tiny_run):
    """The report sits below the slice and finds its sections through a hook: the CLI must
    register them (a fresh interpreter, so nothing this test module imported helps)."""
    out, _, result = tiny_run
    report_dir = out.parent / f"{out.name}-report"
    done = subprocess.run([sys.executable, "-m", "flatvol", "report", str(out), "--resamples",
                           "0", "--to", str(report_dir)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    page = (report_dir / "report.html").read_text()
    assert "sgd-vs-bayes: tiny" in page and result.rows[0]["function"] in page


def test_write_report_from_python_finds_the_experiment_without_importing_the_slice(tiny_run):
    """A library caller of write_report who never imports flatvol.sgd_vs_bayes still gets its
    sections: the slice is declared as a `flatvol.report_sections` entry point."""
    out, _, result = tiny_run
    report_dir = out.parent / f"{out.name}-library-report"
    code = ("import sys\n"
            "from flatvol.analysis.report import write_report\n"
            "assert 'flatvol.sgd_vs_bayes' not in sys.modules\n"
            f"write_report({str(report_dir)!r}, results=__import__('flatvol.analysis.report', "
            f"fromlist=['load_results']).load_results({str(out)!r}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    page = (report_dir / "report.html").read_text()
    assert "sgd-vs-bayes: tiny" in page and result.rows[0]["function"] in page


def test_worker_processes_train_the_chunks_the_driver_would(tmp_path, monkeypatch):
    """--workers 2: the chunks train in two spawned processes, each on one thread, and the
    store gets the networks, functions and table of one process training them in turn; the
    progress counts every network of the sample once, up to its total."""
    import torch

    from flatvol.experiments.execute import torch_threads

    spec = sgd_vs_bayes_spec_from_dict({**TINY, "optimizers": [{"name": "sgd", "lr": 0.05}],
                                        "sampling": {"networks": 50, "chunk": 20}})
    import flatvol.experiments.backends as backends

    events, submitted = [], []
    submit = backends.WorkerPool.submit
    monkeypatch.setattr(backends.WorkerPool, "submit",
                        lambda self, label, *args: submitted.append(label)
                        or submit(self, label, *args))
    with torch_threads(2):
        pooled = run_sgd_vs_bayes(spec, tmp_path / "pool", data_dir="embedded", workers=2,
                                  progress=events.append)
        assert torch.get_num_threads() == 2  # the driver's own setting is left as it was
    with torch_threads(1):
        alone = run_sgd_vs_bayes(spec, tmp_path / "one", data_dir="embedded")
    for column in ("seeds", "epochs", "fitted", "labels_E"):
        assert np.array_equal(getattr(pooled.samples["sgd"], column),
                              getattr(alone.samples["sgd"], column)), column
    assert pooled.rows == alone.rows
    assert submitted == ["sgd seeds 0..19", "sgd seeds 20..39", "sgd seeds 40..49"]
    networks = [e.completed for e in events if e.key == "sgd"]
    assert networks[-1] == 50 and max(networks) == 50
    # resumed: nothing is trained again, with or without workers
    again = run_sgd_vs_bayes(spec, tmp_path / "pool", data_dir="embedded", workers=2)
    assert again.rows == alone.rows
