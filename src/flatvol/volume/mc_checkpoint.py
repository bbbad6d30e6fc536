"""A Monte-Carlo kernel check's running sums on disk, so that a killed check resumes.

The convergence check (flatvol.volume.mc_convergence) of a ResNet kernel on CPU runs for hours.
`DrawCheckpoint` keeps what it has drawn: the sums of Gram matrices, the draws' generator state
and the figures of the rounds judged so far, written atomically (`torch.save` of tensors, read
back with `weights_only=True`) at the end of every round and every `every_s` seconds between.
It is used only if its fingerprint matches (inputs, model and prior, seed, first round, batch
count, BatchNorm convention): then the draws that follow are the ones an uninterrupted check
would make, and the kernel is the same to the bit. Tolerance and cap are not in the
fingerprint: a check refused at its cap resumes with a higher one, its rounds re-judged. Like
every flatvol.resumable.ProgressFile, the file carries the sha256 of its content: a damaged or
truncated file is not resumed from (one notice line), the check starts over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flatvol.digest import digest
from flatvol.resumable import ProgressFile

# Seconds between checkpoints within a round (each round's end is always saved).
CHECKPOINT_EVERY_S = 300.0
# Sums larger than this are not written (n = 7000 with 10 batch sums would take 5 GiB).
MAX_CHECKPOINT_BYTES = 2 * 2**30
_FORMAT = 1


@dataclass
class DrawSums:
    """What a check has accumulated after `drawn` draws."""

    drawn: int
    halves: torch.Tensor  # (2, n, n) float64: sums of the even and of the odd draws' Grams
    total_sq: torch.Tensor  # (n, n) float64: sum of their elementwise squares
    batch_totals: torch.Tensor | None  # (B, n, n) float64 round-robin batch sums, or None
    generator_state: torch.Tensor  # the draws' torch.Generator state before draw `drawn`
    rounds: list[dict[str, Any]]  # the figures of each round judged (ConvergenceRound fields)


def draws_fingerprint(model: nn.Module, x: torch.Tensor, *, seed: int, start: int,
                      n_batches: int, batchnorm: str) -> str:
    """What fixes the sequence of draws and their sums: equal fingerprints, equal draws.

    Args:
        model: The network whose prior is drawn (its class, parameter shapes and prior count).
        x: The kernel's inputs.
        seed: Seed of the draws.
        start: Draws of the first round.
        n_batches: Round-robin batch sums kept.
        batchnorm: BatchNorm convention of the draws.

    Returns:
        A hex digest.
    """
    prior = getattr(model, "prior", None)
    described = {"format": _FORMAT, "model": type(model).__name__,
                 "shapes": [[name, list(p.shape)] for name, p in model.named_parameters()],
                 "prior": repr(prior), "seed": int(seed), "start": int(start),
                 "n_batches": int(n_batches), "batchnorm": batchnorm,
                 "x_shape": list(x.shape)}
    return digest("mc-draws-sequence",
                  [np.ascontiguousarray(x.detach().cpu().numpy()).tobytes(), described])


def _draw_sums(saved: dict[str, Any]) -> DrawSums:
    batch_totals = saved["batch_totals"]
    return DrawSums(int(saved["drawn"]), saved["halves"], saved["total_sq"],
                    batch_totals if batch_totals.numel() else None,
                    saved["generator_state"].cpu(), json.loads(saved["rounds"]))


class DrawCheckpoint(ProgressFile):
    """Load and save a check's DrawSums at `path` for draws with `fingerprint`.

    Args:
        path: The checkpoint file.
        fingerprint: `draws_fingerprint` of the check.
        every_s: Seconds between saves within a round (default CHECKPOINT_EVERY_S).
    """

    def __init__(self, path: str | Path, fingerprint: str, every_s: float | None = None) -> None:
        super().__init__(path, fingerprint, CHECKPOINT_EVERY_S if every_s is None else every_s)

    def load(self, device: torch.device) -> DrawSums | None:
        """The saved sums, or None if there are none for these draws (absent, unreadable or
        of other draws: the check then starts from zero and overwrites the file)."""
        return self.read(device, _draw_sums)

    def save(self, sums: DrawSums) -> bool:
        """Write `sums` atomically; False (nothing written) if they exceed
        MAX_CHECKPOINT_BYTES."""
        tensors = [sums.halves, sums.total_sq]
        if sums.batch_totals is not None:
            tensors.append(sums.batch_totals)
        if sum(t.numel() * t.element_size() for t in tensors) > MAX_CHECKPOINT_BYTES:
            return False
        empty = torch.zeros(0, dtype=torch.float64)
        self.write({"drawn": int(sums.drawn), "halves": sums.halves.cpu(),
                    "total_sq": sums.total_sq.cpu(),
                    "batch_totals": (empty if sums.batch_totals is None
                                     else sums.batch_totals.cpu()),
                    "generator_state": sums.generator_state.cpu(),
                    "rounds": json.dumps(sums.rounds)})
        return True
