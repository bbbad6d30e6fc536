"""Direct-sampling truth for orthant probabilities (flatvol.volume.orthant_truth) and its tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from flatvol.errors import VolumeError
from flatvol.volume.orthant_truth import (
    KernelSpec,
    TruthFunction,
    TruthKernel,
    build_kernel,
    count_orthant_hits,
    kernel_checksum,
    load_truth_table,
    rebuild_checked_kernel,
    sample_sign_patterns,
    symmetry_orbit,
    table_digest,
    table_to_json,
)


def trivariate_orthant(K: np.ndarray, y: np.ndarray) -> float:
    """Exact P(y_i z_i > 0, i = 1..3): 1/8 + (asin r12 + asin r13 + asin r23) / (4 pi)."""
    s = np.sqrt(np.diag(K))
    r = (y[:, None] * K * y[None, :]) / np.outer(s, s)
    return 1 / 8 + (math.asin(r[0, 1]) + math.asin(r[0, 2]) + math.asin(r[1, 2])) / (4 * math.pi)


def test_hit_counts_match_the_exact_trivariate_orthant_probabilities():
    K = np.array([[1.0, 0.6, -0.3], [0.6, 2.0, 0.5], [-0.3, 0.5, 1.5]])
    labels = [np.array(y, dtype=float) for y in ([1, 1, 1], [1, -1, 1], [1, 1, -1], [1, -1, -1])]
    n_draws = 200_000
    hits = count_orthant_hits(K, labels, n_draws, seed=0, chunk=30_000)
    assert hits.sum() == n_draws  # the four patterns up to sign are every outcome
    for y, h in zip(labels, hits, strict=True):
        truth = TruthFunction(y, int(h), n_draws)
        exact = trivariate_orthant(K, y)
        # the binomial se the table reports is the right size: |error| within 4 of them
        assert abs(truth.log10_probability - math.log10(exact)) < 4 * truth.stderr_log10, y


def test_pattern_census_and_targeted_counts_agree_on_the_same_draws():
    K = build_kernel(KernelSpec("t", "gaussian", 6, 2, "arccos", depth=1, seed=4))
    labels, counts = sample_sign_patterns(K, 20_000, seed=7, chunk=6_000)
    assert counts.sum() == 20_000 and np.all(np.diff(counts) <= 0)
    assert np.all(labels[:, 0] == 1.0)  # one representative per pair {f, -f}
    targeted = count_orthant_hits(K, list(labels[:5]), 20_000, seed=7, chunk=6_000)
    np.testing.assert_array_equal(targeted, counts[:5])
    negated = count_orthant_hits(K, [-labels[0]], 20_000, seed=7, chunk=6_000)
    assert negated[0] == counts[0]  # -f is counted with f


def test_singular_kernel_is_sampled_exactly():
    # rank one: z = g * (1, 1, -1), so only the pattern +-(1, 1, -1) ever occurs
    v = np.array([1.0, 1.0, -1.0])
    hits = count_orthant_hits(np.outer(v, v), [v, np.ones(3)], 1000, seed=0)
    assert hits.tolist() == [1000, 0]


def small_table() -> list[TruthKernel]:
    spec = KernelSpec("cube3", "hypercube", 8, 3, "arccos", depth=2)
    K = build_kernel(spec)
    f = np.ones(8)
    return [TruthKernel(spec, kernel_checksum(K), (TruthFunction(f, 1234, 5000),))]


def test_table_round_trip(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table_to_json(small_table())))
    (entry,) = load_truth_table(path)
    assert entry.spec == small_table()[0].spec
    assert entry.functions[0].hits == 1234 and entry.functions[0].n_draws == 5000
    np.testing.assert_array_equal(entry.functions[0].labels, np.ones(8))
    np.testing.assert_array_equal(rebuild_checked_kernel(entry), build_kernel(entry.spec))


def write_edited(path, edit, redigest: bool) -> None:
    obj = table_to_json(small_table())
    edit(obj)
    if redigest:  # a well-formed digest over a malformed field: the field check must refuse it
        obj["sha256"] = table_digest(obj["kernels"])
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize(("edit", "redigest", "message"), [
    (lambda o: o["kernels"][0]["functions"][0].update(hits=1235), False, "sha256"),
    (lambda o: o.update(format="other/1"), False, "format"),
    (lambda o: o["kernels"][0]["functions"][0].update(bits="1" * 7), True, "bits"),
    (lambda o: o["kernels"][0]["functions"][0].update(hits=6000), True, "hits <= n_draws"),
    (lambda o: o["kernels"][0]["spec"].update(n="8"), True, "spec.n"),
    (lambda o: o["kernels"][0]["spec"].update(kernel="matern"), True, "kernel in"),
    (lambda o: o["kernels"][0].update(checksum=[1.0]), True, "checksum"),
])
def test_damaged_or_malformed_table_is_refused_with_one_line(tmp_path, edit, redigest, message):
    path = tmp_path / "t.json"
    write_edited(path, edit, redigest)
    with pytest.raises(VolumeError, match=message) as info:
        load_truth_table(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_unreadable_table_and_changed_kernel_are_refused(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"format": ')
    with pytest.raises(VolumeError, match="JSON truth table expected"):
        load_truth_table(path)
    with pytest.raises(VolumeError, match="JSON truth table expected"):
        load_truth_table(tmp_path / "missing.json")
    entry = small_table()[0]
    moved = TruthKernel(entry.spec, (entry.checksum[0] * 1.001, entry.checksum[1]),
                        entry.functions)
    with pytest.raises(VolumeError, match="checksum"):
        rebuild_checked_kernel(moved)


def test_bit_permutation_orbit_members_share_the_probability():
    # {0,1}^3, arccos kernel: f = 1 only on input 0b001 (a weight-1 point) has orbit
    # {only on 001, only on 010, only on 100}; its members' counts agree within sampling noise
    spec = KernelSpec("cube3", "hypercube", 8, 3, "arccos", depth=1)
    f = -np.ones(8)
    f[1] = 1.0
    orbit = symmetry_orbit(spec, f)
    assert orbit.shape == (3, 8)
    np.testing.assert_array_equal(orbit[0], f)
    assert sorted(int(np.flatnonzero(m > 0)[0]) for m in orbit) == [1, 2, 4]
    K = build_kernel(spec)
    hits = count_orthant_hits(K, list(orbit), 400_000, seed=3)
    pooled = count_orthant_hits(K, [orbit], 400_000, seed=3)
    assert pooled[0] == hits.sum()
    # each member's hits are binomial: within 4 sd of the pooled mean
    assert np.all(np.abs(hits - hits.mean()) < 4 * np.sqrt(hits.mean())), hits
    # no symmetry is claimed where the kernel has none
    gauss = KernelSpec("g", "gaussian", 8, 3, "arccos", depth=1)
    assert symmetry_orbit(gauss, f).shape == (1, 8)
    with pytest.raises(VolumeError, match="disjoint"):
        count_orthant_hits(K, [orbit, orbit[1]], 10, seed=0)


def test_structured_patterns_are_told_apart():
    # two one-point flips at n = 128 whose packed words are swapped, (A, B) and (B, A): a
    # multiply-add hash once gave both the same key and refused them as "not disjoint"
    first, second = np.ones(128), np.ones(128)
    first[57] = second[121] = -1.0
    hits = count_orthant_hits(np.outer(first, first), [first, second], 500, seed=0)
    assert hits.tolist() == [500, 0]
