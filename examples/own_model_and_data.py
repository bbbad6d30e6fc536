"""Your own data through flatvol: train a network, then its flatness and its volume log10 V(f).

    python examples/own_model_and_data.py

The data here is made up (the sign of a random projection of 4x4 "images"); replace `x_S, y_S`
(training set S) and `x_E, y_E` (test set E) with yours: inputs (n, *shape), labels 0/1.
"""

from __future__ import annotations

import numpy as np
import torch

from flatvol.data import Split, TaskData
from flatvol.flatness import hessian_top_eigenvalues, hessian_trace, keskar_sharpness
from flatvol.models import Prior, build_model
from flatvol.train import TrainConfig
from flatvol.train.loop import train_to_fit
from flatvol.volume import volume_of_model


def split(x: np.ndarray, y: np.ndarray) -> Split:
    """A flatvol Split from numpy inputs (n, *shape) and 0/1 labels (n,)."""
    return Split(torch.as_tensor(x, dtype=torch.float32),
                 torch.as_tensor(y, dtype=torch.float32), np.arange(len(y)))


def main(n_train: int = 60, n_test: int = 40, seed: int = 0) -> dict[str, float]:
    """Train on made-up data and print generalization, flatness and volume.

    Args:
        n_train: size of S.
        n_test: size of E.
        seed: seed of the data, the initialization and the data order.

    Returns:
        The numbers printed, by name.
    """
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(1, 4, 4))
    x_S, x_E = rng.normal(size=(n_train, 1, 4, 4)), rng.normal(size=(n_test, 1, 4, 4))
    y_S = ((x_S * direction).sum(axis=(1, 2, 3)) > 0).astype(float)
    y_E = ((x_E * direction).sum(axis=(1, 2, 3)) > 0).astype(float)

    # S, an empty attack set A, and E; the names are free text.
    task = TaskData("my-task", "pos-vs-neg", seed, S=split(x_S, y_S), A=split(x_S[:0], y_S[:0]),
                    E=split(x_E, y_E))
    # The model carries its prior: initialization draws from it and the volume reads it back.
    model = build_model("fcn:32,32", task.input_shape, Prior(sigma_w2=2.0, sigma_b2=1.0),
                        seed=seed)
    trained = train_to_fit(model, task, TrainConfig(lr=0.05, max_epochs=500), seed=seed)

    numbers = {
        "train_acc_S": trained.train_acc_S,
        "test_acc_E": trained.test_acc_E,
        "log10_sharpness": keskar_sharpness(model, task.S.x, task.S.y).log10_sharpness,
        "hessian_top_eig": hessian_top_eigenvalues(model, task.S.x, task.S.y).eigenvalues[0],
        "hessian_trace": hessian_trace(model, task.S.x, task.S.y, n_hvp=30).trace,
        "log10_volume": volume_of_model(model, task, progress=False).volume.full.log10_volume,
    }
    print(f"{trained.status} after {trained.epochs} epochs")
    for name, value in numbers.items():
        print(f"  {name:16s} {value:.4g}")
    return numbers


if __name__ == "__main__":
    main()
