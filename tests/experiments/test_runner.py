"""The runner: resume without duplicates, determinism, failed runs, during-training measures,
alpha events, the optimizers of Fig. 4, and the process backend."""

import pickle

import numpy as np
import pytest
import torch
from experiments_helpers import comparable_runs, comparable_series, tiny_spec

from flatvol.errors import SpecError
from flatvol.experiments import (
    execute_run,
    plan_runs,
    prepare_context,
    run_sweep,
    runs_frame,
    series_frame,
    spec_from_dict,
)
from flatvol.experiments.build import load_run_task
from flatvol.measures import MeasureContext, compute_measures


def test_sweep_records_every_run_and_resume_skips_them(tmp_path):
    spec = spec_from_dict(tiny_spec())
    first = run_sweep(spec, tmp_path, progress=False)
    assert (first.planned, first.done, first.failed, first.skipped) == (4, 4, 0, 0)
    runs = runs_frame(tmp_path)
    assert len(runs) == 4 and set(runs["status"]) == {"done"}
    assert set(runs["volume_estimator"]) == {"ep-orthant"}
    for col in ("log10_volume", "log10_volume_conditional", "sharpness", "log10_sharpness",
                "test_acc_E", "train_acc_S"):
        assert runs[col].notna().all(), col
    assert (runs["train_acc_S"] == 1.0).all()
    assert (runs["log10_volume"] < runs["log10_volume_S"]).all()  # more points, smaller volume
    series_before = series_frame(tmp_path)
    again = run_sweep(spec, tmp_path, progress=False)
    assert (again.skipped, again.done, again.failed) == (4, 0, 0)
    assert comparable_runs(runs_frame(tmp_path)).equals(comparable_runs(runs))
    assert comparable_series(series_frame(tmp_path)).equals(comparable_series(series_before))
    # Extending the sweep (one more seed) keeps the finished runs and adds only the new ones.
    more = run_sweep(spec_from_dict(tiny_spec(sweep__seeds=3)), tmp_path, progress=False)
    assert (more.skipped, more.done) == (4, 2)
    assert len(runs_frame(tmp_path)) == 6


def test_same_spec_and_seed_give_the_same_numbers(tmp_path):
    spec = spec_from_dict(tiny_spec(sweep__attack_sizes=[20], sweep__seeds=[1]))
    ctx = prepare_context(spec, tmp_path, progress=False)
    (run,) = plan_runs(spec)
    a, b = execute_run(run, ctx), execute_run(run, ctx)
    assert a.status == b.status == "done"
    assert a.results == b.results and a.series == b.series
    other = plan_runs(spec_from_dict(tiny_spec(sweep__attack_sizes=[20], sweep__seeds=[2])))[0]
    assert execute_run(other, ctx).results != a.results


def test_unfit_runs_are_failed_with_a_reason_and_kept(tmp_path):
    spec = spec_from_dict(tiny_spec(train__max_epochs=1, sweep__seeds=1))
    summary = run_sweep(spec, tmp_path, progress=False)
    assert (summary.done, summary.failed) == (0, 2)
    runs = runs_frame(tmp_path)
    assert set(runs["status"]) == {"failed"}
    assert all(r.startswith("did_not_fit: S not fit after 1 epochs") for r in runs["reason"])
    assert "log10_volume" not in runs.columns  # nothing measured on an unfit network
    assert run_sweep(spec, tmp_path, progress=False).skipped == 2  # kept, not retried
    retry = run_sweep(spec, tmp_path, progress=False, retry_failed=True)
    assert (retry.skipped, retry.failed) == (0, 2)
    assert len(runs_frame(tmp_path)) == 2


def test_changed_optimizer_settings_under_the_same_label_are_refused(tmp_path):
    run_sweep(spec_from_dict(tiny_spec(sweep__seeds=1, sweep__attack_sizes=[0])), tmp_path,
              progress=False)
    changed = tiny_spec(sweep__seeds=1, sweep__attack_sizes=[0],
                        optimizers=[{"name": "sgd", "lr": 0.1}])
    with pytest.raises(SpecError, match="recorded with other settings for optimizer 'sgd'"):
        run_sweep(spec_from_dict(changed), tmp_path, progress=False)


def test_during_training_series_and_alpha_event(tmp_path):
    spec = spec_from_dict(tiny_spec(
        sweep__attack_sizes=[0], sweep__seeds=[0], train__post_train_epochs=4,
        during={"every": 1, "measures": ["volume", "sharpness", "accuracy"]},
        alpha_events=[{"post_epoch": 2, "layer": 1, "alpha": 5.9}]))
    run_sweep(spec, tmp_path, progress=False)
    run = runs_frame(tmp_path).iloc[0]
    fitted, epochs = int(run["fitted_at"]), int(run["epochs"])
    assert epochs == fitted + 4
    s = series_frame(tmp_path)
    wide = s.pivot_table(index=["epoch", "phase"], columns="metric", values="value")
    # 'accuracy' repeats train_acc_S, which is recorded every epoch anyway: kept once
    for metric in ("loss", "train_acc_S", "log10_volume", "log10_sharpness", "test_acc_E"):
        assert wide[metric].notna().sum() >= epochs, metric
    event = fitted + 2
    before, after = wide.loc[(event, "post")], wide.loc[(event, "alpha")]
    assert after["alpha"] == 5.9
    assert after["log10_volume"] == before["log10_volume"]  # same function, same V(f)
    assert after["test_acc_E"] == before["test_acc_E"]
    assert after["log10_sharpness"] > before["log10_sharpness"] + 0.3  # sharper by > 2x
    assert s[(s.metric == "zero_error_epoch")]["value"].tolist() == [fitted]
    phases = s.drop_duplicates("epoch", keep="last").set_index("epoch")["phase"]
    assert phases.loc[fitted] == "fit" and phases.loc[fitted + 1] == "post"


