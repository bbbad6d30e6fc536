"""Monte-Carlo volumes of any model: the draw count chosen by the convergence check ('auto', the
default), the jackknife bias estimate beside the standard error, a warning when the draws are
too few, and a model's own `reset_parameters()` as its prior."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from flatvol.errors import VolumeError
from flatvol.experiments.store_frames import runs_frame, specs_frame
from flatvol.models import FCN, Prior, build_model, init_from_prior_
from flatvol.volume import (
    VolumeService,
    fcn_kernel,
    mc_convergence,
    monte_carlo_kernel,
    volume_of,
    volume_of_model,
)
from flatvol.volume.mc_convergence import MonteCarloDrawsWarning


def one_hidden_layer_fcn(n: int) -> tuple[FCN, torch.Tensor, np.ndarray]:
    """A one-hidden-layer flatvol FCN, n inputs and its labels f: its output kernel over
    init_from_prior_ draws is exactly the arccos kernel at any width (the hidden
    pre-activations are exactly Gaussian), so the analytic kernel is the ground truth."""
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(0))
    model = init_from_prior_(FCN(5, (16,), Prior(2.0, 1.0)), Prior(2.0, 1.0),
                             torch.Generator().manual_seed(1))
    with torch.no_grad():
        f = (model(x).reshape(-1) > 0).double().numpy()
    return model, x, f


def test_the_jackknife_bias_has_the_sign_and_size_of_the_true_bias() -> None:
    # 100 draws on 30 points: log10 V(f) of the Monte-Carlo kernel is below the exact kernel's
    # by -0.145 +- 0.015 over 400 seeds, and the jackknife's bias estimate averages -0.132
    # (+- 0.002; its spread over seeds is small, so 20 seeds measure it).
    model, x, f = one_hidden_layer_fcn(30)
    draws, jackknife_seeds, seeds = 100, 20, 150
    exact = VolumeService(fcn_kernel(model, x)).log_volume(f).log10_volume
    raw, bias = [], []
    for seed in range(jackknife_seeds):  # all points in S: V(f on S) is V(f), one EP a kernel
        with warnings.catch_warnings():  # too few draws, as the test wants
            warnings.simplefilter("ignore", MonteCarloDrawsWarning)
            result = volume_of(model, x, f, kernel="mc", n_samples=draws, seed=seed)
        assert result.kernel == "mc-output" and result.mc_samples == draws
        raw.append(result.log10_volume)
        bias.append(result.log10_volume_bias)
    for seed in range(jackknife_seeds, seeds):  # the raw estimate alone: one EP a seed
        kernel = monte_carlo_kernel(model, x, n_samples=draws, seed=seed).kernel
        raw.append(VolumeService(kernel).log_volume(f).log10_volume)
    true_bias = float(np.mean(raw)) - exact  # +- 0.34 / sqrt(150) = 0.028
    estimated = float(np.mean(bias))
    print(f"true bias {true_bias:.3f}, jackknife estimate {estimated:.3f}")
    assert true_bias < 0 and estimated < 0  # a noisy kernel's log10 V is low (Jensen)
    assert 0.5 < estimated / true_bias < 2.0
    # the bias-corrected value (value - bias) is closer to the truth on average
    assert abs(float(np.mean(raw[:jackknife_seeds])) - estimated - exact) < abs(true_bias)


def plain_net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))


def inputs(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))


def test_auto_is_the_default_and_is_the_convergence_check_on_the_same_draws() -> None:
    model, x = plain_net(), inputs(24)
    y = (x[:16, 0] > 0).float()
    result = volume_of(model, x[:16], y, x[16:])
    check = result.mc_convergence
    assert result.kernel == "mc-output" and check is not None and check["converged"]
    assert check["probe"] == "the model's labels f on S u E"
    assert result.mc_samples == check["rounds"][-1]["samples"]
    assert result.mc_samples >= 2 * 24  # each half of the draws full rank on S u E
    # the check's draws are monte_carlo_kernel's with the same seed (a prefix of them)
    fixed = volume_of(model, x[:16], y, x[16:], n_samples=result.mc_samples)
    assert fixed.mc_convergence is None
    assert fixed.log10_volume == pytest.approx(result.log10_volume, abs=1e-12)
    assert fixed.log10_volume_stderr == pytest.approx(result.log10_volume_stderr, abs=1e-12)
    # its settings are the caller's: a looser tolerance is recorded, an impossible one refused
    loose = volume_of(model, x[:16], y, x[16:], mc_tolerance=3.0, mc_max_samples=512)
    assert (loose.mc_convergence["tolerance"], loose.mc_convergence["max_samples"]) == (3.0, 512)
    with pytest.raises(VolumeError, match="not converged within mc_max_samples=64"):
        volume_of(model, x[:16], y, x[16:], mc_tolerance=1e-9, mc_max_samples=64)


def test_volume_of_model_defaults_to_auto() -> None:
    model = build_model("cnn:2,3", (1, 28, 28), seed=0)
    x = torch.randn(30, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = (x.flatten(1)[:, 0] > 0).double()
    task = SimpleNamespace(x_SE=lambda: x, y_SE=lambda: y, train_size=20, test_size=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MonteCarloDrawsWarning)
        result = volume_of_model(model, task, progress=False)
    check = result.kernel_info["mc_convergence"]
    assert check["converged"] and result.kernel_info["mc_samples"] == check["rounds"][-1]["samples"]
    out = result.to_dict()
    for name in ("log10_volume", "log10_volume_S", "log10_volume_conditional"):
        assert math.isfinite(out[f"{name}_bias"]), name


@pytest.mark.parametrize("count", [500.0, True, "many", "100", 1, None])
def test_sample_counts_other_than_an_integer_or_auto_are_refused_in_one_line(count) -> None:
    x = inputs(12)
    y = (x[:8, 0] > 0).float()
    with pytest.raises(VolumeError, match=r"^n_samples: expected an integer >= 2 or 'auto', got"):
        volume_of(plain_net(), x[:8], y, x[8:], n_samples=count)
    task = SimpleNamespace(x_SE=lambda: x, y_SE=lambda: (x[:, 0] > 0).double(), train_size=8,
                           test_size=4)
    with pytest.raises(VolumeError, match=r"^mc_samples: expected an integer >= 2 or 'auto'"):
        volume_of_model(build_model("cnn:2,3", (1, 28, 28), seed=0), task, mc_samples=count)


def test_too_few_draws_for_the_points_warn_and_enough_do_not() -> None:
    model, x, f = one_hidden_layer_fcn(30)
    with pytest.warns(MonteCarloDrawsWarning, match="40 Monte-Carlo draws are too few for n=30"):
        few = volume_of(model, x[:20], f[:20], x[20:], kernel="mc", n_samples=40)
    assert few.warning is not None and "\n" not in few.warning
    ratios = [abs(few.log10_volume_bias) / few.log10_volume_stderr,
              abs(few.log10_volume_train_bias) / few.log10_volume_train_stderr,
              abs(few.log10_volume_conditional_bias) / few.log10_volume_conditional_stderr]
    assert max(ratios) > 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error", MonteCarloDrawsWarning)
        enough = volume_of(model, x[:8], f[:8], x[8:12], kernel="mc", n_samples=2000)
    assert enough.warning is None and enough.log10_volume_bias < 0
    assert abs(enough.log10_volume_bias) <= 0.5 * enough.log10_volume_stderr


class OwnInitNet(nn.Module):
    """A model class with its own initializer, unlike PyTorch's per-layer defaults: hidden
    weights N(0, 3^2) and no biases, readout weights all 1/width and no bias."""

    calls = 0

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.hidden = nn.Linear(3, width)
        self.readout = nn.Linear(width, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        type(self).calls += 1
        with torch.no_grad():
            nn.init.normal_(self.hidden.weight, std=3.0)
            nn.init.zeros_(self.hidden.bias)
            nn.init.constant_(self.readout.weight, 1.0 / self.hidden.out_features)
            nn.init.zeros_(self.readout.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(torch.relu(self.hidden(x)))


def own_init_kernel(x: torch.Tensor, width: int, std: float) -> np.ndarray:
    """E[f(x) f(x')] for f = mean_j relu(w_j . x), w_j ~ N(0, std^2 I): the arccos kernel
    E[r r'] = std^2 |x||x'| (sin t + (pi - t) cos t) / (2 pi) on the diagonal of the sum's
    square, E[r] E[r'] = std^2 |x||x'| / (2 pi) off it."""
    X = x.double().numpy()
    norms = np.linalg.norm(X, axis=1)
    cos = np.clip(X @ X.T / np.outer(norms, norms), -1.0, 1.0)
    t = np.arccos(cos)
    scale = std**2 * np.outer(norms, norms) / (2 * math.pi)
    return scale * ((np.sin(t) + (math.pi - t) * cos) / width + (width - 1) / width)


def test_a_model_s_own_reset_parameters_is_its_prior() -> None:
    x, model = inputs(6), OwnInitNet()
    calls = OwnInitNet.calls
    mc = monte_carlo_kernel(model, x, n_samples=2000)
    z = (mc.kernel - own_init_kernel(x, 8, 3.0)) / mc.stderr
    print(f"max |z| {np.max(np.abs(z)):.2f}")
    assert np.max(np.abs(z)) < 5.0 and np.mean(np.abs(z) < 2.0) >= 0.8
    assert OwnInitNet.calls - calls == 2000  # once a draw
    assert mc.init == "OwnInitNet.reset_parameters()"


def test_a_plain_model_is_drawn_from_each_layer_s_default() -> None:
    # PyTorch's defaults sampled by hand: fresh layers, whose constructors reset them.
    x, draws = inputs(6), 4000
    torch.manual_seed(123)
    with torch.no_grad():
        outputs = torch.stack([plain_net()(x).reshape(-1) for _ in range(draws)]).double()
    products = outputs[:, :, None] * outputs[:, None, :]
    by_hand, by_hand_se = products.mean(0).numpy(), (products.std(0) / math.sqrt(draws)).numpy()
    mc = monte_carlo_kernel(plain_net(), x, n_samples=2000)
    assert mc.init == "reset_parameters()"
    z = (mc.kernel - by_hand) / np.sqrt(mc.stderr**2 + by_hand_se**2)
    print(f"max |z| {np.max(np.abs(z)):.2f}")
    assert np.max(np.abs(z)) < 5.0 and np.mean(np.abs(z) < 2.0) >= 0.8


@pytest.fixture()
def cnn_run(tmp_path, monkeypatch) -> Path:
    """A `flatvol train` run directory of a CNN (Monte-Carlo kernel) on 20 + 10 points."""
    from flatvol.train import save_run

    monkeypatch.delenv("FLATVOL_DATA", raising=False)  # the embedded MNIST subset
    model = build_model("cnn:2,3", (1, 28, 28), seed=0)
    info = dict(task="mnist", train_size=20, attack_size=0, test_size=10, model="cnn:2,3",
                prior={"sigma_w2": 2.0, "sigma_b2": 1.0}, seed=0, data_seed=0,
                status="fitted")
    save_run(tmp_path / "run", model, info)
    return tmp_path / "run"


def test_flatvol_volume_defaults_to_auto_reports_the_bias_and_warns_in_one_line(
        cnn_run, cli, monkeypatch) -> None:
    code, out, err = cli("volume", str(cnn_run), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["kernel_info"]["mc_convergence"]["converged"]
    for name in ("log10_volume", "log10_volume_S", "log10_volume_conditional"):
        assert math.isfinite(result[f"{name}_bias"]), name
    assert "warning" not in result and "warning" not in err
    # 12 draws of this CNN: a bias estimate of about a quarter of the standard error, flagged
    # once the rule's threshold is below that
    monkeypatch.setattr(mc_convergence, "MAX_BIAS_IN_STDERRS", 0.1)
    code, out, err = cli("volume", str(cnn_run), "--mc-samples", "12")
    assert code == 0, err
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    assert float(lines["log10_volume_bias"]) < 0
    assert err.startswith("warning: 12 Monte-Carlo draws are too few for n=30 points")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_flatvol_collect_defaults_to_auto(cnn_run, cli, tmp_path) -> None:
    code, _, err = cli("collect", str(cnn_run), "--out", str(tmp_path / "store"), "--measures",
                       "volume", "--quiet")
    assert code == 0, err
    spec = json.loads(specs_frame(tmp_path / "store")["spec_json"].iloc[0])
    assert spec["measures"]["volume"]["mc_samples"] == "auto"
    assert runs_frame(tmp_path / "store")["log10_volume"].notna().all()
    code, _, err = cli("collect", str(cnn_run), "--out", str(tmp_path / "other"),
                       "--measures", "volume", "--mc-samples", "12.5", "--quiet")
    assert code == 2 and "--mc-samples" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "other").exists()
