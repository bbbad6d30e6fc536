"""Spec parsing: shipped specs, TOML/YAML equivalence, hashes, one-line errors naming file+field."""

import filecmp
from pathlib import Path

import pytest

from flatvol.errors import SpecError
from flatvol.experiments import load_spec, packaged_spec_names, packaged_spec_path, plan_runs
from flatvol.experiments.spec import spec_from_dict
from flatvol.experiments.spec_files import resolve_spec_path
from flatvol.volume import DEFAULT_ESTIMATOR

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("fig3_mnist_fcn", "fig3_cifar_fcn", "fig3_cifar_fcn_seed0", "fig3_cifar_fcn_fixed_order",
         "fig3_cifar_resnet50", "fig3_cifar_resnet50_cpu",
         "fig4_optimizers", "fig4_cifar_fcn", "fig4_cifar_fcn_adam_lr1e-4",
         "fig4_cifar_fcn_amsgrad_lr1e-4", "fig4_mnist_fcn", "fig5_temporal", "demo")
SPECS = [ROOT / "specs" / f"{name}.toml" for name in NAMES]


def test_shipped_specs_load_and_match_the_packaged_copies():
    assert set(NAMES) <= set(packaged_spec_names())
    for path in SPECS:
        assert filecmp.cmp(path, packaged_spec_path(path.stem), shallow=False), path.name
        spec = load_spec(path)
        assert spec.name == path.stem
        assert spec.measures.volume.estimator == DEFAULT_ESTIMATOR == "ep-orthant"


def test_fig3_and_fig5_settings():
    fig3 = load_spec(resolve_spec_path("fig3_mnist_fcn"))
    assert fig3.sweep.attack_values() == list(range(0, 501, 50))
    assert fig3.sweep.seed_values() == [0, 1, 2, 3, 4]
    assert len(plan_runs(fig3)) == 55
    assert fig3.train.ensemble and not fig3.train.history  # planned by stage, one ensemble
    assert (fig3.data.train_size, fig3.data.test_size, fig3.model.arch) == (500, 1000, "fcn:40,40")
    fig5 = load_spec(resolve_spec_path("fig5_temporal"))
    assert fig5.train.post_train_epochs == 1000 and fig5.data.test_size == 100
    assert fig5.during.every == 1 and {"volume", "sharpness"} <= set(fig5.during.measures)
    (event,) = fig5.alpha_events
    assert (event.post_epoch, event.layer, event.alpha) == (500, 1, 5.9)
    fig4 = load_spec(resolve_spec_path("fig4_optimizers"))
    assert {o.key for o in fig4.optimizers} == {"sgd", "adam", "entropy-sgd", "sgd-momentum",
                                                 "sam", "swa"}
    fig4_cifar = load_spec(resolve_spec_path("fig4_cifar_fcn"))
    assert [o.key for o in fig4_cifar.optimizers] == ["adam", "amsgrad", "sgd"]
    assert len(plan_runs(fig4_cifar)) == 3 * 6 * 3 and fig4_cifar.train.ensemble
    # the paper's maximizer is not the point of Fig. 3/4: they use the default ('fast')
    assert fig3.measures.sharpness.maximizer == fig4.measures.sharpness.maximizer == "fast"


def test_yaml_and_toml_give_the_same_spec(tmp_path):
    toml = tmp_path / "a.toml"
    toml.write_text('name = "a"\n[data]\ntrain_size = 50\n[sweep]\nattack_sizes = '
                    '{start = 0, stop = 20, step = 10}\nseeds = [3, 4]\n'
                    '[[optimizers]]\nname = "sam"\noptions = {rho = 0.1}\n')
    yml = tmp_path / "a.yaml"
    yml.write_text("name: a\ndata: {train_size: 50}\nsweep:\n  attack_sizes: {start: 0, stop: 20, "
                   "step: 10}\n  seeds: [3, 4]\noptimizers:\n  - name: sam\n    options: "
                   "{rho: 0.1}\n")
    a, b = load_spec(toml), load_spec(yml)
    assert a == b and a.spec_hash() == b.spec_hash()
    assert [(r.optimizer.key, r.attack_size, r.seed) for r in plan_runs(a)] == [
        ("sam", 0, 3), ("sam", 10, 3), ("sam", 20, 3), ("sam", 0, 4), ("sam", 10, 4),
        ("sam", 20, 4)]


