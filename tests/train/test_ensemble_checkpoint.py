"""A killed ensemble training resumes from its checkpoint and ends bit for bit as an
uninterrupted one: same weights, stopping epochs, accuracies and histories; the members that
had stopped before the kill are handed to on_stopped again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flatvol.data.task import Split, TaskData
from flatvol.train import TrainConfig
from flatvol.train.ensemble import train_ensemble
from flatvol.train.ensemble_checkpoint import EnsembleCheckpoint

SEEDS = [0, 1, 2, 0, 1]
ATTACKS = [0, 0, 0, 6, 6]


class Killed(Exception):
    """Stands for the SIGKILL of a sweep in the middle of an epoch loop."""


def _task(seed: int = 0, dim: int = 12) -> TaskData:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(dim)

    def split(n: int, flip: bool = False) -> Split:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        y = ((x @ w > 0) ^ flip).astype(np.float32)
        return Split(torch.from_numpy(x), torch.from_numpy(y), np.arange(n))

    return TaskData("synthetic", "sign(w.x)", seed, split(64), split(6, flip=True), split(32))


def _train(task: TaskData, config: TrainConfig, history: bool, **kwargs):
    stopped: list[tuple[int, int]] = []  # (member, epochs) in the order on_stopped saw them
    result = train_ensemble("fcn:16,16", task, config, SEEDS, keep_history=history,
                            attack_sizes=ATTACKS, group_size=2, workers=1,
                            on_stopped=lambda m: stopped.append((m.index, m.result.epochs)),
                            **kwargs)
    return result, stopped


def _kill_at(epoch: int):
    def callback(info) -> None:
        if info.epoch == epoch:
            raise Killed
    return callback


@pytest.mark.parametrize(("optimizer", "history"), [("sgd", True), ("adam", False),
                                                    ("amsgrad", True), ("momentum", False)])
def test_resume_is_bitwise_identical(tmp_path, optimizer, history):
    task = _task()
    config = TrainConfig(optimizer=optimizer, lr=0.01 if optimizer != "sgd" else 0.1,
                         max_epochs=60, post_train_epochs=3)
    whole, whole_stopped = _train(task, config, history)
    assert len(set(whole.epochs.tolist())) > 1  # members stop at different epochs
    kill_epoch = int(whole.epochs.min()) + 1  # after a member stopped, before all did
    assert kill_epoch < whole.epochs.max()

    path = tmp_path / "ensemble.pt"
    with pytest.raises(Killed):  # saved every epoch, killed before epoch `kill_epoch` is saved
        _train(task, config, history, checkpoint=path, checkpoint_every_s=0,
               callback=_kill_at(kill_epoch))
    assert path.is_file()
    resumed, resumed_stopped = _train(task, config, history, checkpoint=path)

    for k in whole.params:
        assert torch.equal(whole.params[k], resumed.params[k]), k
    np.testing.assert_array_equal(whole.epochs, resumed.epochs)
    assert whole.fitted_at == resumed.fitted_at and whole.status == resumed.status
    np.testing.assert_array_equal(np.stack([whole.train_acc_S, whole.train_acc_A,
                                            whole.test_acc_E]),
                                  np.stack([resumed.train_acc_S, resumed.train_acc_A,
                                            resumed.test_acc_E]))
    assert json.dumps(whole.histories) == json.dumps(resumed.histories)  # NaN != NaN
    assert whole.flops == resumed.flops or np.isnan(whole.flops)
    # every member reaches on_stopped once after the resume, with the outcome it had
    assert sorted(resumed_stopped) == sorted(whole_stopped)
    before_kill = [m for m, e in whole_stopped if e < kill_epoch]
    assert len(before_kill) >= 1
    assert [m for m, _ in resumed_stopped[: len(before_kill)]] == sorted(before_kill)


def test_finished_checkpoint_replays_without_training(tmp_path):
    task = _task(1)
    config = TrainConfig(max_epochs=40, lr=0.1)
    path = tmp_path / "ensemble.pt"
    first, stopped = _train(task, config, False, checkpoint=path)
    epochs_seen: list[int] = []
    again, replayed = _train(task, config, False, checkpoint=path,
                             callback=lambda info: epochs_seen.append(info.epoch))
    assert epochs_seen == []  # nothing left to train
    assert sorted(replayed) == sorted(stopped)
    for k in first.params:
        assert torch.equal(first.params[k], again.params[k])


def test_foreign_or_corrupt_checkpoint_is_ignored(tmp_path):
    config = TrainConfig(max_epochs=30, lr=0.1)
    path = tmp_path / "ensemble.pt"
    reference, _ = _train(_task(0), config, False)
    _train(_task(2), config, False, checkpoint=path)  # another task's training: other data
    from_foreign, _ = _train(_task(0), config, False, checkpoint=path)
    path.write_bytes(b"not a checkpoint")
    from_corrupt, _ = _train(_task(0), config, False, checkpoint=path)
    for k in reference.params:
        assert torch.equal(reference.params[k], from_foreign.params[k])
        assert torch.equal(reference.params[k], from_corrupt.params[k])
    # the run overwrote the corrupt file with its own progress, which no other training reads
    assert path.is_file()
    assert EnsembleCheckpoint(path, "another training").load(torch.device("cpu")) is None
    assert EnsembleCheckpoint(tmp_path / "absent.pt", "x").load(torch.device("cpu")) is None
