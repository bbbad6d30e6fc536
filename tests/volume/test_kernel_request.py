"""One kernel pipeline: KernelRequest -> prior_kernel -> PriorKernel -> VolumeService.

The request owns the cache keys (equal to the keys pinned in tests/test_digest.py), every path
that needs a prior's kernel goes through the one choice (`KernelRequest.resolve`, called by
`prior_kernel` and by the pre-flight's `KernelRequest.check`), K-class probe labels make
mc_samples 'auto' work for K-class sweeps, and a new kernel kind is one registration.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flatvol.errors import SpecError, VolumeError
from flatvol.experiments import runs_frame
from flatvol.experiments.build import load_run_task
from flatvol.experiments.context import (
    CACHE_DIR,
    compute_kernel,
    kernel_cache_key,
    sweep_kernel,
)
from flatvol.experiments.preflight import check_spec
from flatvol.experiments.spec import spec_from_dict
from flatvol.experiments.spec_files import packaged_spec_path, read_spec_file
from flatvol.io import write_cache_record
from flatvol.models import Prior, build_model
from flatvol.volume import (
    KERNEL_KINDS,
    KernelKindInfo,
    KernelRequest,
    VolumeService,
    prior_kernel,
    register_kernel_kind,
    select_kernel,
    volume_of,
    volume_of_model,
)
from flatvol.volume import kernels as kernels_module
from flatvol.volume.service import conditional_values

# The demo's data and model keys (tests/test_digest.py pins the same values through the spec).
DEMO_KEYS = {  # request -> (kernel key, draws key)
    "auto": (dict(kind="auto"), "405bb9931098e9f2", "9e0da8ad2b665b40"),
    "mc": (dict(kind="mc"), "15823266b0f3decd", "9e0da8ad2b665b40"),
    "mc_batch": (dict(kind="mc", batchnorm="batch"), "119cc0bb94f2a5fc", "82aa82f76535b426"),
    "mc_auto": (dict(kind="mc", samples="auto"), "be762bc68a058adb", "9e0da8ad2b665b40"),
}


@pytest.fixture(autouse=True)
def _embedded_data(monkeypatch):
    monkeypatch.delenv("FLATVOL_DATA", raising=False)


def _demo_settings():
    spec = spec_from_dict(read_spec_file(packaged_spec_path("demo")))
    return spec.data.model_dump(mode="json"), spec.model.model_dump(mode="json")


@pytest.mark.parametrize("name", sorted(DEMO_KEYS))
def test_the_requests_keys_are_the_pinned_keys(name):
    fields, kernel_key, draws_key = DEMO_KEYS[name]
    request = KernelRequest(**fields, batches=10)
    data, model = _demo_settings()
    assert request.cache_key(data, model) == kernel_key
    assert request.draws_key(data, model) == draws_key


@pytest.mark.parametrize(("fields", "needle"), [
    ({"kind": "exact"}, "kernel must be one of auto, analytic, mc"),
    ({"samples": 1}, "mc_samples: expected an integer >= 2 or 'auto', got 1"),
    ({"samples": "auto", "tolerance": 0.0}, "mc_tolerance must be > 0"),
    ({"batchnorm": "train"}, "mc_batchnorm must be one of"),
    ({"batches": 1}, "mc_batches must be 0 or an integer >= 2, got 1"),
    ({"fallback": "auto"}, "fallback must be one of"),
])
def test_a_bad_request_is_refused_in_one_line(fields, needle):
    with pytest.raises(VolumeError, match=None) as info:
        KernelRequest(**fields)
    assert needle in str(info.value) and "\n" not in str(info.value)


def _tiny_spec(**volume):
    return spec_from_dict({
        "name": "kernel-request", "data": {"task": "mnist", "train_size": 10, "test_size": 6},
        "model": {"arch": "fcn:6"}, "train": {"lr": 0.05, "max_epochs": 5},
        "sweep": {"attack_sizes": [0], "seeds": 1},
        "measures": {"final": ["volume"], "volume": volume}})


def test_every_path_to_a_kernel_goes_through_the_one_choice(monkeypatch):
    """The sweep, the pre-flight, volume_of_model, volume_of and select_kernel all resolve
    their kind in KernelRequest.resolve and compute it through the registry."""
    resolved: list[str] = []
    built: list[str] = []
    resolve = kernels_module.KernelRequest.resolve

    def spy_resolve(self, model):
        resolved.append(self.kind)
        return resolve(self, model)

    monkeypatch.setattr(kernels_module.KernelRequest, "resolve", spy_resolve)
    for name, info in list(kernels_module.KERNEL_REGISTRY.items()):
        def build(model, x, request, inputs, _build=info.build, _name=name):
            built.append(_name)
            return _build(model, x, request, inputs)

        monkeypatch.setitem(kernels_module.KERNEL_REGISTRY, name,
                            KernelKindInfo(info.name, info.description, build, info.supports,
                                           info.check, info.exact))

    spec = _tiny_spec(kernel="mc", mc_samples=40)
    task = load_run_task(spec, 0, None)
    compute_kernel(spec, task, progress=False)
    assert (resolved, built) == (["mc"], ["mc"])
    check_spec(spec, "spec.toml", None)  # the pre-flight resolves, and computes nothing
    assert (resolved, built) == (["mc", "mc"], ["mc"])
    model = build_model("fcn:6", task.input_shape, Prior(2.0, 1.0), seed=0)
    volume_of_model(model, task, progress=False)
    assert (resolved[-1], built[-1]) == ("auto", "analytic")
    volume_of(model, task.S.x, model(task.S.x).squeeze(-1).gt(0).long(), kernel="mc",
              n_samples=40, n_batches=4)
    assert (resolved[-1], built[-1]) == ("mc-output", "mc-output")
    select_kernel(model, task.x_SE())
    assert (len(resolved), len(built)) == (5, 4) and built[-1] == "analytic"


def test_k_class_auto_draws_converge_on_the_k_class_probe():
    """A 10-class FCN sweep with mc_samples 'auto': the pre-flight lets it through and the
    check judges the K-class log10 V of the true labels (the value the service gives)."""
    spec = _tiny_spec(kernel="mc", mc_samples="auto", mc_tolerance=1.0, mc_max_samples=256)
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"classes": "all"})})
    check_spec(spec, "spec.toml", None)  # refused before: the probe was binary only
    task = load_run_task(spec, 0, None)
    assert task.n_classes == 10
    kernel = compute_kernel(spec, task, progress=False)
    check = kernel.convergence
    assert check is not None and check["converged"] and kernel.kind == "mc"
    # the check's last round probes the kernel returned, with the K-class volume
    expected = VolumeService(kernel.matrix, n_classes=10).log_volume(task.y_SE().numpy())
    assert check["rounds"][-1]["log10_volume"] == pytest.approx(expected.log10_volume,
                                                                rel=1e-12)
    # and the kernel comes with its replicates into a K-class service: V(f|S) with its error
    service = VolumeService(kernel, n_classes=10)
    value = service.conditional(task.y_SE().numpy(), task.train_size)
    assert value.stderr is not None and math.isfinite(value.stderr.log10_volume)


def _linear(model, x, request, inputs):
    """A toy kind: the linear kernel x x^T / d (plus 1, the bias) of the flattened inputs."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return 1.0 + flat @ flat.T / flat.shape[1], {"toy": True}, None, None


