"""train.ensemble: the runs of a sweep that differ only by seed and attack size train together
(flatvol.train.ensemble) and are recorded exactly as one-at-a-time runs are."""

import io
import json
import sqlite3

import numpy as np
import pytest
from experiments_helpers import tiny_spec

from flatvol.errors import SpecError
from flatvol.experiments import plan_runs, run_sweep, runs_frame, series_frame, spec_from_dict
from flatvol.experiments.execute import ensemble_eligible
from flatvol.experiments.plan import ensemble_groups, staged_plan
from flatvol.experiments.store import store_path

KEYS = ["optimizer", "attack_size", "seed"]


def _spec(ensemble: bool, **overrides):
    return spec_from_dict(tiny_spec(data__train_size=40, data__test_size=30,
                                    sweep__attack_sizes=[0, 10], sweep__seeds=3,
                                    train__ensemble=ensemble, **overrides))


def _runs(out):
    return runs_frame(out).sort_values(KEYS).reset_index(drop=True)


def test_ensemble_sweep_matches_one_at_a_time(tmp_path):
    one, ens = _spec(False), _spec(True)
    assert one.spec_hash() == ens.spec_hash()  # an execution choice: same run keys
    assert [r.key for r in plan_runs(one)] == [r.key for r in plan_runs(ens)]
    a = run_sweep(one, tmp_path / "one", progress=False)
    b = run_sweep(ens, tmp_path / "ens", progress=False)
    assert (a.planned, a.done, a.failed) == (b.planned, b.done, b.failed) == (6, 6, 0)
    ra, rb = _runs(tmp_path / "one"), _runs(tmp_path / "ens")
    assert ra[KEYS + ["spec_hash"]].equals(rb[KEYS + ["spec_hash"]])
    assert list(ra["status"]) == list(rb["status"])
    assert list(ra["epochs"]) == list(rb["epochs"])
    assert list(ra["fitted_at"]) == list(rb["fitted_at"])
    assert list(ra["test_acc_E"]) == list(rb["test_acc_E"])
    assert list(ra["train_acc_S"]) == list(rb["train_acc_S"])
    np.testing.assert_allclose(rb["log10_volume"], ra["log10_volume"], atol=1e-6)
    np.testing.assert_allclose(rb["sharpness"], ra["sharpness"], rtol=1e-3, atol=1e-6)
    # The epochs (and the whole per-epoch series: loss, accuracies, zero_error_epoch) agree.
    sa, sb = (series_frame(tmp_path / d).sort_values(KEYS + ["epoch", "phase", "metric"])
              .reset_index(drop=True) for d in ("one", "ens"))
    assert sa[KEYS + ["epoch", "phase", "metric"]].equals(sb[KEYS + ["epoch", "phase", "metric"]])
    np.testing.assert_allclose(sb["value"], sa["value"], rtol=1e-5, atol=1e-6)
    zero = sa[sa.metric == "zero_error_epoch"]
    assert len(zero) == 6 and zero["value"].nunique() > 1  # the seeds stop at different epochs
    # The ensemble trainer really trained them: one ensemble of all 3 seeds x 2 attack sizes.
    for name, size in (("one", None), ("ens", 6)):
        with sqlite3.connect(store_path(tmp_path / name)) as conn:
            infos = [json.loads(t) for (t,) in conn.execute("SELECT info_json FROM runs")]
        assert [i.get("ensemble", {}).get("size") for i in infos] == [size] * 6
    # Resume after a partial ensemble sweep: only the missing runs train, none is duplicated.
    part = tmp_path / "part"
    first = run_sweep(spec_from_dict(tiny_spec(data__train_size=40, data__test_size=30,
                                               sweep__attack_sizes=[0, 10], sweep__seeds=[0],
                                               train__ensemble=True)), part, progress=False)
    assert first.done == 2
    rest = run_sweep(ens, part, progress=False)
    assert (rest.skipped, rest.done) == (2, 4)
    assert _runs(part)[KEYS].equals(rb[KEYS])
    assert list(_runs(part)["test_acc_E"]) == list(rb["test_acc_E"])


