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
