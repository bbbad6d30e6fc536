"""`flatvol run --keep-networks`: each run's network is kept as the run directory `flatvol
train` writes, and measuring it again (`flatvol collect`) gives the sweep's own numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from experiments_helpers import tiny_spec

from flatvol.errors import CheckpointError, SpecError
from flatvol.experiments import run_sweep, runs_frame, spec_from_dict
from flatvol.experiments.collect import collect_runs, collect_settings
from flatvol.train.checkpoint import load_run

KEYS = ["optimizer", "attack_size", "seed"]


@pytest.fixture(autouse=True)
def _embedded(monkeypatch):
    monkeypatch.delenv("FLATVOL_DATA", raising=False)


def _spec(ensemble: bool):
    return spec_from_dict(tiny_spec(data__train_size=40, data__test_size=30,
                                    sweep__attack_sizes=[0, 10], sweep__seeds=2,
                                    train__ensemble=ensemble,
                                    measures={"final": ["volume", "sharpness"],
                                              "sharpness": {"maximizer": "fast"}}))


def _runs(out):
    return runs_frame(out).sort_values(KEYS).reset_index(drop=True)


@pytest.mark.parametrize("ensemble", [True, False], ids=["ensemble", "one-at-a-time"])
def test_kept_networks_are_the_measured_ones(tmp_path, ensemble):
    spec = _spec(ensemble)
    kept, plain = tmp_path / "kept", tmp_path / "plain"
    assert run_sweep(spec, kept, progress=False, keep_networks=True).done == 4
    assert run_sweep(spec, plain, progress=False).done == 4
    assert not (plain / "networks").exists()
    frame = _runs(kept)
    # keeping the networks changes no result
    columns = KEYS + ["status", "epochs", "test_acc_E", "log10_volume", "sharpness"]
    assert frame[columns].equals(_runs(plain)[columns])

    dirs = sorted((kept / "networks" / spec.spec_hash()[:12]).iterdir())
    assert [d.name for d in dirs] == [f"sgd-attack{a}-seed{s}" for a in (0, 10) for s in (0, 1)]
    for run_dir in dirs:
        loaded = load_run(run_dir)
        row = frame[(frame.attack_size == loaded.info["attack_size"])
                    & (frame.seed == loaded.info["seed"])].iloc[0]
        assert loaded.info["sweep"]["spec_hash"] == spec.spec_hash()
        assert loaded.info["epochs"] == row["epochs"]
        with torch.no_grad():  # the network itself gives the recorded test accuracy
            logits = loaded.model(loaded.task.E.x).reshape(-1)
        accuracy = float(((logits > 0).long() == loaded.task.E.y.reshape(-1)).double().mean())
        assert accuracy == pytest.approx(row["test_acc_E"], abs=1e-12)

    # Measured again by `flatvol collect` with the sweep's settings: the sweep's numbers (the
    # same measure seeds); with other settings, other numbers of the same networks.
    again = tmp_path / "again"
    collect_runs(dirs, again, collect_settings(["volume", "sharpness"], maximizer="fast"))
    remeasured = _runs(again)
    assert list(remeasured["test_acc_E"]) == list(frame["test_acc_E"])
    np.testing.assert_allclose(remeasured["sharpness"], frame["sharpness"], rtol=1e-12)
    np.testing.assert_allclose(remeasured["log10_volume"], frame["log10_volume"], atol=1e-6)
    wider = tmp_path / "wider"
    collect_runs(dirs, wider, collect_settings(["sharpness"], maximizer="fast", epsilon=1e-2))
    assert (_runs(wider)["sharpness"].to_numpy() > frame["sharpness"].to_numpy()).all()


def test_a_kept_network_whose_weights_changed_is_refused(tmp_path):
    spec = _spec(True)
    run_sweep(spec, tmp_path / "out", progress=False, keep_networks=True)
    run_dir = next((tmp_path / "out" / "networks" / spec.spec_hash()[:12]).iterdir())
    info = json.loads((run_dir / "run.json").read_text())
    assert len(info["weights_sha256"]) == 64
    state = torch.load(run_dir / "model.pt", weights_only=True)
    first = next(iter(state))
    state[first].view(-1)[0] += 0.5  # finite, the right shape: only the digest tells
    torch.save(state, run_dir / "model.pt")
    with pytest.raises(CheckpointError, match="model.pt: weights changed since run.json"):
        load_run(run_dir)


def test_a_file_where_the_networks_go_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "networks").write_text("in the way")
    with pytest.raises(SpecError, match="networks to be a folder, got a file"):
        run_sweep(_spec(True), out, progress=False, keep_networks=True)
    assert sorted(p.name for p in out.iterdir()) == ["networks"]  # nothing written


def test_a_network_that_cannot_be_written_stops_the_sweep_which_resumes(tmp_path, monkeypatch):
    """A full disk while a network is kept is the sweep's fault, not the run's: the sweep
    stops with the WriteError (one line from the CLI), the runs recorded before stay, none is
    recorded as failed, and the same call resumes."""
    from flatvol.errors import WriteError
    from flatvol.train import checkpoint

    spec, out = _spec(False), tmp_path / "out"
    real, calls = checkpoint.save_run, []

    def full_disk_at_the_third(run_dir, model, info):
        calls.append(run_dir)
        if len(calls) == 3:
            raise WriteError(f"{run_dir}/model.pt: cannot write it: no space left on the disk")
        return real(run_dir, model, info)

    monkeypatch.setattr(checkpoint, "save_run", full_disk_at_the_third)
    with pytest.raises(WriteError, match="no space left"):
        run_sweep(spec, out, progress=False, keep_networks=True)
    recorded = runs_frame(out)
    assert len(recorded) == 2 and set(recorded["status"]) == {"done"}
    monkeypatch.setattr(checkpoint, "save_run", real)
    again = run_sweep(spec, out, progress=False, keep_networks=True)
    assert (again.skipped, again.done, again.failed) == (2, 2, 0)
    assert len(list((out / "networks" / spec.spec_hash()[:12]).iterdir())) == 4
