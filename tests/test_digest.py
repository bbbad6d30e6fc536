"""One `digest(kind, payload)` for every key (flatvol.digest), and no key re-made on the way.

The literal keys below were computed with the code of commit 8a6cc2f (before flatvol.digest
existed), from the same calls: whatever changes how a key is made fails here, since a changed
key silently orphans the stores, caches and progress files written before it. The store in
tests/digest_fixtures was written by that commit's `run_sweep` (its SQL dump and its cached
kernel), and must be resumed without rerunning its runs.
"""

from __future__ import annotations

import ast
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from flatvol.digest import KEY_RULES, KeyRule, digest
from flatvol.experiments.build import load_run_task
from flatvol.experiments.context import SweepContext, kernel_cache_key, mc_draws_key
from flatvol.experiments.plan import ensemble_groups, plan_runs
from flatvol.experiments.runner import run_sweep
from flatvol.experiments.spec import load_spec, spec_from_dict
from flatvol.experiments.spec_files import packaged_spec_path, read_spec_file
from flatvol.experiments.store import store_path
from flatvol.sgd_vs_bayes.spec import load_sgd_vs_bayes_spec
from flatvol.train.ensemble_checkpoint import ensemble_fingerprint
from flatvol.volume.mc_checkpoint import draws_fingerprint

FIXTURES = Path(__file__).parent / "digest_fixtures"
SRC = Path(__file__).resolve().parents[1] / "src" / "flatvol"

# Keys of the shipped specs at commit 8a6cc2f.
SHIPPED = {
    "demo": {"spec_hash": "3d3b241ecfd5a91c", "config_hash": "f868505cf27f05eb",
             "kernel_key": "405bb9931098e9f2", "mc_draws_key": "9e0da8ad2b665b40",
             "data_fingerprint": "27dc70913e3ddefa",
             "ensemble_checkpoint": "ensemble-974584d28da77d21.pt"},
    "fig3_mnist_fcn": {"spec_hash": "dd9c27de57080e2e", "config_hash": "e549ff7cafe76843",
                       "kernel_key": "ec8d4aa62a33f7b4", "mc_draws_key": "b292d3128ced886e",
                       "data_fingerprint": "274b1486a002120b",
                       "ensemble_checkpoint": "ensemble-3ad3b29f7be6b9f8.pt"},
}
# The demo with a Monte-Carlo kernel (8a6cc2f): 'eval' BatchNorm, the default, was left out of
# the kernel key and 'batch' put in; the draws' key always holds it.
DEMO_MC = {
    "mc": {"kernel": "mc"},
    "mc_batch": {"kernel": "mc", "mc_batchnorm": "batch"},
    "mc_auto": {"kernel": "mc", "mc_samples": "auto"},
}
DEMO_MC_KEYS = {
    "mc": ("7eaec0ff8f17c084", "15823266b0f3decd", "9e0da8ad2b665b40"),
    "mc_batch": ("be21d25af2292c80", "119cc0bb94f2a5fc", "82aa82f76535b426"),
    "mc_auto": ("732f3255c3121e3d", "be762bc68a058adb", "9e0da8ad2b665b40"),
}
# The fixture store's spec (run with threads=1 on the embedded data at 8a6cc2f).
FIXTURE_SPEC = {"name": "digest-fixture",
                "data": {"task": "mnist", "train_size": 30, "test_size": 30},
                "model": {"arch": "fcn:8"}, "train": {"lr": 0.05, "max_epochs": 300},
                "sweep": {"attack_sizes": [0, 10], "seeds": 2},
                "measures": {"final": ["volume"]}}
FIXTURE_SPEC_HASH = "04348e91c6a81851"
FIXTURE_KERNEL = "kernel-9375527d38e369fc"


