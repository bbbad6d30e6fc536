"""FunctionalLoss: the pure-function view of a module agrees with the module itself."""

from __future__ import annotations

import pytest
import torch
from flatness_helpers import flat_params, make_batchnorm, make_fcn
from torch import nn

from flatvol.errors import SpecError
from flatvol.flatness import FunctionalLoss


def test_loss_and_gradient_match_the_module(small_problem):
    model, x, y = small_problem
    loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    loss = loss.detach()
    with FunctionalLoss(model, x, y, chunk_size=7) as fl:
        torch.testing.assert_close(fl.w0, flat_params(model))
        assert fl.loss_value(fl.w0) == pytest.approx(float(loss), rel=1e-12)
        value, g = fl.value_and_grad(fl.w0)
        assert value == pytest.approx(float(loss), rel=1e-12)
        torch.testing.assert_close(g, torch.cat([t.reshape(-1) for t in grads]))
        # a subset of examples (the paper maximizer's minibatches)
        index = torch.tensor([3, 1, 4])
        sub = nn.functional.binary_cross_entropy_with_logits(model(x[index]), y[index]).detach()
        assert fl.loss_value(fl.w0, index) == pytest.approx(float(sub), rel=1e-12)
        unflat = fl.unflatten(fl.w0)
        assert list(unflat) == [n for n, _ in model.named_parameters()]
        torch.testing.assert_close(fl.flatten(unflat), fl.w0)


def test_batchnorm_in_train_mode_is_evaluated_in_eval_mode_and_restored():
    model, x, y = make_batchnorm()
    expected = float(nn.functional.binary_cross_entropy_with_logits(model(x), y).detach())
    model.train()
    running_mean = model.norm.running_mean.clone()
    with FunctionalLoss(model, x, y, chunk_size=5) as fl:
        assert fl.loss_value(fl.w0) == pytest.approx(expected, rel=1e-12)
        assert not model.training
    assert model.training and model.norm.training
    assert torch.equal(model.norm.running_mean, running_mean)


def test_state_is_restored_after_an_exception():
    model, x, y = make_fcn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="inside"):
        with FunctionalLoss(model, x, y):
            with torch.no_grad():
                model.hidden[0].weight.add_(1.0)  # a misbehaving caller
            raise ValueError("inside")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_bad_inputs_raise_spec_errors():
    model, x, y = make_fcn()
    with pytest.raises(SpecError, match="disagree"):
        FunctionalLoss(model, x, y[:3])
    with pytest.raises(SpecError, match="empty"):
        FunctionalLoss(model, x[:0], y[:0])
    with pytest.raises(SpecError, match="chunk_size"):
        FunctionalLoss(model, x, y, chunk_size=0)
    with pytest.raises(SpecError, match="nn.Module"):
        FunctionalLoss(lambda t: t, x, y)  # type: ignore[arg-type]
    frozen = make_fcn()[0].requires_grad_(False)
    with pytest.raises(SpecError, match="no trainable"):
        FunctionalLoss(frozen, x, y)


def test_explicit_device_and_float32_inputs_for_a_float64_model():
    model, x, y = make_fcn()
    with FunctionalLoss(model, x.float(), y.float(), device="cpu") as fl:
        assert fl.device == torch.device("cpu")
        assert fl.x.dtype == torch.float64 and fl.w0.dtype == torch.float64
        expected = float(nn.functional.binary_cross_entropy_with_logits(model(x), y).detach())
        assert fl.loss_value(fl.w0) == pytest.approx(expected, rel=1e-6)