def test_groups_and_fallback_rules():
    spec = spec_from_dict(tiny_spec(train__ensemble=True, sweep__seeds=3, optimizers=[
        {"name": "sgd"}, {"name": "sam", "options": {"rho": 0.05}},
        {"name": "momentum", "label": "swa", "post_train_epochs": 2, "swa": {"lr": 0.01}}]))
    groups = ensemble_groups(plan_runs(spec))
    assert len(groups) == 3  # one per optimizer: all its seeds and attack sizes train together
    for group in groups:
        assert [(r.seed, r.attack_size) for r in group] == [(s, a) for s in (0, 1, 2)
                                                            for a in (0, 20)]  # plan order
        assert len({r.optimizer.key for r in group}) == 1
    eligible = {o.key: ensemble_eligible(spec, o) for o in spec.optimizers}
    # every optimizer of the catalogue, options included, trains as an ensemble; SWA (which
    # averages weights over epochs) one network at a time
    assert eligible == {"sgd": True, "sam": True, "swa": False}
    off = spec_from_dict(tiny_spec())
    assert not ensemble_eligible(off, off.optimizers[0])


def test_without_history_the_same_runs_train_without_their_series(tmp_path):
    """train.history = false: the ensemble skips its per-epoch evaluation on S and A; the runs
    (stopping epochs, accuracies, measures) are those with history, with no per-epoch series."""
    kept, skipped = _spec(True), _spec(True, train__history=False)
    assert kept.spec_hash() == skipped.spec_hash()  # an execution choice: same run keys
    run_sweep(kept, tmp_path / "kept", progress=False)
    done = run_sweep(skipped, tmp_path / "skipped", progress=False)
    assert (done.done, done.failed) == (6, 0)
    a, b = _runs(tmp_path / "kept"), _runs(tmp_path / "skipped")
    for column in ("status", "epochs", "fitted_at", "test_acc_E", "train_acc_S", "train_acc_A",
                   "log10_volume", "sharpness"):
        np.testing.assert_equal(b[column].to_numpy(), a[column].to_numpy(), err_msg=column)
    assert len(series_frame(tmp_path / "kept")) > 0
    assert len(series_frame(tmp_path / "skipped").query("metric != 'zero_error_epoch'")) == 0
    with pytest.raises(SpecError, match="train.history") as err:  # no effect one at a time
        spec_from_dict(tiny_spec(train__history=False), "x.toml")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("extra, field", [
    ({"during": {"every": 5, "measures": ["sharpness"]}}, "during.measures"),
    ({"train": {"ensemble": True, "post_train_epochs": 2},
      "alpha_events": [{"post_epoch": 1, "alpha": 2.0}]}, "alpha_events"),
])
def test_ensemble_refuses_per_epoch_hooks_in_one_line(extra, field):
    data = tiny_spec(train__ensemble=True)
    data.update(extra)
    with pytest.raises(SpecError) as err:
        spec_from_dict(data, "x.toml")
    text = str(err.value)
    assert "\n" not in text and text.startswith("x.toml: ")
    assert "train.ensemble" in text and field in text
    with pytest.raises(SpecError, match="ensemble"):
        spec_from_dict(tiny_spec(train__ensemble="maybe"), "x.toml")