@pytest.fixture(autouse=True)
def _embedded_data(monkeypatch):
    monkeypatch.delenv("FLATVOL_DATA", raising=False)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_keys_of_the_shipped_specs_are_those_of_commit_8a6cc2f(name):
    spec = load_spec(packaged_spec_path(name))
    runs = plan_runs(spec)
    group = ensemble_groups(runs)[0]
    task = load_run_task(spec, max(spec.sweep.attack_values()), "embedded")
    got = {"spec_hash": spec.spec_hash(), "config_hash": spec.config_hash(spec.optimizers[0]),
           "kernel_key": kernel_cache_key(spec), "mc_draws_key": mc_draws_key(spec),
           "data_fingerprint": task.fingerprint(),
           "ensemble_checkpoint": SweepContext(spec, checkpoint_dir="c")
           .ensemble_checkpoint(group).name}
    assert got == SHIPPED[name]
    assert {run.key.spec_hash for run in runs} == {SHIPPED[name]["spec_hash"]}


@pytest.mark.parametrize("variant", sorted(DEMO_MC))
def test_monte_carlo_kernel_keys_keep_the_batchnorm_rule_of_commit_8a6cc2f(variant):
    raw = read_spec_file(packaged_spec_path("demo"))
    spec = spec_from_dict({**raw, "measures": {**raw["measures"], "volume": DEMO_MC[variant]}})
    assert (spec.spec_hash(), kernel_cache_key(spec), mc_draws_key(spec)) == DEMO_MC_KEYS[variant]


def test_sgd_vs_bayes_keys_are_those_of_commit_8a6cc2f():
    spec = load_sgd_vs_bayes_spec(packaged_spec_path("sgd_vs_bayes"))
    batch = spec.model_copy(update={
        "volume": spec.volume.model_copy(update={"mc_batchnorm": "batch"})})
    data = "0123456789abcdef"
    assert spec.spec_hash() == "538b7dfd5576"
    assert spec.sample_key(spec.optimizers[0], data) == "23d803ef69a0"
    assert spec.volume_key(data) == "f2b3538b3ecd"  # 'eval' BatchNorm: left out
    assert batch.volume_key(data) == "56aa7889f42e"


def test_resumable_fingerprints_are_those_of_commit_8a6cc2f():
    """The ensemble trainer's and the Monte-Carlo check's progress files stay resumable."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=gen)
    y = torch.tensor([0.0, 1, 1, 0, 1, 0])
    initial = {"w": torch.randn(2, 3, 1, generator=gen), "b": torch.randn(2, 1, generator=gen)}
    assert ensemble_fingerprint(
        initial, x, y, seeds=[0, 1], attack_sizes=[0, 2], config={"lr": 0.01}, engine="bmm",
        group_size=2, keep_history=False) == (
        "926f8780611ce30af4e2e6337d4a79920007f7d986f43251c199407d5e0ddca9")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    assert draws_fingerprint(model, x, seed=3, start=16, n_batches=8, batchnorm="eval") == (
        "b331ec88e95360b2f8e4559c73c7571c128c6fc1b6e191515b256cd6cff7c549")


def _old_store(out: Path) -> None:
    """DIR as commit 8a6cc2f's run_sweep of FIXTURE_SPEC left it: the store and the kernel."""
    (out / "cache").mkdir(parents=True)
    with sqlite3.connect(store_path(out)) as conn:
        conn.executescript((FIXTURES / "store_8a6cc2f.sql").read_text())
    conn.close()
    for suffix in (".npy", ".json"):
        shutil.copy(FIXTURES / f"{FIXTURE_KERNEL}{suffix}", out / "cache")


def _runs(out: Path) -> dict[tuple, tuple]:
    with sqlite3.connect(store_path(out)) as conn:
        rows = conn.execute("SELECT spec_hash, optimizer, attack_size, seed, config_hash, "
                            "status, info_json FROM runs").fetchall()
    conn.close()
    return {row[:4]: row[4:] for row in rows}


