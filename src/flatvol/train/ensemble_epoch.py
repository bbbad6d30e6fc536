"""One epoch of a stacked ensemble, and the exact stopping check after it.

`run_epoch` runs every member's minibatches block by block (blocks of members whose weights
fit in cache, spanning attack sizes where the rule allows; in parallel threads or not) and
returns the losses and which points each member's pass got wrong; `fitting_members` uses those
misses to evaluate little: a member that still gets one of them wrong is not fit, only the
others are evaluated on all their points. Accuracy counts per member, own prefix of A included;
`record_epoch` appends an epoch to the members' histories as train_to_fit records it, and
`stop_members` copies stopped members' weights out and measures them as train_to_fit does.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import numpy as np
import torch

from flatvol.data.task import TaskData
from flatvol.train.loop import EpochInfo
from flatvol.train.stacked import Params, StackedEngine, StackedOptimizer, gather_minibatches
from flatvol.train.update_rules import TorchUpdate

SUSPECTS = 16  # points re-checked per member before a full evaluation of S


def as_labels(y: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Labels on `device` as the engines take them: a binary task's {0, 1} in the parameters'
    float `dtype` (the sigmoid cross-entropy's targets), a K-class task's int64 as they are."""
    return y.to(device, dtype) if y.is_floating_point() else y.to(device)


