"""sgd-vs-bayes in the results store: sampled networks, volumes, and the experiment record.

Tables (created by flatvol.experiments.store; see docs/EXPERIMENTS.md):
- function_samples(sample_key, seed, epochs, fitted, labels_E): one row per trained network; the
  sample key hashes what determines a network (data and its fingerprint, model, train config),
  so a re-run, a larger `networks` or another spec with the same protocol reuses them.
  function_chunk_seconds(sample_key, first_seed, networks, seconds): the training time of each
  chunk, written with it, so that a resumed experiment still reports its compute time.
- function_priors(volume_key, kernel, log10_v_train, prior_label1_json) and
  function_volumes(volume_key, function, log10_v_full, converged): V(y_S), the per-point
  marginals and log10 V(y_S, f) per function f on E; the volume key hashes the data, model and
  volume settings.
- function_experiments(spec_hash, info_json): which samples and volumes make up an experiment,
  with what the report needs (true labels on E, sizes, settings); the spec itself is in `specs`.

A chunk of networks or a batch of volumes is one transaction: a killed run resumes.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from flatvol.experiments.store import Store, read_connection
from flatvol.io import dumps_json, finite_or_none, float_or_nan

Database = Store | sqlite3.Connection  # readers take either


def bits_of(labels: np.ndarray) -> str:
    """A function on E as a '0'/'1' string (E order)."""
    return "".join("1" if v else "0" for v in np.asarray(labels).ravel())


def labels_of(bits: str) -> np.ndarray:
    """The labels (uint8 0/1) of a '0'/'1' function string."""
    return np.frombuffer(bits.encode(), dtype=np.uint8) - ord("0")


@dataclass(frozen=True)
class FunctionSample:
    """Every network trained with one optimizer: its seed, outcome and labels on E."""

    optimizer: str
    seeds: np.ndarray  # (N,)
    epochs: np.ndarray  # (N,)
    fitted: np.ndarray  # (N,) bool
    labels_E: np.ndarray  # (N, |E|) uint8 in {0, 1}
    seconds: float = 0.0  # training time of these networks as recorded (0 where not recorded)

    @property
    def n_fitted(self) -> int:
        return int(self.fitted.sum())

    def counts(self) -> Counter[str]:
        """How often each function on E (a '0'/'1' string in E order) was found by fitted nets."""
        return Counter(bits_of(r) for r in self.labels_E[self.fitted])


@dataclass(frozen=True)
class VolumeTable:
    """log10 V(y_S); per function f on E, log10 V(y_S, f) and hence log10 V(f|S); and per E
    point the prior's P(label 1 | y_S)."""

    estimator: str
    kernel: str
    log10_v_train: float
    log10_v_full: dict[str, float]
    converged: dict[str, bool]
    prior_label1: np.ndarray

    def conditional(self, bits: str) -> float:
        return self.log10_v_full[bits] - self.log10_v_train


@dataclass(frozen=True)
class FunctionExperiment:
    """One recorded sgd-vs-bayes experiment, as the analysis reads it back."""

    spec_hash: str
    info: dict[str, Any]  # name, sizes, labels_E, estimator, analysis settings, keys, ...
    samples: dict[str, FunctionSample]
    volumes: VolumeTable

    @property
    def y_E(self) -> np.ndarray:
        return labels_of(self.info["labels_E"])


def read_chunk(store: Database, sample_key: str, seeds: list[int]) -> FunctionSample | None:
    """The networks of `seeds` if all are recorded under `sample_key`, else None."""
    rows = _conn(store).execute(
        "SELECT seed, epochs, fitted, labels_E FROM function_samples WHERE sample_key=? AND "
        "seed BETWEEN ? AND ? ORDER BY seed", (sample_key, min(seeds), max(seeds))).fetchall()
    rows = [r for r in rows if r[0] in set(seeds)]
    if [r[0] for r in rows] != sorted(seeds):
        return None
    return FunctionSample(
        optimizer="", seeds=np.array([r[0] for r in rows], dtype=np.int64),
        epochs=np.array([r[1] for r in rows], dtype=np.int64),
        fitted=np.array([bool(r[2]) for r in rows]),
        labels_E=np.stack([labels_of(r[3]) for r in rows]),
        seconds=_chunk_seconds(_conn(store), sample_key, min(seeds), len(seeds)))


def _chunk_seconds(conn: sqlite3.Connection, sample_key: str, first_seed: int,
                   networks: int) -> float:
    """Recorded training time of the chunks that lie within seeds first_seed..+networks-1."""
    try:
        row = conn.execute("SELECT SUM(seconds) FROM function_chunk_seconds WHERE sample_key=? "
                           "AND first_seed >= ? AND first_seed + networks <= ?",
                           (sample_key, first_seed, first_seed + networks)).fetchone()
    except sqlite3.OperationalError:  # a store written before the table existed
        return 0.0
    return float(row[0]) if row and row[0] is not None else 0.0