def test_a_store_written_by_commit_8a6cc2f_is_resumed_without_rerunning_its_runs(tmp_path):
    out = tmp_path / "old"
    _old_store(out)
    before = _runs(out)
    assert len(before) == 4 and {k[0] for k in before} == {FIXTURE_SPEC_HASH}
    summary = run_sweep(spec_from_dict(FIXTURE_SPEC), out, progress=False, threads=1)
    assert (summary.spec_hash, summary.planned, summary.skipped, summary.done) == (
        FIXTURE_SPEC_HASH, 4, 4, 0)
    assert _runs(out) == before

    # One run lost: only it is run again, under the old key and config hash, on the kernel
    # the old code cached (a re-keyed kernel would be a second file in the cache).
    lost = (FIXTURE_SPEC_HASH, "sgd", 10, 1)
    with sqlite3.connect(store_path(out)) as conn:
        for table in ("runs", "results", "series"):
            conn.execute(f"DELETE FROM {table} WHERE attack_size = 10 AND seed = 1")
    conn.close()
    summary = run_sweep(spec_from_dict(FIXTURE_SPEC), out, progress=False, threads=1)
    assert (summary.skipped, summary.done, summary.failed) == (3, 1, 0)
    after = _runs(out)
    assert {k: v for k, v in after.items() if k != lost} == {
        k: v for k, v in before.items() if k != lost}
    assert after[lost][:2] == before[lost][:2]  # same config hash, done
    assert sorted(p.name for p in (out / "cache").iterdir()) == [
        f"{FIXTURE_KERNEL}.json", f"{FIXTURE_KERNEL}.npy"]


def test_a_new_schema_hashes_its_kind_and_schema_and_never_reuses_an_old_key():
    """Schema 1 is the encoding keys had before the table (neither kind nor schema hashed);
    a kind moved to schema 2 gets keys of its own, distinct from every other kind's."""
    payload = {"data": {"task": "mnist"}, "seed": 0}
    old = KeyRule("toy", 1, "json-compact", 16)
    new = KeyRule("toy", 2, "json-compact", 16)
    other = KeyRule("other", 2, "json-compact", 16)
    assert old.key(payload) == digest("spec", payload)  # same encoding, kind not hashed
    assert len({old.key(payload), new.key(payload), other.key(payload)}) == 3
    stream = KeyRule("toy", 2, "stream", None)
    assert stream.key([b"ab", {"x": 1}]) != stream.key([b"ab", {"x": 2}])
    with pytest.raises(KeyError):
        digest("spec", payload, schema=2)  # a schema the kind never had
    with pytest.raises(KeyError):
        digest("no-such-kind", payload)


def test_fields_omitted_at_their_default_key_as_before_they_existed():
    rule = KEY_RULES["kernel"]
    assert ("mc_batchnorm", "eval") in rule.omitted_at_default
    base = {"kernel": "mc", "mc_seed": 0}
    assert digest("kernel", {**base, "mc_batchnorm": "eval"}) == digest("kernel", base)
    assert digest("kernel", {**base, "mc_batchnorm": "batch"}) != digest("kernel", base)
    nested = {"volume": {"kernel": "mc", "mc_batchnorm": "eval"}}
    assert digest("sgd-vs-bayes-volume", nested) == digest(
        "sgd-vs-bayes-volume", {"volume": {"kernel": "mc"}})
    assert nested["volume"]["mc_batchnorm"] == "eval"  # the caller's payload is left as it was


# Modules that hash bytes to check them (file checksums, downloads, tables' integrity), not to
# key anything: the only ones besides flatvol.digest that may import hashlib.
CHECKSUM_MODULES = {"digest.py", "io.py", "resumable.py", "data/download.py",
                    "volume/orthant_truth.py"}


def test_no_module_hand_rolls_a_key():
    hashing = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) else [])
            if "hashlib" in names:
                hashing.add(path.relative_to(SRC).as_posix())
    assert hashing <= CHECKSUM_MODULES, sorted(hashing - CHECKSUM_MODULES)
