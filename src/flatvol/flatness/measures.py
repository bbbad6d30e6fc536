"""Further flatness measures: average-case sharpness, PAC-Bayes flatness, adaptive sharpness
and the Fisher-Rao norm. Each works on any nn.Module through `FunctionalLoss`; the
model is never changed. The invariance of each under the alpha-scaling of ReLU networks is
discussed in docs/FLATNESS.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.func import jvp
from tqdm.auto import tqdm

from flatvol.errors import SpecError
from flatvol.flatness._functional import FunctionalLoss, LossFn
from flatvol.flatness._results import ResultMixin, Stopwatch
from flatvol.flatness.sharpness import BoxProblem, fast_ascent


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and math.isfinite(value)):
        raise SpecError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                        f"number, got {value}")


def _noise_scale(w0: torch.Tensor, sigma: float, magnitude_aware: bool,
                 epsilon_floor: float) -> torch.Tensor:
    """Per-coordinate standard deviation: sigma, or sqrt(sigma^2 w_i^2 + eps^2) (Jiang et al.)."""
    if not magnitude_aware:
        return torch.full_like(w0, sigma)
    return torch.sqrt(sigma**2 * w0**2 + epsilon_floor**2)


class _GaussianPerturbations:
    """Fixed standard-normal directions xi_1..xi_m (common random numbers): the Monte Carlo
    estimate is then a deterministic, usually monotone, function of sigma, which is what makes
    bisection over sigma well defined. Drawn on the CPU from `seed`, regenerated on demand
    so memory stays at one parameter vector."""

    def __init__(self, fl: FunctionalLoss, n_samples: int, seed: int):
        self.fl, self.n_samples, self.seed = fl, n_samples, seed

    def mean_metric(self, scale: torch.Tensor, metric: str) -> tuple[float, float]:
        generator = torch.Generator().manual_seed(self.seed)
        values = []
        for _ in range(self.n_samples):
            xi = torch.randn(self.fl.n_params, generator=generator, dtype=torch.float64)
            w = self.fl.w0 + scale * xi.to(self.fl.device, self.fl.dtype)
            if metric == "loss":  # huge noise may overflow: that is an infinite rise, not an error
                value = self.fl.loss_value(w, require_finite=False)
                values.append(value if math.isfinite(value) else math.inf)
            else:
                values.append(self.fl.error_rate(w))
        if not all(math.isfinite(v) for v in values):
            return math.inf, math.nan
        std_error = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 \
            else math.nan
        return float(np.mean(values)), std_error


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AverageSharpness(ResultMixin):
    """E_u[L(w + u)] - L(w) with Gaussian u; std_error is the Monte Carlo standard error."""

    sharpness: float
    std_error: float
    loss: float
    mean_perturbed_loss: float
    sigma: float
    magnitude_aware: bool
    epsilon_floor: float
    n_samples: int
    seconds: float


def average_sharpness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn | None = None,
    *,
    sigma: float = 0.01,
    n_samples: int = 32,
    magnitude_aware: bool = False,
    epsilon_floor: float = 1e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
) -> AverageSharpness:
    """Average-case (expected) sharpness E_{u ~ N(0, diag s^2)} L(w + u) - L(w).

    Source: Neyshabur, Bhojanapalli, McAllester & Srebro, "Exploring generalization in deep
    learning", NeurIPS 2017 (expected sharpness); Jiang et al., "Fantastic generalization
    measures and where to find them", ICLR 2020 (the sigma-based sharpness measures).
    s_i = sigma, or with magnitude_aware s_i = sqrt(sigma^2 w_i^2 + epsilon_floor^2).
    """
    _positive("sigma", sigma)
    _positive("epsilon_floor", epsilon_floor, allow_zero=True)
    if n_samples < 1:
        raise SpecError(f"n_samples must be >= 1, got {n_samples}")
    clock = Stopwatch()
    with FunctionalLoss(model, x, y, loss_fn, device, chunk_size) as fl:
        loss = fl.loss_value(fl.w0)
        scale = _noise_scale(fl.w0, sigma, magnitude_aware, epsilon_floor)
        mean, std_error = _GaussianPerturbations(fl, n_samples, seed).mean_metric(scale, "loss")
        return AverageSharpness(mean - loss, std_error, loss, mean, sigma, magnitude_aware,
                                epsilon_floor, n_samples, clock.seconds)


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PacBayesFlatness(ResultMixin):
    """sigma*: largest sigma with E_u[metric(w + u)] - metric(w) <= delta; flatness 1/sigma*^2.

    `bracketed` is False when even `sigma_max` kept the rise under delta (sigma_star is then
    sigma_max, a lower bound) or `sigma_min` already exceeded it (sigma_star is 0).
    """

    sigma_star: float
    flatness: float
    rise_at_sigma_star: float
    delta: float
    metric: str
    magnitude_aware: bool
    epsilon_floor: float
    base_value: float
    bracketed: bool
    n_samples: int
    n_evaluations: int
    seconds: float


def pac_bayes_flatness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn | None = None,
    *,
    delta: float = 0.1,
    metric: Literal["loss", "error"] = "loss",
    magnitude_aware: bool = False,
    epsilon_floor: float = 1e-3,
    n_samples: int = 16,
    sigma_init: float = 0.01,
    sigma_min: float = 1e-10,
    sigma_max: float = 1e3,
    rel_tol: float = 1e-3,
    max_bisections: int = 60,
    seed: int = 0,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> PacBayesFlatness:
    """PAC-Bayes flatness sigma* of Jiang et al., "Fantastic generalization measures and where
    to find them", ICLR 2020 (measures pacbayes.flatness = 1/sigma'^2 and, with
    magnitude_aware, pacbayes.mag.flatness = 1/alpha'^2 whose noise has variance
    alpha'^2 w_i^2 + epsilon_floor^2, epsilon_floor = 1e-3 there).

    The rise of the mean training loss (metric='loss') or 0-1 training error ('error', as
    Jiang et al.) under Gaussian noise is estimated with `n_samples` fixed directions (common
    random numbers); sigma is bracketed by doubling/halving from `sigma_init` and then
    bisected geometrically until hi/lo - 1 < rel_tol.
    """
    _positive("delta", delta)
    _positive("epsilon_floor", epsilon_floor, allow_zero=True)
    _positive("rel_tol", rel_tol)
    if metric not in ("loss", "error"):
        raise SpecError(f"metric must be 'loss' or 'error', got {metric!r}")
    if not 0 < sigma_min <= sigma_init <= sigma_max:
        raise SpecError(f"need 0 < sigma_min <= sigma_init <= sigma_max, got {sigma_min}, "
                        f"{sigma_init}, {sigma_max}")
    if n_samples < 1:
        raise SpecError(f"n_samples must be >= 1, got {n_samples}")
    clock = Stopwatch()
    with FunctionalLoss(model, x, y, loss_fn, device, chunk_size) as fl:
        base = fl.loss_value(fl.w0) if metric == "loss" else fl.error_rate(fl.w0)
        perturb = _GaussianPerturbations(fl, n_samples, seed)
        cache: dict[float, float] = {}
        bar = tqdm(desc="pac-bayes sigma", disable=not progress, leave=False)

        def rise(sigma: float) -> float:
            if sigma not in cache:
                scale = _noise_scale(fl.w0, sigma, magnitude_aware, epsilon_floor)
                cache[sigma] = perturb.mean_metric(scale, metric)[0] - base
                bar.update()
            return cache[sigma]

        bracketed = True
        lo, hi = 0.0, math.inf
        sigma = sigma_init
        if rise(sigma) <= delta:
            lo = sigma
            while rise(sigma * 2) <= delta:
                sigma *= 2
                lo = sigma
                if sigma * 2 > sigma_max:
                    bracketed = False
                    break
            else:
                hi = sigma * 2
        else:
            hi = sigma
            while rise(sigma / 2) > delta:
                sigma /= 2
                hi = sigma
                if sigma / 2 < sigma_min:
                    bracketed = False
                    break
            else:
                lo = sigma / 2
        if bracketed:
            for _ in range(max_bisections):
                if hi / lo - 1 < rel_tol:
                    break
                mid = math.sqrt(lo * hi)
                if rise(mid) <= delta:
                    lo = mid
                else:
                    hi = mid
        bar.close()
        return PacBayesFlatness(
            sigma_star=lo,
            flatness=1 / lo**2 if lo > 0 else math.inf,
            rise_at_sigma_star=cache.get(lo, 0.0),
            delta=delta,
            metric=metric,
            magnitude_aware=magnitude_aware,
            epsilon_floor=epsilon_floor,
            base_value=base,
            bracketed=bracketed,
            n_samples=n_samples,
            n_evaluations=len(cache),
            seconds=clock.seconds,
        )


def pac_bayes_magnitude_flatness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn | None = None,
    **kwargs: object,
) -> PacBayesFlatness:
    """Magnitude-aware PAC-Bayes flatness (Jiang et al. 2020, pacbayes.mag.flatness): noise
    variance alpha^2 w_i^2 + epsilon_floor^2. With epsilon_floor = 0 the noise is
    multiplicative, w_i (1 + alpha xi_i), and sigma* is invariant under alpha-scaling."""
    return pac_bayes_flatness(model, x, y, loss_fn, magnitude_aware=True, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
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
                    n_restarts: int, generator: torch.Generator) -> tuple[float, torch.Tensor, int]:
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
    for delta in starts:
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
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
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
    """
    _positive("rho", rho)
    _positive("eta", eta, allow_zero=True)
    p_name = "inf" if p in ("inf", math.inf) else "2" if p in ("2", 2) else None
    if p_name is None:
        raise SpecError(f"p must be 'inf' or 2, got {p!r}")
    if n_steps < 1 or n_restarts < 0:
        raise SpecError(f"need n_steps >= 1 and n_restarts >= 0, got {n_steps}, {n_restarts}")
    clock = Stopwatch()
    generator = torch.Generator().manual_seed(seed)
    with FunctionalLoss(model, x, y, loss_fn, device, chunk_size) as fl:
        scale = fl.w0.abs() + eta
        loss = fl.loss_value(fl.w0)
        if p_name == "inf":
            problem = BoxProblem(fl, rho * scale)
            problem.record(loss, torch.zeros_like(scale))
            fast_ascent(problem, n_steps=n_steps, n_restarts=n_restarts, generator=generator)
            max_loss, perturbation = problem.best_value, problem.best_z
            n_loss, n_grad = problem.n_loss_evals + 1, problem.n_grad_evals
        else:
            max_loss, delta, n_grad = _l2_ball_ascent(fl, scale, rho, n_steps, n_restarts,
                                                      generator)
            if loss >= max_loss:
                max_loss, delta = loss, torch.zeros_like(scale)
            perturbation, n_loss = scale * delta, n_grad + 1
        return AdaptiveSharpness(max_loss - loss, loss, max_loss, rho, p_name, eta, n_loss,
                                 n_grad, clock.seconds, perturbation.cpu(), scale.cpu())


# ---------------------------------------------------------------------------------------
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
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn | None = None,
    *,
    depth: int | None = None,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
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
    """
    if depth is None and hasattr(model, "linears"):
        depth = len(model.linears)  # type: ignore[arg-type]
    if depth is not None and depth < 1:
        raise SpecError(f"depth must be >= 1, got {depth}")
    clock = Stopwatch()
    with FunctionalLoss(model, x, y, loss_fn, device, chunk_size) as fl:
        inner_sq, homogeneous_sq = 0.0, 0.0
        for xc, yc, _ in fl._chunks():
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