def test_staged_sweep_gives_the_per_run_numbers_and_at_least_the_paper_sharpness(tmp_path):
    """Planned by stage (one ensemble for all seeds and attack sizes, default 'fast' maximizer)
    against today's per-run path with the paper's maximizer: the same test accuracy and V(f)
    for every run, and a sharpness at least the paper protocol's."""
    sizes = dict(data__train_size=40, data__test_size=30, sweep__attack_sizes=[0, 10, 20],
                 sweep__seeds=2)
    per_run = spec_from_dict(tiny_spec(**sizes, measures__sharpness={"maximizer": "paper"}))
    staged_data = tiny_spec(**sizes, train__ensemble=True)
    del staged_data["measures"]["sharpness"]  # the default maximizer
    staged = spec_from_dict(staged_data)
    assert staged.measures.sharpness.maximizer == "fast"
    a = run_sweep(per_run, tmp_path / "per_run", progress=False)
    b = run_sweep(staged, tmp_path / "staged", progress=False)
    assert (a.done, b.done) == (6, 6)
    ra, rb = _runs(tmp_path / "per_run"), _runs(tmp_path / "staged")
    assert ra[KEYS].equals(rb[KEYS])
    assert list(ra["test_acc_E"]) == list(rb["test_acc_E"])
    np.testing.assert_allclose(rb["log10_volume"], ra["log10_volume"], rtol=1e-6, atol=0)
    assert (rb["sharpness"].to_numpy() >= ra["sharpness"].to_numpy()).all()
    with sqlite3.connect(store_path(tmp_path / "staged")) as conn:
        infos = [json.loads(t) for (t,) in conn.execute("SELECT info_json FROM runs")]
    assert [i["ensemble"]["size"] for i in infos] == [6] * 6  # one ensemble, 3 attack sizes
    assert {i["measures"]["sharpness"]["maximizer"] for i in infos} == {"fast"}  # recorded


@pytest.mark.parametrize("ensemble", [True, False])
def test_progress_by_stage_on_a_console_that_is_not_a_terminal(tmp_path, ensemble):
    """Rich draws nothing live off a terminal: plain lines report each stage's count (and an
    ETA while it runs), at least one line as each stage completes."""
    text = io.StringIO()
    spec = _spec(ensemble)
    run_sweep(spec, tmp_path / "out", progress=True, stream=text)
    lines = [line for line in text.getvalue().splitlines() if line.startswith("progress: ")]
    assert lines, text.getvalue()
    last = lines[-1]
    for stage in ("networks fitted 6/6", "volumes computed 6/6", "sharpness done 6/6"):
        assert stage in last
        assert any(stage in line for line in lines)
    # a staged sweep fits every network before the first volume; the per-run path alternates
    staged = any("networks fitted 6/6; volumes computed 0/6" in line for line in lines)
    assert staged == ensemble


def test_plain_progress_reports_a_long_training_while_no_stage_passes(tmp_path, monkeypatch):
    """An ensemble trains for minutes before its first network stops: the plain lines say which
    run is training and at which epoch meanwhile."""
    monkeypatch.setenv("FLATVOL_PROGRESS_INTERVAL", "0")
    text = io.StringIO()
    run_sweep(_spec(True), tmp_path / "out", progress=True, stream=text)
    lines = [line for line in text.getvalue().splitlines() if line.startswith("progress: ")]
    training = [line for line in lines if "networks fitted 0/6" in line and "running " in line]
    assert training, lines[:5]
    assert "epoch " in training[-1] and "ensemble of 6" in training[-1]


def test_staged_plan_trains_whole_groups_and_measures_the_missing_runs():
    spec = spec_from_dict(tiny_spec(train__ensemble=True, sweep__seeds=2,
                                    optimizers=[{"name": "sgd"}, {"name": "adam", "lr": 0.01}]))
    runs = plan_runs(spec)
    todo = [r for r in runs if r.seed == 1 and r.optimizer.key == "adam"][::-1]
    plan = staged_plan(spec, todo)
    assert len(plan) == 1  # sgd's runs are all recorded: nothing of it trains
    group, missing = plan[0]
    assert group == ensemble_groups(runs)[1]  # the whole adam group trains, both seeds
    assert missing == [r for r in group if r.seed == 1]  # in the group's order
    assert staged_plan(spec, []) == []
