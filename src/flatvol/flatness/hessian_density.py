"""The Hessian's eigenvalue density by stochastic Lanczos quadrature (Lin, Saad & Yang, SIAM
Review 2016; Ghorbani, Krishnan & Xiao, ICML 2019), Gaussian-broadened, from Hessian-vector
products only (flatvol.flatness.hessian). Random probes come from a torch.Generator seeded by
`seed` on the CPU, so results are reproducible and the same on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from flatvol.errors import SpecError
from flatvol.flatness._functional import (
    HvpMethod,
    LossFn,
    ModelOrOperator,
    loss_operator,
)
from flatvol.flatness._inputs import LabelConvention
from flatvol.flatness._results import ResultMixin, Stopwatch
from flatvol.flatness.estimators import Lanczos
from flatvol.flatness.hessian import counting_hvp
from flatvol.progress import ProgressBar


@dataclass(frozen=True)
class HessianDensity(ResultMixin):
    """Stochastic Lanczos quadrature: for each probe, Ritz nodes and weights (first components
    of the tridiagonal eigenvectors squared) whose mixture approximates the spectral measure
    (1/n) sum_i delta(t - lambda_i). `values` is that measure broadened by N(0, sigma^2) on
    `grid`; it integrates to 1."""

    grid: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)
    sigma: float
    nodes: np.ndarray = field(repr=False)  # n_probes x n_iter
    weights: np.ndarray = field(repr=False)  # n_probes x n_iter, rows sum to 1
    n_probes: int
    n_iter: int
    n_hvp: int
    n_params: int
    seconds: float

    def density(self, grid: np.ndarray, sigma: float | None = None) -> np.ndarray:
        """The Gaussian-broadened density on any grid (default sigma: self.sigma)."""
        s = self.sigma if sigma is None else sigma
        t = np.asarray(grid, dtype=np.float64)[:, None]
        z = (t - self.nodes.reshape(1, -1)) / s
        kernel = np.exp(-0.5 * z**2) / (s * math.sqrt(2 * math.pi))
        return kernel @ self.weights.reshape(-1) / self.nodes.shape[0]

    def moment(self, power: int) -> float:
        """SLQ estimate of (1/n) tr(H^power)."""
        return float((self.weights * self.nodes**power).sum(axis=1).mean())

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.update(grid=self.grid.tolist(), values=self.values.tolist())
        return out


def hessian_density(
    model: ModelOrOperator,
    x: torch.Tensor | np.ndarray | None = None,
    y: torch.Tensor | np.ndarray | None = None,
    loss_fn: LossFn | None = None,
    *,
    n_probes: int = 10,
    n_iter: int = 80,
    sigma: float | None = None,
    grid_size: int = 400,
    seed: int = 0,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    labels: LabelConvention | None = None,
    hvp_method: HvpMethod | None = None,
    progress: bool = False,
) -> HessianDensity:
    """Eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al. 2019).

    Each of `n_probes` Gaussian probes (normalized) runs `n_iter` Lanczos steps with full
    reorthogonalization. `sigma` (default: 1% of the Ritz-value range) broadens each node; the
    grid spans the Ritz values +- 5 sigma.

    Args:
        model: The network (its trainable parameters are w; it is not modified),
            or a FunctionalLoss built once for several measures (then x, y, loss_fn,
            device, chunk_size, labels and hvp_method are its own and stay unset).
        x: Training inputs, shape (n, ...).
        y: Training labels, shape (n,): in {0, 1} (or {-1, +1} with labels='pm1') for one
            logit, class labels 0..K-1 for K outputs.
        loss_fn: Loss of (logits, y), mean over examples (default: binary or K-class
            cross-entropy by the output count, see FunctionalLoss).
        n_probes: Number of Gaussian probe vectors.
        n_iter: Lanczos steps per probe.
        sigma: Gaussian broadening of each node (default: 1% of the Ritz-value range).
        grid_size: Number of grid points the density is evaluated on.
        seed: Seed of the probes.
        device: Device to compute on (default: the model's).
        chunk_size: Examples per forward/backward pass (default: all at once).
        labels: Label convention of one-logit labels: '01' (None: the default) or 'pm1'.
        hvp_method: How Hessian-vector products are computed: 'double-backward' (None: the
            default) or 'forward-over-reverse'.
        progress: Whether to show a progress bar.

    Returns:
        The HessianDensity (Ritz nodes and weights per probe, and the broadened density on a grid).

    Raises:
        SpecError: If an argument is invalid (e.g. a non-positive size, or labels outside the
            chosen convention).
    """
    if n_probes < 1 or n_iter < 1 or grid_size < 2:
        raise SpecError(f"need n_probes >= 1, n_iter >= 1, grid_size >= 2; got {n_probes}, "
                        f"{n_iter}, {grid_size}")
    if sigma is not None and not sigma > 0:
        raise SpecError(f"sigma must be positive, got {sigma}")
    clock = Stopwatch()
    with loss_operator(model, x, y, loss_fn, device=device, chunk_size=chunk_size,
                       labels=labels, hvp_method=hvp_method) as fl:
        matvec, count = counting_hvp(fl)
        generator = torch.Generator().manual_seed(seed)
        m = min(n_iter, fl.n_params)
        nodes = np.zeros((n_probes, m))
        weights = np.zeros((n_probes, m))
        with ProgressBar("SLQ", total=n_probes * m, enabled=progress, leave=False) as bar:
            for i in range(n_probes):
                start = torch.randn(fl.n_params, generator=generator, dtype=fl.dtype)
                lanczos = Lanczos(matvec, start.to(fl.device, fl.dtype), m)
                while lanczos.step():
                    bar.advance()
                bar.advance()
                theta, vecs = lanczos.ritz()
                # a breakdown leaves fewer nodes: pad with zero-weight copies of the last node
                nodes[i, : len(theta)], nodes[i, len(theta):] = theta, theta[-1]
                weights[i, : len(theta)] = vecs[0] ** 2
        lo, hi = float(nodes.min()), float(nodes.max())
        width = sigma if sigma is not None else max(0.01 * (hi - lo), 1e-12 * max(abs(hi), 1.0))
        grid = np.linspace(lo - 5 * width, hi + 5 * width, grid_size)
        result = HessianDensity(grid=grid, values=np.zeros(0), sigma=width, nodes=nodes,
                                weights=weights, n_probes=n_probes, n_iter=m,
                                n_hvp=count[0], n_params=fl.n_params, seconds=0.0)
        values = result.density(grid)
        object.__setattr__(result, "values", values)
        object.__setattr__(result, "seconds", clock.seconds)
        return result
