"""Kendall tau-b, Spearman and Pearson correlations vectorized over leading axes (last axis =
observations), for the bootstrap of flatvol.analysis.correlations; tests check them against
scipy.stats.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

# Elements of the (batch, n, n) pairwise-sign arrays held at once by the vectorized Kendall.
KENDALL_CHUNK = 4_000_000


def pearson_r(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson r along `axis`; NaN where either side is constant.

    Args:
        x: First sample(s); pairs run along axis.
        y: Second sample(s), the same shape as x.
        axis: Axis along which the pairs run.

    Returns:
        Pearson r for each row, with axis removed (NaN where a side is constant).
    """
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    xm = x - x.mean(-1, keepdims=True)
    ym = y - y.mean(-1, keepdims=True)
    # Relative threshold: a column equal up to rounding counts as constant (as in scipy).
    sxx = (xm * xm).sum(-1)
    syy = (ym * ym).sum(-1)
    tiny_x = sxx <= (1e-13 * np.abs(x).max(-1)) ** 2 * x.shape[-1]
    tiny_y = syy <= (1e-13 * np.abs(y).max(-1)) ** 2 * y.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (xm * ym).sum(-1) / np.sqrt(sxx * syy)
    r = np.where(tiny_x | tiny_y, np.nan, r)
    return np.clip(r, -1.0, 1.0)


def spearman_rho(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman rho (Pearson of mid-ranks) along `axis`.

    Args:
        x: First sample(s); pairs run along axis.
        y: Second sample(s), the same shape as x.
        axis: Axis along which the pairs run.

    Returns:
        Spearman rho for each row, with axis removed (NaN where a side is constant).
    """
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    return pearson_r(stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1))


def kendall_tau_b(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall tau-b along `axis`: sum_{i<j} s_x s_y / sqrt(#pairs untied in x * #untied in y),
    with s = sign of the pairwise difference. Exact, O(n^2) per row, chunked over rows.

    Args:
        x: First sample(s); pairs run along axis.
        y: Second sample(s), the same shape as x.
        axis: Axis along which the pairs run.

    Returns:
        Kendall tau-b for each row, with axis removed (NaN where a side is constant).
    """
    x = np.moveaxis(np.asarray(x, dtype=float), axis, -1)
    y = np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    lead = x.shape[:-1]
    n = x.shape[-1]
    xf = x.reshape(-1, n)
    yf = y.reshape(-1, n)
    out = np.empty(xf.shape[0])
    step = max(1, KENDALL_CHUNK // max(1, n * n))
    for start in range(0, xf.shape[0], step):
        xs, ys = xf[start:start + step], yf[start:start + step]
        sx = np.sign(xs[:, :, None] - xs[:, None, :]).astype(np.int8)
        sy = np.sign(ys[:, :, None] - ys[:, None, :]).astype(np.int8)
        concord = (sx.astype(np.int32) * sy).sum((1, 2))
        untied_x = np.abs(sx).sum((1, 2), dtype=np.int64)
        untied_y = np.abs(sy).sum((1, 2), dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start:start + step] = concord / np.sqrt(untied_x.astype(float) * untied_y)
    out[~np.isfinite(out)] = np.nan
    return out.reshape(lead)


VECTORIZED = {"kendall": kendall_tau_b, "spearman": spearman_rho, "pearson": pearson_r}
