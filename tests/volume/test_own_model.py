"""volume_of and the Monte-Carlo output kernel: any model, plain tensors, error bars that cover."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import flatvol
from flatvol.errors import VolumeError
from flatvol.models import FCN, OutputError, Prior, init_from_prior_
from flatvol.volume import fcn_kernel, monte_carlo_kernel, volume_of


def small_fcn() -> tuple[FCN, torch.Tensor, torch.Tensor]:
    """A one-hidden-layer flatvol FCN: its output kernel over init_from_prior_ draws is exactly
    the arccos kernel at any width (the hidden pre-activations are exactly Gaussian)."""
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
    model = init_from_prior_(FCN(5, (16,), Prior(2.0, 1.0)), Prior(2.0, 1.0),
                             torch.Generator().manual_seed(1))  # f: this network's labels
    return model, x, (x[:12, 0] > 0).float()


class NormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.LayerNorm(4 * 4 * 4)
        self.readout = nn.Linear(4 * 4 * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.norm(torch.relu(self.conv(x)).flatten(1)))


def test_mc_kernel_matches_the_analytic_kernel_within_its_error() -> None:
    model, x, _ = small_fcn()
    mc = monte_carlo_kernel(model, x, n_samples=2000)
    z = (mc.kernel - fcn_kernel(model, x)) / mc.stderr
    assert np.max(np.abs(z)) < 5.0
    assert np.mean(np.abs(z) < 2.0) >= 0.9
    assert mc.init.startswith("init_from_prior_") and mc.n_samples == 2000


def test_mc_kernel_is_seeded_leaves_rng_and_weights_alone_and_does_cross_kernels() -> None:
    model, x, _ = small_fcn()
    weights = copy.deepcopy(model.state_dict())
    rng = torch.random.get_rng_state()
    full = monte_carlo_kernel(model, x, n_samples=50, seed=3)
    assert torch.equal(rng, torch.random.get_rng_state())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    np.testing.assert_array_equal(full.kernel, monte_carlo_kernel(model, x, n_samples=50,
                                                                  seed=3).kernel)
    cross = monte_carlo_kernel(model, x[:7], x[7:], n_samples=50, seed=3)
    assert cross.kernel.shape == (7, 13)
    np.testing.assert_allclose(cross.kernel, full.kernel[:7, 7:], rtol=1e-5, atol=1e-8)
    other = monte_carlo_kernel(model, x, n_samples=50, seed=4).kernel
    assert not np.array_equal(full.kernel, other)


def test_a_list_of_sample_counts_gives_prefix_kernels() -> None:
    model, x, _ = small_fcn()
    kernels = monte_carlo_kernel(model, x, n_samples=[20, 50, 200], seed=1)
    assert [k.n_samples for k in kernels] == [20, 50, 200]
    np.testing.assert_array_equal(kernels[1].kernel,
                                  monte_carlo_kernel(model, x, n_samples=50, seed=1).kernel)
    assert np.median(kernels[2].stderr) < np.median(kernels[0].stderr)
    # the jackknife replicates average back to the full kernel
    np.testing.assert_allclose(np.mean(list(kernels[2].leave_one_batch_out()), axis=0),
                               kernels[2].kernel, rtol=1e-10)


def test_mc_error_bar_covers_the_analytic_value_over_seeds() -> None:
    # 40 seeds of a 1000-draw kernel on 20 points: the 95% t-interval (jackknife, 10 batches)
    # covered the analytic value in 38/40 trials for log10 V(f) and 37/40 for log10 V(f|S)
    # when written (>= 36, i.e. 90%, required); over 200 seeds 192 (96%) and 187 (93.5%), and
    # (MC - analytic) / stderr had mean -0.04, std 1.01.
    model, x, y = small_fcn()
    exact = volume_of(model, x[:12], y, x[12:])
    assert exact.kernel == "analytic" and exact.log10_volume_stderr is None
    covered = {"log10_volume": 0, "log10_volume_conditional": 0}
    for seed in range(40):
        mc = volume_of(model, x[:12], y, x[12:], kernel="mc", n_samples=1000, seed=seed)
        for name in covered:
            low, high = mc.interval(name)
            covered[name] += low <= getattr(exact, name) <= high
    print(f"coverage of 40: {covered}")
    assert min(covered.values()) >= 36


def test_volume_of_a_plain_torch_model_on_numpy_or_tensors() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))
    x = torch.randn(24, 6)
    y = (x[:16, 0] > 0).float()
    weights = copy.deepcopy(model.state_dict())
    result = flatvol.volume_of(model, x[:16], y, x[16:], n_samples=200)
    assert model.training  # mode restored
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert result.init == "reset_parameters()" and result.kernel == "mc-output"
    assert (result.n_train, result.n_test, result.mc_samples) == (16, 8, 200)
    for name in ("log10_volume", "log10_volume_stderr", "log10_volume_conditional_stderr",
                 "pac_bayes_bound"):
        assert np.isfinite(getattr(result, name))
    assert result.log10_volume < result.log10_volume_train <= 0
    again = volume_of(model, x[:16].numpy(), y.numpy(), x[16:].numpy(), n_samples=200)
    for name in ("log10_volume", "log10_volume_stderr", "pac_bayes_bound", "train_accuracy"):
        assert getattr(again, name) == getattr(result, name)
    pm1 = volume_of(model, x[:16], 2 * y - 1, x[16:], n_samples=200, labels="pm1")
    assert pm1.train_accuracy == result.train_accuracy


def test_a_trained_layernorm_not_redrawn_is_refused() -> None:
    model = NormNet()
    with torch.no_grad():
        model.norm.weight.mul_(3.0)  # "trained"
    x = torch.randn(30, 1, 6, 6)
    y = (x[:20].sum((1, 2, 3)) > 0).float()

    def redraw_affine_only(module: nn.Module, generator: torch.Generator) -> None:
        with torch.no_grad():  # Linear/Conv only: the LayerNorm keeps its trained gain
            for layer in module.modules():
                if isinstance(layer, (nn.Linear, nn.Conv2d)):
                    layer.weight.normal_(generator=generator)
                    if layer.bias is not None:
                        layer.bias.normal_(generator=generator)

    with pytest.raises(VolumeError, match="^parameter norm.weight is not redrawn"):
        volume_of(model, x[:20], y, x[20:], init=redraw_affine_only, n_samples=100)
    # PyTorch's own init resets the LayerNorm (to its identity): accepted.
    assert np.isfinite(volume_of(model, x[:20], y, x[20:], n_samples=200).log10_volume)


def test_batchnorm_statistics_not_reset_are_refused_and_a_one_argument_init_works() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 1))
    x = torch.randn(20, 4)
    y = (x[:12, 0] > 0).float()

    def linears_only(module: nn.Module) -> None:
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()

    with pytest.raises(VolumeError, match="is not redrawn by the initializer"):
        volume_of(model, x[:12], y, x[12:], init=linears_only, n_samples=100)

    def everything(module: nn.Module) -> None:
        for layer in module.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()

    result = volume_of(model, x[:12], y, x[12:], init=everything, n_samples=100)
    assert result.init.endswith("everything") and np.isfinite(result.log10_volume)


@pytest.mark.parametrize(("labels", "kwargs", "match"), [
    ([1, -1] * 6, {}, "labels='pm1'"),
    ([0, 2] * 6, {}, "labels must be in"),
    ([0, 1] * 5, {}, "expected 12 labels"),
    ([0, 1] * 6, {"labels": "pm1"}, "labels must be in"),
])
def test_bad_labels_are_refused_in_one_line(labels: list, kwargs: dict, match: str) -> None:
    model, x, _ = small_fcn()
    with pytest.raises(VolumeError, match=match) as error:
        volume_of(model, x[:12], np.array(labels), x[12:], **kwargs)
    assert "\n" not in str(error.value)


def test_models_without_one_output_or_with_too_few_samples_are_refused() -> None:
    x = torch.randn(10, 3)
    y = np.zeros(6)
    with pytest.raises(OutputError, match="expected .* one logit or K outputs per input"):
        volume_of(nn.Sequential(nn.Linear(3, 4), nn.Unflatten(1, (2, 2))), x[:6], y, x[6:],
                  n_samples=50)
    with pytest.raises(VolumeError, match="rank-deficient"):
        volume_of(nn.Linear(3, 1), x[:6], y, x[6:], n_samples=10)
    with pytest.raises(VolumeError, match="n_samples must be >= n_batches"):
        monte_carlo_kernel(nn.Linear(3, 1), x, n_samples=5)
    for count in (500.0, True, "500", [20, 50.0]):  # one line, not a TypeError
        with pytest.raises(VolumeError, match="n_samples: expected a count or an increasing"):
            monte_carlo_kernel(nn.Linear(3, 1), x, n_samples=count)
