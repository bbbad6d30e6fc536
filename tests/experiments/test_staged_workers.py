"""A sweep planned by stage on all cores: each group's ensemble trains in the driver, its runs
are measured in a pool of worker processes, and the store gets the rows of the in-process
staged sweep (at the same thread count), with stage progress still reported."""

import io
import json
import shutil
import sqlite3

from experiments_helpers import comparable_runs, comparable_series, tiny_spec

import flatvol.experiments.backends as backends
from flatvol.experiments import run_sweep, runs_frame, series_frame, spec_from_dict
from flatvol.experiments.store import store_path

SPEC = tiny_spec(data__train_size=40, data__test_size=30, sweep__attack_sizes=[0, 10],
                 sweep__seeds=3, train__ensemble=True)


def test_staged_pool_gives_the_in_process_rows_progress_and_resume(tmp_path, monkeypatch):
    spec = spec_from_dict(SPEC)
    jobs = []  # (run, trained network, the trainer's epoch when it was sent to the pool)
    epoch = [0]
    submit, train_group = backends.WorkerPool.submit, backends.train_group

    def spy_submit(self, label, run, trained):
        jobs.append((run, trained, epoch[0]))
        return submit(self, label, run, trained)

    def spy_train_group(members, ctx, progress, *args, **kwargs):
        def seen(event):
            if event.stage is None:  # an epoch (not a member's stage)
                epoch[0] = event.completed
            progress(event)
        return train_group(members, ctx, seen, *args, **kwargs)

    monkeypatch.setattr(backends.WorkerPool, "submit", spy_submit)
    monkeypatch.setattr(backends, "train_group", spy_train_group)
    text = io.StringIO()
    pool = run_sweep(spec, tmp_path / "pool", workers=2, threads=1, stream=text)
    assert len(jobs) == 6 and all(trained is not None for _, trained, _ in jobs)  # measured there
    # each network is sent to be measured as it stops, while the later ones still train
    stops = [trained.result.epochs for _, trained, _ in jobs]
    assert [e for _, _, e in jobs] == [s - 1 for s in stops] and len(set(stops)) > 1
    one = run_sweep(spec, tmp_path / "one", workers=1, threads=1, progress=False)
    assert (pool.done, one.done, pool.failed) == (6, 6, 0), pool.failures
    assert comparable_runs(runs_frame(tmp_path / "pool")).equals(
        comparable_runs(runs_frame(tmp_path / "one")))
    assert comparable_series(series_frame(tmp_path / "pool")).equals(
        comparable_series(series_frame(tmp_path / "one")))
    with sqlite3.connect(store_path(tmp_path / "pool")) as conn:
        infos = [json.loads(t) for (t,) in conn.execute("SELECT info_json FROM runs")]
    assert [i["ensemble"]["size"] for i in infos] == [6] * 6  # one ensemble, in the driver
    # Stage progress: networks fitted (live, from the driver's trainer), then the measures as
    # the workers report them.
    lines = [line for line in text.getvalue().splitlines() if line.startswith("progress: ")]
    assert lines, text.getvalue()
    for stage in ("networks fitted 6/6", "volumes computed 6/6", "sharpness done 6/6"):
        assert stage in lines[-1]
    # Resume: four runs of the in-process store removed, the pool sweep trains the whole
    # ensemble again and records only those, with the same numbers.
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "one", part)
    with sqlite3.connect(store_path(part)) as conn:
        for table in ("runs", "results", "series"):
            conn.execute(f"DELETE FROM {table} WHERE seed >= 1")
    rest = run_sweep(spec, part, workers=2, threads=1, progress=False)
    assert (rest.skipped, rest.done) == (2, 4)
    assert comparable_runs(runs_frame(part)).equals(comparable_runs(runs_frame(tmp_path / "one")))
    assert comparable_series(series_frame(part)).equals(
        comparable_series(series_frame(tmp_path / "one")))


def test_measuring_workers_run_on_their_share_beside_the_trainer(tmp_path, monkeypatch):
    # --threads sets the trainer's threads; the workers measuring beside it get their share of
    # the cores, for torch and (through the environment they are spawned with) for BLAS.
    monkeypatch.setattr(backends.os, "cpu_count", lambda: 2)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    seen = []
    submit = backends.WorkerPool.submit

    def spy_submit(self, label, run, trained):
        seen.append((self.context.threads, self.context.train_threads,
                     backends.os.environ.get("OPENBLAS_NUM_THREADS")))
        return submit(self, label, run, trained)

    monkeypatch.setattr(backends.WorkerPool, "submit", spy_submit)
    summary = run_sweep(spec_from_dict(SPEC), tmp_path / "out", workers=2, threads=2,
                        progress=False)
    assert summary.done == 6 and set(seen) == {(1, 2, "1")}
    assert backends.os.environ["OPENBLAS_NUM_THREADS"] == "7"  # the driver's is restored
