"""The running posterior covariance of block EP: its Woodbury factors, its float32 correction
against a dense float64 reference, and the helpers that read and mirror its triangles."""

from __future__ import annotations

import numpy as np
import pytest

from flatvol.volume.ep.posterior import (
    RunningCovariance,
    mirror_lower,
    sign_blocks,
    split_factor,
)


def spd(n: int, seed: int) -> np.ndarray:
    A = np.random.default_rng(seed).standard_normal((n, n + 3))
    return A @ A.T / n + 0.5 * np.eye(n)


def woodbury_matrix(d_tau: np.ndarray, S_JJ: np.ndarray) -> np.ndarray:
    M = np.diag(d_tau) @ np.linalg.inv(np.eye(d_tau.size) + S_JJ @ np.diag(d_tau))
    return 0.5 * (M + M.T)


@pytest.mark.parametrize("signs", ["up", "down", "mixed"])
def test_split_factor_reproduces_the_woodbury_matrix(signs):
    rng = np.random.default_rng(0)
    S_JJ = spd(8, 1)
    d_tau = rng.uniform(0.1, 2.0, 8)
    if signs == "down":  # removing precision; small enough to keep Sigma positive definite
        d_tau = -0.2 * d_tau / np.linalg.eigvalsh(S_JJ).max()
    elif signs == "mixed":
        d_tau[::2] *= -0.1
    M = woodbury_matrix(d_tau, S_JJ)
    F, G = split_factor(M, d_tau, S_JJ)
    np.testing.assert_allclose(F @ F.T - G @ G.T, M, atol=1e-12)
    if signs == "up":
        assert G.shape[1] == 0
    if signs == "down":
        assert F.shape[1] == 0


def test_sign_blocks_put_rising_sites_first_each_in_order():
    heading = np.array([1.0, -1.0, 2.0, -3.0, 0.0, 5.0])
    blocks = sign_blocks(np.array([0, 1, 2, 3, 5]), heading, block=2)
    assert [b.tolist() for b in blocks] == [[0, 2], [5], [1, 3]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_frozen_covariance_with_a_correction_tracks_dense_updates(dtype):
    n = 40
    K = spd(n, 2)
    dense = K.copy()
    cov = RunningCovariance(np.array(K, order="F"), owned=True)
    rng = np.random.default_rng(3)
    for step in range(6):
        if step == 2:
            cov.freeze(dtype)  # from here on the updates go to the correction
        J = np.sort(rng.choice(n, 5, replace=False))
        W = cov.columns(J)
        np.testing.assert_allclose(W, dense[:, J], rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-6 if dtype == np.float32 else 1e-12)
        d_tau = rng.uniform(0.1, 1.0, 5)
        M = woodbury_matrix(d_tau, dense[np.ix_(J, J)])
        F, G = split_factor(M, d_tau, dense[np.ix_(J, J)])
        cov.subtract((W @ F).astype(cov.dtype), 1.0)
        dense = dense - dense[:, J] @ M @ dense[J, :]
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-11}
    np.testing.assert_allclose(cov.diagonal(), np.diag(dense), **tol)
    v = rng.normal(size=n)
    np.testing.assert_allclose(cov.matvec(v), dense @ v, **tol)
    lower = np.tril(cov.squared(None))
    np.testing.assert_allclose(lower, np.tril(dense * dense), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(cov.combined(), dense, **tol)


def test_mirror_lower_fills_the_upper_triangle_across_chunks():
    n = 1100  # more than one 512-column chunk
    a = np.asfortranarray(np.random.default_rng(4).normal(size=(n, n)))
    expected = np.tril(a) + np.tril(a, -1).T
    np.testing.assert_array_equal(mirror_lower(a), expected)
