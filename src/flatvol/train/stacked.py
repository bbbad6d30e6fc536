"""Per-member math on stacked parameters (K members along dim 0): gradient engines and the
optimizer update, for the ensemble trainer.

A member's outputs are one logit per point (a binary task: sigmoid cross-entropy, stacked
logits (G, n)) or C outputs (a C-class task: softmax cross-entropy on int64 labels, stacked
outputs (G, n, C)), as `train_to_fit`'s `classification_loss`.

Two engines compute the per-member gradients:
- 'fcn': batched matmuls (bmm) with a hand-written backward pass for `FCN` models (the fast
  path on CPU). Input features that are zero on every training point are left out of
  training: their first-layer weights get zero gradient, so without weight decay they cannot
  move under SGD, momentum, Adam or SAM (MNIST's border pixels: ~25% of the first layer's
  work); Entropy-SGD's Langevin noise moves them, so it trains them all
  (`moves_without_gradient`).
- 'vmap': `torch.func.vmap` over `grad(functional_call(...))`, for any module without
  BatchNorm (batch statistics would need per-member running buffers).

`StackedOptimizer` applies the update rule of the optimizer the registry builds for
`train_to_fit` (flatvol.train.update_rules: torch.optim's own functional SGD / Adam, SAM and
Entropy-SGD around them, the very functions `train_to_fit`'s optimizers run) to stacked slices:
each operation is elementwise or reduces within one member, so member k moves exactly as it
would alone, and one member's state never moves another's.
"""

from __future__ import annotations

import copy
import math
import threading
from typing import Any, Literal

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.nn import functional as F

from flatvol.errors import SpecError
from flatvol.models import FCN
from flatvol.models.losses import classification_loss
from flatvol.train.entropy_sgd import EntropySGD
from flatvol.train.optimizers import OptimizerSettings, flush_subnormal_, make_optimizer
from flatvol.train.sam import SAM
from flatvol.train.update_rules import (
    EntropySGDSettings,
    EntropySGDUpdate,
    GradFn,
    SAMUpdate,
    TorchUpdate,
    UpdateRule,
)

# The built-in optimizers, all of which have a stacked form (`rule_of`; a registered
# optimizer built on torch.optim SGD / Adam, SAM or Entropy-SGD has one too).
ENSEMBLE_OPTIMIZERS = ("sgd", "momentum", "adam", "amsgrad", "entropy-sgd", "sam")
EngineName = Literal["auto", "fcn", "vmap"]
Params = dict[str, torch.Tensor]

# Largest intermediate (elements) an evaluation pass builds before splitting by member.
EVAL_ELEMENTS = 1 << 23


def rule_of(optimizer: torch.optim.Optimizer) -> UpdateRule:
    """The update rule of an optimizer the registry built (flatvol.train.optimizers), with its
    hyperparameters.

    Args:
        optimizer: A torch.optim SGD or Adam, a flatvol SAM around one, or a flatvol
            EntropySGD, with one param group.

    Returns:
        Its rule.

    Raises:
        SpecError: An optimizer with no stacked form.
    """
    if isinstance(optimizer, SAM):
        group = optimizer.param_groups[0]
        return SAMUpdate(TorchUpdate.of(optimizer.base_optimizer), float(group["rho"]),
                         bool(group["adaptive"]))
    if isinstance(optimizer, EntropySGD):
        return EntropySGDUpdate(EntropySGDSettings.of_group(optimizer.param_groups[0]),
                                optimizer.generator_state())
    return TorchUpdate.of(optimizer)


