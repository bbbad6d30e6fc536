"""The optimizers' update rules, written once over parameter stacks and composed as optax
composes gradient transformations; `train_to_fit` (through the torch.optim classes of
flatvol.train.sam and flatvol.train.entropy_sgd) and the ensemble trainer
(flatvol.train.stacked.StackedOptimizer) both step with these functions, so the two paths
cannot drift.

Every tensor here has leading member dimension(s): (G, ...) for G ensemble members, (1, ...) for
one network (its parameters viewed with `unsqueeze(0)`). Every operation is elementwise or
reduces within one member, so member k moves exactly as it would alone.

A rule is a base rule (torch.optim's own functional SGD / Adam: `TorchUpdate`) or a wrapper
around one that needs gradients at other weights than the current ones:
- SAM (`sam_step`): the gradient at the ascent point w + e(w), then the base rule's step;
- Entropy-SGD (`entropy_sgd_step`): an inner loop of SGLD steps, then an outer (momentum) step.
Such wrappers take a `GradFn`, which evaluates the loss and gradients at the current weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

from flatvol.errors import SpecError

Params = dict[str, torch.Tensor]
RuleState = dict[str, Params]
# Evaluates the loss and gradients at the current weights; the flag says whether the caller
# wants the loss (an ensemble skips it where nothing reads it). Returns (anything, gradients).
GradFn = Callable[[bool], tuple[Any, Params]]

GENERATOR_SLOT = "sgld_generator"  # RuleState slot of Entropy-SGD's per-member noise generators


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (G,) tensor shaped to broadcast over `like`'s (G, ...)."""
    return values.to(like).view(-1, *([1] * (like.ndim - 1)))


@dataclass(frozen=True)
class TorchUpdate:
    """torch.optim's functional SGD or Adam (foreach=False: the per-tensor update torch.optim
    runs on CPU) with the hyperparameters of the torch.optim optimizer the registry builds.

    Attributes:
        kind: 'sgd' (plain, momentum, Nesterov) or 'adam' (Adam, AMSGrad).
        hyper: The optimizer's param group, less its parameters.
    """

    kind: Literal["sgd", "adam"]
    hyper: dict[str, Any] = field(hash=False)

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer) -> TorchUpdate:
        """The update of a torch.optim SGD or Adam instance.

        Args:
            optimizer: A torch.optim.SGD or torch.optim.Adam (or subclass) with one param group.

        Returns:
            Its TorchUpdate.

        Raises:
            SpecError: Another optimizer class, which has no stacked form.
        """
        kind = ("adam" if isinstance(optimizer, torch.optim.Adam)
                else "sgd" if isinstance(optimizer, torch.optim.SGD) else None)
        if kind is None or len(optimizer.param_groups) != 1:
            raise SpecError(f"ensemble training cannot stack a {type(optimizer).__name__} "
                            "update (SGD, Adam or a rule of flatvol.train.update_rules "
                            "expected); use train_to_fit for it")
        return cls(kind, {k: v for k, v in optimizer.param_groups[0].items() if k != "params"})

    def init(self, params: Params) -> RuleState:
        """Zero state slots for `params` (Adam's moments, SGD's momentum buffer)."""
        def zeros() -> Params:
            return {k: torch.zeros_like(v) for k, v in params.items()}
        if self.kind == "adam":
            state = {"exp_avg": zeros(), "exp_avg_sq": zeros()}
            if self.hyper["amsgrad"]:
                state["max_exp_avg_sq"] = zeros()
            return state
        return {"momentum_buffer": zeros()} if self.hyper["momentum"] != 0 else {}

    @torch.no_grad()
    def apply(self, params: Params, grads: Params, state: RuleState, step: int) -> None:
        """Update `params` in place with `grads` at step `step` (1-based)."""
        names = list(params)
        slots = {g: [group[k] for k in names] for g, group in state.items()}
        p_list, g_list = [params[k] for k in names], [grads[k] for k in names]
        h = self.hyper
        if self.kind == "adam":
            steps = [torch.tensor(step - 1.0) for _ in names]  # adam() counts them up to `step`
            adam(p_list, g_list, slots["exp_avg"], slots["exp_avg_sq"],
                 slots.get("max_exp_avg_sq", []), steps, foreach=False,
                 decoupled_weight_decay=h["decoupled_weight_decay"], amsgrad=h["amsgrad"],
                 beta1=h["betas"][0], beta2=h["betas"][1], lr=h["lr"],
                 weight_decay=h["weight_decay"], eps=h["eps"], maximize=h["maximize"])
            return
        # torch.optim starts a momentum buffer as a copy of the first gradient (a None buffer)
        buffers = slots.get("momentum_buffer", [None] * len(names))
        first = [None] * len(names) if step == 1 else buffers
        sgd(p_list, g_list, first, foreach=False, weight_decay=h["weight_decay"],
            momentum=h["momentum"], lr=h["lr"], dampening=h["dampening"],
            nesterov=h["nesterov"], maximize=h["maximize"])
        if step == 1 and h["momentum"] != 0:
            for buf, new in zip(buffers, first):
                buf.copy_(new)

    def step(self, params: Params, grad_fn: GradFn, state: RuleState, step: int) -> Any:
        """One step: the gradient at the current weights, then `apply`.

        Returns:
            What grad_fn returned besides the gradients.
        """
        aux, grads = grad_fn(True)
        self.apply(params, grads, state, step)
        return aux

    moves_without_gradient = False

    # One gradient at the current weights, then `apply`: a caller may compute the gradients of
    # members at different step numbers together and apply each member's own step.
    def same_update(self, step: int, other: int) -> bool:
        """Whether `apply` at step `step` and at step `other` is the same update (then members
        at either step may be updated in one call): SGD reads the step only to start its
        momentum buffer at step 1; Adam's bias correction reads it at every step."""
        return step == other or (self.kind == "sgd" and step > 1 and other > 1)


