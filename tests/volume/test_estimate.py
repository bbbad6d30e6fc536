"""VolumeEstimator: registry, reuse across labels, jitter, conditional volume, trained models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flatvol.data.task import Split, TaskData
from flatvol.errors import VolumeError
from flatvol.models import build_model, labels_of
from flatvol.volume import (
    ESTIMATORS,
    VolumeEstimator,
    VolumeService,
    arccos_kernel,
    expectation_propagation,
    laplace_approximation,
    log_volume,
    pac_bayes_bound,
    volume_of_model,
)


def make_task(n_train: int, n_test: int, shape: tuple[int, ...], seed: int = 0) -> TaskData:
    g = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        x = torch.randn(n, *shape, generator=g)
        return Split(x, (x.flatten(1)[:, 0] > 0).float(), np.arange(n))

    return TaskData("synthetic", "x0>0", seed, split(n_train), split(0), split(n_test))


@pytest.fixture(scope="module")
def kernel() -> np.ndarray:
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    return arccos_kernel(x, 2)


def test_registry_names_and_default():
    assert list(ESTIMATORS) == ["ep-orthant", "orthant-is", "ep-probit", "laplace"]
    with pytest.raises(VolumeError, match="unknown estimator 'gpy'"):
        log_volume([0, 1], np.eye(2), "gpy")


def test_each_estimator_returns_a_typed_result(kernel):
    y = (np.arange(30) % 3 == 0).astype(float)
    est = VolumeEstimator(kernel)
    results = {name: est.log_volume(y, name) for name in ESTIMATORS}
    for name, res in results.items():
        assert res.estimator == name and res.converged and res.n == 30
        assert res.log10_volume == pytest.approx(res.log_marginal_likelihood_nats / math.log(10))
        assert res.seconds >= 0 and res.iterations >= 1
        d = res.to_dict()
        assert {"log_marginal_likelihood_nats", "log10_volume", "estimator", "converged",
                "iterations", "seconds"} <= set(d)
    assert results["orthant-is"].stderr_log10 > 0
    assert results["ep-orthant"].stderr_log10 is None
    # same numbers as the low-level functions
    assert results["ep-probit"].log_marginal_likelihood_nats == pytest.approx(
        expectation_propagation(kernel, y).log_marginal_likelihood, rel=1e-12)
    assert results["laplace"].log_marginal_likelihood_nats == pytest.approx(
        laplace_approximation(kernel, y).log_marginal_likelihood, rel=1e-12)
    # the default is the orthant probability by step EP
    assert log_volume(y, kernel).estimator == "ep-orthant"


def test_reuse_across_label_vectors_matches_fresh_estimators(kernel):
    est = VolumeEstimator(kernel)
    rng = np.random.default_rng(0)
    for _ in range(3):
        y = rng.choice([-1, 1], 30)
        assert est.log_volume(y).log_marginal_likelihood_nats == pytest.approx(
            VolumeEstimator(kernel).log_volume(y).log_marginal_likelihood_nats, rel=1e-12)


def test_jitter_is_reported_and_limit_raises():
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    K = arccos_kernel(torch.cat([x, x]), 1)  # duplicated inputs: singular kernel
    res = VolumeEstimator(K).log_volume([0, 1, 1, 0, 0, 1, 1, 0])
    assert res.jitter > 0 and res.converged
    with pytest.raises(VolumeError, match="not positive definite"):
        VolumeEstimator(K, max_relative_jitter=1e-14)


def test_conditional_volume_uses_the_leading_block(kernel):
    y = (np.arange(30) % 2).astype(float)
    est = VolumeService(kernel)
    cond = est.conditional(y, 12, "ep-probit")
    alone = VolumeEstimator(kernel[:12, :12]).log_volume(y[:12], "ep-probit")
    assert cond.train.log_marginal_likelihood_nats == pytest.approx(
        alone.log_marginal_likelihood_nats, rel=1e-10)
    assert cond.log10_volume_conditional == pytest.approx(
        cond.full.log10_volume - cond.train.log10_volume)
    assert cond.log10_volume_conditional < 0
    assert cond.pac_bayes_bound == pytest.approx(
        pac_bayes_bound(cond.train.log_marginal_likelihood_nats, 12))
    with pytest.raises(VolumeError, match="n_train"):
        est.conditional(y, 31)


def test_volume_of_a_model_uses_its_own_predictions():
    task = make_task(20, 30, (5,))
    model = build_model("fcn:16,16", task.input_shape, seed=3)
    res = volume_of_model(model, task, "ep-orthant")
    f = labels_of(model, task.x_SE())
    K = arccos_kernel(task.x_SE(), 2)
    direct = VolumeService(K).conditional(f, 20, "ep-orthant")
    assert res.kernel_kind == "analytic"
    assert res.volume.full.log10_volume == pytest.approx(direct.full.log10_volume, rel=1e-10)
    assert res.volume.log10_volume_conditional == pytest.approx(
        direct.log10_volume_conditional, rel=1e-9)
    assert res.predicted_train_accuracy == pytest.approx(
        np.mean(f[:20] == task.S.y.numpy()))
    d = res.to_dict()
    assert d["kernel"] == "analytic" and "log10_volume_conditional" in d
    # a non-FCN model goes through the Monte-Carlo kernel of its features
    cnn_task = make_task(8, 8, (1, 4, 4))
    cnn = build_model("cnn:2,2", (1, 4, 4), seed=0)
    res = volume_of_model(cnn, cnn_task, "ep-probit", mc_samples=20, progress=False)
    assert res.kernel_kind == "mc" and math.isfinite(res.volume.full.log10_volume)
