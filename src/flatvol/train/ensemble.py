"""Train K networks of one architecture at once, each exactly as `train_to_fit` trains it alone.

Member k is `build_model(spec, shape, prior, seed=seeds[k])` and sees the data in the order
`train_to_fit(..., seed=seeds[k])` would; per-member gradients come from an engine of
flatvol.train.stacked ('fcn': batched matmuls with a hand-written backward pass, the fast path
for `FCN` models on CPU; 'vmap': any module without BatchNorm), the update is torch.optim's own
(`StackedOptimizer`), and the stopping rule and data order are train_to_fit's
(flatvol.train.protocol). A member that stops has its weights copied out and is dropped from
the stacks, so it neither changes nor costs anything while the others train.

Members are processed in groups of `group_size`: a group runs a whole epoch, minibatch after
minibatch, before the next group starts, so its weights stay in cache; the ensemble size only
bounds memory. With `workers` > 1 (FCN engine, CPU), groups train in parallel threads, one
thread per op: bit-identical results for any number of workers.

Without `keep_history`, the per-epoch stopping check is exact but cheaper: a member whose
training pass misclassified a point is first re-checked on (at most 16 of) those points, and
only members with none of them still wrong are evaluated on the whole of S (and A).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import stack_module_state

from flatvol.data.task import TaskData
from flatvol.errors import SpecError
from flatvol.models import Prior, build_model
from flatvol.train.loop import EpochInfo, TrainConfig, TrainResult
from flatvol.train.protocol import data_order_generator
from flatvol.train.stacked import (
    ENSEMBLE_OPTIMIZERS,
    EngineName,
    Params,
    StackedEngine,
    StackedOptimizer,
    gather_minibatches,
    pick_engine,
)

__all__ = ["ENSEMBLE_OPTIMIZERS", "EnsembleEpochInfo", "EnsembleResult", "train_ensemble",
           "train_models_together"]

SUSPECTS = 16  # points re-checked per member before a full evaluation of S


@dataclass(frozen=True)
class EnsembleEpochInfo:
    """Passed to the ensemble callback after every epoch."""

    epoch: int
    active: int  # members still training after this epoch
    fitted: int  # members whose stopping rule has been met so far
    finished: int  # members that have stopped (fitted or out of epochs)
    total: int


@dataclass
class EnsembleResult:
    """Per-member outcomes (as in TrainResult) and the final weights, stacked along dim 0."""

    seeds: list[int]
    status: list[str]
    epochs: np.ndarray
    fitted_at: list[int | None]
    train_acc_S: np.ndarray
    train_acc_A: np.ndarray
    test_acc_E: np.ndarray
    params: Params
    buffers: Params
    histories: list[list[dict]] | None
    engine: str
    flops: float  # matmul FLOPs performed in training and evaluation (FCN engine; else nan)
    _template: nn.Module = field(repr=False)
    _runner: StackedEngine = field(repr=False)

    def __len__(self) -> int:
        return len(self.seeds)

    def result(self, i: int) -> TrainResult:
        """Member i's outcome in the form train_to_fit returns it."""
        return TrainResult(
            status=self.status[i],  # type: ignore[arg-type]
            epochs=int(self.epochs[i]),
            fitted_at=self.fitted_at[i],
            train_acc_S=float(self.train_acc_S[i]),
            train_acc_A=float(self.train_acc_A[i]),
            test_acc_E=float(self.test_acc_E[i]),
            history=list(self.histories[i]) if self.histories is not None else [],
        )

    @property
    def results(self) -> list[TrainResult]:
        return [self.result(i) for i in range(len(self))]

    def model(self, i: int) -> nn.Module:
        """Member i as a standalone nn.Module (a copy; same class, spec and prior as built)."""
        module = copy.deepcopy(self._template)
        state = {k: v[i] for k, v in self.params.items()}
        state.update({k: v[i] for k, v in self.buffers.items()})
        module.load_state_dict(state)
        return module.to(next(iter(self.params.values())).device).eval()

    def models(self) -> list[nn.Module]:
        return [self.model(i) for i in range(len(self))]

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits on x: shape (K, n)."""
        device = next(iter(self.params.values())).device
        return self._runner.logits(self.params, self.buffers, x.to(device))

    @torch.no_grad()
    def predict_labels(self, x: torch.Tensor) -> torch.Tensor:
        """The function each member expresses on x: labels in {0,1}, shape (K, n), on CPU."""
        return (self.logits(x) > 0).float().cpu()


# ----------------------------------------------------------------------------- training


def _correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-member count of points classified as labelled (logit > 0 <=> label 1)."""
    return ((logits > 0).to(y.dtype) == y).sum(-1)


