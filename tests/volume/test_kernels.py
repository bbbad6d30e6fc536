"""NNGP kernels: the arccos recursion against quadrature, stored ground truth and Monte Carlo."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

from flatvol.errors import VolumeError
from flatvol.models import FCN, Prior, build_model, init_from_prior_
from flatvol.volume import KernelRequest, arccos_kernel, fcn_kernel, mc_nngp_kernel, prior_kernel

SHARED_KERNEL = Path(__file__).resolve().parents[3] / "shared" / "data" / "boolean-prior" / \
    "kernel_A.npy"


def inputs(n: int = 10, d: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def relu_expectation_by_quadrature(k11: float, k12: float, k22: float) -> float:
    """E[relu(u) relu(v)], (u, v) ~ N(0, [[k11, k12], [k12, k22]]): integrate u numerically,
    using E[relu(v) | u] = m Phi(m/s) + s phi(m/s) with m = k12/k11 u, s^2 = k22 - k12^2/k11."""
    s = math.sqrt(k22 - k12**2 / k11)

    def integrand(u):
        m = k12 / k11 * u
        return u * (m * stats.norm.cdf(m / s) + s * stats.norm.pdf(m / s)) * \
            stats.norm.pdf(u, 0, math.sqrt(k11))

    return integrate.quad(integrand, 0, 40 * math.sqrt(k11), epsabs=1e-13)[0]


def test_one_relu_step_matches_quadrature():
    x = inputs(3, 4).numpy().astype(np.float64)
    sw, sb = 1.7, 0.3
    K = arccos_kernel(x, 1, sw, sb)
    K0 = sb + sw * x @ x.T / 4
    for i, j in [(0, 1), (1, 2), (0, 2)]:
        expected = sb + sw * relu_expectation_by_quadrature(K0[i, i], K0[i, j], K0[j, j])
        assert K[i, j] == pytest.approx(expected, rel=1e-9)


def test_depth_zero_is_the_linear_kernel_and_diagonal_recursion():
    x = inputs(5, 3).numpy().astype(np.float64)
    np.testing.assert_allclose(arccos_kernel(x, 0, 2.0, 1.0), 1.0 + 2.0 * x @ x.T / 3, rtol=1e-14)
    K = arccos_kernel(x, 3, 2.0, 1.0)
    k = 1.0 + 2.0 * np.sum(x * x, 1) / 3
    for _ in range(3):
        k = 1.0 + 0.5 * 2.0 * k  # E[relu(u)^2] = k/2
    np.testing.assert_allclose(np.diag(K), k, rtol=1e-14)


def test_chunking_does_not_change_the_kernel_and_it_is_psd():
    x = inputs(50, 7, seed=2)
    a = arccos_kernel(x, 2, chunk_size=7)
    b = arccos_kernel(x, 2, chunk_size=4096)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float64 and np.array_equal(a, a.T)
    assert np.linalg.eigvalsh(a).min() > -1e-10


_KERNEL_DIGEST = """
import hashlib
import numpy as np
from flatvol.volume import arccos_kernel
x = np.random.default_rng(0).random((1100, 784)).astype(np.float32)
print(hashlib.sha256(arccos_kernel(x, 2).tobytes()).hexdigest())
"""


def test_the_kernel_does_not_depend_on_the_thread_count():
    """numpy's multi-threaded BLAS sums x.x' in another order at another OMP_NUM_THREADS (V(f)
    moved by ~1e-12 between `make test` and a plain run); the kernel must be the same bits."""
    import os
    import subprocess
    import sys

    digests = set()
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
               "MKL_NUM_THREADS": threads}
        digests.add(subprocess.run([sys.executable, "-c", _KERNEL_DIGEST], env=env, check=True,
                                   capture_output=True, text=True).stdout.strip())
    assert len(digests) == 1


@pytest.mark.skipif(not SHARED_KERNEL.is_file(), reason="shared boolean-prior data not present")
def test_matches_stored_boolean_kernel():
    # kernel_A.npy was computed independently for FCN 7-40-40-1 on all 128 bit vectors
    i = np.arange(128)
    x = np.stack([(i >> (6 - k)) & 1 for k in range(7)], 1).astype(np.float64)
    np.testing.assert_allclose(arccos_kernel(x, 2, 2.0, 1.0), np.load(SHARED_KERNEL),
                               rtol=1e-12, atol=1e-12)


def test_fcn_kernel_uses_the_models_depth_and_prior():
    prior = Prior(1.5, 0.2)
    model = build_model("fcn:20,20,20", (2, 3), prior=prior, seed=0)
    x = inputs(6, 6).reshape(6, 2, 3)
    np.testing.assert_allclose(fcn_kernel(model, x), arccos_kernel(x.reshape(6, -1), 3, 1.5, 0.2))
    assert prior_kernel(model, x).kind == "analytic"
    with pytest.raises(VolumeError, match="FCN"):
        fcn_kernel(build_model("cnn:2", (1, 4, 4), seed=0), torch.zeros(2, 1, 4, 4))
    with pytest.raises(VolumeError, match="expects 6 features"):
        fcn_kernel(model, torch.zeros(2, 5))


def batch_means(model: nn.Module, x: torch.Tensor, batches: int, per_batch: int, **kw):
    """Independent MC kernels (different seeds); their spread is the test's own MC error."""
    runs = [mc_nngp_kernel(model, x, per_batch, seed=100 + b, progress=False, **kw)
            for b in range(batches)]
    stack = np.stack([r.kernel for r in runs])
    mean = stack.mean(0)
    se = stack.std(0, ddof=1) / math.sqrt(batches)
    return mean, se, runs


