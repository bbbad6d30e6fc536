"""Entropy-SGD against Algorithm 1 of Chaudhari et al. (2017), written out independently."""

import numpy as np
import pytest
import torch

from flatvol.errors import SpecError
from flatvol.models import build_model
from flatvol.train import TrainConfig, make_optimizer, train_to_fit
from flatvol.train.entropy_sgd import EntropySGD
from flatvol.train.optimizers import OptimizerSettings


def _quadratic(seed=0):
    """f(W, b) = 1/2 |A vec(W) - c|^2 + 1/2 |b - d|^2 with two parameter tensors of different
    shapes, so the per-parameter bookkeeping and the noise order are both exercised."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((6, 6))
    c = rng.standard_normal(6)
    d = rng.standard_normal(3)
    W0 = rng.standard_normal((2, 3))
    b0 = rng.standard_normal(3)

    def grads(W, b):
        r = A @ W.reshape(-1) - c
        return (A.T @ r).reshape(W.shape), b - d

    def loss(W, b):
        return 0.5 * np.sum((A @ W.reshape(-1) - c) ** 2) + 0.5 * np.sum((b - d) ** 2)

    return A, c, d, W0, b0, grads, loss


def _reference(W0, b0, grads, steps, lr, L, sgld_lr, noise, alpha, g0, g1, momentum, nesterov,
               seed):
    """Algorithm 1, in numpy, drawing the Langevin noise from the same torch stream."""
    gen = torch.Generator().manual_seed(seed)
    x = [W0.copy(), b0.copy()]
    bufs = [None, None]
    for t in range(steps):
        gamma = g0 * (1 + g1) ** t
        xp = [v.copy() for v in x]
        mu = [v.copy() for v in x]
        for _ in range(L):
            g = grads(*xp)
            for i in range(2):
                dx = g[i] - gamma * (x[i] - xp[i])
                xp[i] = xp[i] - sgld_lr * dx
                if noise > 0:
                    xi = torch.randn(xp[i].shape, generator=gen, dtype=torch.float64).numpy()
                    xp[i] = xp[i] + np.sqrt(sgld_lr) * noise * xi
                mu[i] = (1 - alpha) * mu[i] + alpha * xp[i]
        for i in range(2):
            direction = gamma * (x[i] - mu[i])
            if momentum:
                bufs[i] = direction.copy() if bufs[i] is None else momentum * bufs[i] + direction
                direction = direction + momentum * bufs[i] if nesterov else bufs[i]
            x[i] = x[i] - lr * direction
    return x


@pytest.mark.parametrize("momentum,nesterov,noise", [(0.0, False, 0.0), (0.0, False, 0.05),
                                                     (0.9, True, 0.05), (0.5, False, 0.0)])
def test_matches_algorithm_1(momentum, nesterov, noise):
    A, c, d, W0, b0, grads, _ = _quadratic()
    hyper = dict(lr=0.7, L=4, sgld_lr=0.05, noise=noise, alpha=0.25, g0=0.3, g1=0.1)
    W = torch.nn.Parameter(torch.tensor(W0))
    b = torch.nn.Parameter(torch.tensor(b0))
    At, ct, dt = (torch.tensor(v) for v in (A, c, d))
    opt = EntropySGD([W, b], lr=hyper["lr"], langevin_steps=hyper["L"], sgld_lr=hyper["sgld_lr"],
                     noise=noise, mean_weight=hyper["alpha"], gamma0=hyper["g0"],
                     gamma1=hyper["g1"], momentum=momentum, nesterov=nesterov, seed=11)
    calls = []

    def closure():
        opt.zero_grad()
        loss = 0.5 * ((At @ W.reshape(-1) - ct) ** 2).sum() + 0.5 * ((b - dt) ** 2).sum()
        loss.backward()
        calls.append(loss.item())
        return loss

    first_losses = [float(opt.step(closure)) for _ in range(3)]
    expected = _reference(W0, b0, grads, 3, hyper["lr"], hyper["L"], hyper["sgld_lr"], noise,
                          hyper["alpha"], hyper["g0"], hyper["g1"], momentum, nesterov, seed=11)
    np.testing.assert_allclose(W.detach().numpy(), expected[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.detach().numpy(), expected[1], rtol=1e-10, atol=1e-12)
    assert len(calls) == 3 * hyper["L"]  # L gradient evaluations per step
    assert first_losses == [calls[0], calls[4], calls[8]]  # the loss at each step's start


def test_one_noiseless_langevin_step_is_sgd_with_lr_eta_gamma_eta_prime():
    """L=1, alpha=1, no noise: x' = x - eta' grad f(x) = mu, so x <- x - eta gamma eta' grad f."""
    _, _, _, W0, b0, grads, _ = _quadratic(1)
    W = torch.nn.Parameter(torch.tensor(W0))
    b = torch.nn.Parameter(torch.tensor(b0))
    opt = EntropySGD([W, b], lr=2.0, langevin_steps=1, sgld_lr=0.1, noise=0.0, mean_weight=1.0,
                     gamma0=0.5, gamma1=0.0)
    gW, gb = grads(W0, b0)
    A, c, d, *_ = _quadratic(1)
    At, ct, dt = (torch.tensor(v) for v in (A, c, d))

    def closure():
        opt.zero_grad()
        loss = 0.5 * ((At @ W.reshape(-1) - ct) ** 2).sum() + 0.5 * ((b - dt) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    np.testing.assert_allclose(W.detach().numpy(), W0 - 2.0 * 0.5 * 0.1 * gW, rtol=1e-12)
    np.testing.assert_allclose(b.detach().numpy(), b0 - 2.0 * 0.5 * 0.1 * gb, rtol=1e-12)


def test_decreases_a_quadratic_and_gamma_scopes_up():
    *_, W0, b0, grads, loss = _quadratic(2)
    A, c, d, *_ = _quadratic(2)
    W = torch.nn.Parameter(torch.tensor(W0))
    b = torch.nn.Parameter(torch.tensor(b0))
    At, ct, dt = (torch.tensor(v) for v in (A, c, d))
    opt = EntropySGD([W, b], lr=1.0, langevin_steps=10, sgld_lr=0.02, noise=1e-4, gamma0=0.3,
                     gamma1=0.01)

    def closure():
        opt.zero_grad()
        value = 0.5 * ((At @ W.reshape(-1) - ct) ** 2).sum() + 0.5 * ((b - dt) ** 2).sum()
        value.backward()
        return value

    start = loss(W0, b0)
    for _ in range(50):
        opt.step(closure)
    assert loss(W.detach().numpy(), b.detach().numpy()) < 0.2 * start
    assert opt.gamma(opt.param_groups[0]) == pytest.approx(0.3 * 1.01**50)


def test_registered_and_trains_to_fit(synthetic_task):
    config = TrainConfig(optimizer="entropy-sgd", lr=1.0, batch_size=32, max_epochs=200,
                         optimizer_options={"langevin_steps": 5, "gamma0": 1.0, "seed": 3})
    runs = []
    for _ in range(2):
        model = build_model("fcn:16", synthetic_task.input_shape, seed=0)
        runs.append((model, train_to_fit(model, synthetic_task, config, seed=0)))
    (m1, r1), (m2, r2) = runs
    assert r1.status == "fitted" and r1.train_acc_S == 1.0
    assert r1.epochs == r2.epochs  # same seed -> same noise -> same run
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))


def test_bad_options_are_spec_errors():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(SpecError, match="unknown option"):
        make_optimizer("entropy-sgd", params, OptimizerSettings(0.1, options={"L": 3}))
    with pytest.raises(SpecError, match="langevin_steps"):
        make_optimizer("entropy-sgd", params, OptimizerSettings(0.1, options={"langevin_steps": 0}))
    with pytest.raises(RuntimeError, match="closure"):
        EntropySGD(params).step()
