import pytest
import torch

from flatvol.errors import CheckpointError
from flatvol.models import build_model
from flatvol.train import load_checkpoint, save_checkpoint


def test_checkpoint_round_trip(tmp_path):
    model = build_model("fcn:8", (5,), seed=1)
    save_checkpoint(tmp_path / "m.pt", model)
    other = build_model("fcn:8", (5,), seed=2)
    load_checkpoint(tmp_path / "m.pt", other)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary files left behind

class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))

def test_checkpoint_with_arbitrary_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, path)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(path, build_model("fcn:8", (5,)))

def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "m.pt", build_model("fcn:8", (5,)))
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "m.pt", build_model("fcn:9", (5,)))


def test_run_reloads_the_data_it_was_trained_on(tmp_path, monkeypatch):
    from flatvol.data import load_task
    from flatvol.train import TrainConfig, load_run
    from flatvol.train.run import RunSpec, train_run

    monkeypatch.delenv("FLATVOL_DATA", raising=False)
    task = load_task("mnist", train_size=40, attack_size=10, test_size=30, data_seed=3)
    spec = RunSpec(train_size=40, attack_size=10, test_size=30, data_seed=3, model="fcn:8",
                   train=TrainConfig(max_epochs=3))
    model, info = train_run(spec, task, out_dir=tmp_path / "run")
    assert info["data_dir"] == "embedded"
    # A data directory in the environment must not silently swap S, A and E.
    monkeypatch.setenv("FLATVOL_DATA", str(tmp_path / "elsewhere"))
    run = load_run(tmp_path / "run")
    for name in ("S", "A", "E"):
        assert (getattr(run.task, name).index == getattr(task, name).index).all()
        assert torch.equal(getattr(run.task, name).x, getattr(task, name).x)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), run.model.parameters()))
