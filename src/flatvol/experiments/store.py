"""The results store: one SQLite file (DIR/results.sqlite, WAL mode) per output directory.

Tables (see docs/EXPERIMENTS.md):
- meta(key, value)                      schema_version, flatvol/torch/python versions, platform
- specs(spec_hash, name, spec_json, path, source_text, created_at)
- runs(spec_hash, optimizer, attack_size, seed, config_hash, status, reason, volume_estimator,
       info_json, seconds, finished_at)         key (spec_hash, optimizer, attack_size, seed)
- results(spec_hash, optimizer, attack_size, seed, name, value)       one row per scalar
- series(spec_hash, optimizer, attack_size, seed, epoch, phase, metric, value)   per epoch
- function_experiments, function_samples, function_volumes, function_priors: sgd-vs-bayes, via
  flatvol.experiments.function_store

A run is written in a single transaction (runs row + its results + its series), so a process
killed at any point leaves either the whole run or nothing, and the primary key makes a duplicate
impossible. `runs_frame` and `series_frame` give pandas views for the analysis.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from flatvol.errors import FlatvolError
from flatvol.io import dumps_json, finite_or_none

STORE_FILE = "results.sqlite"
SCHEMA_VERSION = "1"
KEY_COLUMNS = ("spec_hash", "optimizer", "attack_size", "seed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS specs (
    spec_hash   TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    spec_json   TEXT NOT NULL,
    path        TEXT,
    source_text TEXT,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    spec_hash        TEXT NOT NULL,
    optimizer        TEXT NOT NULL,
    attack_size      INTEGER NOT NULL,
    seed             INTEGER NOT NULL,
    config_hash      TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    reason           TEXT,
    volume_estimator TEXT,
    info_json        TEXT NOT NULL,
    seconds          REAL NOT NULL,
    finished_at      TEXT NOT NULL,
    PRIMARY KEY (spec_hash, optimizer, attack_size, seed)
);
CREATE TABLE IF NOT EXISTS results (
    spec_hash   TEXT NOT NULL,
    optimizer   TEXT NOT NULL,
    attack_size INTEGER NOT NULL,
    seed        INTEGER NOT NULL,
    name        TEXT NOT NULL,
    value       REAL,
    PRIMARY KEY (spec_hash, optimizer, attack_size, seed, name)
);
CREATE TABLE IF NOT EXISTS series (
    spec_hash   TEXT NOT NULL,
    optimizer   TEXT NOT NULL,
    attack_size INTEGER NOT NULL,
    seed        INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,
    phase       TEXT NOT NULL,
    metric      TEXT NOT NULL,
    value       REAL,
    UNIQUE (spec_hash, optimizer, attack_size, seed, epoch, phase, metric)
);
CREATE TABLE IF NOT EXISTS function_experiments (
    spec_hash TEXT PRIMARY KEY, info_json TEXT NOT NULL, finished_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS function_samples (
    sample_key TEXT NOT NULL, seed INTEGER NOT NULL, epochs INTEGER NOT NULL,
    fitted INTEGER NOT NULL, labels_E TEXT NOT NULL, PRIMARY KEY (sample_key, seed));
CREATE TABLE IF NOT EXISTS function_volumes (
    volume_key TEXT NOT NULL, function TEXT NOT NULL, log10_v_full REAL,
    converged INTEGER NOT NULL, PRIMARY KEY (volume_key, function));
CREATE TABLE IF NOT EXISTS function_chunk_seconds (
    sample_key TEXT NOT NULL, first_seed INTEGER NOT NULL, networks INTEGER NOT NULL,
    seconds REAL NOT NULL, PRIMARY KEY (sample_key, first_seed, networks));
CREATE TABLE IF NOT EXISTS function_priors (
    volume_key TEXT PRIMARY KEY, kernel TEXT NOT NULL, log10_v_train REAL,
    prior_label1_json TEXT NOT NULL);
"""

# Columns of runs_frame taken from the run's info JSON (absent keys give NaN/None).
INFO_COLUMNS = ("train_status", "epochs", "fitted_at", "task", "classes", "train_size",
                "test_size", "data_seed", "model", "optimizer_name", "lr", "batch_size",
                "measured_model")
