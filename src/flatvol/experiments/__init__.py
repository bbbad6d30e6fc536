"""Experiments: specs and the sweep runner with its resumable SQLite store (the measures a spec
lists are in the catalogue, flatvol.measures).

    spec = load_spec("specs/fig3_mnist_fcn.toml")
    summary = run_sweep(spec, "runs/fig3")           # or `flatvol run SPEC --out DIR`
    runs = runs_frame("runs/fig3")                   # one row per run, one column per measure
    series = series_frame("runs/fig3")               # per-epoch values, long format
"""

from flatvol.errors import SweepError
from flatvol.experiments.backends import BACKENDS, Backend, get_backend
from flatvol.experiments.context import SweepContext, compute_kernel, prepare_context
from flatvol.experiments.execute import TrainedNetwork, execute_group, execute_run
from flatvol.experiments.plan import PlannedRun, plan_runs
from flatvol.experiments.runner import SweepSummary, run_sweep
from flatvol.experiments.spec import ExperimentSpec, load_spec, spec_from_dict
from flatvol.experiments.spec_files import (
    packaged_spec_names,
    packaged_spec_path,
    resolve_spec_path,
)
from flatvol.experiments.store import RunKey, RunRecord, Store, StoreError, store_path
from flatvol.experiments.store_frames import runs_frame, series_frame, specs_frame

__all__ = [
    "BACKENDS",
    "Backend",
    "ExperimentSpec",
    "PlannedRun",
    "RunKey",
    "RunRecord",
    "Store",
    "StoreError",
    "SweepContext",
    "SweepError",
    "SweepSummary",
    "TrainedNetwork",
    "compute_kernel",
    "execute_group",
    "execute_run",
    "get_backend",
    "load_spec",
    "packaged_spec_names",
    "packaged_spec_path",
    "plan_runs",
    "prepare_context",
    "resolve_spec_path",
    "run_sweep",
    "runs_frame",
    "series_frame",
    "spec_from_dict",
    "specs_frame",
    "store_path",
]
