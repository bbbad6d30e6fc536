"""SWA: the averaged model is the mean of the fitted and post-fit weights; SWALR sets the SWA
learning rate; BatchNorm statistics are recomputed for the averaged weights."""

import pytest
import torch
from torch import nn

from flatvol.errors import SpecError
from flatvol.models import build_model
from flatvol.train import TrainConfig, make_optimizer, train_to_fit
from flatvol.train.swa import SWAConfig, SWATracker


def _tracker(model, optimizer, config=None, lr=0.1, post=4):
    """A TrainConfig and a tracker over the optimizer built from it for `model`."""
    train = TrainConfig(optimizer=optimizer, lr=lr, max_epochs=500, post_train_epochs=post)
    opt = make_optimizer(optimizer, model.parameters(), train.optimizer_settings())
    return train, SWATracker(opt, config)


def _run(task, model, train, tracker):
    snapshots, lrs = {}, []

    def callback(info, m):
        tracker.callback(info, m)
        snapshots[info.epoch] = [p.detach().clone() for p in m.parameters()]
        optimizer = tracker.scheduler.optimizer if tracker.scheduler else None
        lrs.append(optimizer.param_groups[0]["lr"] if optimizer else None)

    result = train_to_fit(model, task, train, seed=0, callback=callback,
                          optimizer=tracker.optimizer)
    return result, snapshots, lrs


def test_average_of_fitted_and_post_fit_weights(synthetic_task):
    model = build_model("fcn:16", synthetic_task.input_shape, seed=0)
    train, tracker = _tracker(model, "sgd",
                              SWAConfig(lr=0.02, anneal_epochs=2, anneal_strategy="linear"))
    result, snapshots, lrs = _run(synthetic_task, model, train, tracker)
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
    train, tracker = _tracker(model, "momentum", lr=0.05, post=3)
    _run(synthetic_task, model, train, tracker)
    averaged = tracker.averaged_model(synthetic_task, batch_size=10_000)  # one batch: exact mean
    x, _ = synthetic_task.train_inputs()
    with torch.no_grad():
        h = averaged.inp(x)
    torch.testing.assert_close(averaged.bn.running_mean, h.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(averaged.bn.running_var, h.var(0, unbiased=True), rtol=1e-4,
                               atol=1e-6)
    assert not averaged.training


def test_errors(synthetic_task):
    with pytest.raises(SpecError, match="unknown optimizer"):
        _tracker(build_model("fcn:4", (3,)), "nope")
    with pytest.raises(SpecError, match="anneal_epochs"):
        SWAConfig(anneal_epochs=0)
    model = build_model("fcn:16", synthetic_task.input_shape, seed=0)
    train, tracker = _tracker(model, "sgd")
    with pytest.raises(RuntimeError, match="nothing averaged"):
        tracker.averaged_model(None)
    # A tracker whose optimizer trains another model would schedule the wrong run's lr.
    other = build_model("fcn:16", synthetic_task.input_shape, seed=1)
    with pytest.raises(RuntimeError, match="does not train this model"):
        train_to_fit(other, synthetic_task, train, seed=0, callback=tracker.callback)
