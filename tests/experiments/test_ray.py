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
