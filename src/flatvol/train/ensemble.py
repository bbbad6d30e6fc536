"""Train K networks of one architecture at once, each exactly as `train_to_fit` trains it alone.

Member k is `build_model(spec, shape, prior, seed=seeds[k])`, sees the data in the order
`train_to_fit(..., seed=seeds[k])` would (its own torch.randperm stream), and follows the same
optimizer math (torch.optim's SGD, SGD+momentum and Adam, re-implemented on stacked tensors so
that one member's state never moves another's). Each member stops at the end of the first
epoch where its stopping rule holds (plus `post_train_epochs`); its weights are then copied
out and it is dropped from the stacked tensors, so it neither changes nor costs anything while
the others train.

Two engines compute the per-member gradients:
- 'fcn': batched matmuls (baddbmm/bmm) with a hand-written backward pass for `FCN` models (the
  fast path on CPU). Input features that are zero on every training point are left out of
  training: their first-layer weights get zero gradient, so without weight decay they cannot
  move under SGD, momentum or Adam (MNIST's border pixels: ~25% of the first layer's work).
- 'vmap': `torch.func.vmap` over `grad(functional_call(...))`, for any module without
  BatchNorm (batch statistics would need per-member running buffers).

Members are processed in groups of `group_size`: a group runs a whole epoch, minibatch after
minibatch, before the next group starts, so its weights stay in cache; the ensemble size only
bounds memory. With `workers` > 1 (FCN engine, CPU), groups train in parallel threads, one
thread per op: bit-identical results for any number of workers.

Without `keep_history`, the per-epoch stopping check is exact but cheaper: a member whose
training pass misclassified a point is first re-checked on (at most 16 of) those points, and
only members with none of them still wrong are evaluated on the whole of S (and A).
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap
from torch.nn import functional as F

from flatvol.data.task import TaskData
from flatvol.errors import SpecError
from flatvol.models import FCN, Prior, build_model
from flatvol.train.loop import TrainConfig, TrainResult

ENSEMBLE_OPTIMIZERS = ("sgd", "momentum", "adam")
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam defaults, as used by the optimizer registry
ADAM_EPS = 1e-8
DATA_ORDER_OFFSET = 1_000_003  # train_to_fit: Generator().manual_seed(seed + 1_000_003)
SUSPECTS = 16  # points re-checked per member before a full evaluation of S
Engine = Literal["auto", "fcn", "vmap"]
Params = dict[str, torch.Tensor]

# Largest intermediate (elements) an evaluation pass builds before splitting by member.
_EVAL_ELEMENTS = 1 << 23


@dataclass(frozen=True)
class EnsembleEpochInfo:
    """Passed to the ensemble callback after every epoch."""

    epoch: int
    active: int  # members still training after this epoch
    fitted: int  # members whose stopping rule has been met so far
    finished: int  # members that have stopped (fitted or out of epochs)
    total: int


@dataclass
class EnsembleResult:
    """Per-member outcomes (as in TrainResult) and the final weights, stacked along dim 0."""

    seeds: list[int]
    status: list[str]
    epochs: np.ndarray
    fitted_at: list[int | None]
    train_acc_S: np.ndarray
    train_acc_A: np.ndarray
    test_acc_E: np.ndarray
    params: Params
    buffers: Params
    histories: list[list[dict]] | None
    engine: str
    flops: float  # matmul FLOPs performed in training and evaluation (FCN engine; else nan)
    _template: nn.Module = field(repr=False)
    _runner: _Engine = field(repr=False)

    def __len__(self) -> int:
        return len(self.seeds)

    def result(self, i: int) -> TrainResult:
        """Member i's outcome in the form train_to_fit returns it."""
        return TrainResult(
            status=self.status[i],  # type: ignore[arg-type]
            epochs=int(self.epochs[i]),
            fitted_at=self.fitted_at[i],
            train_acc_S=float(self.train_acc_S[i]),
            train_acc_A=float(self.train_acc_A[i]),
            test_acc_E=float(self.test_acc_E[i]),
            history=list(self.histories[i]) if self.histories is not None else [],
        )

    @property
    def results(self) -> list[TrainResult]:
        return [self.result(i) for i in range(len(self))]

    def model(self, i: int) -> nn.Module:
        """Member i as a standalone nn.Module (a copy; same class, spec and prior as built)."""
        module = copy.deepcopy(self._template)
        state = {k: v[i] for k, v in self.params.items()}
        state.update({k: v[i] for k, v in self.buffers.items()})
        module.load_state_dict(state)
        return module.to(next(iter(self.params.values())).device).eval()

    def models(self) -> list[nn.Module]:
        return [self.model(i) for i in range(len(self))]

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits on x: shape (K, n)."""
        device = next(iter(self.params.values())).device
        return self._runner.logits(self.params, self.buffers, x.to(device))

    @torch.no_grad()
    def predict_labels(self, x: torch.Tensor) -> torch.Tensor:
        """The function each member expresses on x: labels in {0,1}, shape (K, n), on CPU."""
        return (self.logits(x) > 0).float().cpu()


# ----------------------------------------------------------------------------- engines


class _Engine:
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
        """x: (G, B, ...) y: (G, B) -> mean BCE per member (G,) (or None when not needed),
        logits (G, B), gradients."""
        raise NotImplementedError

    def logits(self, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        """x shared by all members: (n, ...) -> (K, n)."""
        raise NotImplementedError

    def logits_per_member(self, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        """x: (K, m, ...), member k's own points -> (K, m)."""
        raise NotImplementedError


