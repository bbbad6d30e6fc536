"""The ensemble trainer against train_to_fit: every member must be the network that its seed
gives when trained alone (same stopping epoch, weights within 1e-5, same accuracies)."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from flatvol.data.task import Split, TaskData
from flatvol.errors import SpecError
from flatvol.models import FCN, build_model
from flatvol.train import TrainConfig, register_optimizer, train_to_fit
from flatvol.train.ensemble import EnsembleEpochInfo, train_ensemble, train_models_together

WEIGHT_TOL = 1e-5  # float32 rounding differences (batched vs single matmuls) over ~1000 steps


def _task(dim: int = 10, zero_feature: int | None = None, seed: int = 0) -> TaskData:
    """Gaussian inputs labelled by a random hyperplane; A: extra points with flipped labels.
    With `zero_feature`, that input is 0 on S and A (but not on E)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(dim)

    def split(n: int, flip: bool = False, zero: bool = True) -> Split:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        if zero and zero_feature is not None:
            x[:, zero_feature] = 0
        y = ((x @ w > 0) ^ flip).astype(np.float32)
        return Split(torch.from_numpy(x), torch.from_numpy(y), np.arange(n))

    return TaskData("synthetic", "sign(w.x)", seed, split(48), split(8, flip=True),
                    split(40, zero=False))


def _alone(spec: str, task: TaskData, config: TrainConfig, seed: int):
    model = build_model(spec, task.input_shape, seed=seed)
    return model, train_to_fit(model, task, config, seed=seed)


def _with_attack(task: TaskData, size: int) -> TaskData:
    """`task` with A cut to its first `size` points (what load_task gives for that size)."""
    a = task.A
    return replace(task, A=Split(a.x[:size], a.y[:size], a.index[:size]))


def _assert_members_match(ensemble, spec: str, task: TaskData, config: TrainConfig,
                          history: bool = True) -> list[int]:
    epochs = []
    for k, seed in enumerate(ensemble.seeds):
        own_task = _with_attack(task, ensemble.attack_sizes[k])  # all of A unless given less
        model, alone = _alone(spec, own_task, config, seed)
        member = ensemble.result(k)
        assert (member.status, member.epochs, member.fitted_at) == (
            alone.status, alone.epochs, alone.fitted_at), f"seed {seed}"
        np.testing.assert_equal([member.train_acc_S, member.train_acc_A, member.test_acc_E],
                                [alone.train_acc_S, alone.train_acc_A, alone.test_acc_E])
        trained = ensemble.model(k)
        for (name, p), q in zip(model.named_parameters(), trained.parameters()):
            err = (p - q).abs().max().item()
            assert err < WEIGHT_TOL, f"seed {seed}, {name}: max |w_alone - w_ensemble| = {err:.2e}"
        if history:
            assert len(member.history) == len(alone.history)
            for a, b in zip(alone.history, member.history):
                assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
                np.testing.assert_equal({**a, "loss": 0}, {**b, "loss": 0})
        epochs.append(member.epochs)
    return epochs


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adam", 0.01), ("momentum", 0.05),
                                          ("amsgrad", 0.01)])
def test_members_equal_networks_trained_alone(optimizer, lr):
    task = _task()
    config = TrainConfig(optimizer=optimizer, lr=lr, max_epochs=150)
    ensemble = train_ensemble("fcn:16,8", task, config, seeds=[0, 3, 6, 8], group_size=3)
    epochs = _assert_members_match(ensemble, "fcn:16,8", task, config)
    assert ensemble.engine == "fcn"
    # Members stop at different epochs, so early finishers sat frozen while others trained on
    # (with Adam, a zero-gradient 'frozen' member would still move: this would catch it).
    assert len(set(epochs)) > 1


@pytest.mark.parametrize("optimizer,lr,fit,history", [
    ("sgd", 0.1, "S", True), ("adam", 0.01, "all", True), ("momentum", 0.05, "all", False),
    ("sgd", 0.1, "S", False)])
