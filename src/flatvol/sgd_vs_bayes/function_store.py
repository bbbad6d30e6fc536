"""sgd-vs-bayes in the results store: sampled networks, volumes, and the experiment record.

Tables (created by flatvol.experiments.store; see docs/EXPERIMENTS.md):
- function_samples(sample_key, seed, epochs, fitted, labels_E): one row per trained network,
  labels_E its function on E as one digit per point (the class, 0..K-1; '0'/'1' for binary); the
  sample key hashes what determines a network (data and its fingerprint, model, train config),
  so a re-run, a larger `networks` or another spec with the same protocol reuses them.
  function_chunk_seconds(sample_key, first_seed, networks, seconds): the training time of each
  chunk, written with it, so that a resumed experiment still reports its compute time.
- function_priors(volume_key, kernel, log10_v_train, prior_label1_json) and
  function_volumes(volume_key, function, log10_v_full, converged): V(y_S), the per-point
  marginals (binary: P(label 1 | y_S) per E point; K classes: a row of P(label k | y_S) per E
  point) and log10 V(y_S, f) per function f on E; the volume key hashes the data, model and
  volume settings.
- function_posteriors(posterior_key, function, log10_p, stderr_log10, reliable): P_B(f|S) of a
  function on one draw of E from the held-out pool under one posterior
  (flatvol.sgd_vs_bayes.resample); the key hashes the volume key, posterior, draw and sampler.
- function_experiments(spec_hash, info_json): which samples and volumes make up an experiment,
  with what the report needs (true labels on E, sizes, settings); the spec itself is in `specs`.

A chunk of networks or a batch of volumes is one transaction: a killed run resumes. What is read
back is checked (function strings against |E| and K, marginals against their shape) and a damaged
chunk or prior is recomputed after a one-line notice.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from flatvol.errors import FlatvolError
from flatvol.experiments.store import Store, read_connection
from flatvol.io import dumps_json, finite_or_none, float_or_nan

Database = Store | sqlite3.Connection  # readers take either
# function_experiments' info "kind" of a comparison over draws of E (the single-E experiments
# have none, as they always had)
RESAMPLED = "resample"
_log = logging.getLogger("flatvol")


# One character per point of E: a K-class function is its classes as digits, so for K <= 10 the
# binary strings ('0'/'1') are the K = 2 case unchanged and every stored key and table stays valid.
MAX_FUNCTION_CLASSES = 10


class FunctionStringError(FlatvolError):
    """A function on E that cannot be written as, or read back from, one digit per point."""


def encode_function(labels: np.ndarray) -> str:
    """A function on E as a string of one digit per point, its class (E order).

    Args:
        labels: the labels on E: {0, 1} (bool or numbers) for binary, classes 0..K-1 (K <= 10).

    Returns:
        The function string, e.g. '0110' (binary) or '2071' (K classes).

    Raises:
        FunctionStringError: a label that is not an integer in 0..9.
    """
    values = np.asarray(labels).ravel()
    codes = values.astype(np.int64)
    bad = (codes != values) | (codes < 0) | (codes >= MAX_FUNCTION_CLASSES)
    if bad.any():
        raise FunctionStringError(f"function on E: expected classes 0..{MAX_FUNCTION_CLASSES - 1}"
                                  f" (one digit per point), got {values[bad][0]!r}")
    return (codes.astype(np.uint8) + ord("0")).tobytes().decode("ascii")


def decode_function(function: str, n_classes: int = 2, n_points: int | None = None
                    ) -> np.ndarray:
    """The labels (uint8 classes) of a function string, checked: it may come from disk.

    Args:
        function: one digit per point of E (as encode_function writes it).
        n_classes: K; every digit must be below it.
        n_points: |E|, the expected length (None: any).

    Returns:
        The labels, uint8 in 0..K-1.

    Raises:
        FunctionStringError: a character that is not a class 0..K-1, or the wrong length.
    """
    labels = np.frombuffer(function.encode(), dtype=np.uint8) - ord("0")
    if n_points is not None and len(labels) != n_points:
        raise FunctionStringError(f"function {function[:20]!r}: expected {n_points} points (|E|),"
                                  f" got {len(labels)}")
    if (labels >= n_classes).any():  # uint8: a character below '0' wraps above 9 too
        raise FunctionStringError(f"function {function[:20]!r}: expected digits 0..{n_classes - 1}"
                                  f" ({n_classes} classes)")
    return labels


@dataclass(frozen=True)
class FunctionSample:
    """Every network trained with one optimizer: its seed, outcome and labels on E."""

    optimizer: str
    seeds: np.ndarray  # (N,)
    epochs: np.ndarray  # (N,)
    fitted: np.ndarray  # (N,) bool
    labels_E: np.ndarray  # (N, |E|) uint8 classes ({0, 1} binary, 0..K-1 for K classes)
    seconds: float = 0.0  # training time of these networks as recorded (0 where not recorded)

    @property
    def n_fitted(self) -> int:
        return int(self.fitted.sum())

    def counts(self) -> Counter[str]:
        """How often each function on E (encode_function's string, E order) was found by the
        fitted networks."""
        return Counter(encode_function(r) for r in self.labels_E[self.fitted])


@dataclass(frozen=True)
class VolumeTable:
    """log10 V(y_S); per function f on E, log10 V(y_S, f) and hence log10 V(f|S); and per E
    point the NNGP posterior's marginals: binary, (|E|,) P(label 1 | y_S) (as stored since the
    first version); K classes, (|E|, K) P(label k | y_S)."""

    estimator: str
    kernel: str
    log10_v_train: float
    log10_v_full: dict[str, float]
    converged: dict[str, bool]
    prior_marginals: np.ndarray
    n_classes: int = 2

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
    def n_classes(self) -> int:
        """K (recorded for K-class experiments only, so binary records stay as they were)."""
        return int(self.info.get("n_classes", 2))

    @property
    def y_E(self) -> np.ndarray:
        return decode_function(self.info["labels_E"], self.n_classes)


def read_chunk(store: Database, sample_key: str, seeds: list[int], *, n_points: int,
               n_classes: int = 2) -> FunctionSample | None:
    """The networks of `seeds` if all are recorded under `sample_key` and read back whole.

    Args:
        store: the results store.
        sample_key: what determines the networks (SgdVsBayesSpec.sample_key).
        seeds: the chunk's seeds.
        n_points: |E|: every stored function must have one digit per point.
        n_classes: K: every digit must be a class 0..K-1.

    Returns:
        The chunk, or None when a seed is missing or a stored function is damaged (after a
        one-line notice): the caller trains the chunk again, or leaves it out of a report.
    """
    rows = _conn(store).execute(
        "SELECT seed, epochs, fitted, labels_E FROM function_samples WHERE sample_key=? AND "
        "seed BETWEEN ? AND ? ORDER BY seed", (sample_key, min(seeds), max(seeds))).fetchall()
    rows = [r for r in rows if r[0] in set(seeds)]
    if [r[0] for r in rows] != sorted(seeds):
        return None
    try:
        labels = [decode_function(str(r[3]), n_classes, n_points) for r in rows]
    except FunctionStringError as exc:
        _log.warning("results store: networks %s seeds %d..%d: %s; not used", sample_key,
                     min(seeds), max(seeds), exc)
        return None
    return FunctionSample(
        optimizer="", seeds=np.array([r[0] for r in rows], dtype=np.int64),
        epochs=np.array([r[1] for r in rows], dtype=np.int64),
        fitted=np.array([bool(r[2]) for r in rows]),
        labels_E=np.stack(labels),
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
    rows = [(sample_key, int(s), int(e), int(bool(f)), encode_function(labels))
            for s, e, f, labels in zip(chunk.seeds, chunk.epochs, chunk.fitted, chunk.labels_E,
                                       strict=True)]
    with store.transaction() as c:
        c.executemany("INSERT OR REPLACE INTO function_samples VALUES (?, ?, ?, ?, ?)", rows)
        c.execute("INSERT OR REPLACE INTO function_chunk_seconds VALUES (?, ?, ?, ?)",
                  (sample_key, int(chunk.seeds.min()), len(chunk.seeds), float(chunk.seconds)))


def marginals_shape(n_points: int, n_classes: int) -> tuple[int, ...]:
    """The shape of the per-point marginals: (|E|,) P(label 1) for binary, (|E|, K) for K."""
    return (n_points,) if n_classes == 2 else (n_points, n_classes)


def read_prior(store: Database, volume_key: str, shape: tuple[int, ...] | None = None
               ) -> tuple[str, float, np.ndarray] | None:
    """(kernel description, log10 V(y_S), per-point marginals) or None.

    Args:
        store: the results store.
        volume_key: what determines the volumes (SgdVsBayesSpec.volume_key).
        shape: the marginals' expected shape (marginals_shape); None: not checked.

    Returns:
        The prior, or None when none is recorded or the recorded marginals are damaged (not
        probabilities of the expected shape; after a one-line notice): the driver recomputes it.
    """
    row = _conn(store).execute("SELECT kernel, log10_v_train, prior_label1_json FROM "
                             "function_priors WHERE volume_key=?", (volume_key,)).fetchone()
    if row is None:
        return None
    try:
        marginals = np.asarray(json.loads(row[2]), dtype=np.float64)
    except (TypeError, ValueError):
        marginals = None
    # nan is a recorded value (an estimate that failed), not damage
    if marginals is None or (shape is not None and (
            marginals.shape != shape or np.any((marginals < 0) | (marginals > 1)))):
        _log.warning("results store: prior %s: per-point marginals damaged (expected shape %s of "
                     "probabilities); not used", volume_key, shape)
        return None
    return row[0], float_or_nan(row[1]), marginals


def write_prior(store: Store, volume_key: str, kernel: str, log10_v_train: float,
                prior_marginals: np.ndarray) -> None:
    with store.transaction() as c:
        c.execute("INSERT OR REPLACE INTO function_priors VALUES (?, ?, ?, ?)",
                  (volume_key, kernel, finite_or_none(log10_v_train),
                   dumps_json(np.asarray(prior_marginals, dtype=np.float64).tolist())))


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


def read_posteriors(store: Database, posterior_key: str
                    ) -> dict[str, tuple[float, float, bool]]:
    """function -> (log10 P_B(f|S), its standard error, whether it holds) on one draw of E.
    A value that cannot be a log probability with an error (not finite, above 0, a negative
    or non-finite standard error) is left out after a one-line notice: it is computed again."""
    rows = _conn(store).execute("SELECT function, log10_p, stderr_log10, reliable FROM "
                                "function_posteriors WHERE posterior_key=?",
                                (posterior_key,)).fetchall()
    values = {f: (float_or_nan(p), float_or_nan(se), bool(ok)) for f, p, se, ok in rows}
    damaged = [f for f, (p, se, _) in values.items()
               if not (math.isfinite(p) and p <= 0 and math.isfinite(se) and se >= 0)]
    if damaged:
        _log.warning("results store: posterior %s: %d damaged P_B value(s) (expected a finite "
                     "log10 probability <= 0 and a standard error >= 0); computed again",
                     posterior_key, len(damaged))
    return {f: v for f, v in values.items() if f not in damaged}


def write_posteriors(store: Store, posterior_key: str,
                     values: dict[str, tuple[float, float, bool]]) -> None:
    with store.transaction() as c:
        c.executemany("INSERT OR REPLACE INTO function_posteriors VALUES (?, ?, ?, ?, ?)",
                      [(posterior_key, f, finite_or_none(p), finite_or_none(se), int(ok))
                       for f, (p, se, ok) in values.items()])


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
    n_classes = int(info.get("n_classes", 2))
    n_points = len(info["labels_E"])
    samples = {}
    for name, key in info["sample_keys"]:
        chunk = read_chunk(store, key, seeds, n_points=n_points, n_classes=n_classes)
        if chunk is None:
            continue
        samples[name] = FunctionSample(name, chunk.seeds, chunk.epochs, chunk.fitted,
                                       chunk.labels_E, chunk.seconds)
    shape = marginals_shape(n_points, n_classes)
    kernel, train, marginals = (read_prior(store, info["volume_key"], shape)
                                or ("", np.nan, np.full(shape, np.nan)))
    known = read_volumes(store, info["volume_key"])
    volumes = VolumeTable(info["estimator"], kernel, train, {f: v for f, (v, _) in known.items()},
                          {f: ok for f, (_, ok) in known.items()}, marginals, n_classes)
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
        return [load_experiment(conn, h, info) for h, info in _recorded(conn)
                if info.get("kind") != RESAMPLED]
    finally:
        if not isinstance(db, Store):
            conn.close()


def _recorded(conn: sqlite3.Connection) -> list[tuple[str, dict[str, Any]]]:
    """(spec hash, info) of every recorded experiment, oldest first."""
    try:
        rows = conn.execute("SELECT spec_hash, info_json FROM function_experiments "
                            "ORDER BY finished_at, spec_hash").fetchall()
    except sqlite3.OperationalError:  # a store written before these tables existed
        rows = []
    return [(h, json.loads(text)) for h, text in rows]


@dataclass(frozen=True)
class ResampledExperiment:
    """A recorded comparison over draws of E (flatvol.sgd_vs_bayes.resample): its per-draw
    rows and their spread, as the report shows them."""

    spec_hash: str
    info: dict[str, Any]  # name, sizes, settings, rows, spread, seconds


def load_resampled(db: str | Path | Store) -> list[ResampledExperiment]:
    """Every comparison over draws of E in a results store (oldest first); [] if none.

    Args:
        db: an output directory, its store file or an open Store (a path is opened read-only).

    Returns:
        The recorded comparisons.
    """
    conn = db.conn if isinstance(db, Store) else read_connection(db)
    try:
        return [ResampledExperiment(h, info) for h, info in _recorded(conn)
                if info.get("kind") == RESAMPLED]
    finally:
        if not isinstance(db, Store):
            conn.close()


def _conn(db: Database) -> sqlite3.Connection:
    return db.conn if isinstance(db, Store) else db
