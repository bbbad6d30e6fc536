"""Flatness under random weight noise: average-case sharpness (E_u L(w + u) - L(w)) and
PAC-Bayes flatness (the largest noise scale sigma* whose expected loss rise stays under delta),
plain and magnitude-aware. Each works on any nn.Module through `FunctionalLoss`; the model is
never changed. Their invariance under the alpha-scaling of ReLU networks is discussed in
docs/FLATNESS.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from flatvol.errors import SpecError
from flatvol.flatness._functional import FunctionalLoss, LossFn, ModelOrOperator, loss_operator
from flatvol.flatness._inputs import LabelConvention
from flatvol.flatness._results import ResultMixin, Stopwatch, require_positive
from flatvol.progress import ProgressBar, track


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

    def mean_metric(self, scale: torch.Tensor, metric: str,
                    progress: bool = False) -> tuple[float, float]:
        generator = torch.Generator().manual_seed(self.seed)
        values = []
        for _ in track(range(self.n_samples), "noise samples", enabled=progress, unit="samples"):
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
    model: ModelOrOperator,
    x: torch.Tensor | np.ndarray | None = None,
    y: torch.Tensor | np.ndarray | None = None,
    loss_fn: LossFn | None = None,
    *,
    sigma: float = 0.01,
    n_samples: int = 32,
    magnitude_aware: bool = False,
    epsilon_floor: float = 1e-3,
    seed: int = 0,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    labels: LabelConvention | None = None,
    progress: bool = False,
) -> AverageSharpness:
    """Average-case (expected) sharpness E_{u ~ N(0, diag s^2)} L(w + u) - L(w).

    Source: Neyshabur, Bhojanapalli, McAllester & Srebro, "Exploring generalization in deep
    learning", NeurIPS 2017 (expected sharpness); Jiang et al., "Fantastic generalization
    measures and where to find them", ICLR 2020 (the sigma-based sharpness measures).
    s_i = sigma, or with magnitude_aware s_i = sqrt(sigma^2 w_i^2 + epsilon_floor^2).

    Args:
        model: The network (its trainable parameters are w; it is not modified),
            or a FunctionalLoss built once for several measures (then x, y, loss_fn,
            device, chunk_size, labels and hvp_method are its own and stay unset).
        x: Training inputs, shape (n, ...).
        y: Training labels, shape (n,): in {0, 1} (or {-1, +1} with labels='pm1') for one
            logit, class labels 0..K-1 for K outputs.
        loss_fn: Loss of (logits, y), mean over examples (default: binary or K-class
            cross-entropy by the output count, see FunctionalLoss).
        sigma: Standard deviation of the Gaussian perturbation.
        n_samples: Number of perturbations averaged.
        magnitude_aware: Whether to scale the noise by the weight magnitudes.
        epsilon_floor: Noise floor epsilon of the magnitude-aware variance.
        seed: Seed of the perturbations.
        device: Device to compute on (default: the model's).
        chunk_size: Examples per forward/backward pass (default: all at once).
        labels: Label convention of one-logit labels: '01' (None: the default) or 'pm1'.
        progress: Whether to show a progress bar over the samples.

    Returns:
        The AverageSharpness (the expected loss rise and its Monte Carlo standard error).

    Raises:
        SpecError: If an argument is invalid (e.g. a non-positive size, or labels outside the
            chosen convention).
    """
    require_positive("sigma", sigma)
    require_positive("epsilon_floor", epsilon_floor, allow_zero=True)
    if n_samples < 1:
        raise SpecError(f"n_samples must be >= 1, got {n_samples}")
    clock = Stopwatch()
    with loss_operator(model, x, y, loss_fn, device=device, chunk_size=chunk_size,
                       labels=labels) as fl:
        loss = fl.loss_value(fl.w0)
        scale = _noise_scale(fl.w0, sigma, magnitude_aware, epsilon_floor)
        perturbations = _GaussianPerturbations(fl, n_samples, seed)
        mean, std_error = perturbations.mean_metric(scale, "loss", progress)
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
    model: ModelOrOperator,
    x: torch.Tensor | np.ndarray | None = None,
    y: torch.Tensor | np.ndarray | None = None,
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
    labels: LabelConvention | None = None,
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

    Args:
        model: The network (its trainable parameters are w; it is not modified),
            or a FunctionalLoss built once for several measures (then x, y, loss_fn,
            device, chunk_size, labels and hvp_method are its own and stay unset).
        x: Training inputs, shape (n, ...).
        y: Training labels, shape (n,): in {0, 1} (or {-1, +1} with labels='pm1') for one
            logit, class labels 0..K-1 for K outputs.
        loss_fn: Loss of (logits, y), mean over examples (default: binary or K-class
            cross-entropy by the output count, see FunctionalLoss).
        delta: Largest allowed rise of the metric.
        metric: Quantity whose rise is bounded: 'loss' or 'error' (0-1 training error).
        magnitude_aware: Whether the noise variance is alpha^2 w_i^2 + epsilon_floor^2.
        epsilon_floor: Noise floor of the magnitude-aware variance.
        n_samples: Perturbations averaged per evaluated sigma.
        sigma_init: First sigma tried.
        sigma_min: Smallest sigma searched.
        sigma_max: Largest sigma searched.
        rel_tol: Relative tolerance of the bisection (stop when hi/lo - 1 < rel_tol).
        max_bisections: Maximum number of bisection steps.
        seed: Seed of the perturbations.
        device: Device to compute on (default: the model's).
        chunk_size: Examples per forward/backward pass (default: all at once).
        labels: Label convention of one-logit labels: '01' (None: the default) or 'pm1'.
        progress: Whether to show a progress bar.

    Returns:
        The PacBayesFlatness (sigma*, the flatness 1/sigma*^2 and the search details).

    Raises:
        SpecError: If an argument is invalid (e.g. a non-positive size, or labels outside the
            chosen convention).
    """
    require_positive("delta", delta)
    require_positive("epsilon_floor", epsilon_floor, allow_zero=True)
    require_positive("rel_tol", rel_tol)
    if metric not in ("loss", "error"):
        raise SpecError(f"metric must be 'loss' or 'error', got {metric!r}")
    if not 0 < sigma_min <= sigma_init <= sigma_max:
        raise SpecError(f"need 0 < sigma_min <= sigma_init <= sigma_max, got {sigma_min}, "
                        f"{sigma_init}, {sigma_max}")
    if n_samples < 1:
        raise SpecError(f"n_samples must be >= 1, got {n_samples}")
    clock = Stopwatch()
    with loss_operator(model, x, y, loss_fn, device=device, chunk_size=chunk_size,
                       labels=labels) as fl:
        base = fl.loss_value(fl.w0) if metric == "loss" else fl.error_rate(fl.w0)
        perturb = _GaussianPerturbations(fl, n_samples, seed)
        cache: dict[float, float] = {}
        with ProgressBar("pac-bayes sigma", enabled=progress, unit="sigmas",
                         leave=False) as bar:

            def rise(sigma: float) -> float:
                if sigma not in cache:
                    scale = _noise_scale(fl.w0, sigma, magnitude_aware, epsilon_floor)
                    cache[sigma] = perturb.mean_metric(scale, metric)[0] - base
                    bar.advance()
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
    model: ModelOrOperator,
    x: torch.Tensor | np.ndarray | None = None,
    y: torch.Tensor | np.ndarray | None = None,
    loss_fn: LossFn | None = None,
    **kwargs: object,
) -> PacBayesFlatness:
    """Magnitude-aware PAC-Bayes flatness (Jiang et al. 2020, pacbayes.mag.flatness): noise
    variance alpha^2 w_i^2 + epsilon_floor^2. With epsilon_floor = 0 the noise is
    multiplicative, w_i (1 + alpha xi_i), and sigma* is invariant under alpha-scaling.

    Args:
        model: The network (its trainable parameters are w; it is not modified),
            or a FunctionalLoss built once for several measures (then x, y, loss_fn,
            device, chunk_size, labels and hvp_method are its own and stay unset).
        x: Training inputs, shape (n, ...).
        y: Training labels, shape (n,): in {0, 1} (or {-1, +1} with labels='pm1') for one
            logit, class labels 0..K-1 for K outputs.
        loss_fn: Loss of (logits, y), mean over examples (default: binary or K-class
            cross-entropy by the output count, see FunctionalLoss).
        **kwargs: Further keyword arguments of pac_bayes_flatness (magnitude_aware is set).

    Returns:
        The PacBayesFlatness of the magnitude-aware search.
    """
    return pac_bayes_flatness(model, x, y, loss_fn, magnitude_aware=True, **kwargs)  # type: ignore[arg-type]
