"""The loss operator of a model, its data and its loss: built once, shared by every measure.

`FunctionalLoss` is PyHessian's "build the operator once": the trainable parameters are copied
once into a flat vector `w0`, the data is checked and split into chunks once, and the loss, its
gradient and Hessian-vector products are evaluated at any vector `w` with
`torch.func.functional_call`, summed over the chunks so memory stays bounded. Every flatness
measure, the Hessian's spectral ones (flatvol.flatness.hessian, .hessian_density) included,
accepts it in place of (model, x, y) (`loss_operator` is the one place a measure builds one),
so a run builds one operator for all its flatness measures. The measures are functions of the
operator, not also its methods: one way to call each, and this module stays below them.

The default loss follows the model's output count: one logit -> sigmoid cross-entropy on
{0, 1} labels; K >= 2 outputs -> cross-entropy on class labels 0..K-1 (flatness._inputs).

The module's own tensors are never written to; while the operator is in use (a `with` block,
re-entrant, which every measure opens) the module's parameters, buffers and train/eval flags
are restored on exit anyway (also on exceptions), so a measure can never leave a model changed.
The model is evaluated in eval mode (BatchNorm uses its running statistics, dropout is off):
the training loss is then a deterministic function of the weights that does not depend on
how the data is chunked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from flatvol.errors import SpecError
from flatvol.flatness._inputs import (
    LabelConvention,
    check_examples,
    check_labels_convention,
    default_loss_targets,
    output_layout,
)
from flatvol.models.labels import labels_from_outputs
from flatvol.models.losses import bce_with_logits_loss, cross_entropy_loss

HvpMethod = Literal["double-backward", "forward-over-reverse"]
HVP_METHODS: tuple[str, ...] = ("double-backward", "forward-over-reverse")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(model output, targets) -> scalar loss that is a *mean* over the examples."""

Chunk = tuple[torch.Tensor, torch.Tensor, float]
"""(inputs, targets, weight): a slice of the data and its share n_chunk / n of the mean."""


def resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


@contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Snapshot parameters, buffers and train/eval flags; restore them on exit, even on errors."""
    state = {name: t.detach().clone() for name, t in model.state_dict(keep_vars=True).items()}
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, t in model.state_dict(keep_vars=True).items():
                t.copy_(state[name])
        for module, mode in modes.items():
            module.training = mode


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode for the block; the train/eval flags restored afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


class FunctionalLoss:
    """The loss operator L(w) = loss_fn(model_w(x), y) for flat parameter vectors w, built once
    per (model, data, loss) and shared by the flatness measures.

    Build it once (PyHessian-style) and pass it to any flatness measure in place of
    (model, x, y):

        op = FunctionalLoss(model, x, y)
        hessian_top_eigenvalues(op, k=3).eigenvalues, hessian_trace(op).trace,
        keskar_sharpness(op).sharpness

    The flat vector `w0` (the weights when it was built), the checked data and its chunks are
    made once. Vectors live on `device` with the model's floating dtype; `x` is cast to it. The
    default loss is chosen by the model's output count (see the module doc and
    flatvol.flatness._inputs: with one logit, labels in {0, 1}, or {-1, +1} with
    `labels="pm1"`; with K outputs, int64 class labels 0..K-1); a custom `loss_fn` gets y as
    given. Every input is checked here, before any work.

    `with op:` (re-entrant; every measure opens it) puts the model in eval mode and restores
    its parameters, buffers and flags on exit; an evaluation outside such a block runs in eval
    mode too.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray,
        loss_fn: LossFn | None = None,
        device: str | torch.device | None = None,
        chunk_size: int | None = None,
        hvp_method: HvpMethod = "double-backward",
        *,
        labels: LabelConvention = "01",
    ):
        if hvp_method not in HVP_METHODS:
            raise SpecError(
                f"hvp_method must be one of {', '.join(HVP_METHODS)}, got {hvp_method!r}"
            )
        self.hvp_method = hvp_method
        if not isinstance(model, nn.Module):
            raise SpecError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise SpecError("model has no trainable parameters")
        self.dtype = named[0][1].dtype
        self._given = (x, y)  # the caller's objects, for `matches`
        check_labels_convention(labels, default_loss=loss_fn is None)
        x, y = check_examples(x, y, self.dtype)
        if chunk_size is not None and chunk_size < 1:
            raise SpecError(f"chunk_size must be >= 1, got {chunk_size}")
        self.model = model
        self.device = resolve_device(model, device)
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.n_params = sum(self.numels)
        self.w0 = torch.cat([p.detach().reshape(-1) for _, p in named]).to(self.device, self.dtype)
        trainable = set(self.names)
        self.fixed = {
            n: t.detach().to(self.device)
            for n, t in [*model.named_parameters(), *model.named_buffers()]
            if n not in trainable
        }
        self.x = x.to(self.device)
        self.n = int(x.shape[0])
        # outputs per example (1: one logit), decided once from the first example; (n, 1)
        # logits are flattened to (n,) for the binary loss. A custom loss gets outputs as given.
        self.n_outputs: int | None = None
        self._flatten_outputs = False
        if loss_fn is None:
            self.n_outputs, self._flatten_outputs = self._default_loss_layout()
            y = default_loss_targets(y, self.n, self.n_outputs, self.dtype, labels)
            loss_fn = bce_with_logits_loss if self.n_outputs == 1 else cross_entropy_loss
        self.loss_fn: LossFn = loss_fn
        self.y = y.to(self.device)
        self.chunk_size = min(chunk_size or self.n, self.n)
        self._all_chunks = self._split(self.x, self.y)
        self._depth = 0
        self._state: AbstractContextManager[None] | None = None
        self._grad_graph: tuple[torch.Tensor, torch.Tensor] | None = None

    def _default_loss_layout(self) -> tuple[int, bool]:
        with torch.no_grad(), eval_mode(self.model):
            out = functional_call(self.model, {**self.unflatten(self.w0), **self.fixed},
                                  (self.x[:1],))
        return output_layout(out.shape, 1)

    # -- context: eval mode for the duration, everything restored afterwards -------------
    def __enter__(self) -> FunctionalLoss:
        if self._depth == 0:
            self._state = preserved_state(self.model)
            self._state.__enter__()
            self.model.eval()
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth > 0:
            return
        assert self._state is not None
        # the graph of grad L(w0) holds every activation of the data: freed with the session
        self._grad_graph = None
        self._state.__exit__(*exc)
        self._state = None

    def matches(self, model: nn.Module, x: object, y: object) -> bool:
        """Whether this operator still describes `model` on (x, y): the same module with the
        trainable weights copied into `w0` when the operator was built (a network measured
        again after more training needs a new operator), the same buffers and frozen
        parameters (shared with the model on its own device, compared where they were copied
        to another), and the very data objects it was built from.

        Args:
            model: the network the operator would be used for.
            x: the inputs it would be used with.
            y: the labels it would be used with.

        Returns:
            True when all three are this operator's and the module's tensors are unchanged.
        """
        if model is not self.model or x is not self._given[0] or y is not self._given[1]:
            return False
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if [n for n, _ in named] != self.names:
            return False
        current = torch.cat([p.detach().reshape(-1) for _, p in named]).to(self.device, self.dtype)
        if not torch.equal(current, self.w0):
            return False
        live = dict([*model.named_parameters(), *model.named_buffers()])
        return all(name in live and torch.equal(live[name].detach().to(self.device), tensor)
                   for name, tensor in self.fixed.items())

    # -- parameter vectors -------------------------------------------------------------
    def unflatten(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(w, self.numels)
        return {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes)}

    def flatten(self, tensors: dict[str, torch.Tensor] | list[torch.Tensor]) -> torch.Tensor:
        values = [tensors[n] for n in self.names] if isinstance(tensors, dict) else tensors
        return torch.cat([t.reshape(-1) for t in values])

    def layer_slices(self) -> dict[str, slice]:
        """Where each named parameter sits in the flat vector."""
        out, start = {}, 0
        for name, k in zip(self.names, self.numels):
            out[name] = slice(start, start + k)
            start += k
        return out

    # -- evaluation ----------------------------------------------------------------------
    def _split(self, x: torch.Tensor, y: torch.Tensor) -> list[Chunk]:
        n = int(x.shape[0])
        step = min(self.chunk_size, n)
        return [
            (x[i : i + step], y[i : i + step], min(step, n - i) / n) for i in range(0, n, step)
        ]

    def chunks(self, index: torch.Tensor | None = None) -> list[Chunk]:
        """The data (or the examples `index`) in chunks of at most `chunk_size` examples, each
        with its share of the mean; the full data's chunks are made once."""
        if index is None:
            return self._all_chunks
        return self._split(self.x[index], self.y[index])

    def forward(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # inside `with self:` the model is already in eval mode; outside, for this call only
        with nullcontext() if self._depth else eval_mode(self.model):
            out = functional_call(self.model, {**self.unflatten(w), **self.fixed}, (x,))
        return out.reshape(-1) if self._flatten_outputs else out

    def _chunk_loss(
        self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weight: float
    ) -> torch.Tensor:
        return self.loss_fn(self.forward(w, x), y) * weight

    def loss(self, w: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss over all examples (or over `index`), as a differentiable scalar."""
        return sum(self._chunk_loss(w, xc, yc, wt) for xc, yc, wt in self.chunks(index))

    def loss_value(
        self, w: torch.Tensor, index: torch.Tensor | None = None, *, require_finite: bool = True
    ) -> float:
        with torch.no_grad():
            value = float(self.loss(w, index))
        if require_finite and not math.isfinite(value):
            raise SpecError(f"the loss is not finite ({value}) at the evaluated weights")
        return value

    def value_and_grad(
        self, w: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[float, torch.Tensor]:
        """Mean loss and its gradient at w (reverse mode through functional_call)."""
        total, value = torch.zeros_like(w), 0.0
        for xc, yc, wt in self.chunks(index):
            u = w.detach().requires_grad_(True)
            loss = self._chunk_loss(u, xc, yc, wt)
            (g,) = torch.autograd.grad(loss, u)
            total += g
            value += float(loss.detach())
        return value, total

    def grad(self, w: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """The gradient of the mean loss at w (over all examples, or over `index`)."""
        return self.value_and_grad(w, index)[1]

    def hvp(self, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """H(w) v on the full data, summed over chunks.

        'double-backward' (default): reverse-over-reverse, the gradient of <grad L(w), v>,
        with torch.autograd through functional_call; 'forward-over-reverse':
        torch.func.jvp of torch.func.grad. Both are exact; the first has less per-call
        overhead on small CPU problems (see bench/bench_hessian_vs_pyhessian.py) and, when the
        data fits in one chunk, reuses the graph of grad L(w0) across calls at w0 within one
        `with` block.
        """
        chunks = self.chunks()
        if self.hvp_method == "double-backward" and w is self.w0 and len(chunks) == 1 \
                and self._depth:
            # all data in one chunk: keep the graph of grad L(w0) and reuse it for every v
            if self._grad_graph is None:
                u = w.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self._chunk_loss(u, *chunks[0]), u, create_graph=True)
                self._grad_graph = (u, g)
            u, g = self._grad_graph
            return torch.autograd.grad(g, u, v, retain_graph=True)[0]
        total = torch.zeros_like(w)
        for xc, yc, wt in chunks:
            if self.hvp_method == "forward-over-reverse":
                grad_fn = grad(self._chunk_loss)
                _, hv = jvp(lambda u, f=grad_fn, xc=xc, yc=yc, wt=wt: f(u, xc, yc, wt), (w,), (v,))
            else:
                u = w.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self._chunk_loss(u, xc, yc, wt), u, create_graph=True)
                (hv,) = torch.autograd.grad(g, u, v)
            total += hv
        return total

    def outputs(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.forward(w, xc) for xc, _, _ in self.chunks()])

    def error_rate(self, w: torch.Tensor) -> float:
        """0-1 training error of the labels the outputs give (flatvol.models.labels: logit > 0
        is class 1, or the argmax of K outputs)."""
        pred = labels_from_outputs(self.outputs(w))
        return float((pred != self.y).double().mean())


ModelOrOperator = nn.Module | FunctionalLoss
"""What a flatness measure takes first: a network (with x, y) or an operator built once."""


def loss_operator(
    model: ModelOrOperator,
    x: torch.Tensor | np.ndarray | None,
    y: torch.Tensor | np.ndarray | None,
    loss_fn: LossFn | None = None,
    *,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    labels: LabelConvention | None = None,
    hvp_method: HvpMethod | None = None,
) -> FunctionalLoss:
    """The operator a flatness measure works on: the one place a measure builds it.

    Args:
        model: a network, or a FunctionalLoss already built (then returned as is, and every
            other argument must be left unset: they are the operator's).
        x: inputs of the training set (with a network).
        y: labels of the training set (with a network).
        loss_fn: loss(outputs, y), a mean over examples (default: by the output count).
        device: torch device (default: the model's).
        chunk_size: examples per forward pass (default: all at once).
        labels: '01' (default) or 'pm1', the convention of one-logit labels.
        hvp_method: 'double-backward' (default) or 'forward-over-reverse'.

    Returns:
        The FunctionalLoss; use it in a `with` block.
    """
    if isinstance(model, FunctionalLoss):
        given = [name for name, value in (("x", x), ("y", y), ("loss_fn", loss_fn),
                                          ("device", device), ("chunk_size", chunk_size),
                                          ("labels", labels), ("hvp_method", hvp_method))
                 if value is not None]
        if given:
            raise SpecError(f"{given[0]}: set by the FunctionalLoss given in place of the model; "
                            f"build the operator with it, or pass (model, x, y)")
        return model
    if x is None or y is None:
        raise SpecError(f"{'x' if x is None else 'y'}: a flatness measure of a network needs its "
                        f"training data (model, x, y), or a FunctionalLoss in place of all three")
    return FunctionalLoss(model, x, y, loss_fn, device, chunk_size,
                          hvp_method or "double-backward", labels=labels or "01")
