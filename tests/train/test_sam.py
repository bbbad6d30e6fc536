"""SAM against its defining two-step update on a quadratic, where every gradient is known."""

import numpy as np
import pytest
import torch

from flatvol.errors import SpecError
from flatvol.models import build_model
from flatvol.train import TrainConfig, make_optimizer, train_to_fit
from flatvol.train.optimizers import OptimizerSettings
from flatvol.train.sam import SAM

rng = np.random.default_rng(0)
A = rng.standard_normal((5, 5))
H = A @ A.T + np.eye(5)  # SPD Hessian
c = rng.standard_normal(5)
w0 = rng.standard_normal(5)


def grad(w):
    return H @ (w - c)


def _setup(**sam_kwargs):
    w = torch.nn.Parameter(torch.tensor(w0))
    Ht, ct = torch.tensor(H), torch.tensor(c)
    base = sam_kwargs.pop("base", torch.optim.SGD)
    opt = SAM([w], base, **sam_kwargs)

    def closure():
        opt.zero_grad()
        loss = 0.5 * (w - ct) @ Ht @ (w - ct)
        loss.backward()
        return loss

    return w, opt, closure


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_step_is_base_step_with_gradient_at_the_ascent_point(adaptive):
    rho, lr = 0.1, 0.05
    w, opt, closure = _setup(rho=rho, adaptive=adaptive, lr=lr)
    loss = opt.step(closure)
    g = grad(w0)
    if adaptive:  # ASAM: e = rho T^2 g / |T g| with T = diag|w|
        e = rho * w0**2 * g / np.linalg.norm(np.abs(w0) * g)
    else:
        e = rho * g / np.linalg.norm(g)
    expected = w0 - lr * grad(w0 + e)
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-10)
    assert float(loss) == pytest.approx(0.5 * (w0 - c) @ H @ (w0 - c))  # loss at w, not w + e


def test_base_optimizer_state_uses_sam_gradients():
    """Momentum SGD as base: two SAM steps = two momentum steps with the perturbed gradients."""
    rho, lr, mom = 0.2, 0.03, 0.9
    w, opt, closure = _setup(rho=rho, lr=lr, momentum=mom)
    opt.step(closure)
    opt.step(closure)
    x, buf = w0.copy(), None
    for _ in range(2):
        g = grad(x)
        gs = grad(x + rho * g / np.linalg.norm(g))
        buf = gs if buf is None else mom * buf + gs
        x = x - lr * buf
    np.testing.assert_allclose(w.detach().numpy(), x, rtol=1e-10)


def test_rho_zero_is_the_base_optimizer():
    w, opt, closure = _setup(rho=0.0, base=torch.optim.Adam, lr=0.01)
    w2 = torch.nn.Parameter(torch.tensor(w0))
    adam = torch.optim.Adam([w2], lr=0.01)
    Ht, ct = torch.tensor(H), torch.tensor(c)
    for _ in range(5):
        opt.step(closure)
        adam.zero_grad()
        (0.5 * (w2 - ct) @ Ht @ (w2 - ct)).backward()
        adam.step()
    torch.testing.assert_close(w, w2)


def test_registered_with_options_and_trains_to_fit(synthetic_task):
    options = {"rho": 0.05, "base": "momentum"}
    model = build_model("fcn:16", synthetic_task.input_shape, seed=0)
    config = TrainConfig(optimizer="sam", optimizer_options=options, lr=0.05, max_epochs=300)
    result = train_to_fit(model, synthetic_task, config, seed=0)
    assert result.status == "fitted" and result.train_acc_S == 1.0
    opt = make_optimizer("sam", model.parameters(),
                         OptimizerSettings(0.05, momentum=0.8, options=options))
    assert isinstance(opt, SAM) and isinstance(opt.base_optimizer, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.8 and opt.param_groups[0]["rho"] == 0.05


def test_bad_options_are_spec_errors():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(SpecError, match="unknown option"):
        make_optimizer("sam", params, OptimizerSettings(0.1, options={"radius": 3}))
    with pytest.raises(SpecError, match="unknown optimizer"):
        make_optimizer("sam", params, OptimizerSettings(0.1, options={"base": "lbfgs-ish"}))
    with pytest.raises(SpecError, match="rho"):
        make_optimizer("sam", params, OptimizerSettings(0.1, options={"rho": -1.0}))
