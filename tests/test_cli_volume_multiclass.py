"""`flatvol volume --kernel K.npy --labels y.npy` for K classes, through the real entry point:
integer labels 0..K-1 (K inferred or --classes), the estimators that support K, --json with
log10_volume, n_classes and stderr_log10; binary labels as before; bad input exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flatvol.volume import VolumeService, arccos_kernel

LABELS = np.array([0, 2, 1, 1, 0, 2])


@pytest.fixture()
def files(tmp_path):
    x = np.random.default_rng(5).normal(size=(6, 4))
    K = arccos_kernel(x, 1, 2.0, 0.1)
    np.save(tmp_path / "K.npy", K)
    np.save(tmp_path / "y.npy", LABELS)
    return tmp_path, K


def volume_json(cli, d, *args: str) -> dict:
    code, out, err = cli("volume", "--kernel", str(d / "K.npy"), "--json", *args)
    assert code in (0, None), err
    return json.loads(out)


def test_integer_labels_infer_k_and_give_the_services_k_class_volume(cli, files):
    d, K = files
    service = VolumeService(K, n_classes=3)
    out = volume_json(cli, d, "--labels", str(d / "y.npy"))
    assert out["n_classes"] == 3 and out["estimator"] == "ep-orthant"
    assert out["log10_volume"] == service.log_volume(LABELS).log10_volume
    assert out["stderr_log10"] is None  # EP has no error bar
    sampled = volume_json(cli, d, "--labels", str(d / "y.npy"), "--estimator", "orthant-is",
                          "--samples", "2000", "--seed", "4")
    expected = service.log_volume(LABELS, "orthant-is", n_samples=2000, seed=4)
    assert sampled["n_classes"] == 3 and sampled["stderr_log10"] == expected.stderr_log10 > 0
    assert sampled["log10_volume"] == expected.log10_volume


def test_classes_option_sets_k_above_the_largest_label(cli, files):
    d, K = files
    out = volume_json(cli, d, "--labels", str(d / "y.npy"), "--classes", "5")
    assert out["n_classes"] == 5
    assert out["log10_volume"] == VolumeService(K, n_classes=5).log_volume(LABELS).log10_volume
    # more classes to beat: each point's own class is less likely to be the argmax
    assert out["log10_volume"] < volume_json(cli, d, "--labels", str(d / "y.npy"))[
        "log10_volume"]


def test_k_class_conditional_volume_and_bound(cli, files):
    d, K = files
    out = volume_json(cli, d, "--labels", str(d / "y.npy"), "--n-train", "4")
    cond = VolumeService(K, n_classes=3).conditional(LABELS, 4)
    assert out["log10_volume_conditional"] == cond.log10_volume_conditional
    assert out["log10_volume_S"] == cond.log10_volume_S
    assert out["pac_bayes_bound"] == cond.pac_bayes_bound
    assert out["train_estimate"]["n_classes"] == 3


def test_plain_text_names_the_class_count(cli, files):
    d, _ = files
    code, out, err = cli("volume", "--kernel", str(d / "K.npy"), "--labels", str(d / "y.npy"))
    assert code in (0, None), err
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert lines["n_classes"] == "3" and float(lines["log10_volume"]) < 0


@pytest.mark.parametrize("labels", [np.array([0, 1, 1, 0, 1, 0]),
                                    np.array([1, -1, -1, 1, -1, 1]),
                                    np.array([True, False, False, True, False, True]),
                                    np.zeros(6, dtype=np.int64)])
def test_binary_labels_are_still_the_binary_volume(cli, files, labels):
    d, K = files
    np.save(d / "b.npy", labels)
    for estimator in ("ep-probit", "laplace"):  # binary-only estimators still take them
        out = volume_json(cli, d, "--labels", str(d / "b.npy"), "--estimator", estimator)
        assert out["n_classes"] == 2
        assert out["log10_volume"] == VolumeService(K).log_volume(labels, estimator).log10_volume


@pytest.mark.parametrize(("labels", "args", "needle"), [
    (LABELS, ["--classes", "2"], "labels must be {0,1} or {-1,+1}"),
    (np.array([0, 2, 1, 5, 0, 2]), ["--classes", "3"],
     "--classes: 3 classes are 0..2, but"),
    (np.array([0, 2, -1, 1, 0, 2]), [], "labels: expected classes in 0..2, got labels[2]=-1"),
    (np.array([0, 2, 1.5, 1, 0, 2]), [], "labels: expected integer class labels, got "
                                         "labels[2]=1.5"),
    (np.array(["a", "b", "c", "a", "b", "c"]), [], "expected integer class labels, got dtype"),
    (LABELS, ["--classes", "1"], "--classes: expected an integer >= 2, got 1"),
    (LABELS, ["--estimator", "ep-probit"],
     "estimator 'ep-probit' is binary only; for 3 classes use one of ep-orthant, orthant-is"),
    (LABELS, ["--estimator", "laplace"], "'laplace' is binary only"),
    (LABELS[:5], [], "labels: expected 6 labels (one per kernel row), got 5"),
    (np.r_[LABELS, 1], [], "labels: expected 6 labels (one per kernel row), got 7"),
])
def test_bad_k_class_input_is_one_line_and_exit_2(cli, files, labels, args, needle):
    d, _ = files
    np.save(d / "bad.npy", labels)
    before = sorted(p.name for p in d.iterdir())
    code, out, err = cli("volume", "--kernel", str(d / "K.npy"), "--labels",
                         str(d / "bad.npy"), "--json", *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert "Traceback" not in err
    assert sorted(p.name for p in d.iterdir()) == before  # nothing written


def test_classes_with_a_run_directory_is_refused(cli, tmp_path):
    code, _, err = cli("volume", str(tmp_path), "--classes", "3")
    assert code == 2 and "--classes" in err and len(err.strip().splitlines()) == 1
