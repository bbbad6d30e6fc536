"""Adaptive sharpness (Kwon, Kim, Park & Choi, ICML 2021): the worst loss rise over
a ball in the rescaled coordinates T_w^-1 delta, T_w = diag(|w| + eta), so the measure is
invariant to the layer-wise rescalings that leave a ReLU network's function unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from flatvol.errors import SpecError
from flatvol.flatness._functional import FunctionalLoss, LossFn, ModelOrOperator, loss_operator
from flatvol.flatness._inputs import LabelConvention
from flatvol.flatness._results import ResultMixin, Stopwatch, require_positive
from flatvol.flatness.sharpness import BoxProblem, fast_ascent
from flatvol.progress import track


@dataclass(frozen=True)
class AdaptiveSharpness(ResultMixin):
    """max_{||delta||_p <= rho} L(w + T_w delta) - L(w), T_w = diag(|w| + eta)."""

    sharpness: float
    loss: float
    max_loss: float
    rho: float
    p: str
    eta: float
    n_loss_evals: int
    n_grad_evals: int
    seconds: float
    perturbation: torch.Tensor = field(repr=False, compare=False)  # T_w delta, weight space
    scale: torch.Tensor = field(repr=False, compare=False)  # |w| + eta


def _l2_ball_ascent(fl: FunctionalLoss, scale: torch.Tensor, rho: float, n_steps: int,
                    n_restarts: int, generator: torch.Generator,
                    progress: bool = False) -> tuple[float, torch.Tensor, int]:
    """Normalized-gradient PGD on the l2 ball ||delta|| <= rho in the rescaled coordinates."""
    best_value, best_delta, n_grad = -math.inf, torch.zeros_like(scale), 0

    def project(delta: torch.Tensor) -> torch.Tensor:
        norm = float(torch.linalg.vector_norm(delta))
        return delta if norm <= rho else delta * (rho / norm)

    def evaluate(delta: torch.Tensor) -> tuple[float, torch.Tensor]:
        nonlocal best_value, best_delta, n_grad
        n_grad += 1
        value, g = fl.value_and_grad(fl.w0 + scale * delta)
        if value > best_value:
            best_value, best_delta = value, delta.clone()
        return value, scale * g

    starts = [torch.zeros_like(scale)]
    for _ in range(n_restarts):
        direction = torch.randn(scale.shape, generator=generator, dtype=torch.float64).to(scale)
        starts.append(direction * (rho / float(torch.linalg.vector_norm(direction))))
    for delta in track(starts, "adaptive l2 ascent", enabled=progress):
        value, g = evaluate(delta)
        t = 1.0
        for _ in range(n_steps):
            g_norm = float(torch.linalg.vector_norm(g))
            if g_norm == 0:
                break
            new = project(delta + (t * rho / g_norm) * g)
            if torch.equal(new, delta):
                break
            new_value, new_g = evaluate(new)
            if new_value >= value:
                delta, value, g = new, new_value, new_g
            else:
                t /= 2
                if t < 1 / 16:
                    break
    return best_value, best_delta, n_grad


def adaptive_sharpness(
    model: ModelOrOperator,
    x: torch.Tensor | np.ndarray | None = None,
    y: torch.Tensor | np.ndarray | None = None,
    loss_fn: LossFn | None = None,
    *,
    rho: float = 1e-3,
    p: Literal["inf", "2"] | float = "inf",
    eta: float = 0.0,
    n_steps: int = 10,
    n_restarts: int = 2,
    seed: int = 0,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    labels: LabelConvention | None = None,
    progress: bool = False,
) -> AdaptiveSharpness:
    """Adaptive sharpness of Kwon, Kim, Park & Choi, "ASAM: Adaptive sharpness-aware
    minimization for scale-invariant learning of deep neural networks", ICML 2021:

        max_{||T_w^{-1} e||_p <= rho} L(w + e) - L(w),   T_w = diag(|w_i| + eta).

    With eta = 0 the perturbed weights are w_i (1 + t_i) with ||t||_p <= rho, so the measure is
    invariant under every positive rescaling of parameters that leaves the function unchanged
    (layer- and neuron-wise alpha-scaling of ReLU nets, biases included). p = 'inf' is the
    elementwise ball, maximized by the same corner ascent as Keskar's 'fast' maximizer (Keskar's
    box is this ball with eta = 1, which is what breaks its invariance); p = 2 uses
    normalized-gradient projected ascent. Both take `n_steps` steps from 0 and from
    `n_restarts` random starts.

    Args:
        model: The network (its trainable parameters are w; it is not modified),
            or a FunctionalLoss built once for several measures (then x, y, loss_fn,
            device, chunk_size, labels and hvp_method are its own and stay unset).
        x: Training inputs, shape (n, ...).
        y: Training labels, shape (n,): in {0, 1} (or {-1, +1} with labels='pm1') for one
            logit, class labels 0..K-1 for K outputs.
        loss_fn: Loss of (logits, y), mean over examples (default: binary or K-class
            cross-entropy by the output count, see FunctionalLoss).
        rho: Radius of the perturbation ball.
        p: Norm of the ball: 'inf', '2' or a float p.
        eta: Offset added to |w_i| in T_w.
        n_steps: Ascent steps taken from each start.
        n_restarts: Number of random starts, besides the start at 0.
        seed: Seed of the random starts.
        device: Device to compute on (default: the model's).
        chunk_size: Examples per forward/backward pass (default: all at once).
        labels: Label convention of one-logit labels: '01' (None: the default) or 'pm1'.
        progress: Whether to show a progress bar over the starts.

    Returns:
        The AdaptiveSharpness (the sharpness found, with its details).

    Raises:
        SpecError: If an argument is invalid (e.g. a non-positive size, or labels outside the
            chosen convention).
    """
    require_positive("rho", rho)
    require_positive("eta", eta, allow_zero=True)
    p_name = "inf" if p in ("inf", math.inf) else "2" if p in ("2", 2) else None
    if p_name is None:
        raise SpecError(f"p must be 'inf' or 2, got {p!r}")
    if n_steps < 1 or n_restarts < 0:
        raise SpecError(f"need n_steps >= 1 and n_restarts >= 0, got {n_steps}, {n_restarts}")
    clock = Stopwatch()
    generator = torch.Generator().manual_seed(seed)
    with loss_operator(model, x, y, loss_fn, device=device, chunk_size=chunk_size,
                       labels=labels) as fl:
        scale = fl.w0.abs() + eta
        loss = fl.loss_value(fl.w0)
        if p_name == "inf":
            problem = BoxProblem(fl, rho * scale)
            problem.record(loss, torch.zeros_like(scale))
            fast_ascent(problem, n_steps=n_steps, n_restarts=n_restarts, generator=generator,
                        progress=progress)
            max_loss, perturbation = problem.best_value, problem.best_z
            n_loss, n_grad = problem.n_loss_evals + 1, problem.n_grad_evals
        else:
            max_loss, delta, n_grad = _l2_ball_ascent(fl, scale, rho, n_steps, n_restarts,
                                                      generator, progress)
            if loss >= max_loss:
                max_loss, delta = loss, torch.zeros_like(scale)
            perturbation, n_loss = scale * delta, n_grad + 1
        return AdaptiveSharpness(max_loss - loss, loss, max_loss, rho, p_name, eta, n_loss,
                                 n_grad, clock.seconds, perturbation.cpu(), scale.cpu())
