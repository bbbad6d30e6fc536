"""Bad input to every command: one line on stderr naming the problem, exit code 2, no traceback,
and nothing written or changed on disk. One parametrized case per input."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from flatvol.data import load_task
from flatvol.experiments.runner import run_sweep
from flatvol.experiments.spec import load_spec
from flatvol.io import sha256_file
from flatvol.models import Prior
from flatvol.train import TrainConfig
from flatvol.train.run import RunSpec, train_run

TINY_SPEC = {
    "name": "tiny",
    "data": {"task": "mnist", "train_size": 40, "test_size": 40},
    "model": {"arch": "fcn:8"},
    "train": {"lr": 0.05, "max_epochs": 300},
    "optimizers": [{"name": "sgd"}],
    "sweep": {"attack_sizes": [0, 10], "seeds": 1},
    "measures": {"final": ["sharpness"], "sharpness": {"maximizer": "fast"}},
}


def toml_text(spec: dict) -> str:
    """A TOML file for a nested dict of scalars, lists, tables and arrays of tables."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    def table(prefix: str, node: dict) -> list[str]:
        lines, subs = [], []
        for k, v in node.items():
            if isinstance(v, dict):
                subs.append((f"{prefix}.{k}" if prefix else k, v))
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                for item in v:
                    subs.append(("[" + (f"{prefix}.{k}" if prefix else k) + "]", item))
            else:
                lines.append(f"{k} = {value(v)}")
        for name, sub in subs:
            lines.append(f"[{name}]")
            lines.extend(table(name.strip("[]"), sub))
        return lines

    return "\n".join(table("", spec)) + "\n"


def spec_with(**changes) -> dict:
    """TINY_SPEC with dotted keys (a__b) replaced; a value of None deletes the key."""
    spec = copy.deepcopy(TINY_SPEC)
    for dotted, v in changes.items():
        *path, last = dotted.split("__")
        node = spec
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if v is None:
            node.pop(last, None)
        else:
            node[last] = v
    return spec


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root (what a refused command must leave unchanged)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_refused(cli, root: Path, args: list[str], needle: str) -> str:
    before = snapshot(root)
    code, out, err = cli(*args)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert needle.lower() in lines[0].lower(), (needle, lines[0])
    assert "Traceback" not in err
    assert snapshot(root) == before, "a refused command changed files on disk"
    return lines[0]


