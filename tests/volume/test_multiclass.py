"""The K-class volume: the expanded reference, structured EP, and both against direct sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flatvol.data import load_task
from flatvol.errors import VolumeError
from flatvol.volume import arccos_kernel, log_volume
from flatvol.volume.multiclass import (
    check_multiclass_inputs,
    difference_covariance,
    difference_index,
    labelling_code,
    labelling_from_code,
    log10_volume_expanded,
    log10_volume_structured,
    sample_labelling_counts,
)
from flatvol.volume.multiclass_ep import difference_posterior


def kernel(n: int, seed: int = 1, depth: int = 1) -> np.ndarray:
    """An arccos NNGP kernel of n Gaussian inputs: correlations 0.09-0.99 at depth 1."""
    x = np.random.default_rng(seed).normal(size=(n, 4))
    return arccos_kernel(x, depth, 2.0, 0.1)


def explicit_difference_covariance(K: np.ndarray, f: np.ndarray, n_classes: int) -> np.ndarray:
    """D (I_K (x) K) D^T with D written out row by row: w_(p,k) = z_(f_p)(x_p) - z_k(x_p)."""
    n = f.size
    prior = np.kron(np.eye(n_classes), K)  # z ordered class-major: index c * n + p
    rows = []
    for p in range(n):
        for k in range(n_classes):
            if k != f[p]:
                row = np.zeros(n_classes * n)
                row[f[p] * n + p] = 1.0
                row[k * n + p] = -1.0
                rows.append(row)
    D = np.array(rows)
    return D @ prior @ D.T


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_difference_covariance_is_the_covariance_of_the_class_differences(n_classes):
    K = kernel(7)
    f = np.random.default_rng(n_classes).integers(0, n_classes, 7)
    C = difference_covariance(K, f, n_classes)
    np.testing.assert_allclose(C, explicit_difference_covariance(K, f, n_classes),
                               rtol=1e-13, atol=1e-13)
    assert np.linalg.eigvalsh(C).min() > 0  # positive definite, as K is
    points, classes = difference_index(f, n_classes)
    assert np.all(classes != f[points]) and points.size == (n_classes - 1) * 7


def test_two_classes_are_the_binary_volume():
    # w_i = s_i (z_1 - z_0)(x_i): the orthant of 2 s s^T * K, the same probability as signs s
    # under K; every step of EP and of the tilted sampler is invariant to that scale and those
    # signs, so only float rounding separates the two values.
    K = kernel(9, depth=2)
    f = np.array([1, 0, 0, 1, 1, 0, 1, 1, 0])
    for estimator in ("ep-orthant", "orthant-is"):
        multi = log10_volume_expanded(K, f, 2, estimator)
        binary = log_volume(f, K, estimator)
        assert multi.converged and binary.converged
        assert multi.log10_volume == pytest.approx(binary.log10_volume, rel=1e-10, abs=1e-12)
    structured = log10_volume_structured(K, f, 2, tol=1e-5)
    binary = log_volume(f, K, "ep-orthant", tol=1e-5)
    assert structured.log10_volume == pytest.approx(binary.log10_volume, abs=1e-6)


def test_structured_posterior_is_the_dense_posterior_of_the_difference_system():
    rng = np.random.default_rng(3)
    n, n_classes = 9, 4
    K = kernel(n)
    f = rng.integers(0, n_classes, n)
    tau = rng.uniform(0.05, 5.0, (n, n_classes))
    nu = rng.normal(size=(n, n_classes))
    tau[np.arange(n), f] = 0.0
    nu[np.arange(n), f] = 0.0
    post = difference_posterior(K, f, tau, nu)
    C = difference_covariance(K, f, n_classes)
    points, classes = difference_index(f, n_classes)
    T, V = tau[points, classes], nu[points, classes]
    Sigma = np.linalg.inv(np.linalg.inv(C) + np.diag(T))
    np.testing.assert_allclose(post.var[points, classes], np.diag(Sigma), rtol=1e-10)
    np.testing.assert_allclose(post.mean[points, classes], Sigma @ V, rtol=1e-9, atol=1e-12)
    logdet = np.linalg.slogdet(np.eye(T.size) + C * T[None, :])[1]
    assert post.logdet == pytest.approx(logdet, rel=1e-12)


@pytest.mark.parametrize(("n_classes", "n"), [(3, 12), (4, 10), (10, 30)])
def test_structured_ep_has_the_expanded_ep_fixed_point(n_classes, n):
    # Same sites, same fixed point, same log Z_EP formula: both runs stop at a site change
    # below tol = 1e-5 posterior sd, where log Z_EP is off by O(n tol^2) ~ 1e-8.
    K = kernel(n, seed=n_classes, depth=2)
    f = np.random.default_rng(n).integers(0, n_classes, n)
    structured = log10_volume_structured(K, f, n_classes, tol=1e-5)
    expanded = log10_volume_expanded(K, f, n_classes, "ep-orthant", tol=1e-5)
    assert structured.converged and expanded.converged, structured.message
    assert structured.method == "structured" and expanded.method == "expanded"
    assert structured.log10_volume == pytest.approx(expanded.log10_volume, abs=1e-6)
    # a relabelling of the classes has the same volume (the K outputs are iid)
    relabelled = log10_volume_structured(K, (f + 1) % n_classes, n_classes, tol=1e-5)
    assert relabelled.log10_volume == pytest.approx(structured.log10_volume, abs=1e-6)


@pytest.mark.parametrize(("n_classes", "n"), [(5, 60)])
def test_structured_ep_does_not_stop_on_the_slow_collective_mode(n_classes, n):
    # Constant labels on MNIST images (NNGP correlations up to 0.99): hundreds of correlated
    # sites creep together, each by less than tol, while log Z_EP is still moving. Stopping on
    # the site change alone left 6e-4 log10 here (0.48 at n = 300, K = 10 without
    # Anderson mixing); with the posterior's movement in the stop rule the default tol = 1e-3
    # lands within 1e-8 of a tol = 1e-7 run of the expanded system.
    x = load_task("mnist", n, 0, 0).x_SE()
    K = arccos_kernel(x, n_hidden=2, sigma_w2=2.0, sigma_b2=1.0)
    f = np.ones(n, dtype=np.int64)
    structured = log10_volume_structured(K, f, n_classes)
    reference = log10_volume_expanded(K, f, n_classes, "ep-orthant", tol=1e-7)
    assert structured.converged and reference.converged
    assert structured.log10_volume == pytest.approx(reference.log10_volume, abs=5e-5)


@pytest.mark.parametrize(("n_classes", "n"), [(3, 10), (4, 8)])
def test_estimates_agree_with_directly_sampled_frequencies(n_classes, n):
    # 10^6 draws of K iid GPs; the 8 most frequent labellings (>= 1500 hits, se <= 0.012
    # log10). Measured errors (bench/RESULTS.md, "Multi-class volume"): orthant-is |z| <= 2.3,
    # EP 0.04-0.075 log10 low (step EP under-estimates orthant probabilities).
    K = kernel(n)
    counts = sample_labelling_counts(K, n_classes, 1_000_000, seed=0)
    for code in np.argsort(counts)[::-1][:8]:
        f = labelling_from_code(int(code), n, n_classes)
        assert labelling_code(f, n_classes) == code
        hits = int(counts[code])
        truth = math.log10(hits / 1_000_000)
        truth_se = math.sqrt((1 - hits / 1_000_000) / hits) / math.log(10)
        sampled = log10_volume_expanded(K, f, n_classes, "orthant-is", seed=int(code) % 1000)
        assert sampled.converged and sampled.stderr_log10 < 0.02
        z = (sampled.log10_volume - truth) / math.hypot(sampled.stderr_log10, truth_se)
        assert abs(z) < 4.0, (f, z)
        ep = log10_volume_structured(K, f, n_classes)
        assert ep.converged
        assert -0.12 < ep.log10_volume - truth < 3 * truth_se, (f, ep.log10_volume - truth)


def test_direct_sampling_counts_are_the_argmax_frequencies():
    # Two points with correlation 0 (K = I): the labellings are independent and uniform, each
    # 1/K^2; one point with three classes: 1/3 each.
    counts = sample_labelling_counts(np.eye(2), 3, 90_000, seed=0, chunk=7_000)
    assert counts.sum() == 90_000
    assert np.all(np.abs(counts / 90_000 - 1 / 9) < 5 * math.sqrt(1 / 9 * 8 / 9 / 90_000))
    # fully correlated points (K = all ones plus a nugget) share their argmax
    K = np.ones((3, 3)) + 1e-12 * np.eye(3)
    counts = sample_labelling_counts(K, 4, 10_000, seed=1)
    constant = [labelling_code(np.full(3, c), 4) for c in range(4)]
    assert counts[constant].sum() == 10_000


@pytest.mark.parametrize(
    ("labels", "n_classes", "size", "expected"),
    [
        ([0, 1, 3], 3, 3, "labels: expected classes in 0..2, got labels[2]=3"),
        ([0, -1, 2], None, 3, "labels: expected classes in 0..2, got labels[1]=-1"),
        ([0, 1.5, 2], 3, 3, "labels: expected integer class labels, got labels[1]=1.5"),
        ([0, 1, np.nan], 3, 3, "labels: expected integer class labels, got labels[2]=nan"),
        ([0, 1, 0], 1, 3, "n_classes: expected at least 2 classes, got 1"),
        ([0, 1, 0], 2.0, 3, "n_classes: expected an integer >= 2, got 2.0"),
        ([0, 0, 0], None, 3, "n_classes: labels use class 0 only (3 labels)"),
        ([0, 1, 2], 3, 4, "kernel: expected (3, 3) for 3 labels, got shape (4, 4)"),
        ([[0, 1], [1, 0]], 2, 2, "labels: expected a non-empty vector of class labels"),
        (["a", "b"], 2, 2, "labels: expected integer class labels, got dtype <U1"),
    ],
)
def test_bad_input_is_one_line_volume_error(labels, n_classes, size, expected):
    K = kernel(size)
    for call in (
        lambda: check_multiclass_inputs(K, labels, n_classes),
        lambda: difference_covariance(K, labels, n_classes),
        lambda: log10_volume_expanded(K, labels, n_classes),
        lambda: log10_volume_structured(K, labels, n_classes),
    ):
        with pytest.raises(VolumeError) as info:
            call()
        message = str(info.value)
        assert expected in message and "\n" not in message


def test_bad_kernel_and_options_are_one_line_volume_errors():
    K = kernel(3)
    K[0, 1] = np.inf
    with pytest.raises(VolumeError, match="non-finite"):
        log10_volume_structured(K, [0, 1, 2], 3)
    with pytest.raises(VolumeError, match="unknown estimator 'nope'"):
        log10_volume_expanded(kernel(3), [0, 1, 2], 3, "nope")
    with pytest.raises(VolumeError, match="tol: expected a positive number, got 0"):
        log10_volume_structured(kernel(3), [0, 1, 2], 3, tol=0)
    with pytest.raises(VolumeError, match="too many to count"):
        sample_labelling_counts(kernel(30), 10, 10, seed=0)
    # a singular kernel is refused by the sampler (its truth would depend on a jitter)
    with pytest.raises(VolumeError, match="not positive definite"):
        sample_labelling_counts(np.ones((3, 3)), 3, 10, seed=0)
