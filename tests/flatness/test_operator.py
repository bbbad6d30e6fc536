"""The loss operator (FunctionalLoss) built once per (model, data, loss) and shared: every
measure takes it in place of (model, x, y) with the same numbers, the catalogue builds one per
network for all its flatness measures (and a new one when the network changed), and its
PyHessian-style methods are the measures'."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from flatness_helpers import make_batchnorm, make_fcn
from test_flatness_inputs import MEASURES
from torch import nn

import flatvol.flatness as flatness
from flatvol.errors import SpecError
from flatvol.flatness import (
    FunctionalLoss,
    hessian_density,
    hessian_frobenius_norm,
    hessian_top_eigenvalues,
    hessian_trace,
    keskar_sharpness,
)
from flatvol.measures import MeasureContext, MeasuresSpec, compute_measures, measure_names


def _task(x: torch.Tensor, y: torch.Tensor) -> SimpleNamespace:
    """The part of a TaskData the flatness measures read: S."""
    return SimpleNamespace(S=SimpleNamespace(x=x, y=y))


def _small_settings() -> MeasuresSpec:
    """Every flatness measure of the catalogue with settings that keep the test fast."""
    return MeasuresSpec(options={
        "hessian_top_eig": {"max_iter": 20}, "hessian_trace": {"n_hvp": 9},
        "hessian_frobenius": {"n_hvp": 6}, "hessian_density": {"n_probes": 1, "n_iter": 5},
        "average_sharpness": {"n_samples": 4}, "pac_bayes_sigma": {"n_samples": 4},
        "pac_bayes_mag_sigma": {"n_samples": 4}, "adaptive_sharpness": {"n_steps": 3}})


@pytest.fixture
def built(monkeypatch):
    """The number of FunctionalLoss objects built so far (counted at construction)."""
    count = [0]
    original = FunctionalLoss.__init__

    def counting(self, *args, **kwargs):
        count[0] += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(FunctionalLoss, "__init__", counting)
    return count


@pytest.mark.parametrize("name", list(MEASURES))
def test_every_measure_takes_the_operator_with_the_same_number(name, built):
    model, x, y = make_fcn()
    expected = MEASURES[name](model, x, y)
    operator = FunctionalLoss(model, x, y)
    before = built[0]
    # the same operator twice: a measure neither rebuilds it nor leaves it changed
    assert MEASURES[name](operator, None, None) == expected
    assert MEASURES[name](operator, None, None) == expected
    assert built[0] == before


def test_the_catalogue_builds_one_operator_per_network(built):
    model, x, y = make_fcn()
    names = measure_names(group="flatness")
    context = MeasureContext(_small_settings(), seed=3, chunk_size=10)
    values = compute_measures(names, model, _task(x, y), context)
    assert built[0] == 1
    assert isinstance(context.flatness_operator, FunctionalLoss)
    assert context.flatness_operator.chunk_size == 10
    # measured again, unchanged: the same operator, the same numbers
    assert compute_measures(names, model, _task(x, y), context) == values
    assert built[0] == 1


def test_a_network_changed_since_gets_a_new_operator(built):
    """A sweep measures the same module after more training: the kept operator must not be
    used for the new weights (nor a changed BatchNorm statistic)."""
    model, x, y = make_fcn()
    task = _task(x, y)
    context = MeasureContext(_small_settings(), seed=3)
    compute_measures(["hessian_trace"], model, task, context)
    with torch.no_grad():
        model.readout.weight.mul_(1.5)
    changed = compute_measures(["hessian_trace"], model, task, context)
    assert built[0] == 2
    fresh = compute_measures(["hessian_trace"], model, task,
                             MeasureContext(_small_settings(), seed=3))
    assert changed == fresh

    bn_model, bx, by = make_batchnorm()
    bn_task = _task(bx, by)
    context = MeasureContext(_small_settings(), seed=3)
    first = compute_measures(["average_sharpness"], bn_model, bn_task, context)
    bn_model.norm.running_var.mul_(2.0)  # a buffer, not a trainable parameter
    second = compute_measures(["average_sharpness"], bn_model, bn_task, context)
    assert second != first
    assert second == compute_measures(["average_sharpness"], bn_model, bn_task,
                                      MeasureContext(_small_settings(), seed=3))


def test_the_catalogue_measures_equal_the_functions_on_the_model():
    """One uniform call (operator, seed, progress, options) gives what each function gives on
    (model, x, y) with the same seed."""
    model, x, y = make_fcn()
    context = MeasureContext(_small_settings(), seed=5, derive_seeds=False)
    values = compute_measures(["sharpness", "hessian_top_eig", "hessian_trace",
                               "fisher_rao_norm"], model, _task(x, y), context)
    assert values["sharpness"] == keskar_sharpness(model, x, y, seed=5).sharpness
    assert values["hessian_top_eig"] == hessian_top_eigenvalues(
        model, x, y, max_iter=20, seed=5).eigenvalues[0]
    assert values["hessian_trace"] == hessian_trace(model, x, y, n_hvp=9, seed=5).trace
    assert values["fisher_rao_norm"] == flatness.fisher_rao_norm(model, x, y).fisher_rao_norm


def test_spectral_measures_of_one_operator_are_the_measures_of_the_model():
    model, x, y = make_fcn()
    operator = FunctionalLoss(model, x, y, chunk_size=9)
    top = hessian_top_eigenvalues(operator, k=2, seed=1)
    assert top.eigenvalues == hessian_top_eigenvalues(model, x, y, k=2, seed=1,
                                                      chunk_size=9).eigenvalues
    assert hessian_trace(operator, n_hvp=12, seed=2).trace == hessian_trace(
        model, x, y, n_hvp=12, seed=2, chunk_size=9).trace
    assert hessian_frobenius_norm(operator, n_hvp=5).frobenius_norm == hessian_frobenius_norm(
        model, x, y, n_hvp=5, chunk_size=9).frobenius_norm
    density = hessian_density(operator, n_probes=2, n_iter=6)
    reference = hessian_density(model, x, y, n_probes=2, n_iter=6, chunk_size=9)
    assert (density.nodes == reference.nodes).all() and (density.values == reference.values).all()
    with operator:
        torch.testing.assert_close(operator.grad(operator.w0),
                                   operator.value_and_grad(operator.w0)[1], rtol=0, atol=0)


def test_the_operator_leaves_the_model_as_it_was_and_evaluates_in_eval_mode():
    model, x, y = make_batchnorm()
    expected = float(nn.functional.binary_cross_entropy_with_logits(model(x), y).detach())
    model.train()
    operator = FunctionalLoss(model, x, y)
    # outside a `with` block too: eval mode for the call, the flags restored after
    assert operator.loss_value(operator.w0) == pytest.approx(expected, rel=1e-12)
    assert model.training and model.norm.training
    keskar_sharpness(operator, n_steps=2)
    with operator:
        with operator:  # re-entrant: the inner block leaves the outer one in eval mode
            pass
        assert not model.training
    assert model.training and model.norm.training


def test_operator_settings_cannot_be_given_twice():
    model, x, y = make_fcn()
    operator = FunctionalLoss(model, x, y)
    with pytest.raises(SpecError, match=r"^x: set by the FunctionalLoss given in place"):
        hessian_trace(operator, x, y)
    with pytest.raises(SpecError, match=r"^chunk_size: set by the FunctionalLoss"):
        keskar_sharpness(operator, chunk_size=4)
    with pytest.raises(SpecError, match=r"^hvp_method: set by the FunctionalLoss"):
        hessian_trace(operator, hvp_method="forward-over-reverse")
    with pytest.raises(SpecError, match=r"^y: a flatness measure of a network needs"):
        hessian_trace(model, x)


@pytest.mark.parametrize("option", ["chunk_size", "device", "labels", "hvp_method"])
def test_a_measure_option_that_belongs_to_the_operator_is_refused(option):
    model, x, y = make_fcn()
    value = {"chunk_size": 4, "device": "cpu", "labels": "pm1",
             "hvp_method": "forward-over-reverse"}[option]
    settings = MeasuresSpec(options={"hessian_trace": {"n_hvp": 6, option: value}})
    with pytest.raises(SpecError, match=rf"^measures.options.hessian_trace.{option}: a setting "
                                        r"of the loss operator"):
        compute_measures(["hessian_trace"], model, _task(x, y), MeasureContext(settings))
