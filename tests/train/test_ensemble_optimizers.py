"""Every optimizer of the catalogue in the ensemble trainer: its update rule
(flatvol.train.update_rules, composed once) steps K stacked networks exactly as train_to_fit's
optimizer steps each alone.

Two levels: (1) the stacked update against the registry's optimizer on one network, both fed
the same per-member gradients: bit for bit (every operation is elementwise or reduces within
one member); (2) whole trainings of 3 members (different seeds and attack sets) against
train_to_fit: the same stopping epoch, accuracies and history, and weights within 1e-5 in
float32 (the tolerance of tests/train/test_ensemble.py: the FCN engine's batched matmuls round
differently from one network's), within 1e-10 in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pytest
import torch

from flatvol.data.task import Split, TaskData
from flatvol.models import build_model
from flatvol.train import TrainConfig, make_optimizer, optimizer_names, train_to_fit
from flatvol.train.ensemble import ENSEMBLE_OPTIMIZERS, train_models_together
from flatvol.train.optimizers import OptimizerSettings
from flatvol.train.stacked import StackedOptimizer

WEIGHT_TOL = 1e-5  # as tests/train/test_ensemble.py: float32 rounding of batched matmuls
CATALOGUE = optimizer_names()  # the built-in names (tests register others later)


@dataclass(frozen=True)
class Case:
    name: str
    lr: float
    options: dict = field(default_factory=dict)

    def config(self, **kwargs) -> TrainConfig:
        return TrainConfig(optimizer=self.name, lr=self.lr, optimizer_options=self.options,
                           **kwargs)


# Entropy-SGD: few Langevin steps (fast) with gamma0 = 1 (it fits, as in test_entropy_sgd.py)
# and noise 1e-3, so that a member drawing another member's noise would move by far more than
# the tolerance.
ENTROPY = {"langevin_steps": 3, "gamma0": 1.0, "noise": 1e-3, "seed": 3}
CASES = [
    Case("sgd", 0.1), Case("momentum", 0.05), Case("adam", 0.01), Case("amsgrad", 0.01),
    Case("sam", 0.1, {"rho": 0.05}), Case("sam", 0.01, {"rho": 0.1, "base": "adam",
                                                        "adaptive": True}),
    Case("entropy-sgd", 1.0, ENTROPY),
    Case("entropy-sgd", 1.0, {**ENTROPY, "momentum": 0.5, "nesterov": True}),
]
IDS = [f"{c.name}-{i}" for i, c in enumerate(CASES)]


def test_the_cases_cover_the_catalogue():
    assert {c.name for c in CASES} == set(CATALOGUE) == set(ENSEMBLE_OPTIMIZERS)


# --- (1) the update rule: stacked against one network, bit for bit


def _member_loss(w: torch.Tensor, b: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """A nonlinear loss whose gradient is elementwise in the weights, so the stacked loss (the
    sum over members) gives each member the very gradient its own loss gives it."""
    return ((w - k[0]) ** 2 * k[1]).sum() * 0.5 + torch.sin(3 * b).sum() + (b ** 2).sum()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_stacked_rule_steps_each_member_as_its_own_optimizer(case):
    gen = torch.Generator().manual_seed(1)
    members, steps = 3, 6
    start = {"w": torch.randn(members, 4, 3, generator=gen),
             "b": torch.randn(members, 3, generator=gen)}
    # per member, per step: the loss's constants (a target and a positive curvature)
    consts = [torch.stack([torch.randn(members, 4, 3, generator=gen),
                           torch.rand(members, 4, 3, generator=gen) + 0.5], 1)
              for _ in range(steps)]
    settings = OptimizerSettings(case.lr, momentum=0.9, options=case.options)
    stacked = {k: v.clone() for k, v in start.items()}
    optimizer = StackedOptimizer(case.name, settings, stacked)
    for step in range(1, steps + 1):
        for rows in (slice(0, 2), slice(2, 3)):  # in two groups, as the ensemble steps them
            group = {k: v[rows] for k, v in stacked.items()}

            def grad_fn(need_loss, group=group, rows=rows, c=consts[step - 1]):
                with torch.enable_grad():
                    w, b = (group[k].detach().requires_grad_() for k in ("w", "b"))
                    loss = sum(_member_loss(w[i], b[i], c[rows][i]) for i in range(len(w)))
                    gw, gb = torch.autograd.grad(loss, (w, b))
                return None, {"w": gw, "b": gb}

            optimizer.step(group, grad_fn, rows, step)
    for m in range(members):
        w, b = (torch.nn.Parameter(start[k][m].clone()) for k in ("w", "b"))
        alone = make_optimizer(case.name, [w, b], settings)
        for step in range(steps):
            def closure(c=consts[step][m], alone=alone, w=w, b=b):
                alone.zero_grad(set_to_none=True)
                loss = _member_loss(w, b, c)
                loss.backward()
                return loss

            alone.step(closure)
        assert torch.isfinite(w).all() and not torch.equal(w.detach(), start["w"][m])
        assert torch.equal(stacked["w"][m], w.detach()), f"{case.name} member {m}: w"
        assert torch.equal(stacked["b"][m], b.detach()), f"{case.name} member {m}: b"


# --- (2) whole trainings: 3 members against train_to_fit


def _task(classes: int, dtype: torch.dtype, seed: int = 0, dim: int = 10) -> TaskData:
    """Gaussian inputs (in `dtype`) labelled by a random linear rule (sign for 2 classes, argmax
    for more); A: extra points with a wrong label (as load_task's attack sets)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((dim, classes if classes > 2 else 1))

    def split(n: int, attack: bool = False) -> Split:
        x = torch.from_numpy(rng.standard_normal((n, dim))).to(dtype)
        scores = x.double().numpy() @ w
        if classes == 2:
            y = torch.from_numpy((scores[:, 0] > 0) ^ attack).to(dtype)
            return Split(x, y, np.arange(n))
        y = scores.argmax(1)
        if attack:
            y = (y + rng.integers(1, classes, size=n)) % classes
        return Split(x, torch.from_numpy(y.astype(np.int64)), np.arange(n))

    return TaskData("synthetic", "linear", seed, split(48), split(8, attack=True), split(40),
                    n_classes=classes)


def _model(spec: str, task: TaskData, seed: int) -> torch.nn.Module:
    return build_model(spec, task.input_shape, seed=seed, outputs=task.outputs).to(task.S.x.dtype)


def _train_together(spec: str, task: TaskData, config: TrainConfig, seeds: list[int],
                    attack_sizes: list[int], **kwargs):
    return train_models_together([_model(spec, task, s) for s in seeds], task, config, seeds,
                                 attack_sizes=attack_sizes, **kwargs)


def _assert_members_match(ensemble, spec: str, task: TaskData, config: TrainConfig,
                          tol: float) -> None:
    for k, seed in enumerate(ensemble.seeds):
        size = ensemble.attack_sizes[k]
        own = replace(task, A=Split(task.A.x[:size], task.A.y[:size], task.A.index[:size]))
        model = _model(spec, task, seed)
        alone = train_to_fit(model, own, config, seed=seed)
        member = ensemble.result(k)
        assert (member.status, member.epochs, member.fitted_at) == (
            alone.status, alone.epochs, alone.fitted_at), f"seed {seed}, attack {size}"
        np.testing.assert_equal([member.train_acc_S, member.train_acc_A, member.test_acc_E],
                                [alone.train_acc_S, alone.train_acc_A, alone.test_acc_E])
        for (name, p), q in zip(model.named_parameters(), ensemble.model(k).parameters()):
            err = (p - q).abs().max().item()
            assert err < tol, f"seed {seed}, {name}: max |w_alone - w_ensemble| = {err:.2e}"
        for a, b in zip(alone.history, member.history, strict=True):
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
            np.testing.assert_equal({**a, "loss": 0}, {**b, "loss": 0})


# float32, the sweeps' dtype, at test_ensemble.py's tolerance, for 20 epochs: longer runs of
# Entropy-SGD with Nesterov momentum amplify float32 rounding (the batched vs single matmuls)
# past it, chaotically (7e-7 after 20 epochs, 2e-4 after 40). float64 for 150 epochs: the same
# runs agree to ~1e-15 there, so 1e-10 leaves room for rounding and none for a wrong rule.
DTYPES = [(torch.float32, 20, WEIGHT_TOL), (torch.float64, 150, 1e-10)]


@pytest.mark.parametrize("dtype,epochs,tol", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_members_equal_networks_trained_alone(case, classes, dtype, epochs, tol):
    task = _task(classes, dtype, seed=classes)
    config = case.config(max_epochs=epochs)
    # members 0 and 2 share their attack size, so they step as one stack (group_size 2)
    ensemble = _train_together("fcn:16,8", task, config, [0, 3, 5], [3, 8, 3], group_size=2)
    assert ensemble.engine == "fcn"
    _assert_members_match(ensemble, "fcn:16,8", task, config, tol)
    if dtype == torch.float64:
        assert "fitted" in ensemble.status  # members stop by the rule, not only at max_epochs


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_blocks_spanning_attack_sizes_train_as_members_alone(case, classes):
    """Members of three attack sizes (3, 4 and 4 minibatches an epoch, last minibatches of 16,
    3 and 8 points) sharing one block's gradient passes, each then updated at its own step
    number (Adam's bias correction reads it), train as each member alone in its own block
    (group_size 1), in one thread or two. SAM and Entropy-SGD keep their blocks within an
    attack size; they are run for the same answer. float64: the stacking changes only the
    rounding of elementwise tails (~1e-16 a step), so 1e-10 leaves no room for a wrong step
    number or minibatch."""
    task = _task(classes, torch.float64, seed=5)
    config = case.config(max_epochs=15, batch_size=16)
    args = ("fcn:16,8", task, config, [0, 1, 2, 3, 4, 5], [0, 3, 8, 3, 0, 8])
    alone = _train_together(*args, group_size=1, workers=1)
    for kwargs in ({"group_size": 6, "workers": 1}, {"group_size": 4, "workers": 2}):
        together = _train_together(*args, **kwargs)
        np.testing.assert_array_equal(alone.epochs, together.epochs)
        for k in alone.params:
            err = (alone.params[k] - together.params[k]).abs().max().item()
            assert err < 1e-10, (k, kwargs, err)


def test_entropy_sgd_trains_inputs_zero_on_the_training_set():
    """Zero-gradient weights stay put under SGD (the FCN engine leaves them out), but
    Entropy-SGD's Langevin noise moves them: the ensemble must train them as train_to_fit."""
    task = _task(2, torch.float64, seed=4)
    zero = lambda s: Split(s.x * torch.tensor([0.0] + [1.0] * 9), s.y, s.index)  # noqa: E731
    task = replace(task, S=zero(task.S), A=zero(task.A))
    config = CASES[6].config(max_epochs=40)
    ensemble = _train_together("fcn:16", task, config, [0, 1], [0, 8])
    _assert_members_match(ensemble, "fcn:16", task, config, 1e-10)
    start = _model("fcn:16", task, 0).hidden[0].weight[:, 0]
    assert not torch.equal(ensemble.model(0).hidden[0].weight[:, 0], start)


class Killed(Exception):
    """Stands for the SIGKILL of a sweep in the middle of its training."""


@pytest.mark.parametrize("case", [CASES[5], CASES[7]], ids=["sam", "entropy-sgd"])
def test_a_killed_training_resumes_bit_for_bit(tmp_path, case):
    """The rule's whole state (the base rule's moments or momentum buffers, each member's
    Langevin noise generator) is in the checkpoint: a resumed training ends as the whole one."""
    task = _task(2, torch.float32, seed=2)
    config = case.config(max_epochs=12)
    args = ("fcn:16,8", task, config, [0, 3, 5], [3, 8, 3])
    whole = _train_together(*args, group_size=2)

    def kill(info) -> None:
        if info.epoch == 7:
            raise Killed

    path = tmp_path / "ensemble.pt"
    with pytest.raises(Killed):
        _train_together(*args, group_size=2, checkpoint=path, checkpoint_every_s=0,
                        callback=kill)
    resumed = _train_together(*args, group_size=2, checkpoint=path)
    for k in whole.params:
        assert torch.equal(whole.params[k], resumed.params[k]), k
    np.testing.assert_array_equal(whole.epochs, resumed.epochs)
