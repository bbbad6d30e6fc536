"""The estimator registry: one EstimatorInfo per estimator, read by the service, the CLI and
the spec schema; a new estimator is one `register_estimator` call (a toy one here)."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
from typing import get_args

import numpy as np
import pytest

from flatvol.errors import VolumeError
from flatvol.measures import VolumeSpec
from flatvol.volume import VolumeEstimator, VolumeService, arccos_kernel
from flatvol.volume.ep import Mode
from flatvol.volume.estimate import EstimatorOutput
from flatvol.volume.orthant import PROPOSALS, orthant_probability_closed_form
from flatvol.volume_settings import (
    EP_MODES,
    ESTIMATORS,
    IS_PROPOSALS,
    EstimatorInfo,
    EstimatorOption,
    check_estimator,
    estimator_info,
    estimators_for,
    register_estimator,
    unregister_estimator,
)

TOY = "toy-sampled-orthant"


def toy_orthant(factor: VolumeEstimator, labels: np.ndarray, n_classes: int, *,
                draws: int, seed: int) -> EstimatorOutput:
    """A toy estimator: P(sign z = y) exactly for n <= 2 (closed form), else by counting
    `draws` direct samples of z ~ N(0, K), with the binomial standard error."""
    if factor.n <= 2:
        p = orthant_probability_closed_form(factor.kernel, labels)
        return EstimatorOutput(math.log(p), True, stderr_log10=0.0)
    z = np.random.default_rng(seed).standard_normal((draws, factor.n)) @ factor.chol.T
    hits = int(np.sum(np.all(z * labels > 0, axis=1)))
    if hits == 0:
        return EstimatorOutput(-math.inf, False, message="no draw in the orthant")
    return EstimatorOutput(math.log(hits / draws), True,
                           stderr_log10=math.sqrt((1 - hits / draws) / hits) / math.log(10))


@pytest.fixture()
def toy():
    """The toy estimator, registered in this one place and removed afterwards."""
    info = register_estimator(EstimatorInfo(
        TOY, "direct sampling of P(sign z = f) (a test's toy)",
        binary=f"{__name__}:toy_orthant", has_stderr=True,
        options=(EstimatorOption("draws", "int", 200_000, "direct samples"),
                 EstimatorOption("seed", "int", 0, "the sampler's seed"))))
    yield info
    unregister_estimator(TOY)
    assert TOY not in ESTIMATORS


def kernel(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 4))
    return arccos_kernel(x, 2, 2.0, 0.1)


def test_a_toy_estimator_registered_once_reaches_the_service(toy):
    K = kernel(2)
    y = np.array([1, 0])
    # n = 2: the toy's closed form, through the service's factor and cache
    service = VolumeService(K)
    result = service.log_volume(y, TOY)
    exact = math.log10(orthant_probability_closed_form(service.kernel, y))
    assert result.estimator == TOY and result.log10_volume == pytest.approx(exact, rel=1e-12)
    assert service.log_volume(y, TOY, draws=200_000) is result  # the default: one entry
    # n = 6: direct sampling agrees with the registered sampler within both error bars
    K6, y6 = kernel(6, 1), np.array([1, 1, 0, 1, 0, 0])
    service6 = VolumeService(K6)
    toy6 = service6.log_volume(y6, TOY, seed=1)
    sampled = service6.log_volume(y6, "orthant-is", seed=2)
    z = (toy6.log10_volume - sampled.log10_volume) / math.hypot(toy6.stderr_log10,
                                                               sampled.stderr_log10)
    assert toy6.converged and abs(z) < 4.0, z
    # V(f|S) and the bound come with it
    cond = service6.conditional(y6, 3, TOY)
    assert cond.log10_volume_conditional == pytest.approx(
        cond.full.log10_volume - cond.train.log10_volume)
    assert 0 < cond.pac_bayes_bound < 1
    # its options are its schema's: another estimator's is refused in one line
    with pytest.raises(VolumeError, match=f"estimator '{TOY}' has no option 'n_samples'"):
        service6.log_volume(y6, TOY, n_samples=10)
    # binary only: a 3-class service refuses it, naming those that support 3 classes
    with pytest.raises(VolumeError, match=f"'{TOY}' is binary only; for 3 classes use one "
                                          "of ep-orthant, orthant-is"):
        VolumeService(K6, n_classes=3).log_volume([0, 1, 2, 0, 1, 2], TOY)


def test_a_toy_estimator_registered_once_reaches_the_cli(toy, cli, tmp_path):
    K = kernel(2)
    np.save(tmp_path / "K.npy", K)
    np.save(tmp_path / "y.npy", np.array([0, 1]))
    code, out, err = cli("volume", "--kernel", str(tmp_path / "K.npy"), "--labels",
                         str(tmp_path / "y.npy"), "--estimator", TOY, "--json")
    assert code in (0, None), err
    result = json.loads(out)
    exact = math.log10(orthant_probability_closed_form(K, np.array([0, 1])))
    assert result["estimator"] == TOY and result["log10_volume"] == pytest.approx(exact)
    assert result["estimator_description"] == toy.description
    assert result["stderr_log10"] == 0.0 and result["n_classes"] == 2


def test_a_toy_estimator_registered_once_reaches_the_spec_schema(toy):
    spec = VolumeSpec(estimator=TOY, options={"draws": 1000})
    assert spec.estimator == TOY
    with pytest.raises(ValueError, match=f"estimator '{TOY}' has no option 'tol'"):
        VolumeSpec(estimator=TOY, options={"tol": 1e-3})
    with pytest.raises(ValueError, match="option draws: expected an integer, got 'many'"):
        VolumeSpec(estimator=TOY, options={"draws": "many"})


def test_the_spec_schema_refuses_an_unregistered_estimator_and_its_options():
    assert TOY not in ESTIMATORS  # the fixture removed it
    with pytest.raises(ValueError, match=f"unknown estimator '{TOY}'"):
        VolumeSpec(estimator=TOY)
    with pytest.raises(ValueError, match="'ep-orthant' has no option 'n_samples'; its "
                                         "options: seed, tol, max_iter, mode"):
        VolumeSpec(options={"n_samples": 100})
    with pytest.raises(ValueError, match="option mode: expected one of auto, blocks, got "
                                         "'fast'"):
        VolumeSpec(options={"mode": "fast"})
    with pytest.raises(ValueError, match="option mode: expected one of auto, blocks, got "
                                         "'parallel'"):  # the removed schedules
        VolumeSpec(options={"mode": "parallel"})
    assert VolumeSpec(estimator="orthant-is", options={"n_samples": 100, "tol": 1}).options


@pytest.mark.parametrize(("options", "expected"), [
    ({"bogus": 1}, "estimator 'orthant-is' has no option 'bogus'; its options: seed, tol"),
    ({"tol": "small"}, "estimator 'orthant-is' option tol: expected a number, got 'small'"),
    ({"max_iter": 2.5}, "option max_iter: expected an integer, got 2.5"),
    ({"n_samples": True}, "option n_samples: expected an integer, got True"),
    ({"proposal": "gibbs"}, "option proposal: expected one of auto, ep, minimax, prior"),
])
def test_unknown_or_mistyped_options_are_one_line_errors(options, expected):
    K = kernel(4)
    for call in (lambda: VolumeEstimator(K).log_volume([1, 0, 1, 1], "orthant-is", **options),
                 lambda: VolumeService(K).log_volume([1, 0, 1, 1], "orthant-is", **options),
                 lambda: VolumeService(K, n_classes=3).log_volume([1, 0, 2, 1], "orthant-is",
                                                                   **options)):
        with pytest.raises(VolumeError) as info:
            call()
        assert expected in str(info.value) and "\n" not in str(info.value)


def test_check_estimator_refuses_class_counts_an_estimator_does_not_support():
    assert estimators_for(2) == ("ep-orthant", "orthant-is", "ep-probit", "laplace")
    assert estimators_for(10) == ("ep-orthant", "orthant-is")
    assert check_estimator("ep-orthant", 10) == "ep-orthant"
    for name in ("ep-probit", "laplace"):
        with pytest.raises(VolumeError, match=f"estimator '{name}' is binary only; for 10 "
                                              "classes use one of ep-orthant, orthant-is"):
            check_estimator(name, 10)
    for bad in (1, 0, True, 2.0):
        with pytest.raises(VolumeError, match="n_classes: expected an integer >= 2"):
            check_estimator("ep-orthant", bad)
    with pytest.raises(VolumeError, match="unknown estimator 'gpy'"):
        estimator_info("gpy", 3)
    with pytest.raises(VolumeError, match="already registered"):
        register_estimator(ESTIMATORS["laplace"])
    with pytest.raises(VolumeError, match="must be 'module:function'"):
        EstimatorInfo("x", "x", binary="flatvol.volume.estimate")


def test_every_implementation_has_the_common_signature_and_its_schema():
    # (factor, labels, n_classes, *, <the schema's options>) [+ warm_start, keep_posterior for
    # a warm-startable binary implementation]: an option the schema lists but the function
    # lacks (or the reverse) would fail at run time, or be silently unreachable.
    for info in ESTIMATORS.values():
        for n_classes in (2, 3) if info.multiclass else (2,):
            implementation = info.implementation(n_classes)
            parameters = inspect.signature(implementation).parameters
            names = list(parameters)
            assert names[:3] == ["factor", "labels", "n_classes"], (info.name, names)
            # a functools.partial's bound arguments (EP's likelihood) are fixed, not options
            keywords = set(names[3:]) - set(getattr(implementation, "keywords", {}))
            expected = {o.name for o in info.options}
            if info.warm_start and n_classes == 2:
                expected |= {"warm_start", "keep_posterior"}
            assert keywords == expected, (info.name, n_classes, keywords ^ expected)
            assert all(parameters[k].kind is inspect.Parameter.KEYWORD_ONLY for k in keywords)


def test_the_schemas_lists_are_the_volume_packages():
    assert EP_MODES == get_args(Mode)
    assert IS_PROPOSALS == PROPOSALS


@pytest.mark.parametrize("n_classes", [2, 3])
def test_every_registered_estimator_runs_and_its_flags_are_true(n_classes):
    K = kernel(6, 2)
    labels = np.array([0, 1, 1, 0, 1, 0]) if n_classes == 2 else np.array([0, 1, 2, 2, 1, 0])
    estimator = VolumeEstimator(K)
    for name in estimators_for(n_classes):
        info = ESTIMATORS[name]
        result = estimator.log_volume(labels, name, n_classes=n_classes)
        assert result.converged and result.n_classes == n_classes, (name, result.message)
        assert -6 < result.log10_volume < 0, name
        assert (result.stderr_log10 is not None) == info.has_stderr, name
        assert (result.ep_sites is not None) == (info.warm_start and n_classes == 2), name


def test_a_warm_start_is_refused_where_the_registry_says_it_is_not_supported():
    K = kernel(6, 3)
    estimator = VolumeEstimator(K)
    binary = estimator.log_volume([0, 1, 1, 0, 1, 0])
    with pytest.raises(VolumeError, match="warm_start needs an EP-based estimator on binary "
                                          "labels, got 'laplace' with 2 classes"):
        estimator.log_volume([0, 1, 1, 0, 1, 1], "laplace", warm_start=binary)
    with pytest.raises(VolumeError, match="got 'ep-orthant' with 3 classes"):
        estimator.log_volume([0, 1, 2, 0, 1, 1], n_classes=3, warm_start=binary)


def test_the_registry_module_loads_neither_numpy_torch_nor_the_volume_package():
    code = ("import sys, flatvol.volume_settings as s; s.check_estimator('ep-orthant', 10); "
            "print(sorted(m for m in ('numpy', 'torch', 'flatvol.volume') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
