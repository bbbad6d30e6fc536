"""The results store: one SQLite file (DIR/results.sqlite, WAL mode) per output directory.

Tables (see docs/EXPERIMENTS.md):
- meta(key, value)                      schema_version, flatvol/torch/python versions, platform
- specs(spec_hash, name, spec_json, path, source_text, created_at)
- runs(spec_hash, optimizer, attack_size, seed, config_hash, status, reason, volume_estimator,
       info_json, seconds, finished_at)         key (spec_hash, optimizer, attack_size, seed)
- results(spec_hash, optimizer, attack_size, seed, name, value)       one row per scalar
- series(spec_hash, optimizer, attack_size, seed, epoch, phase, metric, value)   per epoch
- function_experiments, function_samples, function_volumes, function_priors,
  function_posteriors: sgd-vs-bayes, via
  flatvol.sgd_vs_bayes.function_store

A run is written in a single transaction (runs row + its results + its series), so a process
killed at any point leaves either the whole run or nothing, and the primary key makes a duplicate
impossible. A write that fails because the disk is full or the place is not writable rolls back
and raises a one-line WriteError naming the store: what was stored stays consistent, and a
re-run resumes once there is room.

A store is verified when opened (`PRAGMA quick_check`: the b-tree structure of every page, about
30 ms on a store of 3000 runs and 60000 results, 0.5 s on one of 100 MB; integrity_check also
matches the indexes against the tables but takes about 5 times longer): a damaged store is
refused in one line (DamagedStoreError) saying how to recover it, before anything is written.
`read_connection` opens a store for reading without writing to its folder (a read-only folder
included). Reading it back (pandas views for the analysis, the read-only look-up of recorded
runs) is flatvol.experiments.store_frames.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from flatvol.errors import FlatvolError, WriteError
from flatvol.io import dumps_json, finite_or_none, unwritable

STORE_FILE = "results.sqlite"
SCHEMA_VERSION = "1"
KEY_COLUMNS = ("spec_hash", "optimizer", "attack_size", "seed")
# How the reason of a run that failed because its network did not fit begins.
DID_NOT_FIT = "did_not_fit"

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
CREATE TABLE IF NOT EXISTS function_posteriors (
    posterior_key TEXT NOT NULL, function TEXT NOT NULL, log10_p REAL, stderr_log10 REAL,
    reliable INTEGER NOT NULL, PRIMARY KEY (posterior_key, function));
"""

class StoreError(FlatvolError):
    """A results store that cannot be opened or is inconsistent."""


class DamagedStoreError(FlatvolError):
    """A results store whose SQLite file fails its integrity check. Not a StoreError: a sweep
    that meets it while recording must stop, not take it for a run recorded elsewhere."""


# SQLite's messages of a write that cannot succeed where the store is (SQLITE_FULL, SQLITE_IOERR,
# SQLITE_READONLY, SQLITE_CANTOPEN): the user must free space or choose another place.
_WRITE_FAILURES = ("database or disk is full", "disk i/o error", "readonly database",
                   "unable to open database file")
# SQLite's message of a file whose pages are damaged (SQLITE_CORRUPT).
_DAMAGE = ("malformed",)
# SQLite's message of a file that is no SQLite database at all (SQLITE_NOTADB).
_NOT_A_DATABASE = "file is not a database"
# Problems of a store's integrity check shown in the one-line refusal.
_SHOWN_PROBLEMS = 2


