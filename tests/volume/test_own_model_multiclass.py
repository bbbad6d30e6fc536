"""volume_of / volume_of_model on K-output models: the pooled Monte-Carlo kernel of one output,
its shared-kernel check, V(f) against directly sampled random networks, and K = 2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from flatvol.data.task import Split, TaskData
from flatvol.errors import VolumeError
from flatvol.models import build_model, labels_of
from flatvol.volume import VolumeService, arccos_kernel, log_volume, monte_carlo_kernel, volume_of
from flatvol.volume.multiclass import labelling_code, labelling_from_code
from flatvol.volume.network_volume import volume_of_model
from flatvol.volume.shared_outputs import (
    SHARED_OUTPUT_FALSE_ALARM,
    output_statistics,
    shared_output_check,
)

SIGMA_W2, SIGMA_B2 = 2.0, 0.2


def gaussian_init(module: nn.Module, generator: torch.Generator) -> None:
    """The NNGP prior: weights N(0, sigma_w2 / fan_in), biases N(0, sigma_b2), every Linear."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.normal_(0, math.sqrt(SIGMA_W2 / layer.in_features),
                                     generator=generator)
                layer.bias.normal_(0, math.sqrt(SIGMA_B2), generator=generator)


def mlp(d: int, width: int, outputs: int, seed: int = 0) -> nn.Sequential:
    """A one-hidden-layer ReLU network drawn from the NNGP prior with `seed`."""
    net = nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, outputs))
    gaussian_init(net, torch.Generator().manual_seed(seed))
    return net


class Select(nn.Module):
    """One output of a K-output network (same parameters, so the same draws for a seed)."""

    def __init__(self, net: nn.Module, index: int):
        super().__init__()
        self.net, self.index = net, index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, self.index]


class Difference(nn.Module):
    """One logit: output 1 - output 0 of a two-output network."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[:, 1] - out[:, 0]


class Rescaled(nn.Module):
    """A K-output network whose outputs are multiplied by fixed factors (not a shared kernel)."""

    def __init__(self, net: nn.Module, scales: list[float]):
        super().__init__()
        self.net, self.scales = net, scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * torch.tensor(self.scales)


class CommonTerm(nn.Module):
    """K outputs plus one shared output: one kernel each, but correlated outputs."""

    def __init__(self, d: int, width: int, outputs: int):
        super().__init__()
        self.net, self.common = mlp(d, width, outputs), mlp(d, width, 1, seed=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + self.common(x)


def inputs(n: int, d: int = 3, seed: int = 0) -> torch.Tensor:
    """n inputs around one point: correlated enough that the top labellings are frequent."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 0.6 + torch.tensor([1.0] + [0.0] * (d - 1))


