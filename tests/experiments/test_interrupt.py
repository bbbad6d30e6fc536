"""SIGKILL a sweep in the middle, re-run the same command: the store ends with exactly the rows of
an uninterrupted sweep (no half-written run, no duplicate, identical numbers)."""

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from experiments_helpers import (
    comparable_runs,
    comparable_series,
    done_runs,
    process_alive,
    subprocess_env,
    tiny_spec,
)

from flatvol.experiments import run_sweep, runs_frame, series_frame, spec_from_dict
from flatvol.experiments.store import store_path

# 8 runs, each long enough (post-training epochs, during-training measures) that the kill
# lands while later runs are still to do.
SPEC = tiny_spec(sweep__attack_sizes=[0, 10, 20, 30], train__post_train_epochs=150,
                 during={"every": 25, "measures": ["volume"]})


def _command(spec_path, out, workers: int) -> list[str]:
    return [sys.executable, "-m", "flatvol", "run", str(spec_path), "--out", str(out),
            "--threads", "1", "--workers", str(workers), "--quiet"]


# Planned by stage (train.ensemble): all 8 networks train as one ensemble, then each run is
# measured and recorded; the paper maximizer makes measuring slow enough for the kill to land
# between records.
STAGED = tiny_spec(sweep__attack_sizes=[0, 10, 20, 30], train__ensemble=True,
                   measures__sharpness={"maximizer": "paper"})


def test_sigkill_mid_sweep_then_rerun_equals_uninterrupted(tmp_path):
    _kill_mid_sweep_then_rerun(tmp_path, SPEC)


def test_sigkill_mid_staged_sweep_then_rerun_equals_uninterrupted(tmp_path):
    """The resumed staged sweep trains the whole ensemble again (so the same numbers) and
    records only the runs still missing."""
    _kill_mid_sweep_then_rerun(tmp_path, STAGED)
    _assert_one_ensemble(tmp_path)


def test_sigkill_mid_staged_pool_sweep_then_rerun_equals_uninterrupted(tmp_path):
    """The same with the runs measured in 2 worker processes: the kill lands while they
    measure; they leave with the driver, and the resumed sweep equals the in-process one."""
    _kill_mid_sweep_then_rerun(tmp_path, STAGED, workers=2)
    _assert_one_ensemble(tmp_path)


def _assert_one_ensemble(tmp_path) -> None:
    with sqlite3.connect(store_path(tmp_path / "killed")) as conn:
        infos = [json.loads(t) for (t,) in conn.execute("SELECT info_json FROM runs")]
    assert [i["ensemble"]["size"] for i in infos] == [8] * 8


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (Linux /proc; empty elsewhere)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(stat.parent.name))
    return found


def _kill_mid_sweep_then_rerun(tmp_path, spec: dict, workers: int = 1) -> None:
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "killed"
    cmd = _command(spec_path, out, workers)
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while done_runs(out / "results.sqlite") < 2 and proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the sweep recorded no run within 120 s")
        time.sleep(0.02)
    children = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    if workers > 1 and Path("/proc").is_dir():  # the pool's processes leave with the driver
        assert children, "the sweep measured in no worker process"
        deadline = time.monotonic() + 30
        while any(process_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(process_alive(pid) for pid in children), (
            "worker processes outlived the driver")
    partial = runs_frame(out)
    assert 2 <= len(partial) < 8, "the kill must land mid-sweep"

    rerun = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(partial)} already in the store" in rerun.stderr

    reference = tmp_path / "reference"
    summary = run_sweep(spec_from_dict(spec), reference, progress=False, threads=1)
    assert summary.done == 8
    resumed = runs_frame(out)
    assert len(resumed) == 8 and set(resumed["status"]) == {"done"}
    assert comparable_runs(resumed).equals(comparable_runs(runs_frame(reference)))
    assert comparable_series(series_frame(out)).equals(comparable_series(series_frame(reference)))
