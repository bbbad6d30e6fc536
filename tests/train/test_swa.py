"""SWA: the averaged model is the mean of the fitted and post-fit weights; SWALR sets the SWA
learning rate; BatchNorm statistics are recomputed for the averaged weights."""

import pytest
import torch
from torch import nn

from flatvol.errors import SpecError
from flatvol.models import build_model
from flatvol.train import TrainConfig, train_to_fit
from flatvol.train.swa import SWAConfig, SWATracker


def _run(task, model, tracker, post=4, lr=0.1):
    snapshots, lrs = {}, []

    def callback(info, m):
        tracker.callback(info, m)
        snapshots[info.epoch] = [p.detach().clone() for p in m.parameters()]
        optimizer = tracker.scheduler.optimizer if tracker.scheduler else None
        lrs.append(optimizer.param_groups[0]["lr"] if optimizer else None)

    config = TrainConfig(optimizer=tracker.optimizer_name, lr=lr, max_epochs=500,
                         post_train_epochs=post)
    result = train_to_fit(model, task, config, seed=0, callback=callback)
    return result, snapshots, lrs


def test_average_of_fitted_and_post_fit_weights(synthetic_task):
    model = build_model("fcn:16", synthetic_task.input_shape, seed=0)
    tracker = SWATracker("sgd", SWAConfig(lr=0.02, anneal_epochs=2, anneal_strategy="linear"))
    result, snapshots, lrs = _run(synthetic_task, model, tracker)
    assert result.status == "fitted"
    fitted = result.fitted_at
    assert tracker.epochs_averaged == list(range(fitted, result.epochs + 1))
    averaged = tracker.averaged_model(synthetic_task)
    for i, p in enumerate(averaged.parameters()):
        expected = torch.stack([snapshots[e][i] for e in tracker.epochs_averaged]).mean(0)
        torch.testing.assert_close(p, expected, rtol=1e-5, atol=1e-6)
    # SWALR anneals linearly from 0.1 to 0.02 over 2 post-fit epochs, then holds.
    assert lrs[fitted - 1 :] == pytest.approx([0.1, 0.06, 0.02, 0.02, 0.02])
    assert all(lr is None for lr in lrs[: fitted - 1])
    # The trained model itself is untouched (it is the last iterate, not the average).
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), snapshots[result.epochs]))
    assert averaged is not model and averaged.prior == model.prior


class BNNet(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.inp = nn.Linear(dim, 8)
        self.bn = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.inp(x)))).squeeze(-1)


def test_batchnorm_statistics_recomputed_for_averaged_weights(synthetic_task):
    torch.manual_seed(0)
    model = BNNet(synthetic_task.input_shape[0])
    tracker = SWATracker("momentum")
    _run(synthetic_task, model, tracker, post=3, lr=0.05)
    averaged = tracker.averaged_model(synthetic_task, batch_size=10_000)  # one batch: exact mean
    x, _ = synthetic_task.train_inputs()
    with torch.no_grad():
        h = averaged.inp(x)
    torch.testing.assert_close(averaged.bn.running_mean, h.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(averaged.bn.running_var, h.var(0, unbiased=True), rtol=1e-4,
                               atol=1e-6)
    assert not averaged.training


def test_errors():
    with pytest.raises(SpecError, match="unknown optimizer"):
        SWATracker("nope")
    with pytest.raises(SpecError, match="anneal_epochs"):
        SWAConfig(anneal_epochs=0)
    with pytest.raises(RuntimeError, match="nothing averaged"):
        SWATracker("sgd").averaged_model(None)