def test_members_with_different_attack_sets_equal_networks_trained_alone(optimizer, lr, fit,
                                                                         history):
    """One ensemble for all attack sizes and seeds of a sweep: member k trains on S plus the
    first attack_sizes[k] points of A, with its own number of minibatches per epoch, and
    still ends where train_to_fit on that task ends (stop epoch, weights, history)."""
    task = _task(seed=3)
    config = TrainConfig(optimizer=optimizer, lr=lr, fit=fit, max_epochs=150)
    seeds = [0, 3, 0, 5, 3, 6, 0]
    attacks = [8, 0, 0, 3, 8, 5, 3]  # a seed repeats across attack sizes; sizes interleave
    ensemble = train_ensemble("fcn:16,8", task, config, seeds=seeds, attack_sizes=attacks,
                              group_size=2, keep_history=history)
    assert ensemble.seeds == seeds and ensemble.attack_sizes == attacks
    epochs = _assert_members_match(ensemble, "fcn:16,8", task, config, history=history)
    assert len(set(epochs)) > 1
    assert np.isnan(ensemble.train_acc_A[1]) and not np.isnan(ensemble.train_acc_A[0])


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adam", 0.01)])
def test_a_fixed_data_order_trains_members_as_alone(optimizer, lr):
    """order='fixed': every member walks its own S u A in list order each epoch (members of
    different attack sizes in one block), as train_to_fit does."""
    task = _task(seed=3)
    config = TrainConfig(optimizer=optimizer, lr=lr, max_epochs=150, order="fixed")
    seeds, attacks = [0, 3, 0, 5], [8, 0, 3, 8]
    ensemble = train_ensemble("fcn:16,8", task, config, seeds=seeds, attack_sizes=attacks,
                              group_size=2)
    _assert_members_match(ensemble, "fcn:16,8", task, config)


def test_frozen_members_do_not_change_while_others_train():
    """A member's result does not depend on which other members share its ensemble, nor on how
    long they train after it stops."""
    task = _task()
    config = TrainConfig(optimizer="adam", lr=0.01, max_epochs=150)
    alone = train_ensemble("fcn:16", task, config, seeds=[3])
    crowd = train_ensemble("fcn:16", task, config, seeds=[7, 3, 11, 12], group_size=2)
    assert crowd.epochs.max() > alone.epochs[0]  # someone trains on after seed 3 has stopped
    for name, value in alone.params.items():
        torch.testing.assert_close(crowd.params[name][1], value[0], rtol=0, atol=1e-6)


def test_parallel_groups_give_identical_networks():
    """Groups trained in worker threads: bit-identical to one thread; torch's thread count is
    restored afterwards."""
    task = _task()
    config = TrainConfig(optimizer="adam", lr=0.01, max_epochs=60)
    threads = torch.get_num_threads()
    one = train_ensemble("fcn:16", task, config, seeds=range(6), group_size=2, workers=1)
    three = train_ensemble("fcn:16", task, config, seeds=range(6), group_size=2, workers=3)
    assert torch.get_num_threads() == threads
    assert one.epochs.tolist() == three.epochs.tolist()
    assert all(torch.equal(one.params[k], three.params[k]) for k in one.params)


def test_fit_all_weight_decay_and_post_training_epochs():
    task = _task(seed=1)
    config = TrainConfig(optimizer="sgd", lr=0.1, fit="all", weight_decay=1e-3,
                         post_train_epochs=3, max_epochs=200)
    ensemble = train_ensemble("fcn:16", task, config, seeds=[1, 4, 5])
    _assert_members_match(ensemble, "fcn:16", task, config)
    assert ensemble.status == ["fitted", "fitted", "did_not_fit"]
    assert all(r.epochs == r.fitted_at + 3 for r in ensemble.results[:2])
    assert [h["phase"] for h in ensemble.result(0).history[-4:]] == ["fit"] + ["post"] * 3


