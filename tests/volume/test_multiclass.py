"""The K-class volume: the expanded reference, structured EP, and both against direct sampling."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from flatvol.data import load_task
from flatvol.errors import VolumeError
from flatvol.volume import arccos_kernel, log_volume
from flatvol.volume.ep.multiclass import SMALL_SITE, difference_posterior, run_multiclass_ep
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


def test_structured_posterior_with_weak_and_absent_sites_is_the_dense_posterior():
    # Sites with a_i K_ii < SMALL_SITE (here 0 and 1e-9) take G_c's rows from the direct
    # formula, where (1 - [B^-1]_ii) / a_i would lose ~eps / (a_i K_ii) to cancellation or
    # divide 0 by 0; n = 40 spans three row chunks of the chunked products.
    rng = np.random.default_rng(5)
    n, n_classes = 40, 3
    K = kernel(n, seed=2)
    f = rng.integers(0, n_classes, n)
    tau = rng.uniform(0.05, 5.0, (n, n_classes))
    weak = rng.random((n, n_classes)) < 0.2
    tau[weak] = rng.choice([0.0, 1e-9], size=int(weak.sum()))
    assert np.any(tau[weak] * np.diag(K)[np.nonzero(weak)[0]] < SMALL_SITE)
    nu = rng.normal(size=(n, n_classes)) * (tau > 0)
    tau[np.arange(n), f] = 0.0
    nu[np.arange(n), f] = 0.0
    post = difference_posterior(K, f, tau, nu)
    C = difference_covariance(K, f, n_classes)
    points, classes = difference_index(f, n_classes)
    T, V = tau[points, classes], nu[points, classes]
    # Sigma = (C^-1 + T)^-1 = C - C T^1/2 (I + T^1/2 C T^1/2)^-1 T^1/2 C: no inverse of C
    root = np.sqrt(T)
    B = np.eye(T.size) + root[:, None] * C * root[None, :]
    Sigma = C - (C * root[None, :]) @ np.linalg.solve(B, root[:, None] * C)
    np.testing.assert_allclose(post.var[points, classes], np.diag(Sigma), rtol=1e-9)
    np.testing.assert_allclose(post.mean[points, classes], Sigma @ V, rtol=1e-8, atol=1e-10)
    assert post.logdet == pytest.approx(np.linalg.slogdet(B)[1], rel=1e-11)


def test_structured_posterior_never_holds_a_stack_of_class_matrices():
    # Streamed (cache_bytes=0, the path of n = 7000 at K = 10), the posterior holds at most
    # about 7 n x n float64 at once (G_c, the three capacitance blocks, the own class's rows
    # of R twice, then C^-1's four blocks and H) plus row chunks of at most n^2 / 8 and
    # about 20 (n, K) arrays, whatever K (measured: 9 n^2 at n = 300, K = 10; 12 n^2 here,
    # where the (n, K) arrays weigh 3 n^2); the bound 10 n^2 + 30 K n (16 n^2 here) leaves
    # room for LAPACK's copies. A (K, n, n) stack at K = 20 alone is 20 n^2 (the previous
    # version held 3 K n^2 = 60 n^2). With the default cache the K matrices G_c are the only
    # addition, and both paths give the same numbers.
    rng = np.random.default_rng(7)
    n, n_classes = 96, 20
    K = kernel(n, seed=3)
    f = rng.integers(0, n_classes, n)
    tau = rng.uniform(0.05, 5.0, (n, n_classes))
    nu = rng.normal(size=(n, n_classes))
    tau[np.arange(n), f] = 0.0
    nu[np.arange(n), f] = 0.0
    peaks = {}
    posts = {}
    for cache_bytes in (0, 1 << 30):
        tracemalloc.start()
        try:
            posts[cache_bytes] = difference_posterior(K, f, tau, nu, cache_bytes=cache_bytes)
            peaks[cache_bytes] = tracemalloc.get_traced_memory()[1] / (8 * n * n)
        finally:
            tracemalloc.stop()
    bound = 10 + 30 * n_classes / n  # in n^2 float64
    assert peaks[0] < bound, peaks
    assert peaks[1 << 30] < bound + n_classes, peaks
    for field in ("mean", "var"):
        np.testing.assert_array_equal(getattr(posts[0], field), getattr(posts[1 << 30], field))
    assert posts[0].logdet == posts[1 << 30].logdet


def test_streamed_structured_ep_reaches_the_expanded_fixed_point_on_a_network_like_labelling():
    # MNIST digits, 10 classes, true labels with 10% changed to another class (what a trained
    # network's labels on S u E look like), every class matrix recomputed in the second pass
    # (cache_bytes=0): the expanded ep-orthant's value to 1e-6 log10, as for the small
    # Gaussian kernels below (both at tol 1e-5: O(n tol^2) in log Z_EP).
    n, n_classes = 80, 10
    task = load_task("mnist", n, 0, 0, classes="all")
    K = arccos_kernel(task.x_SE(), n_hidden=2, sigma_w2=2.0, sigma_b2=1.0)
    f = task.y_SE().numpy().astype(np.int64)
    rng = np.random.default_rng(0)
    changed = rng.random(n) < 0.1
    f[changed] = (f[changed] + rng.integers(1, n_classes, int(changed.sum()))) % n_classes
    fit = run_multiclass_ep(K, f, n_classes, tol=1e-5, cache_bytes=0)
    expanded = log10_volume_expanded(K, f, n_classes, "ep-orthant", tol=1e-5)
    assert fit.converged and expanded.converged, fit.message
    assert fit.log_marginal_likelihood / math.log(10) == pytest.approx(expanded.log10_volume,
                                                                        abs=1e-6)


def test_warm_start_from_a_neighbour_reaches_the_cold_fixed_point():
    # A neighbour's sites (labels changed on 6 of 60 points: those points start without
    # sites) start EP nearer its fixed point; the fixed point is the cold start's, to the
    # tolerance (tol 1e-5: O(n tol^2) in log Z_EP). Started from its own final sites, EP stops
    # at the second sweep (the first one only measures how far the posterior moves), so the
    # warm start is used, not rebuilt from the prior; unusable sites start cold, sites of
    # another shape are refused.
    n, n_classes = 60, 5
    K = kernel(n, seed=4, depth=2)
    rng = np.random.default_rng(11)
    neighbour = rng.integers(0, n_classes, n)
    f = neighbour.copy()
    changed = rng.choice(n, 6, replace=False)
    f[changed] = (f[changed] + rng.integers(1, n_classes, 6)) % n_classes
    start = run_multiclass_ep(K, neighbour, n_classes, tol=1e-5)
    cold = run_multiclass_ep(K, f, n_classes, tol=1e-5)
    warm = run_multiclass_ep(K, f, n_classes, tol=1e-5,
                             init_sites=(start.site_precision, start.site_natural_mean))
    assert start.converged and cold.converged and warm.converged, warm.message
    assert warm.log_marginal_likelihood == pytest.approx(cold.log_marginal_likelihood,
                                                         abs=1e-6 * math.log(10))
    again = run_multiclass_ep(K, f, n_classes, tol=1e-5,
                              init_sites=(warm.site_precision, warm.site_natural_mean))
    assert again.converged and again.iterations <= 2 < cold.iterations
    assert again.log_marginal_likelihood == pytest.approx(warm.log_marginal_likelihood,
                                                          abs=1e-6 * math.log(10))
    overflowing = np.full((n, n_classes), 1e300)
    overflowing[np.arange(n), f] = 0.0
    restarted = run_multiclass_ep(K, f, n_classes, tol=1e-5,
                                  init_sites=(overflowing, np.zeros((n, n_classes))))
    assert restarted.converged
    assert restarted.log_marginal_likelihood == pytest.approx(cold.log_marginal_likelihood,
                                                              abs=1e-6 * math.log(10))
    with pytest.raises(ValueError, match=r"init_sites: expected two \(60, 5\) arrays"):
        run_multiclass_ep(K, f, n_classes, init_sites=(np.zeros((n, 4)), np.zeros((n, 4))))


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