def _check_members(models: Sequence[nn.Module], seeds: Sequence[int] | None) -> list[int]:
    if len(models) == 0:
        raise SpecError("ensemble needs at least one model, got 0")
    seeds = list(range(len(models))) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != len(models):
        raise SpecError(
            f"ensemble needs one seed per model: {len(models)} models, {len(seeds)} seeds"
        )
    first = [(n, tuple(p.shape)) for n, p in models[0].named_parameters()]
    for m in models[1:]:
        if type(m) is not type(models[0]) or [(n, tuple(p.shape))
                                              for n, p in m.named_parameters()] != first:
            raise SpecError("ensemble members must share one architecture "
                            "(same class and parameter shapes)")
    return seeds


def train_models_together(
    models: Sequence[nn.Module],
    task: TaskData,
    config: TrainConfig | None = None,
    seeds: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    callback: Callable[[EnsembleEpochInfo], None] | None = None,
    keep_history: bool = True,
    engine: EngineName = "auto",
    group_size: int = 16,
    workers: int | None = None,
) -> EnsembleResult:
    """Train `models` (one architecture) together; member k's data order comes from `seeds[k]`.

    Member k ends where `train_to_fit(models[k], task, config, seed=seeds[k])` would, up to
    floating-point rounding: same stopping epoch, same weights to ~1e-5. `models` are not
    modified; get trained copies from `EnsembleResult.model(k)`. Without `keep_history` the
    per-epoch history is not recorded (which lets the stopping check skip most of S).
    `workers` groups train at once in threads (FCN engine; default: torch's thread count on
    CPU, with one thread per op meanwhile; 1 on other devices). The results do not depend on
    `workers` (bit for bit); `group_size` changes them only at the rounding level.
    """
    config = config or TrainConfig()
    seeds = _check_members(models, seeds)
    if group_size < 1:
        raise SpecError(f"group_size must be >= 1, got {group_size}")
    device = torch.device(device)
    template = copy.deepcopy(models[0]).cpu().eval()
    runner = pick_engine(template, engine)
    with torch.no_grad():
        stacked, stacked_buffers = stack_module_state(list(models))
        initial = {k: v.detach().to(device).clone() for k, v in stacked.items()}
        buffers = {k: v.detach().to(device).clone() for k, v in stacked_buffers.items()}
    dtype = next(iter(initial.values())).dtype

    x_train, y_train = (t.to(device, dtype) for t in task.train_inputs(include_attack=True))
    n, n_S, n_A = len(y_train), len(task.S), len(task.A)
    rule = config.stopping_rule()
    params, x_run = runner.prepare(initial, x_train, frozen_zero_inputs=config.weight_decay == 0)
    optimizer = StackedOptimizer(config.optimizer, config.optimizer_settings(), params)

    k_total = len(models)
    final = {k: torch.empty_like(v) for k, v in params.items()}
    epochs = np.zeros(k_total, dtype=np.int64)
    fitted_at = np.full(k_total, -1, dtype=np.int64)
    histories: list[list[dict]] | None = [[] for _ in range(k_total)] if keep_history else None
    active = np.arange(k_total)  # member ids of the rows of `params`
    generators = [data_order_generator(s) for s in seeds]
    if workers is not None and workers < 1:
        raise SpecError(f"workers must be >= 1, got {workers}")
    if workers is None:
        workers = torch.get_num_threads() if device.type == "cpu" else 1
    if runner.name != "fcn":  # functional_call swaps a shared module's tensors: one thread
        workers = 1
    workers = min(workers, -(-k_total // group_size))
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    intra_op_threads = torch.get_num_threads()
    if pool is not None:  # groups are the parallelism: one thread per op, no oversubscription
        torch.set_num_threads(1)
    try:
        epoch = 0
        while len(active):
            perms = torch.stack([torch.randperm(n, generator=generators[i])
                                 for i in active.tolist()]).to(device)
            total, missed = _run_epoch(runner, optimizer, params, buffers, x_run, y_train, perms,
                                       epoch, config.batch_size, group_size, keep_history, pool)
            epoch += 1
            with torch.no_grad():
                if keep_history:  # full accuracies, as train_to_fit records them
                    correct_S = _correct(runner.logits(params, buffers, x_run[:n_S]),
                                         y_train[:n_S]).cpu().numpy()
                    correct_A = _correct(runner.logits(params, buffers, x_run[n_S:]),
                                         y_train[n_S:]).cpu().numpy()
                    fit_now = rule.fitted(correct_S == n_S, correct_A == n_A)
                else:
                    fit_now = _fits(runner, params, buffers, x_run, y_train, missed,
                                    rule.watched_points(n_S, n_A))
            was_fitting = fitted_at[active] < 0
            fitted_at[active[was_fitting & fit_now]] = epoch
            if histories is not None:
                _record(histories, active, epoch, was_fitting, fitted_at, (total / n).tolist(),
                        correct_S / max(n_S, 1) if n_S else np.full(len(active), math.nan),
                        correct_A / max(n_A, 1) if n_A else np.full(len(active), math.nan))
            done = rule.done(epoch, fitted_at[active])
            if done.any():  # copy finished members out and drop them from the stacks
                stay = torch.from_numpy(np.flatnonzero(~done)).to(device)
                leave = torch.from_numpy(np.flatnonzero(done)).to(device)
                for k, v in params.items():
                    final[k].index_copy_(0, torch.from_numpy(active[done]).to(device),
                                         v.index_select(0, leave))
                epochs[active[done]] = epoch
                params = {k: v.index_select(0, stay) for k, v in params.items()}
                optimizer.keep(stay)
                active = active[~done]
            if callback is not None:
                callback(EnsembleEpochInfo(epoch=epoch, active=len(active),
                                           fitted=int((fitted_at >= 0).sum()),
                                           finished=k_total - len(active), total=k_total))
    finally:
        if pool is not None:
            pool.shutdown()
            torch.set_num_threads(intra_op_threads)

    final = {k: runner.restore(k, v, initial[k]) for k, v in final.items()}
    with torch.no_grad():  # as train_to_fit does, measure the final model on S, A and E
        accs = []
        for split in (task.S, task.A, task.E):
            if len(split):
                logits = runner.logits(final, buffers, split.x.to(device, dtype))
                accs.append(_correct(logits, split.y.to(device, dtype)).cpu().numpy() / len(split))
            else:
                accs.append(np.full(k_total, math.nan))
    return EnsembleResult(
        seeds=seeds,
        status=["fitted" if f >= 0 else "did_not_fit" for f in fitted_at],
        epochs=epochs,
        fitted_at=[int(f) if f >= 0 else None for f in fitted_at],
        train_acc_S=accs[0],
        train_acc_A=accs[1],
        test_acc_E=accs[2],
        params=final,
        buffers=buffers,
        histories=histories,
        engine=runner.name,
        flops=runner.flops,
        _template=template,
        _runner=runner,
    )


def _record(histories: list[list[dict]], members: np.ndarray, epoch: int,
            was_fitting: np.ndarray, fitted_at: np.ndarray, losses: list[float],
            acc_S: np.ndarray, acc_A: np.ndarray) -> None:
    """Append one epoch to each member's history, as train_to_fit records its EpochInfo."""
    for row, member in enumerate(members.tolist()):
        fa = int(fitted_at[member])
        histories[member].append(asdict(EpochInfo(
            epoch=epoch, phase="fit" if was_fitting[row] else "post", loss=losses[row],
            train_acc_S=float(acc_S[row]), train_acc_A=float(acc_A[row]),
            fitted_at=fa if fa >= 0 else None)))


def _run_epoch(runner: StackedEngine, optimizer: StackedOptimizer, params: Params, buffers: Params,
               x: torch.Tensor, y: torch.Tensor, perms: torch.Tensor, epochs_done: int,
               batch_size: int, group_size: int, keep_history: bool,
               pool: ThreadPoolExecutor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of every member; returns the summed minibatch losses (if kept) and which
    training points each member's pass got wrong (the stopping check's hints, unless kept)."""
    rows_total, n = perms.shape
    total = torch.zeros(rows_total, dtype=torch.float64, device=perms.device)
    missed = torch.zeros(rows_total, 0 if keep_history else n, dtype=torch.bool,
                         device=perms.device)
    steps_per_epoch = -(-n // batch_size)

    def run_group(r0: int) -> None:
        # Group-major: one group runs its whole epoch, so its weights stay in cache from one
        # minibatch to the next; groups are independent, so they may run in parallel.
        rows = slice(r0, r0 + group_size)
        group = {k: v[rows] for k, v in params.items()}
        scratch: Params = {}
        for step, i in enumerate(range(0, n, batch_size)):
            idx = perms[rows, i : i + batch_size]
            xb = gather_minibatches(x, idx, scratch)
            yb = y.index_select(0, idx.reshape(-1)).view(idx.shape)
            with torch.no_grad():
                loss, z, grads = runner.loss_and_grads(group, buffers, xb, yb,
                                                       need_loss=keep_history)
            optimizer.step(group, grads, rows, epochs_done * steps_per_epoch + step + 1)
            if loss is not None:
                total[rows] += loss.detach().double() * idx.shape[1]
            if not keep_history:
                missed[rows].scatter_(1, idx, (z.detach() > 0).to(yb.dtype) != yb)

    starts = range(0, rows_total, group_size)
    if pool is None:
        for r0 in starts:
            run_group(r0)
    else:
        for future in [pool.submit(run_group, r0) for r0 in starts]:
            future.result()
    return total, missed


def _fits(runner: StackedEngine, params: Params, buffers: Params, x: torch.Tensor,
          y: torch.Tensor, missed: torch.Tensor, n_rule: int) -> np.ndarray:
    """Exactly which members classify all of x[:n_rule] correctly (the stopping rule's
    points: StoppingRule.watched_points), evaluating little.

    A member that still misclassifies one of the points its training pass got wrong is
    certainly not fit; only the others are evaluated on all n_rule points.
    """
    rows_total = missed.shape[0]
    candidates = torch.ones(rows_total, dtype=torch.bool, device=missed.device)
    suspects_any = missed[:, :n_rule].any(1)
    if n_rule and bool(suspects_any.any()):
        rows = torch.nonzero(suspects_any).squeeze(1)
        m = min(SUSPECTS, n_rule)
        idx = missed[rows, :n_rule].to(torch.uint8).topk(m, dim=1).indices  # suspects first
        xs = x.index_select(0, idx.reshape(-1)).view(*idx.shape, *x.shape[1:])
        z = runner.logits_per_member(_rows(params, rows, rows_total), buffers, xs)
        candidates[rows] = _correct(z, y[idx]) == m
    fit = torch.zeros(rows_total, dtype=torch.bool, device=missed.device)
    rows = torch.nonzero(candidates).squeeze(1)
    if len(rows):
        z = runner.logits(_rows(params, rows, rows_total), buffers, x[:n_rule])
        fit[rows] = _correct(z, y[:n_rule]) == n_rule
    return fit.cpu().numpy()


def _rows(params: Params, rows: torch.Tensor, rows_total: int) -> Params:
    """The members `rows` of stacked params (no copy when that is all of them)."""
    if len(rows) == rows_total:
        return params
    return {k: v.index_select(0, rows) for k, v in params.items()}


def train_ensemble(
    model_spec: str,
    task: TaskData,
    config: TrainConfig | None = None,
    seeds: Sequence[int] = range(8),
    prior: Prior | None = None,
    device: str | torch.device = "cpu",
    callback: Callable[[EnsembleEpochInfo], None] | None = None,
    keep_history: bool = True,
    engine: EngineName = "auto",
    group_size: int = 16,
    workers: int | None = None,
) -> EnsembleResult:
    """Build `build_model(model_spec, task.input_shape, prior, seed=s)` for each seed s and
    train them together; member k equals `train_to_fit(that model, task, config, seed=s)`."""
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise SpecError("ensemble seeds must be distinct")
    models = [build_model(model_spec, task.input_shape, prior, seed=s) for s in seeds]
    return train_models_together(models, task, config, seeds, device=device, callback=callback,
                                 keep_history=keep_history, engine=engine, group_size=group_size,
                                 workers=workers)
