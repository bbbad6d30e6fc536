"""Cached files in OUT/cache are verified before use: a kernel whose bytes changed, a record
holding `null`, a truncated batches file, a cache written before checksums, and Monte-Carlo
progress files with flipped or missing bytes are recomputed after one notice line, never trusted
and never turned into failed runs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from experiments_helpers import tiny_spec

from flatvol.experiments import run_sweep, runs_frame, spec_from_dict
from flatvol.experiments.build import load_run_task
from flatvol.experiments.context import kernel_cache_key, sweep_kernel
from flatvol.volume.mc_checkpoint import DrawCheckpoint, DrawSums

ANALYTIC = dict(sweep__attack_sizes=[0], sweep__seeds=1, measures__final=["volume"])
# A Monte-Carlo kernel with batches (kernel-<key>-batches.npz), as in test_mc_error.
MONTE_CARLO = dict(data__train_size=20, data__test_size=10, model__arch="cnn:2,3",
                   measures__final=["volume"], measures__volume={"mc_samples": 40},
                   sweep__attack_sizes=[0], sweep__seeds=1)


def kernel_files(out: Path, spec) -> tuple[Path, Path, Path]:
    key = kernel_cache_key(spec)
    cache = out / "cache"
    return (cache / f"kernel-{key}.npy", cache / f"kernel-{key}.json",
            cache / f"kernel-{key}-batches.npz")


def flip_payload_bytes(path: Path, count: int = 8) -> None:
    """Change `count` bytes in the middle of a file's payload (past any header), so the file
    still parses."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0x5A for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


def notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "flatvol" and r.levelno == logging.WARNING]


@pytest.fixture(scope="module")
def analytic_kernel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A sweep's cache with its analytic kernel, computed once; tests damage copies of it."""
    out = tmp_path_factory.mktemp("analytic")
    spec = spec_from_dict(tiny_spec(**ANALYTIC))
    nngp = sweep_kernel(spec, load_run_task(spec, 0, None), out, "cpu", progress=False)
    return out, nngp.matrix


