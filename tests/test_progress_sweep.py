"""The sweep's display is flatvol.progress: plain lines at FLATVOL_PROGRESS_INTERVAL when
redirected, and one progress callback signature (ProgressEvent) from the backends down."""

from __future__ import annotations

import inspect
import io
import sys
from pathlib import Path

import pytest

from flatvol.experiments import execute
from flatvol.experiments.backends import Backend, LocalBackend
from flatvol.experiments.ray_backend import RayBackend
from flatvol.experiments.runner import run_sweep
from flatvol.experiments.spec import spec_from_dict
from flatvol.progress import INTERVAL_ENV, ProgressEvent, ProgressFn

sys.path.insert(0, str(Path(__file__).parent / "experiments"))
from experiments_helpers import tiny_spec  # noqa: E402

SPEC = tiny_spec(data__train_size=30, data__test_size=30, sweep__attack_sizes=[0, 10],
                 sweep__seeds=2, measures__final=["volume"])


@pytest.fixture(autouse=True)
def _embedded_data(monkeypatch):
    monkeypatch.delenv("FLATVOL_DATA", raising=False)


def _sweep_lines(tmp_path: Path, name: str) -> list[str]:
    text = io.StringIO()
    summary = run_sweep(spec_from_dict(SPEC), tmp_path / name, progress=True, threads=1,
                        stream=text)
    assert summary.done == 4, summary.failures
    out = text.getvalue()
    assert "\r" not in out and "\x1b[" not in out, repr(out[:300])  # plain: no ANSI
    return out.splitlines()


def test_redirected_sweep_writes_a_plain_line_at_each_report_at_interval_0(tmp_path,
                                                                           monkeypatch):
    """FLATVOL_PROGRESS_INTERVAL=0: every epoch a run reports gives a line, so each run is
    seen training; the last line has every stage complete."""
    monkeypatch.setenv(INTERVAL_ENV, "0")
    lines = _sweep_lines(tmp_path, "zero")
    assert all(line.startswith("progress: sweep ") for line in lines), lines[:3]
    for attack, seed in [(0, 0), (10, 0), (0, 1), (10, 1)]:
        running = f"running sgd attack={attack} seed={seed}: fit  acc_S"
        assert any(running in line for line in lines), (running, lines[:5])
    assert "sweep 4/4 runs; networks fitted 4/4; volumes computed 4/4" in lines[-1]
    assert lines[-1].endswith(", done")


def test_redirected_sweep_at_a_long_interval_writes_only_its_milestones(tmp_path, monkeypatch):
    """An interval longer than the sweep: one line as each stage completes, one at the end,
    none in between."""
    monkeypatch.setenv(INTERVAL_ENV, "3600")
    lines = _sweep_lines(tmp_path, "long")
    assert len(lines) == 3, lines  # networks fitted, volumes computed, the final line
    assert "networks fitted 4/4; volumes computed 3/4" in lines[0]
    assert "networks fitted 4/4; volumes computed 4/4" in lines[1]
    assert lines[2].startswith("progress: sweep 4/4 runs") and lines[2].endswith(", done")


def test_one_progress_callback_signature_from_the_backends_down():
    """The backends and the executors take one `progress` (a ProgressFn of ProgressEvents);
    no second callback for stages."""
    for run in (Backend.run, LocalBackend.run, RayBackend.run):
        params = inspect.signature(run).parameters
        assert list(params) == ["self", "todo", "ctx", "record", "workers", "progress"], run
        assert "ProgressFn" in str(params["progress"].annotation)
    for function in (execute.execute_run, execute.train_group, execute.execute_group):
        params = inspect.signature(function).parameters
        assert "stages" not in params and "ProgressFn" in str(params["progress"].annotation)
    assert not hasattr(execute, "StageFn")
    seen: list[ProgressEvent] = []
    report: ProgressFn = seen.append
    report(ProgressEvent("key", stage=execute.FITTED))
    assert seen[0].stage == "fitted" and seen[0].completed == 0 and seen[0].total is None


def test_the_line_shows_the_latest_trainings_and_drops_an_ensemble_that_ended():
    """Runs in flight are listed most recent report first, and a report with all its steps done
    (an ensemble's last epoch) ends its entry: a finished ensemble that reported under its first
    run's key must not hide the one still training."""
    from flatvol.experiments.runner import SweepProgress

    display = SweepProgress(6, 0, enabled=True, stream=io.StringIO(), measures=("volume",))
    display.report(ProgressEvent("sgd", "ensemble of 2: 0 stopped", 5, 2000))
    display.report(ProgressEvent("adam", "ensemble of 2: 1 stopped", 3, 2000))
    assert display.plain_text().endswith(
        "running adam: ensemble of 2: 1 stopped, epoch 3/2000, "
        "sgd: ensemble of 2: 0 stopped, epoch 5/2000")
    display.report(ProgressEvent("sgd", "ensemble of 2: 2 stopped", 9, 9))  # sgd's ended
    display.report(ProgressEvent("adam", "ensemble of 2: 2 stopped", 4, 4))  # adam's too
    display.report(ProgressEvent("entropy-sgd", "ensemble of 2: 0 stopped", 1, 2000))
    assert display.plain_text().endswith(
        "running entropy-sgd: ensemble of 2: 0 stopped, epoch 1/2000")