RUN_COLUMNS = ("spec_hash", "spec_name", "optimizer", "attack_size", "seed", "status", "reason",
               "volume_estimator", "seconds", "finished_at", "config_hash")
SERIES_COLUMNS = ("spec_hash", "optimizer", "attack_size", "seed", "epoch", "phase", "metric",
                  "value")


class StoreError(FlatvolError):
    """A results store that cannot be opened or is inconsistent."""


@dataclass(frozen=True)
class RunKey:
    spec_hash: str
    optimizer: str
    attack_size: int
    seed: int

    def as_tuple(self) -> tuple[str, str, int, int]:
        return (self.spec_hash, self.optimizer, int(self.attack_size), int(self.seed))

    def __str__(self) -> str:
        return f"{self.optimizer} attack={self.attack_size} seed={self.seed}"


@dataclass
class RunRecord:
    """Everything one run writes: status ('done' | 'failed' + reason), scalar results, the run's
    info (JSON-able dict) and per-epoch series rows (epoch, phase, metric, value)."""

    key: RunKey
    config_hash: str
    status: Literal["done", "failed"]
    reason: str | None = None
    results: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    series: list[tuple[int, str, str, float]] = field(default_factory=list)
    seconds: float = 0.0
    volume_estimator: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def store_path(out: str | Path) -> Path:
    """The store file of an output directory (or the file itself).

    Args:
        out: An output directory, or a .sqlite store file.

    Returns:
        The path of the store file (out itself if it is a .sqlite file).
    """
    out = Path(out)
    return out if out.suffix == ".sqlite" else out / STORE_FILE


