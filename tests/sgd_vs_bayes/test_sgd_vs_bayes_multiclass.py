"""sgd-vs-bayes for K classes: a function is its classes on E (one digit per point), P_opt(f|S)
counts the argmax functions of networks with K outputs, V(f|S) comes from the K-class volume
service. End to end on a tiny K = 3 MNIST problem (S = 18, E = 5, 36 networks)."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from flatvol.analysis.report import load_results, write_report
from flatvol.data import load_task
from flatvol.errors import SpecError
from flatvol.experiments.store import Store
from flatvol.models import build_model, labels_of
from flatvol.sgd_vs_bayes.analysis import (
    decisiveness,
    function_rows,
    label_frequency_gap,
    summarize,
)
from flatvol.sgd_vs_bayes.function_store import (
    FunctionSample,
    FunctionStringError,
    VolumeTable,
    decode_function,
    encode_function,
    load_experiments,
    read_chunk,
    read_prior,
    write_chunk,
    write_prior,
)
from flatvol.sgd_vs_bayes.run import run_sgd_vs_bayes
from flatvol.sgd_vs_bayes.spec import sgd_vs_bayes_spec_from_dict
from flatvol.train import train_to_fit
from flatvol.volume import VolumeService, fcn_kernel

CLASSES = "0,1,7"
S_SIZE, E_SIZE, NETWORKS = 18, 5, 36
TINY3 = {
    "name": "tiny3",
    "data": {"task": "mnist", "classes": CLASSES, "train_size": S_SIZE, "test_size": E_SIZE},
    "model": {"arch": "fcn:8"},
    "train": {"max_epochs": 300},
    "optimizers": [{"name": "adam", "lr": 0.01}],
    "sampling": {"networks": NETWORKS, "chunk": 12},
    "analysis": {"min_count": 2, "top": 4},
}


@pytest.fixture(scope="module")
def tiny3_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("svb3")
    spec = sgd_vs_bayes_spec_from_dict(TINY3)
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before the autouse fixture
        mp.delenv("FLATVOL_DATA", raising=False)
        task = load_task("mnist", classes=CLASSES, train_size=S_SIZE, test_size=E_SIZE)
        return out, spec, task, run_sgd_vs_bayes(spec, out)


def test_stored_functions_are_the_argmax_labels_of_networks_trained_alone(tiny3_run):
    """Each stored function string decodes to what train_to_fit's 3-output network computes
    on E (its argmax), seed by seed, also when read back from the store."""
    out, spec, task, result = tiny3_run
    assert task.n_classes == 3 and task.outputs == 3
    (experiment,) = load_experiments(out)
    stored = experiment.samples["adam"]
    assert stored.seeds.tolist() == list(range(NETWORKS))
    for seed in (0, 13, NETWORKS - 1):
        model = build_model("fcn:8", task.input_shape, spec.prior(), seed=seed, outputs=3)
        alone = train_to_fit(model, task, spec.train_config(spec.optimizers[0]), seed=seed)
        assert bool(stored.fitted[seed]) == (alone.status == "fitted")
        np.testing.assert_array_equal(stored.labels_E[seed], labels_of(model, task.E.x))
    # the functions are genuinely 3-class strings, one digit per E point
    functions = [r["function"] for r in result.rows]
    assert all(len(f) == E_SIZE for f in functions)
    assert set("".join(functions)) == {"0", "1", "2"}
    assert experiment.n_classes == 3
    np.testing.assert_array_equal(experiment.y_E, task.E.y.numpy())


def test_p_opt_counts_the_fitted_networks_and_sums_to_one(tiny3_run):
    out, spec, task, result = tiny3_run
    sample = result.samples["adam"]
    assert sample.n_fitted >= NETWORKS // 2  # 3 classes of 18 images fit in 300 epochs
    expected = Counter(encode_function(r) for r in sample.labels_E[sample.fitted])
    assert {r["function"]: r["count"] for r in result.rows} == dict(expected)
    assert sum(r["p_opt"] for r in result.rows) == pytest.approx(1.0, abs=1e-12)
    for r in result.rows:
        assert r["errors_E"] == int(np.sum(decode_function(r["function"], 3)
                                           != task.E.y.numpy()))


def test_conditional_volume_is_the_k_class_service_value_on_the_same_kernel(tiny3_run):
    """V(f|S) = V(y_S, f) / V(y_S) from VolumeService(kernel, n_classes=3) on the FCN's arccos
    kernel of S u E; the per-point marginals are V(y_S, e -> k) / V(y_S) on S u {e}. Both sides
    run the same deterministic EP on the same kernel: they agree to rounding (1e-9 in log10;
    the marginals' factor is read off the whole kernel's, hence 1e-6)."""
    out, spec, task, result = tiny3_run
    kernel = fcn_kernel(build_model("fcn:8", task.input_shape, spec.prior()), task.x_SE())
    service = VolumeService(kernel, n_classes=3)
    y_S = task.S.y.numpy()
    log10_train = service.log_volume(y_S, n=S_SIZE).log10_volume
    assert result.volumes.log10_v_train == pytest.approx(log10_train, abs=1e-9)
    for row in result.rows:
        f = decode_function(row["function"], 3).astype(np.int64)
        full = service.log_volume(np.concatenate([y_S, f])).log10_volume
        assert row["log10_v_conditional"] == pytest.approx(full - log10_train, abs=1e-9)
        assert row["log10_v_conditional"] <= 1e-9  # a conditional probability
    marginals = result.volumes.prior_marginals
    assert marginals.shape == (E_SIZE, 3)
    K = service.kernel
    for j in (0, E_SIZE - 1):
        rows = np.r_[np.arange(S_SIZE), S_SIZE + j]
        point = VolumeService(K[np.ix_(rows, rows)], n_classes=3)
        for c in range(3):
            p = 10 ** (point.log_volume(np.r_[y_S, c]).log10_volume - log10_train)
            assert marginals[j, c] == pytest.approx(p, abs=1e-6)


def test_outputs_and_report_speak_of_k_classes(tiny3_run, tmp_path):
    out, spec, task, result = tiny3_run
    assert result.summary["n_classes"] == 3
    points = result.summary["E_points"]
    sample = result.samples["adam"]
    fitted = sample.labels_E[sample.fitted]
    for p in points:
        label = int(task.E.y[p["point"]])
        assert p["label"] == label
        assert p["adam_p_label"] == pytest.approx(np.mean(fitted[:, p["point"]] == label))
        assert p["prior_p_label"] == result.volumes.prior_marginals[p["point"], label]
        assert p["adam_top_class"] == int(np.bincount(fitted[:, p["point"]],
                                                      minlength=3).argmax())
    page = write_report(tmp_path / "report", results=load_results(out)).read_text()
    assert "3 classes" in page and result.rows[0]["function"] in page
    assert "P(true label | y_S)" in page


def test_read_back_damage_is_not_used(tmp_path, caplog):
    """A stored function with a digit outside 0..K-1 or the wrong length is not used (the
    driver trains that chunk again); nor are marginals of the wrong shape."""
    labels = np.array([[0, 2, 1], [1, 1, 0]], dtype=np.uint8)
    chunk = FunctionSample("", np.arange(2), np.ones(2, dtype=np.int64), np.ones(2, dtype=bool),
                           labels)
    with Store(tmp_path) as store:
        write_chunk(store, "key", chunk)
        back = read_chunk(store, "key", [0, 1], n_points=3, n_classes=3)
        assert back is not None and np.array_equal(back.labels_E, labels)
        assert read_chunk(store, "key", [0, 1], n_points=3, n_classes=2) is None  # a '2'
        assert read_chunk(store, "key", [0, 1], n_points=4, n_classes=3) is None
        with store.transaction() as c:
            c.execute("UPDATE function_samples SET labels_E='0:1' WHERE seed=1")
        assert read_chunk(store, "key", [0, 1], n_points=3, n_classes=3) is None
        with store.transaction() as c:
            c.execute("INSERT INTO function_priors VALUES ('v', 'analytic', -1.0, '[0.5, 0.5]')")
        assert read_prior(store, "v", (2, 3)) is None
        assert read_prior(store, "v", (2,)) is not None
    assert "not used" in caplog.text
    with pytest.raises(FunctionStringError, match="0..9"):
        encode_function(np.array([3, 10]))


def test_decisiveness_and_label_gap_by_hand():
    """Three networks on |E| = 2, K = 3: frequencies (1, 0, 0) and (1/3, 1/3, 1/3)."""
    labels = np.array([[0, 0], [0, 1], [0, 2]], dtype=np.uint8)
    sample = FunctionSample("sgd", np.arange(3), np.ones(3, dtype=np.int64),
                            np.ones(3, dtype=bool), labels)
    prior = np.array([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]])
    volumes = VolumeTable("ep-orthant", "analytic", -1.0, {"00": -1.5}, {"00": True}, prior, 3)
    y_E = np.array([0, 2], dtype=np.uint8)
    rows = function_rows(sample, volumes, y_E)
    assert [(r["function"], r["count"], r["errors_E"]) for r in rows] == [
        ("00", 1, 1), ("01", 1, 1), ("02", 1, 0)]
    s = summarize(sample, rows, y_E, min_count=1, top=3, prior_marginals=prior, n_classes=3)
    # decisiveness (3 max - 1) / 2: found (1, 0); prior (0.25, 0.4)
    assert s.decisiveness_gap == pytest.approx(((1 - 0.25) + (0 - 0.4)) / 2)
    # total variation: point 0 |1-.5|+.25+.25 = 1 -> .5; point 1 (.133+.133+.267)/2 = .267
    tv = (0.5 + 0.5 * (abs(1 / 3 - 0.2) * 2 + abs(1 / 3 - 0.6))) / 2
    assert label_frequency_gap(sample, prior, 3) == pytest.approx(tv)
    # for K = 2 a distribution's decisiveness is the binary |2 p - 1|
    p1 = np.array([0.9, 0.3, 0.5])
    np.testing.assert_allclose(decisiveness(np.stack([1 - p1, p1], axis=1)), decisiveness(p1))


@pytest.mark.parametrize("estimator", ["ep-probit", "laplace"])
def test_an_estimator_without_k_classes_is_refused_in_one_line(estimator):
    with pytest.raises(SpecError) as err:
        sgd_vs_bayes_spec_from_dict({**TINY3, "volume": {"estimator": estimator}})
    message = str(err.value)
    assert "volume.estimator: 3 classes" in message and estimator in message
    assert "\n" not in message
    # the binary task takes it
    sgd_vs_bayes_spec_from_dict({**TINY3, "data": {**TINY3["data"], "classes": "0-4v5-9"},
                                 "volume": {"estimator": estimator}})


def test_the_command_refuses_it_in_one_line_and_writes_nothing(tmp_path):
    estimator = "laplace"
    spec_path = tmp_path / "bad.toml"
    spec_path.write_text(
        f'name = "bad"\n[data]\nclasses = "{CLASSES}"\ntrain_size = 20\ntest_size = 5\n'
        f'[volume]\nestimator = "{estimator}"\n')
    done = subprocess.run([sys.executable, "-m", "flatvol", "sgd-vs-bayes", str(spec_path),
                           "--out", str(tmp_path / "o"), "--quiet"], capture_output=True,
                          text=True)
    assert done.returncode == 2, done.stderr
    assert "volume.estimator: 3 classes" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_mc_auto_draws_converge_on_the_k_class_volume(tiny3_run, tmp_path, monkeypatch):
    """kernel 'mc' with mc_samples 'auto' for K = 3: the convergence check probes the 3-class
    log10 V of the true labels, and the Monte-Carlo kernel's log10 V(y_S) agrees with the
    analytic kernel's (the same ReLU prior) within the check's tolerance."""
    monkeypatch.delenv("FLATVOL_DATA", raising=False)
    _, _, _, analytic = tiny3_run
    spec = sgd_vs_bayes_spec_from_dict({**TINY3, "sampling": {"networks": 4, "chunk": 4},
                                        "volume": {"kernel": "mc", "mc_samples": "auto"}})
    result = run_sgd_vs_bayes(spec, tmp_path)
    assert result.volumes.kernel.startswith("mc (")  # 'mc (N samples)': the check's draws
    assert result.volumes.log10_v_train == pytest.approx(analytic.volumes.log10_v_train,
                                                          abs=spec.volume.mc_tolerance)


def test_function_strings_of_binary_tasks_are_unchanged(tmp_path):
    """K = 2 keeps the '0'/'1' strings and the flat P(label 1) list every stored table holds."""
    assert encode_function(np.array([1.0, 0.0, 1.0], dtype=np.float32)) == "101"
    assert encode_function(np.array([True, False])) == "10"
    assert decode_function("0110").tolist() == [0, 1, 1, 0]
    assert math.isclose(float(decode_function("9", 10)[0]), 9.0)
    with Store(tmp_path) as store:
        write_prior(store, "v", "analytic", -1.0, np.array([0.25, 0.5]))
        (text,) = store.conn.execute("SELECT prior_label1_json FROM function_priors").fetchone()
    assert text == "[0.25, 0.5]"
