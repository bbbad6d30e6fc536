"""Monte-Carlo NNGP kernels that can be trusted: the draw count chosen by a convergence check on
log10 V, refused when rank-deficient, batched draws equal to one-at-a-time ones, and the
BatchNorm conventions (eval mode with reset statistics: the authors' code; or the statistics of
all the kernel's inputs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from flatvol.data.tasks import load_task
from flatvol.errors import VolumeError
from flatvol.models import Prior, build_model, init_from_prior_
from flatvol.volume import log_volume, mc_checkpoint, select_kernel
from flatvol.volume.mc_convergence import (
    DEFAULT_MC_TOLERANCE,
    converged_mc_kernel,
    rank_bound,
)
from flatvol.volume.mc_kernel import FeatureDraws, mc_nngp_kernel


@pytest.fixture(scope="module")
def mnist_120() -> tuple[torch.Tensor, np.ndarray]:
    """|S| = 80, |E| = 40 from the embedded MNIST subset, and the true labels y on S u E."""
    task = load_task("mnist", train_size=80, test_size=40, data_dir="embedded")
    return task.x_SE(), task.y_SE().numpy().astype(np.float64)


def analytic_log10_volume(model: nn.Module, x: torch.Tensor, y: np.ndarray) -> float:
    return log_volume(y, select_kernel(model, x, "analytic").matrix).log10_volume


def test_auto_count_matches_the_analytic_kernel_on_an_fcn(mnist_120):
    # One hidden layer: the MC kernel's expectation is exactly the arccos kernel at any width,
    # so any gap in log10 V is Monte-Carlo error, which the check must bring within tolerance.
    x, y = mnist_120
    model = build_model("fcn:32", tuple(x.shape[1:]), Prior(), seed=0)
    nngp = select_kernel(model, x, "mc", mc_samples="auto", probe_labels=y, progress=False)
    check = nngp.info["mc_convergence"]
    assert check["converged"] and check["tolerance"] == DEFAULT_MC_TOLERANCE
    assert check["rounds"][-1]["samples"] == nngp.info["mc_samples"]
    assert [r["samples"] for r in check["rounds"]] == [64 * 2**i for i in range(len(
        check["rounds"]))]
    mc = log_volume(y, nngp.matrix).log10_volume
    assert mc == pytest.approx(check["rounds"][-1]["log10_volume"])
    assert abs(mc - analytic_log10_volume(model, x, y)) <= DEFAULT_MC_TOLERANCE


def test_rank_deficient_kernel_is_refused_and_the_converged_count_passes(mnist_120):
    x, y = mnist_120
    n = x.shape[0]
    model = build_model("fcn:4", tuple(x.shape[1:]), Prior(), seed=0)
    # The old setting: 20 draws. 20 draws of 4 features: rank <= 81 < 120 points.
    assert rank_bound(20, 4) < n
    with pytest.raises(VolumeError, match=r"mc_samples=20: .*rank <= 81 < n=120"):
        select_kernel(model, x, "mc", mc_samples=20, progress=False)
    with pytest.raises(VolumeError, match="not converged within mc_max_samples=20"):
        converged_mc_kernel(model, x, y, start=20, max_samples=20, progress=False)
    # Full rank is not enough: 256 draws are, but log10 V has not settled.
    with pytest.raises(VolumeError, match="not converged within mc_max_samples=256"):
        converged_mc_kernel(model, x, y, max_samples=256, progress=False)
    kernel, check = converged_mc_kernel(model, x, y, progress=False)
    assert check.converged and kernel.n_samples == check.rounds[-1].samples >= 512
    last = check.rounds[-1]
    assert last.halves_difference <= check.tolerance and last.half_vs_full <= check.tolerance
    assert not check.rounds[0].converged  # the first rounds do not agree
    mc = log_volume(y, kernel.kernel).log10_volume
    assert abs(mc - analytic_log10_volume(model, x, y)) <= check.tolerance


def test_auto_needs_probe_labels_and_stores_its_figures(mnist_120):
    x, y = mnist_120
    model = build_model("fcn:16,16", tuple(x.shape[1:]), Prior(), seed=0)
    with pytest.raises(VolumeError, match="probe labels"):
        select_kernel(model, x, "mc", mc_samples="auto", progress=False)
    nngp = select_kernel(model, x[:40], "mc", mc_samples="auto", probe_labels=y[:40],
                         progress=False, mc_batches=10, mc_tolerance=1.0, mc_max_samples=512)
    info = nngp.info
    assert info["mc_convergence"]["tolerance"] == 1.0 and info["mc_batches"] == 10
    assert info["rank_bound"] == info["mc_samples"] * 16 + 1
    rounds = info["mc_convergence"]["rounds"]
    assert set(rounds[0]) >= {"samples", "log10_volume_half_a", "log10_volume_half_b",
                              "log10_volume", "halves_difference", "converged", "full_rank"}
    assert nngp.batch_counts is not None and nngp.batch_counts.sum() == info["mc_samples"]
    # the same seed gives the same kernel and check
    again = select_kernel(model, x[:40], "mc", mc_samples="auto", probe_labels=y[:40],
                          progress=False, mc_batches=10, mc_tolerance=1.0, mc_max_samples=512)
    np.testing.assert_array_equal(again.matrix, nngp.matrix)
    assert again.info["mc_convergence"] == info["mc_convergence"]


@pytest.mark.parametrize("arch,shape", [("resnet18:width=4", (3, 8, 8)), ("cnn:4", (1, 8, 8)),
                                        ("fcn:6,6", (5,))])
def test_batched_draws_equal_one_at_a_time(arch, shape):
    model = build_model(arch, shape, Prior(), seed=0)
    x = torch.randn(12, *shape, generator=torch.Generator().manual_seed(1))
    # one at a time, images run channels-last on CPU (faster convolutions), batched they do not
    assert FeatureDraws(model, x, draws_per_pass=1).channels_last == (len(shape) == 3)
    assert not FeatureDraws(model, x, draws_per_pass=4).channels_last
    alone = mc_nngp_kernel(model, x, 9, seed=3, progress=False, draws_per_pass=1, n_batches=3)
    batched = mc_nngp_kernel(model, x, 9, seed=3, progress=False, draws_per_pass=4,
                             n_batches=3)  # 9 draws in passes of 4, 4 and 1
    scale = np.max(np.abs(alone.kernel))
    np.testing.assert_allclose(batched.kernel, alone.kernel, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(batched.batch_kernels, alone.batch_kernels, rtol=0,
                               atol=1e-5 * scale)
    again = mc_nngp_kernel(model, x, 9, seed=3, progress=False, draws_per_pass=4)
    np.testing.assert_array_equal(again.kernel, batched.kernel)
    other = mc_nngp_kernel(model, x, 9, seed=4, progress=False, draws_per_pass=4)
    assert not np.allclose(other.kernel, batched.kernel)


def test_draws_do_not_touch_the_model():
    model = build_model("resnet18:width=4", (3, 8, 8), Prior(), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mc_nngp_kernel(model, torch.randn(6, 3, 8, 8), 4, progress=False, draws_per_pass=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class TinyBN(nn.Module):
    """conv -> BatchNorm -> relu -> mean pool: the smallest net with a BatchNorm."""

    def __init__(self):
        super().__init__()
        self.prior = Prior(2.0, 1.0)
        self.conv = nn.Conv2d(1, 3, 3, bias=False)
        self.bn = nn.BatchNorm2d(3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


@pytest.mark.parametrize("draws_per_pass", [1, 3])
def test_batchnorm_uses_reset_statistics_not_the_batch(draws_per_pass):
    # The authors' code evaluates each random network in eval mode with fresh BatchNorm
    # statistics (mean 0, variance 1): BN(h) = h / sqrt(1 + eps), whatever the batch.
    torch.manual_seed(0)
    x = torch.randn(7, 1, 5, 5)
    by_one = FeatureDraws(TinyBN(), x, seed=5, batch_size=1, draws_per_pass=draws_per_pass)
    by_all = FeatureDraws(TinyBN(), x, seed=5, batch_size=7, draws_per_pass=draws_per_pass)
    for a, b in zip(by_one.grams(3), by_all.grams(3)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # By hand, from the weights the last draw left in the copy (one draw at a time):
    draws = FeatureDraws(TinyBN(), x, seed=5, draws_per_pass=1)
    gram = list(draws.grams(1))[0]
    weight = draws.net.conv.weight.detach()
    eps = draws.net.bn.eps
    h = nn.functional.conv2d(x, weight) / math.sqrt(1.0 + eps)
    phi = torch.relu(h).mean(dim=(2, 3)).to(torch.float64)
    torch.testing.assert_close(gram, phi @ phi.T, rtol=1e-5, atol=1e-6)
    # ... which differs from train-mode statistics over the batch
    train_phi = torch.relu(nn.functional.batch_norm(
        nn.functional.conv2d(x, weight), None, None, training=True)).mean(dim=(2, 3))
    assert not torch.allclose(train_phi.to(torch.float64) @ train_phi.T.to(torch.float64),
                              gram, rtol=1e-3)


@pytest.mark.parametrize("draws_per_pass", [1, 3])
def test_batch_statistics_batchnorm_normalizes_over_all_inputs(draws_per_pass):
    # mc_batchnorm = 'batch': each random network normalizes with the mean and variance of all
    # n inputs (as in training), in one pass whatever batch_size is asked for.
    torch.manual_seed(0)
    x = torch.randn(7, 1, 5, 5)
    draws = FeatureDraws(TinyBN(), x, seed=5, batch_size=2, draws_per_pass=draws_per_pass,
                         batchnorm="batch")
    grams = list(draws.grams(3))
    net, generator = TinyBN(), torch.Generator().manual_seed(5)
    for gram in grams:  # by hand, from the same draws
        init_from_prior_(net, net.prior, generator)
        h = nn.functional.conv2d(x, net.conv.weight.detach())
        mean, var = h.mean(dim=(0, 2, 3), keepdim=True), h.var(dim=(0, 2, 3), unbiased=False,
                                                                 keepdim=True)
        phi = torch.relu((h - mean) / torch.sqrt(var + net.bn.eps)).mean(dim=(2, 3))
        phi = phi.to(torch.float64)
        torch.testing.assert_close(gram, phi @ phi.T, rtol=1e-5, atol=1e-6)
    reset = list(FeatureDraws(TinyBN(), x, seed=5).grams(1))[0]
    assert not torch.allclose(reset, grams[0], rtol=1e-3)  # the other convention differs
    with pytest.raises(VolumeError, match="batchnorm must be one of eval, batch, got 'train'"):
        FeatureDraws(TinyBN(), x, batchnorm="train")


def test_the_kernel_records_its_batchnorm_convention():
    model = build_model("resnet18:width=4", (3, 8, 8), Prior(), seed=0)
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    kernels = {mode: select_kernel(model, x, "mc", mc_samples=4, progress=False,
                                   mc_batchnorm=mode) for mode in ("eval", "batch")}
    assert {m: k.info["batchnorm"] for m, k in kernels.items()} == {"eval": "eval",
                                                                    "batch": "batch"}
    assert not np.allclose(kernels["eval"].matrix, kernels["batch"].matrix, rtol=1e-3)
    with pytest.raises(VolumeError, match="mc_batchnorm must be one of eval, batch"):
        select_kernel(model, x, "mc", mc_samples=4, progress=False, mc_batchnorm="running")


def test_the_check_probes_with_the_estimator_options_the_measure_uses(mnist_120):
    # the probe's log10 V of all draws is exactly what the estimator, with the same options,
    # gives on the chosen kernel (another sample count gives another value)
    x, y = mnist_120
    model = build_model("fcn:16,16", tuple(x.shape[1:]), Prior(), seed=0)
    probes = []
    for options in ({"n_samples": 300, "seed": 1}, {"n_samples": 2000, "seed": 1}):
        nngp = select_kernel(model, x[:40], "mc", mc_samples="auto", probe_labels=y[:40],
                             probe_estimator="orthant-is", probe_options=options,
                             progress=False, mc_tolerance=1.0, mc_max_samples=512)
        last = nngp.info["mc_convergence"]["rounds"][-1]
        direct = log_volume(y[:40], nngp.matrix, "orthant-is", **options).log10_volume
        assert last["log10_volume"] == direct
        probes.append(last["log10_volume"])
    assert probes[0] != probes[1]


def test_a_long_check_shows_each_rounds_verdict_as_it_goes(mnist_120, monkeypatch, capsys):
    # A check can run for hours (a ResNet on CPU): its progress line carries the last round's
    # figures, the same numbers as the stored rounds.
    x, y = mnist_120
    monkeypatch.setenv("FLATVOL_PROGRESS_INTERVAL", "0")
    model = build_model("fcn:4", tuple(x.shape[1:]), Prior(), seed=0)
    with pytest.raises(VolumeError, match="not converged within mc_max_samples=256"):
        converged_mc_kernel(model, x, y, max_samples=256)
    err = capsys.readouterr().err
    assert "MC NNGP kernel check: " in err and "\r" not in err
    _, check = converged_mc_kernel(model, x, y, max_samples=256, progress=False,
                                   tolerance=1e6)  # the same draws, judged leniently
    shown = [r for r in check.rounds if f"{r.samples} draws: halves differ "
             f"{r.halves_difference:.2f}, all vs halves {r.half_vs_full:.2f}" in err]
    assert [r.samples for r in shown] == [64, 128] and check.rounds[0].full_rank
    assert "256/256 draws, 256 draws: halves differ" in err.splitlines()[-1]


def _counting_draws(monkeypatch, kill_after: int | None = None) -> list[int]:
    """Count the draws made (and raise after `kill_after` of them, as a kill would)."""
    made = [0]
    original = FeatureDraws.grams

    def grams(self, count):
        for gram in original(self, count):
            if kill_after is not None and made[0] == kill_after:
                raise KeyboardInterrupt("killed")
            made[0] += 1
            yield gram

    monkeypatch.setattr(FeatureDraws, "grams", grams)
    return made


def test_a_killed_check_resumes_to_the_same_kernel(mnist_120, tmp_path, monkeypatch):
    x, y = mnist_120
    model = build_model("fcn:4", tuple(x.shape[1:]), Prior(), seed=0)
    settings = {"max_samples": 4096, "progress": False, "n_batches": 4}
    whole, whole_check = converged_mc_kernel(model, x, y, **settings)
    monkeypatch.setattr(mc_checkpoint, "CHECKPOINT_EVERY_S", 0.0)  # save after every draw
    path = tmp_path / "draws.pt"
    with monkeypatch.context() as m:
        _counting_draws(m, kill_after=300)  # in the third round (256 -> 512)
        with pytest.raises(KeyboardInterrupt):
            converged_mc_kernel(model, x, y, checkpoint=path, **settings)
    assert path.is_file()
    made = _counting_draws(monkeypatch)
    resumed, check = converged_mc_kernel(model, x, y, checkpoint=path, **settings)
    assert made[0] == whole.n_samples - 300  # only the draws the kill lost
    np.testing.assert_array_equal(resumed.kernel, whole.kernel)
    np.testing.assert_array_equal(resumed.batch_kernels, whole.batch_kernels)
    np.testing.assert_array_equal(resumed.stderr, whole.stderr)
    assert check == whole_check


def test_a_check_refused_at_its_cap_resumes_with_a_higher_one(mnist_120, tmp_path,
                                                               monkeypatch):
    x, y = mnist_120
    model = build_model("fcn:4", tuple(x.shape[1:]), Prior(), seed=0)
    path = tmp_path / "draws.pt"
    with pytest.raises(VolumeError, match="not converged within mc_max_samples=256"):
        converged_mc_kernel(model, x, y, max_samples=256, progress=False, checkpoint=path)
    made = _counting_draws(monkeypatch)
    kernel, check = converged_mc_kernel(model, x, y, max_samples=4096, progress=False,
                                        checkpoint=path)
    fresh, fresh_check = converged_mc_kernel(model, x, y, max_samples=4096, progress=False)
    assert made[0] == 2 * kernel.n_samples - 256  # resumed at 256, then the fresh run's all
    np.testing.assert_array_equal(kernel.kernel, fresh.kernel)
    assert check == fresh_check
    # a looser tolerance re-judges the kept rounds without drawing (the sums are at 512+)
    made[0] = 0
    _, loose = converged_mc_kernel(model, x, y, max_samples=4096, progress=False,
                                   checkpoint=path, tolerance=1e6)
    assert loose.rounds[-1].samples == kernel.n_samples and made[0] == 0
    # draws of another seed do not resume from this file: they start over
    other, _ = converged_mc_kernel(model, x, y, max_samples=256, progress=False, seed=1,
                                   tolerance=1e6, checkpoint=path)
    alone, _ = converged_mc_kernel(model, x, y, max_samples=256, progress=False, seed=1,
                                   tolerance=1e6)
    np.testing.assert_array_equal(other.kernel, alone.kernel)
    # a file that is not a checkpoint (a pickle torch refuses to read) is ignored too
    path.write_bytes(b"not a checkpoint")
    junk, _ = converged_mc_kernel(model, x, y, max_samples=256, progress=False, seed=1,
                                  tolerance=1e6, checkpoint=path)
    np.testing.assert_array_equal(junk.kernel, alone.kernel)
