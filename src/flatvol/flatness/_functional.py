"""Any nn.Module + loss + data as a pure function of one flat parameter vector.

Every flatness measure works on `FunctionalLoss`: the trainable parameters are copied into a
flat vector `w0`, and the loss, its gradient and Hessian-vector products are evaluated at any
vector `w` with `torch.func.functional_call`, summed over chunks of the data so memory stays
bounded. The module's own tensors are never written to; on exit the module's parameters,
buffers and train/eval flags are restored anyway (also on exceptions), so a measure can never
leave a model changed.

The model is evaluated in eval mode (BatchNorm uses its running statistics, dropout is off):
the training loss is then a deterministic function of the weights that does not depend on
how the data is chunked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp
from torch.nn import functional as F

from flatvol.errors import SpecError
from flatvol.flatness._inputs import LabelConvention, check_output_shape, check_training_data

HvpMethod = Literal["double-backward", "forward-over-reverse"]
HVP_METHODS: tuple[str, ...] = ("double-backward", "forward-over-reverse")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(model output, targets) -> scalar loss that is a *mean* over the examples."""


def bce_with_logits_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Default loss: sigmoid cross-entropy on labels in {0, 1}, mean over examples.

    Args:
        logits: Network outputs, shape (n,).
        y: Labels in {0, 1}, shape (n,).

    Returns:
        The mean sigmoid cross-entropy, a scalar tensor.
    """
    return F.binary_cross_entropy_with_logits(logits, y)


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


class FunctionalLoss:
    """L(w) = loss_fn(model_w(x), y) for flat parameter vectors w, chunked over the data.

    Use as a context manager: `with FunctionalLoss(model, x, y) as fl: fl.loss(fl.w0)`.
    Vectors live on `device` with the model's floating dtype; `x` is cast to it. x and y are
    checked by flatvol.flatness._inputs (tensors or arrays; with the default loss, labels in
    {0, 1}, or {-1, +1} with `labels="pm1"`, and one logit per example, checked on entry).
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
        x, y = check_training_data(x, y, self.dtype, labels=labels, default_loss=loss_fn is None)
        if chunk_size is not None and chunk_size < 1:
            raise SpecError(f"chunk_size must be >= 1, got {chunk_size}")
        self.model = model
        self.loss_fn: LossFn = loss_fn or bce_with_logits_loss
        # The default loss takes one logit per example; (n, 1) outputs are flattened to (n,)
        # (decided on entry, from one example, see _check_outputs).
        self._check_output_shape = loss_fn is None
        self._flatten_outputs = False
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
        self.y = y.to(self.device)
        self.n = int(x.shape[0])
        self.chunk_size = min(chunk_size or self.n, self.n)
        self._state: AbstractContextManager[None] | None = None
        self._grad_graph: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- context: eval mode for the duration, everything restored afterwards -------------
    def __enter__(self) -> FunctionalLoss:
        self._state = preserved_state(self.model)
        self._state.__enter__()
        self.model.eval()
        try:
            self._check_outputs()
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def _check_outputs(self) -> None:
        if not self._check_output_shape:
            return
        with torch.no_grad():
            out = functional_call(self.model, {**self.unflatten(self.w0), **self.fixed},
                                  (self.x[:1],))
        self._flatten_outputs = check_output_shape(out.shape, 1)

    def __exit__(self, *exc: object) -> None:
        assert self._state is not None
        self._grad_graph = None
        self._state.__exit__(*exc)
        self._state = None

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
    def _chunks(
        self, index: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        x, y = (self.x, self.y) if index is None else (self.x[index], self.y[index])
        n = int(x.shape[0])
        step = min(self.chunk_size, n)
        return [
            (x[i : i + step], y[i : i + step], min(step, n - i) / n) for i in range(0, n, step)
        ]

    def forward(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.model, {**self.unflatten(w), **self.fixed}, (x,))
        return out.reshape(-1) if self._flatten_outputs else out

    def _chunk_loss(
        self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weight: float
    ) -> torch.Tensor:
        return self.loss_fn(self.forward(w, x), y) * weight

    def loss(self, w: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss over all examples (or over `index`), as a differentiable scalar."""
        return sum(self._chunk_loss(w, xc, yc, wt) for xc, yc, wt in self._chunks(index))

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
        for xc, yc, wt in self._chunks(index):
            u = w.detach().requires_grad_(True)
            loss = self._chunk_loss(u, xc, yc, wt)
            (g,) = torch.autograd.grad(loss, u)
            total += g
            value += float(loss.detach())
        return value, total

    def hvp(self, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """H(w) v on the full data, summed over chunks.

        'double-backward' (default): reverse-over-reverse, the gradient of <grad L(w), v>,
        with torch.autograd through functional_call; 'forward-over-reverse':
        torch.func.jvp of torch.func.grad. Both are exact; the first has less per-call
        overhead on small CPU problems (see bench/bench_hessian_vs_pyhessian.py) and, when the
        data fits in one chunk, reuses the graph of grad L(w0) across calls at w0.
        """
        chunks = self._chunks()
        if self.hvp_method == "double-backward" and w is self.w0 and len(chunks) == 1:
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
            return torch.cat([self.forward(w, xc) for xc, _, _ in self._chunks()])

    def error_rate(self, w: torch.Tensor) -> float:
        """0-1 training error: logit > 0 means class 1 (or argmax for several outputs)."""
        out = self.outputs(w)
        pred = (out > 0).to(self.y.dtype) if out.dim() == 1 else out.argmax(-1).to(self.y.dtype)
        return float((pred != self.y).double().mean())
