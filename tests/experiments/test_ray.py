"""The Ray backend on a local Ray instance: the same rows as the local backend (skipped without
the `flatvol[ray]` extra)."""

import pytest

pytest.importorskip("ray")

from experiments_helpers import comparable_runs, comparable_series, tiny_spec  # noqa: E402

from flatvol.experiments import run_sweep, runs_frame, series_frame, spec_from_dict  # noqa: E402


def test_ray_backend_writes_the_same_store_rows_as_local(tmp_path):
    spec = spec_from_dict(tiny_spec(sweep__seeds=1))
    local = run_sweep(spec, tmp_path / "local", progress=False, threads=1)
    ray_run = run_sweep(spec, tmp_path / "ray", backend="ray", workers=2, progress=False,
                        threads=1)
    assert local.done == ray_run.done == 2 and ray_run.failed == 0, ray_run.failures
    assert comparable_runs(runs_frame(tmp_path / "ray")).equals(
        comparable_runs(runs_frame(tmp_path / "local")))
    assert comparable_series(series_frame(tmp_path / "ray")).equals(
        comparable_series(series_frame(tmp_path / "local")))
    again = run_sweep(spec, tmp_path / "ray", backend="ray", workers=2, progress=False)
    assert (again.skipped, again.done) == (2, 0)  # resume works the same way


def test_ray_staged_sweep_writes_the_local_staged_rows_and_resumes(tmp_path):
    """train.ensemble on Ray: one task trains each group's ensemble, one task per run measures
    it; the rows equal the local staged sweep's at the same thread count."""
    import json
    import shutil
    import sqlite3

    import ray

    from flatvol.experiments.store import store_path

    spec = spec_from_dict(tiny_spec(data__train_size=40, data__test_size=30,
                                    sweep__attack_sizes=[0, 10], sweep__seeds=2,
                                    train__ensemble=True))
    local = run_sweep(spec, tmp_path / "local", progress=False, threads=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        # The first two runs recorded (by the local sweep); Ray records the other two.
        part = tmp_path / "part"
        shutil.copytree(tmp_path / "local", part)
        with sqlite3.connect(store_path(part)) as conn:
            for table in ("runs", "results", "series"):
                conn.execute(f"DELETE FROM {table} WHERE seed = 1")
        resumed = run_sweep(spec, part, backend="ray", workers=2, threads=1, progress=False)
        staged = run_sweep(spec, tmp_path / "ray", backend="ray", workers=2, threads=1,
                           progress=False)
    finally:
        ray.shutdown()
    assert local.done == staged.done == 4 and staged.failed == 0, staged.failures
    assert (resumed.skipped, resumed.done) == (2, 2)
    for out in (tmp_path / "ray", part):
        assert comparable_runs(runs_frame(out)).equals(
            comparable_runs(runs_frame(tmp_path / "local")))
        assert comparable_series(series_frame(out)).equals(
            comparable_series(series_frame(tmp_path / "local")))
    with sqlite3.connect(store_path(tmp_path / "ray")) as conn:
        infos = [json.loads(t) for (t,) in conn.execute("SELECT info_json FROM runs")]
    assert [i["ensemble"]["size"] for i in infos] == [4] * 4  # trained as one ensemble


def test_ray_training_tasks_report_their_epochs_to_the_progress_lines(tmp_path, monkeypatch):
    """An ensemble trains in a Ray task for hours on CIFAR: the driver's plain progress lines
    say which group trains and at which epoch meanwhile, as on the local backend."""
    import io

    monkeypatch.setenv("FLATVOL_PROGRESS_INTERVAL", "0")
    spec = spec_from_dict(tiny_spec(data__train_size=40, data__test_size=30,
                                    sweep__attack_sizes=[0, 10], sweep__seeds=2,
                                    train__ensemble=True))
    text = io.StringIO()
    summary = run_sweep(spec, tmp_path / "ray", backend="ray", workers=2, threads=1,
                        progress=True, stream=text)
    assert summary.done == 4 and summary.failed == 0, summary.failures
    lines = [line for line in text.getvalue().splitlines() if line.startswith("progress: ")]
    training = [line for line in lines if "networks fitted 0/4" in line and "epoch " in line
                and "ensemble of 4" in line]
    assert training, lines[:5]