def test_hash_covers_the_protocol_not_the_sweep_axes():
    base = {"name": "x", "sweep": {"seeds": 2}}
    h = spec_from_dict(base).spec_hash()
    assert spec_from_dict({"name": "y", "description": "other", "sweep": {"seeds": [7],
                           "attack_sizes": [0, 5]},
                           "optimizers": [{"name": "adam"}]}).spec_hash() == h
    assert spec_from_dict({**base, "train": {"lr": 0.02}}).spec_hash() != h
    assert spec_from_dict({**base, "measures": {"final": ["sharpness"]}}).spec_hash() != h
    spec = spec_from_dict({"name": "x", "optimizers": [{"name": "sam", "options": {"rho": 0.1}},
                                                       {"name": "sam", "label": "sam2"}]})
    assert spec.config_hash(spec.optimizers[0]) != spec.config_hash(spec.optimizers[1])


BAD = [
    ('name = "x"\n[data]\ntrian_size = 5\n', "data.trian_size", "Extra inputs"),
    ('name = "x"\n[data]\ntrain_size = "many"\n', "data.train_size", "valid integer"),
    ('name = "x"\n[data]\ntrain_size = 0\n', "data.train_size", "greater than or equal to 1"),
    ('name = "x"\n[[optimizers]]\nname = "lbfgs"\n', "optimizers[0].name", "unknown optimizer"),
    ('name = "x"\n[measures]\nfinal = ["volume", "flatness"]\n', "measures.final",
     "unknown measure 'flatness'"),
    ('name = "x"\n[measures.volume]\nestimator = "gpy"\n', "measures.volume.estimator",
     "ep-orthant"),
    ('name = "x"\n[sweep]\nseeds = [1, 1]\n', "sweep.seeds", "distinct"),
    ('name = "x"\n[sweep]\nattack_sizes = {start = 0, step = 5}\n', "sweep.attack_sizes",
     "stop"),
    ('name = "x"\n[[optimizers]]\nname = "sgd"\n[[optimizers]]\nname = "sgd"\n', "(top level)",
     "labels must be unique"),
    ('name = "x"\n[[alpha_events]]\npost_epoch = 5\nalpha = 5.9\n', "(top level)",
     "post_epoch 5 is after the last post-training epoch"),
    ('name = "x"\n[[optimizers]]\nname = "sgd"\nswa = {lr = 0.01}\n', "(top level)",
     "post_train_epochs >= 1"),
    ('[data]\ntrain_size = 5\n', "name", "Field required"),
    ('name = "x"\n[measures.options.sharpness]\nepsilon = 1e-3\n', "measures",
     "set sharpness options in [measures.sharpness]"),
    ('name = "x"\n[data\n', "invalid TOML", ""),
]


@pytest.mark.parametrize("text,field,message", BAD)
def test_errors_name_file_and_field_on_one_line(tmp_path, text, field, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ")
    assert field in msg and message in msg


def test_yaml_and_file_errors(tmp_path):
    bad_yaml = tmp_path / "bad.yml"
    bad_yaml.write_text("name: x\ndata: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad\.yml: invalid YAML"):
        load_spec(bad_yaml)
    not_table = tmp_path / "list.yaml"
    not_table.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="expected a table/mapping"):
        load_spec(not_table)
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "missing.toml")
    other = tmp_path / "spec.json"
    other.write_text("{}")
    with pytest.raises(SpecError, match="unknown spec format"):
        load_spec(other)
    with pytest.raises(SpecError, match="no packaged spec 'nope'"):
        resolve_spec_path("nope")
