"""SIGINT (Ctrl-C, `kill -INT`) and SIGTERM (`kill`, schedulers) stop `flatvol run` on every
backend, and `flatvol sgd-vs-bayes` with its pool of trainers: within seconds, one line on
stderr (the runs recorded, how to resume), exit code 130 / 143, no process left behind;
re-running the same command then gives the store an uninterrupted sweep gives.

Real signals, to a real `flatvol run` in its own session: to the whole process group (what a
terminal's Ctrl-C does) or to the driver alone (what `timeout -s INT` and schedulers do)."""

from __future__ import annotations

import os
import re
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

# 4 runs, each trained with during-training volumes: a signal after the first record lands
# while the next run trains.
TRAINING = tiny_spec(sweep__attack_sizes=[0, 10], train__post_train_epochs=60,
                     during={"every": 20, "measures": ["volume"]})
# Planned by stage: the 4 networks train as one ensemble, then each is measured (the paper
# maximizer is the slow part): a signal after the first record lands mid-measuring.
MEASURING = tiny_spec(sweep__attack_sizes=[0, 10], train__ensemble=True,
                      measures__sharpness={"maximizer": "paper"})
RUNS = 4
# Generous bounds, not timings: a stopped sweep takes a few seconds; one that hangs (the
# deadlock this file guards against) never ends, and is then killed and reported.
STOP_WITHIN_S = 90.0
RECORD_WITHIN_S = 240.0
INTERRUPTED_LINE = re.compile(
    r"interrupted \((SIGINT|SIGTERM)\): (\d+) of 4 runs recorded in (.+); run the same command "
    r"to resume")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, Path]:
    """Each spec's store, swept without interruption in this process (one torch thread)."""
    outs = {}
    for name, spec in (("training", TRAINING), ("measuring", MEASURING)):
        outs[name] = tmp_path_factory.mktemp("uninterrupted") / name
        summary = run_sweep(spec_from_dict(spec), outs[name], progress=False, threads=1)
        assert summary.done == RUNS, summary.failures
    return outs


def _command(spec_path: Path, out: Path, workers: int, backend: str) -> list[str]:
    return [sys.executable, "-m", "flatvol", "run", str(spec_path), "--out", str(out),
            "--threads", "1", "--workers", str(workers), "--backend", backend, "--quiet"]