# --- SAM (Foret et al. 2021)


def member_grad_norm(params: Params, grads: Params, adaptive: bool) -> torch.Tensor:
    """Each member's 2-norm of its gradient over all its tensors, (G,) (ASAM: of |w| * g).

    Both norms reduce a contiguous row per member, (G, n) then (G, tensors), so a member's
    norm is computed alike whether it is alone (G = 1) or in a stack.
    """
    per_tensor = [((params[k].abs() * g) if adaptive else g).flatten(1).norm(p=2, dim=1)
                  for k, g in grads.items()]
    return torch.stack(per_tensor, dim=1).norm(p=2, dim=1)


@torch.no_grad()
def sam_step(params: Params, grad_fn: GradFn, rho: float, adaptive: bool,
             base_step: Callable[[Params], None]) -> Any:
    """One SAM step: g = grad L(w); e = rho g / |g| (ASAM: rho w^2 g / |w g|); the base rule's
    step from w with the gradient at w + e.

    Args:
        params: The weights, (G, ...) each, updated in place.
        grad_fn: Loss and gradients at the current weights.
        rho: The ascent radius.
        adaptive: ASAM's scale-invariant ascent.
        base_step: Applies the base rule's update with the given gradients.

    Returns:
        What grad_fn returned at w (the loss at the step's start).
    """
    aux, grads = grad_fn(True)
    scale = rho / (member_grad_norm(params, grads, adaptive) + 1e-12)
    start = {}
    for k, g in grads.items():
        p = params[k]
        start[k] = p.clone()
        p.add_((torch.pow(p, 2) if adaptive else 1.0) * g * _per_member(scale, p))
    _, ascent_grads = grad_fn(False)
    for k, p in params.items():
        if k in start:
            p.copy_(start[k])
    base_step(ascent_grads)
    return aux


@dataclass(frozen=True)
class SAMUpdate:
    """SAM around a base rule: `sam_step` with `base`'s update.

    Attributes:
        base: The base rule.
        rho: The ascent radius.
        adaptive: ASAM.
    """

    base: TorchUpdate
    rho: float
    adaptive: bool

    def init(self, params: Params) -> RuleState:
        """The base rule's state."""
        return self.base.init(params)

    def step(self, params: Params, grad_fn: GradFn, state: RuleState, step: int) -> Any:
        """One SAM step (`sam_step`) at step `step` (1-based) of the base rule."""
        return sam_step(params, grad_fn, self.rho, self.adaptive,
                        lambda grads: self.base.apply(params, grads, state, step))

    moves_without_gradient = False


# --- Entropy-SGD (Chaudhari et al. 2017)


@dataclass(frozen=True)
class EntropySGDSettings:
    """Entropy-SGD's hyperparameters (flatvol.train.entropy_sgd documents them)."""

    lr: float
    langevin_steps: int
    sgld_lr: float
    noise: float
    mean_weight: float
    gamma0: float
    gamma1: float
    momentum: float
    nesterov: bool
    weight_decay: float

    @classmethod
    def of_group(cls, group: dict[str, Any]) -> EntropySGDSettings:
        """The settings in an EntropySGD param group."""
        return cls(**{name: group[name] for name in cls.__dataclass_fields__})

    def gamma(self, t: int) -> float:
        """The scoped coupling gamma_t = gamma0 (1 + gamma1)^t at outer step t (0-based)."""
        return self.gamma0 * (1.0 + self.gamma1) ** t


