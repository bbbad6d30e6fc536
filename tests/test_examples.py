"""The scripts in examples/ run as documented, on small data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    src = str(EXAMPLES.parent / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_correlate_my_runs_on_a_made_up_table_and_on_a_csv(tmp_path: Path) -> None:
    out = run_example("correlate_my_runs.py", cwd=tmp_path)
    assert "log10_volume" in out and "my_measure" in out and "kendall" in out
    csv = tmp_path / "runs.csv"
    pd.DataFrame({"test_acc_E": [0.9, 0.8, 0.7, 0.6, 0.5],
                  "log10_volume": [-10.0, -20.0, -30.0, -40.0, -50.0]}).to_csv(csv, index=False)
    out = run_example("correlate_my_runs.py", str(csv), cwd=tmp_path)
    row = next(line for line in out.splitlines() if line.strip().startswith("log10_volume"))
    assert row.split()[1:3] == ["5", "1.000"]  # n = 5, Kendall tau = 1


def test_own_model_and_data_trains_and_measures(tmp_path: Path) -> None:
    out = run_example("own_model_and_data.py", cwd=tmp_path)
    assert out.startswith("fitted after ")
    for name in ("test_acc_E", "log10_sharpness", "hessian_top_eig", "hessian_trace",
                 "log10_volume"):
        assert f"  {name} " in out


def test_own_model_plain_torch_cnn_volume_with_error_bars(tmp_path: Path) -> None:
    out = run_example("own_model.py", cwd=tmp_path)
    assert out.startswith("train acc ") and "prior: reset_parameters()" in out
    for name in ("log10 V(f) ", "log10 V(f|S) ", "PAC-Bayes bound ", "log10 sharpness "):
        assert name in out
    assert out.count(" +- ") == 3
    # user code stays short: under 30 lines besides the docstring, blanks and prints
    code = [line for line in (EXAMPLES / "own_model.py").read_text().split('"""')[2].splitlines()
            if line.strip() and not line.startswith("print(")]
    assert len(code) < 30


def test_reproduce_fig3_small(tmp_path: Path) -> None:
    out = run_example("reproduce_fig3.py", "--out", "fig3", "--train-size", "20",
                      "--test-size", "30", "--attack-sizes", "0,10", "--seeds", "2", "--quiet",
                      cwd=tmp_path)
    assert out.startswith("4 runs (0 resumed)")
    assert "log10_volume" in out and "log10_sharpness" in out
    assert (tmp_path / "fig3" / "fig3.png").stat().st_size > 0
    # Re-running resumes every run from the store.
    assert run_example("reproduce_fig3.py", "--out", "fig3", "--train-size", "20",
                       "--test-size", "30", "--attack-sizes", "0,10", "--seeds", "2",
                       "--quiet", cwd=tmp_path).startswith("4 runs (4 resumed)")
