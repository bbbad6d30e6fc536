"""labels_of: the one definition of the function a classifier computes (sign of one logit,
argmax of K outputs), used by training's callers, the sweep's volume measure and the volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import flatvol.volume
from flatvol.models import OutputError, labels_from_outputs, labels_of, output_count


class Fixed(nn.Module):
    """Returns given outputs for x = arange(n) row indices (one per input), so labels are known."""

    def __init__(self, outputs: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(outputs.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0].long()]


def rows(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32)[:, None]


def test_one_logit_is_its_sign_and_k_outputs_their_argmax():
    logits = torch.tensor([0.5, -0.1, 0.0, 3.0])
    assert labels_of(Fixed(logits), rows(4)).tolist() == [1, 0, 0, 1]  # 0 is not > 0
    assert labels_of(Fixed(logits[:, None]), rows(4)).tolist() == [1, 0, 0, 1]
    outputs = torch.tensor([[0.1, 0.9, -1.0], [2.0, 1.0, 0.0], [-3.0, -2.0, -1.0],
                            [1.0, 1.0, 0.0]])
    labels = labels_of(Fixed(outputs), rows(4))
    assert labels.dtype == np.int64
    assert labels.tolist() == [1, 0, 2, 0]  # a tie goes to the lowest class
    # two outputs: the argmax, i.e. the sign of output 1 - output 0 (ties to class 0)
    two = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    assert labels_of(Fixed(two), rows(3)).tolist() == [1, 0, 0]
    assert [output_count(o) for o in (logits, logits[:, None], outputs, two)] == [2, 2, 3, 2]


def test_labels_do_not_depend_on_batching_and_leave_the_mode_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 32), nn.Dropout(0.5), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(37, 5)
    model.train()
    whole = labels_of(model, x)
    assert model.training  # restored
    # eval mode (no dropout), so any batching gives the same labels
    assert np.array_equal(labels_of(model, x, batch_size=5), whole)
    with torch.no_grad():
        model.eval()
        assert np.array_equal(model(x).argmax(1).numpy(), whole)
    # a float64 model labels float32 inputs in float64
    assert np.array_equal(labels_of(model.double(), x), whole)


@pytest.mark.parametrize(("outputs", "match"), [
    (torch.tensor([1.0, float("nan"), 0.0]), "not finite on 1 of 3 values"),
    (torch.zeros(3, 2, 2), r"shape \(3, 2, 2\) for 3 inputs; expected \(n,\), \(n, 1\) or "
                           r"\(n, K\)"),
])
def test_outputs_that_define_no_labels_are_one_line_errors(outputs, match):
    with pytest.raises(OutputError, match=match) as error:
        labels_of(Fixed(outputs), rows(3))
    assert "\n" not in str(error.value)
    with pytest.raises(OutputError, match="expected"):
        labels_from_outputs(torch.zeros(3, 2, 2))


def test_a_model_with_another_row_count_is_refused():
    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 3)

        def forward(self, x):
            return self.linear(x).sum(0, keepdim=True)  # one row for the whole batch

    with pytest.raises(OutputError, match="for 4 inputs"):
        labels_of(Pooled(), torch.zeros(4, 2))


def test_the_volume_package_has_no_label_function_of_its_own():
    # one definition of f: the volume's old copy (binary only) is gone
    assert not hasattr(flatvol.volume, "predicted_labels")
