"""A staged sweep killed in the middle of its ensemble's training resumes the training from
the checkpoint in DIR/cache (not from epoch 0) and records exactly the runs of an
uninterrupted sweep; the checkpoint is deleted once all the group's runs are recorded."""

from __future__ import annotations

import dataclasses

import pytest
from experiments_helpers import comparable_runs, tiny_spec

from flatvol.experiments import run_sweep, runs_frame, spec_from_dict
from flatvol.train import ensemble_checkpoint
from flatvol.train.ensemble import EnsembleEpochInfo
from flatvol.train.ensemble_checkpoint import EnsembleCheckpoint

# Members stop at different epochs (attack sizes), and train long enough after fitting.
SPEC = tiny_spec(sweep__attack_sizes=[0, 10, 20], train__ensemble=True,
                 train__post_train_epochs=40)
KILL_AT_SAVE = 30  # saved after every epoch: killed after its 30th epoch


class Killed(BaseException):
    """Stands for a SIGKILL: nothing in the sweep catches it."""


def test_sweep_killed_mid_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(ensemble_checkpoint, "CHECKPOINT_EVERY_S", 0.0)
    spec = spec_from_dict(SPEC)
    reference = run_sweep(spec, tmp_path / "reference", progress=False, threads=1)
    assert reference.done == 6

    original_save = EnsembleCheckpoint.save
    saves = [0]

    def save_then_die(self, progress):
        original_save(self, progress)
        saves[0] += 1
        if saves[0] == KILL_AT_SAVE:
            raise Killed

    monkeypatch.setattr(EnsembleCheckpoint, "save", save_then_die)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run_sweep(spec, out, progress=False, threads=1)
    checkpoints = list((out / "cache").glob("ensemble-*.pt"))
    assert len(checkpoints) == 1

    monkeypatch.setattr(EnsembleCheckpoint, "save", original_save)
    epochs_trained: list[int] = []
    original_init = EnsembleEpochInfo.__init__

    def spy(self, *args, **kwargs):  # every epoch the resumed sweep trains
        original_init(self, *args, **kwargs)
        epochs_trained.append(self.epoch)

    monkeypatch.setattr(EnsembleEpochInfo, "__init__", spy)
    resumed = run_sweep(spec, out, progress=False, threads=1)
    assert resumed.done + resumed.skipped == 6
    assert epochs_trained and epochs_trained[0] == KILL_AT_SAVE + 1  # not from epoch 1
    assert comparable_runs(runs_frame(out)).equals(
        comparable_runs(runs_frame(tmp_path / "reference")))
    assert not list((out / "cache").glob("ensemble-*.pt"))  # all recorded: deleted


def test_checkpoint_of_a_group_with_unfit_networks_is_deleted_and_a_measure_failure_keeps_it(
        tmp_path, monkeypatch):
    """A network that did not fit within its budget is a final outcome (training it again gives
    it again), so a group whose runs are all done or did not fit drops its checkpoint (Fig. 4
    left 3 of them, 18-39 MB each, in OUT/cache). A run failed by a measure's error keeps it:
    its retry reuses the training."""
    from flatvol.experiments.store import Store, store_path

    spec = spec_from_dict(tiny_spec(sweep__attack_sizes=[0, 20], train__ensemble=True,
                                    train__max_epochs=4))
    summary = run_sweep(spec, tmp_path / "unfit", progress=False, threads=1)
    assert summary.failed >= 1 and all(
        reason.startswith("did_not_fit") for _, reason in summary.failures), summary.failures
    assert not list((tmp_path / "unfit" / "cache").glob("ensemble-*.pt"))

    # The same sweep, with every failure recorded under another reason (a measure's error).
    original_record = Store.record

    def measure_error(self, run, replace_failed=True):
        if run.status == "failed":
            run = dataclasses.replace(run, reason="ValueError: the measure raised")
        original_record(self, run, replace_failed)

    monkeypatch.setattr(Store, "record", measure_error)
    retry = run_sweep(spec, tmp_path / "retry", progress=False, threads=1)
    assert retry.failed == summary.failed
    assert len(list((tmp_path / "retry" / "cache").glob("ensemble-*.pt"))) == 1
    with Store(store_path(tmp_path / "unfit")) as store:
        settled = store.settled(spec.spec_hash())
    assert len(settled) == summary.done + summary.failed