def test_every_kind_a_spec_may_name_is_registered():
    assert set(KERNEL_KINDS) - {"auto"} <= set(kernels_module.KERNEL_REGISTRY)


@pytest.fixture
def linear_kind():
    """The toy kind 'linear', registered in the one place, for specs too; unregistered after."""
    kinds = list(KERNEL_KINDS)
    register_kernel_kind(KernelKindInfo("linear", "x x^T / d + 1", _linear, exact=True),
                         in_specs=True)  # the one place
    yield
    del kernels_module.KERNEL_REGISTRY["linear"]
    KERNEL_KINDS[:] = kinds


def test_a_new_kernel_kind_is_one_registration(linear_kind, cli, tmp_path):
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    model = build_model("cnn:2", (1, 4, 4), seed=0)
    kernel = prior_kernel(model, x, KernelRequest("linear"))
    assert kernel.kind == "linear" and kernel.exact and kernel.info["toy"]
    assert kernel.replicates() is None and kernel.info["n"] == 7
    # a spec names it, `flatvol run` sweeps with it, and the stored volumes are the service's
    # on the linear kernel, with the standard error of an exact kernel: 0
    spec_file = tmp_path / "linear.toml"
    spec_file.write_text(
        'name = "linear-kernel"\n[data]\ntask = "mnist"\ntrain_size = 10\ntest_size = 6\n'
        '[model]\narch = "fcn:6"\n[train]\nlr = 0.05\nmax_epochs = 300\n'
        '[sweep]\nattack_sizes = [0]\nseeds = 1\n'
        '[measures]\nfinal = ["volume"]\n[measures.volume]\nkernel = "linear"\n')
    out = tmp_path / "out"
    code, _, err = cli("run", str(spec_file), "--out", str(out), "--threads", "1")
    assert code == 0, err
    runs = runs_frame(out)
    assert len(runs) == 1 and runs["status"].iloc[0] == "done"
    spec = spec_from_dict(read_spec_file(spec_file))
    assert spec.measures.volume.kernel == "linear"
    task = load_run_task(spec, 0, None)
    flat = task.x_SE().reshape(task.x_SE().shape[0], -1).double().numpy()
    service = VolumeService(1.0 + flat @ flat.T / flat.shape[1])
    stored = (runs["log10_volume_S"].iloc[0], runs["log10_volume_stderr"].iloc[0])
    expected = service.log_volume(task.S.y.numpy(), n=task.train_size).log10_volume
    assert stored == (pytest.approx(expected, rel=1e-9), 0.0)


