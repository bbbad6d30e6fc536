"""CLI contract: `flatvol train` writes run.json; bad input is one line on stderr and exit 2."""

import json
import subprocess
import sys

import pytest


def test_train_writes_run_json_with_required_fields(tmp_path, monkeypatch, cli):
    monkeypatch.delenv("FLATVOL_DATA", raising=False)
    out = tmp_path / "run"
    code, _, err = cli("train", "--out", str(out), "--train-size", "60",
                           "--attack-size", "20", "--test-size", "50", "--model", "fcn:16",
                           "--lr", "0.05", "--max-epochs", "300")
    assert code in (0, None), err
    info = json.loads((out / "run.json").read_text())
    for field in ("status", "epochs", "train_acc_S", "train_acc_A", "test_acc_E", "seed", "task",
                  "train_size", "attack_size", "test_size", "model", "prior", "flatvol_version"):
        assert field in info
    assert info["status"] == "fitted" and info["train_acc_S"] == 1.0
    assert info["prior"] == {"sigma_w2": 2.0, "sigma_b2": 1.0}
    assert (info["train_size"], info["attack_size"], info["test_size"]) == (60, 20, 50)
    assert info["data_source"] == "embedded MNIST subset"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--task", "imagenet"], "task"),
        (["--attack-size", "100000"], "attack_size"),
        (["--optimizer", "rmsprop-ish"], "optimizer"),
        (["--model", "mlp:3"], "model"),
        (["--fit", "E"], "fit"),
        (["--sigma-w2", "-1"], "sigma_w2"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, cli, args, needle):
    monkeypatch.delenv("FLATVOL_DATA", raising=False)
    code, _, err = cli("train", "--out", str(tmp_path / "r"), *args)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_missing_and_corrupt_data_files_are_one_line_errors(tmp_path, monkeypatch, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("train", "--out", str(tmp_path / "r"),
                           "--data-dir", str(empty))
    assert code == 2 and err.count("\n") == 1 and "error:" in err
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (corrupt / name).write_bytes(b"\x00\x00\x08\x03garbage")
    code, _, err = cli("train", "--out", str(tmp_path / "r"),
                           "--data-dir", str(corrupt))
    assert code == 2 and err.count("\n") == 1 and "idx" in err, err


def test_console_script_entry_point_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flatvol", "train", "--out", str(tmp_path / "r"),
                           "--task", "cifar10", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error:")
