"""Entropy-SGD (Chaudhari et al., ICLR 2017, "Entropy-SGD: biasing gradient descent into wide
valleys"), Algorithm 1, as a closure-based torch optimizer.

One outer step at weights x runs L steps of stochastic gradient Langevin dynamics (SGLD) on the
coupled loss f(x') + gamma/2 |x - x'|^2, keeps an exponential average mu of the SGLD iterates,
and moves x along the local-entropy gradient gamma (x - mu):

    x', mu <- x
    for l = 1..L:
        dx' <- grad f(x'; minibatch) - gamma (x - x')
        x'  <- x' - eta' dx' + sqrt(eta') * noise * N(0, I)
        mu  <- (1 - alpha) mu + alpha x'
    x <- x - eta gamma (x - mu)

with gamma "scoped" upwards over time, gamma_t = gamma0 (1 + gamma1)^t. The outer update may use
(Nesterov) momentum, as in the authors' experiments. `closure()` must re-evaluate the loss and
populate `.grad`; it is called L times per step (at x' = x first, so the returned loss is the
loss at the step's starting weights).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch


class EntropySGD(torch.optim.Optimizer):
    """Entropy-SGD. Defaults follow the authors' code: L=20 Langevin steps of size 0.1, thermal
    noise 1e-4, mean weight alpha=0.25 (their beta1=0.75 on the old mean), gamma0=0.03,
    gamma1=1e-3. `seed` makes the Langevin noise reproducible."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict],
        lr: float = 1.0,
        langevin_steps: int = 20,
        sgld_lr: float = 0.1,
        noise: float = 1e-4,
        mean_weight: float = 0.25,
        gamma0: float = 0.03,
        gamma1: float = 1e-3,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        seed: int = 0,
    ):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if int(langevin_steps) < 1:
            raise ValueError(f"langevin_steps must be >= 1, got {langevin_steps}")
        if not sgld_lr > 0:
            raise ValueError(f"sgld_lr must be positive, got {sgld_lr}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        if not 0 < mean_weight <= 1:
            raise ValueError(f"mean_weight must be in (0, 1], got {mean_weight}")
        if not gamma0 > 0 or gamma1 < 0:
            raise ValueError(f"need gamma0 > 0 and gamma1 >= 0, got {gamma0}, {gamma1}")
        if momentum < 0 or (nesterov and momentum == 0):
            raise ValueError("nesterov needs momentum > 0")
        defaults = dict(lr=lr, langevin_steps=int(langevin_steps), sgld_lr=sgld_lr, noise=noise,
                        mean_weight=mean_weight, gamma0=gamma0, gamma1=gamma1,
                        momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self._generator = torch.Generator().manual_seed(int(seed))
        self.steps = 0

    def gamma(self, group: dict) -> float:
        """The scoping coupling gamma_t = gamma0 (1 + gamma1)^t at the current outer step t."""
        return group["gamma0"] * (1.0 + group["gamma1"]) ** self.steps

    def _noise_like(self, p: torch.Tensor) -> torch.Tensor:
        # Drawn on CPU from our own generator: identical streams on CPU and CUDA.
        return torch.randn(p.shape, generator=self._generator, dtype=p.dtype).to(p.device)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None:
            raise RuntimeError("EntropySGD needs a closure that recomputes the loss and gradients")
        closure = torch.enable_grad()(closure)
        groups = self.param_groups
        params = [p for g in groups for p in g["params"]]
        anchor = [p.detach().clone() for p in params]  # x
        mean = [p.detach().clone() for p in params]  # mu
        steps = max(g["langevin_steps"] for g in groups)
        first_loss: torch.Tensor | None = None
        for _ in range(steps):
            loss = closure()  # gradient at x'
            if first_loss is None:
                first_loss = loss.detach()
            i = 0
            for group in groups:
                gamma = self.gamma(group)
                eta, eps, alpha = group["sgld_lr"], group["noise"], group["mean_weight"]
                for p in group["params"]:
                    x, mu = anchor[i], mean[i]
                    i += 1
                    grad = p.grad if p.grad is not None else torch.zeros_like(p)
                    if group["weight_decay"]:
                        grad = grad.add(p, alpha=group["weight_decay"])
                    d = grad - gamma * (x - p)
                    p.add_(d, alpha=-eta)
                    if eps > 0:
                        p.add_(self._noise_like(p), alpha=math.sqrt(eta) * eps)
                    mu.mul_(1.0 - alpha).add_(p, alpha=alpha)
        # Outer update from the anchor x along gamma (x - mu), with optional momentum.
        i = 0
        for group in groups:
            gamma = self.gamma(group)
            for p in group["params"]:
                x, mu = anchor[i], mean[i]
                i += 1
                direction = gamma * (x - mu)
                if group["momentum"]:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = direction.clone()
                    else:
                        buf.mul_(group["momentum"]).add_(direction)
                    if group["nesterov"]:
                        direction = direction.add(buf, alpha=group["momentum"])
                    else:
                        direction = buf
                p.copy_(x - group["lr"] * direction)
        self.steps += 1
        assert first_loss is not None
        return first_loss
