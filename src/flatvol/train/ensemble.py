"""Train K networks of one architecture at once, each exactly as `train_to_fit` trains it alone.

Member k is `build_model(spec, shape, prior, seed=seeds[k])` and sees the data in the order
`train_to_fit(..., seed=seeds[k])` would. Members may train on different attack sets: member k
sees S plus the first `attack_sizes[k]` points of A (an attack sweep's attack sets are prefixes
of one pool, so one task holds them all), exactly the task `load_task` gives for that size.
Per-member gradients come from an engine of flatvol.train.stacked ('fcn': batched matmuls
with a hand-written backward pass, the fast path for `FCN` models on CPU; 'vmap': any module
without BatchNorm), the update rule is train_to_fit's, for every optimizer of the registry
(flatvol.train.update_rules, stepped by `StackedOptimizer`), and the stopping
rule and data order are train_to_fit's (flatvol.train.protocol). A member that stops has its
weights copied out and is dropped from the stacks, so it neither changes nor costs anything
while the others train.

Members are processed in blocks of `group_size` (default: as many as fit a cache budget): a
block runs a whole epoch, minibatch step after step, before the next block starts, so its
weights stay in cache; the ensemble size only bounds memory. With SGD, momentum or Adam a block
holds members of several attack sizes (their minibatches of one size share a gradient pass,
each then updated at its own step number); SAM's and Entropy-SGD's blocks hold one attack size
(flatvol.train.ensemble_epoch.run_epoch). With `workers` > 1 (FCN engine, CPU), blocks train
in parallel threads, one thread per op: bit-identical results for any number of workers.

With a `checkpoint` file (flatvol.train.ensemble_checkpoint), the training's whole state is
saved every few minutes at an epoch boundary, and a killed training resumes from it, ending
bit for bit as it would have without the kill.

Without `keep_history`, the per-epoch stopping check is exact but cheaper: a member whose
training pass misclassified a point is first re-checked on (at most 16 of) those points, and
only members with none of them still wrong are evaluated on the whole of S (and A).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import stack_module_state

from flatvol.data.task import TaskData
from flatvol.errors import SpecError
from flatvol.models import Prior, build_model
from flatvol.train.ensemble_checkpoint import (
    EnsembleCheckpoint,
    EnsembleProgress,
    ensemble_fingerprint,
)
from flatvol.train.ensemble_epoch import (
    as_labels,
    correct_count,
    correct_prefix,
    fitting_members,
    fraction,
    record_epoch,
    run_epoch,
    stop_members,
)
from flatvol.train.ensemble_result import (
    EnsembleEpochInfo,
    EnsembleResult,
    StoppedMember,
    member_model,
    member_result,
)
from flatvol.train.loop import TrainConfig, check_task_outputs
from flatvol.train.protocol import data_order_generator, epoch_order
from flatvol.train.stacked import (
    ENSEMBLE_OPTIMIZERS,
    EngineName,
    StackedOptimizer,
    pick_engine,
    stacked_rule,
)

# Default block size on CPU (run_epoch): as many members as keep their weights within this many
# bytes, so a block's weights stay in cache from one minibatch step to the next (on another
# device, one block of all members). Measured (one thread,
# bench/RESULTS.md, issue #29): 16-32 members of MNIST's 784-40-40-1 (100 KB each), 5 of
# CIFAR's 3072-40-40-1 (500 KB) train fastest; 2.5 MB gives 26 and 5.
CACHE_BUDGET = 5 << 19

__all__ = ["ENSEMBLE_OPTIMIZERS", "EnsembleEpochInfo", "EnsembleResult", "StoppedMember",
           "train_ensemble", "train_models_together"]


def _check_attack_sizes(attack_sizes: Sequence[int] | None, k_total: int, n_A: int
                        ) -> np.ndarray:
    """Each member's attack-set size (default: all of A), checked against A."""
    if attack_sizes is None:
        return np.full(k_total, n_A, dtype=np.int64)
    sizes = np.array([int(a) for a in attack_sizes], dtype=np.int64)
    if len(sizes) != k_total:
        raise SpecError(f"ensemble needs one attack size per model: {k_total} models, "
                        f"{len(sizes)} attack sizes")
    if len(sizes) and (sizes.min() < 0 or sizes.max() > n_A):
        raise SpecError(f"ensemble attack sizes must lie in 0..{n_A} (the task's |A|), got "
                        f"{sizes.min()}..{sizes.max()}")
    return sizes


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
    group_size: int | None = None,
    workers: int | None = None,
    attack_sizes: Sequence[int] | None = None,
    on_stopped: Callable[[StoppedMember], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every_s: float | None = None,
) -> EnsembleResult:
    """Train `models` (one architecture) together; member k's data order comes from `seeds[k]`.

    Member k trains on S plus the first `attack_sizes[k]` points of `task.A` (default: all of
    A); call that task T_k (what `load_task` gives for that attack size). It ends where
    `train_to_fit(models[k], T_k, config, seed=seeds[k])` would, up to
    floating-point rounding: same stopping epoch, same weights to ~1e-5. `models` are not
    modified; get trained copies from `EnsembleResult.model(k)`. Without `keep_history` the
    per-epoch history is not recorded (which lets the stopping check skip most of S).
    `workers` groups train at once in threads (FCN engine; default: torch's thread count on
    CPU, with one thread per op meanwhile; 1 on other devices). The results do not depend on
    `workers` nor on `group_size` (bit for bit: a batched matmul computes each member's matrix
    alone).

    Args:
        models: The members, all of one architecture (not modified).
        task: The TaskData (S, A and E) to train on.
        config: Training settings (default: TrainConfig()).
        seeds: Per member, the seed of its data order (default: 0, 1, ...).
        device: Device to train on.
        callback: Called with an EnsembleEpochInfo after each epoch.
        keep_history: Whether to record the per-epoch history.
        engine: Stacked-training engine: 'auto', 'fcn' or 'vmap'.
        group_size: Members trained together in one block (run_epoch; default on CPU: as many
            as keep their weights within CACHE_BUDGET bytes, at least 1; elsewhere: all).
        workers: Groups trained at once in threads (default: torch's thread count on CPU, 1
            otherwise).
        attack_sizes: Per member, how many points of A it trains on (default: all of A for each).
        on_stopped: Called with each member as soon as it stops (its final model and outcome,
            equal to EnsembleResult.model(k) and .result(k)), while the others train on: a
            sweep measures it meanwhile.
        checkpoint: File that keeps the training's progress (flatvol.train.ensemble_checkpoint):
            saved every `checkpoint_every_s` seconds and when all members have stopped; if it
            holds this very training's progress, training resumes from it (members that had
            stopped are passed to `on_stopped` again first) and ends bit for bit as without
            the interruption. None: no checkpoint.
        checkpoint_every_s: Seconds between saves (default: ensemble_checkpoint's).

    Returns:
        The EnsembleResult: per-member outcomes and the final weights, stacked along dim 0.

    Raises:
        SpecError: If the models, the seeds, the attack sizes or a size argument is invalid,
            or the models' output count does not fit the task (one logit for two classes,
            K outputs for K classes).
    """
    started = time.perf_counter()
    config = config or TrainConfig()
    seeds = _check_members(models, seeds)
    attacks = _check_attack_sizes(attack_sizes, len(models), len(task.A))
    if group_size is not None and group_size < 1:
        raise SpecError(f"group_size must be >= 1, got {group_size}")
    device = torch.device(device)
    template = copy.deepcopy(models[0]).cpu().eval()
    check_task_outputs(template, task)
    runner = pick_engine(template, engine)
    with torch.no_grad():
        stacked, stacked_buffers = stack_module_state(list(models))
        initial = {k: v.detach().to(device).clone() for k, v in stacked.items()}
        buffers = {k: v.detach().to(device).clone() for k, v in stacked_buffers.items()}
    dtype = next(iter(initial.values())).dtype

    # Training on the prefix S u A[:max attack]: every member's points are a prefix of it.
    n_S = len(task.S)
    n_A = int(attacks.max())
    x_all, y_all = task.train_inputs(include_attack=True)
    x_train = x_all[: n_S + n_A].to(device, dtype)
    y_train = as_labels(y_all[: n_S + n_A], device, dtype)
    rule = config.stopping_rule()
    # Rows of the stacks hold members sorted by training-set size (stable), so the members of
    # one group share their number of minibatches; `active` maps rows to member ids.
    order = np.argsort(attacks, kind="stable")
    order_t = torch.from_numpy(order).to(device)
    # weights with zero gradient stay where they are, unless weight decay or the rule moves them
    frozen = config.weight_decay == 0 and not stacked_rule(
        config.optimizer, config.optimizer_settings()).moves_without_gradient
    params, x_run = runner.prepare({k: v.index_select(0, order_t) for k, v in initial.items()},
                                   x_train, frozen_zero_inputs=frozen)
    optimizer = StackedOptimizer(config.optimizer, config.optimizer_settings(), params)
    if group_size is None and device.type == "cpu":
        member_bytes = sum(v[0].numel() * v.element_size() for v in params.values())
        group_size = max(1, CACHE_BUDGET // member_bytes)
    elif group_size is None:  # an accelerator: the larger the batched matmuls, the fuller it is
        group_size = len(models)

    k_total = len(models)
    final = {k: torch.empty_like(v) for k, v in params.items()}  # training layout, by member
    restored = {k: v.clone() for k, v in initial.items()}  # the final weights, by member
    accuracies = np.full((3, k_total), math.nan)  # on S, A, E, measured as each member stops
    epochs = np.zeros(k_total, dtype=np.int64)
    fitted_at = np.full(k_total, -1, dtype=np.int64)
    histories: list[list[dict]] | None = [[] for _ in range(k_total)] if keep_history else None
    active = order  # member ids of the rows of `params`
    generators = [data_order_generator(s) for s in seeds]
    seconds_before = 0.0  # training time before a resume
    epoch = 0
    store = None if checkpoint is None else EnsembleCheckpoint(
        checkpoint, ensemble_fingerprint(initial, x_train, y_train, seeds=seeds,
                                         attack_sizes=attacks.tolist(), config=config,
                                         engine=runner.name, group_size=group_size,
                                         keep_history=keep_history), checkpoint_every_s)
    saved = store.load(device) if store is not None else None
    if saved is not None:  # where the interrupted training was, to the bit
        epoch, active, seconds_before = saved.epoch, saved.active, saved.seconds
        params, final, restored = saved.params, saved.final, saved.restored
        optimizer.state = saved.optimizer_state
        accuracies, epochs, fitted_at = saved.accuracies, saved.epochs, saved.fitted_at
        histories = saved.histories
        for generator, state in zip(generators, saved.generator_states):
            generator.set_state(state)
        runner.flops = saved.flops

    def seconds() -> float:
        return seconds_before + time.perf_counter() - started

    def progress_now() -> EnsembleProgress:
        return EnsembleProgress(epoch, active, params, optimizer.state, final, restored,
                                accuracies, epochs, fitted_at, histories,
                                [g.get_state() for g in generators], runner.flops, seconds())

    def stopped_member(member: int) -> StoppedMember:
        fa = int(fitted_at[member])
        return StoppedMember(member, member_result(
            "fitted" if fa >= 0 else "did_not_fit", int(epochs[member]),
            fa if fa >= 0 else None, tuple(accuracies[:, member]),
            histories[member] if histories is not None else []),
            member_model(template, restored, buffers, member), runner.name, seconds())

    if on_stopped is not None and saved is not None:  # stopped before the interruption
        for member in np.setdiff1d(np.arange(k_total), active).tolist():
            on_stopped(stopped_member(member))
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
        while len(active):
            a_rows = attacks[active]  # each row's attack-set size
            segments = [(r0, r1, n_S + int(a_rows[r0])) for r0, r1 in _equal_runs(a_rows)]
            perms = [torch.stack([epoch_order(n, generators[i], config.order)
                                  for i in active[r0:r1].tolist()]).to(device)
                     for r0, r1, n in segments]
            total, missed = run_epoch(runner, optimizer, params, buffers, x_run, y_train,
                                       segments, perms, epoch, config.batch_size, group_size,
                                       keep_history, pool)
            epoch += 1
            with torch.no_grad():
                if keep_history:  # full accuracies, as train_to_fit records them
                    correct_S = correct_count(runner.logits(params, buffers, x_run[:n_S]),
                                         y_train[:n_S]).cpu().numpy()
                    correct_A = correct_prefix(runner.logits(params, buffers, x_run[n_S:]),
                                                y_train[n_S:], a_rows)
                    fit_now = rule.fitted(correct_S == n_S, correct_A == a_rows)
                else:
                    fit_now = fitting_members(runner, params, buffers, x_run, y_train, missed,
                                    np.array([rule.watched_points(n_S, int(a)) for a in a_rows]))
            was_fitting = fitted_at[active] < 0
            fitted_at[active[was_fitting & fit_now]] = epoch
            if histories is not None:
                record_epoch(histories, active, epoch, was_fitting, fitted_at,
                        (total.cpu().numpy() / (n_S + a_rows)).tolist(),
                        correct_S / max(n_S, 1) if n_S else np.full(len(active), math.nan),
                        fraction(correct_A, a_rows))
            done = rule.done(epoch, fitted_at[active])
            stopped = tuple(int(m) for m in active[done])
            if done.any():  # copy finished members out and drop them from the stacks
                stay = torch.from_numpy(np.flatnonzero(~done)).to(device)
                leave = torch.from_numpy(np.flatnonzero(done)).to(device)
                for k, v in params.items():
                    final[k].index_copy_(0, torch.from_numpy(active[done]).to(device),
                                         v.index_select(0, leave))
                epochs[active[done]] = epoch
                ids = active[done]
                stop_members(runner, ids, final, initial, restored, buffers, task, attacks,
                             accuracies, device, dtype)
                params = {k: v.index_select(0, stay) for k, v in params.items()}
                optimizer.keep(stay)
                active = active[~done]
                if on_stopped is not None:
                    for member in ids.tolist():
                        on_stopped(stopped_member(member))
            if callback is not None:
                callback(EnsembleEpochInfo(epoch=epoch, active=len(active),
                                           fitted=int((fitted_at >= 0).sum()),
                                           finished=k_total - len(active), total=k_total,
                                           stopped=stopped))
            if store is not None and (store.due() or not len(active)):
                store.save(progress_now())
    finally:
        if pool is not None:
            pool.shutdown()
            torch.set_num_threads(intra_op_threads)

    return EnsembleResult(
        seeds=seeds,
        attack_sizes=attacks.tolist(),
        status=["fitted" if f >= 0 else "did_not_fit" for f in fitted_at],
        epochs=epochs,
        fitted_at=[int(f) if f >= 0 else None for f in fitted_at],
        train_acc_S=accuracies[0],
        train_acc_A=accuracies[1],
        test_acc_E=accuracies[2],
        params=restored,
        buffers=buffers,
        histories=histories,
        engine=runner.name,
        flops=runner.flops,
        _template=template,
        _runner=runner,
    )


def _equal_runs(values: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of equal consecutive values."""
    cuts = [0, *(np.flatnonzero(np.diff(values)) + 1).tolist(), len(values)]
    return list(zip(cuts[:-1], cuts[1:]))


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
    group_size: int | None = None,
    workers: int | None = None,
    attack_sizes: Sequence[int] | None = None,
    on_stopped: Callable[[StoppedMember], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every_s: float | None = None,
) -> EnsembleResult:
    """Build `build_model(model_spec, task.input_shape, prior, seed=s, outputs=task.outputs)`
    for each seed s (one logit for a binary task, K outputs for K classes) and
    train them together; member k equals `train_to_fit(that model, T_k, config, seed=s)`,
    T_k being `task` with A cut to its first `attack_sizes[k]` points (default: all of A).
    Members are (seed, attack size) pairs: a seed may repeat with different attack sizes.

    Args:
        model_spec: Model spec passed to build_model.
        task: The TaskData (S, A and E) to train on.
        config: Training settings (default: TrainConfig()).
        seeds: One seed per member (model initialization and data order).
        prior: Prior the members are drawn from (default: Prior()).
        device: Device to train on.
        callback: Called with an EnsembleEpochInfo after each epoch.
        keep_history: Whether to record the per-epoch history.
        engine: Stacked-training engine: 'auto', 'fcn' or 'vmap'.
        group_size: Members trained together in one block (default: by CACHE_BUDGET).
        workers: Groups trained at once in threads (default: torch's thread count on CPU, 1
            otherwise).
        attack_sizes: Per member, how many points of A it trains on (default: all of A for each).
        on_stopped: Called with each member as soon as it stops (train_models_together).
        checkpoint: File that keeps the training's progress, to resume a killed training
            (train_models_together).
        checkpoint_every_s: Seconds between saves of the checkpoint.

    Returns:
        The EnsembleResult: per-member outcomes and the final weights, stacked along dim 0.

    Raises:
        SpecError: If the model spec, the seeds, the attack sizes or a size argument is invalid.
    """
    seeds = [int(s) for s in seeds]
    pairs = list(zip(seeds, attack_sizes if attack_sizes is not None else [None] * len(seeds)))
    if len(set(pairs)) != len(pairs):
        raise SpecError("ensemble members must be distinct (seed, attack size) pairs")
    models = [build_model(model_spec, task.input_shape, prior, seed=s, outputs=task.outputs)
              for s in seeds]
    return train_models_together(models, task, config, seeds, device=device, callback=callback,
                                 keep_history=keep_history, engine=engine, group_size=group_size,
                                 workers=workers, attack_sizes=attack_sizes,
                                 on_stopped=on_stopped, checkpoint=checkpoint,
                                 checkpoint_every_s=checkpoint_every_s)