def _session(sid: int) -> set[int]:
    """The processes of session `sid` (the sweep's driver and every process it started)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:
            found.add(int(stat.parent.name))
    return found


def _pool_workers(pid: int) -> set[int]:
    """The pool workers (multiprocessing spawn children) the driver `pid` started."""
    found = set()
    for proc in _session(pid) - {pid}:
        try:
            if b"spawn_main" in Path(f"/proc/{proc}/cmdline").read_bytes():
                found.add(proc)
        except OSError:
            continue
    return found


def _wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + RECORD_WITHIN_S
    while not condition():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, f"not {what} within {RECORD_WITHIN_S} s"
        time.sleep(0.02)


def _interrupt_then_resume(tmp_path: Path, reference: Path, spec: dict, *, workers: int,
                           signum: int, to_group: bool, when: str,
                           backend: str = "local") -> str:
    """Start `flatvol run`, send `signum` (to its process group: Ctrl-C; else to the driver)
    `when` 'starting' (pool workers started, importing) or 'recorded' (one run recorded),
    check how it stopped, re-run the same command, compare the store with `reference`.

    Returns:
        The interrupted command's stderr line.
    """
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    cmd = _command(spec_path, out, workers, backend)
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for((lambda: bool(_pool_workers(proc.pid))) if when == "starting"
                  else (lambda: done_runs(out / "results.sqlite") >= 1), proc, when)
        if to_group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        try:
            _, stderr = proc.communicate(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`flatvol run` did not stop within {STOP_WITHIN_S} s of "
                        f"{signal.Signals(signum).name} (deadlock)")
    finally:
        leftover = _stop_session(proc.pid)

    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert not leftover, f"processes outlived the sweep: {sorted(leftover)}"
    partial = len(runs_frame(out))
    assert partial < RUNS, "the signal must land mid-sweep"

    rerun = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    # Ray announces itself on each start: the interrupt adds exactly one line to that
    lines = [line for line in stderr.splitlines() if line not in rerun.stderr.splitlines()]
    assert len(lines) == 1, stderr
    if backend == "local":
        assert stderr.splitlines() == lines
    match = INTERRUPTED_LINE.fullmatch(lines[0])
    assert match, lines[0]
    assert match[1] == signal.Signals(signum).name
    assert Path(match[3]) == out / "results.sqlite"
    assert int(match[2]) == partial
    assert f"{partial} already in the store" in rerun.stderr

    resumed = runs_frame(out)
    assert len(resumed) == RUNS and set(resumed["status"]) == {"done"}
    assert comparable_runs(resumed).equals(comparable_runs(runs_frame(reference)))
    assert comparable_series(series_frame(out)).equals(
        comparable_series(series_frame(reference)))
    return lines[0]


def _stop_session(sid: int) -> set[int]:
    """The processes of session `sid` still alive a while after its driver ended (SIGKILLed
    after that, so that a failing test leaves none behind either)."""
    deadline = time.monotonic() + 30
    alive = {pid for pid in _session(sid) if process_alive(pid)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {pid for pid in alive if process_alive(pid)}
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


def test_in_process_sweep_stops_on_sigint_to_the_driver_mid_training(tmp_path, uninterrupted):
    """`--workers 1`, `kill -INT` of the driver while a run trains: exit 130 with the line
    (typer used to turn the interrupt into a silent exit 130)."""
    line = _interrupt_then_resume(tmp_path, uninterrupted["training"], TRAINING, workers=1,
                                  signum=signal.SIGINT, to_group=False, when="recorded")
    assert line.startswith("interrupted (SIGINT): ")


def test_in_process_staged_sweep_stops_on_sigterm_mid_measuring(tmp_path, uninterrupted):
    _interrupt_then_resume(tmp_path, uninterrupted["measuring"], MEASURING, workers=1,
                           signum=signal.SIGTERM, to_group=False, when="recorded")


def test_pool_sweep_stops_on_ctrl_c_while_its_workers_start(tmp_path, uninterrupted):
    """Ctrl-C reaches the workers while they import: they ignore it (no KeyboardInterrupt
    traceback from a child); the driver ends them."""
    _interrupt_then_resume(tmp_path, uninterrupted["training"], TRAINING, workers=2,
                           signum=signal.SIGINT, to_group=True, when="starting")


def test_pool_sweep_stops_on_sigint_to_the_driver_mid_training(tmp_path, uninterrupted):
    """The driver alone is interrupted while its workers train and send progress: it ends
    them (this hung for good: the workers waited on a progress queue nobody read)."""
    _interrupt_then_resume(tmp_path, uninterrupted["training"], TRAINING, workers=2,
                           signum=signal.SIGINT, to_group=False, when="recorded")


def test_pool_workers_ignore_a_sigint_of_their_own(tmp_path, uninterrupted):
    """SIGINT to the workers alone, as they start (importing torch) and again mid-run: only
    the driver acts on Ctrl-C, so they go on, and the sweep ends as an uninterrupted one."""
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(TRAINING))
    out = tmp_path / "out"
    proc = subprocess.Popen(_command(spec_path, out, 2, "local"), env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait_for(lambda: bool(_pool_workers(proc.pid)), proc, "starting")
        for recorded in (False, True):
            if recorded:
                _wait_for(lambda: done_runs(out / "results.sqlite") >= 1, proc, "recorded")
            for worker in _pool_workers(proc.pid):
                os.kill(worker, signal.SIGINT)
        _, stderr = proc.communicate(timeout=RECORD_WITHIN_S)
    finally:
        leftover = _stop_session(proc.pid)
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert not leftover, f"processes outlived the sweep: {sorted(leftover)}"
    assert comparable_runs(runs_frame(out)).equals(
        comparable_runs(runs_frame(uninterrupted["training"])))


def test_staged_pool_sweep_stops_on_sigterm_mid_measuring(tmp_path, uninterrupted):
    """The ensemble trained in the driver, its networks measured in 2 workers when SIGTERM
    reaches the driver: it ends the workers (SIGTERM kills a worker quietly)."""
    _interrupt_then_resume(tmp_path, uninterrupted["measuring"], MEASURING, workers=2,
                           signum=signal.SIGTERM, to_group=False, when="recorded")


def test_ray_sweep_stops_on_ctrl_c_mid_training(tmp_path, uninterrupted):
    """Ray: Ctrl-C reaches every process; Ray's own started deaf to it, and the driver shuts
    Ray down (Ray's waits raise their own KeyboardInterrupt: the line still says SIGINT)."""
    pytest.importorskip("ray")
    _interrupt_then_resume(tmp_path, uninterrupted["training"], TRAINING, workers=2,
                           signum=signal.SIGINT, to_group=True, when="recorded", backend="ray")


def test_other_commands_stop_with_the_same_one_line(tmp_path):
    """`flatvol train` (as every command: flatvol.cli) ends on SIGTERM with one line and exit
    code 143, writing no run (it used to die silently on the signal's default action)."""
    out = tmp_path / "run"
    env = {**subprocess_env(), "FLATVOL_PROGRESS_INTERVAL": "0"}  # a line per epoch
    proc = subprocess.Popen([sys.executable, "-m", "flatvol", "train", "--out", str(out),
                             "--train-size", "50", "--test-size", "50", "--model", "fcn:8",
                             "--lr", "1e-12", "--max-epochs", "100000"],  # never fits S
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stderr.readline().startswith("train: "), "no progress line (training)"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=STOP_WITHIN_S)
    finally:
        leftover = _stop_session(proc.pid)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert [line for line in stderr.splitlines() if not line.startswith("train: ")] == [
        "interrupted (SIGTERM)"], stderr[-3000:]
    assert not leftover and not (out / "run.json").exists()


# Six chunks of networks, trained two at a time by `flatvol sgd-vs-bayes --workers 2`.
SGD_VS_BAYES = """name = "signals"
[data]
train_size = 100
test_size = 8
[model]
arch = "fcn:8"
[train]
max_epochs = 1000
[[optimizers]]
name = "sgd"
lr = 0.02
[sampling]
networks = 120
chunk = 20
[analysis]
min_count = 2
"""


def _chunks(db: Path) -> int:
    """Chunks of networks recorded in the store file `db` (0 before it has its tables)."""
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM function_chunk_seconds").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_sgd_vs_bayes_pool_stops_on_ctrl_c_and_resumes_to_the_same_functions(tmp_path):
    """`flatvol sgd-vs-bayes --workers 2`, Ctrl-C once a chunk is recorded: exit 130 with one
    line, its workers ended, only whole chunks in the store; the re-run trains the rest and
    gives the functions of one process training every chunk in turn."""
    from flatvol.experiments.execute import torch_threads
    from flatvol.sgd_vs_bayes.run import run_sgd_vs_bayes
    from flatvol.sgd_vs_bayes.spec import load_sgd_vs_bayes_spec

    spec_path = tmp_path / "signals.toml"
    spec_path.write_text(SGD_VS_BAYES)
    out, alone = tmp_path / "out", tmp_path / "alone"
    cmd = [sys.executable, "-m", "flatvol", "sgd-vs-bayes", str(spec_path), "--out", str(out),
           "--workers", "2", "--threads", "2", "--quiet"]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(lambda: _chunks(out / "results.sqlite") >= 1, proc, "recorded")
        assert len(_pool_workers(proc.pid)) == 2
        os.killpg(proc.pid, signal.SIGINT)
        try:
            _, stderr = proc.communicate(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`flatvol sgd-vs-bayes` did not stop within {STOP_WITHIN_S} s")
    finally:
        leftover = _stop_session(proc.pid)
    assert proc.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert stderr.splitlines() == ["interrupted (SIGINT)"], stderr[-3000:]
    assert not leftover, f"processes outlived the run: {sorted(leftover)}"
    assert 1 <= _chunks(out / "results.sqlite") < 6, "the signal must land mid-training"
    rerun = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    with torch_threads(1):
        run_sgd_vs_bayes(load_sgd_vs_bayes_spec(spec_path), alone, data_dir="embedded")
    assert _chunks(out / "results.sqlite") == 6
    assert (out / "functions.csv").read_text() == (alone / "functions.csv").read_text()