class StackedEngine:
    name = "base"
    flops = math.nan

    def prepare(self, params: Params, x_train: torch.Tensor, frozen_zero_inputs: bool
                ) -> tuple[Params, torch.Tensor]:
        """The parameters and inputs the training loop works on (default: unchanged)."""
        return params, x_train

    def restore(self, name: str, trained: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """Full-size parameter `name` from its training form (inverse of prepare)."""
        return trained

    def loss_and_grads(self, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor,
                       need_loss: bool = True
                       ) -> tuple[torch.Tensor | None, torch.Tensor, Params]:
        """x: (G, B, ...) y: (G, B) -> mean loss per member (G,) (or None when not needed),
        outputs (G, B) (one logit) or (G, B, C), gradients."""
        raise NotImplementedError

    def logits(self, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        """x shared by all members: (n, ...) -> (K, n) (one logit) or (K, n, C)."""
        raise NotImplementedError

    def logits_per_member(self, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        """x: (K, m, ...), member k's own points -> (K, m) (one logit) or (K, m, C)."""
        raise NotImplementedError


class FCNEngine(StackedEngine):
    """Forward and backward of Linear-ReLU stacks with batched matmuls, no autograd."""

    name = "fcn"

    def __init__(self, template: FCN):
        names = {id(p): n for n, p in template.named_parameters()}
        self.layers = [(names[id(m.weight)], names[id(m.bias)]) for m in template.linears]
        self.dims = [template.in_dim, *template.widths, template.outputs]
        self.columns: torch.Tensor | None = None  # input features kept for training
        self.flops = 0.0
        self._buffers: dict[int, Params] = {}
        self._lock = threading.Lock()

    # --- input features that are zero on every training point
    def prepare(self, params: Params, x_train: torch.Tensor, frozen_zero_inputs: bool
                ) -> tuple[Params, torch.Tensor]:
        x_flat = x_train.flatten(1)
        if not frozen_zero_inputs:
            return params, x_flat
        used = (x_flat != 0).any(0)
        if bool(used.all()):
            return params, x_flat
        self.columns = torch.nonzero(used).squeeze(1)
        w_first = self.layers[0][0]
        params = dict(params)
        params[w_first] = params[w_first].index_select(2, self.columns).contiguous()
        return params, x_flat.index_select(1, self.columns).contiguous()

    def restore(self, name: str, trained: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        if self.columns is None or name != self.layers[0][0]:
            return trained
        full = original.clone()
        full[:, :, self.columns] = trained
        return full

    def _count(self, members: int, rows: int, first_in: int, backward: bool) -> None:
        dims = [first_in, *self.dims[1:]]
        fwd = sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))
        if backward:  # weight gradients of every layer, input gradients of all but the first
            fwd += fwd + sum(2 * a * b for a, b in zip(dims[1:-1], dims[2:]))
        with self._lock:  # groups may run in threads
            self.flops += float(members) * rows * fwd

    def _forward(self, params: Params, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (G, B, d) -> outputs (G, C, B) and each layer's input, kept transposed as
        (G, features, B): W @ x^T runs faster than x @ W^T in MKL's batched GEMM."""
        h = x.transpose(1, 2)
        inputs = []
        for w_name, b_name in self.layers[:-1]:
            inputs.append(h)
            # bmm then a broadcast add: cheaper than baddbmm's copy of the expanded bias
            h = torch.bmm(params[w_name], h).add_(params[b_name].unsqueeze(2)).clamp_min_(0)
        w_out, b_out = self.layers[-1]
        inputs.append(h)
        z = torch.bmm(params[w_out], h).add_(params[b_out].unsqueeze(2))
        return z, inputs

    @staticmethod
    def _outputs(z: torch.Tensor) -> torch.Tensor:
        """Outputs (G, C, B) in the stacked form: (G, B) for one logit, else (G, B, C)."""
        return z.squeeze(1) if z.shape[1] == 1 else z.transpose(1, 2)

    def _grad_buffer(self, name: str, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        # reused between steps (one set per thread): a fresh multi-MB tensor per step costs
        # page faults
        mine = self._buffers.setdefault(threading.get_ident(), {})
        buf = mine.get(name)
        if buf is None or buf.shape != shape or buf.device != like.device:
            buf = mine[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def loss_and_grads(self, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor,
                       need_loss: bool = True
                       ) -> tuple[torch.Tensor | None, torch.Tensor, Params]:
        self._count(x.shape[0], x.shape[1], x.shape[2], backward=True)
        z_all, inputs = self._forward(params, x)
        if z_all.shape[1] == 1:  # one logit: sigmoid cross-entropy
            z = z_all.squeeze(1)
            loss = (F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(1)
                    if need_loss else None)
            g = (torch.sigmoid(z) - y).div_(y.shape[1])  # d mean-BCE / d logit
            ga = g.unsqueeze(1)  # (G, out, B): gradient w.r.t. a layer's pre-activations
        else:  # C outputs: softmax cross-entropy on int64 labels y (G, B)
            loss = (F.cross_entropy(z_all, y, reduction="none").mean(1)
                    if need_loss else None)
            # d mean-CE / d output = (softmax - one-hot) / B
            ga = torch.softmax(z_all, dim=1)
            ga.scatter_add_(1, y.unsqueeze(1), torch.full_like(y, -1, dtype=ga.dtype
                                                               ).unsqueeze(1))
            ga.div_(y.shape[1])
            z = self._outputs(z_all)
        grads: Params = {}
        for layer in range(len(self.layers) - 1, -1, -1):
            w_name, b_name = self.layers[layer]
            weight = params[w_name]
            h_in = inputs[layer].transpose(1, 2)  # (G, B, in); the first layer's is x itself
            grads[w_name] = torch.bmm(ga, h_in, out=self._grad_buffer(w_name, weight.shape,
                                                                      weight))
            grads[b_name] = ga.sum(2)
            if layer > 0:
                gh = torch.bmm(weight.transpose(1, 2), ga)  # (G, in, B), before any update
                # ReLU backward from its output (the layer's input): zero where it was <= 0
                ga = torch.ops.aten.threshold_backward(gh, inputs[layer], 0.0)
        return loss, z, grads

    def logits_per_member(self, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        self._count(x.shape[0], x.shape[1], x.shape[2], backward=False)
        return self._outputs(self._forward(params, x)[0])

    def logits(self, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        first = params[self.layers[0][0]]
        x = x.flatten(1).to(first.dtype)
        if first.shape[2] != x.shape[1]:  # training-time weights: inputs restricted too
            x = x.index_select(1, self.columns)  # type: ignore[arg-type]
        k_total = first.shape[0]
        step = max(1, EVAL_ELEMENTS // max(1, len(x) * max(self.dims[1:])))
        self._count(k_total, len(x), x.shape[1], backward=False)
        out = []
        for k0 in range(0, k_total, step):
            p = {k: v[k0 : k0 + step] for k, v in params.items()}
            w_name, b_name = self.layers[0]
            kc, width, d = p[w_name].shape
            # the first layer is one GEMM: x (n, d) @ [W_1 .. W_K]^T (d, K*width)
            a = torch.addmm(p[b_name].reshape(-1), x, p[w_name].reshape(kc * width, d).t())
            h = a.view(len(x), kc, width).transpose(0, 1)
            for w_name, b_name in self.layers[1:]:
                h = h.clamp_min(0)
                h = torch.baddbmm(p[b_name].unsqueeze(1), h, p[w_name].transpose(1, 2))
            out.append(h.squeeze(-1) if h.shape[-1] == 1 else h)
        return torch.cat(out)


class VmapEngine(StackedEngine):
    """Any module: vmap over members of grad(functional_call(module, ...))."""

    name = "vmap"

    def __init__(self, template: nn.Module):
        self.base = copy.deepcopy(template).to("meta")

        def logit_fn(p: Params, b: Params, x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (x,))

        def loss_fn(p: Params, b: Params, x: torch.Tensor, y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
            z = logit_fn(p, b, x)
            return classification_loss(z, y), z.detach()

        self._grad = vmap(grad_and_value(loss_fn, has_aux=True), in_dims=(0, 0, 0, 0))
        self._logits = vmap(logit_fn, in_dims=(0, 0, None))
        self._logits_own = vmap(logit_fn, in_dims=(0, 0, 0))

    def loss_and_grads(self, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor,
                       need_loss: bool = True
                       ) -> tuple[torch.Tensor | None, torch.Tensor, Params]:
        grads, (loss, z) = self._grad(params, buffers, x, y)
        return loss, z, grads

    def logits(self, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        k_total = next(iter(params.values())).shape[0]
        x = x.to(next(iter(params.values())).dtype)
        rows = []
        for k0 in range(0, k_total, 64):  # bounded activations: 64 members x 1024 points
            p = {k: v[k0 : k0 + 64] for k, v in params.items()}
            b = {k: v[k0 : k0 + 64] for k, v in buffers.items()}
            # an empty x still runs once: the model gives the shape of no outputs, (k, 0, C)
            rows.append(torch.cat([self._logits(p, b, x[i : i + 1024])
                                   for i in range(0, max(len(x), 1), 1024)], dim=1))
        return torch.cat(rows)

    def logits_per_member(self, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        return self._logits_own(params, buffers, x)


def pick_engine(template: nn.Module, engine: str) -> StackedEngine:
    if engine not in ("auto", "fcn", "vmap"):
        raise SpecError(f"ensemble engine must be 'auto', 'fcn' or 'vmap', got {engine!r}")
    bn = [type(m).__name__ for m in template.modules()
          if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bn:
        raise SpecError(
            f"ensemble training does not support BatchNorm ({bn[0]} in "
            f"{getattr(template, 'spec', type(template).__name__)}); "
            "use a 'nobn' model or train_to_fit"
        )
    is_fcn = type(template) is FCN
    if engine == "fcn" and not is_fcn:
        raise SpecError(f"ensemble engine 'fcn' needs FCN models, got {type(template).__name__}")
    if engine == "fcn" or (engine == "auto" and is_fcn):
        return FCNEngine(template)  # type: ignore[arg-type]
    return VmapEngine(template)


def stacked_rule(name: str, settings: OptimizerSettings) -> UpdateRule:
    """The update rule of optimizer `name` with `settings`, read from the optimizer the registry
    builds for `train_to_fit` (over a placeholder: only its settings are used).

    Args:
        name: a registered optimizer name.
        settings: as TrainConfig.optimizer_settings() gives them.

    Returns:
        Its rule (flatvol.train.update_rules).

    Raises:
        SpecError: An unknown name or option, or an optimizer with no stacked form.
    """
    return rule_of(make_optimizer(name, [torch.zeros(0)], settings))


def gather_minibatches(x: torch.Tensor, idx: torch.Tensor, buffers: Params) -> torch.Tensor:
    """x[idx] for idx (G, B): each member's minibatch, (G, B, ...), written into a buffer
    reused across steps (a fresh multi-MB tensor every step costs page faults).

    Args:
        x: the training inputs, (n, ...).
        idx: row indices, one row of minibatch indices per member.
        buffers: scratch space owned by the caller, reused between calls.
    """
    shape = (*idx.shape, *x.shape[1:])
    key = str(shape)
    if key not in buffers:
        buffers[key] = torch.empty(shape, dtype=x.dtype, device=x.device)
    out = buffers[key]
    torch.index_select(x, 0, idx.reshape(-1), out=out.view(-1, *x.shape[1:]))
    return out


class StackedOptimizer:
    """A registered optimizer stepping (K, ...) parameter stacks, member by member as
    `train_to_fit` steps one network: the rule (flatvol.train.stacked.rule_of) of the
    optimizer the registry builds for `train_to_fit`, with its hyperparameters and options, and
    the same update functions (torch.optim's functional SGD / Adam as the base rule; SAM's
    ascent and Entropy-SGD's Langevin loop around it).

    The members of one group have taken the same number of steps (they start together and
    share their training-set size, hence their minibatches per epoch), so one step number
    serves a group; members of other sizes are stepped in their own groups.
    """

    def __init__(self, name: str, settings: OptimizerSettings, params: Params):
        """Args:
            name: a registered optimizer name.
            settings: as TrainConfig.optimizer_settings() gives them.
            params: the stacks to optimize, (K, ...) each.

        Raises:
            SpecError: An unknown name or option, or an optimizer with no stacked form.
        """
        self.rule = stacked_rule(name, settings)
        self.state: dict[str, Params] = self.rule.init(params)

    def step(self, params: Params, grad_fn: GradFn, rows: slice, step: int) -> Any:
        """Update members `rows` (`params` are those rows; `grad_fn` gives their loss and
        gradients at their current weights) at minibatch step `step` (1-based, counted over
        all epochs; groups of members may take their steps in turn).

        Returns:
            What grad_fn returned besides the gradients, at the step's starting weights.
        """
        state = {slot: {k: v[rows] for k, v in group.items()}
                 for slot, group in self.state.items()}
        return self.rule.step(params, grad_fn, state, step)

    def apply(self, params: Params, grads: Params, rows: slice, step: int) -> None:
        """Update members `rows` (`params` are those rows) with their gradients `grads` at
        minibatch step `step`: a rule with one gradient per step (TorchUpdate), whose gradients
        the caller computed, maybe together with other members'."""
        if not isinstance(self.rule, TorchUpdate):
            raise TypeError(f"{type(self.rule).__name__} takes several gradients a step: use step")
        state = {slot: {k: v[rows] for k, v in group.items()}
                 for slot, group in self.state.items()}
        self.rule.apply(params, grads, state, step)

    @torch.no_grad()
    def flush_subnormal(self) -> None:
        """Zero Adam's subnormal second moments (flush_subnormal_: keeps its sqrt off the slow
        path and leaves every update as it was); nothing for SGD."""
        flush_subnormal_(self.state.get("exp_avg_sq", {}).values())

    def keep(self, rows: torch.Tensor) -> None:
        """Drop the state of members that stopped (rows: indices of those that continue)."""
        for group in self.state.values():
            for name in group:
                group[name] = group[name].index_select(0, rows)
