"""Reading the results store (flatvol.experiments.store): pandas views of its tables for the
analysis, and the read-only look-up of recorded runs that a command makes before it may be
refused (so it never writes to the folder).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from flatvol.experiments.store import KEY_COLUMNS, RunKey, Store, read_connection, store_path

# Columns of runs_frame taken from the run's info JSON (absent keys give NaN/None).
INFO_COLUMNS = ("train_status", "epochs", "fitted_at", "task", "classes", "train_size",
                "test_size", "data_seed", "model", "optimizer_name", "lr", "batch_size",
                "measured_model")
RUN_COLUMNS = ("spec_hash", "spec_name", "optimizer", "attack_size", "seed", "status", "reason",
               "volume_estimator", "seconds", "finished_at", "config_hash")
SERIES_COLUMNS = ("spec_hash", "optimizer", "attack_size", "seed", "epoch", "phase", "metric",
                  "value")


@contextmanager
def _reading(db: str | Path | Store) -> Iterator[sqlite3.Connection]:
    """A connection to read `db` from: an open Store's own, else a new read-only one to the
    verified store (flatvol.experiments.store.read_connection), closed after."""
    if isinstance(db, Store):
        yield db.conn
        return
    conn = read_connection(db)  # verified, and read-only: a report writes nothing there
    try:
        yield conn
    finally:
        conn.close()


def recorded_runs(out: str | Path, spec_hash: str) -> dict[RunKey, tuple[str, str]]:
    """(status, config_hash) of every run of `spec_hash` already in OUT's store, read without
    writing anything (an empty dict where OUT has no store yet).

    Args:
        out: the output directory (or its store file).
        spec_hash: the spec whose runs to list.

    Returns:
        {RunKey: (status, config_hash)}.
    """
    if not store_path(out).exists():
        return {}
    # This look-up runs before a command may be refused, so it must not touch the folder.
    with _reading(out) as conn:
        rows = conn.execute(
            "SELECT optimizer, attack_size, seed, status, config_hash FROM runs "
            "WHERE spec_hash=?", (spec_hash,)).fetchall()
    return {RunKey(spec_hash, o, a, s): (st, ch) for o, a, s, st, ch in rows}


def runs_frame(db: str | Path | Store, spec_hash: str | None = None) -> pd.DataFrame:
    """One row per recorded run: RUN_COLUMNS, INFO_COLUMNS (from the info JSON), then one column
    per scalar result (test_acc_E, log10_volume, log10_sharpness, ...). `db` is an output
    directory, a store file or a Store.

    Args:
        db: An output directory, a store file or an open Store.
        spec_hash: Only the runs of this spec (default: every spec in the store).

    Returns:
        A DataFrame with one row per recorded run.

    Raises:
        StoreError: If db is not an existing flatvol results store.
    """
    with _reading(db) as conn:
        where, args = ("WHERE r.spec_hash = ?", (spec_hash,)) if spec_hash else ("", ())
        runs = pd.read_sql_query(
            "SELECT r.spec_hash, s.name AS spec_name, r.optimizer, r.attack_size, r.seed, "
            "r.status, r.reason, r.volume_estimator, r.seconds, r.finished_at, r.config_hash, "
            f"r.info_json FROM runs r LEFT JOIN specs s USING (spec_hash) {where} "
            "ORDER BY r.spec_hash, r.optimizer, r.attack_size, r.seed", conn, params=args)
        results = pd.read_sql_query(
            f"SELECT spec_hash, optimizer, attack_size, seed, name, value FROM results "
            f"{where.replace('r.', '')}", conn, params=args)
    infos = [json.loads(text) for text in runs.pop("info_json")]
    for col in INFO_COLUMNS:
        runs[col] = [info.get(col) for info in infos]
    if not results.empty:
        wide = results.pivot_table(index=list(KEY_COLUMNS), columns="name", values="value",
                                   aggfunc="first", dropna=False).reset_index()
        wide.columns.name = None
        clash = [c for c in wide.columns if c in runs.columns and c not in KEY_COLUMNS]
        wide = wide.rename(columns={c: f"result_{c}" for c in clash})
        runs = runs.merge(wide, on=list(KEY_COLUMNS), how="left")
    return runs.reset_index(drop=True)


def series_frame(db: str | Path | Store, spec_hash: str | None = None) -> pd.DataFrame:
    """Long per-epoch table: spec_hash, optimizer, attack_size, seed, epoch, phase, metric, value,
    ordered by run, epoch, then the order the values were taken (so at an alpha event the
    'post' row measured before the scaling precedes the 'alpha' row measured after it).

    Args:
        db: An output directory, a store file or an open Store.
        spec_hash: Only the runs of this spec (default: every spec in the store).

    Returns:
        The long per-epoch DataFrame, one row per recorded value.

    Raises:
        StoreError: If db is not an existing flatvol results store.
    """
    with _reading(db) as conn:
        where, args = ("WHERE spec_hash = ?", (spec_hash,)) if spec_hash else ("", ())
        return pd.read_sql_query(
            f"SELECT {', '.join(SERIES_COLUMNS)} FROM series {where} "
            "ORDER BY spec_hash, optimizer, attack_size, seed, epoch, rowid", conn, params=args)


def specs_frame(db: str | Path | Store) -> pd.DataFrame:
    """The specs recorded in the store (spec_hash, name, spec_json, path, source_text,
    created_at).

    Args:
        db: An output directory, a store file or an open Store.

    Returns:
        A DataFrame with one row per recorded spec, ordered by creation time.

    Raises:
        StoreError: If db is not an existing flatvol results store.
    """
    with _reading(db) as conn:
        return pd.read_sql_query("SELECT * FROM specs ORDER BY created_at", conn)

