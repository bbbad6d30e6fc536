"""Volume estimators against direct sampling on all 2^5 Boolean inputs.

Ground truth 1: sample z ~ N(0, K) directly (the exact NNGP prior) and count sign patterns; this
checks the orthant estimators with no finite-width effect.
Ground truth 2: sample 10^6 random FCNs (5-64-1 ReLU, weights N(0, 2/fan_in), biases N(0, 1))
in batched matmuls and count the functions they compute; this checks kernel + estimator
against real networks, up to the finite-width effect of a width-64 layer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flatvol.models import Prior
from flatvol.volume import VolumeEstimator, arccos_kernel

BITS = 5
N_POINTS = 2**BITS
N_SAMPLES = 1_000_000
WIDTH = 64
MIN_COUNT = 500  # frequent functions only: sampling se of log10 freq <= 0.02


def boolean_inputs() -> torch.Tensor:
    i = torch.arange(N_POINTS)
    return torch.stack([(i >> (BITS - 1 - k)) & 1 for k in range(BITS)], 1).float()


def count_codes(signs: torch.Tensor) -> dict[int, int]:
    """Map each sign pattern (bool (N, 32)) to an int code (bit i = input i, MSB first)."""
    weights = 2 ** torch.arange(N_POINTS - 1, -1, -1, dtype=torch.int64)
    codes = (signs.to(torch.int64) * weights).sum(1).numpy()
    values, counts = np.unique(codes, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def labels_of(code: int) -> np.ndarray:
    return np.array([(code >> (N_POINTS - 1 - i)) & 1 for i in range(N_POINTS)], dtype=float)


@torch.no_grad()
def sample_network_functions(n: int, seed: int, batch: int = 500) -> dict[int, int]:
    """Sign patterns of n random 5-64-1 ReLU networks drawn from Prior(2, 1)."""
    prior = Prior()
    x = boolean_inputs()
    g = torch.Generator().manual_seed(seed)
    counts: dict[int, int] = {}
    chunks = []
    for _ in range(n // batch):
        p = torch.randn(BITS + 2, batch * WIDTH, generator=g)
        p[:BITS] *= math.sqrt(prior.sigma_w2 / BITS)
        p[BITS] *= math.sqrt(prior.sigma_b2)
        p[BITS + 1] *= math.sqrt(prior.sigma_w2 / WIDTH)
        hidden = torch.addmm(p[BITS], x, p[:BITS]).relu_()  # all networks in one matmul
        out = torch.bmm(hidden.view(N_POINTS, batch, WIDTH).transpose(0, 1),
                        p[BITS + 1].view(batch, WIDTH, 1)).squeeze(-1)
        out += torch.randn(batch, 1, generator=g) * math.sqrt(prior.sigma_b2)
        chunks.append(out > 0)
        if len(chunks) == 200:
            for code, c in count_codes(torch.cat(chunks)).items():
                counts[code] = counts.get(code, 0) + c
            chunks = []
    if chunks:
        for code, c in count_codes(torch.cat(chunks)).items():
            counts[code] = counts.get(code, 0) + c
    return counts


@pytest.fixture(scope="module")
def kernel_one_layer() -> np.ndarray:
    return arccos_kernel(boolean_inputs(), n_hidden=1, sigma_w2=2.0, sigma_b2=1.0)


@pytest.fixture(scope="module")
def estimator(kernel_one_layer: np.ndarray) -> VolumeEstimator:
    return VolumeEstimator(kernel_one_layer)


def frequent(counts: dict[int, int]) -> list[tuple[int, int]]:
    return sorted(((c, n) for c, n in counts.items() if n >= MIN_COUNT), key=lambda t: -t[1])


def test_orthant_estimators_match_exact_gp_samples(kernel_one_layer, estimator):
    # z ~ N(0, K) exactly: frequencies are unbiased estimates of the orthant probabilities.
    chol = torch.linalg.cholesky(torch.as_tensor(kernel_one_layer))
    g = torch.Generator().manual_seed(1)
    signs = [(torch.randn(250_000, N_POINTS, generator=g, dtype=torch.float64) @ chol.T) > 0
             for _ in range(N_SAMPLES // 250_000)]
    rows = frequent(count_codes(torch.cat(signs)))
    assert len(rows) >= 15
    is_dev, ep_dev = [], []
    for code, count in rows:
        y = labels_of(code)
        freq = math.log10(count / N_SAMPLES)
        se_freq = math.sqrt((1 - count / N_SAMPLES) / count) / math.log(10)
        is_res = estimator.log_volume(y, "orthant-is", n_samples=4000, seed=0)
        assert is_res.converged
        se = math.hypot(se_freq, is_res.stderr_log10)
        # Unbiased estimator vs unbiased frequency: 4 standard errors (+0.01 for the delta method)
        assert abs(is_res.log10_volume - freq) < 4 * se + 0.01, (code, count)
        is_dev.append(abs(is_res.log10_volume - freq))
        ep_dev.append(abs(estimator.log_volume(y, "ep-orthant").log10_volume - freq))
    assert max(ep_dev) < 0.15  # EP with step sites is an approximation; stated tolerance
    print(f"GP samples: max |IS - freq| = {max(is_dev):.3f}, max |EP - freq| = {max(ep_dev):.3f}"
          f" over {len(rows)} functions")


@pytest.fixture(scope="module")
def network_counts() -> dict[int, int]:
    return sample_network_functions(N_SAMPLES, seed=0)


def test_volume_matches_random_network_frequencies(estimator, network_counts):
    rows = frequent(network_counts)
    assert sum(network_counts.values()) == N_SAMPLES
    assert len(rows) >= 10
    is_dev, ep_dev = [], []
    for code, count in rows:
        y = labels_of(code)
        freq = math.log10(count / N_SAMPLES)
        se_freq = math.sqrt((1 - count / N_SAMPLES) / count) / math.log(10)
        is_res = estimator.log_volume(y, "orthant-is", n_samples=4000)
        # Tolerance (log10): 0.05 for the finite-width-64 effect + 3 combined standard errors.
        tol = 0.05 + 3 * math.hypot(se_freq, is_res.stderr_log10)
        assert abs(is_res.log10_volume - freq) < tol, (code, count, is_res)
        is_dev.append(is_res.log10_volume - freq)
        ep_dev.append(estimator.log_volume(y, "ep-orthant").log10_volume - freq)
    # Typical IS deviation is a few hundredths; EP with step sites runs low by 0.05-0.12 here.
    assert float(np.median(np.abs(is_dev))) < 0.03, is_dev
    assert max(map(abs, ep_dev)) < 0.15, ep_dev
    print(f"networks: max |IS - freq| = {max(map(abs, is_dev)):.3f}, "
          f"max |EP - freq| = {max(map(abs, ep_dev)):.3f} over {len(rows)} functions")


def test_probit_ep_is_far_off_for_balanced_functions(estimator, network_counts):
    # The paper's probit value is the orthant probability under K + I, not K. For the balanced
    # functions x_k (pooled: they share one probability by symmetry) it is orders too small.
    x = boolean_inputs().numpy()
    pooled = 0
    for k in range(BITS):
        for y in (x[:, k], 1 - x[:, k]):
            code = int(sum(int(b) << (N_POINTS - 1 - i) for i, b in enumerate(y)))
            pooled += network_counts.get(code, 0)
    assert pooled >= 500
    freq = math.log10(pooled / (2 * BITS) / N_SAMPLES)
    y = x[:, 0]
    probit = estimator.log_volume(y, "ep-probit").log10_volume
    orthant = estimator.log_volume(y, "orthant-is", n_samples=4000).log10_volume
    ep_orthant = estimator.log_volume(y, "ep-orthant").log10_volume
    assert abs(orthant - freq) < 0.15
    assert abs(ep_orthant - freq) < 0.3
    assert freq - probit > 2.0  # more than two orders of magnitude too small
    print(f"x_k: freq {freq:.2f}, orthant-is {orthant:.2f}, ep-orthant {ep_orthant:.2f}, "
          f"ep-probit {probit:.2f}")


SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "boolean-prior"


@pytest.mark.skipif(not (SHARED / "boolean_A.json").is_file(), reason="shared data not present")
def test_seven_bit_functions_against_stored_1e7_network_samples():
    # 10^7 sampled FCNs 7-40-40-1 (shared/data/boolean-prior): the 30 most frequent functions
    # and the 14 balanced functions x_k / NOT x_k (pooled: one probability by symmetry).
    info = json.loads((SHARED / "boolean_A.json").read_text())
    i = np.arange(128)
    x = np.stack([(i >> (6 - k)) & 1 for k in range(7)], 1).astype(np.float64)
    est = VolumeEstimator(arccos_kernel(x, 2, 2.0, 1.0))
    worst_is = worst_ep = 0.0
    for row in info["top"][:30]:
        y = np.array([int(b) for b in row["bits"]], dtype=float)
        is_res = est.log_volume(y, "orthant-is", n_samples=4000)
        tol = 0.05 + 3 * math.hypot(row["se_log10_p"], is_res.stderr_log10)
        assert abs(is_res.log10_volume - row["log10_p"]) < tol, (row["rank"], is_res)
        worst_is = max(worst_is, abs(is_res.log10_volume - row["log10_p"]))
        ep = est.log_volume(y, "ep-orthant").log10_volume
        worst_ep = max(worst_ep, abs(ep - row["log10_p"]))
    assert worst_ep < 0.2  # step EP runs low by ~0.15 here
    names = {f"x{k}" for k in range(7)} | {f"not_x{k}" for k in range(7)}
    balanced = [r for r in info["interesting"] if r["name"] in names]
    assert len(balanced) == 14
    pooled = math.log10(sum(r["count"] for r in balanced) / 14 / info["N"])
    y = x[:, 0]
    assert abs(est.log_volume(y, "orthant-is").log10_volume - pooled) < 0.25
    assert abs(est.log_volume(y, "ep-orthant").log10_volume - pooled) < 0.5
    assert pooled - est.log_volume(y, "ep-probit").log10_volume > 10  # the paper's value
    print(f"7-bit: worst |IS - freq| {worst_is:.3f}, worst |EP - freq| {worst_ep:.3f} (top 30)")
