"""K-class training: softmax cross-entropy on K outputs with int64 labels, fit = argmax equals
the label on every point; the ensemble trainer's members equal networks trained alone, as for
binary tasks (tests/train/test_ensemble.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from flatvol.data import load_task
from flatvol.data.task import Split, TaskData
from flatvol.errors import SpecError
from flatvol.models import build_model
from flatvol.models.labels import labels_of
from flatvol.train import TrainConfig, accuracy, optimizer_names, train_to_fit
from flatvol.train.ensemble import train_ensemble, train_models_together

WEIGHT_TOL = 1e-5  # float32 rounding (batched vs single matmuls), as the binary test's
CLASSES = 3


def _task(dim: int = 10, seed: int = 0) -> TaskData:
    """Gaussian inputs labelled by the argmax of 3 random linear scores; A: extra points whose
    labels are moved to another class (as load_task's attack sets)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((dim, CLASSES))

    def split(n: int, attack: bool = False) -> Split:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        y = (x @ w).argmax(1)
        if attack:
            y = (y + rng.integers(1, CLASSES, size=n)) % CLASSES
        return Split(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), np.arange(n))

    return TaskData("synthetic", "argmax(W.x)", seed, split(48), split(8, attack=True),
                    split(40), n_classes=CLASSES)


def _with_attack(task: TaskData, size: int) -> TaskData:
    a = task.A
    return replace(task, A=Split(a.x[:size], a.y[:size], a.index[:size]))


def _assert_members_match(ensemble, spec: str, task: TaskData, config: TrainConfig) -> list[int]:
    epochs = []
    for k, seed in enumerate(ensemble.seeds):
        own_task = _with_attack(task, ensemble.attack_sizes[k])
        model = build_model(spec, task.input_shape, seed=seed, outputs=CLASSES)
        alone = train_to_fit(model, own_task, config, seed=seed)
        member = ensemble.result(k)
        assert (member.status, member.epochs, member.fitted_at) == (
            alone.status, alone.epochs, alone.fitted_at), f"seed {seed}"
        np.testing.assert_equal([member.train_acc_S, member.train_acc_A, member.test_acc_E],
                                [alone.train_acc_S, alone.train_acc_A, alone.test_acc_E])
        for (name, p), q in zip(model.named_parameters(), ensemble.model(k).parameters()):
            err = (p - q).abs().max().item()
            assert err < WEIGHT_TOL, f"seed {seed}, {name}: max |w_alone - w_ensemble| = {err:.2e}"
        if member.history:
            for a, b in zip(alone.history, member.history, strict=True):
                assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
                np.testing.assert_equal({**a, "loss": 0}, {**b, "loss": 0})
        epochs.append(member.epochs)
    return epochs


@pytest.mark.parametrize("optimizer,lr,engine,history", [
    ("sgd", 0.1, "fcn", True), ("adam", 0.01, "fcn", False), ("momentum", 0.05, "fcn", True),
    ("amsgrad", 0.01, "fcn", True), ("sgd", 0.1, "vmap", True)])
def test_k_class_members_equal_networks_trained_alone(optimizer, lr, engine, history):
    """A K = 3 ensemble (members of different seeds and attack sets) gives the networks
    train_to_fit gives one at a time: same stopping epoch, accuracies and history, weights to
    float32 rounding."""
    task = _task(seed=1)
    config = TrainConfig(optimizer=optimizer, lr=lr, fit="all", max_epochs=150)
    seeds, attacks = [0, 3, 0, 5], [8, 0, 3, 8]
    ensemble = train_ensemble("fcn:16,8", task, config, seeds=seeds, attack_sizes=attacks,
                              group_size=2, engine=engine, keep_history=history)
    assert ensemble.engine == engine
    epochs = _assert_members_match(ensemble, "fcn:16,8", task, config)
    assert len(set(epochs)) > 1
    assert all(s == "fitted" for s in ensemble.status)
    labels = ensemble.predict_labels(task.E.x)
    assert labels.dtype == torch.int64 and labels.shape == (len(seeds), len(task.E))
    for k in range(len(seeds)):
        np.testing.assert_array_equal(labels[k].numpy(), labels_of(ensemble.model(k), task.E.x))


@pytest.mark.parametrize("name", optimizer_names())
def test_every_optimizer_fits_a_k_class_task(name):
    """Every optimizer of the catalogue trains a K-output network to zero error on S u A (fit =
    argmax equals the label everywhere); the recorded accuracies are the model's."""
    task = _task(seed=2)
    # Entropy-SGD with the settings its own binary test fits with (test_entropy_sgd.py)
    options = {"langevin_steps": 5, "gamma0": 1.0, "seed": 3} if name == "entropy-sgd" else {}
    lr = {"adam": 0.01, "amsgrad": 0.01, "entropy-sgd": 1.0}.get(name, 0.1)
    config = TrainConfig(optimizer=name, lr=lr, fit="all", max_epochs=300,
                         optimizer_options=options)
    model = build_model("fcn:32", task.input_shape, seed=0, outputs=CLASSES)
    result = train_to_fit(model, task, config, seed=0)
    assert result.status == "fitted" and result.train_acc_S == 1.0 and result.train_acc_A == 1.0
    for split, acc in ((task.S, result.train_acc_S), (task.E, result.test_acc_E)):
        assert acc == float(np.mean(labels_of(model, split.x) == split.y.numpy()))
    assert labels_of(model, task.S.x).dtype == np.int64


def test_ten_classes_of_mnist_fit_to_zero_error_on_S():
    """K = 10 MNIST (embedded subset): an FCN with 10 outputs trained with cross-entropy until
    argmax fits every point of S; generalization is the accuracy on E."""
    task = load_task("mnist", train_size=100, attack_size=20, test_size=100, classes="all",
                     data_dir="embedded")
    assert task.n_classes == 10 and task.outputs == 10 and task.S.y.dtype == torch.int64
    model = build_model("fcn:40,40", task.input_shape, seed=0, outputs=task.outputs)
    result = train_to_fit(model, task, TrainConfig(lr=0.05, max_epochs=200), seed=0)
    assert result.status == "fitted" and result.train_acc_S == 1.0
    assert np.array_equal(labels_of(model, task.S.x), task.S.y.numpy())
    assert result.test_acc_E == accuracy(model, task.E.x, task.E.y)
    assert 0.3 < result.test_acc_E < 1.0  # far above chance (0.1) on 100 examples


def test_a_model_whose_outputs_do_not_fit_the_task_is_refused():
    """One logit on a 3-class task, or 3 outputs on a binary one, would train on a silently
    wrong loss: refused in one line before any step, the model unchanged."""
    task = _task()
    one_logit = build_model("fcn:8", task.input_shape, seed=0)
    before = [p.clone() for p in one_logit.parameters()]
    with pytest.raises(SpecError, match=r"expected 3 per input .* got 1$"):
        train_to_fit(one_logit, task, TrainConfig(max_epochs=2))
    assert all(torch.equal(a, b) for a, b in zip(before, one_logit.parameters()))
    binary = load_task("mnist", train_size=20, test_size=10, classes="3v8", data_dir="embedded")
    with pytest.raises(SpecError, match=r"expected 1 per input .* got \(3,\)$"):
        train_to_fit(build_model("fcn:8", binary.input_shape, seed=0, outputs=3), binary,
                     TrainConfig(max_epochs=2))
    with pytest.raises(SpecError, match=r"expected 1 per input .* got \(3,\)$"):
        train_models_together([build_model("fcn:8", binary.input_shape, seed=0, outputs=3)],
                              binary, TrainConfig(max_epochs=2))