def write_chunk(store: Store, sample_key: str, chunk: FunctionSample) -> None:
    """Record a chunk of trained networks and its training time (chunk.seconds) in one
    transaction (re-trained seeds are replaced)."""
    rows = [(sample_key, int(s), int(e), int(bool(f)), bits_of(labels))
            for s, e, f, labels in zip(chunk.seeds, chunk.epochs, chunk.fitted, chunk.labels_E,
                                       strict=True)]
    with store.transaction() as c:
        c.executemany("INSERT OR REPLACE INTO function_samples VALUES (?, ?, ?, ?, ?)", rows)
        c.execute("INSERT OR REPLACE INTO function_chunk_seconds VALUES (?, ?, ?, ?)",
                  (sample_key, int(chunk.seeds.min()), len(chunk.seeds), float(chunk.seconds)))


def read_prior(store: Database, volume_key: str) -> tuple[str, float, np.ndarray] | None:
    """(kernel description, log10 V(y_S), per-point P(label 1 | y_S)) or None."""
    row = _conn(store).execute("SELECT kernel, log10_v_train, prior_label1_json FROM "
                             "function_priors WHERE volume_key=?", (volume_key,)).fetchone()
    if row is None:
        return None
    return row[0], float_or_nan(row[1]), np.asarray(json.loads(row[2]), dtype=np.float64)


def write_prior(store: Store, volume_key: str, kernel: str, log10_v_train: float,
                prior_label1: np.ndarray) -> None:
    with store.transaction() as c:
        c.execute("INSERT OR REPLACE INTO function_priors VALUES (?, ?, ?, ?)",
                  (volume_key, kernel, finite_or_none(log10_v_train),
                   dumps_json([float(p) for p in prior_label1])))


def read_volumes(store: Database, volume_key: str) -> dict[str, tuple[float, bool]]:
    """function -> (log10 V(y_S, f), converged) for every recorded function."""
    rows = _conn(store).execute("SELECT function, log10_v_full, converged FROM function_volumes "
                              "WHERE volume_key=?", (volume_key,)).fetchall()
    return {f: (float_or_nan(v), bool(c)) for f, v, c in rows}


def write_volumes(store: Store, volume_key: str, values: dict[str, tuple[float, bool]]) -> None:
    with store.transaction() as c:
        c.executemany("INSERT OR REPLACE INTO function_volumes VALUES (?, ?, ?, ?)",
                      [(volume_key, f, finite_or_none(v), int(ok))
                       for f, (v, ok) in values.items()])


def read_experiment_info(store: Database, spec_hash: str) -> dict[str, Any] | None:
    """The recorded info of an experiment, or None if it has not been recorded."""
    row = _conn(store).execute("SELECT info_json FROM function_experiments WHERE spec_hash=?",
                               (spec_hash,)).fetchone()
    return json.loads(row[0]) if row else None


def record_experiment(store: Store, spec_hash: str, info: dict[str, Any]) -> None:
    """Record (or update) which samples and volumes make up an experiment."""
    with store.transaction() as c:
        c.execute("INSERT OR REPLACE INTO function_experiments VALUES (?, ?, ?)",
                  (spec_hash, dumps_json(info),
                   datetime.now(UTC).isoformat(timespec="seconds")))


def load_experiment(store: Database, spec_hash: str, info: dict[str, Any]) -> FunctionExperiment:
    """Read an experiment's samples and volumes back (as the driver recorded them)."""
    seeds = list(range(info["first_seed"], info["first_seed"] + info["networks"]))
    samples = {}
    for name, key in info["sample_keys"]:
        chunk = read_chunk(store, key, seeds)
        if chunk is None:
            continue
        samples[name] = FunctionSample(name, chunk.seeds, chunk.epochs, chunk.fitted,
                                       chunk.labels_E, chunk.seconds)
    kernel, train, marginals = read_prior(store, info["volume_key"]) or ("", np.nan, np.array([]))
    known = read_volumes(store, info["volume_key"])
    volumes = VolumeTable(info["estimator"], kernel, train, {f: v for f, (v, _) in known.items()},
                          {f: ok for f, (_, ok) in known.items()}, marginals)
    return FunctionExperiment(spec_hash, info, samples, volumes)


def load_experiments(db: str | Path | Store) -> list[FunctionExperiment]:
    """Every sgd-vs-bayes experiment in a results store (oldest first); [] if there is none.

    Args:
        db: an output directory, its store file or an open Store (a path is opened read-only).

    Returns:
        The experiments with their samples and volumes.
    """
    conn = db.conn if isinstance(db, Store) else read_connection(db)
    try:
        try:
            rows = conn.execute("SELECT spec_hash, info_json FROM function_experiments "
                                "ORDER BY finished_at, spec_hash").fetchall()
        except sqlite3.OperationalError:  # a store written before these tables existed
            rows = []
        return [load_experiment(conn, h, json.loads(text)) for h, text in rows]
    finally:
        if not isinstance(db, Store):
            conn.close()


def _conn(db: Database) -> sqlite3.Connection:
    return db.conn if isinstance(db, Store) else db
