"""The volume service for K classes: V(f), V(f on S), V(f|S), the bound and their jackknife,
checked against direct sampling of K iid GP outputs; K = 2 is the binary code exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flatvol.errors import VolumeError
from flatvol.volume import VolumeService, arccos_kernel
from flatvol.volume.ep import run_ep
from flatvol.volume.multiclass import (
    labelling_code,
    labelling_from_code,
    log10_volume_structured,
    sample_labelling_counts,
)
from flatvol.volume.orthant import estimate_orthant
from flatvol.volume.service import bound_from_train_volume, jackknife_bias, jackknife_stderr

DRAWS = 400_000


def inputs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4))


def kernel(n: int, seed: int = 1) -> np.ndarray:
    """An arccos NNGP kernel of n Gaussian inputs (correlations 0.1-0.99)."""
    return arccos_kernel(inputs(n, seed), 1, 2.0, 0.1)


def sampled_log10(hits: int, draws: int) -> tuple[float, float]:
    """log10 of a sampled frequency and its binomial standard error in log10."""
    return math.log10(hits / draws), math.sqrt((1 - hits / draws) / hits) / math.log(10)


@pytest.mark.parametrize("labels", [np.array([0, 1, 1, 1, 0, 0, 0, 0, 0]),
                                    np.array([-1, 1, 1, 1, -1, -1, -1, -1, -1])])
def test_two_classes_through_the_service_are_the_binary_code_exactly(labels):
    # The registry's defaults are the former keyword defaults (tol 1e-3, max_iter 300, mode
    # auto; n_samples 4000, seed 0, proposal auto): the same calls, so the same bits. (On this
    # kernel and labels EP stops on tol: tol = 1e-4 moves log Z by 3e-9.)
    K = kernel(9, seed=2)
    service = VolumeService(K, n_classes=2)
    y = np.where(labels > 0, 1.0, -1.0)
    ep = run_ep(service.kernel, y, likelihood="step", tol=1e-3, max_iter=300)
    got = service.log_volume(labels, "ep-orthant")
    assert got.log_marginal_likelihood_nats == ep.log_marginal_likelihood
    assert got.n_classes == 2 and got.stderr_log10 is None
    sampled = estimate_orthant(service.kernel, y, service.factor.chol,
                               ep_fit=(ep.site_precision, ep.posterior_mean), n_samples=4000,
                               seed=0, proposal="auto")
    assert service.log_volume(labels, "orthant-is").log_marginal_likelihood_nats == \
        sampled.log_probability
    # the default service is the binary one
    assert VolumeService(K).log_volume(labels).log10_volume == got.log10_volume


@pytest.mark.parametrize(("n_classes", "n"), [(3, 6), (4, 5)])
def test_k_class_volumes_agree_with_directly_sampled_frequencies(n_classes, n):
    # DRAWS draws of K iid GPs; the 6 most frequent labellings (>= 1000 hits: se <= 0.014
    # log10). orthant-is within its error bars (|z| < 4); EP below the truth by at most
    # 0.12 log10 (bench/RESULTS.md, "Multi-class volume": -0.02..-0.09 at n <= 10; step EP
    # under-estimates orthant probabilities), above it only by sampling noise.
    K = kernel(n, seed=n_classes)
    counts = sample_labelling_counts(K, n_classes, DRAWS, seed=n)
    service = VolumeService(K, n_classes=n_classes)
    for code in np.argsort(counts)[::-1][:6]:
        f = labelling_from_code(int(code), n, n_classes)
        assert labelling_code(f, n_classes) == code
        truth, truth_se = sampled_log10(int(counts[code]), DRAWS)
        assert truth_se < 0.015
        sampled = service.log_volume(f, "orthant-is", seed=int(code) % 1000)
        assert sampled.converged and sampled.n_classes == n_classes
        assert 0 < sampled.stderr_log10 < 0.02
        z = (sampled.log10_volume - truth) / math.hypot(sampled.stderr_log10, truth_se)
        assert abs(z) < 4.0, (f, z)
        ep = service.log_volume(f, "ep-orthant")
        assert ep.converged and ep.stderr_log10 is None
        assert -0.12 < ep.log10_volume - truth < 3 * truth_se, (f, ep.log10_volume - truth)
        # the registry's K-class ep-orthant is structured EP
        assert ep.log10_volume == log10_volume_structured(K, f, n_classes).log10_volume


def test_k_class_conditional_volume_is_the_sampled_conditional_frequency():
    # V(f|S) = P(f on S u E) / P(f on S): among the draws that give f on S (the first m
    # points), the fraction that also give f on E.
    n_classes, n, m = 3, 6, 3
    K = kernel(n, seed=7)
    counts = sample_labelling_counts(K, n_classes, DRAWS, seed=1)
    codes = np.arange(counts.size)
    service = VolumeService(K, n_classes=n_classes)
    for code in np.argsort(counts)[::-1][:3]:
        f = labelling_from_code(int(code), n, n_classes)
        on_S = int(counts[codes % n_classes**m == code % n_classes**m].sum())
        truth, truth_se = sampled_log10(int(counts[code]), on_S)
        cond = service.conditional(f, m, "orthant-is", seed=3)
        assert cond.train is service.log_volume(f[:m], "orthant-is", n=m, seed=3)
        assert cond.train.n == m and cond.full.n == n
        assert cond.log10_volume_conditional == cond.full.log10_volume - cond.train.log10_volume
        se = math.hypot(cond.full.stderr_log10, cond.train.stderr_log10, truth_se)
        assert abs(cond.log10_volume_conditional - truth) < 4 * se, (f, truth)
        # the bound is the binary one's formula on V(f on S): it needs only P(f on S)
        assert cond.pac_bayes_bound == bound_from_train_volume(cond.train, m)
        assert 0 < cond.pac_bayes_bound < 1


def test_k_class_jackknife_recomputes_every_value_on_each_replicate_kernel():
    n_classes, n, m = 4, 8, 5
    x = inputs(n, 11)
    noise = np.random.default_rng(12)
    replicates = [arccos_kernel(x + 0.05 * noise.normal(size=x.shape), 1, 2.0, 0.1)
                  for _ in range(4)]
    f = np.array([0, 3, 1, 1, 2, 0, 3, 2])
    service = VolumeService(arccos_kernel(x, 1, 2.0, 0.1), n_classes=n_classes,
                            replicates=replicates)
    full = service.conditional(f, m, "ep-orthant")
    stderr, bias = full.stderr, full.bias
    each = [VolumeService(k, n_classes=n_classes).conditional(f, m, "ep-orthant")
            for k in replicates]
    values = [c.log10_volume_conditional for c in each]
    assert stderr.log10_volume_conditional == jackknife_stderr(
        full.log10_volume_conditional, values) > 0
    assert bias.log10_volume_conditional == jackknife_bias(full.log10_volume_conditional,
                                                           values)
    S_values = [c.log10_volume_S for c in each]
    assert stderr.log10_volume_S == jackknife_stderr(full.log10_volume_S, S_values)


@pytest.mark.parametrize(("make", "expected"), [
    (lambda s: s.log_volume([0, 1, 3, 0, 1, 2]), "labels: expected classes in 0..2, got "
                                                  "labels[2]=3"),
    (lambda s: s.log_volume([0, 1, 1.5, 0, 1, 2]), "labels: expected integer class labels"),
    (lambda s: s.log_volume([0, -1, 1, 0, 1, 2]), "labels[1]=-1"),
    (lambda s: s.log_volume([0, 1, 2, 0, 1]), "labels: expected 6 labels (one per kernel "
                                              "row), got 5"),
    (lambda s: s.conditional([0, 1, 2, 0, 1], 3), "expected 6 labels"),
    (lambda s: s.log_volume([0, 1, 2, 0, 1, 2], "ep-probit"),
     "estimator 'ep-probit' is binary only; for 3 classes use one of ep-orthant, orthant-is"),
    (lambda s: s.log_volume([0, 1, 2, 0, 1, 2], "laplace"), "'laplace' is binary only"),
    (lambda s: s.log_volume([0, 1, 2, 0, 1, 2], mode="blocks"),
     "mode: 3-class EP has one schedule; expected 'auto', got 'blocks'"),
    (lambda s: s.log_volume([0, 1, 2, 0, 1, 2], tol=0), "tol: expected a positive number"),
    (lambda s: s.point_marginals([0, 1, 2]), "point_marginals: binary only, got a service "
                                             "for 3 classes"),
    (lambda s: VolumeService(s.kernel, n_classes=1), "n_classes: expected an integer >= 2, "
                                                     "got 1"),
    (lambda s: VolumeService(s.kernel, n_classes=True), "n_classes: expected an integer >= 2"),
    (lambda s: VolumeService(s.kernel).log_volume([0, 1, 2, 0, 1, 2]),
     "labels must be {0,1} or {-1,+1}"),
    (lambda s: VolumeService(s.kernel, n_classes=3, reference_labels=[0, 1, 5, 0, 1, 2]),
     "labels[2]=5"),
])
def test_bad_k_class_input_is_a_one_line_volume_error(make, expected):
    service = VolumeService(kernel(6), n_classes=3)
    with pytest.raises(VolumeError) as info:
        make(service)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_k_class_estimates_are_cached_by_labels_and_completed_options():
    service = VolumeService(kernel(6), n_classes=3)
    f = np.array([0, 2, 1, 1, 0, 2])
    first = service.log_volume(f)
    assert service.log_volume(f.astype(np.float64)) is first
    assert service.log_volume(f, tol=1e-3, max_iter=300, mode="auto") is first
    assert service.log_volume(f, tol=1e-5) is not first
    # classes 0..K-1 need not all appear: the volume is of a K-class function
    two_used = service.log_volume(np.array([0, 1, 1, 0, 0, 1]))
    binary = VolumeService(kernel(6)).log_volume(np.array([0, 1, 1, 0, 0, 1]))
    assert two_used.n_classes == 3 and two_used.log10_volume < binary.log10_volume