def test_epoch_cap_gives_did_not_fit():
    task = _task()
    ensemble = train_ensemble("fcn:8", task, TrainConfig(lr=1e-5, max_epochs=3), seeds=[0, 1])
    assert ensemble.status == ["did_not_fit", "did_not_fit"]
    assert ensemble.epochs.tolist() == [3, 3] and ensemble.fitted_at == [None, None]


def test_without_history_the_cheap_stopping_check_gives_the_same_networks():
    task = _task(seed=2)
    config = TrainConfig(optimizer="sgd", lr=0.1, max_epochs=150)
    ensemble = train_ensemble("fcn:16,8", task, config, seeds=range(6), keep_history=False)
    _assert_members_match(ensemble, "fcn:16,8", task, config, history=False)
    assert ensemble.histories is None and ensemble.result(0).history == []


def test_inputs_zero_on_the_training_set_keep_their_initial_weights():
    """The FCN engine skips features that are 0 on S u A; their weights must still come back
    (unchanged) and E, where the feature is non-zero, must be scored with them."""
    task = _task(zero_feature=4)
    config = TrainConfig(optimizer="adam", lr=0.01, max_epochs=100)
    ensemble = train_ensemble("fcn:16", task, config, seeds=[0, 1])
    _assert_members_match(ensemble, "fcn:16", task, config)
    initial = build_model("fcn:16", task.input_shape, seed=1)
    trained = ensemble.model(1)
    assert torch.equal(trained.hidden[0].weight[:, 4], initial.hidden[0].weight[:, 4])
    assert not torch.equal(trained.hidden[0].weight[:, 3], initial.hidden[0].weight[:, 3])


def test_vmap_engine_trains_any_module_like_train_to_fit():
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        x = torch.rand(n, 1, 6, 6, generator=g)
        y = (x[:, 0, :3].mean((1, 2)) > x[:, 0, 3:].mean((1, 2))).float()
        return Split(x, y, np.arange(n))

    task = TaskData("images", "top-vs-bottom", 0, split(24), split(0), split(12))
    config = TrainConfig(optimizer="adam", lr=0.01, max_epochs=60)
    ensemble = train_ensemble("cnn:4", task, config, seeds=[0, 1])
    assert ensemble.engine == "vmap"
    _assert_members_match(ensemble, "cnn:4", task, config)
    # the generic engine also runs the FCN, and agrees with the batched-matmul engine
    fcn_task = _task()
    fcn_config = TrainConfig(optimizer="sgd", lr=0.1, max_epochs=60)
    by_vmap = train_ensemble("fcn:8", fcn_task, fcn_config, seeds=[0, 1], engine="vmap")
    by_bmm = train_ensemble("fcn:8", fcn_task, fcn_config, seeds=[0, 1], engine="fcn")
    assert by_vmap.epochs.tolist() == by_bmm.epochs.tolist()
    for name in by_bmm.params:
        torch.testing.assert_close(by_vmap.params[name], by_bmm.params[name], rtol=0,
                                   atol=WEIGHT_TOL)


def test_results_unstack_and_predict():
    task = _task()
    seen: list[EnsembleEpochInfo] = []
    ensemble = train_ensemble("fcn:8", task, TrainConfig(lr=0.1, max_epochs=100),
                              seeds=[4, 9], callback=seen.append)
    assert len(ensemble) == 2 and ensemble.seeds == [4, 9]
    model = ensemble.model(1)
    assert isinstance(model, FCN) and model.spec == "fcn:8"
    labels = ensemble.predict_labels(task.E.x)
    assert labels.shape == (2, len(task.E))
    expected = (model(task.E.x) > 0).float()
    assert torch.equal(labels[1], expected)
    assert float((labels[1] == task.E.y).float().mean()) == ensemble.test_acc_E[1]
    assert seen[-1].finished == seen[-1].total == 2 and seen[-1].active == 0
    assert [i.epoch for i in seen] == list(range(1, len(seen) + 1))


