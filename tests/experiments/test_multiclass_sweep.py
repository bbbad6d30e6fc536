"""K-class sweeps: `flatvol run` trains K-output networks (the staged ensemble) on a K-class task
and records their accuracy on E and the K-class volume; binary specs keep their run keys; what
cannot run for K classes is refused by the pre-flight in one line, with nothing written."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flatvol.experiments import runs_frame
from flatvol.experiments.build import load_run_task, spec_classes
from flatvol.experiments.context import compute_kernel
from flatvol.experiments.plan import plan_runs
from flatvol.experiments.spec import load_spec
from flatvol.experiments.spec_files import resolve_spec_path
from flatvol.volume import VolumeService

# spec_hash and config_hash of shipped binary specs, computed on the code before K-class tasks
# existed (commit 8a6cc2f): their recorded runs keep their keys.
BINARY_KEYS = {
    "fig3_mnist_fcn": ("dd9c27de57080e2e", "e549ff7cafe76843"),
    "fig3_cifar_fcn": ("26ea25377caee310", "677f5e53c3becdc2"),
    "demo": ("3d3b241ecfd5a91c", "f868505cf27f05eb"),
}

K_CLASS_SPEC = """
name = "k10"
[data]
task = "mnist"
classes = "all"
train_size = 60
test_size = 40
[model]
arch = "fcn:32"
[train]
lr = 0.05
max_epochs = 300
ensemble = true
history = false
[sweep]
attack_sizes = [0, 10]
seeds = 1
[measures]
final = ["volume", "sharpness"]
[measures.sharpness]
maximizer = "fast"
"""


def _spec_file(tmp_path, text: str = K_CLASS_SPEC, **replace: str):
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "k.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(BINARY_KEYS))
def test_binary_specs_keep_their_run_keys(name):
    spec = load_spec(resolve_spec_path(name))
    assert (spec.spec_hash(), spec.config_hash(spec.optimizers[0])) == BINARY_KEYS[name]
    assert spec_classes(spec) == 2


def test_k_class_sweep_records_accuracy_and_volume(cli, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli("run", str(_spec_file(tmp_path)), "--out", str(out), "--workers", "1",
                       "--quiet")
    assert code == 0, err
    runs = runs_frame(out).sort_values("attack_size").reset_index(drop=True)
    assert list(runs["status"]) == ["done", "done"] and list(runs["classes"]) == ["all"] * 2
    assert list(runs["train_acc_S"]) == [1.0, 1.0]
    for column in ("test_acc_E", "log10_volume", "log10_volume_S", "sharpness"):
        assert all(math.isfinite(v) for v in runs[column]), column
    assert all(0.1 < a <= 1.0 for a in runs["test_acc_E"])  # above chance for ten classes
    # Every network fits S, so its function on S is y_S: V(f on S) is the ten-class volume of
    # the true labels of S on the sweep's kernel (a binary service would refuse labels 0..9).
    spec = load_spec(tmp_path / "k.toml")
    task = load_run_task(spec, 0, None)
    kernel = compute_kernel(spec, task, progress=False).matrix
    service = VolumeService(kernel, n_classes=10)
    expected = service.log_volume(task.S.y.numpy(), n=task.train_size).log10_volume
    np.testing.assert_allclose(runs["log10_volume_S"], expected, rtol=0, atol=1e-9)
    assert all(v < expected for v in runs["log10_volume"])  # S u E: more points, less volume


def test_the_shipped_ten_class_spec_plans_fig3():
    spec = load_spec(resolve_spec_path("fig3_mnist10_fcn"))
    assert spec_classes(spec) == 10 and spec.data.classes == "all"
    runs = plan_runs(spec)
    assert len(runs) == 55 and {r.attack_size for r in runs} == set(range(0, 501, 50))
    # asking for every class in S is a check only: the run keys stay the same
    checked = spec.model_copy(update={"data": spec.data.model_copy(
        update={"every_class_in_S": True})})
    assert checked.data.every_class_in_S and checked.spec_hash() == spec.spec_hash()


@pytest.mark.parametrize(("replace", "needle"), [
    ({'final = ["volume", "sharpness"]': 'final = ["volume"]\n[measures.volume]\n'
      'estimator = "ep-probit"'},
     "measures.volume.estimator: 10 classes (all): estimator 'ep-probit'"),
    ({'classes = "all"': 'classes = "0,1,1"'}, "got digit 1 listed twice in '0,1,1'"),
    ({"train_size = 60": "train_size = 8\nevery_class_in_S = true"},
     "data: train_size: expected S to hold every one of the 10 classes (all), got none of class"),
])
def test_what_cannot_run_for_k_classes_is_refused_before_any_work(cli, tmp_path, replace,
                                                                  needle):
    out = tmp_path / "out"
    code, _, err = cli("run", str(_spec_file(tmp_path, **replace)), "--out", str(out))
    assert code == 2 and needle in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
