"""A staged sweep trains every optimizer of the catalogue as one ensemble per optimizer, SAM and
Entropy-SGD with their options included (flatvol.train.update_rules), and records the runs
that one-at-a-time training records."""

import json
import sqlite3

import numpy as np
from experiments_helpers import tiny_spec

from flatvol.experiments import run_sweep, runs_frame, spec_from_dict
from flatvol.experiments.store import store_path

KEYS = ["optimizer", "attack_size", "seed"]
OPTIMIZERS = [
    {"name": "sam", "options": {"rho": 0.05, "base": "momentum"}},
    {"name": "entropy-sgd", "lr": 1.0,
     "options": {"langevin_steps": 3, "gamma0": 1.0, "noise": 1e-3, "seed": 3}},
]


def _spec(ensemble: bool):
    return spec_from_dict(tiny_spec(data__train_size=40, data__test_size=30,
                                    sweep__attack_sizes=[0, 10], sweep__seeds=2,
                                    train__max_epochs=100, train__ensemble=ensemble,
                                    measures__final=["volume"], optimizers=OPTIMIZERS))


def test_sam_and_entropy_sgd_sweeps_train_as_ensembles_and_match_one_at_a_time(tmp_path):
    one, ens = _spec(False), _spec(True)
    a = run_sweep(one, tmp_path / "one", progress=False, threads=1)
    b = run_sweep(ens, tmp_path / "ens", progress=False, threads=1)
    assert (a.done, a.failed) == (b.done, b.failed) == (8, 0)
    ra, rb = (runs_frame(tmp_path / d).sort_values(KEYS).reset_index(drop=True)
              for d in ("one", "ens"))
    for column in ("status", "epochs", "fitted_at", "train_acc_S", "train_acc_A", "test_acc_E"):
        np.testing.assert_equal(rb[column].to_numpy(), ra[column].to_numpy(), err_msg=column)
    assert ra["fitted_at"].notna().any()  # runs that stopped by the rule, not the epoch cap
    # V(f) depends on the function on S u E only, which the two trainings share
    np.testing.assert_allclose(rb["log10_volume"], ra["log10_volume"], atol=1e-6)
    # each optimizer's 4 runs (2 seeds x 2 attack sizes) trained as one ensemble
    with sqlite3.connect(store_path(tmp_path / "ens")) as conn:
        infos = [json.loads(t) for (t,) in conn.execute("SELECT info_json FROM runs")]
    assert [i.get("ensemble", {}).get("size") for i in infos] == [4] * 8