def test_the_kernel_of_k_outputs_is_the_mean_of_each_outputs_kernel():
    # Each draw's F F^T / K is the mean of its K outputs' f_k f_k^T; with the same seed every
    # output's own kernel comes from the same networks, so the pooled kernel is their mean
    # exactly (float rounding apart), and so are its batch means (the jackknife's replicates).
    net, x = mlp(3, 32, 3), inputs(7)
    pooled = monte_carlo_kernel(net, x, n_samples=40, seed=5, n_batches=4)
    alone = [monte_carlo_kernel(Select(net, k), x, n_samples=40, seed=5, n_batches=4)
             for k in range(3)]
    np.testing.assert_allclose(pooled.kernel, np.mean([a.kernel for a in alone], axis=0),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(pooled.batch_means,
                               np.mean([a.batch_means for a in alone], axis=0),
                               rtol=1e-12, atol=1e-14)
    assert pooled.n_outputs == 3 and alone[0].n_outputs == 1
    assert alone[0].shared_outputs is None and pooled.shared_outputs is not None
    # K outputs a draw: 3 draws of 3 outputs make a full-rank kernel of 7 points
    small = monte_carlo_kernel(net, x, n_samples=3, seed=5, n_batches=3)
    assert np.linalg.matrix_rank(small.kernel) == 7


def test_outputs_with_different_kernels_or_correlated_outputs_are_refused():
    x = inputs(8)
    plain = volume_of(mlp(3, 64, 3), x[:5], [0, 1, 2, 0, 1], x[5:], n_samples=400)
    assert plain.shared_outputs is not None and plain.shared_outputs["passed"]
    assert plain.n_classes == 3
    net = mlp(3, 64, 3)
    scaled = Rescaled(net, [1.0, 1.0, 10.0])
    y = labels_of(scaled, x[:5])
    with pytest.raises(VolumeError, match="3 outputs do not share one kernel") as error:
        volume_of(scaled, x[:5], y, x[5:], n_samples=400)
    assert "\n" not in str(error.value)
    assert "mean squares relative to all outputs'" in str(error.value)
    common = CommonTerm(3, 64, 3)
    with pytest.raises(VolumeError, match="cross term of outputs"):
        volume_of(common, x[:5], labels_of(common, x[:5]), x[5:], n_samples=400)


def test_the_shared_kernel_check_keeps_its_false_alarm_rate():
    # Outputs of random 16-wide networks with one kernel: over 300 independent checks of 40
    # draws each, the family-wise rate of alarms must be at most the rate asked for (0.1 here,
    # so the count is informative): 30 expected at most, binomial sd 5.2; Bonferroni over
    # the K (K + 1) correlated tests makes the true rate lower, not higher.
    g = torch.Generator().manual_seed(0)
    checks, draws, n, k, width = 300, 40, 6, 3, 16
    x = inputs(n, 3, seed=1).double()
    w1 = torch.randn(checks * draws, width, 3, generator=g, dtype=torch.float64)
    w2 = torch.randn(checks * draws, width, k, generator=g, dtype=torch.float64)
    outputs = torch.relu(x @ w1.transpose(1, 2)) @ w2 / math.sqrt(width)  # (draws, n, k)
    stats = output_statistics(outputs).reshape(checks, draws, 2, k, k).numpy()
    alarms = sum(not shared_output_check(s, false_alarm=0.1).passed for s in stats)
    assert alarms <= 30 + 3 * 5.2, alarms
    # the same outputs with output 2 scaled by 1.5, in 60 checks of 200 draws: caught nearly
    # always at the default rate (59 of 60 measured; 7 of 300 at 40 draws: a one-output
    # mean square of 6 correlated inputs varies by about its mean from draw to draw)
    outputs[..., 2] *= 1.5
    stats = output_statistics(outputs).reshape(60, 200, 2, k, k).numpy()
    caught = sum(not shared_output_check(s).passed for s in stats)
    assert caught >= 54, caught
    assert SHARED_OUTPUT_FALSE_ALARM == 1e-3


def sampled_labelling_counts(x: torch.Tensor, width: int, k: int, n_nets: int,
                             seed: int) -> np.ndarray:
    """How often each labelling of x is the argmax of a random network drawn by gaussian_init
    (the networks themselves, in batches: no kernel, no Gaussian-process assumption)."""
    g = torch.Generator().manual_seed(seed)
    n, d = x.shape
    place = torch.tensor(k ** np.arange(n))
    counts = np.zeros(k**n, dtype=np.int64)
    for _ in range(n_nets // 2000):
        w1 = torch.randn(2000, width, d, generator=g) * math.sqrt(SIGMA_W2 / d)
        b1 = torch.randn(2000, width, 1, generator=g) * math.sqrt(SIGMA_B2)
        w2 = torch.randn(2000, k, width, generator=g) * math.sqrt(SIGMA_W2 / width)
        b2 = torch.randn(2000, k, 1, generator=g) * math.sqrt(SIGMA_B2)
        z = w2 @ torch.relu(w1 @ x.T + b1) + b2  # (nets, k, n)
        counts += np.bincount(((z.argmax(dim=1)) * place).sum(dim=1).numpy(),
                              minlength=counts.size)
    return counts


def network_computing(labels: np.ndarray, x: torch.Tensor, width: int, k: int) -> nn.Module:
    """A network of the family whose labels on x are `labels` (drawn until one is)."""
    net, g = mlp(x.shape[1], width, k), torch.Generator().manual_seed(0)
    for _ in range(10_000):
        gaussian_init(net, g)
        if np.array_equal(labels_of(net, x), labels):
            return net
    raise AssertionError(f"no network computes {labels}")


def test_volume_of_a_three_output_network_matches_sampled_random_networks():
    # 40000 random 3-output networks of width 256 on 6 inputs: the frequency of a labelling is
    # V(f) for that family, with binomial error. volume_of's V(f) differs from it by
    # (1) the Monte-Carlo kernel's error (its jackknife stderr, 0.005-0.01 log10 here);
    # (2) the estimator's: orthant-is is unbiased with an error bar, while EP is biased low
    #     (0.04-0.075 log10 at n = 8-10 against direct sampling of the GP,
    #     tests/volume/test_multiclass.py; 0.04-0.05 here);
    # (3) the finite width: the sampled outputs are a mixture of Gaussians over the hidden
    #     layer's random kernel, whose mean is the NNGP kernel. Measured against 200000 sampled
    #     networks and orthant-is on the analytic arccos kernel: at most 0.005 log10 at width
    #     256 (within the sampling error; 0.012 at width 64), so 0.01 is allowed for it.
    # Measured: orthant-is 0.011 and 0.022 below the frequency (1.2 se), EP 0.056 and 0.057.
    width, k, n, nets = 256, 3, 6, 40_000
    x = inputs(n)
    counts = sampled_labelling_counts(x, width, k, nets, seed=1)
    top = [labelling_from_code(int(c), n, k) for c in np.argsort(counts)[::-1]]
    constant = next(f for f in top if len(set(f.tolist())) == 1)
    mixed = next(f for f in top if len(set(f.tolist())) > 1)
    for f in (constant, mixed):
        hits = int(counts[labelling_code(f, k)])
        truth = math.log10(hits / nets)
        truth_se = math.sqrt((1 - hits / nets) / hits) / math.log(10)
        net = network_computing(f, x, width, k)
        sampled = volume_of(net, x[:3], f[:3], x[3:], init=gaussian_init, n_samples=1500,
                            estimator="orthant-is")
        assert sampled.n_classes == 3 and sampled.train_accuracy == 1.0
        se = math.sqrt(truth_se**2 + sampled.log10_volume_stderr**2
                       + sampled.volume.full.stderr_log10**2)
        assert abs(sampled.log10_volume - truth) < 4 * se + 0.01, (f, sampled.log10_volume,
                                                                    truth, se)
        ep = volume_of(net, x[:3], f[:3], x[3:], init=gaussian_init, n_samples=1500)
        assert ep.estimator == "ep-orthant"
        se = math.hypot(truth_se, ep.log10_volume_stderr)
        assert -0.075 - 4 * se < ep.log10_volume - truth < 4 * se, (f, ep.log10_volume, truth)
        # V(f|S) and the bound for K classes: V(f) / V(f on S), the bound from V(f on S)
        assert ep.log10_volume_conditional == pytest.approx(
            ep.log10_volume - ep.log10_volume_train, abs=1e-12)
        assert ep.log10_volume_conditional <= 1e-9 and math.isfinite(ep.pac_bayes_bound)


def test_two_outputs_are_the_volume_of_their_difference():
    # argmax of two iid outputs z0, z1 is the sign of z1 - z0, a GP with kernel 2K: the same
    # orthant probability as under K. So a two-output network and the one-logit network of its
    # difference compute the same labels and (within the kernels' Monte-Carlo error) the same
    # log10 V; and the two-output V(f) is the binary V(f) of its pooled kernel exactly.
    net, x = mlp(3, 64, 2, seed=3), inputs(10, seed=2)
    two, diff = net, Difference(net)
    y = labels_of(two, x[:6])
    assert np.array_equal(labels_of(two, x), labels_of(diff, x))
    assert 0 < labels_of(two, x).sum() < 10  # both classes: not a trivial labelling
    a = volume_of(two, x[:6], y, x[6:], init=gaussian_init, n_samples=800)
    b = volume_of(diff, x[:6], y, x[6:], init=gaussian_init, n_samples=800)
    assert a.n_classes == b.n_classes == 2
    assert abs(a.log10_volume - b.log10_volume) < 4 * math.hypot(a.log10_volume_stderr,
                                                                 b.log10_volume_stderr)
    pooled = monte_carlo_kernel(two, x, init=gaussian_init, n_samples=800, seed=0)
    binary = log_volume(labels_of(two, x), 2 * pooled.kernel)
    assert a.log10_volume == pytest.approx(binary.log10_volume, abs=1e-6)


def three_class_task(n_train: int, n_test: int, labels: np.ndarray | None = None,
                     n_classes: int = 3) -> TaskData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_test, 5, generator=g)
    # float32 {0, 1} for two classes, int64 classes otherwise (flatvol.data.task.Split)
    y = torch.as_tensor(labels if labels is not None else
                        (x[:, 0] > 0).long() + (x[:, 1] > 0).long(),
                        dtype=torch.float32 if n_classes == 2 else torch.int64)
    split = lambda a, b: Split(x[a:b], y[a:b], np.arange(a, b))  # noqa: E731
    return TaskData("synthetic", "three", 0, split(0, n_train), split(0, 0),
                    split(n_train, n_train + n_test), n_classes)


def test_volume_of_model_gives_the_k_class_volume_of_a_k_output_network():
    task = three_class_task(12, 8)
    model = build_model("fcn:16", (5,), seed=2, outputs=3)
    result = volume_of_model(model, task, progress=False)
    f = labels_of(model, task.x_SE())
    assert result.kernel_kind == "analytic" and result.n_classes == 3
    assert set(f.tolist()) == {0, 1, 2}
    direct = VolumeService(arccos_kernel(task.x_SE(), 1), n_classes=3).conditional(f, 12)
    assert result.volume.full.log10_volume == pytest.approx(direct.full.log10_volume, rel=1e-9)
    assert result.predicted_train_accuracy == pytest.approx(np.mean(f[:12] == task.S.y.numpy()))
    assert result.to_dict()["n_classes"] == 3


def test_draws_chosen_by_the_convergence_check_probe_the_k_class_volume():
    # 'auto' draws double until log10 V of the probe labels settles; for K outputs the probe
    # is the K-class volume of those labels (as a binary probe, labels 0..2 would be refused
    # and no round could pass).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    split = lambda a, b: Split(x[a:b], y[a:b], np.arange(a, b))  # noqa: E731
    task = TaskData("synthetic", "three", 0, split(0, 10), split(0, 0), split(10, 16), 3)
    cnn = build_model("cnn:4", (1, 8, 8), seed=0, outputs=3)
    result = volume_of_model(cnn, task, progress=False)
    assert result.kernel_kind == "mc" and result.n_classes == 3
    assert result.kernel_info["mc_convergence"]["converged"]
    assert math.isfinite(result.volume.full.log10_volume) and result.stderr is not None
    assert 0 < result.stderr.log10_volume < 0.2
    net, xs = mlp(3, 32, 3, seed=1), inputs(10, seed=1)
    assert set(labels_of(net, xs).tolist()) == {0, 1, 2}  # a binary probe would be refused
    own = volume_of(net, xs[:6], labels_of(net, xs[:6]), xs[6:])
    assert own.mc_convergence is not None and own.mc_convergence["converged"]
    assert own.shared_outputs is not None and own.shared_outputs["n_draws"] == own.mc_samples


def test_labels_or_classes_that_disagree_with_the_outputs_are_one_line_errors():
    x = inputs(8)
    net = mlp(3, 16, 3)
    cases = [
        (dict(y=[0, 1, 3, 0, 1]), r"y_S: labels must be in \[0, 1, 2\] \(the model has 3 "
                                  "outputs\\), got values \\[0.0, 1.0, 3.0\\]"),
        (dict(y=[0, 1, 1, 0, 1], labels="pm1"), "labels='pm1' codes binary labels, but the "
                                                 "model has 3 outputs"),
        (dict(y=[0, 1, 2, 0, 1], estimator="ep-probit"), "ep-probit"),
    ]
    for case, match in cases:
        options = {k: v for k, v in case.items() if k != "y"}
        with pytest.raises(VolumeError, match=match) as error:
            volume_of(net, x[:5], np.array(case["y"]), x[5:], n_samples=100, **options)
        assert "\n" not in str(error.value)
    model = build_model("fcn:16", (5,), seed=0, outputs=3)
    with pytest.raises(VolumeError, match=r"task labels: expected classes 0..2 .* y\[3\]=5"):
        volume_of_model(model, three_class_task(6, 2, np.array([0, 1, 2, 5, 0, 1, 2, 0])),
                        progress=False)
    with pytest.raises(VolumeError, match="the task has 2 classes but the network's outputs "
                                          "give 3"):
        volume_of_model(model, three_class_task(6, 2, np.zeros(8), 2), progress=False)
