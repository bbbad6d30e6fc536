import numpy as np
import pytest
import torch

from flatvol.errors import SpecError
from flatvol.models import build_model, labels_of
from flatvol.train import TrainConfig, train_to_fit


def _train(task, seed, **cfg):
    model = build_model("fcn:16", task.input_shape, seed=seed)
    result = train_to_fit(model, task, TrainConfig(**cfg), seed=seed)
    return model, result


def test_fits_S_and_reports_accuracies(synthetic_task):
    model, result = _train(synthetic_task, 0, lr=0.1, max_epochs=500)
    assert result.status == "fitted"
    assert result.train_acc_S == 1.0
    assert result.fitted_at == result.epochs
    assert len(result.history) == result.epochs
    expected = np.mean(labels_of(model, synthetic_task.E.x) == synthetic_task.E.y.numpy())
    assert result.test_acc_E == pytest.approx(float(expected))


def test_same_seed_gives_identical_weights(synthetic_task):
    a, ra = _train(synthetic_task, 3, lr=0.1, max_epochs=20)
    b, rb = _train(synthetic_task, 3, lr=0.1, max_epochs=20)
    c, _ = _train(synthetic_task, 4, lr=0.1, max_epochs=20)
    assert ra.epochs == rb.epochs
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.hidden[0].weight, c.hidden[0].weight)


def test_epoch_cap_gives_did_not_fit_status(synthetic_task):
    _, result = _train(synthetic_task, 0, lr=1e-6, max_epochs=2)
    assert result.status == "did_not_fit"
    assert result.epochs == 2 and result.fitted_at is None


def test_fit_all_also_fits_the_attack_set(synthetic_task):
    _, result = _train(synthetic_task, 0, lr=0.1, optimizer="adam", fit="all", max_epochs=2000)
    assert result.status == "fitted"
    assert result.train_acc_S == 1.0 and result.train_acc_A == 1.0


def test_post_training_epochs_and_callback(synthetic_task):
    seen = []
    model = build_model("fcn:16", synthetic_task.input_shape, seed=0)
    result = train_to_fit(model, synthetic_task, TrainConfig(lr=0.1, post_train_epochs=3),
                          callback=lambda info, m: seen.append((info.epoch, info.phase)))
    assert result.epochs == result.fitted_at + 3
    assert [p for _, p in seen][-3:] == ["post"] * 3
    assert [e for e, _ in seen] == list(range(1, result.epochs + 1))


@pytest.mark.parametrize("kwargs", [{"optimizer": "rmsprop-ish"}, {"fit": "E"}, {"lr": -1.0},
                                    {"batch_size": 0}])
def test_invalid_config_is_rejected(kwargs):
    with pytest.raises(SpecError):
        TrainConfig(**kwargs)
