"""One face (docs/ARCHITECTURE.md): `flatvol run` resolves a spec name or file and records the
text it validated with the runs; below the CLI, the runners take a parsed spec and refuse a name
before anything is read or written."""

from __future__ import annotations

import pytest

from flatvol.experiments.runner import run_sweep
from flatvol.experiments.store_frames import specs_frame
from flatvol.sgd_vs_bayes.grid import run_sgd_vs_bayes_grid
from flatvol.sgd_vs_bayes.run import run_sgd_vs_bayes

# The comment is in no parsed form of the spec: only the file's own text carries it.
SPEC_TEXT = """# kept with the runs: the spec as written
name = "face"
[data]
task = "mnist"
train_size = 20
test_size = 20
[model]
arch = "fcn:4"
[train]
lr = 0.05
max_epochs = 100
[sweep]
attack_sizes = [0]
seeds = 1
[measures]
final = ["accuracy"]
"""


@pytest.fixture(autouse=True)
def _embedded_data(monkeypatch):
    monkeypatch.delenv("FLATVOL_DATA", raising=False)


def test_flatvol_run_records_the_spec_file_it_read(cli, tmp_path):
    path = tmp_path / "face.toml"
    path.write_text(SPEC_TEXT, encoding="utf-8")
    out = tmp_path / "out"
    code, _, err = cli("run", str(path), "--out", str(out), "--workers", "1", "--quiet")
    assert code == 0, err
    specs = specs_frame(out)
    assert specs["name"].tolist() == ["face"]
    assert specs["path"].tolist() == [str(path)]
    assert specs["source_text"].tolist() == [SPEC_TEXT]


@pytest.mark.parametrize("runner,expected", [
    (run_sweep, "ExperimentSpec"),
    (run_sgd_vs_bayes, "SgdVsBayesSpec"),
    (run_sgd_vs_bayes_grid, "SgdVsBayesSpec"),
])
def test_the_runners_refuse_a_spec_name_before_reading_anything(tmp_path, runner, expected):
    # A data directory that does not exist: a runner that resolved the name would fail on it
    # (or write OUT) instead of refusing the name itself.
    out = tmp_path / "out"
    name = "demo" if runner is run_sweep else "sgd_vs_bayes"
    with pytest.raises(TypeError, match=f"expected an {expected}, got str"):
        runner(name, out, data_dir=tmp_path / "no-data")
    assert not out.exists()
