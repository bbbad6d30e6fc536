"""The results store and the output folder under faults: a damaged store is refused in one line
before anything is written; a full disk and an unwritable place give one line (exit 2), with
what was stored consistent and resumable; OUT/cache that is a file is refused before the store
is created; a good store in a read-only folder is read.

Real faults: bytes of a copied store's page overwritten; a small tmpfs filled to the last byte
(genuine ENOSPC, and SQLite's genuine 'database or disk is full'); SQLite's own page limit
(`PRAGMA max_page_count`); a read-only bind mount (as root, where chmod does not stop writes;
chmod 0o555 otherwise).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from experiments_helpers import tiny_spec

from flatvol.errors import WriteError
from flatvol.experiments import run_sweep, runs_frame, spec_from_dict
from flatvol.experiments.store import (
    DamagedStoreError,
    RunKey,
    RunRecord,
    Store,
    store_path,
)
from flatvol.experiments.store_frames import series_frame, specs_frame
from flatvol.io import atomic_write, atomic_write_bytes

SPEC = tiny_spec(sweep__attack_sizes=[0], sweep__seeds=2, measures__final=["volume"],
                 train__max_epochs=100)


def write_spec(folder: Path, seeds: int = 2) -> Path:
    spec = {**SPEC, "sweep": {"attack_sizes": [0], "seeds": seeds}}
    path = folder / f"spec-{seeds}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: sha256 and mtime, to show a refused command changed nothing."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                         p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT of a finished tiny sweep (2 runs), copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("swept") / "out"
    summary = run_sweep(spec_from_dict(SPEC), out, progress=False)
    assert summary.done == 2
    return out


def damage_runs_table(store: Path) -> None:
    """Overwrite the header of the runs table's root page, as a bad sector would."""
    with contextlib.closing(sqlite3.connect(store)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='runs'").fetchone()
    data = bytearray(store.read_bytes())
    start = (root - 1) * page_size
    data[start:start + 8] = b"\xff" * 8
    store.write_bytes(bytes(data))


# --- a damaged store -------------------------------------------------------------------------


def test_a_damaged_store_is_refused_in_one_line_and_left_as_it_is(swept, tmp_path, cli):
    out = tmp_path / "out"
    shutil.copytree(swept, out)
    damage_runs_table(store_path(out))
    spec = write_spec(tmp_path, seeds=3)
    before = snapshot(out)
    for args in (["run", str(spec), "--out", str(out), "--quiet"], ["report", str(out)]):
        code, stdout, err = cli(*args)
        assert_one_line(code, stdout, err, f"{store_path(out)} is damaged", ".recover")
        assert snapshot(out) == before  # no -wal/-shm, no report, no byte changed
    with pytest.raises(DamagedStoreError):
        Store(out)
    with pytest.raises(DamagedStoreError):
        runs_frame(out)
    assert snapshot(out) == before


# --- full disks --------------------------------------------------------------------------------


def test_a_store_write_on_a_full_disk_rolls_back_and_resumes(tmp_path):
    """SQLite's own page limit gives its genuine 'database or disk is full'."""
    key = RunKey("h" * 16, "sgd", 0, 0)
    bulky = {f"m{i}": float(i) for i in range(200)}
    with Store(tmp_path) as store:
        store.record(RunRecord(key, "c", "done", results={"a": 1.0}))
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(WriteError) as refused:
            for seed in range(1, 50):
                store.record(RunRecord(RunKey(key.spec_hash, "sgd", 0, seed), "c", "done",
                                       results=bulky, series=[(e, "train", "loss", 0.5)
                                                              for e in range(100)]))
    message = str(refused.value)
    assert str(store_path(tmp_path)) in message and "full" in message and "\n" not in message
    assert integrity(store_path(tmp_path)) == "ok"
    with Store(tmp_path) as store:  # whole runs or nothing, and writable once there is room
        runs = store.finished(key.spec_hash)
        counts = store.counts()
        assert counts["results"] == 1 + 200 * (len(runs) - 1)
        assert counts["series"] == 100 * (len(runs) - 1)
        store.record(RunRecord(RunKey(key.spec_hash, "sgd", 0, 99), "c", "done"))


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (a real file system that runs out of space), unmounted after."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk))
    except (OSError, subprocess.CalledProcessError) as exc:
        if os.geteuid() != 0:  # CI runs as root, so there this never skips
            pytest.skip(f"mounting a tmpfs needs root: {exc}")
        pytest.fail(f"cannot mount a tmpfs as root: {exc}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill `disk` until at most `leave` bytes are free; returns the ballast file."""
    ballast = disk / "ballast"
    with open(ballast, "wb") as fh:
        chunk = b"\0" * 65536
        with contextlib.suppress(OSError):
            while True:
                free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
                if free <= leave:
                    break
                fh.write(chunk[: max(1, min(len(chunk), free - leave))])
                fh.flush()
    return ballast


def test_a_sweep_on_a_full_disk_gives_one_line_and_resumes_once_there_is_room(
        swept, small_disk, tmp_path, cli):
    out = small_disk / "out"
    shutil.copytree(swept, out)  # 2 runs and the kernel cache
    ballast = fill(small_disk)
    code, stdout, err = cli("run", str(write_spec(tmp_path, seeds=3)), "--out", str(out),
                            "--quiet")
    assert_one_line(code, stdout, err, f"{store_path(out)}: cannot write")
    ballast.unlink()  # (SQLite cannot even open a store for reading on a full tmpfs)
    assert integrity(store_path(out)) == "ok"
    assert runs_frame(out).equals(runs_frame(swept))  # the runs recorded before it filled
    code, stdout, err = cli("run", str(write_spec(tmp_path, seeds=3)), "--out", str(out),
                            "--quiet")
    assert code == 0, err
    runs = runs_frame(out)
    assert len(runs) == 3 and set(runs["status"]) == {"done"}


def test_a_cache_write_on_a_full_disk_gives_one_line_and_keeps_the_old_file(small_disk):
    target = small_disk / "cache" / "kernel.npy"
    atomic_write_bytes(target, b"old")
    fill(small_disk)
    with pytest.raises(WriteError) as refused:  # ENOSPC from the write
        atomic_write_bytes(target, b"x" * 200_000)
    assert str(target) in str(refused.value) and "no space" in str(refused.value)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["kernel.npy"]  # no temporary


def test_a_numpy_short_write_on_a_full_disk_is_a_full_disk(small_disk):
    """numpy's tofile reports '... requested and ... written' with no errno."""
    target = small_disk / "kernel.npy"
    fill(small_disk, leave=40_000)
    with pytest.raises(WriteError) as refused:
        atomic_write(target, lambda fh: np.save(fh, np.zeros((100, 100)), allow_pickle=False))
    assert str(target) in str(refused.value) and "no space" in str(refused.value)
    assert not target.exists()


# --- unwritable places -----------------------------------------------------------------------


def test_a_cache_that_is_a_file_is_refused_before_the_store_is_created(tmp_path, cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "cache").write_text("not a folder")
    before = snapshot(out)
    code, stdout, err = cli("run", str(write_spec(tmp_path)), "--out", str(out), "--quiet")
    assert_one_line(code, stdout, err, str(out / "cache"))
    assert snapshot(out) == before and not store_path(out).exists()


@contextlib.contextmanager
def read_only_copy(source: Path, tmp_path: Path) -> Iterator[Path]:
    """A read-only copy of the folder `source`: a read-only bind mount of a copy as root
    (chmod does not stop root's writes), a copy with mode 0o555 otherwise; checked to refuse
    writes."""
    copy, folder = tmp_path / "copy", tmp_path / "ro"
    shutil.copytree(source, copy)
    as_root = os.geteuid() == 0
    if as_root:
        folder.mkdir()
        try:
            _mount("--bind", str(copy), str(folder))
            _mount("-o", "remount,ro,bind", str(folder))
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.fail(f"cannot bind-mount a read-only folder as root: {exc}")
    else:
        copy.rename(folder)
        folder.chmod(0o555)
    try:
        with pytest.raises(OSError):
            (folder / "probe").write_text("x")
        yield folder
    finally:
        if as_root:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        else:
            folder.chmod(0o755)


def test_a_good_store_in_a_read_only_folder_is_read(swept, tmp_path, cli):
    with read_only_copy(swept, tmp_path) as folder:
        assert runs_frame(folder).equals(runs_frame(swept))
        assert series_frame(folder).equals(series_frame(swept))
        assert len(specs_frame(folder)) == 1
        before = snapshot(folder)
        # The report reads the store, then says in one line that it cannot write its page.
        code, stdout, err = cli("report", str(folder))
        assert_one_line(code, stdout, err, str(folder), "read-only", "--to")
        assert "not a flatvol results store" not in err
        assert snapshot(folder) == before
        # ... and writes it where --to says, reading the read-only store.
        elsewhere = tmp_path / "report"
        code, stdout, err = cli("report", str(folder), "--to", str(elsewhere), "--csv")
        assert code == 0, err
        assert (elsewhere / "report.html").is_file() and (elsewhere / "runs.csv").is_file()
        assert snapshot(folder) == before