def test_given_models_train_as_given():
    task = _task()
    models = [build_model("fcn:8", task.input_shape, seed=s) for s in (0, 1)]
    before = [m.hidden[0].weight.clone() for m in models]
    config = TrainConfig(lr=0.1, max_epochs=50)
    ensemble = train_models_together(models, task, config, seeds=[0, 1])
    assert all(torch.equal(m.hidden[0].weight, b) for m, b in zip(models, before))
    _assert_members_match(ensemble, "fcn:8", task, config)


def test_bad_input_is_rejected_with_one_line():
    task = _task()
    # an optimizer with no stacked update rule (flatvol.train.update_rules) is refused
    register_optimizer("test-only-custom", lambda p, s: torch.optim.RMSprop(p, lr=s.lr))
    with pytest.raises(SpecError, match="cannot stack a RMSprop update"):
        train_ensemble("fcn:8", task, TrainConfig(optimizer="test-only-custom"), seeds=[0])
    with pytest.raises(SpecError, match="BatchNorm"):
        train_ensemble("resnet18:width=2", _image_task(), TrainConfig(), seeds=[0])
    with pytest.raises(SpecError, match="one architecture"):
        train_models_together([build_model("fcn:8", (10,)), build_model("fcn:9", (10,))], task)
    with pytest.raises(SpecError, match="one seed per model"):
        train_models_together([build_model("fcn:8", (10,))], task, seeds=[0, 1])
    with pytest.raises(SpecError, match="distinct"):
        train_ensemble("fcn:8", task, seeds=[1, 1])
    with pytest.raises(SpecError, match="distinct"):
        train_ensemble("fcn:8", task, seeds=[1, 1], attack_sizes=[2, 2])
    with pytest.raises(SpecError, match="one attack size per model"):
        train_ensemble("fcn:8", task, seeds=[1, 2], attack_sizes=[2])
    with pytest.raises(SpecError, match="attack sizes must lie in"):
        train_ensemble("fcn:8", task, seeds=[1], attack_sizes=[len(task.A) + 1])
    with pytest.raises(SpecError, match="engine"):
        train_ensemble("cnn:2", _image_task(), seeds=[0], engine="fcn")


def _image_task() -> TaskData:
    x = torch.rand(4, 3, 8, 8)
    split = Split(x, torch.tensor([0.0, 1.0, 0.0, 1.0]), np.arange(4))
    return TaskData("images", "x", 0, split, Split(x[:0], x.new_zeros(0), np.arange(0)), split)


@pytest.mark.parametrize("history", [True, False])
def test_each_member_is_handed_over_as_it_stops(history):
    """on_stopped gets every member once, in the epoch it stops (while later ones still train),
    with the model and outcome the finished ensemble gives for it."""
    task = _task(seed=3)
    config = TrainConfig(optimizer="sgd", lr=0.1, max_epochs=150)
    seeds, attacks = [0, 3, 0, 5, 6], [8, 0, 0, 3, 5]
    handed: list = []
    epochs_seen: list[int] = []

    def on_epoch(info: EnsembleEpochInfo) -> None:
        epochs_seen.append(info.epoch)

    def on_stopped(member) -> None:
        handed.append((member, len(epochs_seen)))  # epochs finished before this call

    ensemble = train_ensemble("fcn:16,8", task, config, seeds=seeds, attack_sizes=attacks,
                              group_size=2, keep_history=history, callback=on_epoch,
                              on_stopped=on_stopped)
    assert sorted(m.index for m, _ in handed) == list(range(len(seeds)))
    assert len({m.result.epochs for m, _ in handed}) > 1  # some were handed over early
    for member, finished_epochs in handed:
        k = member.index
        # handed over in its stopping epoch, before that epoch's callback
        assert finished_epochs == member.result.epochs - 1
        np.testing.assert_equal(asdict(member.result), asdict(ensemble.result(k)))  # NaN: no A
        final = ensemble.model(k).state_dict()
        for name, p in member.model.state_dict().items():
            assert torch.equal(p, final[name]), name
    _assert_members_match(ensemble, "fcn:16,8", task, config, history=history)