def damaged_store(path: Path, problem: str) -> DamagedStoreError:
    """The one-line refusal of a damaged store, saying how to recover.

    Args:
        path: The store file.
        problem: What the integrity check (or SQLite) reported.

    Returns:
        The error to raise.
    """
    return DamagedStoreError(
        f"{path} is damaged (integrity check: {' '.join(problem.split())}): move it away and "
        f"re-run, or recover what it holds with `sqlite3 {path} .recover | sqlite3 "
        f"{path.with_name('recovered.sqlite')}`")


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a store whose pages fail SQLite's quick_check (see the module docstring).

    Args:
        conn: An open connection to the store.
        path: The store file, for the message.

    Raises:
        DamagedStoreError: naming the file, the first problems and how to recover.
        WriteError: SQLite cannot even read it for want of space or permission.
        StoreError: it is no SQLite file at all.
    """
    try:
        rows = conn.execute(f"PRAGMA quick_check({_SHOWN_PROBLEMS + 1})").fetchall()
    except sqlite3.DatabaseError as exc:
        # A full disk can keep SQLite from reading too (no room for its -shm file): not damage.
        failure = sqlite_failure(path, exc)
        raise (failure if isinstance(failure, (WriteError, StoreError))
               else damaged_store(path, str(exc))) from None
    # One row per problem, or one row of several lines; a heading such as
    # '*** in database main ***' names no problem.
    problems = [line.strip() for row in rows for line in str(row[0]).splitlines()]
    if problems != ["ok"]:
        shown = [p for p in problems if p and not p.startswith("***")] or problems
        raise damaged_store(path, "; ".join(shown[:_SHOWN_PROBLEMS]))


def sqlite_failure(path: Path, exc: sqlite3.Error) -> FlatvolError | None:
    """The one-line error of an SQLite error that a user must act on, if it is one.

    Args:
        path: The store file.
        exc: What SQLite raised.

    Returns:
        A WriteError (full disk, unwritable place), a DamagedStoreError (damaged pages), a
        StoreError (no SQLite file), or None for any other error.
    """
    text = str(exc)
    if any(m in text.lower() for m in _WRITE_FAILURES):
        return WriteError(f"{path}: cannot write the results store: {text}; the runs it holds "
                          "are intact: free space (or choose a writable --out) and re-run to "
                          "resume")
    if any(m in text.lower() for m in _DAMAGE):
        return damaged_store(path, text)
    if _NOT_A_DATABASE in text.lower():
        return StoreError(f"{path}: not a flatvol results store ({text})")
    return None


def _read_only_uri(path: Path) -> str:
    # A cleanly closed store (no -wal file) is read as immutable, which creates no -wal or -shm
    # file (a read-only folder cannot hold them, and a refused command must not create them);
    # after a killed sweep the runs may still sit in the -wal, which a read-only connection
    # reads through the -wal/-shm files already there.
    wal = path.with_name(path.name + "-wal").exists()
    mode = "mode=ro" if wal else "mode=ro&immutable=1"
    return f"{path.resolve().as_uri()}?{mode}"  # as_uri quotes '?', '#', ' '


# Stores verified in this process, by (path, size and mtime of the file and of its -wal): a
# report opens the store four times, and an unchanged file need not be checked again.
_verified: set[tuple[str, tuple[int, int], tuple[int, int]]] = set()


def _signature(path: Path) -> tuple[str, tuple[int, int], tuple[int, int]]:
    def stat(p: Path) -> tuple[int, int]:
        try:
            st = p.stat()
        except OSError:
            return (-1, -1)
        return (st.st_size, st.st_mtime_ns)

    return (str(path.resolve()), stat(path), stat(path.with_name(path.name + "-wal")))


def read_connection(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to a verified results store, which writes nothing to its folder.

    Args:
        path: An output directory or its store file.

    Returns:
        The open connection (the caller closes it).

    Raises:
        StoreError: no store, not a flatvol store; DamagedStoreError: it fails its integrity
            check.
    """
    path = store_path(path)
    if not path.exists():
        raise StoreError(f"{path}: no results store (run 'flatvol run SPEC --out DIR' first)")
    if not path.is_file():
        raise StoreError(f"{path}: expected a results store file, got a directory")
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True, timeout=60.0)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the results store ({exc})") from None
    try:
        signature = _signature(path)
        if signature not in _verified:
            check_integrity(conn, path)
            _verified.add(signature)
        conn.execute("SELECT 1 FROM runs LIMIT 1")
    except FlatvolError:
        conn.close()
        raise
    except sqlite3.DatabaseError as exc:
        conn.close()
        failure = sqlite_failure(path, exc)
        raise (failure or StoreError(f"{path}: not a flatvol results store ({exc})")) from None
    return conn


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
        existed = self.path.is_file()
        if not create and not existed:
            raise StoreError(f"{self.path}: no results store (run 'flatvol run SPEC --out DIR')")
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise (unwritable(self.path.parent, exc) or exc) from None
        try:
            self.conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise (sqlite_failure(self.path, exc)
                   or StoreError(f"{self.path}: not a usable results store ({exc})")) from None
        try:
            if existed:  # before anything is written: a damaged store is left as it is
                check_integrity(self.conn, self.path)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            if create:
                self.conn.executescript(SCHEMA)
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                  (SCHEMA_VERSION,))
        except FlatvolError:
            self.conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            # A store begun here on a full disk is left as it is: SQLite opens it again (an
            # empty file is an empty database), and deleting it could race another sweep.
            self.conn.close()
            raise (sqlite_failure(self.path, exc)
                   or StoreError(f"{self.path}: not a usable results store ({exc})")) from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed whole, or rolled back whole.

        Raises:
            WriteError: the disk is full or the store not writable (rolled back, the store as
                it was before).
        """
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a full disk during COMMIT).
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            failure = sqlite_failure(self.path, exc)
            if failure is None:
                raise
            raise failure from None

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

    def settled(self, spec_hash: str) -> set[RunKey]:
        """The runs whose training needs no second go: done, or failed because the network
        did not fit within its budget (training it again gives the same network: the
        outcome is a function of the run's key and config hash).

        Args:
            spec_hash: The spec whose runs to list.

        Returns:
            Their keys.
        """
        rows = self.conn.execute(
            "SELECT optimizer, attack_size, seed FROM runs WHERE spec_hash=? AND "
            "(status='done' OR reason GLOB ?)", (spec_hash, f"{DID_NOT_FIT}:*")).fetchall()
        return {RunKey(spec_hash, o, a, s) for o, a, s in rows}

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