class _FCNEngine(_Engine):
    """Forward and backward of Linear-ReLU stacks with batched matmuls, no autograd."""

    name = "fcn"

    def __init__(self, template: FCN):
        names = {id(p): n for n, p in template.named_parameters()}
        self.layers = [(names[id(m.weight)], names[id(m.bias)]) for m in template.linears]
        self.dims = [template.in_dim, *template.widths, 1]
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
        """x (G, B, d) -> logits (G, B) and each layer's input, kept transposed as
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
        return z.squeeze(1), inputs

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
        z, inputs = self._forward(params, x)
        loss = (F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(1)
                if need_loss else None)
        g = (torch.sigmoid(z) - y).div_(y.shape[1])  # d mean-BCE / d logit
        ga = g.unsqueeze(1)  # (G, out, B): gradient w.r.t. a layer's pre-activations
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
        return self._forward(params, x)[0]

    def logits(self, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        first = params[self.layers[0][0]]
        x = x.flatten(1).to(first.dtype)
        if first.shape[2] != x.shape[1]:  # training-time weights: inputs restricted too
            x = x.index_select(1, self.columns)  # type: ignore[arg-type]
        k_total = first.shape[0]
        step = max(1, _EVAL_ELEMENTS // max(1, len(x) * max(self.dims[1:])))
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
            out.append(h.squeeze(-1))
        return torch.cat(out)


class _VmapEngine(_Engine):
    """Any module: vmap over members of grad(functional_call(module, ...))."""

    name = "vmap"

    def __init__(self, template: nn.Module):
        self.base = copy.deepcopy(template).to("meta")

        def logit_fn(p: Params, b: Params, x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (x,))

        def loss_fn(p: Params, b: Params, x: torch.Tensor, y: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
            z = logit_fn(p, b, x)
            return F.binary_cross_entropy_with_logits(z, y), z.detach()

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
        if len(x) == 0:
            return x.new_zeros(k_total, 0)
        rows = []
        for k0 in range(0, k_total, 64):  # bounded activations: 64 members x 1024 points
            p = {k: v[k0 : k0 + 64] for k, v in params.items()}
            b = {k: v[k0 : k0 + 64] for k, v in buffers.items()}
            rows.append(torch.cat([self._logits(p, b, x[i : i + 1024])
                                   for i in range(0, len(x), 1024)], dim=1))
        return torch.cat(rows)

    def logits_per_member(self, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        return self._logits_own(params, buffers, x)


def _pick_engine(template: nn.Module, engine: str) -> _Engine:
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
        return _FCNEngine(template)  # type: ignore[arg-type]
    return _VmapEngine(template)


# ----------------------------------------------------------------------------- optimizers


class _StackedOptimizer:
    """torch.optim's SGD / SGD+momentum / Adam update, applied to (K, ...) parameter stacks.

    All members still training have taken the same number of steps (they start together and
    every epoch has the same number of minibatches), so one step number serves them all.
    """

    def __init__(self, config: TrainConfig, params: Params):
        if config.optimizer not in ENSEMBLE_OPTIMIZERS:
            raise SpecError(
                f"ensemble training supports optimizers {', '.join(ENSEMBLE_OPTIMIZERS)}; "
                f"got {config.optimizer!r} (use train_to_fit for it)"
            )
        self.kind = config.optimizer
        self.lr = config.lr
        self.weight_decay = config.weight_decay
        self.momentum = config.momentum if self.kind == "momentum" else 0.0
        self.state: dict[str, Params] = {}
        if self.kind == "adam":
            self.state = {
                "exp_avg": {k: torch.zeros_like(v) for k, v in params.items()},
                "exp_avg_sq": {k: torch.zeros_like(v) for k, v in params.items()},
            }
        elif self.momentum != 0:
            self.state = {"momentum_buffer": {k: torch.zeros_like(v) for k, v in params.items()}}

    @torch.no_grad()
    def step(self, params: Params, grads: Params, rows: slice, step: int) -> None:
        """Update members `rows` (params and grads are those rows) at minibatch step `step`
        (1-based, counted over all epochs; groups of members may take their steps in turn)."""
        state = {g: {k: v[rows] for k, v in group.items()} for g, group in self.state.items()}
        if self.kind == "adam":
            self._adam(params, grads, state, step)
        else:
            self._sgd(params, grads, state, step)

    def _sgd(self, params: Params, grads: Params, state: dict[str, Params], step: int) -> None:
        for name, p in params.items():
            grad = grads[name]
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            if self.momentum != 0:
                buf = state["momentum_buffer"][name]
                if step == 1:  # torch.optim: the first buffer is a copy of the gradient
                    buf.copy_(grad)
                else:
                    buf.mul_(self.momentum).add_(grad)
                grad = buf
            p.add_(grad, alpha=-self.lr)

    def _adam(self, params: Params, grads: Params, state: dict[str, Params], step: int) -> None:
        beta1, beta2 = ADAM_BETAS
        bias_correction1 = 1 - beta1 ** float(step)
        bias_correction2 = 1 - beta2 ** float(step)
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        for name, p in params.items():
            grad = grads[name]
            if self.weight_decay != 0:
                grad = grad.add(p, alpha=self.weight_decay)
            exp_avg, exp_avg_sq = state["exp_avg"][name], state["exp_avg_sq"][name]
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
            p.addcdiv_(exp_avg, denom, value=-step_size)

    def keep(self, rows: torch.Tensor) -> None:
        """Drop the state of members that stopped (rows: indices of those that continue)."""
        for group in self.state.values():
            for name in group:
                group[name] = group[name].index_select(0, rows)


# ----------------------------------------------------------------------------- training


def _gather(x: torch.Tensor, idx: torch.Tensor, buffers: Params) -> torch.Tensor:
    """x[idx] for idx (G, B): each member's minibatch, (G, B, ...), written into a buffer
    reused across steps (a fresh multi-MB tensor every step costs page faults)."""
    shape = (*idx.shape, *x.shape[1:])
    key = str(shape)
    if key not in buffers:
        buffers[key] = torch.empty(shape, dtype=x.dtype, device=x.device)
    out = buffers[key]
    torch.index_select(x, 0, idx.reshape(-1), out=out.view(-1, *x.shape[1:]))
    return out


def _correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-member count of points classified as labelled (logit > 0 <=> label 1)."""
    return ((logits > 0).to(y.dtype) == y).sum(-1)