def member_noise(generators: Sequence[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like `like` (G, ...), member g's from generators[g].

    Drawn on CPU from each member's own generator (identical streams on CPU and CUDA, and a
    member draws what it would draw alone)."""
    draws = [torch.randn(like.shape[1:], generator=g, dtype=like.dtype) for g in generators]
    return torch.stack(draws).to(like.device)


@torch.no_grad()
def entropy_sgd_step(params: Params, grad_fn: GradFn, s: EntropySGDSettings, t: int,
                     momentum_buffers: Params | None, first: bool,
                     noise: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """One outer step of Entropy-SGD (Algorithm 1): `s.langevin_steps` SGLD steps on
    f(x') + gamma/2 |x - x'|^2 from x' = x, averaging mu, then x <- x - lr gamma (x - mu) (with
    momentum when s.momentum > 0).

    Args:
        params: The weights x, (G, ...) each, updated in place.
        grad_fn: Loss and gradients at the current weights.
        s: The hyperparameters.
        t: The outer step (0-based), which scopes gamma.
        momentum_buffers: The outer momentum buffers (when s.momentum > 0).
        first: Whether this is the first step (the buffers then start as the direction).
        noise: Standard normal noise like a weight tensor, drawn in parameter order.

    Returns:
        What grad_fn returned at x (the loss at the step's start).
    """
    gamma = s.gamma(t)
    anchor = {k: p.clone() for k, p in params.items()}  # x
    mean = {k: p.clone() for k, p in params.items()}  # mu
    first_aux = None
    for inner in range(s.langevin_steps):
        aux, grads = grad_fn(inner == 0)  # gradient at x'
        if inner == 0:
            first_aux = aux
        for k, p in params.items():
            grad = grads[k]
            if s.weight_decay:
                grad = grad.add(p, alpha=s.weight_decay)
            p.add_(grad - gamma * (anchor[k] - p), alpha=-s.sgld_lr)
            if s.noise > 0:
                p.add_(noise(p), alpha=math.sqrt(s.sgld_lr) * s.noise)
            mean[k].mul_(1.0 - s.mean_weight).add_(p, alpha=s.mean_weight)
    for k, p in params.items():
        direction = gamma * (anchor[k] - mean[k])
        if s.momentum:
            assert momentum_buffers is not None
            buf = momentum_buffers[k]
            if first:
                buf.copy_(direction)
            else:
                buf.mul_(s.momentum).add_(direction)
            direction = direction.add(buf, alpha=s.momentum) if s.nesterov else buf
        p.copy_(anchor[k] - s.lr * direction)
    return first_aux


@dataclass(frozen=True)
class EntropySGDUpdate:
    """Entropy-SGD (`entropy_sgd_step`) with one noise generator per member, each starting
    from `generator_state` (the stream the single-network optimizer draws from).

    Attributes:
        settings: The hyperparameters.
        generator_state: The initial state of every member's noise generator.
    """

    settings: EntropySGDSettings
    generator_state: torch.Tensor = field(hash=False)

    def init(self, params: Params) -> RuleState:
        """The momentum buffers (if any) and each member's generator state, (G, bytes)."""
        members = next(iter(params.values())).shape[0]
        state: RuleState = {GENERATOR_SLOT: {"state": self.generator_state.expand(
            members, -1).clone()}}
        if self.settings.momentum:
            state["momentum_buffer"] = {k: torch.zeros_like(v) for k, v in params.items()}
        return state

    def step(self, params: Params, grad_fn: GradFn, state: RuleState, step: int) -> Any:
        """One outer step (`entropy_sgd_step`) at step `step` (1-based); the members' generator
        states advance by their draws."""
        states = state[GENERATOR_SLOT]["state"]
        # a CPU copy: set_state reads a CPU tensor of its own (a row view of the stack crashes
        # it), and a checkpoint loaded for a GPU training holds the states on the GPU
        generators = [torch.Generator().set_state(st.to("cpu", copy=True)) for st in states]
        aux = entropy_sgd_step(params, grad_fn, self.settings, step - 1,
                               state.get("momentum_buffer"), step == 1,
                               lambda like: member_noise(generators, like))
        for row, g in enumerate(generators):
            states[row].copy_(g.get_state())
        return aux

    @property
    def moves_without_gradient(self) -> bool:
        """Whether a weight with zero gradient moves: the SGLD noise moves it."""
        return self.settings.noise > 0


UpdateRule = TorchUpdate | SAMUpdate | EntropySGDUpdate
