"""Run backends behind one interface: the registry, the thread defaults, a backend added by name,
and execute_run's failed record keeping the series rows recorded before the failure."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
from experiments_helpers import tiny_spec

import flatvol.experiments.backends as backends
import flatvol.experiments.execute as execute
from flatvol.errors import SpecError
from flatvol.experiments import plan_runs, prepare_context, run_sweep, runs_frame, spec_from_dict
from flatvol.experiments.backends import (
    BACKENDS,
    LocalBackend,
    get_backend,
    resolve_workers,
    staged_train_threads,
)
from flatvol.experiments.context import SweepContext
from flatvol.experiments.execute import TrainedNetwork, execute_run
from flatvol.experiments.ray_backend import RayBackend
from flatvol.validate import check_workers


def test_backends_are_chosen_by_name():
    assert set(BACKENDS) == {"local", "ray"}
    assert isinstance(get_backend("local"), LocalBackend)
    assert isinstance(get_backend("ray"), RayBackend)
    with pytest.raises(SpecError) as info:
        get_backend("slurm")
    assert "'slurm'" in str(info.value) and "local, ray" in str(info.value)
    assert "\n" not in str(info.value)


def test_thread_defaults(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    plain, grouped = spec_from_dict(tiny_spec()), spec_from_dict(tiny_spec(train__ensemble=True))
    local, ray = LocalBackend(), RayBackend()
    assert local.default_threads(plain, 1) is None  # torch's own setting
    assert local.default_threads(plain, 4) == 2  # the cores shared by the processes
    # a staged sweep measures in the processes too (its trainer uses ctx.train_threads)
    assert local.default_threads(grouped, 4) == 2 and local.default_threads(grouped, 1) is None
    assert ray.default_threads(plain, 1) == 1 and ray.default_threads(plain, 4) == 2


def test_staged_trainer_threads_are_the_users_else_the_workers_share():
    # measured: all cores trained the MNIST panel's ensemble slower than the workers' share
    spec = spec_from_dict(tiny_spec(train__ensemble=True))
    assert staged_train_threads(SweepContext(spec=spec, threads=3, train_threads=None)) == 3
    assert staged_train_threads(SweepContext(spec=spec, threads=3, train_threads=2)) == 2


def test_workers_auto_is_one_per_core_at_most_one_per_run(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert resolve_workers("auto", 100) == 8 and resolve_workers("AUTO", 3) == 3
    assert resolve_workers("auto", 0) == 1  # nothing to do: the driver alone
    assert resolve_workers(3, 100) == 3 and resolve_workers("5", 1) == 5  # as given
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert resolve_workers("auto", 10) == 1


@pytest.mark.parametrize("bad", [0, -1, "0", "-1", "many", "", 2.5, True])
def test_bad_worker_counts_are_refused_in_one_line(bad):
    with pytest.raises(SpecError) as info:
        check_workers(bad)
    text = str(info.value)
    assert text.startswith("--workers: expected 'auto' or an integer >= 1") and "\n" not in text


def test_run_sweep_uses_a_backend_registered_by_name(tmp_path, monkeypatch):
    calls = []

    class Recording(LocalBackend):
        name = "recording"

        def run(self, todo, ctx, record, workers, progress):
            calls.append([str(r.key) for r in todo])
            super().run(todo, ctx, record, workers, progress)

    monkeypatch.setitem(BACKENDS, "recording", Recording)
    spec = spec_from_dict(tiny_spec(sweep__seeds=1, sweep__attack_sizes=[0],
                                    measures__final=["accuracy"]))
    summary = run_sweep(spec, tmp_path, backend="recording", progress=False, threads=1)
    assert summary.done == 1 and calls == [[str(plan_runs(spec)[0].key)]]
    assert len(runs_frame(tmp_path)) == 1


def test_a_run_failing_mid_training_keeps_its_series(tmp_path, monkeypatch):
    spec = spec_from_dict(tiny_spec(sweep__seeds=1, sweep__attack_sizes=[0],
                                    during={"every": 3, "measures": ["volume"]}))
    ctx = prepare_context(spec, tmp_path, progress=False, threads=1)

    def broken(*args, **kwargs):
        raise RuntimeError("measure exploded")

    monkeypatch.setattr(execute, "compute_measures", broken)
    record = execute_run(plan_runs(spec)[0], ctx)
    assert record.status == "failed" and "RuntimeError: measure exploded" in record.reason
    assert record.info["error"] == record.reason and record.volume_estimator is not None
    epochs = sorted({e for e, _, _, _ in record.series})
    assert epochs == [1, 2, 3]  # the rows of the epochs up to the failing measure


def test_trained_network_is_a_frozen_dataclass():
    fields = [f.name for f in dataclasses.fields(TrainedNetwork)]
    assert fields == ["task", "model", "result", "seconds", "ensemble"]
    trained = TrainedNetwork(None, None, None, 0.0, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        trained.seconds = 1.0  # type: ignore[misc]


def _flatvol_imports(path: Path) -> set[str]:
    """Every flatvol module `path` imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flatvol"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("flatvol"))
    return out


def test_run_modules_import_each_other_without_cycles():
    folder = Path(backends.__file__).parent
    names = ["plan", "context", "execute", "backends", "ray_backend", "runner"]
    graph = {n: {m.rsplit(".", 1)[-1] for m in _flatvol_imports(folder / f"{n}.py")
                 if m.startswith("flatvol.experiments.")} & set(names) for n in names}
    order = ["plan", "context", "execute", "ray_backend", "backends", "runner"]
    for i, name in enumerate(order):  # each module imports only modules before it
        assert graph[name] <= set(order[:i]), (name, graph[name])
