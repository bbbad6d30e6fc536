"""Sharpness-Aware Minimization (Foret et al., ICLR 2021) as a two-step wrapper around any base
optimizer, in the style of davda54/sam.

    g   = grad L(w)
    e   = rho * g / |g|               (ASAM, adaptive=True: e = rho * w^2 g / |w g|)
    w  <- w + e;  g' = grad L(w + e);  w <- w - e
    base_optimizer.step() with gradient g'

`step(closure)` evaluates the closure twice (at w and at w + e) and returns the loss at w. The
step is flatvol.train.update_rules.sam_step, which the ensemble trainer runs on stacks of
networks around the same base update (torch.optim's functional SGD / Adam).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from flatvol.train.update_rules import sam_step


class SAM(torch.optim.Optimizer):
    """SAM wrapper. `base_optimizer` is a torch.optim.Optimizer class or a factory
    `(param_groups, **kwargs) -> Optimizer`; it shares this wrapper's param groups."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict],
        base_optimizer: Callable[..., torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        **kwargs,
    ):
        if not rho >= 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        defaults = dict(rho=rho, adaptive=adaptive, **kwargs)
        super().__init__(params, defaults)
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """One SAM step (flatvol.train.update_rules.sam_step, the ensemble's too), the base
        optimizer's step taken with the gradient at w + e(w).

        Args:
            closure: Re-evaluates the loss and populates `.grad`; called twice.

        Returns:
            The loss at w.
        """
        if closure is None:
            raise RuntimeError("SAM needs a closure that recomputes the loss and gradients")
        closure = torch.enable_grad()(closure)
        settings = {(g["rho"], g["adaptive"]) for g in self.param_groups}
        if len(settings) != 1:  # one ascent for all weights: its norm spans every group
            raise ValueError(f"SAM needs one rho and adaptive for all param groups, got "
                             f"{sorted(settings)}")
        rho, adaptive = settings.pop()
        # each weight as a stack of one member: the ensemble's code, on one network
        params = {str(i): p for i, p in enumerate(p for g in self.param_groups
                                                 for p in g["params"])}
        weights = {k: p.detach().unsqueeze(0) for k, p in params.items()}

        def grad_fn(need_loss: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            loss = closure()
            return loss.detach(), {k: (p.grad if p.grad is not None else torch.zeros_like(p)
                                       ).unsqueeze(0) for k, p in params.items()}

        # the closure leaves the gradient at w + e(w) in .grad: the base step reads it there
        return sam_step(weights, grad_fn, float(rho), bool(adaptive),
                        lambda grads: self.base_optimizer.step())

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.base_optimizer.param_groups = self.param_groups
