"""Keskar et al. (2017) worst-case sharpness and the box maximizers it needs.

Keskar, Mudigere, Nocedal, Smelyanskiy & Tang, "On large-batch training for deep learning:
generalization gap and sharp minima", ICLR 2017, metric (3):

    phi(w, eps, A) = 100 * (max_{z in C_eps} L(w + A z) - L(w)) / (1 + L(w)),
    C_eps = {z : |z_i| <= eps * (|(A^+ w)_i| + 1)}

with A = I (full space, the default and the paper's choice) or a random n x p matrix (the
random-subspace variant); here A has orthonormal columns, so A^+ = A^T. L is the mean loss on
the genuine training set S only.

Three maximizers of the box problem:
- 'paper'  : Zhang et al.'s protocol. Projected SGD ascent on z (lr 1e-3, batch 32, 100
             epochs), clipped to the box after every step; the full-S loss is evaluated after
             every step and the largest value seen is kept.
- 'lbfgsb' : scipy L-BFGS-B on -L with the box as bounds, maxiter 10 (Keskar et al.).
- 'fast'   : full-batch projected sign-gradient ascent (L-inf steepest ascent, i.e. PGD) with
             a step of twice the box, so each step lands on the box corner the gradient points
             to; a step that lowers the loss is halved (backtracking), and a fixed corner ends
             the run. Restarts from random corners guard against a poor first corner. For a
             convex loss each corner step can only raise the loss (Frank-Wolfe on a box), and
             near a minimum it typically converges in a handful of full-batch gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from scipy import optimize

from flatvol.errors import SpecError
from flatvol.flatness._functional import FunctionalLoss, LossFn, ModelOrOperator, loss_operator
from flatvol.flatness._inputs import LabelConvention
from flatvol.flatness._results import ResultMixin, Stopwatch
from flatvol.progress import track

Maximizer = Literal["paper", "lbfgsb", "fast"]
MAXIMIZERS: tuple[str, ...] = ("paper", "lbfgsb", "fast")


class BoxProblem:
    """Maximize L(w0 + A z) over the box |z_i| <= bound_i, keeping the best full-data value."""

    def __init__(self, fl: FunctionalLoss, bound: torch.Tensor, basis: torch.Tensor | None = None):
        self.fl = fl
        self.bound = bound
        self.basis = basis
        self.n_loss_evals = 0
        self.n_grad_evals = 0
        self.best_value = -math.inf
        self.best_z = torch.zeros_like(bound)
        self.best_by_epoch: list[float] = []  # the 'paper' maximizer's best after each epoch

    def weights(self, z: torch.Tensor) -> torch.Tensor:
        return self.fl.w0 + (z if self.basis is None else self.basis @ z)

    def clip(self, z: torch.Tensor) -> torch.Tensor:
        return torch.clamp(z, min=-self.bound, max=self.bound)

    def record(self, value: float, z: torch.Tensor) -> None:
        if value > self.best_value:
            self.best_value, self.best_z = value, z.detach().clone()

    def value(self, z: torch.Tensor) -> float:
        self.n_loss_evals += 1
        value = self.fl.loss_value(self.weights(z))
        self.record(value, z)
        return value

    def value_and_grad(
        self, z: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[float, torch.Tensor]:
        """Loss and gradient with respect to z; only full-data values count as candidates."""
        self.n_grad_evals += 1
        value, g = self.fl.value_and_grad(self.weights(z), index)
        if not math.isfinite(value):
            raise SpecError(f"the loss is not finite ({value}) inside the sharpness box")
        if self.basis is not None:
            g = self.basis.T @ g
        if index is None:
            self.n_loss_evals += 1
            self.record(value, z)
        return value, g


def paper_ascent(
    problem: BoxProblem,
    *,
    lr: float = 1e-3,
    batch_size: int = 32,
    epochs: int = 100,
    generator: torch.Generator,
    progress: bool = False,
) -> None:
    """Projected minibatch SGD ascent from z = 0; full-data loss after every step."""
    n = problem.fl.n
    z = torch.zeros_like(problem.bound)  # L(w0) itself was evaluated by the caller
    for _ in track(range(epochs), "keskar paper ascent", enabled=progress):
        order = torch.randperm(n, generator=generator).to(problem.fl.device)
        for index in order.split(batch_size):
            _, g = problem.value_and_grad(z, index)
            z = problem.clip(z + lr * g)
            problem.value(z)
        problem.best_by_epoch.append(problem.best_value)


def lbfgsb_ascent(problem: BoxProblem, *, maxiter: int = 10) -> None:
    """scipy L-BFGS-B on -L(w0 + A z) with the box as bounds, starting at z = 0."""
    like = problem.bound

    def negative(z_np: np.ndarray) -> tuple[float, np.ndarray]:
        z = problem.clip(torch.as_tensor(z_np, dtype=like.dtype, device=like.device))
        value, g = problem.value_and_grad(z)
        return -value, -g.detach().cpu().double().numpy()

    bound = problem.bound.detach().cpu().double().numpy()
    optimize.minimize(
        negative,
        np.zeros_like(bound),
        jac=True,
        method="L-BFGS-B",
        bounds=optimize.Bounds(-bound, bound),
        options={"maxiter": maxiter},
    )


def fast_ascent(
    problem: BoxProblem,
    *,
    n_steps: int = 10,
    n_restarts: int = 2,
    generator: torch.Generator,
    progress: bool = False,
) -> None:
    """Full-batch projected sign-gradient ascent to box corners, with backtracking and restarts.

    Starts: z = 0, then `n_restarts` uniformly random corners. From each start, step
    z <- clip(z + t * bound * sign(grad)) with t = 2 (a full jump to the corner the gradient
    points to); a step that lowers the loss is rejected and t is halved (down to 1/16); the run
    ends when the step no longer moves z.
    """
    bound = problem.bound
    starts = [torch.zeros_like(bound)]
    for _ in range(n_restarts):
        signs = torch.randint(0, 2, bound.shape, generator=generator).to(bound) * 2 - 1
        starts.append(signs * bound)
    for z in track(starts, "keskar fast ascent", enabled=progress):
        value, g = problem.value_and_grad(z)
        t = 2.0
        for _ in range(n_steps):
            z_new = problem.clip(z + t * bound * torch.sign(g))
            if torch.equal(z_new, z):
                break
            value_new, g_new = problem.value_and_grad(z_new)
            if value_new >= value:
                z, value, g = z_new, value_new, g_new
            else:
                t /= 2
                if t < 1 / 16:
                    break


def run_maximizer(
    problem: BoxProblem,
    maximizer: str,
    *,
    seed: int,
    progress: bool,
    lr: float,
    batch_size: int,
    epochs: int,
    lbfgsb_maxiter: int,
    n_steps: int,
    n_restarts: int,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    if maximizer == "paper":
        paper_ascent(problem, lr=lr, batch_size=batch_size, epochs=epochs, generator=generator,
                     progress=progress)
    elif maximizer == "lbfgsb":
        lbfgsb_ascent(problem, maxiter=lbfgsb_maxiter)
    else:
        fast_ascent(problem, n_steps=n_steps, n_restarts=n_restarts, generator=generator,
                    progress=progress)


def check_maximizer_options(
    maximizer: str, lr: float, batch_size: int, epochs: int, lbfgsb_maxiter: int, n_steps: int,
    n_restarts: int,
) -> None:
    if maximizer not in MAXIMIZERS:
        raise SpecError(f"unknown maximizer {maximizer!r}; expected one of {', '.join(MAXIMIZERS)}")
    if not (lr > 0 and math.isfinite(lr)):
        raise SpecError(f"lr must be a positive number, got {lr}")
    for name, value, low in [("batch_size", batch_size, 1), ("epochs", epochs, 1),
                             ("lbfgsb_maxiter", lbfgsb_maxiter, 1), ("n_steps", n_steps, 1),
                             ("n_restarts", n_restarts, 0)]:
        if value < low:
            raise SpecError(f"{name} must be >= {low}, got {value}")


def random_subspace(n_params: int, dim: int, seed: int, dtype: torch.dtype,
                    device: torch.device) -> torch.Tensor:
    """An n_params x dim matrix with orthonormal columns (QR of a seeded Gaussian matrix)."""
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(n_params, dim, generator=generator, dtype=torch.float64)
    basis, _ = torch.linalg.qr(gaussian)
    return basis.to(device, dtype)


@dataclass(frozen=True)
class KeskarSharpness(ResultMixin):
    """Keskar sharpness phi = 100 (max_box L - L) / (1 + L) on the training set.

    `perturbation` is the maximizing z (in subspace coordinates if `subspace_dim` is set) and
    `bound` the box half-widths, so |perturbation| <= bound elementwise.
    """

    sharpness: float
    log10_sharpness: float
    loss: float
    max_loss: float
    epsilon: float
    maximizer: str
    subspace_dim: int | None
    n_examples: int
    n_params: int
    n_loss_evals: int
    n_grad_evals: int
    seconds: float
    perturbation: torch.Tensor = field(repr=False, compare=False)
    bound: torch.Tensor = field(repr=False, compare=False)
    # 'paper' only: the largest loss found by the end of each ascent epoch (how far from
    # settled the maximum was when the epochs ran out); empty for the other maximizers.
    max_loss_by_epoch: tuple[float, ...] = field(default=(), repr=False)


def keskar_sharpness(
    model: ModelOrOperator,
    x: torch.Tensor | np.ndarray | None = None,
    y: torch.Tensor | np.ndarray | None = None,
    loss_fn: LossFn | None = None,
    *,
    epsilon: float = 1e-4,
    maximizer: Maximizer = "fast",
    subspace_dim: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    labels: LabelConvention | None = None,
    progress: bool = False,
    lr: float = 1e-3,
    batch_size: int = 32,
    epochs: int = 100,
    lbfgsb_maxiter: int = 10,
    n_steps: int = 10,
    n_restarts: int = 2,
) -> KeskarSharpness:
    """Keskar et al. (2017) sharpness of `model` on (x, y): pass the genuine training set S.

    `maximizer` picks the box maximizer ('paper', 'lbfgsb' or 'fast', see the module doc);
    `lr`, `batch_size`, `epochs` tune 'paper', `lbfgsb_maxiter` 'lbfgsb', `n_steps` and
    `n_restarts` 'fast'. `subspace_dim=p` uses Keskar's random p-dimensional subspace.
    The model is left exactly as it was (it is never written to; restored even on errors).

    Args:
        model: the trained network, never modified; or a FunctionalLoss built once for
            several measures (then x, y, loss_fn, device, chunk_size, labels and hvp_method
            are its own and stay unset).
        x: inputs of the training set S, (n, *input_shape).
        y: labels of S (tensor or array): 0/1 for a one-logit model (or -1/+1 with
            labels='pm1'), class labels 0..K-1 for K outputs.
        loss_fn: loss(logits, y) averaged over examples; default binary cross-entropy on
            one logit, cross-entropy on K outputs (see flatvol.flatness.FunctionalLoss).
        epsilon: box size: each weight w may move by epsilon * (|w| + 1).
        maximizer: 'fast' (projected gradient ascent with restarts), 'lbfgsb' or 'paper'.
        subspace_dim: maximize over a random subspace of this dimension (None: all weights).
        seed: seed of every random probe or restart (same seed, same result).
        device: torch device to compute on (default: the model's).
        chunk_size: examples per forward pass (memory bound; None: all at once).
        labels: label convention of the default loss: '01' (y in {0, 1}) or 'pm1'
            (y in {-1, +1}, mapped to {0, 1}); -1/+1 labels without it are refused.
        progress: show the maximizer's progress (see flatvol.progress).
        lr: learning rate of the 'paper' maximizer.
        batch_size: minibatch size of the 'paper' maximizer.
        epochs: epochs of the 'paper' maximizer.
        lbfgsb_maxiter: iterations of the 'lbfgsb' maximizer.
        n_steps: ascent steps per start of the 'fast' maximizer.
        n_restarts: random restarts of the 'fast' maximizer.

    Returns:
        The KeskarSharpness: `sharpness`, `log10_sharpness`, the loss before and at the
        maximum, and the settings used.

    Raises:
        SpecError: a non-positive epsilon or invalid maximizer settings.
    """
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise SpecError(f"epsilon must be a positive number, got {epsilon}")
    check_maximizer_options(maximizer, lr, batch_size, epochs, lbfgsb_maxiter, n_steps, n_restarts)
    clock = Stopwatch()
    with loss_operator(model, x, y, loss_fn, device=device, chunk_size=chunk_size,
                       labels=labels) as fl:
        basis = None
        if subspace_dim is not None:
            if not 1 <= subspace_dim <= fl.n_params:
                raise SpecError(
                    f"subspace_dim must be in [1, {fl.n_params}] (the number of parameters), "
                    f"got {subspace_dim}"
                )
            basis = random_subspace(fl.n_params, subspace_dim, seed, fl.dtype, fl.device)
            center = basis.T @ fl.w0
        else:
            center = fl.w0
        bound = epsilon * (center.abs() + 1)
        problem = BoxProblem(fl, bound, basis)
        loss = problem.value(torch.zeros_like(bound))
        run_maximizer(problem, maximizer, seed=seed, progress=progress, lr=lr,
                      batch_size=batch_size, epochs=epochs, lbfgsb_maxiter=lbfgsb_maxiter,
                      n_steps=n_steps, n_restarts=n_restarts)
        max_loss = problem.best_value
        sharpness = 100.0 * (max_loss - loss) / (1.0 + loss)
        return KeskarSharpness(
            sharpness=sharpness,
            log10_sharpness=math.log10(sharpness) if sharpness > 0 else -math.inf,
            loss=loss,
            max_loss=max_loss,
            epsilon=epsilon,
            maximizer=maximizer,
            subspace_dim=subspace_dim,
            n_examples=fl.n,
            n_params=fl.n_params,
            n_loss_evals=problem.n_loss_evals,
            n_grad_evals=problem.n_grad_evals,
            seconds=clock.seconds,
            perturbation=problem.best_z.cpu(),
            bound=bound.cpu(),
            max_loss_by_epoch=tuple(problem.best_by_epoch),
        )
