"""The analytic NNGP kernel of a ReLU FCN: the arccos recursion (Cho & Saul), exact.

The prior covariance of the network's output (the readout pre-activation) over inputs, for
weights ~ N(0, sigma_w2 / fan_in) and biases ~ N(0, sigma_b2) (flatvol.models.Prior). It is the
kernel kind 'analytic' of flatvol.volume.kernels, which `prior_kernel` chooses for a flatvol FCN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from flatvol.errors import VolumeError
from flatvol.models import FCN, Prior
from flatvol.volume._numerics import to_numpy


def _flat_inputs(x: Any) -> np.ndarray:
    array = to_numpy(x)
    if array.ndim < 1 or array.shape[0] == 0:
        raise VolumeError(f"inputs: expected a non-empty batch (n, ...), got shape {array.shape}")
    array = np.asarray(array, dtype=np.float64).reshape(array.shape[0], -1)
    if not np.all(np.isfinite(array)):
        raise VolumeError("inputs: contain non-finite values")
    return array


def _gram_into(out: np.ndarray, x: np.ndarray) -> None:
    """out[:] = x @ x.T in float64: one matrix product on one thread, so the kernel depends on
    neither the thread count (numpy's BLAS sums in a thread-count-dependent order: V(f) moved
    by ~1e-12 between OMP_NUM_THREADS settings) nor the row blocks of the arccos steps (a
    product's rounding depends on its shape)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        xt = torch.from_numpy(x)
        torch.mm(xt, xt.T, out=torch.from_numpy(out))
    finally:
        torch.set_num_threads(threads)


def _relu_step(
    k12: np.ndarray, k11: np.ndarray, k22: np.ndarray, sigma_w2: float, sigma_b2: float
) -> np.ndarray:
    """sigma_b2 + sigma_w2 E[relu(u) relu(v)] for (u, v) ~ N(0, [[k11, k12], [k12, k22]])."""
    norms = np.sqrt(k11 * k22)
    cos = np.clip(k12 / norms, -1.0, 1.0)
    theta = np.arccos(cos)
    j = np.sin(theta) + (math.pi - theta) * cos
    return sigma_b2 + sigma_w2 / (2.0 * math.pi) * norms * j


def arccos_kernel(
    x: Any,
    n_hidden: int,
    sigma_w2: float = 2.0,
    sigma_b2: float = 1.0,
    *,
    chunk_size: int = 1024,
) -> np.ndarray:
    """Analytic NNGP kernel of a ReLU FCN with `n_hidden` hidden layers, float64 (n, n).

    K0 = sigma_b2 + sigma_w2 x.x'/d on flattened inputs (d features), then one arccos(1) ReLU
    step per hidden layer:  K <- sigma_b2 + sigma_w2/(2 pi) sqrt(k k') (sin t + (pi - t) cos t),
    t = arccos(K / sqrt(k k')). The steps run in row blocks of the output, so memory is the
    output plus O(chunk n).

    Args:
        x: Inputs, shape (n, ...); flattened to (n, d) features.
        n_hidden: Number of hidden ReLU layers.
        sigma_w2: Prior weight variance (times fan-in).
        sigma_b2: Prior bias variance.
        chunk_size: Rows computed per block.

    Returns:
        The kernel matrix, float64 of shape (n, n).

    Raises:
        VolumeError: If the inputs or the prior variances are invalid.
    """
    if n_hidden < 0:
        raise VolumeError(f"n_hidden must be >= 0, got {n_hidden}")
    Prior(sigma_w2, sigma_b2)  # same validation as the model prior
    X = _flat_inputs(x)
    n, d = X.shape
    # Diagonal recursion first: every block needs k(x, x) of its rows and columns.
    diags = [sigma_b2 + sigma_w2 * np.einsum("ij,ij->i", X, X) / d]
    for _ in range(n_hidden):
        diags.append(sigma_b2 + 0.5 * sigma_w2 * diags[-1])
    K = np.empty((n, n))
    _gram_into(K, X)  # x.x', then each row block in place
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        block = sigma_b2 + sigma_w2 * K[start:stop] / d
        for layer in range(n_hidden):
            dg = diags[layer]
            block = _relu_step(block, dg[start:stop, None], dg[None, :], sigma_w2, sigma_b2)
        K[start:stop] = block
    K[np.diag_indices(n)] = diags[-1]  # exact diagonal (arccos(1) may round away from 0)
    return 0.5 * (K + K.T)


def fcn_kernel(model: nn.Module, x: Any, *, chunk_size: int = 1024) -> np.ndarray:
    """Analytic NNGP kernel of a flatvol FCN (its depth and prior), on inputs x.

    Args:
        model: A flatvol FCN built by build_model, carrying its depth and `model.prior`.
        x: Inputs, shape (n, ...).
        chunk_size: Rows computed per block.

    Returns:
        The analytic NNGP kernel, float64 of shape (n, n).

    Raises:
        VolumeError: If `model` is not an FCN with a supported prior.
    """
    if not isinstance(model, FCN):
        raise VolumeError(
            f"analytic kernel needs a flatvol FCN, got {type(model).__name__}; use kind 'mc'"
        )
    prior: Prior = model.prior
    X = _flat_inputs(x)
    if X.shape[1] != model.in_dim:
        raise VolumeError(f"inputs: FCN expects {model.in_dim} features, got {X.shape[1]}")
    return arccos_kernel(X, len(model.hidden), prior.sigma_w2, prior.sigma_b2,
                         chunk_size=chunk_size)