def test_mc_kernel_of_one_hidden_layer_fcn_matches_analytic_within_mc_error():
    # With one hidden layer E[sigma_w2/width Phi Phi^T] + sigma_b2 is the arccos kernel
    # exactly (first-layer pre-activations are exactly Gaussian), at any width.
    model = FCN(6, (64,))
    x = inputs()
    mean, se, runs = batch_means(model, x, batches=8, per_batch=400)
    K = arccos_kernel(x, 1)
    z = (mean - K) / se
    # 55 correlated entries: |z| < 4.5 everywhere (a false alarm is far below 1e-3)
    assert np.max(np.abs(z)) < 4.5, np.max(np.abs(z))
    # The function's own standard error agrees with the between-seed spread (MC error of an
    # MC error: a factor 2 either way).
    own = np.mean([r.stderr for r in runs], axis=0) / math.sqrt(len(runs))
    ratio = np.median(own / se)
    assert 0.5 < ratio < 2.0, ratio


def test_mc_kernel_of_deeper_fcn_matches_analytic():
    # Two hidden layers: the MC expectation differs from the NNGP by O(1/width); at width 256
    # that bias is below the MC error here (stated allowance: 0.5% of K).
    model = build_model("fcn:256,256", (6,), seed=0)
    x = inputs()
    mean, se, _ = batch_means(model, x, batches=6, per_batch=250)
    K = arccos_kernel(x, 2)
    assert np.all(np.abs(mean - K) < 4.5 * se + 0.005 * K)


def test_mc_kernel_for_a_user_module_with_reinit_and_features():
    net = nn.Sequential(nn.Linear(6, 96), nn.ReLU(), nn.Linear(96, 1))
    prior = Prior(2.0, 1.0)
    x = inputs()

    def reinit(module: nn.Module, generator: torch.Generator) -> None:
        init_from_prior_(module, prior, generator)

    def features(module: nn.Module, xb: torch.Tensor) -> torch.Tensor:
        return module[1](module[0](xb))

    mean, se, _ = batch_means(net, x, batches=6, per_batch=300, prior=prior, reinit=reinit,
                              features=features)
    assert np.max(np.abs(mean - arccos_kernel(x, 1)) / se) < 4.5


def test_mc_kernel_is_seeded_and_leaves_the_model_alone():
    model = build_model("cnn:3,4", (1, 8, 8), seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = mc_nngp_kernel(model, x, 10, seed=7, progress=False, batch_size=2)
    b = mc_nngp_kernel(model, x, 10, seed=7, progress=False)
    c = mc_nngp_kernel(model, x, 10, seed=8, progress=False)
    np.testing.assert_allclose(a.kernel, b.kernel, rtol=1e-6)  # batching: float32 rounding only
    assert not np.allclose(a.kernel, c.kernel)
    assert a.width == 4 * 2 * 2 and a.kernel.shape == (5, 5)
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))
    assert prior_kernel(model, x, KernelRequest(samples=3), progress=False).kind == "mc"
    with pytest.raises(VolumeError, match="n_samples"):
        mc_nngp_kernel(model, x, 1)
    with pytest.raises(VolumeError, match="prior"):
        mc_nngp_kernel(nn.Linear(3, 1), torch.zeros(2, 3), 5, features=lambda m, xb: xb)
