"""sgd-vs-bayes over draws of E from a held-out pool ([resample]) on a tiny MNIST problem
(S = 30, a pool of 40, 40 networks per optimizer): each draw's P_opt is the networks' labels
there, each P_B the predictive's value on the draw's points, and a re-run reads them back."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import flatvol.volume.predictive as predictive_module
from flatvol.cli import app
from flatvol.data import load_task
from flatvol.errors import SpecError
from flatvol.models import build_model
from flatvol.sgd_vs_bayes.function_store import decode_function, encode_function
from flatvol.sgd_vs_bayes.resample import draws_of_E, run_resampled, spread_over_draws
from flatvol.sgd_vs_bayes.run import run_sgd_vs_bayes
from flatvol.sgd_vs_bayes.spec import sgd_vs_bayes_spec_from_dict
from flatvol.volume import fcn_kernel
from flatvol.volume.predictive import posterior_predictive

TINY = {
    "name": "tiny-resample",
    "data": {"task": "mnist", "train_size": 30, "test_size": 40},
    "model": {"arch": "fcn:8"},
    "train": {"max_epochs": 300},
    "optimizers": [{"name": "sgd", "lr": 0.05}, {"name": "adam", "lr": 0.005}],
    "sampling": {"networks": 40, "chunk": 20},
    "analysis": {"min_count": 2, "top": 4},
    "resample": {"sizes": [4, 8], "draws": 2, "posteriors": ["ep-orthant", "gp-regression"],
                 "n_samples": 500},
}


@pytest.fixture(scope="module")
def resampled(tmp_path_factory):
    out = tmp_path_factory.mktemp("resample")
    spec = sgd_vs_bayes_spec_from_dict(TINY)
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before the autouse fixture
        mp.delenv("FLATVOL_DATA", raising=False)
        return out, spec, run_resampled(spec, out)


def test_draws_are_seeded_subsets_of_the_pool():
    spec = sgd_vs_bayes_spec_from_dict(TINY)
    draws = draws_of_E(spec, 40)
    assert [(d.size, d.index) for d in draws] == [(4, 0), (4, 1), (8, 0), (8, 1)]
    for d in draws:
        assert len(set(d.points.tolist())) == d.size and d.points.max() < 40
    assert not np.array_equal(draws[0].points, draws[1].points)
    # each draw has its own seed: more draws leave the first ones as they were
    more = sgd_vs_bayes_spec_from_dict({**TINY, "resample": {**TINY["resample"], "draws": 3}})
    again = draws_of_E(more, 40)
    assert np.array_equal(again[0].points, draws[0].points)
    assert np.array_equal(again[3].points, draws[2].points)


def test_p_opt_is_the_networks_labels_on_the_draw(resampled):
    out, spec, result = resampled
    from flatvol.experiments.store import Store
    from flatvol.sgd_vs_bayes.run import sample_functions

    task = load_task("mnist", train_size=30, test_size=40)
    draws = draws_of_E(spec, 40)
    with Store(out) as store:  # read back from the store: no training
        sample = sample_functions(spec, task, spec.optimizers[0], store)
    fitted = sample.labels_E[sample.fitted]
    for d in draws:
        expected = Counter(encode_function(row[d.points]) for row in fitted)
        rows = [r for r in result.functions if r["optimizer"] == "sgd" and r["size"] == d.size
                and r["draw"] == d.index and r["posterior"] == "ep-orthant"]
        assert rows and all(r["count"] == expected[r["function"]] for r in rows)
        assert all(r["p_opt"] == pytest.approx(expected[r["function"]] / len(fitted))
                   for r in rows)
        y_E = task.E.y.numpy()[d.points]
        assert all(r["errors_E"] == int(np.sum(decode_function(r["function"], 2) != y_E))
                   for r in rows)


def test_p_b_is_the_predictive_on_the_draws_points(resampled):
    out, spec, result = resampled
    task = load_task("mnist", train_size=30, test_size=40)
    K = fcn_kernel(build_model("fcn:8", task.input_shape, spec.prior()), task.x_SE())
    y_S = task.S.y.numpy().astype(float)
    draws = {(d.size, d.index): d for d in draws_of_E(spec, 40)}
    for posterior in ("ep-orthant", "gp-regression"):
        pred = posterior_predictive(K, y_S, posterior)
        rows = [r for r in result.functions if r["posterior"] == posterior]
        for r in rows:
            d = draws[(r["size"], r["draw"])]
            value = pred.log10_probability(decode_function(r["function"], 2), d.points,
                                           n_samples=500, seed=0)
            assert r["log10_p_b"] == pytest.approx(value.log10_probability, abs=1e-9)
            assert r["stderr_log10"] == pytest.approx(value.stderr_log10, abs=1e-9)


def test_files_and_spread(resampled):
    out, spec, result = resampled
    for name in ("resample.csv", "resample_functions.csv", "resample.json", "resample.png",
                 "spec.json"):
        assert (out / name).is_file(), name
    with open(out / "resample.csv") as fh:
        rows = list(csv.DictReader(fh))
    # 2 posteriors x 2 sizes x 2 draws x 2 optimizers
    assert len(rows) == len(result.rows) == 16
    spread = {(s["posterior"], s["size"], s["optimizer"]): s for s in result.spread}
    values = [r["top_median_abs_log10_ratio"] for r in result.rows
              if (r["posterior"], r["size"], r["optimizer"]) == ("gp-regression", 8, "adam")]
    entry = spread[("gp-regression", 8, "adam")]["top_median_abs_log10_ratio"]
    assert entry["mean"] == pytest.approx(np.mean(values))
    assert entry["sd"] == pytest.approx(np.std(values, ddof=1))
    assert entry["min"] == min(values) and entry["max"] == max(values)
    # a statistic no draw could give stays out of the spread, counted
    nan_rows = [{**r, "pearson_log10": math.nan} for r in result.rows]
    assert spread_over_draws(nan_rows)[0]["pearson_log10"]["draws"] == 0


def test_a_rerun_reads_every_value_back(resampled, monkeypatch):
    out, spec, result = resampled

    def no_sampling(*args, **kwargs):
        raise AssertionError("P_B computed again")

    monkeypatch.setattr(predictive_module.Predictive, "log10_probability", no_sampling)
    again = run_resampled(spec, out)
    assert again.rows == result.rows
    assert again.functions == result.functions
    # the compute time of P_B is kept over calls, not replaced by the reading's
    posteriors = [k for k in result.seconds if k.startswith("posterior_")]
    assert posteriors and all(result.seconds[k] > 0 for k in posteriors)
    assert all(again.seconds[k] >= result.seconds[k] for k in posteriors), again.seconds


def test_cli_runs_a_resampled_spec(tmp_path: Path):
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text("""
name = "cli-resample"
[data]
task = "mnist"
train_size = 20
test_size = 12
[model]
arch = "fcn:6"
[train]
max_epochs = 200
[[optimizers]]
name = "sgd"
lr = 0.05
[sampling]
networks = 12
chunk = 12
[analysis]
min_count = 2
top = 2
[resample]
sizes = [3]
draws = 2
posteriors = ["ep-probit"]
n_samples = 200
""")
    res = CliRunner().invoke(app, ["sgd-vs-bayes", str(spec_file), "--out",
                                   str(tmp_path / "out"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "ep-probit |E|=3 sgd (2 draws)" in " ".join(res.output.split())
    assert (tmp_path / "out" / "resample.json").is_file()


@pytest.mark.parametrize("change, message", [
    ({"resample": {"sizes": [50]}}, "resample.sizes: expected at most data.test_size = 40"),
    ({"resample": {"posteriors": ["laplace"]}}, "expected distinct names from ep-orthant"),
    ({"resample": {"sizes": [4, 4]}}, "expected distinct sizes"),
    ({"resample": {}, "grid": {"width": [8, 16]}}, "resample: not with a [grid]"),
    ({"resample": {"sizes": [4]}, "data": {"task": "mnist", "classes": "0,1,2",
                                           "train_size": 30, "test_size": 40}},
     "resample: binary tasks only"),
])
def test_bad_resample_sections_are_refused(change: dict, message: str):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sgd_vs_bayes_spec_from_dict({**TINY, **change})


def test_the_single_e_runner_refuses_a_resampled_spec(tmp_path: Path):
    with pytest.raises(SpecError, match=r"has a \[resample\] section"):
        run_sgd_vs_bayes(sgd_vs_bayes_spec_from_dict(TINY), tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_spec_without_resample_keeps_its_key():
    plain = {k: v for k, v in TINY.items() if k != "resample"}
    spec = sgd_vs_bayes_spec_from_dict(plain)
    from flatvol.digest import digest

    dump = spec.model_dump(mode="json")
    assert dump["resample"] is None
    del dump["resample"]
    assert spec.spec_hash() == digest("sgd-vs-bayes-spec", dump)


def test_the_shipped_resample_specs():
    from flatvol.experiments.spec_files import packaged_spec_path
    from flatvol.sgd_vs_bayes.spec import load_sgd_vs_bayes_spec

    main = load_sgd_vs_bayes_spec(packaged_spec_path("sgd_vs_bayes_resampled"))
    plain = load_sgd_vs_bayes_spec(packaged_spec_path("sgd_vs_bayes"))
    # the main comparison's protocol, its E a pool of 1000
    assert main.model == plain.model and main.train == plain.train
    assert main.optimizers == plain.optimizers and main.sampling == plain.sampling
    assert main.data.train_size == 200 and main.data.test_size == 1000
    large = load_sgd_vs_bayes_spec(packaged_spec_path("sgd_vs_bayes_large"))
    assert large.data.train_size == 5000 and [o.key for o in large.optimizers] == ["sgd"]
    largest = load_sgd_vs_bayes_spec(packaged_spec_path("sgd_vs_bayes_largest"))
    # the same experiment as the |S| = 5000 one but for |S|: only the data's size and name differ
    assert largest.data == large.data.model_copy(update={"train_size": 10_000})
    assert largest.model_copy(update={"name": large.name, "description": large.description,
                                      "data": large.data}) == large
    for spec in (main, large, largest):
        assert spec.resample is not None and spec.resample.sizes == [20, 50, 100]
        assert spec.resample.draws == 10
        assert spec.resample.posteriors == ["ep-orthant", "ep-probit", "gp-regression"]


def test_the_report_shows_the_comparison(resampled):
    from flatvol.analysis.report import write_report
    from flatvol.sgd_vs_bayes.function_store import load_experiments, load_resampled

    out, spec, result = resampled
    assert load_experiments(out / "results.sqlite") == []  # not a single-E experiment
    (recorded,) = load_resampled(out / "results.sqlite")
    assert recorded.info["spread"] == json_round_trip(result.spread)
    text = write_report(out).read_text()
    assert "sgd-vs-bayes over draws of E: tiny-resample" in text
    assert (out / "figures" / "resample-tiny-resample.png").is_file()
    # every (posterior, |E|, optimizer) of the spread is a row of the table
    assert text.count("<td>gp-regression</td>") == 4


def json_round_trip(value):
    import json

    from flatvol.io import dumps_json

    return json.loads(dumps_json(value))
