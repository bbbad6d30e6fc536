"""Zeroing Adam's subnormal second moments (flush_subnormal_) keeps its sqrt off the slow path and
must leave every update as it was: checked bitwise against the same optimizer left alone."""

import pytest
import torch

from flatvol.train.optimizers import (
    OptimizerSettings,
    adam_second_moments,
    flush_subnormal_,
    make_optimizer,
)
from flatvol.train.stacked import StackedOptimizer

TINY = torch.finfo(torch.float32).tiny
# subnormal float32 values, from just below the smallest normal to the smallest subnormal
SUBNORMAL = torch.tensor([1.1e-38, 5e-39, 1e-40, 1e-43, 1.4e-45])
# small normal values next to them, which a flush must keep (zeroing them changes sqrt(v) + eps)
SMALL = torch.tensor([1e-20, 1e-12])


def _poison(v: torch.Tensor) -> torch.Tensor:
    """Put SUBNORMAL, then SMALL, into the first entries of v (in place); returns their mask."""
    values = torch.cat([SUBNORMAL, SMALL])
    flat = v.view(-1)
    flat[: len(values)] = values
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[: len(values)] = True
    return mask.view(v.shape)


def _grads(shapes, step, masks=None):
    gen = torch.Generator().manual_seed(step)
    grads = {k: torch.randn(shape, generator=gen) for k, shape in shapes.items()}
    if masks is not None:
        for k, mask in masks.items():
            # vanished gradients where the moments went subnormal, a few merely tiny ones
            grads[k][mask] = 0.0
            grads[k].view(-1)[len(SUBNORMAL) + len(SMALL)] = 1e-19
    return grads


def test_flush_zeroes_exactly_the_subnormal_entries():
    values = torch.tensor([0.0, TINY, -TINY, 1e-37, 1.1e-38, -5e-39, 1.4e-45, 1.0])
    flush_subnormal_([values])
    assert values.tolist() == [0.0, TINY, -TINY, pytest.approx(1e-37), 0.0, 0.0, 0.0, 1.0]
    doubles = torch.tensor([1e-300, 1e-310], dtype=torch.float64)
    flush_subnormal_([doubles])
    assert doubles.tolist() == [1e-300, 0.0]


@pytest.mark.parametrize("amsgrad", [False, True])
def test_stacked_adam_updates_are_bitwise_unchanged_by_the_flush(amsgrad):
    shapes = {"w": (3, 20, 10), "b": (3, 10)}
    gen = torch.Generator().manual_seed(0)
    start = {k: torch.randn(shape, generator=gen) * 0.05 for k, shape in shapes.items()}
    settings = OptimizerSettings(lr=1e-3)
    name = "amsgrad" if amsgrad else "adam"
    left, flushed = ({k: v.clone() for k, v in start.items()} for _ in range(2))
    opt_left = StackedOptimizer(name, settings, left)
    opt_flushed = StackedOptimizer(name, settings, flushed)
    rows = slice(0, 3)
    masks = None
    for step in range(1, 40):
        if step == 2:  # early, where Adam's bias correction divides sqrt(v) by ~0.03
            masks = {}
            for k in shapes:
                masks[k] = _poison(opt_left.state["exp_avg_sq"][k])
                _poison(opt_flushed.state["exp_avg_sq"][k])
        grads = _grads(shapes, step, masks)
        copies = {k: g.clone() for k, g in grads.items()}
        opt_left.step(left, lambda need_loss, g=copies: (None, g), rows, step)
        opt_flushed.step(flushed, lambda need_loss, g=grads: (None, g), rows, step)
        opt_flushed.flush_subnormal()
        for k in shapes:
            assert torch.equal(left[k], flushed[k]), (step, k)
    left_v = torch.cat([v.view(-1) for v in opt_left.state["exp_avg_sq"].values()])
    flushed_v = torch.cat([v.view(-1) for v in opt_flushed.state["exp_avg_sq"].values()])
    subnormal = (left_v > 0) & (left_v < TINY)
    assert subnormal.sum() >= 2 * (len(SUBNORMAL) - 1)  # the case did arise, and persisted
    assert not ((flushed_v > 0) & (flushed_v < TINY)).any()


def test_per_run_adam_updates_are_bitwise_unchanged_by_the_flush():
    """train_to_fit's path: flush_subnormal_ over adam_second_moments of a torch.optim.Adam."""
    torch.manual_seed(0)
    models = [torch.nn.Linear(10, 4) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [make_optimizer("adam", m.parameters(), OptimizerSettings(lr=1e-3)) for m in models]
    x = torch.randn(16, 10)
    for step in range(30):
        for model, opt in zip(models, opts):
            opt.zero_grad()
            (model(x).square().mean() * (step < 3)).backward()  # gradients vanish after step 3
            opt.step()
        if step == 3:
            for opt in opts:
                for v in adam_second_moments(opt):
                    if v.numel() > len(SUBNORMAL) + len(SMALL):  # the weight's, not the bias's
                        _poison(v)
        flush_subnormal_(adam_second_moments(opts[1]))
        for a, b in zip(models[0].parameters(), models[1].parameters()):
            assert torch.equal(a, b), step
    left = torch.cat([v.view(-1) for v in adam_second_moments(opts[0])])
    flushed = torch.cat([v.view(-1) for v in adam_second_moments(opts[1])])
    assert ((left > 0) & (left < TINY)).any()
    assert not ((flushed > 0) & (flushed < TINY)).any()
    assert len(adam_second_moments(make_optimizer("sgd", models[0].parameters(),
                                                  OptimizerSettings(lr=0.1)))) == 0
