"""The network the flatness benchmarks measure: the paper's FCN trained to fit MNIST S."""

from __future__ import annotations

import torch
from torch import nn

from flatvol.data import load_task
from flatvol.models import build_model
from flatvol.train import TrainConfig, train_to_fit


def trained_paper_fcn(
    data_dir: str | None, seed: int
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """FCN 784-40-40-1, SGD lr 0.01 batch 32 until |S| = 500 is fit; returns (model, x_S, y_S)."""
    task = load_task("mnist", 500, 0, 1000, data_dir=data_dir)
    model = build_model("fcn:40,40", task.input_shape, seed=seed)
    result = train_to_fit(model, task, TrainConfig(optimizer="sgd", lr=0.01, batch_size=32),
                          seed=seed)
    if result.status != "fitted":
        raise SystemExit(f"training did not fit S: {result}")
    print(f"trained FCN 784-40-40-1 on MNIST |S|=500: {result.epochs} epochs, "
          f"train acc {result.train_acc_S:.3f}, test acc {result.test_acc_E:.3f}")
    return model.eval(), task.S.x, task.S.y
