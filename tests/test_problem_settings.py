"""One settings model for the problem (flatvol.problem_settings): the sweep spec, the
sgd-vs-bayes spec and `flatvol train` read the same sections and train with the TrainConfig of
one conversion, so the same settings train the same network whichever path runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flatvol.errors import SpecError
from flatvol.experiments.build import train_config
from flatvol.experiments.spec import spec_from_dict
from flatvol.problem_settings import (
    DataSpec,
    ModelSpec,
    OptimizerSpec,
    ProblemSpec,
    TrainSpec,
    run_spec,
    run_spec_from_options,
)
from flatvol.sgd_vs_bayes.spec import sgd_vs_bayes_spec_from_dict

# The problem's tables, as a spec file gives them.
TABLES = {"data": {"train_size": 20, "test_size": 10, "data_seed": 4},
          "model": {"arch": "fcn:8", "sigma_w2": 1.5, "sigma_b2": 0.5},
          "train": {"lr": 0.05, "batch_size": 8, "max_epochs": 3, "momentum": 0.5}}


def test_both_specs_are_problem_specs_and_train_with_the_same_config() -> None:
    sweep = spec_from_dict({"name": "s", **TABLES,
                            "optimizers": [{"name": "adam", "lr": 0.001}]})
    bayes = sgd_vs_bayes_spec_from_dict({"name": "b", **TABLES,
                                         "optimizers": [{"name": "adam", "lr": 0.001}]})
    assert isinstance(sweep, ProblemSpec) and isinstance(bayes, ProblemSpec)
    config = train_config(sweep, sweep.optimizers[0], seed=0)
    assert bayes.train_config(bayes.optimizers[0]) == config
    assert config.optimizer == "adam" and config.lr == 0.001 and config.momentum == 0.5
    assert bayes.prior() == sweep.prior()


@pytest.mark.parametrize("optimizer", [{"name": "entropy-sgd", "options": {"langevin_steps": 2}},
                                       {"name": "sam", "options": {"rho": 0.1}, "lr": 0.2}])
def test_flatvol_train_gets_the_config_a_sweep_run_of_the_same_settings_gets(optimizer) -> None:
    # Entropy-SGD's Langevin noise is seeded by the run seed in a sweep; `flatvol train` built
    # its TrainConfig itself and left it at the optimizer's default seed.
    sweep = spec_from_dict({"name": "s", **TABLES, "optimizers": [optimizer]})
    opt = sweep.optimizers[0]
    run = run_spec(sweep.data, sweep.model, sweep.train, opt, attack_size=5, seed=3)
    assert run.train == train_config(sweep, opt, seed=3)
    assert run.train.to_dict() == train_config(sweep, opt, seed=3).to_dict()
    assert (run.task, run.train_size, run.test_size, run.data_seed, run.attack_size, run.seed) \
        == ("mnist", 20, 10, 4, 5, 3)
    assert (run.model, run.prior) == ("fcn:8", sweep.prior())


def test_flatvol_train_options_give_the_sweep_config() -> None:
    options = {"train_size": 20, "test_size": 10, "data_seed": 4, "model": "fcn:8",
               "sigma_w2": 1.5, "sigma_b2": 0.5, "lr": 0.05, "batch_size": 8, "max_epochs": 3,
               "momentum": 0.5, "optimizer": "entropy-sgd", "seed": 3, "attack_size": 5}
    sweep = spec_from_dict({"name": "s", **TABLES, "optimizers": [{"name": "entropy-sgd"}]})
    run = run_spec_from_options(options)
    assert run.train == train_config(sweep, sweep.optimizers[0], seed=3)
    assert run.train.optimizer_options == {"seed": 3}
    assert run.prior == sweep.prior() and run.attack_size == 5


@pytest.mark.parametrize(("options", "needle"), [
    ({"fit": "most"}, "--fit (train.fit): Input should be 'S' or 'all' (got 'most')"),
    ({"sigma_w2": float("inf")}, "--sigma-w2 (model.sigma_w2):"),
    ({"optimizer": "lbfgs"}, "--optimizer (optimizer.name): unknown optimizer 'lbfgs'"),
    ({"classes": "3v3"}, "--classes (data.classes):"),
    ({"max_epochs": 10**12}, "--max-epochs (train.max_epochs): expected"),
    ({"test_size": 0}, "--test-size (data.test_size): expected"),
    ({"seed": -1}, "--seed: expected"),
    ({"momentum": -1.0}, "--momentum (train.momentum): Input should be greater than or equal"),
    ({"warmup": 3}, "unknown run option 'warmup'"),
])
def test_a_bad_run_option_is_one_line_naming_the_option_and_its_field(options, needle) -> None:
    with pytest.raises(SpecError) as info:
        run_spec_from_options(options)
    message = str(info.value)
    assert needle in message and "\n" not in message, message


def test_a_run_with_swa_is_refused_rather_than_trained_without_it() -> None:
    opt = OptimizerSpec(name="sgd", swa={"lr": 0.01})
    with pytest.raises(SpecError, match=r"^optimizer\.swa: expected none"):
        run_spec(DataSpec(), ModelSpec(), TrainSpec(), opt)


def test_a_spec_refuses_an_infinite_prior_variance_when_read(tmp_path: Path) -> None:
    # Prior refuses it; the spec let it through to the pre-flight (a ValueError, not one line).
    from flatvol.experiments.spec import load_spec

    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[model]\nsigma_w2 = inf\n')
    with pytest.raises(SpecError, match=r"s\.toml: model\.sigma_w2: Input should be a finite"):
        load_spec(path)


def test_flatvol_train_writes_the_config_of_the_sweep_run(cli, tmp_path: Path,
                                                         monkeypatch) -> None:
    # The command itself: its run.json records the sweep run's TrainConfig (Entropy-SGD seeded
    # by the run seed).
    monkeypatch.delenv("FLATVOL_DATA", raising=False)
    out = tmp_path / "run"
    code, _, err = cli("train", "--out", str(out), "--train-size", "20", "--test-size", "10",
                       "--data-seed", "4", "--model", "fcn:8", "--sigma-w2", "1.5",
                       "--sigma-b2", "0.5", "--lr", "0.05", "--batch-size", "8",
                       "--max-epochs", "1", "--optimizer", "entropy-sgd", "--seed", "3")
    assert code == 0, err
    sweep = spec_from_dict({"name": "s", "data": TABLES["data"], "model": TABLES["model"],
                            "train": {"lr": 0.05, "batch_size": 8, "max_epochs": 1},
                            "optimizers": [{"name": "entropy-sgd"}]})
    recorded = json.loads((out / "run.json").read_text())["train"]
    assert recorded == train_config(sweep, sweep.optimizers[0], seed=3).to_dict()
