"""The Monte-Carlo kernel's error carried to each run's log10 V in a sweep, its store columns
and the report's note; analytic-kernel sweeps get 0 and no note."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from experiments_helpers import tiny_spec

from flatvol.analysis.report import write_report
from flatvol.experiments import run_sweep, runs_frame, spec_from_dict
from flatvol.models import build_model
from flatvol.volume import VolumeService, arccos_kernel
from flatvol.volume import kernels as kernels_module
from flatvol.volume.kernels import select_kernel
from flatvol.volume.mc_kernel import mc_nngp_kernel
from flatvol.volume.output_kernel import leave_one_batch_out

STDERR_COLUMNS = ("log10_volume_stderr", "log10_volume_conditional_stderr")


def cnn_spec(**overrides):
    return spec_from_dict(tiny_spec(
        data__train_size=20, data__test_size=10, model__arch="cnn:2,3",
        measures__final=["volume"], measures__volume={"mc_samples": 40},
        sweep__attack_sizes=[0], sweep__seeds=2, train__max_epochs=50, **overrides))


def test_cnn_sweep_stores_the_kernel_error_and_the_report_shows_it(tmp_path):
    summary = run_sweep(cnn_spec(), tmp_path, progress=False)
    assert (summary.done, summary.failed) == (2, 0)
    runs = runs_frame(tmp_path)
    for column in STDERR_COLUMNS:
        values = runs[column].to_numpy(dtype=float)
        assert np.all(np.isfinite(values)) and np.all(values > 0), column
    assert len(list((tmp_path / "cache").glob("kernel-*-batches.npz"))) == 1
    html = write_report(tmp_path).read_text()
    assert "Monte-Carlo kernel, 40 samples" in html and "log10_volume_stderr" in html
    # A second sweep into the same directory reads the kernel and its batches from the cache
    # and gets the same error bars.
    other = tmp_path / "again"
    (other / "cache").mkdir(parents=True)
    for path in (tmp_path / "cache").iterdir():
        (other / "cache" / path.name).write_bytes(path.read_bytes())
    run_sweep(cnn_spec(), other, progress=False)
    again = runs_frame(other)
    for column in ("log10_volume", *STDERR_COLUMNS):
        assert again[column].tolist() == runs[column].tolist(), column


def test_analytic_sweep_has_zero_error_and_no_note(tmp_path):
    spec = spec_from_dict(tiny_spec(sweep__attack_sizes=[0], sweep__seeds=2,
                                    measures__final=["volume"]))
    run_sweep(spec, tmp_path, progress=False)
    runs = runs_frame(tmp_path)
    for column in STDERR_COLUMNS:
        assert (runs[column] == 0.0).all(), column
    assert not list((tmp_path / "cache").glob("*-batches.npz"))
    assert "Monte-Carlo kernel" not in write_report(tmp_path).read_text()


def test_batch_kernels_leave_the_kernel_unchanged_and_average_to_it():
    model = build_model("cnn:2,3", (1, 28, 28), seed=0)
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    plain = mc_nngp_kernel(model, x, 12, seed=2, progress=False)
    batched = mc_nngp_kernel(model, x, 12, seed=2, progress=False, n_batches=5)
    assert plain.batch_kernels is None
    np.testing.assert_array_equal(batched.kernel, plain.kernel)
    assert batched.batch_counts.tolist() == [3, 2, 3, 2, 2]  # consecutive draws, i * 5 // 12
    weights = batched.batch_counts / 12
    np.testing.assert_allclose(np.tensordot(weights, batched.batch_kernels, axes=1),
                               plain.kernel, rtol=1e-10, atol=1e-12)
    replicates = list(leave_one_batch_out(batched.batch_kernels, batched.batch_counts))
    assert len(replicates) == 5
    np.testing.assert_allclose(np.mean(replicates, axis=0), plain.kernel, rtol=1e-2)


def test_batches_too_large_give_no_error_bar(monkeypatch):
    monkeypatch.setattr(kernels_module, "MAX_BATCH_KERNEL_BYTES", 100)
    model = build_model("cnn:2,3", (1, 28, 28), seed=0)
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    nngp = select_kernel(model, x, "mc", mc_samples=12, progress=False, mc_batches=10)
    assert nngp.replicates() is None and nngp.info["mc_batches"] == 0
    assert "no error bar" in nngp.info["mc_error"]
    few = select_kernel(model, x, "mc", mc_samples=5, progress=False, mc_batches=10)
    assert few.replicates() is None and "fewer than 10 batches" in few.info["mc_error"]


def test_conditional_stderr_is_the_jackknife_of_the_replicates():
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    kernel = arccos_kernel(x, 1)
    labels = (x[:, 0] > 0).numpy().astype(np.float64)
    assert VolumeService(kernel).conditional(labels, 5).stderr is None
    same = VolumeService(kernel, replicates=[kernel] * 4).conditional(labels, 5).stderr
    assert same is not None and same.log10_volume == 0.0 and same.log10_volume_conditional == 0.0
    # V(f) is scale-free, so perturb the kernel's shape: more or less independent noise.
    scaled = [kernel + s * np.eye(8) for s in (0.1, 0.3, 0.6, 1.0)]
    stderr = VolumeService(kernel, replicates=scaled).conditional(labels, 5).stderr
    reps = [VolumeService(k).conditional(labels, 5).full.log10_volume for k in scaled]
    expected = math.sqrt(3 / 4 * np.sum((np.array(reps) - np.mean(reps)) ** 2))
    assert stderr.log10_volume == pytest.approx(expected, rel=1e-12) and expected > 0


def test_auto_sample_count_is_checked_cached_and_stored_with_each_run(tmp_path):
    import json
    import sqlite3

    from flatvol.experiments.store import store_path

    spec = spec_from_dict(tiny_spec(
        data__train_size=20, data__test_size=10, model__arch="cnn:2,3",
        measures__final=["volume"], sweep__attack_sizes=[0], sweep__seeds=2,
        train__max_epochs=50, measures__volume={"mc_samples": "auto", "mc_tolerance": 3.0,
                                                "mc_max_samples": 256}))
    summary = run_sweep(spec, tmp_path, progress=False)
    assert (summary.done, summary.failed) == (2, 0)
    meta = json.loads(next((tmp_path / "cache").glob("kernel-*[0-9a-f].json")).read_text())
    check = meta["mc_convergence"]
    assert check["converged"] and check["tolerance"] == 3.0 and check["max_samples"] == 256
    assert meta["mc_samples"] == check["rounds"][-1]["samples"]
    # the check's draws are kept for a resume (flatvol.volume.mc_checkpoint)
    kept = torch.load(next((tmp_path / "cache").glob("mc-draws-*.pt")), weights_only=True)
    assert kept["drawn"] == meta["mc_samples"] and kept["halves"].shape[-1] == 30
    with sqlite3.connect(store_path(tmp_path)) as conn:
        infos = [json.loads(text) for (text,) in conn.execute("SELECT info_json FROM runs")]
    for info in infos:
        assert info["measures"]["volume"]["kernel"]["mc_convergence"] == check
