"""The paper's training protocol, shared by `train_to_fit` and the ensemble trainer: when a
run stops, and the order in which it sees the data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from flatvol.errors import SpecError

# Added to the run seed for the data order, so the order is decoupled from the init seed
# (which seeds the weights). Changing it changes every recorded run.
DATA_ORDER_OFFSET = 1_000_003


# How a run walks S u A each epoch. 'shuffled' (the default): a fresh permutation per epoch,
# drawn from the run seed. 'fixed': the same order every epoch, S then A as TaskData lists them:
# what the authors' code does (its shuffle() permutes a copy it throws away), so its minibatches
# end every epoch on the attack set.
DATA_ORDERS: tuple[str, ...] = ("shuffled", "fixed")
DataOrder = Literal["shuffled", "fixed"]
DEFAULT_DATA_ORDER: DataOrder = "shuffled"


def check_data_order(order: str) -> None:
    """Refuse an order that is not one of DATA_ORDERS.

    Args:
        order: the order's name.

    Raises:
        SpecError: naming the expected orders and the one given.
    """
    if order not in DATA_ORDERS:
        raise SpecError(f"order must be one of {', '.join(DATA_ORDERS)}, got {order!r}")


def epoch_order(n: int, generator: torch.Generator, order: DataOrder = DEFAULT_DATA_ORDER
                ) -> torch.Tensor:
    """The indices of one epoch's walk over the n training points.

    Args:
        n: |S u A|.
        generator: the run's data-order generator (data_order_generator); a 'fixed' order
            draws nothing from it.
        order: one of DATA_ORDERS.

    Returns:
        An int64 CPU tensor holding a permutation of 0..n-1.
    """
    if order == "fixed":
        return torch.arange(n)
    return torch.randperm(n, generator=generator)


def data_order_generator(seed: int) -> torch.Generator:
    """The generator of a run's minibatch order (one torch.randperm per epoch).

    Args:
        seed: the run seed (the one that also initialises the weights).

    Returns:
        A CPU generator seeded with `seed + DATA_ORDER_OFFSET`.
    """
    return torch.Generator().manual_seed(int(seed) + DATA_ORDER_OFFSET)


@dataclass(frozen=True)
class StoppingRule:
    """Stop at the end of the first epoch where S (fit='S') or S u A (fit='all') is 100%
    classified, then `post_train_epochs` more epochs; a run that reaches `max_epochs` without
    fitting stops there (status 'did_not_fit')."""

    fit: Literal["S", "all"] = "S"
    max_epochs: int = 2000
    post_train_epochs: int = 0

    def __post_init__(self) -> None:
        if self.fit not in ("S", "all"):
            raise SpecError(f"fit must be 'S' or 'all', got {self.fit!r}")
        if self.max_epochs < 1:
            raise SpecError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.post_train_epochs < 0:
            raise SpecError(f"post_train_epochs must be >= 0, got {self.post_train_epochs}")

    def watched_points(self, n_S: int, n_A: int) -> int:
        """How many training points must be classified correctly, counted from the start of
        the training list (S first, then A, as TaskData.train_inputs orders them).

        Args:
            n_S, n_A: the sizes of S and A.

        Returns:
            n_S + n_A for fit='all', else n_S.
        """
        return n_S + n_A if self.fit == "all" else n_S

    def fitted(self, all_S_correct: bool | np.ndarray, all_A_correct: bool | np.ndarray
               ) -> bool | np.ndarray:
        """Whether the rule is met, given whether all of S and all of A are classified correctly
        (scalars for one run, arrays for one value per ensemble member).

        Args:
            all_S_correct: S is 100% classified.
            all_A_correct: A is 100% classified (True when A is empty).

        Returns:
            The same shape as the inputs.
        """
        return all_S_correct & ((self.fit == "S") | all_A_correct)

    def done(self, epoch: int, fitted_at: int | None | np.ndarray) -> bool | np.ndarray:
        """Whether a run stops after `epoch` epochs.

        Args:
            epoch: epochs completed.
            fitted_at: the epoch at which the rule was first met; None (or, in an array of one
                value per ensemble member, a negative value) if not yet.

        Returns:
            A bool for a scalar `fitted_at`, else a bool array of its shape.
        """
        if fitted_at is None:
            return epoch >= self.max_epochs
        if np.ndim(fitted_at) == 0:
            return epoch >= fitted_at + self.post_train_epochs
        return np.where(fitted_at >= 0, epoch >= fitted_at + self.post_train_epochs,
                        epoch >= self.max_epochs)