@pytest.fixture(autouse=True)
def _embedded(monkeypatch):
    monkeypatch.delenv("FLATVOL_DATA", raising=False)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A tiny fitted run directory written by train_run (fcn:8 on 30 points)."""
    out = tmp_path_factory.mktemp("run") / "run"
    task = load_task("mnist", train_size=30, attack_size=0, test_size=20, data_dir=None)
    spec = RunSpec(train_size=30, test_size=20, model="fcn:8", prior=Prior(),
                   train=TrainConfig(lr=0.05, max_epochs=300))
    train_run(spec, task, out_dir=out)
    return out


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with the files the cases point at."""
    (tmp_path / "afile").write_text("not a directory\n")
    (tmp_path / "text.npy").write_text("0.5 0.1\n0.1 0.5\n")
    np.save(tmp_path / "K.npy", np.array([[2.0, 0.5, 0.1], [0.5, 2.0, 0.3], [0.1, 0.3, 2.0]]))
    np.save(tmp_path / "K_rect.npy", np.ones((3, 2)))
    np.save(tmp_path / "K_asym.npy", np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0, 0, 2.0]]))
    np.save(tmp_path / "K_nonpsd.npy", np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0, 0, 1.0]]))
    np.save(tmp_path / "K_nan.npy", np.array([[1.0, np.nan, 0], [np.nan, 1.0, 0], [0, 0, 1.0]]))
    np.save(tmp_path / "K_obj.npy", np.array([[1, 0, 0], [0, 1, 0], [0, 0, "x"]], dtype=object),
            allow_pickle=True)
    np.save(tmp_path / "K_zero_diag.npy", np.array([[0.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]))
    np.save(tmp_path / "K_empty.npy", np.zeros((0, 0)))
    np.save(tmp_path / "K_str.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(tmp_path / "y_2d.npy", np.array([[1, 0], [1, 0], [0, 1]]))
    np.save(tmp_path / "y_empty.npy", np.array([]))
    np.save(tmp_path / "y.npy", np.array([1, 0, 1]))
    np.save(tmp_path / "y_short.npy", np.array([1, 0]))
    np.save(tmp_path / "y_two.npy", np.array([1, 0, 2]))
    np.save(tmp_path / "y_half.npy", np.array([1, 0, 0.5]))
    np.save(tmp_path / "y_nan.npy", np.array([1, 0, np.nan]))
    for name, spec in {
        "ok": TINY_SPEC,
        "bad_arch": spec_with(model__arch="fcn:40,x"),
        "bad_arch_name": spec_with(model__arch="mlp:3"),
        "huge_attack": spec_with(sweep__attack_sizes=[0, 100000]),
        "huge_test": spec_with(data__test_size=100000),
        "bad_classes": spec_with(data__classes="3v3"),
        "bad_task": spec_with(data__task="imagenet"),
        "bad_sam": spec_with(optimizers=[{"name": "sam", "options": {"rho": -1.0}}]),
        "bad_opt_option": spec_with(optimizers=[{"name": "sgd", "options": {"bogus": 1}}]),
        "bad_opt_name": spec_with(optimizers=[{"name": "rmsprop-ish"}]),
        "bad_measure": spec_with(measures__final=["sharpness", "bogus"]),
        "bad_measure_option": spec_with(measures__final=["hessian_trace"],
                                        measures__options={"hessian_trace": {"bogus": 3}}),
        "bad_measure_value": spec_with(measures__final=["hessian_trace"],
                                       measures__options={"hessian_trace": {"n_hvp": 0}}),
        "bad_sharpness_option": spec_with(measures__sharpness__options={"bogus": 1}),
        "bad_volume_option": spec_with(measures__final=["volume"],
                                       measures__volume={"options": {"bogus": 1}}),
        "bad_estimator": spec_with(measures__final=["volume"],
                                   measures__volume={"estimator": "magic"}),
        "bad_seeds": spec_with(sweep__seeds="a"),
        "bad_lr": spec_with(train__lr=-1.0),
        "bad_field": spec_with(train__bogus=1),
        "bad_alpha": spec_with(alpha_events=[{"post_epoch": 5, "alpha": 2.0}]),
        "zero_train": spec_with(data__train_size=0),
        "negative_attack": spec_with(sweep__attack_sizes=[0, -10]),
        "repeated_attack": spec_with(sweep__attack_sizes=[0, 10, 10]),
        "zero_seeds": spec_with(sweep__seeds=0),
        "duplicate_labels": spec_with(optimizers=[{"name": "sgd"}, {"name": "sgd"}]),
        "every_without_measures": spec_with(during={"every": 5}),
        "unknown_during": spec_with(during={"every": 5, "measures": ["bogus"]}),
        "ensemble_alpha": spec_with(train__ensemble=True, train__post_train_epochs=10,
                                    alpha_events=[{"post_epoch": 5, "alpha": 2.0}]),
        "epsilon_zero": spec_with(measures__sharpness__epsilon=0.0),
        "maximizer": spec_with(measures__sharpness__maximizer="magic"),
        "mc_samples": spec_with(measures__final=["volume"],
                                measures__volume={"kernel": "mc", "mc_samples": 1}),
        "mc_samples_word": spec_with(measures__final=["volume"],
                                     measures__volume={"kernel": "mc", "mc_samples": "many"}),
        "mc_tolerance": spec_with(measures__final=["volume"],
                                  measures__volume={"kernel": "mc", "mc_samples": "auto",
                                                    "mc_tolerance": 0.0}),
        "mc_max_samples": spec_with(measures__final=["volume"],
                                    measures__volume={"kernel": "mc", "mc_max_samples": 2}),
        "mc_batchnorm": spec_with(measures__final=["volume"],
                                  measures__volume={"kernel": "mc", "mc_batchnorm": "train"}),
        # 3 draws of 8 features: rank <= 25 < |S u E| = 80, a singular kernel
        "mc_rank": spec_with(measures__final=["volume"],
                             measures__volume={"kernel": "mc", "mc_samples": 3}),
        "analytic_cnn": spec_with(model__arch="cnn:4", measures__final=["volume"],
                                  measures__volume={"kernel": "analytic"}),
        "swa_without_post": spec_with(optimizers=[{"name": "sgd", "swa": {"lr": 0.01}}]),
        "sigma_w2": spec_with(model__sigma_w2=0.0),
    }.items():
        (tmp_path / f"{name}.toml").write_text(toml_text(spec))
    (tmp_path / "broken.toml").write_text("name = \n[data\n")
    grid = ('name = "g"\n[data]\ntrain_size = 20\ntest_size = 5\n[model]\narch = "fcn:4"\n'
            '[[optimizers]]\nname = "sgd"\n[sampling]\nnetworks = 4\n[grid]\n')
    (tmp_path / "grid_huge_S.toml").write_text(grid + "train_size = [20, 1000000]\n")
    (tmp_path / "grid_batch.toml").write_text(grid + 'batch_size = [32, "half"]\n')
    (tmp_path / "grid_cnn.toml").write_text(grid.replace("fcn:4", "cnn:4") + "width = [4]\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    (tmp_path / "latin1.toml").write_bytes("name = \"caf\xe9\"\n".encode("latin-1"))
    (tmp_path / "spec.json").write_text("{}")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "results.sqlite").write_bytes(b"this is not sqlite" * 100)
    return tmp_path


def _run_dir_variant(src: Path, dst: Path, kind: str) -> None:
    import shutil

    shutil.copytree(src, dst)
    state = torch.load(dst / "model.pt", weights_only=True)
    info = json.loads((dst / "run.json").read_text())
    if kind in ("nan", "inf"):  # a run that diverged and was saved so: its sha256 recorded
        name = next(iter(state)) if kind == "nan" else list(state)[-1]
        state[name].view(-1)[0] = math.nan if kind == "nan" else math.inf
        torch.save(state, dst / "model.pt")
        info["weights_sha256"] = sha256_file(dst / "model.pt")
        (dst / "run.json").write_text(json.dumps(info))
    elif kind == "swapped_weights":  # finite weights of the right shape, not the run's
        first = next(iter(state))
        state[first].view(-1)[0] += 1.0
        torch.save(state, dst / "model.pt")
    elif kind == "shape":
        info["model"] = "fcn:9"
        (dst / "run.json").write_text(json.dumps(info))
    elif kind == "no_weights":
        (dst / "model.pt").unlink()
    elif kind == "garbage_weights":
        (dst / "model.pt").write_bytes(b"garbage")
    elif kind == "bad_json":
        (dst / "run.json").write_text("{not json")
    elif kind == "missing_field":
        del info["model"]
        (dst / "run.json").write_text(json.dumps(info))
    elif kind == "bad_prior":
        info["prior"] = {"sigma_w2": -1, "sigma_b2": 1}
        (dst / "run.json").write_text(json.dumps(info))


RUN_DIR_VARIANTS = {
    "nan": "not finite", "inf": "not finite", "shape": "do not match",
    "swapped_weights": "model.pt: weights changed since run.json was written",
    "no_weights": "model.pt", "garbage_weights": "model.pt", "bad_json": "run.json",
    "missing_field": "model", "bad_prior": "sigma_w2",
}


@pytest.mark.parametrize("command", ["volume", "flatness"])
@pytest.mark.parametrize("kind", list(RUN_DIR_VARIANTS))
def test_broken_run_directories(cli, tmp_path, trained_run, command, kind):
    _run_dir_variant(trained_run, tmp_path / "r", kind)
    assert_refused(cli, tmp_path, [command, str(tmp_path / "r")],
                   RUN_DIR_VARIANTS[kind])


@pytest.mark.parametrize("command", ["volume", "flatness"])
@pytest.mark.parametrize("target,needle", [
    ("missing", "run directory not found"), ("afile", "expected a run directory"),
    (".", "no run.json"),
])
def test_run_dir_that_is_not_a_run(cli, workdir, command, target, needle):
    path = workdir / target if target != "." else workdir
    assert_refused(cli, workdir, [command, str(path)], needle)


def _resolve(args: list[str], workdir: Path, run: Path) -> list[str]:
    return [a.replace("{w}", str(workdir)).replace("{run}", str(run)) for a in args]


VOLUME_CASES = {
    "kernel_text": (["--kernel", "{w}/text.npy", "--labels", "{w}/y.npy"], "text.npy"),
    "kernel_missing": (["--kernel", "{w}/nope.npy", "--labels", "{w}/y.npy"], "nope.npy"),
    "kernel_rect": (["--kernel", "{w}/K_rect.npy", "--labels", "{w}/y.npy"], "square"),
    "kernel_asym": (["--kernel", "{w}/K_asym.npy", "--labels", "{w}/y.npy"], "symmetric"),
    "kernel_nonpsd": (["--kernel", "{w}/K_nonpsd.npy", "--labels", "{w}/y.npy"],
                      "K_nonpsd.npy: not positive"),
    "kernel_nan": (["--kernel", "{w}/K_nan.npy", "--labels", "{w}/y.npy"], "non-finite"),
    "kernel_pickled": (["--kernel", "{w}/K_obj.npy", "--labels", "{w}/y.npy"], "K_obj.npy"),
    "labels_short": (["--kernel", "{w}/K.npy", "--labels", "{w}/y_short.npy"], "expected 3"),
    # [1, 0, 2] alone is a valid 3-class labelling; as two classes it is refused
    "labels_two": (["--kernel", "{w}/K.npy", "--labels", "{w}/y_two.npy", "--classes", "2"],
                   "y_two.npy"),
    "labels_half": (["--kernel", "{w}/K.npy", "--labels", "{w}/y_half.npy"], "y_half.npy"),
    "labels_nan": (["--kernel", "{w}/K.npy", "--labels", "{w}/y_nan.npy"], "y_nan.npy"),
    "labels_missing": (["--kernel", "{w}/K.npy"], "--labels"),
    "kernel_only_labels": (["--labels", "{w}/y.npy"], "--kernel"),
    "both_sources": (["{run}", "--kernel", "{w}/K.npy", "--labels", "{w}/y.npy"], "not both"),
    "n_train_zero": (["--kernel", "{w}/K.npy", "--labels", "{w}/y.npy", "--n-train", "0"],
                     "--n-train"),
    "n_train_too_big": (["--kernel", "{w}/K.npy", "--labels", "{w}/y.npy", "--n-train", "9"],
                        "--n-train"),
    "estimator": (["--kernel", "{w}/K.npy", "--labels", "{w}/y.npy", "--estimator", "magic"],
                  "estimator"),
    "samples": (["--kernel", "{w}/K.npy", "--labels", "{w}/y.npy", "--samples", "1"],
                "--samples"),
    "proposal": (["--kernel", "{w}/K.npy", "--labels", "{w}/y.npy", "--proposal", "x"],
                 "--proposal"),
    "mc_samples": (["{run}", "--mc-samples", "1"], "--mc-samples"),
    "mc_samples_word": (["{run}", "--mc-samples", "many"], "--mc-samples"),
    "mc_tolerance": (["{run}", "--mc-samples", "auto", "--mc-tolerance", "0"], "--mc-tolerance"),
    "mc_max_samples": (["{run}", "--mc-samples", "auto", "--mc-max-samples", "3"],
                       "--mc-max-samples"),
    "mc_batchnorm": (["{run}", "--mc-batchnorm", "train"], "--mc-batchnorm"),
    "device": (["{run}", "--device", "cuda:7"], "--device"),
    "device_name": (["{run}", "--device", "gpu0"], "--device"),
    "samples_text": (["--kernel", "{w}/K.npy", "--labels", "{w}/y.npy", "--samples", "x"],
                     "--samples"),
    "kernel_zero_diag": (["--kernel", "{w}/K_zero_diag.npy", "--labels", "{w}/y.npy"],
                         "diagonal"),
    "kernel_empty": (["--kernel", "{w}/K_empty.npy", "--labels", "{w}/y.npy"], "K_empty.npy"),
    "kernel_strings": (["--kernel", "{w}/K_str.npy", "--labels", "{w}/y.npy"], "numeric"),
    "kernel_is_dir": (["--kernel", "{w}/store", "--labels", "{w}/y.npy"], "store"),
    "labels_2d": (["--kernel", "{w}/K.npy", "--labels", "{w}/y_2d.npy"], "y_2d.npy"),
    "labels_empty": (["--kernel", "{w}/K.npy", "--labels", "{w}/y_empty.npy"], "y_empty.npy"),
    "run_dir_missing": (["{w}/no-run"], "run directory not found"),
}


@pytest.mark.parametrize("case", list(VOLUME_CASES))
def test_volume_command(cli, workdir, trained_run, case):
    args, needle = VOLUME_CASES[case]
    assert_refused(cli, workdir,
                   ["volume", *_resolve(args, workdir, trained_run)], needle)


FLATNESS_CASES = {
    "measures": (["--measures", "keskar,bogus"], "bogus"),
    "measures_empty": (["--measures", ","], "--measures"),
    "epsilon_zero": (["--epsilon", "0"], "epsilon"),
    "epsilon_nan": (["--epsilon", "nan"], "epsilon"),
    "maximizer": (["--maximizer", "magic"], "maximizer"),
    "top_k": (["--top-k", "0"], "--top-k"),
    "n_hvp": (["--n-hvp", "0"], "--n-hvp"),
    "chunk_size": (["--chunk-size", "0"], "--chunk-size"),
    "device": (["--device", "cuda"], "--device"),
    "unknown_option": (["--bogus"], "--bogus"),
}


@pytest.mark.parametrize("case", list(FLATNESS_CASES))
def test_flatness_command(cli, workdir, trained_run, case):
    args, needle = FLATNESS_CASES[case]
    assert_refused(cli, workdir, ["flatness", str(trained_run), *args], needle)


TRAIN_CASES = {
    "out_is_file": (["--out", "{w}/afile"], "--out"),
    "out_holds_run": (["--out", "{run}"], "already holds a run"),
    "out_under_file": (["--out", "{w}/afile/sub"], "--out"),
    "task": (["--task", "imagenet"], "task"),
    "classes": (["--classes", "3v3"], "classes"),
    "attack_size": (["--attack-size", "100000"], "attack_size"),
    "attack_negative": (["--attack-size", "-1"], "attack"),
    "train_size_zero": (["--train-size", "0"], "train_size"),
    "test_size_huge": (["--test-size", "100000"], "test_size"),
    "seed_negative": (["--seed", "-1"], "--seed"),
    "data_seed_negative": (["--data-seed", "-1"], "--data-seed"),
    "data_dir": (["--data-dir", "{w}/no-such-dir"], "no-such-dir"),
    "model": (["--model", "fcn:40,x"], "fcn:40,x"),
    "model_name": (["--model", "mlp:3"], "mlp"),
    "optimizer": (["--optimizer", "rmsprop-ish"], "optimizer"),
    "lr_negative": (["--lr", "-1"], "lr"),
    "lr_nan": (["--lr", "nan"], "lr"),
    "batch_size": (["--batch-size", "0"], "batch_size"),
    "max_epochs": (["--max-epochs", "0"], "max_epochs"),
    "fit": (["--fit", "E"], "fit"),
    "sigma_w2": (["--sigma-w2", "-1"], "sigma_w2"),
    "sigma_b2_nan": (["--sigma-b2", "nan"], "sigma_b2"),
    "device": (["--device", "cuda"], "--device"),
    "int_text": (["--seed", "x"], "--seed"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_command(cli, workdir, trained_run, case):
    args, needle = TRAIN_CASES[case]
    args = _resolve(args, workdir, trained_run)
    if "--out" not in args:
        args = ["--out", str(workdir / "new-run"), *args]
    before = snapshot(trained_run)
    assert_refused(cli, workdir, ["train", "--max-epochs", "5", *args]
                   if "--max-epochs" not in args else ["train", *args], needle)
    assert snapshot(trained_run) == before
    assert not (workdir / "new-run").exists()


RUN_CASES = {
    "spec_missing": (["{w}/none.toml"], "none.toml"),
    "spec_unknown_name": (["no_such_spec"], "no_such_spec"),
    "spec_format": (["{w}/spec.json"], "spec.json"),
    "spec_broken": (["{w}/broken.toml"], "invalid TOML"),
    "arch": (["{w}/bad_arch.toml"], "model.arch"),
    "arch_name": (["{w}/bad_arch_name.toml"], "model.arch"),
    "attack_too_big": (["{w}/huge_attack.toml"], "attack"),
    "test_too_big": (["{w}/huge_test.toml"], "test_size"),
    "classes": (["{w}/bad_classes.toml"], "classes"),
    "task": (["{w}/bad_task.toml"], "task"),
    "sam_option": (["{w}/bad_sam.toml"], "optimizers[0]"),
    "optimizer_option": (["{w}/bad_opt_option.toml"], "optimizers[0]"),
    "optimizer_name": (["{w}/bad_opt_name.toml"], "optimizers"),
    "measure_name": (["{w}/bad_measure.toml"], "bogus"),
    "measure_option": (["{w}/bad_measure_option.toml"], "measures.options.hessian_trace"),
    "measure_value": (["{w}/bad_measure_value.toml"], "hessian_trace"),
    "sharpness_option": (["{w}/bad_sharpness_option.toml"], "measures.sharpness.options"),
    "volume_option": (["{w}/bad_volume_option.toml"], "measures.volume.options"),
    "estimator": (["{w}/bad_estimator.toml"], "estimator"),
    "seeds": (["{w}/bad_seeds.toml"], "sweep.seeds"),
    "lr": (["{w}/bad_lr.toml"], "train.lr"),
    "unknown_field": (["{w}/bad_field.toml"], "train.bogus"),
    "alpha_after_training": (["{w}/bad_alpha.toml"], "alpha_events"),
    "out_is_file": (["{w}/ok.toml", "--out", "{w}/afile"], "--out"),
    "out_under_file": (["{w}/ok.toml", "--out", "{w}/afile/sub"], "--out"),
    "out_not_a_store": (["{w}/ok.toml", "--out", "{w}/store"], "results store"),
    "threads_negative": (["{w}/ok.toml", "--threads", "-2"], "--threads"),
    "threads_zero": (["{w}/ok.toml", "--threads", "0"], "--threads"),
    "workers_zero": (["{w}/ok.toml", "--workers", "0"], "--workers"),
    "workers_negative": (["{w}/ok.toml", "--workers", "-1"], "--workers"),
    "workers_word": (["{w}/ok.toml", "--workers", "many"], "--workers"),
    "backend": (["{w}/ok.toml", "--backend", "slurm"], "--backend"),
    "device": (["{w}/ok.toml", "--device", "cuda"], "--device"),
    "data_dir": (["{w}/ok.toml", "--data-dir", "{w}/no-such-dir"], "no-such-dir"),
    "yaml_list": (["{w}/list.yaml"], "list.yaml"),
    "yaml_broken": (["{w}/broken.yaml"], "invalid YAML"),
    "not_utf8": (["{w}/latin1.toml"], "latin1.toml"),
    "zero_train": (["{w}/zero_train.toml"], "data.train_size"),
    "negative_attack": (["{w}/negative_attack.toml"], "attack"),
    "repeated_attack": (["{w}/repeated_attack.toml"], "repeat"),
    "zero_seeds": (["{w}/zero_seeds.toml"], "sweep.seeds"),
    "duplicate_labels": (["{w}/duplicate_labels.toml"], "unique"),
    "every_without_measures": (["{w}/every_without_measures.toml"], "during"),
    "unknown_during": (["{w}/unknown_during.toml"], "bogus"),
    "ensemble_alpha": (["{w}/ensemble_alpha.toml"], "train.ensemble"),
    "epsilon_zero": (["{w}/epsilon_zero.toml"], "epsilon"),
    "maximizer": (["{w}/maximizer.toml"], "maximizer"),
    "mc_samples": (["{w}/mc_samples.toml"], "mc_samples"),
    "mc_samples_word": (["{w}/mc_samples_word.toml"], "mc_samples"),
    "mc_tolerance": (["{w}/mc_tolerance.toml"], "mc_tolerance"),
    "mc_max_samples": (["{w}/mc_max_samples.toml"], "mc_max_samples"),
    "mc_batchnorm": (["{w}/mc_batchnorm.toml"], "mc_batchnorm"),
    "mc_rank": (["{w}/mc_rank.toml"], "measures.volume.mc_samples=3"),
    "analytic_cnn": (["{w}/analytic_cnn.toml"], "analytic"),
    "swa_without_post": (["{w}/swa_without_post.toml"], "post_train_epochs"),
    "sigma_w2": (["{w}/sigma_w2.toml"], "sigma_w2"),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_run_command(cli, workdir, trained_run, case):
    args, needle = RUN_CASES[case]
    args = _resolve(args, workdir, trained_run)
    if "--out" not in args:
        args = [*args, "--out", str(workdir / "sweep")]
    assert_refused(cli, workdir, ["run", *args, "--quiet"], needle)
    assert not (workdir / "sweep").exists()


SGD_VS_BAYES_CASES = {
    "spec_missing": (["{w}/none.toml"], "none.toml"),
    "spec_broken": (["{w}/broken.toml"], "broken.toml"),
    "out_is_file": (["sgd_vs_bayes", "--out", "{w}/afile"], "--out"),
    "threads_zero": (["sgd_vs_bayes", "--threads", "0"], "--threads"),
    "threads_negative": (["sgd_vs_bayes", "--threads", "-2"], "--threads"),
    "networks_zero": (["sgd_vs_bayes", "--networks", "0"], "--networks"),
    "workers_zero": (["sgd_vs_bayes", "--workers", "0"], "--workers"),
    "workers_text": (["sgd_vs_bayes", "--workers", "many"], "--workers"),
    "device": (["sgd_vs_bayes", "--device", "cuda"], "--device"),
    "data_dir": (["sgd_vs_bayes", "--data-dir", "{w}/no-such-dir"], "no-such-dir"),
    # a grid: every cell's data is loaded before any cell runs
    "grid_train_size": (["{w}/grid_huge_S.toml"], "train_size"),
    "grid_batch_size": (["{w}/grid_batch.toml"], "grid.batch_size"),
    "grid_width_cnn": (["{w}/grid_cnn.toml"], "grid.width needs an fcn"),
}


@pytest.mark.parametrize("case", list(SGD_VS_BAYES_CASES))
def test_sgd_vs_bayes_command(cli, workdir, trained_run, case):
    args, needle = SGD_VS_BAYES_CASES[case]
    args = _resolve(args, workdir, trained_run)
    if "--out" not in args:
        args = [*args, "--out", str(workdir / "pvb")]
    assert_refused(cli, workdir, ["sgd-vs-bayes", *args, "--quiet"], needle)


REPORT_CASES = {
    "train_runs": (["{run}/.."], "flatvol collect"),
    "missing_dir": (["{w}/none"], "none"),
    "no_store": (["{w}"], "no results store"),
    "not_a_store": (["{w}/store"], "results store"),
    "resamples": (["{w}/store", "--resamples", "-1"], "--resamples"),
}


@pytest.mark.parametrize("case", list(REPORT_CASES))
def test_report_command(cli, workdir, trained_run, case):
    args, needle = REPORT_CASES[case]
    assert_refused(cli, workdir,
                   ["report", *_resolve(args, workdir, trained_run)], needle)


COLLECT_CASES = {
    "missing_run_dir": (["{w}/no-run", "--out", "{w}/o"], "run directory not found"),
    "run_dir_is_file": (["{w}/afile", "--out", "{w}/o"], "expected a run directory"),
    "out_is_file": (["{run}", "--out", "{w}/afile"], "--out"),
    "unknown_measure": (["{run}", "--out", "{w}/o", "--measures", "volume,bogus"], "bogus"),
    "no_measures": (["{run}", "--out", "{w}/o", "--measures", ","], "--measures"),
    "maximizer": (["{run}", "--out", "{w}/o", "--maximizer", "magic"], "--maximizer"),
    "estimator": (["{run}", "--out", "{w}/o", "--estimator", "magic"], "magic"),
    "epsilon": (["{run}", "--out", "{w}/o", "--epsilon", "0"], "--epsilon"),
    "mc_samples": (["{run}", "--out", "{w}/o", "--mc-samples", "1"], "--mc-samples"),
    "device": (["{run}", "--out", "{w}/o", "--device", "gpu0"], "--device"),
    "no_out": (["{run}"], "--out"),
}


@pytest.mark.parametrize("case", list(COLLECT_CASES))
def test_collect_command(cli, workdir, trained_run, case):
    args, needle = COLLECT_CASES[case]
    assert_refused(cli, workdir, ["collect", *_resolve(args, workdir, trained_run)], needle)


@pytest.mark.parametrize("kind", list(RUN_DIR_VARIANTS))
def test_collect_refuses_broken_run_directories(cli, tmp_path, trained_run, kind):
    _run_dir_variant(trained_run, tmp_path / "r", kind)
    assert_refused(cli, tmp_path, ["collect", str(trained_run), str(tmp_path / "r"), "--out",
                                   str(tmp_path / "o")], RUN_DIR_VARIANTS[kind])


@pytest.mark.parametrize("args,needle", [
    (["--out", "{w}/afile"], "--out"),
    (["--data-dir", "{w}/no-such-dir"], "no-such-dir"),
    (["--bogus"], "--bogus"),
])
def test_demo_command(cli, workdir, trained_run, args, needle):
    assert_refused(cli, workdir,
                   ["demo", *_resolve(args, workdir, trained_run)], needle)


UNWRITABLE = Path("/proc/sys/flatvol-out")  # not writable even by root (Linux procfs)


@pytest.mark.skipif(not UNWRITABLE.parent.is_dir() or os.access(UNWRITABLE.parent, os.W_OK),
                    reason="needs Linux /proc/sys, which no user (not even root) may write to")
@pytest.mark.parametrize("command", [["run", "{w}/ok.toml", "--quiet"], ["train"],
                                     ["sgd-vs-bayes", "sgd_vs_bayes", "--quiet"],
                                     ["demo", "--quiet"]])
def test_unwritable_output_directory(cli, workdir, trained_run, command):
    args = [*_resolve(command, workdir, trained_run), "--out", str(UNWRITABLE)]
    assert_refused(cli, workdir, args, "not writable")


@pytest.mark.parametrize("args,needle", [(["bogus"], "bogus"), (["volume", "--bogus"], "--bogus")])
def test_unknown_command_or_option(cli, workdir, args, needle):
    assert_refused(cli, workdir, args, needle)


def test_refused_rerun_leaves_the_store_bytes_unchanged(cli, tmp_path):
    """A sweep re-run with a changed optimizer setting under the same label is refused, and the
    store (database, spec rows, environment metadata) is byte-for-byte as it was."""
    spec = tmp_path / "s.toml"
    spec.write_text(toml_text(spec_with(sweep__attack_sizes=[0], measures__final=["accuracy"])))
    out = tmp_path / "out"
    run_sweep(load_spec(spec), out, progress=False)
    changed = tmp_path / "changed.toml"
    changed.write_text(toml_text(spec_with(sweep__attack_sizes=[0], measures__final=["accuracy"],
                                           optimizers=[{"name": "sgd", "lr": 0.02}])))
    line = assert_refused(cli, tmp_path,
                          ["run", str(changed), "--out", str(out), "--quiet"], "other settings")
    assert "sgd" in line