class Store:
    """The SQLite results store of one output directory."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = store_path(path)
        if not create and not self.path.is_file():
            raise StoreError(f"{self.path}: no results store (run 'flatvol run SPEC --out DIR')")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            if create:
                self.conn.executescript(SCHEMA)
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                  (SCHEMA_VERSION,))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable results store ({exc})") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def add_spec(self, spec_hash: str, name: str, spec_json: str, path: str | None = None,
                 source_text: str | None = None) -> None:
        """Record a spec (first writer wins: the hash identifies the protocol)."""
        with self.transaction() as c:
            c.execute("INSERT OR IGNORE INTO specs VALUES (?, ?, ?, ?, ?, ?)",
                      (spec_hash, name, spec_json, path, source_text, _now()))

    def set_meta(self, values: dict[str, str]) -> None:
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                          [(k, str(v)) for k, v in values.items()])

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def run_status(self, key: RunKey) -> tuple[str, str] | None:
        """(status, config_hash) of a recorded run, or None."""
        row = self.conn.execute(
            "SELECT status, config_hash FROM runs WHERE spec_hash=? AND optimizer=? AND "
            "attack_size=? AND seed=?", key.as_tuple()).fetchone()
        return None if row is None else (row[0], row[1])

    def finished(self, spec_hash: str) -> dict[RunKey, tuple[str, str]]:
        rows = self.conn.execute(
            "SELECT optimizer, attack_size, seed, status, config_hash FROM runs WHERE spec_hash=?",
            (spec_hash,)).fetchall()
        return {RunKey(spec_hash, o, a, s): (st, ch) for o, a, s, st, ch in rows}

    def record(self, run: RunRecord, replace_failed: bool = True) -> None:
        """Write one run atomically. A key already 'done' raises StoreError (never a duplicate);
        a 'failed' row for the key is replaced when `replace_failed`."""
        key = run.key.as_tuple()
        info = dumps_json(run.info)
        with self.transaction() as c:
            prev = c.execute("SELECT status FROM runs WHERE spec_hash=? AND optimizer=? AND "
                             "attack_size=? AND seed=?", key).fetchone()
            if prev is not None:
                if prev[0] == "failed" and replace_failed:
                    self._delete(c, key)
                else:
                    raise StoreError(f"{self.path}: run {run.key} is already recorded "
                                     f"({prev[0]})")
            c.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (*key, run.config_hash, run.status, run.reason, run.volume_estimator,
                       info, float(run.seconds), _now()))
            c.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?)",
                          [(*key, name, finite_or_none(v))
                           for name, v in sorted(run.results.items())])
            c.executemany("INSERT INTO series VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          [(*key, int(e), str(p), str(m), finite_or_none(v))
                           for e, p, m, v in run.series])

    @staticmethod
    def _delete(c: sqlite3.Connection, key: tuple) -> None:
        for table in ("runs", "results", "series"):
            c.execute(f"DELETE FROM {table} WHERE spec_hash=? AND optimizer=? AND attack_size=? "
                      "AND seed=?", key)

    def counts(self) -> dict[str, int]:
        return {t: self.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("specs", "runs", "results", "series")}


def _open_readonly(db: str | Path | Store) -> tuple[sqlite3.Connection, bool]:
    if isinstance(db, Store):
        return db.conn, False
    path = store_path(db)
    if not path.is_file():
        raise StoreError(f"{path}: no results store (run 'flatvol run SPEC --out DIR' first)")
    try:
        conn = sqlite3.connect(path, timeout=60.0)
        conn.execute("SELECT 1 FROM runs LIMIT 1")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a flatvol results store ({exc})") from None
    return conn, True


def recorded_runs(out: str | Path, spec_hash: str) -> dict[RunKey, tuple[str, str]]:
    """(status, config_hash) of every run of `spec_hash` already in OUT's store, read without
    writing anything (an empty dict where OUT has no store yet).

    Args:
        out: the output directory (or its store file).
        spec_hash: the spec whose runs to list.

    Returns:
        {RunKey: (status, config_hash)}.
    """
    path = store_path(out)
    if not path.exists():
        return {}
    if not path.is_file():
        raise StoreError(f"{path}: expected a results store file, got a directory")
    try:
        # This look-up runs before a command may be refused, so it must not touch the folder:
        # a cleanly closed store (no -wal file) is read as immutable, which creates no -wal or
        # -shm file; after a killed sweep the runs may still sit in the -wal, which a read-only
        # connection reads through the -wal/-shm files already there.
        wal = path.with_name(path.name + "-wal").exists()
        mode = "mode=ro" if wal else "mode=ro&immutable=1"
        uri = f"{path.resolve().as_uri()}?{mode}"  # as_uri quotes '?', '#', ' '
        conn = sqlite3.connect(uri, uri=True, timeout=60.0)
        try:
            rows = conn.execute(
                "SELECT optimizer, attack_size, seed, status, config_hash FROM runs "
                "WHERE spec_hash=?", (spec_hash,)).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a flatvol results store ({exc})") from None
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
    conn, close = _open_readonly(db)
    try:
        where, args = ("WHERE r.spec_hash = ?", (spec_hash,)) if spec_hash else ("", ())
        runs = pd.read_sql_query(
            "SELECT r.spec_hash, s.name AS spec_name, r.optimizer, r.attack_size, r.seed, "
            "r.status, r.reason, r.volume_estimator, r.seconds, r.finished_at, r.config_hash, "
            f"r.info_json FROM runs r LEFT JOIN specs s USING (spec_hash) {where} "
            "ORDER BY r.spec_hash, r.optimizer, r.attack_size, r.seed", conn, params=args)
        results = pd.read_sql_query(
            f"SELECT spec_hash, optimizer, attack_size, seed, name, value FROM results "
            f"{where.replace('r.', '')}", conn, params=args)
    finally:
        if close:
            conn.close()
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
    conn, close = _open_readonly(db)
    try:
        where, args = ("WHERE spec_hash = ?", (spec_hash,)) if spec_hash else ("", ())
        frame = pd.read_sql_query(
            f"SELECT {', '.join(SERIES_COLUMNS)} FROM series {where} "
            "ORDER BY spec_hash, optimizer, attack_size, seed, epoch, rowid", conn, params=args)
    finally:
        if close:
            conn.close()
    return frame


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
    conn, close = _open_readonly(db)
    try:
        return pd.read_sql_query("SELECT * FROM specs ORDER BY created_at", conn)
    finally:
        if close:
            conn.close()


def iter_keys(frame: pd.DataFrame) -> Iterable[RunKey]:
    for row in frame[list(KEY_COLUMNS)].itertuples(index=False):
        yield RunKey(*row)