def test_fig4_optimizers_run_and_swa_measures_the_average(tmp_path):
    spec = spec_from_dict(tiny_spec(
        sweep__attack_sizes=[0], sweep__seeds=[0], measures__final=["sharpness"],
        optimizers=[
            {"name": "sam", "options": {"rho": 0.05}},
            {"name": "entropy-sgd", "lr": 1.0,
             "options": {"langevin_steps": 3, "gamma0": 1.0}},
            {"name": "sgd", "label": "swa", "post_train_epochs": 3,
             "swa": {"lr": 0.02, "anneal_epochs": 2}},
            {"name": "adam", "lr": 0.01},
        ]))
    summary = run_sweep(spec, tmp_path, progress=False)
    assert (summary.done, summary.failed) == (4, 0), summary.failures
    runs = runs_frame(tmp_path).set_index("optimizer")
    assert runs.loc["swa", "measured_model"] == "swa-average"
    assert runs.loc["sam", "measured_model"] == "final"
    assert runs.loc["entropy-sgd", "optimizer_name"] == "entropy-sgd"
    assert runs["log10_sharpness"].notna().all()


def test_measures_registry_on_a_loaded_task(tmp_path):
    from flatvol.models import build_model, labels_of
    from flatvol.volume import fcn_kernel, log_volume

    spec = spec_from_dict(tiny_spec(sweep__attack_sizes=[0], sweep__seeds=[0]))
    ctx = prepare_context(spec, tmp_path, progress=False)
    task = load_run_task(spec, 0, None)
    model = build_model("fcn:8", task.input_shape, seed=0)
    mctx = MeasureContext(spec.measures, seed=0, kernel=ctx.kernel)
    values = compute_measures(["accuracy", "volume", "hessian_top_eig", "hessian_trace"], model,
                              task, mctx)
    assert set(values) >= {"train_acc_S", "test_acc_E", "log10_volume", "hessian_top_eig",
                           "hessian_trace"}
    assert mctx.details["volume"]["estimator"] == "ep-orthant"
    # Independently: the analytic kernel of S then E, and the estimate for the model's labels.
    x = task.x_SE()
    kernel = fcn_kernel(model, x)
    np.testing.assert_allclose(ctx.kernel, kernel, rtol=1e-12)
    labels = labels_of(model, x)
    n_S = task.train_size
    full = log_volume(labels, kernel, "ep-orthant").log10_volume
    train = log_volume(labels[:n_S], kernel[:n_S, :n_S], "ep-orthant").log10_volume
    assert values["log10_volume"] == pytest.approx(full, rel=1e-9)
    assert values["log10_volume_conditional"] == pytest.approx(full - train, rel=1e-6)
    # The sweep's kernel is cached on disk and reused.
    assert ctx.kernel.shape == (100, 100) and ctx.kernel_info["kind"] == "analytic"
    again = prepare_context(spec, tmp_path, progress=False)
    assert again.kernel_info.get("cached") is True and np.array_equal(again.kernel, ctx.kernel)
    with pytest.raises(SpecError, match="unknown measure"):
        compute_measures(["nope"], model, task, mctx)
    assert torch.equal(model.readout.weight, build_model("fcn:8", task.input_shape,
                                                         seed=0).readout.weight)


def test_process_workers_give_the_same_rows(tmp_path):
    spec = spec_from_dict(tiny_spec(measures__final=["sharpness"], sweep__seeds=1))
    one = run_sweep(spec, tmp_path / "one", progress=False, threads=1)
    two = run_sweep(spec, tmp_path / "two", workers=2, progress=False, threads=1)
    assert one.done == two.done == 2
    assert comparable_runs(runs_frame(tmp_path / "one")).equals(
        comparable_runs(runs_frame(tmp_path / "two")))
    assert comparable_series(series_frame(tmp_path / "one")).equals(
        comparable_series(series_frame(tmp_path / "two")))


@pytest.mark.parametrize("attack_size", [0, 7, 20])
def test_a_runs_task_is_the_one_read_from_the_data(attack_size):
    """RunTasks cuts every run's task from the largest (attack sets are prefixes of one pool):
    the same S, A, E, labels and fingerprint as reading that run's task from the data."""
    from flatvol.experiments.build import RunTasks

    spec = spec_from_dict(tiny_spec(sweep__attack_sizes=[0, 7, 20]))
    tasks = RunTasks(spec, None, 20)
    cut, read = tasks.task(attack_size), load_run_task(spec, attack_size, None)
    assert cut.fingerprint() == read.fingerprint()
    for name in ("S", "A", "E"):
        assert torch.equal(getattr(cut, name).x, getattr(read, name).x)
        assert torch.equal(getattr(cut, name).y, getattr(read, name).y)
        np.testing.assert_array_equal(getattr(cut, name).index, getattr(read, name).index)
    assert pickle.loads(pickle.dumps(tasks))._pool is None  # shipped without its data