def test_an_unregistered_kind_is_refused_by_spec_and_request():
    with pytest.raises(VolumeError, match="kernel must be one of auto, analytic, mc"):
        KernelRequest("linear")
    with pytest.raises(SpecError, match="kernel must be one of auto, analytic, mc, got 'linear'"):
        _tiny_spec(kernel="linear")


def test_a_prior_kernel_brings_its_replicates_to_the_service():
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(2))
    model = build_model("fcn:5", (4,), Prior(2.0, 0.5), seed=0)
    kernel = prior_kernel(model, x, KernelRequest("mc", samples=40, batches=4), progress=False)
    replicates = kernel.replicates()
    assert replicates is not None and len(replicates) == 4
    y = (x[:, 0] > 0).long().numpy()
    from_kernel = VolumeService(kernel).conditional(y, 5)
    by_hand = VolumeService(kernel.matrix, replicates=replicates).conditional(y, 5)
    assert conditional_values(from_kernel) == conditional_values(by_hand)
    assert (from_kernel.stderr, from_kernel.bias) == (by_hand.stderr, by_hand.bias)
    assert from_kernel.stderr is not None
    with pytest.raises(VolumeError, match="a PriorKernel brings its own"):
        VolumeService(kernel, replicates=replicates)


def test_a_kernel_cached_under_the_old_monte_carlo_spelling_is_read_back(tmp_path):
    """Kernel records written before the one vocabulary say kind 'monte-carlo': the cache is
    used as it is (not recomputed), its kind read as 'mc'."""
    spec = _tiny_spec(kernel="mc", mc_samples=40)
    out = tmp_path / "out"
    fresh = sweep_kernel(spec, load_run_task(spec, 0, None), out, "cpu", progress=False)
    assert fresh.kind == "mc" and fresh.info["kind"] == "mc"
    key = kernel_cache_key(spec)
    cache = out / CACHE_DIR
    record = cache / f"kernel-{key}.json"
    files = [cache / f"kernel-{key}.npy", cache / f"kernel-{key}-batches.npz"]
    # the record as a flatvol before the one vocabulary wrote it
    write_cache_record(record, files, {**fresh.info, "kind": "monte-carlo"})
    cached = sweep_kernel(spec, load_run_task(spec, 0, None), out, "cpu", progress=False)
    assert cached.info.get("cached") and cached.kind == "mc" and cached.info["kind"] == "mc"
    np.testing.assert_array_equal(cached.matrix, fresh.matrix)
    assert len(cached.replicates()) == 10
