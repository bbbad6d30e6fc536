"""Synthetic runs/series tables shaped like flatvol.experiments.store's runs_frame and
series_frame, for the analysis tests."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from flatvol.experiments.store import RunKey, RunRecord, Store


def make_runs(optimizers=("sgd", "adam"), attack_sizes=range(0, 501, 100), seeds=range(3),
              seed: int = 0) -> pd.DataFrame:
    """One row per run, as the store's runs_frame: test accuracy falls with attack size;
    log10 V tracks it closely, log10 sharpness loosely; the last run did not fit S and the one
    before it failed."""
    rng = np.random.default_rng(seed)
    rows = []
    for opt in optimizers:
        for a in attack_sizes:
            for s in seeds:
                acc = 0.92 - 0.0005 * a + rng.normal(0, 0.01)
                epochs = int(20 + a // 10 + rng.integers(0, 5))
                rows.append({
                    "spec_hash": "abc123", "spec_name": "synthetic", "optimizer": opt,
                    "attack_size": a, "seed": s, "status": "done", "reason": None,
                    "train_status": "fitted", "epochs": epochs, "fitted_at": epochs,
                    "train_acc_S": 1.0, "test_acc_E": acc,
                    "log10_volume": -250 + 400 * (acc - 0.9) + rng.normal(0, 2),
                    "log10_volume_conditional": -80 + 150 * (acc - 0.9) + rng.normal(0, 2),
                    "log10_sharpness": 0.5 - 3 * (acc - 0.9) + rng.normal(0, 0.15),
                    "hessian_top_eig": float(np.exp(rng.normal(2 - 5 * (acc - 0.9), 0.3))),
                    "hessian_trace": float(np.exp(rng.normal(4, 0.3))),
                })
    runs = pd.DataFrame(rows)
    last = len(runs) - 1
    runs.loc[last, ["train_status", "test_acc_E", "train_acc_S"]] = ["did_not_fit", 0.5, 0.9]
    runs.loc[last - 1, ["status", "reason"]] = ["failed", "RuntimeError: synthetic failure"]
    runs.loc[last - 1, ["log10_volume", "log10_sharpness", "test_acc_E"]] = np.nan
    runs["reason"] = list(runs["reason"])  # re-infer: a string column, as read from SQLite
    return runs


def make_series(fitted_at: int = 40, alpha_epoch: int = 90, last: int = 140,
                jump: float = 3.0, event_metrics: bool = True) -> pd.DataFrame:
    """One Fig-5 run as the runner logs it: phase 'fit' up to `fitted_at`, then 'post'; at
    `alpha_epoch` 'post' rows (before the scaling) then 'alpha' rows (after it). Sharpness falls
    after zero error and jumps by 10**jump at alpha; V(f) is flat after zero error. With
    `event_metrics` the zero-error epoch and alpha (5.9, layer 1) are logged as metrics too."""
    rng = np.random.default_rng(1)
    rows = []
    key = {"spec_hash": "t5", "optimizer": "sgd", "attack_size": 0, "seed": 0}

    def add(epoch, phase, metric, value):
        rows.append({**key, "epoch": epoch, "phase": phase, "metric": metric, "value": value})

    for epoch in range(1, last + 1):
        phase = "fit" if epoch <= fitted_at else "post"
        sharp = 1.5 - 0.01 * epoch + rng.normal(0, 0.02) + (jump if epoch > alpha_epoch else 0)
        vol = (-300 + 2 * epoch if epoch <= fitted_at else -220) + rng.normal(0, 0.2)
        add(epoch, phase, "log10_sharpness", sharp)
        add(epoch, phase, "log10_volume", vol)
        add(epoch, phase, "train_acc_S", min(1.0, 0.5 + epoch / (2 * fitted_at)))
        add(epoch, phase, "test_acc_E", min(0.9, 0.5 + epoch / (2.2 * fitted_at)))
        if epoch == fitted_at and event_metrics:
            add(epoch, phase, "zero_error_epoch", float(epoch))
        if epoch == alpha_epoch:
            if event_metrics:
                add(epoch, "alpha", "alpha", 5.9)
                add(epoch, "alpha", "alpha_layer", 1.0)
            add(epoch, "alpha", "log10_sharpness", sharp + jump)
            add(epoch, "alpha", "log10_volume", vol)
    return pd.DataFrame(rows)


MEASURES = ("test_acc_E", "train_acc_S", "log10_volume", "log10_volume_conditional",
            "log10_sharpness", "hessian_top_eig", "hessian_trace")
SWEEP_SPEC = {"name": "synthetic", "sweep": {"attack_sizes": [0, 100, 200, 300]},
              "note": "<b>escaped</b>"}
SWEEP_TOML = 'name = "synthetic"\nnote = "<b>escaped</b>"\n[sweep]\nattack_sizes = [0, 100]\n'
TEMPORAL_SPEC = {"name": "fig5_temporal",
                 "alpha_events": [{"post_epoch": 50, "layer": 1, "alpha": 5.9}]}


def write_store(out, runs, series) -> None:
    """A results store as `flatvol run` writes it: two specs, a sweep and a Fig-5 run."""
    with Store(out) as store:
        store.add_spec("abc123", "synthetic", json.dumps(SWEEP_SPEC), "specs/synthetic.toml",
                       SWEEP_TOML)
        store.add_spec("t5", "fig5_temporal", json.dumps(TEMPORAL_SPEC))
        for r in runs.itertuples():
            store.record(RunRecord(
                key=RunKey("abc123", r.optimizer, r.attack_size, r.seed), config_hash="c1",
                status=r.status, reason=r.reason if isinstance(r.reason, str) else None,
                results={m: getattr(r, m) for m in MEASURES},
                info={"train_status": r.train_status, "epochs": r.epochs,
                      "fitted_at": r.fitted_at}))
        rows = [(e.epoch, e.phase, e.metric, e.value) for e in series.itertuples()]
        store.record(RunRecord(key=RunKey("t5", "sgd", 0, 0), config_hash="c2", status="done",
                               results={"test_acc_E": 0.9, "log10_volume": -220.0},
                               info={"train_status": "fitted", "fitted_at": 40},
                               series=rows))