def copy_out(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(source, out)
    return out


def test_an_intact_cache_is_read_back_without_a_notice(analytic_kernel, tmp_path, caplog):
    out = copy_out(analytic_kernel[0], tmp_path)
    spec = spec_from_dict(tiny_spec(**ANALYTIC))
    caplog.set_level(logging.WARNING, logger="flatvol")
    cached = sweep_kernel(spec, load_run_task(spec, 0, None), out, "cpu", progress=False)
    assert cached.info["cached"] is True and notices(caplog) == []
    assert np.array_equal(cached.matrix, analytic_kernel[1])


@pytest.mark.parametrize("damage", ["flipped kernel bytes", "null record", "record edited",
                                    "record without checksum", "record missing"])
def test_a_damaged_kernel_cache_is_recomputed_after_one_notice(analytic_kernel, tmp_path,
                                                               caplog, damage):
    out = copy_out(analytic_kernel[0], tmp_path)
    spec = spec_from_dict(tiny_spec(**ANALYTIC))
    kernel, record, _ = kernel_files(out, spec)
    if damage == "flipped kernel bytes":  # np.load still reads it: only the checksum tells
        flip_payload_bytes(kernel)
        assert not np.array_equal(np.load(kernel), analytic_kernel[1])
    elif damage == "null record":
        record.write_text("null\n")
    elif damage == "record edited":  # valid JSON, a changed figure
        saved = json.loads(record.read_text())
        saved["n"] = 7
        record.write_text(json.dumps(saved))
    elif damage == "record without checksum":  # what flatvol wrote before caches were verified
        saved = json.loads(record.read_text())
        del saved["cache"]
        record.write_text(json.dumps(saved))
    else:
        record.unlink()
    caplog.set_level(logging.WARNING, logger="flatvol")
    nngp = sweep_kernel(spec, load_run_task(spec, 0, None), out, "cpu", progress=False)
    assert "cached" not in nngp.info  # recomputed, not read
    assert np.array_equal(nngp.matrix, analytic_kernel[1])
    (line,) = notices(caplog)
    assert str(kernel) in line and "recomputing" in line and "\n" not in line
    # The rewritten cache verifies: the next sweep reads it without a notice.
    caplog.clear()
    again = sweep_kernel(spec, load_run_task(spec, 0, None), out, "cpu", progress=False)
    assert again.info["cached"] is True and notices(caplog) == []


def test_a_sweep_over_a_damaged_kernel_records_no_failed_run(analytic_kernel, tmp_path):
    """Before the checksums, flipped kernel bytes made every run fail ('kernel: not
    symmetric') and stay failed; now the kernel is recomputed and the runs are done, with the
    numbers of a sweep that never had a cache."""
    spec = spec_from_dict(tiny_spec(**ANALYTIC))
    damaged = copy_out(analytic_kernel[0], tmp_path)
    kernel, _, _ = kernel_files(damaged, spec)
    flip_payload_bytes(kernel)
    summary = run_sweep(spec, damaged, progress=False)
    assert (summary.done, summary.failed) == (1, 0)
    fresh = tmp_path / "fresh"
    run_sweep(spec, fresh, progress=False)
    assert (runs_frame(damaged)["log10_volume"].tolist()
            == runs_frame(fresh)["log10_volume"].tolist())


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_damaged_monte_carlo_batches_are_recomputed(tmp_path, caplog, damage):
    spec = spec_from_dict(tiny_spec(**MONTE_CARLO))
    first = sweep_kernel(spec, load_run_task(spec, 0, None), tmp_path, "cpu", progress=False)
    assert first.batch_kernels is not None
    _, _, batches = kernel_files(tmp_path, spec)
    if damage == "truncated":
        data = batches.read_bytes()
        batches.write_bytes(data[: len(data) // 2])
    else:
        flip_payload_bytes(batches)
    caplog.set_level(logging.WARNING, logger="flatvol")
    again = sweep_kernel(spec, load_run_task(spec, 0, None), tmp_path, "cpu", progress=False)
    assert "cached" not in again.info
    assert np.array_equal(again.batch_kernels, first.batch_kernels)
    assert np.array_equal(again.matrix, first.matrix)
    (line,) = notices(caplog)
    assert batches.name in line and "\n" not in line


def draw_sums(n: int = 6) -> DrawSums:
    gen = torch.Generator().manual_seed(3)
    halves = torch.rand(2, n, n, generator=gen, dtype=torch.float64) + 1.0
    return DrawSums(16, halves, halves.sum(0) ** 2, None, gen.get_state(),
                    [{"samples": 16, "agrees": False}])


@pytest.mark.parametrize("damage", ["flipped tensor bytes", "truncated", "without checksum"])
def test_damaged_monte_carlo_progress_is_not_resumed(tmp_path, caplog, damage):
    path = tmp_path / "mc-draws-key.pt"
    store = DrawCheckpoint(path, "fingerprint")
    sums = draw_sums()
    store.save(sums)
    loaded = store.load(torch.device("cpu"))
    assert loaded is not None and torch.equal(loaded.halves, sums.halves)
    if damage == "flipped tensor bytes":
        # torch.load does not check its CRCs: the changed value loads without an error.
        data = bytearray(path.read_bytes())
        at = data.find(sums.halves.numpy().tobytes()[:16])
        assert at > 0
        data[at:at + 8] = np.float64(-1.0).tobytes()
        path.write_bytes(bytes(data))
        assert torch.load(path, weights_only=True)["halves"][0, 0, 0] == -1.0
    elif damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:  # as flatvol wrote it before progress files carried a checksum
        saved = torch.load(path, weights_only=True)
        for key in ("progress_schema", "progress_sha256"):
            del saved[key]
        torch.save(saved, path)
    caplog.set_level(logging.WARNING, logger="flatvol")
    assert store.load(torch.device("cpu")) is None
    (line,) = notices(caplog)
    assert str(path) in line and "\n" not in line


def test_another_computations_progress_is_ignored_without_a_notice(tmp_path, caplog):
    path = tmp_path / "mc-draws-key.pt"
    DrawCheckpoint(path, "one computation").save(draw_sums())
    caplog.set_level(logging.WARNING, logger="flatvol")
    assert DrawCheckpoint(path, "another").load(torch.device("cpu")) is None
    assert notices(caplog) == []
