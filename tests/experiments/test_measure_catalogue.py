"""The measure catalogue: one entry per measure, read by the spec validator, the runner, the
store and the report. Every entry round-trips spec -> store -> report, and a new measure is one
entry (a toy measure registered here)."""

from __future__ import annotations

import html

import pytest
import torch
from experiments_helpers import tiny_spec

from flatvol.analysis.measures import known_measures, measure_by_key
from flatvol.analysis.report import correlations_for, load_results, write_report
from flatvol.errors import SpecError
from flatvol.experiments import run_sweep, runs_frame, spec_from_dict
from flatvol.measures import (
    MeasureContext,
    MeasureEntry,
    Predictor,
    compute_measures,
    measure_entries,
    measure_entry,
    measure_names,
    register_measure,
    unregister_measure,
)

TOY = "toy_weight_norm"


def toy_weight_norm(model, task, context):
    """log10 of the L2 norm of the weights, times the spec's `scale` option."""
    scale = float(context.options(TOY).get("scale", 1.0))
    norm = torch.sqrt(sum((p.detach().double() ** 2).sum() for p in model.parameters()))
    context.details[TOY] = {"scale": scale}
    return {"toy_norm": scale * float(norm)}


@pytest.fixture
def toy_measure():
    register_measure(MeasureEntry(
        TOY, toy_weight_norm, fields=("toy_norm",), label="toy weight norm",
        predictors=(Predictor("toy_norm", "-log10 toy weight norm", sign=-1, log10=True),)))
    yield TOY
    unregister_measure(TOY)


def _sweep(tmp_path, final, **overrides):
    spec = spec_from_dict(tiny_spec(**{
        "name": "catalogue", "data__train_size": 20, "data__test_size": 20,
        "train__max_epochs": 200, "sweep__attack_sizes": [0, 10], "sweep__seeds": 2,
        "measures__final": final, **overrides}))
    summary = run_sweep(spec, tmp_path, progress=False)
    assert summary.done == 4, summary.failures
    write_report(tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    return runs_frame(tmp_path), correlations_for(load_results(tmp_path)), page


def test_a_new_measure_is_one_entry_validated_stored_and_reported(tmp_path, toy_measure):
    assert toy_measure in measure_names()
    with pytest.raises(SpecError, match="unknown measure 'toy_wieght_norm'"):
        spec_from_dict(tiny_spec(measures__final=["toy_wieght_norm"]))
    runs, table, page = _sweep(tmp_path, [toy_measure],
                               measures__options={toy_measure: {"scale": 2.0}})
    assert runs["toy_norm"].notna().all() and (runs["toy_norm"] > 0).all()
    row = table.set_index("measure").loc["toy_norm"]
    assert row["label"] == "-log10 toy weight norm"
    assert html.escape("-log10 toy weight norm") in page
    # Its spec options reach it like any other measure's.
    spec = spec_from_dict(tiny_spec(measures__final=[toy_measure],
                                    measures__options={toy_measure: {"scale": 2.0}}))
    model = torch.nn.Linear(3, 1)
    one, two = (compute_measures([toy_measure], model, None, MeasureContext(settings))
                for settings in (spec_from_dict(tiny_spec()).measures, spec.measures))
    assert two["toy_norm"] == pytest.approx(2 * one["toy_norm"])


def test_every_entry_round_trips_spec_store_report(tmp_path):
    names = [e.name for e in measure_entries()]
    runs, table, page = _sweep(tmp_path, names, measures__options={
        "hessian_density": {"n_probes": 2, "n_iter": 10},
        "pac_bayes_sigma": {"n_samples": 4}, "pac_bayes_mag_sigma": {"n_samples": 4}})
    ranked = set(table["measure"])
    for entry in measure_entries():
        for column in entry.fields:
            assert column in runs.columns, (entry.name, column)
        for p in entry.predictors:
            assert html.escape(p.label) in page, (entry.name, p.label)
            if runs[p.column].nunique() > 1:
                assert p.column in ranked, (entry.name, p.column)


def test_known_measures_are_the_catalogue_predictors():
    columns = [m.column for m in known_measures()]
    assert columns == [p.column for e in measure_entries() for p in e.predictors]
    assert len(set(columns)) == len(columns)
    assert measure_by_key("log10_sharpness").label == "-log10 sharpness"
    assert measure_by_key("log10_sharpness").sign == -1


def test_an_entry_must_store_its_predictors_and_return_its_fields(toy_measure):
    with pytest.raises(ValueError, match="predictor column 'other'"):
        MeasureEntry("bad", toy_weight_norm, fields=("toy_norm",), label="bad",
                     predictors=(Predictor("other", "other"),))
    with pytest.raises(ValueError, match="already in the catalogue"):
        register_measure(measure_entry(toy_measure))
    register_measure(MeasureEntry("liar", toy_weight_norm, fields=("declared",), label="liar"))
    try:
        with pytest.raises(SpecError, match="returned toy_norm but its catalogue entry declares"):
            compute_measures(["liar"], torch.nn.Linear(2, 1), None, MeasureContext())
    finally:
        unregister_measure("liar")


def test_where_a_spec_sets_options_comes_from_the_entry():
    with pytest.raises(SpecError, match=r"set sharpness options in \[measures.sharpness\]"):
        spec_from_dict(tiny_spec(measures__options={"sharpness": {"epochs": 3}}))
    with pytest.raises(SpecError, match="accuracy takes no options"):
        spec_from_dict(tiny_spec(measures__options={"accuracy": {"x": 1}}))
    spec = spec_from_dict(tiny_spec(measures__options={"hessian_trace": {"n_hvp": 9}}))
    assert MeasureContext(spec.measures).options("hessian_trace") == {"n_hvp": 9}


def test_measure_seeds_are_derived_per_measure_unless_asked_not_to():
    derived = MeasureContext(seed=3, epoch=5)
    assert derived.measure_seed(1) != derived.measure_seed(2)
    fixed = MeasureContext(seed=3, epoch=5, derive_seeds=False)
    assert fixed.measure_seed(1) == fixed.measure_seed(2) == 3


def test_the_volume_measure_on_a_bare_kernel_serves_the_tasks_classes():
    """A library caller's context holds only a kernel: its service is made for the task's K."""
    from flatvol.data import load_task
    from flatvol.measures.builtin import volume_measure
    from flatvol.models import build_model, labels_of
    from flatvol.volume import VolumeService, fcn_kernel

    task = load_task("mnist", train_size=12, test_size=6, classes="0,1,2")
    model = build_model("fcn:8", task.input_shape, seed=0, outputs=3)
    kernel = fcn_kernel(model, task.x_SE())
    values = volume_measure(model, task, MeasureContext(kernel=kernel))
    expected = VolumeService(kernel, n_classes=3).log_volume(labels_of(model, task.x_SE()))
    assert values["log10_volume"] == pytest.approx(expected.log10_volume, rel=1e-12)