def stacked_labels(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The members' labels from stacked outputs, in y's dtype: logit > 0 for one logit (float
    {0, 1} labels), argmax (ties to the lowest class, as flatvol.models.labels) for C outputs
    (int64 labels; outputs (..., C))."""
    if y.is_floating_point():
        return (logits > 0).to(y.dtype)
    return logits.argmax(-1)


def correct_count(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-member count of points classified as labelled (stacked_labels equal to y)."""
    return (stacked_labels(logits, y) == y).sum(-1)


def correct_prefix(logits: torch.Tensor, y: torch.Tensor, sizes: np.ndarray) -> np.ndarray:
    """Per-member count of its own points classified as labelled: member k's are the first
    sizes[k] points of logits (K, n) (or (K, n, C))."""
    right = (stacked_labels(logits, y) == y).cpu().numpy()
    return (right & (np.arange(right.shape[1]) < sizes[:, None])).sum(1)


def fraction(correct: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """correct / sizes, NaN where a member has no such points (as train_to_fit's accuracy)."""
    return np.where(sizes > 0, correct / np.maximum(sizes, 1), math.nan)


def run_epoch(runner: StackedEngine, optimizer: StackedOptimizer, params: Params, buffers: Params,
              x: torch.Tensor, y: torch.Tensor, segments: list[tuple[int, int, int]],
              perms: list[torch.Tensor], epochs_done: int, batch_size: int, group_size: int,
              keep_history: bool, pool: ThreadPoolExecutor | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of every member; returns the summed minibatch losses (if kept) and which
    training points each member's pass got wrong (the stopping check's hints, unless kept).

    `segments` are the (first row, end row, training-set size n) of rows sharing n, and
    perms[j] the data orders of segment j's members, (rows, n).

    The rows are cut evenly into blocks of at most `group_size`, and a block runs its whole
    epoch, minibatch step after step, before the next (so its weights stay in cache; blocks
    are independent, so they may run in parallel threads, `pool`: the blocks, and so the
    numbers, do not depend on the thread count). With a rule that takes one gradient a step
    (SGD, momentum, Adam) a block may span segments: at each step its members whose minibatches
    have one size share one gradient pass, and each is then updated at its own step number.
    (An attack sweep's segments hold a few members each, 5 seeds per attack size: spanning
    them, a block pays the per-call overhead of the small MNIST network's steps once for 20-odd
    members instead of for 5.) SAM's and Entropy-SGD's later gradients depend on the first, so
    their blocks stay within a segment. A member's minibatches, shapes and updates are its own
    in any block (a batched matmul computes each matrix alone); only the rounding of vectorized
    elementwise tails depends on the block, as it depended on the group size before.
    """
    rows_total = segments[-1][1]
    device = perms[0].device
    rule = optimizer.rule
    steps = [-(-n // batch_size) for _, _, n in segments]
    total = torch.zeros(rows_total, dtype=torch.float64, device=device)
    missed = torch.zeros(rows_total, 0 if keep_history else len(x), dtype=torch.bool,
                         device=device)

    Piece = tuple[int, int, int]
    Prepared = tuple[slice, list[torch.Tensor], Params]

    def prepare(run: list[Piece]) -> Prepared:
        # what a run's steps share: its rows, their data orders and weights (views)
        rows = slice(run[0][0], run[-1][1])
        orders = [perms[j][a - segments[j][0] : b - segments[j][0]] for a, b, j in run]
        return rows, orders, {k: v[rows] for k, v in params.items()}

    def minibatch_step(step: int, run: list[Piece], prepared: Prepared, scratch: Params) -> None:
        # step `step` of the rows of `run`: pieces (first row, end row, segment) of contiguous
        # rows whose step-`step` minibatches have one size
        rows, orders, group = prepared
        start = step * batch_size
        idx = (orders[0][:, start : start + batch_size] if len(orders) == 1 else
               torch.cat([order[:, start : start + batch_size] for order in orders]))
        xb = gather_minibatches(x, idx, scratch)
        yb = y.index_select(0, idx.reshape(-1)).view(idx.shape)
        numbers = [epochs_done * steps[j] + step + 1 for _, _, j in run]  # 1-based, all epochs
        if len(run) == 1:  # one segment: any rule, which may take several gradients a step

            def grad_fn(need_loss: bool) -> tuple[tuple[torch.Tensor | None, torch.Tensor],
                                                  Params]:
                with torch.no_grad():
                    loss, z, grads = runner.loss_and_grads(group, buffers, xb, yb,
                                                           need_loss=need_loss and keep_history)
                return (loss, z), grads

            # the loss and outputs at the step's starting weights, as train_to_fit reports them
            loss, z = optimizer.step(group, grad_fn, rows, numbers[0])
        else:  # segments together: one gradient pass, each member's own update
            assert isinstance(rule, TorchUpdate)
            with torch.no_grad():
                loss, z, grads = runner.loss_and_grads(group, buffers, xb, yb,
                                                       need_loss=keep_history)
            r0, first = rows.start, 0
            for end in range(1, len(run) + 1):  # pieces with the same update in one call
                if end == len(run) or not rule.same_update(numbers[first], numbers[end]):
                    piece = slice(run[first][0] - r0, run[end - 1][1] - r0)
                    optimizer.apply({k: v[piece] for k, v in group.items()},
                                    {k: v[piece] for k, v in grads.items()},
                                    slice(run[first][0], run[end - 1][1]), numbers[first])
                    first = end
        if loss is not None:
            total[rows] += loss.detach().double() * idx.shape[1]
        if not keep_history:
            missed[rows].scatter_(1, idx, stacked_labels(z.detach(), yb) != yb)

    sizes = [n for _, _, n in segments]

    def run_block(pieces: list[Piece]) -> None:
        scratch: Params = {}
        prepared: dict[tuple[Piece, ...], Prepared] = {}  # runs change only at segment ends
        for step in range(max(steps[j] for _, _, j in pieces)):
            for run in _step_runs(pieces, steps, step, batch_size, sizes):
                key = tuple(run)
                if key not in prepared:
                    prepared[key] = prepare(run)
                minibatch_step(step, run, prepared[key], scratch)

    if isinstance(rule, TorchUpdate):
        # all rows, cut evenly; never by the thread count, which would change the rounding
        cut, group_size = [(0, rows_total)], -(-rows_total // -(-rows_total // group_size))
    else:
        cut = [(s0, s1) for s0, s1, _ in segments]
    blocks = [_pieces(r0, min(r0 + group_size, c1), segments)
              for c0, c1 in cut for r0 in range(c0, c1, group_size)]
    if pool is None:
        for pieces in blocks:
            run_block(pieces)
    else:
        for future in [pool.submit(run_block, pieces) for pieces in blocks]:
            future.result()
    optimizer.flush_subnormal()  # once an epoch, as train_to_fit
    return total, missed


def _pieces(r0: int, r1: int, segments: list[tuple[int, int, int]]
            ) -> list[tuple[int, int, int]]:
    """Rows r0..r1 as (first row, end row, segment) pieces, one per segment they meet."""
    return [(max(r0, s0), min(r1, s1), j) for j, (s0, s1, _) in enumerate(segments)
            if s0 < r1 and r0 < s1]


def _step_runs(pieces: list[tuple[int, int, int]], steps: list[int], step: int,
               batch_size: int, sizes: list[int]) -> list[list[tuple[int, int, int]]]:
    """The pieces that take minibatch step `step`, as runs of contiguous pieces whose
    minibatches have one size (a segment's last, shorter minibatch splits it off)."""
    runs: list[list[tuple[int, int, int]]] = []
    size = -1
    for piece in pieces:
        j = piece[2]
        if step >= steps[j]:
            continue
        b = min(batch_size, sizes[j] - step * batch_size)
        if runs and b == size and runs[-1][-1][1] == piece[0]:
            runs[-1].append(piece)
        else:
            runs.append([piece])
        size = b
    return runs


def fitting_members(runner: StackedEngine, params: Params, buffers: Params, x: torch.Tensor,
          y: torch.Tensor, missed: torch.Tensor, n_rule: np.ndarray) -> np.ndarray:
    """Exactly which members (rows) classify all of their x[:n_rule[row]] correctly (the
    stopping rule's points: StoppingRule.watched_points), evaluating little.

    A member that still misclassifies one of the points its training pass got wrong is
    certainly not fit; only the others are evaluated on all their n_rule points.
    """
    rows_total = missed.shape[0]
    most = int(n_rule.max())
    own = torch.from_numpy(n_rule).to(missed.device)
    candidates = torch.ones(rows_total, dtype=torch.bool, device=missed.device)
    suspects_any = missed[:, :most].any(1)  # a member never misses a point beyond its own
    if most and bool(suspects_any.any()):
        rows = torch.nonzero(suspects_any).squeeze(1)
        m = min(SUSPECTS, most)
        idx = missed[rows, :most].to(torch.uint8).topk(m, dim=1).indices  # suspects first
        xs = x.index_select(0, idx.reshape(-1)).view(*idx.shape, *x.shape[1:])
        z = runner.logits_per_member(member_rows(params, rows, rows_total), buffers, xs)
        # topk pads with non-suspects, which may lie beyond a member's own points: not counted
        right = (stacked_labels(z, y) == y[idx]) | (idx >= own[rows].unsqueeze(1))
        candidates[rows] = right.all(1)
    fit = torch.zeros(rows_total, dtype=torch.bool, device=missed.device)
    rows = torch.nonzero(candidates).squeeze(1)
    if len(rows):
        z = runner.logits(member_rows(params, rows, rows_total), buffers, x[:most])
        sizes = n_rule[rows.cpu().numpy()]
        fit[rows] = torch.from_numpy(correct_prefix(z, y[:most], sizes) == sizes).to(fit.device)
    return fit.cpu().numpy()


def member_rows(params: Params, rows: torch.Tensor, rows_total: int) -> Params:
    """The members `rows` of stacked params (no copy when that is all of them)."""
    if len(rows) == rows_total:
        return params
    return {k: v.index_select(0, rows) for k, v in params.items()}


@torch.no_grad()
def stop_members(runner: StackedEngine, ids: np.ndarray, final: Params, initial: Params,
                  restored: Params, buffers: Params, task: TaskData, attacks: np.ndarray,
                  accuracies: np.ndarray, device: torch.device, dtype: torch.dtype) -> None:
    """Members `ids` stopped (their training-layout weights are in `final`): write their
    full-layout weights into `restored` and, as train_to_fit does at its end, their accuracies
    on S, A (their own prefix) and E into `accuracies`."""
    idx = torch.from_numpy(ids).to(device)
    params = {k: runner.restore(k, final[k].index_select(0, idx), initial[k].index_select(0, idx))
              for k in final}
    rows = {k: v.index_select(0, idx) for k, v in buffers.items()}
    for k, v in params.items():
        restored[k].index_copy_(0, idx, v)
    for row, split in ((0, task.S), (2, task.E)):
        if len(split):
            logits = runner.logits(params, rows, split.x.to(device, dtype))
            accuracies[row, ids] = (correct_count(logits, as_labels(split.y, device, dtype))
                                    .cpu().numpy() / len(split))
    sizes = attacks[ids]
    n_A = int(sizes.max())
    x_A, y_A = task.A.x[:n_A].to(device, dtype), as_labels(task.A.y[:n_A], device, dtype)
    accuracies[1, ids] = fraction(correct_prefix(runner.logits(params, rows, x_A), y_A, sizes),
                                   sizes)


def record_epoch(histories: list[list[dict]], members: np.ndarray, epoch: int,
            was_fitting: np.ndarray, fitted_at: np.ndarray, losses: list[float],
            acc_S: np.ndarray, acc_A: np.ndarray) -> None:
    """Append one epoch to each member's history, as train_to_fit records its EpochInfo."""
    for row, member in enumerate(members.tolist()):
        fa = int(fitted_at[member])
        histories[member].append(asdict(EpochInfo(
            epoch=epoch, phase="fit" if was_fitting[row] else "post", loss=losses[row],
            train_acc_S=float(acc_S[row]), train_acc_A=float(acc_A[row]),
            fitted_at=fa if fa >= 0 else None)))
