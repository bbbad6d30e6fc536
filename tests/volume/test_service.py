"""The volume service: one factorization for V(f), V(S), V(f|S), point marginals and the bound;
kernel selection in one function."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from flatvol.errors import VolumeError
from flatvol.models import Prior, build_model
from flatvol.volume import (
    KernelRequest,
    VolumeEstimator,
    VolumeService,
    arccos_kernel,
    fcn_kernel,
    mc_nngp_kernel,
    pac_bayes_bound,
    prior_kernel,
    select_kernel,
)


@pytest.fixture(scope="module")
def kernel():
    x = torch.randn(24, 6, generator=torch.Generator().manual_seed(3))
    return arccos_kernel(x, 2)


def refactorized_point_marginals(K, y_S, estimator="ep-orthant"):
    """The former sgd_vs_bayes.point_marginals: a fresh estimator (and factorization) per point."""
    n_S = len(y_S)
    train = VolumeEstimator(K[:n_S, :n_S]).log_volume(y_S, estimator)
    out = []
    for j in range(n_S, K.shape[0]):
        rows = np.r_[np.arange(n_S), j]
        res = VolumeEstimator(K[np.ix_(rows, rows)]).log_volume(np.r_[y_S, 1.0], estimator)
        out.append(10 ** (res.log10_volume - train.log10_volume))
    return np.clip(out, 0.0, 1.0)


@pytest.mark.parametrize("estimator", ["ep-orthant", "ep-probit"])
def test_point_marginals_equal_the_per_point_refactorized_result(kernel, estimator):
    y_S = (np.arange(16) % 3 == 0).astype(float)
    got = VolumeService(kernel).point_marginals(y_S, estimator)
    expected = refactorized_point_marginals(kernel, y_S, estimator)
    assert got.shape == (8,)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_point_factor_is_read_off_the_full_factor(kernel):
    est = VolumeEstimator(kernel)
    for j in (10, 17, 23):
        sub = est.with_point(10, j)
        rows = np.r_[np.arange(10), j]
        np.testing.assert_allclose(sub.kernel, kernel[np.ix_(rows, rows)])
        np.testing.assert_allclose(sub.chol, scipy.linalg.cholesky(sub.kernel, lower=True),
                                   rtol=1e-10, atol=1e-12)
    with pytest.raises(VolumeError):
        est.with_point(10, 5)


def test_conditional_and_bound_from_one_factorization(kernel, monkeypatch):
    y = (np.arange(24) % 2).astype(float)
    service = VolumeService(kernel)
    cond = service.conditional(y, 16)
    alone = VolumeEstimator(kernel[:16, :16]).log_volume(y[:16])
    assert cond.train.log10_volume == pytest.approx(alone.log10_volume, rel=1e-10)
    assert cond.log10_volume_conditional == cond.full.log10_volume - cond.train.log10_volume
    assert cond.pac_bayes_bound == pytest.approx(
        pac_bayes_bound(min(cond.train.log_marginal_likelihood_nats, 0.0), 16))
    # a second label vector with the same labels on S reuses V(y_S): no new estimate on S
    calls = []
    real = VolumeEstimator.log_volume
    monkeypatch.setattr(VolumeEstimator, "log_volume",
                        lambda self, *a, **k: calls.append(self.n) or real(self, *a, **k))
    other = y.copy()
    other[20] = 1 - other[20]
    again = service.conditional(other, 16)
    assert calls == [24] and again.train is cond.train
    assert service.log_volume(y) is cond.full and calls == [24]  # cached by labels
    # {0,1} and {-1,+1} labels are the same function
    assert service.log_volume(2 * y - 1) is cond.full
    with pytest.raises(VolumeError, match="n_train"):
        service.conditional(y, 25)


def test_kernel_selection_analytic_mc_and_errors():
    x = torch.randn(10, 5, generator=torch.Generator().manual_seed(0))
    prior = Prior(2.0, 0.5)
    fcn = build_model("fcn:7,7", (5,), prior, seed=0)
    analytic = prior_kernel(fcn, x)
    assert analytic.kind == "analytic" and analytic.description() == "analytic"
    np.testing.assert_array_equal(analytic.matrix, fcn_kernel(fcn, x))
    assert analytic.matrix.flags.c_contiguous and analytic.info["n"] == 10
    mc = prior_kernel(fcn, x, KernelRequest("mc", samples=5, seed=2), progress=False)
    reference = mc_nngp_kernel(build_model("fcn:7,7", (5,), prior, seed=2), x, 5, seed=2,
                               progress=False)
    np.testing.assert_array_equal(mc.matrix, reference.kernel)
    assert mc.info["mc_samples"] == 5 and mc.description() == "mc (5 samples)"
    cnn = build_model("cnn:2,2", (1, 4, 4), seed=0)
    images = torch.randn(6, 1, 4, 4)
    assert select_kernel(cnn, images, mc_samples=3, progress=False).kind == "mc"
    with pytest.raises(VolumeError, match="'analytic' needs an fcn model"):
        select_kernel(cnn, images, "analytic")
    with pytest.raises(VolumeError, match="kernel must be one of"):
        select_kernel(fcn, x, "exact")  # type: ignore[arg-type]
