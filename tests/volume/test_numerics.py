"""Input validation, jitter escalation and the stable truncated-Gaussian terms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flatvol.errors import VolumeError
from flatvol.volume._numerics import (
    as_kernel,
    as_signed_labels,
    jittered_cholesky,
    sample_positive_truncated_normal,
    truncated_gaussian_terms,
)

mpmath = pytest.importorskip("mpmath")


@pytest.mark.parametrize("labels", [[0, 1, 1], [-1, 1, 1], [False, True, True],
                                    np.array([0.0, 1.0, 1.0], dtype=np.float32),
                                    torch.tensor([0, 1, 1])])
def test_labels_accepted(labels):
    y = as_signed_labels(labels, 3)
    assert set(y.tolist()) <= {-1.0, 1.0}
    assert y[1] == 1.0 and y[2] == 1.0


@pytest.mark.parametrize("labels", [[0, 1, 2], [-1, 0, 1], [0.5, 1, 0], [np.nan, 1, 0],
                                    ["a", "b", "c"]])
def test_labels_rejected_with_the_rule(labels):
    with pytest.raises(VolumeError, match=r"\{0,1\} or \{-1,\+1\}"):
        as_signed_labels(labels, 3)


def test_kernel_validation_messages():
    with pytest.raises(VolumeError, match="square"):
        as_kernel(np.ones((2, 3)))
    with pytest.raises(VolumeError, match="non-finite"):
        as_kernel(np.array([[1.0, np.inf], [np.inf, 1.0]]))
    with pytest.raises(VolumeError, match="symmetric"):
        as_kernel(np.array([[1.0, 0.5], [0.1, 1.0]]))
    with pytest.raises(VolumeError, match="diagonal must be positive"):
        as_kernel(np.array([[1.0, 0.0], [0.0, -1.0]]))


def test_jitter_escalates_and_is_reported_then_gives_up():
    v = np.ones(4)
    L, jitter = jittered_cholesky(np.outer(v, v))  # rank one: needs jitter
    assert 0 < jitter <= 1e-4
    K = np.outer(v, v) + jitter * np.eye(4)
    np.testing.assert_allclose(L @ L.T, K, atol=1e-12)
    _, none = jittered_cholesky(np.eye(3))
    assert none == 0.0
    with pytest.raises(VolumeError, match="not positive definite even with jitter"):
        jittered_cholesky(np.array([[1.0, 2.0], [2.0, 1.0]]))  # eigenvalue -1


def test_truncated_gaussian_terms_against_mpmath():
    mpmath.mp.dps = 50
    zs = np.array([-1e6, -1e3, -60.0, -12.0, -5.0001, -4.9999, -2.0, 0.0, 1.5, 8.0])
    log_z, r, one_minus_g = truncated_gaussian_terms(zs)
    for z, a, b, c in zip(zs, log_z, r, one_minus_g):
        Z = mpmath.ncdf(z)
        R = mpmath.npdf(z) / Z
        G = 1 - R * (z + R)
        assert float(abs(a - mpmath.log(Z))) <= 1e-14 * max(1.0, abs(float(mpmath.log(Z))))
        assert float(abs(b - R)) <= 1e-13 * float(R) + 1e-300
        assert float(abs(c - G)) <= 1e-10 * float(G)


def test_truncated_sampler_respects_the_bound_in_far_tails():
    rng = np.random.default_rng(0)
    a = np.array([-3.0, 0.0, 5.0, 40.0, 300.0])
    draws = np.stack([sample_positive_truncated_normal(a, rng)[0] for _ in range(2000)])
    assert np.all(draws >= a)
    # mean of N(0,1) truncated to (a, inf) is phi(a)/Phi(-a) ~ a + 1/a for large a
    assert abs(draws[:, 4].mean() - (300 + 1 / 300)) < 1e-3
    assert abs(draws[:, 1].mean() - np.sqrt(2 / np.pi)) < 0.05
