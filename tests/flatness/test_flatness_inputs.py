"""Every flatness measure checks (x, y) and the outputs the same way (flatness._inputs): labels
in {0, 1} (or {-1, +1} with labels='pm1'), tensors or arrays, (n,) or (n, 1) outputs; anything
else is one SpecError line naming it."""

from __future__ import annotations

import pytest
import torch
from flatness_helpers import make_fcn
from torch import nn

from flatvol.errors import SpecError
from flatvol.flatness import (
    adaptive_sharpness,
    average_sharpness,
    fisher_rao_norm,
    hessian_density,
    hessian_frobenius_norm,
    hessian_top_eigenvalues,
    hessian_trace,
    keskar_sharpness,
    pac_bayes_flatness,
    pac_bayes_magnitude_flatness,
)

# Each measure with small settings, as value(model, x, y, **extra) -> float.
MEASURES = {
    "keskar": lambda m, x, y, **k: keskar_sharpness(m, x, y, maximizer="fast", n_steps=3,
                                                    **k).sharpness,
    "top_eig": lambda m, x, y, **k: hessian_top_eigenvalues(m, x, y, k=1, **k).eigenvalues[0],
    "trace": lambda m, x, y, **k: hessian_trace(m, x, y, n_hvp=6, **k).trace,
    "frobenius": lambda m, x, y, **k: hessian_frobenius_norm(m, x, y, n_hvp=6, **k).frobenius_norm,
    "density": lambda m, x, y, **k: float(hessian_density(m, x, y, n_iter=5, n_probes=1,
                                                          **k).moment(1)),
    "average": lambda m, x, y, **k: average_sharpness(m, x, y, n_samples=4, **k).sharpness,
    "pac_bayes": lambda m, x, y, **k: pac_bayes_flatness(m, x, y, n_samples=4, **k).sigma_star,
    "pac_bayes_mag": lambda m, x, y, **k: pac_bayes_magnitude_flatness(m, x, y, n_samples=4,
                                                                       **k).sigma_star,
    "adaptive": lambda m, x, y, **k: adaptive_sharpness(m, x, y, n_steps=3, **k).sharpness,
    "fisher_rao": lambda m, x, y, **k: fisher_rao_norm(m, x, y, **k).fisher_rao_norm,
}


class ColumnOutput(nn.Module):
    """The same network with (n, 1) outputs."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).unsqueeze(-1)


class ThreeOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 3).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


@pytest.mark.parametrize("name", list(MEASURES))
def test_pm1_labels_are_refused_naming_y(name):
    model, x, y = make_fcn()
    with pytest.raises(SpecError, match=r"^y: labels are in \{-1, \+1\}.*labels='pm1'"):
        MEASURES[name](model, x, 2 * y - 1)


@pytest.mark.parametrize("name", list(MEASURES))
def test_every_input_form_gives_the_same_number(name):
    model, x, y = make_fcn()
    expected = MEASURES[name](model, x, y)
    assert MEASURES[name](model, x, 2 * y - 1, labels="pm1") == expected
    assert MEASURES[name](model, x, y.long()) == expected
    assert MEASURES[name](model, x, y.bool()) == expected
    assert MEASURES[name](model, x.numpy(), y.numpy()) == expected
    assert MEASURES[name](model, x, y.long().numpy()) == expected
    assert MEASURES[name](model, x, y.reshape(-1, 1)) == expected
    assert MEASURES[name](ColumnOutput(model), x, y) == pytest.approx(expected, rel=1e-12)


def test_pm1_integer_labels_map_to_01():
    model, x, y = make_fcn()
    pm1 = (2 * y - 1).long().numpy()
    assert keskar_sharpness(model, x, pm1, labels="pm1", maximizer="fast").sharpness == \
        keskar_sharpness(model, x, y, maximizer="fast").sharpness


@pytest.mark.parametrize("labels,match", [
    ([0, 1, 2], r"^y: expected binary labels in \{0, 1\}, got values 0, 1, 2"),
    ([0.0, 1.0, 0.5], r"^y: expected binary labels"),
    ([0.0, 1.0, float("nan")], r"^y: labels are not finite"),
])
def test_other_labels_are_refused(labels, match):
    model, x, _ = make_fcn()
    y = torch.tensor(labels * 11)[:32]
    with pytest.raises(SpecError, match=match):
        keskar_sharpness(model, x, y)


def test_pm1_convention_refuses_01_labels_and_custom_losses():
    model, x, y = make_fcn()
    with pytest.raises(SpecError, match=r"^y: labels='pm1' expects labels in \{-1, \+1\}"):
        hessian_trace(model, x, y, labels="pm1")
    with pytest.raises(SpecError, match="default loss only"):
        hessian_trace(model, x, y, nn.functional.mse_loss, labels="pm1")
    with pytest.raises(SpecError, match="labels must be one of"):
        hessian_trace(model, x, y, labels="signed")  # type: ignore[arg-type]


def test_shapes_and_types_are_refused_naming_the_input():
    model, x, y = make_fcn()
    with pytest.raises(SpecError, match=r"^y: expected binary labels of shape \(n,\) or \(n, 1\)"
                                        r", got shape \(32, 2\)"):
        fisher_rao_norm(model, x, torch.stack([y, y], 1))
    with pytest.raises(SpecError, match="^x: expected a torch tensor or a NumPy array, got list"):
        fisher_rao_norm(model, x.tolist(), y)
    with pytest.raises(SpecError, match="^y: expected a numeric array"):
        fisher_rao_norm(model, x, y.numpy().astype(object))
    with pytest.raises(SpecError, match=r"model outputs: .* got \(n, 3\)"):
        keskar_sharpness(ThreeOutputs(), x, y)


def test_custom_loss_keeps_its_own_targets_and_outputs():
    model = ThreeOutputs()
    x = torch.randn(12, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    result = hessian_trace(model, x, y, nn.functional.cross_entropy, n_hvp=6)
    assert result.trace == result.trace  # a number: 3-class outputs with their own loss
