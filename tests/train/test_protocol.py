"""The stopping rule and data order that train_to_fit and the ensemble trainer share."""

import numpy as np
import pytest
import torch

from flatvol.errors import SpecError
from flatvol.models import build_model
from flatvol.train import TrainConfig, train_to_fit
from flatvol.train.protocol import StoppingRule, data_order_generator


def test_data_order_is_the_seed_plus_the_recorded_offset():
    # Recorded runs were drawn with this offset: changing it would change every run.
    expected = torch.randperm(50, generator=torch.Generator().manual_seed(7 + 1_000_003))
    assert torch.equal(torch.randperm(50, generator=data_order_generator(7)), expected)
    assert not torch.equal(torch.randperm(50, generator=data_order_generator(8)), expected)


def test_fitted_watches_S_or_S_and_A():
    s, everything = StoppingRule("S"), StoppingRule("all")
    assert s.fitted(True, False) and not s.fitted(False, True)
    assert everything.fitted(True, True) and not everything.fitted(True, False)
    all_S = np.array([True, True, False])
    all_A = np.array([True, False, True])
    assert s.fitted(all_S, all_A).tolist() == [True, True, False]
    assert everything.fitted(all_S, all_A).tolist() == [True, False, False]
    assert (s.watched_points(10, 4), everything.watched_points(10, 4)) == (10, 14)


def test_done_after_post_training_or_out_of_epochs():
    rule = StoppingRule("S", max_epochs=5, post_train_epochs=2)
    assert not rule.done(4, None) and rule.done(5, None)
    assert not rule.done(4, 3) and rule.done(5, 3)
    # One value per ensemble member; a negative fitted_at means not fitted yet.
    fitted_at = np.array([-1, 3, 4, -1])
    assert rule.done(5, fitted_at).tolist() == [True, True, False, True]
    assert rule.done(4, fitted_at).tolist() == [False, False, False, False]


@pytest.mark.parametrize("kwargs,match", [({"fit": "E"}, "fit must be"),
                                          ({"max_epochs": 0}, "max_epochs"),
                                          ({"post_train_epochs": -1}, "post_train_epochs")])
def test_invalid_rule_is_rejected_by_the_config_too(kwargs, match):
    with pytest.raises(SpecError, match=match):
        StoppingRule(**kwargs)
    with pytest.raises(SpecError, match=match):
        TrainConfig(**kwargs)


def test_train_to_fit_stops_by_the_configs_rule(synthetic_task):
    config = TrainConfig(lr=0.1, fit="all", post_train_epochs=2)
    assert config.stopping_rule() == StoppingRule("all", 2000, 2)
    model = build_model("fcn:16", synthetic_task.input_shape, seed=0)
    result = train_to_fit(model, synthetic_task, config, seed=0)
    first = next(h for h in result.history if h["train_acc_S"] == h["train_acc_A"] == 1.0)
    assert result.fitted_at == first["epoch"] and result.epochs == result.fitted_at + 2


def test_a_fixed_order_walks_S_then_A_every_epoch(synthetic_task):
    """order='fixed' (the authors' code, whose shuffle is a no-op) against a hand-written SGD
    over minibatches of S u A in list order, every epoch the same."""
    import torch.nn.functional as F

    config = TrainConfig(lr=0.1, batch_size=8, order="fixed")
    model = build_model("fcn:16", synthetic_task.input_shape, seed=0)
    result = train_to_fit(model, synthetic_task, config, seed=0)
    assert result.status == "fitted" and result.epochs > 1
    assert config.to_dict()["order"] == "fixed" and "order" not in TrainConfig().to_dict()

    by_hand = build_model("fcn:16", synthetic_task.input_shape, seed=0)
    x, y = synthetic_task.train_inputs(include_attack=True)
    for _ in range(result.epochs):
        for i in range(0, len(y), config.batch_size):
            by_hand.zero_grad(set_to_none=True)
            logits = by_hand(x[i:i + config.batch_size]).reshape(-1)
            F.binary_cross_entropy_with_logits(logits, y[i:i + config.batch_size]).backward()
            with torch.no_grad():
                for p in by_hand.parameters():
                    p.add_(p.grad, alpha=-config.lr)
    for p, q in zip(model.parameters(), by_hand.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    # and it is another network than the shuffled order trains
    shuffled = build_model("fcn:16", synthetic_task.input_shape, seed=0)
    train_to_fit(shuffled, synthetic_task, TrainConfig(lr=0.1, batch_size=8), seed=0)
    assert not torch.equal(next(shuffled.parameters()), next(model.parameters()))


def test_an_unknown_order_is_refused():
    with pytest.raises(SpecError, match="order must be one of shuffled, fixed, got 'sorted'"):
        TrainConfig(order="sorted")
