"""Tiny sweeps on the embedded MNIST subset: S=50, E=50, fcn:8 (each run well under a second)."""

from __future__ import annotations

import copy
import os
import sqlite3
from pathlib import Path

import pandas as pd

TINY = {
    "name": "tiny",
    "data": {"task": "mnist", "train_size": 50, "test_size": 50},
    "model": {"arch": "fcn:8"},
    "train": {"lr": 0.05, "max_epochs": 300},
    "sweep": {"attack_sizes": [0, 20], "seeds": 2},
    "measures": {"final": ["volume", "sharpness"], "sharpness": {"maximizer": "fast"}},
}

VOLATILE = ["seconds", "finished_at"]


def tiny_spec(**overrides) -> dict:
    spec = copy.deepcopy(TINY)
    for dotted, value in overrides.items():
        *path, last = dotted.split("__")
        node = spec
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return spec


def comparable_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """runs_frame without wall-clock columns, sorted by key."""
    keys = ["spec_hash", "optimizer", "attack_size", "seed"]
    out = frame.drop(columns=VOLATILE).sort_values(keys).reset_index(drop=True)
    return out[sorted(out.columns)]


def comparable_series(frame: pd.DataFrame) -> pd.DataFrame:
    keys = ["spec_hash", "optimizer", "attack_size", "seed", "epoch", "phase", "metric"]
    return frame.sort_values(keys).reset_index(drop=True)


def subprocess_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FLATVOL_DATA"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def done_runs(db) -> int:
    """Runs recorded 'done' in the store file `db`, read-only (0 before it has its tables)."""
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM runs WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs (Linux /proc; a zombie is not alive)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
