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
loss at the step's starting weights). The step is flatvol.train.update_rules.entropy_sgd_step,
which the ensemble trainer runs on stacks of networks, each with its own noise generator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from flatvol.train.update_rules import EntropySGDSettings, entropy_sgd_step, member_noise


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
        return EntropySGDSettings.of_group(group).gamma(self.steps)

    def generator_state(self) -> torch.Tensor:
        """The state of the Langevin noise generator (where an ensemble member's starts)."""
        return self._generator.get_state()

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """One outer step (flatvol.train.update_rules.entropy_sgd_step, the ensemble's too).

        Args:
            closure: Re-evaluates the loss and populates `.grad`; called langevin_steps times.

        Returns:
            The loss at the step's starting weights.
        """
        if closure is None:
            raise RuntimeError("EntropySGD needs a closure that recomputes the loss and gradients")
        closure = torch.enable_grad()(closure)
        if len(self.param_groups) != 1:  # one Langevin chain over all weights
            raise ValueError(f"EntropySGD takes one param group, got {len(self.param_groups)}")
        group = self.param_groups[0]
        settings = EntropySGDSettings.of_group(group)
        # each weight as a stack of one member: the ensemble's code, on one network
        params = {str(i): p for i, p in enumerate(group["params"])}
        weights = {k: p.detach().unsqueeze(0) for k, p in params.items()}
        first = bool(settings.momentum) and not any(
            "momentum_buffer" in self.state[p] for p in params.values())
        buffers = None
        if settings.momentum:
            buffers = {k: self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)
                                                   ).unsqueeze(0) for k, p in params.items()}

        def grad_fn(need_loss: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            loss = closure()
            return loss.detach(), {k: (p.grad if p.grad is not None else torch.zeros_like(p)
                                       ).unsqueeze(0) for k, p in params.items()}

        loss = entropy_sgd_step(weights, grad_fn, settings, self.steps, buffers, first,
                                lambda like: member_noise([self._generator], like))
        self.steps += 1
        return loss
