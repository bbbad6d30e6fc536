"""The Hessian of the training loss, from Hessian-vector products only.

HVPs are taken on the full data, summed over chunks (`_functional.FunctionalLoss.hvp`); the
default `hvp_method='double-backward'` differentiates <grad L(w), v> again with
torch.autograd, and 'forward-over-reverse' (`torch.func.jvp` of `torch.func.grad`) is the
alternative. On top of them, with the matrix-free estimators of flatvol.flatness.estimators:

- top-k (or bottom-k) eigenvalues by Lanczos with full reorthogonalization, stopped when the
  Ritz residuals |beta_m s_mi| fall below tol * ||T_m|| (Golub & Van Loan, Matrix
  Computations, ch. 10); the tridiagonal problem is solved by scipy.linalg.eigh_tridiagonal;
- the trace by Hutchinson (1989) with Rademacher probes and by Hutch++ (Meyer, Musco, Musco &
  Woodruff, SOSA 2021);
- the Frobenius norm, ||H||_F^2 = tr(H^2) = E ||H v||^2, by Hutchinson or Hutch++ on H^2;
- the eigenvalue density by stochastic Lanczos quadrature: flatvol.flatness.hessian_density.

Every random draw comes from a torch.Generator seeded by `seed` on the CPU, so results are
reproducible and the same on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from flatvol.errors import SpecError
from flatvol.flatness._functional import (
    FunctionalLoss,
    HvpMethod,
    LossFn,
    ModelOrOperator,
    loss_operator,
)
from flatvol.flatness._inputs import LabelConvention
from flatvol.flatness._results import ResultMixin, Stopwatch
from flatvol.flatness.estimators import Lanczos, MatVec, TraceEstimate, hutchinson, hutchpp
from flatvol.progress import ProgressBar

TraceMethod = Literal["hutchpp", "hutchinson"]


def counting_hvp(fl: FunctionalLoss) -> tuple[MatVec, list[int]]:
    count = [0]

    def matvec(v: torch.Tensor) -> torch.Tensor:
        count[0] += 1
        return fl.hvp(fl.w0, v)

    return matvec, count


def hessian_vector_product(
    model: ModelOrOperator,
    x: torch.Tensor | np.ndarray | None = None,
    y: torch.Tensor | np.ndarray | None = None,
    v: torch.Tensor | None = None,
    loss_fn: LossFn | None = None,
    *,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    labels: LabelConvention | None = None,
    hvp_method: HvpMethod | None = None,
) -> torch.Tensor:
    """H v for a flat vector v ordered like `model.named_parameters()` (trainable ones).

    Args:
        model: The network (its trainable parameters are w; it is not modified),
            or a FunctionalLoss built once for several measures (then x, y, loss_fn,
            device, chunk_size, labels and hvp_method are its own and stay unset).
        x: Training inputs, shape (n, ...).
        y: Training labels, shape (n,): in {0, 1} (or {-1, +1} with labels='pm1') for one
            logit, class labels 0..K-1 for K outputs.
        v: Flat vector of length p, ordered like model.named_parameters() (trainable ones).
        loss_fn: Loss of (logits, y), mean over examples (default: binary or K-class
            cross-entropy by the output count, see FunctionalLoss).
        device: Device to compute on (default: the model's).
        chunk_size: Examples per forward/backward pass (default: all at once).
        labels: Label convention of one-logit labels: '01' (None: the default) or 'pm1'.
        hvp_method: How Hessian-vector products are computed: 'double-backward' (None: the
            default) or 'forward-over-reverse'.

    Returns:
        The product H v, a flat vector of length p.

    Raises:
        SpecError: If v has the wrong length, or another argument is invalid.
    """
    if v is None:
        raise SpecError("v: hessian_vector_product needs the vector v (a flat vector of the "
                        "trainable parameters)")
    with loss_operator(model, x, y, loss_fn, device=device, chunk_size=chunk_size,
                       labels=labels, hvp_method=hvp_method) as fl:
        if v.shape != fl.w0.shape:
            raise SpecError(f"v must be a flat vector of {fl.n_params} entries, got shape "
                            f"{tuple(v.shape)}")
        return fl.hvp(fl.w0, v.to(fl.device, fl.dtype))


def hessian_matrix(
    model: ModelOrOperator,
    x: torch.Tensor | np.ndarray | None = None,
    y: torch.Tensor | np.ndarray | None = None,
    loss_fn: LossFn | None = None,
    *,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    labels: LabelConvention | None = None,
    max_params: int = 10_000,
) -> torch.Tensor:
    """The exact dense Hessian (torch.func.hessian), for small models only (<= max_params).

    Args:
        model: The network (its trainable parameters are w; it is not modified),
            or a FunctionalLoss built once for several measures (then x, y, loss_fn,
            device, chunk_size, labels and hvp_method are its own and stay unset).
        x: Training inputs, shape (n, ...).
        y: Training labels, shape (n,): in {0, 1} (or {-1, +1} with labels='pm1') for one
            logit, class labels 0..K-1 for K outputs.
        loss_fn: Loss of (logits, y), mean over examples (default: binary or K-class
            cross-entropy by the output count, see FunctionalLoss).
        device: Device to compute on (default: the model's).
        chunk_size: Examples per forward/backward pass (default: all at once).
        labels: Label convention of one-logit labels: '01' (None: the default) or 'pm1'.
        max_params: Largest number of trainable parameters accepted.

    Returns:
        The Hessian of the loss, shape (p, p) for the p trainable parameters.

    Raises:
        SpecError: If the model has more than max_params trainable parameters, or an argument is
            invalid.
    """
    with loss_operator(model, x, y, loss_fn, device=device, chunk_size=chunk_size,
                       labels=labels) as fl:
        if fl.n_params > max_params:
            raise SpecError(f"exact Hessian of {fl.n_params} parameters is too large "
                            f"(max_params={max_params}); use the iterative estimates")
        return torch.func.hessian(fl.loss)(fl.w0)


@dataclass(frozen=True)
class HessianEigenvalues(ResultMixin):
    """Extreme Hessian eigenvalues (descending for 'largest', ascending for 'smallest')."""

    eigenvalues: list[float]
    residuals: list[float]
    converged: bool
    which: str
    n_iter: int
    n_hvp: int
    n_params: int
    seconds: float
    eigenvectors: torch.Tensor = field(repr=False, compare=False)  # n_params x k, columns


def hessian_top_eigenvalues(
    model: ModelOrOperator,
    x: torch.Tensor | np.ndarray | None = None,
    y: torch.Tensor | np.ndarray | None = None,
    loss_fn: LossFn | None = None,
    *,
    k: int = 1,
    which: Literal["largest", "smallest"] = "largest",
    max_iter: int = 100,
    tol: float = 1e-6,
    seed: int = 0,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    labels: LabelConvention | None = None,
    hvp_method: HvpMethod | None = None,
    progress: bool = False,
) -> HessianEigenvalues:
    """Top-k Hessian eigenvalues by Lanczos with full reorthogonalization.

    Stops once every wanted Ritz pair has residual ||H u - theta u|| = |beta_m s_mi| below
    tol * max|theta| (relative to the spectral norm), or after max_iter HVPs
    (`converged` says which).

    Args:
        model: the trained network, never modified; or a FunctionalLoss built once for
            several measures (then x, y, loss_fn, device, chunk_size, labels and hvp_method
            are its own and stay unset).
        x: inputs of the training set S, (n, *input_shape).
        y: labels of S (tensor or array): 0/1 for a one-logit model (or -1/+1 with
            labels='pm1'), class labels 0..K-1 for K outputs.
        loss_fn: loss(logits, y) averaged over examples; default binary cross-entropy on
            one logit, cross-entropy on K outputs (see flatvol.flatness.FunctionalLoss).
        k: number of eigenvalues.
        which: 'largest' (algebraically largest, the sharpness measure) or 'smallest'.
        max_iter: most Lanczos steps (one Hessian-vector product each).
        tol: relative residual at which a Ritz pair counts as converged.
        seed: seed of every random probe or restart (same seed, same result).
        device: torch device to compute on (default: the model's).
        chunk_size: examples per forward pass (memory bound; None: all at once).
        labels: label convention of the default loss: '01' (y in {0, 1}) or 'pm1'
            (y in {-1, +1}, mapped to {0, 1}); -1/+1 labels without it are refused.
        hvp_method: how Hessian-vector products are computed (see flatvol.flatness.HvpMethod).
        progress: show the Lanczos progress (see flatvol.progress).

    Returns:
        The HessianEigenvalues: `eigenvalues` (descending for 'largest'), their residuals,
        whether all converged, and the HVPs spent.

    Raises:
        SpecError: k, max_iter or tol out of range.
    """
    if k < 1:
        raise SpecError(f"k must be >= 1, got {k}")
    if which not in ("largest", "smallest"):
        raise SpecError(f"which must be 'largest' or 'smallest', got {which!r}")
    if max_iter < k:
        raise SpecError(f"max_iter ({max_iter}) must be >= k ({k})")
    clock = Stopwatch()
    with loss_operator(model, x, y, loss_fn, device=device, chunk_size=chunk_size,
                       labels=labels, hvp_method=hvp_method) as fl:
        if k > fl.n_params:
            raise SpecError(f"k={k} exceeds the number of parameters ({fl.n_params})")
        matvec, count = counting_hvp(fl)
        generator = torch.Generator().manual_seed(seed)
        start = torch.randn(fl.n_params, generator=generator, dtype=fl.dtype)
        lanczos = Lanczos(matvec, start.to(fl.device, fl.dtype), max_iter)
        converged = False

        def wanted() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            theta, vecs = lanczos.ritz()
            order = np.arange(len(theta))
            idx = (order[::-1] if which == "largest" else order)[:k]
            residuals = np.abs(lanczos.residual_norm * vecs[-1, idx])
            return theta, vecs, idx, residuals

        with ProgressBar("lanczos", total=lanczos.max_iter, enabled=progress, unit="steps",
                         leave=False) as bar:
            while True:
                more = lanczos.step()
                bar.advance()
                if lanczos.size >= k:
                    theta, vecs, idx, residuals = wanted()
                    if np.all(residuals <= tol * max(float(np.abs(theta).max()), 1e-300)):
                        converged = True
                        break
                if not more:
                    break
        theta, vecs, idx, residuals = wanted()
        basis = lanczos.basis[: lanczos.size]
        ritz_vectors = basis.T @ torch.as_tensor(vecs[:, idx].copy(), dtype=fl.dtype,
                                                 device=fl.device)
        return HessianEigenvalues(
            eigenvalues=[float(t) for t in theta[idx]],
            residuals=[float(r) for r in residuals],
            converged=converged,
            which=which,
            n_iter=lanczos.size,
            n_hvp=count[0],
            n_params=fl.n_params,
            seconds=clock.seconds,
            eigenvectors=ritz_vectors.cpu(),
        )


@dataclass(frozen=True)
class HessianTrace(ResultMixin):
    """tr(H) estimate and its standard error (of the stochastic part, for Hutch++)."""

    trace: float
    std_error: float
    method: str
    n_hvp: int
    n_params: int
    seconds: float


@dataclass(frozen=True)
class HessianFrobenius(ResultMixin):
    """||H||_F = sqrt(tr(H^2)); std_error refers to frobenius_norm_sq."""

    frobenius_norm: float
    frobenius_norm_sq: float
    std_error: float
    method: str
    n_hvp: int
    n_params: int
    seconds: float


def _estimate_trace(fl: FunctionalLoss, method: str, n_hvp: int, seed: int,
                    progress: bool) -> TraceEstimate:
    if method not in ("hutchpp", "hutchinson"):
        raise SpecError(f"method must be 'hutchpp' or 'hutchinson', got {method!r}")
    if n_hvp < (3 if method == "hutchpp" else 1):
        raise SpecError(f"n_hvp must be >= {3 if method == 'hutchpp' else 1} for {method}, "
                        f"got {n_hvp}")
    matvec, _ = counting_hvp(fl)
    generator = torch.Generator().manual_seed(seed)
    estimator = hutchpp if method == "hutchpp" else hutchinson
    return estimator(matvec, fl.n_params, n_hvp, generator, fl.w0, progress)


def hessian_trace(
    model: ModelOrOperator,
    x: torch.Tensor | np.ndarray | None = None,
    y: torch.Tensor | np.ndarray | None = None,
    loss_fn: LossFn | None = None,
    *,
    method: TraceMethod = "hutchpp",
    n_hvp: int = 99,
    seed: int = 0,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    labels: LabelConvention | None = None,
    hvp_method: HvpMethod | None = None,
    progress: bool = False,
) -> HessianTrace:
    """tr(H) by Hutch++ (default; Meyer et al. 2021) or Hutchinson (1989), n_hvp HVPs.

    Args:
        model: the trained network, never modified; or a FunctionalLoss built once for
            several measures (then x, y, loss_fn, device, chunk_size, labels and hvp_method
            are its own and stay unset).
        x: inputs of the training set S, (n, *input_shape).
        y: labels of S (tensor or array): 0/1 for a one-logit model (or -1/+1 with
            labels='pm1'), class labels 0..K-1 for K outputs.
        loss_fn: loss(logits, y) averaged over examples; default binary cross-entropy on
            one logit, cross-entropy on K outputs (see flatvol.flatness.FunctionalLoss).
        method: 'hutchpp' or 'hutchinson'.
        n_hvp: Hessian-vector products to spend (Hutch++ needs at least 3).
        seed: seed of every random probe or restart (same seed, same result).
        device: torch device to compute on (default: the model's).
        chunk_size: examples per forward pass (memory bound; None: all at once).
        labels: label convention of the default loss: '01' (y in {0, 1}) or 'pm1'
            (y in {-1, +1}, mapped to {0, 1}); -1/+1 labels without it are refused.
        hvp_method: how Hessian-vector products are computed (see flatvol.flatness.HvpMethod).
        progress: show the estimator's progress (see flatvol.progress).

    Returns:
        The HessianTrace: `trace`, its `std_error`, and the HVPs spent.

    Raises:
        SpecError: an unknown method or too few HVPs.
    """
    clock = Stopwatch()
    with loss_operator(model, x, y, loss_fn, device=device, chunk_size=chunk_size,
                       labels=labels, hvp_method=hvp_method) as fl:
        est = _estimate_trace(fl, method, n_hvp, seed, progress)
        return HessianTrace(est.trace, est.trace_std_error, method, est.n_matvec, fl.n_params,
                            clock.seconds)


def hessian_frobenius_norm(
    model: ModelOrOperator,
    x: torch.Tensor | np.ndarray | None = None,
    y: torch.Tensor | np.ndarray | None = None,
    loss_fn: LossFn | None = None,
    *,
    method: TraceMethod = "hutchinson",
    n_hvp: int = 100,
    seed: int = 0,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    labels: LabelConvention | None = None,
    hvp_method: HvpMethod | None = None,
    progress: bool = False,
) -> HessianFrobenius:
    """||H||_F via tr(H^2) = E||Hv||^2: Hutchinson on H^2 (default) or Hutch++ on H^2.

    Args:
        model: The network (its trainable parameters are w; it is not modified),
            or a FunctionalLoss built once for several measures (then x, y, loss_fn,
            device, chunk_size, labels and hvp_method are its own and stay unset).
        x: Training inputs, shape (n, ...).
        y: Training labels, shape (n,): in {0, 1} (or {-1, +1} with labels='pm1') for one
            logit, class labels 0..K-1 for K outputs.
        loss_fn: Loss of (logits, y), mean over examples (default: binary or K-class
            cross-entropy by the output count, see FunctionalLoss).
        method: Trace estimator: 'hutchinson' or 'hutchpp'.
        n_hvp: Budget of Hessian-vector products.
        seed: Seed of the probe vectors.
        device: Device to compute on (default: the model's).
        chunk_size: Examples per forward/backward pass (default: all at once).
        labels: Label convention of one-logit labels: '01' (None: the default) or 'pm1'.
        hvp_method: How Hessian-vector products are computed: 'double-backward' (None: the
            default) or 'forward-over-reverse'.
        progress: Whether to show a progress bar.

    Returns:
        The HessianFrobenius (the norm, its square and the standard error of the square).
    """
    clock = Stopwatch()
    with loss_operator(model, x, y, loss_fn, device=device, chunk_size=chunk_size,
                       labels=labels, hvp_method=hvp_method) as fl:
        est = _estimate_trace(fl, method, n_hvp, seed, progress)
        square = max(est.frobenius_sq, 0.0)
        return HessianFrobenius(math.sqrt(square), square, est.frobenius_sq_std_error, method,
                                est.n_matvec, fl.n_params, clock.seconds)
