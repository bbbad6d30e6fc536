"""`flatvol collect`: flatvol train runs -> a results store -> `flatvol report`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flatvol.data import load_task
from flatvol.errors import SpecError
from flatvol.experiments.collect import collect_runs, collect_settings
from flatvol.experiments.store_frames import runs_frame, specs_frame
from flatvol.models import Prior
from flatvol.train import TrainConfig
from flatvol.train.run import RunSpec, train_run

ATTACKS = (0, 5, 10, 20)


def _train(out: Path, attack_size: int, train_size: int = 30, seed: int = 0) -> Path:
    task = load_task("mnist", train_size=train_size, attack_size=attack_size, test_size=40,
                     data_dir=None)
    spec = RunSpec(train_size=train_size, attack_size=attack_size, test_size=40, model="fcn:8",
                   prior=Prior(), train=TrainConfig(lr=0.05, max_epochs=300), seed=seed)
    train_run(spec, task, out_dir=out)
    return out


@pytest.fixture(autouse=True)
def _embedded(monkeypatch):
    monkeypatch.delenv("FLATVOL_DATA", raising=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("train")
    return [_train(root / f"a{a}", a) for a in ATTACKS]


SETTINGS = collect_settings(["volume", "sharpness"], maximizer="fast")


def test_collect_then_report_gives_the_correlation_table(runs, tmp_path, cli):
    out = tmp_path / "store"
    code, _, err = cli("collect", *map(str, runs), "--out", str(out), "--measures",
                       "volume,sharpness", "--maximizer", "fast", "--quiet")
    assert code == 0, err
    frame = runs_frame(out)
    assert len(frame) == len(runs)
    assert sorted(frame["attack_size"]) == list(ATTACKS)
    assert (frame["spec_name"] == "collected").all()
    for column in ("log10_volume", "log10_volume_S", "log10_sharpness", "test_acc_E"):
        assert frame[column].notna().all(), column
    fitted = frame[frame["train_status"] == "fitted"]
    assert len(fitted) >= 3  # enough for correlations
    # the numbers are each run's own: its run.json test accuracy
    for _, row in frame.iterrows():
        info = json.loads((runs[ATTACKS.index(row["attack_size"])] / "run.json").read_text())
        assert row["test_acc_E"] == pytest.approx(info["test_acc_E"])
    spec = json.loads(specs_frame(out)["spec_json"].iloc[0])
    assert spec["data"]["train_size"] == 30 and spec["model"]["arch"] == "fcn:8"
    code, _, err = cli("report", str(out), "--resamples", "50")
    assert code == 0, err
    html = (out / "report.html").read_text()
    assert "Correlations with generalization" in html
    assert "No correlations" not in html


def test_rerun_collects_nothing_new_and_adds_new_runs(runs, tmp_path):
    out = tmp_path / "store"
    first = collect_runs(runs[:3], out, SETTINGS)
    assert (first.skipped, first.collected + first.failed) == (0, 3)
    before = runs_frame(out)
    again = collect_runs(runs[:3], out, SETTINGS)
    assert (again.skipped, again.collected, again.failed) == (3, 0, 0)
    more = collect_runs(runs, out, SETTINGS)
    assert (more.skipped, more.collected + more.failed) == (3, 1)
    after = runs_frame(out)
    assert len(after) == 4
    same = after[after["attack_size"].isin(ATTACKS[:3])].reset_index(drop=True)
    assert same["log10_volume"].tolist() == before["log10_volume"].tolist()


def test_a_run_with_other_data_settings_is_refused(runs, tmp_path):
    other = _train(tmp_path / "other", 0, train_size=25)
    out = tmp_path / "store"
    with pytest.raises(SpecError, match=r"other: its train_size \(25\) differs"):
        collect_runs([*runs[:2], other], out, SETTINGS)
    assert not out.exists()  # refused before anything was written


def test_two_runs_with_one_key_are_refused(runs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(runs[0], copy)
    info = json.loads((copy / "run.json").read_text())
    info["seconds"] = 123.0  # another run of the same optimizer, attack size and seed
    (copy / "run.json").write_text(json.dumps(info))
    with pytest.raises(SpecError, match="same optimizer, attack size and seed"):
        collect_runs([runs[0], copy], tmp_path / "store", SETTINGS)
    collect_runs([runs[0]], tmp_path / "store", SETTINGS)
    with pytest.raises(SpecError, match="already holds another run"):
        collect_runs([copy], tmp_path / "store", SETTINGS)