def _check_members(models: Sequence[nn.Module], seeds: Sequence[int] | None) -> list[int]:
    if len(models) == 0:
        raise SpecError("ensemble needs at least one model, got 0")
    seeds = list(range(len(models))) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(models):
        raise SpecError(
            f"ensemble needs one seed per model: {len(models)} models, {len(seeds)} seeds"
        )
    first = [(n, tuple(p.shape)) for n, p in models[0].named_parameters()]
    for m in models[1:]:
        if type(m) is not type(models[0]) or [(n, tuple(p.shape))
                                              for n, p in m.named_parameters()] != first:
            raise SpecError("ensemble members must share one architecture "
                            "(same class and parameter shapes)")
    return seeds


def train_models_together(
    models: Sequence[nn.Module],
    task: TaskData,
    config: TrainConfig | None = None,
    seeds: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    callback: Callable[[EnsembleEpochInfo], None] | None = None,
    keep_history: bool = True,
    engine: Engine = "auto",
    group_size: int = 16,
    workers: int | None = None,
) -> EnsembleResult:
    """Train `models` (one architecture) together; member k's data order comes from `seeds[k]`.

    Member k ends where `train_to_fit(models[k], task, config, seed=seeds[k])` would, up to
    floating-point rounding: same stopping epoch, same weights to ~1e-5. `models` are not
    modified; get trained copies from `EnsembleResult.model(k)`. Without `keep_history` the
    per-epoch history is not recorded (which lets the stopping check skip most of S).
    `workers` groups train at once in threads (FCN engine; default: torch's thread count on
    CPU, with one thread per op meanwhile; 1 on other devices). The results do not depend on
    `workers` (bit for bit); `group_size` changes them only at the rounding level.
    """
    config = config or TrainConfig()
    seeds = _check_members(models, seeds)
    if group_size < 1:
        raise SpecError(f"group_size must be >= 1, got {group_size}")
    device = torch.device(device)
    template = copy.deepcopy(models[0]).cpu().eval()
    runner = _pick_engine(template, engine)
    with torch.no_grad():
        stacked, stacked_buffers = stack_module_state(list(models))
        initial = {k: v.detach().to(device).clone() for k, v in stacked.items()}
        buffers = {k: v.detach().to(device).clone() for k, v in stacked_buffers.items()}
    dtype = next(iter(initial.values())).dtype

    x_train, y_train = (t.to(device, dtype) for t in task.train_inputs(include_attack=True))
    n, n_S, n_A = len(y_train), len(task.S), len(task.A)
    # the points whose fit decides stopping: S, or S u A (train_inputs lists S first)
    n_rule = n_S + n_A if config.fit == "all" else n_S
    params, x_run = runner.prepare(initial, x_train, frozen_zero_inputs=config.weight_decay == 0)
    optimizer = _StackedOptimizer(config, params)

    k_total = len(models)
    final = {k: torch.empty_like(v) for k, v in params.items()}
    epochs = np.zeros(k_total, dtype=np.int64)
    fitted_at = np.full(k_total, -1, dtype=np.int64)
    histories: list[list[dict]] | None = [[] for _ in range(k_total)] if keep_history else None
    active = np.arange(k_total)  # member ids of the rows of `params`
    generators = [torch.Generator().manual_seed(s + DATA_ORDER_OFFSET) for s in seeds]
    if workers is not None and workers < 1:
        raise SpecError(f"workers must be >= 1, got {workers}")
    if workers is None:
        workers = torch.get_num_threads() if device.type == "cpu" else 1
    if runner.name != "fcn":  # functional_call swaps a shared module's tensors: one thread
        workers = 1
    workers = min(workers, -(-k_total // group_size))
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    intra_op_threads = torch.get_num_threads()
    if pool is not None:  # groups are the parallelism: one thread per op, no oversubscription
        torch.set_num_threads(1)
    try:
        epoch = 0
        while len(active):
            perms = torch.stack([torch.randperm(n, generator=generators[i])
                                 for i in active.tolist()]).to(device)
            total, missed = _run_epoch(runner, optimizer, params, buffers, x_run, y_train, perms,
                                       epoch, config.batch_size, group_size, keep_history, pool)
            epoch += 1
            with torch.no_grad():
                if keep_history:  # full accuracies, as train_to_fit records them
                    correct_S = _correct(runner.logits(params, buffers, x_run[:n_S]),
                                         y_train[:n_S]).cpu().numpy()
                    correct_A = _correct(runner.logits(params, buffers, x_run[n_S:]),
                                         y_train[n_S:]).cpu().numpy()
                    fit_now = (correct_S == n_S) & ((config.fit == "S") | (correct_A == n_A))
                else:
                    fit_now = _fits(runner, params, buffers, x_run, y_train, n_rule, missed)
            was_fitting = fitted_at[active] < 0
            fitted_at[active[was_fitting & fit_now]] = epoch
            if histories is not None:
                _record(histories, active, epoch, was_fitting, fitted_at, (total / n).tolist(),
                        correct_S / max(n_S, 1) if n_S else np.full(len(active), math.nan),
                        correct_A / max(n_A, 1) if n_A else np.full(len(active), math.nan))
            fa = fitted_at[active]
            done = np.where(fa >= 0, epoch >= fa + config.post_train_epochs,
                            epoch >= config.max_epochs)
            if done.any():  # copy finished members out and drop them from the stacks
                stay = torch.from_numpy(np.flatnonzero(~done)).to(device)
                leave = torch.from_numpy(np.flatnonzero(done)).to(device)
                for k, v in params.items():
                    final[k].index_copy_(0, torch.from_numpy(active[done]).to(device),
                                         v.index_select(0, leave))
                epochs[active[done]] = epoch
                params = {k: v.index_select(0, stay) for k, v in params.items()}
                optimizer.keep(stay)
                active = active[~done]
            if callback is not None:
                callback(EnsembleEpochInfo(epoch=epoch, active=len(active),
                                           fitted=int((fitted_at >= 0).sum()),
                                           finished=k_total - len(active), total=k_total))
    finally:
        if pool is not None:
            pool.shutdown()
            torch.set_num_threads(intra_op_threads)

    final = {k: runner.restore(k, v, initial[k]) for k, v in final.items()}
    with torch.no_grad():  # as train_to_fit does, measure the final model on S, A and E
        accs = []
        for split in (task.S, task.A, task.E):
            if len(split):
                logits = runner.logits(final, buffers, split.x.to(device, dtype))
                accs.append(_correct(logits, split.y.to(device, dtype)).cpu().numpy() / len(split))
            else:
                accs.append(np.full(k_total, math.nan))
    return EnsembleResult(
        seeds=seeds,
        status=["fitted" if f >= 0 else "did_not_fit" for f in fitted_at],
        epochs=epochs,
        fitted_at=[int(f) if f >= 0 else None for f in fitted_at],
        train_acc_S=accs[0],
        train_acc_A=accs[1],
        test_acc_E=accs[2],
        params=final,
        buffers=buffers,
        histories=histories,
        engine=runner.name,
        flops=runner.flops,
        _template=template,
        _runner=runner,
    )


def _record(histories: list[list[dict]], members: np.ndarray, epoch: int,
            was_fitting: np.ndarray, fitted_at: np.ndarray, losses: list[float],
            acc_S: np.ndarray, acc_A: np.ndarray) -> None:
    """Append one epoch to each member's history, in train_to_fit's EpochInfo form."""
    for row, member in enumerate(members.tolist()):
        fa = int(fitted_at[member])
        histories[member].append({
            "epoch": epoch,
            "phase": "fit" if was_fitting[row] else "post",
            "loss": losses[row],
            "train_acc_S": float(acc_S[row]),
            "train_acc_A": float(acc_A[row]),
            "fitted_at": fa if fa >= 0 else None,
        })


def _run_epoch(runner: _Engine, optimizer: _StackedOptimizer, params: Params, buffers: Params,
               x: torch.Tensor, y: torch.Tensor, perms: torch.Tensor, epochs_done: int,
               batch_size: int, group_size: int, keep_history: bool,
               pool: ThreadPoolExecutor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of every member; returns the summed minibatch losses (if kept) and which
    training points each member's pass got wrong (the stopping check's hints, unless kept)."""
    rows_total, n = perms.shape
    total = torch.zeros(rows_total, dtype=torch.float64, device=perms.device)
    missed = torch.zeros(rows_total, 0 if keep_history else n, dtype=torch.bool,
                         device=perms.device)
    steps_per_epoch = -(-n // batch_size)

    def run_group(r0: int) -> None:
        # Group-major: one group runs its whole epoch, so its weights stay in cache from one
        # minibatch to the next; groups are independent, so they may run in parallel.
        rows = slice(r0, r0 + group_size)
        group = {k: v[rows] for k, v in params.items()}
        scratch: Params = {}
        for step, i in enumerate(range(0, n, batch_size)):
            idx = perms[rows, i : i + batch_size]
            xb = _gather(x, idx, scratch)
            yb = y.index_select(0, idx.reshape(-1)).view(idx.shape)
            with torch.no_grad():
                loss, z, grads = runner.loss_and_grads(group, buffers, xb, yb,
                                                       need_loss=keep_history)
            optimizer.step(group, grads, rows, epochs_done * steps_per_epoch + step + 1)
            if loss is not None:
                total[rows] += loss.detach().double() * idx.shape[1]
            if not keep_history:
                missed[rows].scatter_(1, idx, (z.detach() > 0).to(yb.dtype) != yb)

    starts = range(0, rows_total, group_size)
    if pool is None:
        for r0 in starts:
            run_group(r0)
    else:
        for future in [pool.submit(run_group, r0) for r0 in starts]:
            future.result()
    return total, missed


def _fits(runner: _Engine, params: Params, buffers: Params, x: torch.Tensor, y: torch.Tensor,
          n_rule: int, missed: torch.Tensor) -> np.ndarray:
    """Exactly which members classify all of x[:n_rule] correctly, evaluating little.

    A member that still misclassifies one of the points its training pass got wrong is
    certainly not fit; only the others are evaluated on all n_rule points.
    """
    rows_total = missed.shape[0]
    candidates = torch.ones(rows_total, dtype=torch.bool, device=missed.device)
    suspects_any = missed[:, :n_rule].any(1)
    if n_rule and bool(suspects_any.any()):
        rows = torch.nonzero(suspects_any).squeeze(1)
        m = min(SUSPECTS, n_rule)
        idx = missed[rows, :n_rule].to(torch.uint8).topk(m, dim=1).indices  # suspects first
        xs = x.index_select(0, idx.reshape(-1)).view(*idx.shape, *x.shape[1:])
        z = runner.logits_per_member(_rows(params, rows, rows_total), buffers, xs)
        candidates[rows] = _correct(z, y[idx]) == m
    fit = torch.zeros(rows_total, dtype=torch.bool, device=missed.device)
    rows = torch.nonzero(candidates).squeeze(1)
    if len(rows):
        z = runner.logits(_rows(params, rows, rows_total), buffers, x[:n_rule])
        fit[rows] = _correct(z, y[:n_rule]) == n_rule
    return fit.cpu().numpy()


def _rows(params: Params, rows: torch.Tensor, rows_total: int) -> Params:
    """The members `rows` of stacked params (no copy when that is all of them)."""
    if len(rows) == rows_total:
        return params
    return {k: v.index_select(0, rows) for k, v in params.items()}


def train_ensemble(
    model_spec: str,
    task: TaskData,
    config: TrainConfig | None = None,
    seeds: Sequence[int] = range(8),
    prior: Prior | None = None,
    device: str | torch.device = "cpu",
    callback: Callable[[EnsembleEpochInfo], None] | None = None,
    keep_history: bool = True,
    engine: Engine = "auto",
    group_size: int = 16,
    workers: int | None = None,
) -> EnsembleResult:
    """Build `build_model(model_spec, task.input_shape, prior, seed=s)` for each seed s and
    train them together; member k equals `train_to_fit(that model, task, config, seed=s)`."""
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise SpecError("ensemble seeds must be distinct")
    models = [build_model(model_spec, task.input_shape, prior, seed=s) for s in seeds]
    return train_models_together(models, task, config, seeds, device=device, callback=callback,
                                 keep_history=keep_history, engine=engine, group_size=group_size,
                                 workers=workers)
