"""The empirical Fisher-Rao norm of the weights (Liang, Poggio, Rakhlin & Stokes, AISTATS 2019).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import jvp

from flatvol.errors import SpecError
from flatvol.flatness._functional import LossFn, ModelOrOperator, loss_operator
from flatvol.flatness._inputs import LabelConvention
from flatvol.flatness._results import ResultMixin, Stopwatch
from flatvol.progress import track


@dataclass(frozen=True)
class FisherRaoNorm(ResultMixin):
    """Empirical Fisher-Rao norm of the weights (Liang et al. 2019); see fisher_rao_norm."""

    fisher_rao_norm: float
    fisher_rao_norm_sq: float
    homogeneous_form_sq: float | None
    depth: int | None
    n_examples: int
    seconds: float


def fisher_rao_norm(
    model: ModelOrOperator,
    x: torch.Tensor | np.ndarray | None = None,
    y: torch.Tensor | np.ndarray | None = None,
    loss_fn: LossFn | None = None,
    *,
    depth: int | None = None,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    labels: LabelConvention | None = None,
    seed: int = 0,
    progress: bool = False,
) -> FisherRaoNorm:
    """Fisher-Rao norm of Liang, Poggio, Rakhlin & Stokes, "Fisher-Rao metric, geometry, and
    complexity of neural networks", AISTATS 2019. Definition used (empirical, true labels):

        ||w||_fr^2 = (1/n) sum_i <w, grad_w l(f_w(x_i), y_i)>^2,

    with w all trainable parameters (biases included). <w, grad_w l_i> is computed exactly as
    the directional derivative of the per-example loss along w (one jvp). For ReLU nets
    without biases, Liang et al.'s identity <w, grad_w f> = (L+1) f gives the closed form

        homogeneous_form_sq = (L+1)^2 (1/n) sum_i (dl_i/df * f(x_i))^2,

    with L+1 = `depth` affine layers (default: len(model.linears) when the model has it);
    it equals fisher_rao_norm_sq for bias-free ReLU nets only. (Jiang et al. 2020's
    'fisher-rao' measure writes the same quantity as (d+1)^2/m sum <w, grad l>^2 in a
    different normalization.) Both are invariant under any function-preserving positive
    rescaling of parameters: <Dw, D^-1 grad> = <w, grad>.

    The loss must be a mean of per-example terms (as the default is).

    Args:
        model: The network (its trainable parameters are w; it is not modified),
            or a FunctionalLoss built once for several measures (then x, y, loss_fn,
            device, chunk_size, labels and hvp_method are its own and stay unset).
        x: Training inputs, shape (n, ...).
        y: Training labels, shape (n,): in {0, 1} (or {-1, +1} with labels='pm1') for one
            logit, class labels 0..K-1 for K outputs.
        loss_fn: Loss of (logits, y), mean over examples (default: binary or K-class
            cross-entropy by the output count, see FunctionalLoss).
        depth: Number of affine layers L+1 (default: len(model.linears) when the model has it).
        device: Device to compute on (default: the model's).
        chunk_size: Examples per forward/backward pass (default: all at once).
        labels: Label convention of one-logit labels: '01' (None: the default) or 'pm1'.
        seed: Unused: the norm draws nothing; taken so that every flatness measure of the
            catalogue is called the same way.
        progress: Whether to show a progress bar over the chunks of the data.

    Returns:
        The FisherRaoNorm (the norm and its squared forms).

    Raises:
        SpecError: If an argument is invalid (e.g. a non-positive size, or labels outside the
            chosen convention).
    """
    if depth is not None and depth < 1:
        raise SpecError(f"depth must be >= 1, got {depth}")
    clock = Stopwatch()
    with loss_operator(model, x, y, loss_fn, device=device, chunk_size=chunk_size,
                       labels=labels) as fl:
        if depth is None and hasattr(fl.model, "linears"):
            depth = len(fl.model.linears)  # type: ignore[arg-type]
        inner_sq, homogeneous_sq = 0.0, 0.0
        for xc, yc, _ in track(fl.chunks(), "fisher-rao", enabled=progress, unit="chunks"):
            outputs, directional = jvp(lambda w, xc=xc: fl.forward(w, xc), (fl.w0,), (fl.w0,))
            outputs = outputs.detach().requires_grad_(True)
            chunk_loss = fl.loss_fn(outputs, yc) * xc.shape[0]  # sum of per-example losses
            (dloss,) = torch.autograd.grad(chunk_loss, outputs)
            per_example = (dloss * directional).reshape(xc.shape[0], -1).sum(dim=1)
            inner_sq += float((per_example**2).sum())
            homogeneous = (dloss * outputs.detach()).reshape(xc.shape[0], -1).sum(dim=1)
            homogeneous_sq += float((homogeneous**2).sum())
        fr_sq = inner_sq / fl.n
        return FisherRaoNorm(
            fisher_rao_norm=math.sqrt(fr_sq),
            fisher_rao_norm_sq=fr_sq,
            homogeneous_form_sq=depth**2 * homogeneous_sq / fl.n if depth is not None else None,
            depth=depth,
            n_examples=fl.n,
            seconds=clock.seconds,
        )
