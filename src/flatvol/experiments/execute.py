"""Executing runs: train and measure one run, or a group of seeds with the ensemble trainer.

    execute_run(run, ctx)      -> RunRecord            (pure: no store access; any backend)
    train_group(members, ctx)  -> [TrainedNetwork] | None (the training stage of a sweep
                                                        planned by stage: the group's ensemble)
    execute_group(runs, ctx)   -> iter of RunRecord    (train.ensemble: all seeds and attack
                                                        sizes of an optimizer train together,
                                                        then each run is measured)

Neither touches the store: a backend ships runs here and hands the records back to the driver.
With `flatvol run --keep-networks` (ctx.networks_dir) each run's network is also written as a
run directory (keep_network), for measuring again later.
Determinism: a run's numbers depend only on the spec and its seed (model init and data order
from the seed, measure seeds from seed and epoch), not on the backend or on which runs were done
before; bitwise equality assumes the same torch build and thread count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import flatvol
from flatvol.data.task import TaskData
from flatvol.errors import FlatvolError, WriteError
from flatvol.experiments.build import spec_prior, train_config
from flatvol.experiments.context import SweepContext
from flatvol.experiments.plan import PlannedRun
from flatvol.experiments.spec import ExperimentSpec, OptimizerSpec
from flatvol.experiments.store import DID_NOT_FIT, RunRecord
from flatvol.measures import MeasureContext, compute_measures
from flatvol.progress import ProgressEvent, ProgressFn

# A run's progress reaches the sweep's display as flatvol.progress.ProgressEvents (the one
# callback signature, ProgressFn): its epochs (key, text, epoch, total epochs), and each stage
# it passes (stage): FITTED (its network trained) or a final measure's name (that measure
# computed).
FITTED = "fitted"

# Errors that are a problem of the run itself (an unfit option, a diverging loss): the run is
# recorded as failed with the reason. Anything else (KeyboardInterrupt, MemoryError) stops it.
RUN_ERRORS = (FlatvolError, RuntimeError, ValueError, ArithmeticError, TypeError, IndexError,
              KeyError)


@dataclasses.dataclass(frozen=True)
class TrainedNetwork:
    """A run's network already trained (by train_group): execute_run only measures it."""

    task: TaskData | None  # None: execute_run loads the run's task (lighter to ship)
    model: torch.nn.Module
    result: Any  # TrainResult, with its per-epoch history
    seconds: float  # this run's share of the group's training time
    ensemble: dict[str, Any]  # size, engine and training time of the group

    def on_cpu(self) -> TrainedNetwork:
        """This network with its model moved (in place) to the CPU: what is shipped to another
        process (a CUDA tensor would cross by CUDA IPC, valid only while the driver keeps it
        alive); execute_run moves the model to the run's device."""
        return dataclasses.replace(self, model=self.model.cpu())


class _Series:
    """A run's per-epoch rows (epoch, phase, metric, value), insertion-ordered, no duplicates.
    Created before training starts, so a failed run keeps the rows it had."""

    def __init__(self) -> None:
        self._values: dict[tuple[int, str, str], float] = {}

    def add(self, epoch: int, phase: str, values: dict[str, float]) -> None:
        for metric, value in values.items():
            self._values[(epoch, phase, metric)] = float(value)

    @property
    def rows(self) -> list[tuple[int, str, str, float]]:
        return [(e, p, m, v) for (e, p, m), v in self._values.items()]


class _Recorder:
    """The per-epoch callback: series rows, during-training measures, alpha events, SWA."""

    def __init__(self, run: PlannedRun, ctx: SweepContext, series: _Series, task: TaskData,
                 measure_ctx: MeasureContext, swa: Any, progress: ProgressFn | None,
                 max_epochs: int, post_epochs: int):
        self.run, self.ctx, self.task, self.mctx = run, ctx, task, measure_ctx
        self.swa, self.progress = swa, progress
        self.max_epochs, self.post_epochs = max_epochs, post_epochs
        self.series = series
        self.alpha_applied: list[dict[str, Any]] = []
        spec = ctx.spec
        self.every = spec.during.every
        self.during = list(spec.during.measures)
        self.phases = set(spec.during.phases)
        self.events = {e.post_epoch: e for e in spec.alpha_events}

    def _measure(self, epoch: int, phase: str, model: torch.nn.Module) -> None:
        self.mctx.epoch = epoch
        self.series.add(epoch, phase, compute_measures(self.during, model, self.task, self.mctx))
        model.eval()

    def __call__(self, info: Any, model: torch.nn.Module) -> None:
        from flatvol.reparam import alpha_scale

        epoch, phase = info.epoch, info.phase
        self.series.add(epoch, phase, {"loss": info.loss, "train_acc_S": info.train_acc_S,
                                       "train_acc_A": info.train_acc_A})
        fit_epoch = info.fitted_at is not None and info.fitted_at == epoch
        if fit_epoch:
            self.series.add(epoch, phase, {"zero_error_epoch": float(epoch)})
        post_index = epoch - info.fitted_at if phase == "post" else None
        event = self.events.get(post_index) if post_index is not None else None
        if self.during and phase in self.phases and (
                (self.every and epoch % self.every == 0) or fit_epoch or event is not None):
            self._measure(epoch, phase, model)
        if event is not None:
            alpha_scale(model, event.alpha, event.layer - 1, inplace=True)
            self.alpha_applied.append({"epoch": epoch, "post_epoch": event.post_epoch,
                                       "layer": event.layer, "alpha": event.alpha})
            self.series.add(epoch, "alpha", {"alpha": event.alpha, "alpha_layer": event.layer})
            if self.during:
                self._measure(epoch, "alpha", model)
        if self.swa is not None:
            self.swa.callback(info, model)
        if self.progress is not None:
            if info.fitted_at is None:
                total, text = self.max_epochs, f"fit  acc_S {info.train_acc_S:.3f}"
            else:
                total = info.fitted_at + self.post_epochs
                text = f"post acc_S {info.train_acc_S:.3f}"
            self.progress(ProgressEvent(self.run.key, text, epoch, total))


def failure_reason(exc: BaseException) -> str:
    """The one-line reason recorded for a run that raised `exc` (where, for a non-flatvol
    error: the last frame of the traceback)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, FlatvolError):
        return text
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    return f"{type(exc).__name__}: {text}{where}"


def volume_estimator_name(spec: ExperimentSpec) -> str | None:
    """The volume estimator a run of `spec` records (None when no measure uses the volume)."""
    measures = set(spec.measures.final) | set(spec.during.measures)
    return spec.measures.volume.estimator if "volume" in measures else None


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch threads (None or 0: leave the setting), then restore it."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def execute_run(run: PlannedRun, ctx: SweepContext, progress: ProgressFn | None = None,
                trained: TrainedNetwork | None = None) -> RunRecord:
    """Train and measure one run.

    Args:
        run: The run to execute.
        ctx: What the runs of the sweep share (spec, kernel, device, threads).
        progress: Told (key, text, epoch, total epochs) after each epoch, and each stage:
            the network trained (FITTED, unless train_group trained it), each final measure
            computed (its name).
        trained: The run's network if train_group trained it already: its history is
            replayed and the network measured.

    Returns:
        The run's record. Never raises for a problem of the run itself (an unfit training set,
        a diverging loss, a bad option): the record is then 'failed', with the reason and the
        series rows recorded until the failure.
    """
    start = time.perf_counter() - (trained.seconds if trained is not None else 0.0)
    info: dict[str, Any] = {"seed": run.seed, "attack_size": run.attack_size,
                            "optimizer_label": run.optimizer.key}
    series = _Series()
    with torch_threads(ctx.threads):
        try:
            return _train_and_measure(run, ctx, progress, info, start, series, trained)
        except WriteError:  # a full disk is the sweep's problem, not the run's: it stops
            raise
        except RUN_ERRORS as exc:
            reason = failure_reason(exc)
            info.update(error=reason, seconds=round(time.perf_counter() - start, 3))
            return RunRecord(run.key, run.config_hash, "failed", reason=reason, info=info,
                             series=series.rows, seconds=time.perf_counter() - start,
                             volume_estimator=volume_estimator_name(ctx.spec))


def _train_and_measure(run: PlannedRun, ctx: SweepContext, progress: ProgressFn | None,
                       info: dict[str, Any], start: float, series: _Series,
                       trained: TrainedNetwork | None) -> RunRecord:
    from flatvol.models import build_model
    from flatvol.train import train_to_fit
    from flatvol.train.loop import EpochInfo
    from flatvol.train.optimizers import make_optimizer
    from flatvol.train.swa import SWAConfig, SWATracker

    spec = ctx.spec
    task = (trained.task if trained is not None and trained.task is not None
            else ctx.run_task(run.attack_size))
    config = train_config(spec, run.optimizer, run.seed)
    model = optimizer = swa = None
    if trained is None:
        model = build_model(spec.model.arch, task.input_shape, spec_prior(spec), seed=run.seed,
                            outputs=task.outputs)
        optimizer = make_optimizer(config.optimizer, model.parameters(),
                                   config.optimizer_settings())
    if run.optimizer.swa is not None:
        s = run.optimizer.swa
        swa = SWATracker(optimizer, SWAConfig(s.lr, s.anneal_epochs, s.anneal_strategy))
    mctx = MeasureContext(spec.measures, seed=run.seed, device=ctx.device, kernel=ctx.kernel,
                          kernel_info=ctx.kernel_info, volume_cache=ctx.volume_cache())
    recorder = _Recorder(run, ctx, series, task, mctx, swa,
                         progress if trained is None else None,
                         config.max_epochs, config.post_train_epochs)
    if trained is None:
        result = train_to_fit(model, task, config, seed=run.seed, device=ctx.device,
                              callback=recorder, optimizer=optimizer)
        if progress is not None:
            progress(ProgressEvent(run.key, stage=FITTED))
    else:  # replay the ensemble member's history: the same series rows train_to_fit gives
        model, result = trained.model.to(ctx.device), trained.result
        for row in result.history:
            recorder(EpochInfo(**row), model)
        info["ensemble"] = trained.ensemble
    info.update(
        train_status=result.status, epochs=result.epochs, fitted_at=result.fitted_at,
        task=spec.data.task, classes=task.classes, train_size=task.train_size,
        test_size=task.test_size, data_seed=spec.data.data_seed, model=spec.model.arch,
        prior={"sigma_w2": spec.model.sigma_w2, "sigma_b2": spec.model.sigma_b2},
        optimizer_name=run.optimizer.name, optimizer_options=dict(run.optimizer.options),
        lr=config.lr, batch_size=config.batch_size, train=config.to_dict(),
        alpha_events=recorder.alpha_applied, device=str(ctx.device),
        flatvol_version=flatvol.__version__, torch_version=torch.__version__,
        last_iterate={"train_acc_S": result.train_acc_S, "train_acc_A": result.train_acc_A,
                      "test_acc_E": result.test_acc_E},
    )
    if result.status != "fitted":
        keep_network(run, ctx, task, result, model, start, "final")
        reason = (f"{DID_NOT_FIT}: {'S' if config.fit == 'S' else 'S u A'} not fit after "
                  f"{result.epochs} epochs (train_acc_S {result.train_acc_S:.4f})")
        info.update(seconds=round(time.perf_counter() - start, 3))
        return RunRecord(run.key, run.config_hash, "failed", reason=reason,
                         results={"train_acc_S": result.train_acc_S,
                                  "train_acc_A": result.train_acc_A,
                                  "test_acc_E": result.test_acc_E},
                         info=info, series=series.rows, seconds=time.perf_counter() - start,
                         volume_estimator=volume_estimator_name(spec))
    measured = model
    info["measured_model"] = "final"
    if swa is not None:
        measured = swa.averaged_model(task)
        info.update(measured_model="swa-average", swa_epochs=swa.epochs_averaged)
    keep_network(run, ctx, task, result, measured, start, info["measured_model"])
    mctx.epoch = None
    mctx.details = {}
    names = ["accuracy"] + [m for m in spec.measures.final if m != "accuracy"]
    results: dict[str, float] = {}
    for name in names:  # one at a time, so progress can follow each measure
        results.update(compute_measures([name], measured, task, mctx))
        if progress is not None:
            progress(ProgressEvent(run.key, stage=name))
    info["measures"] = mctx.details
    info["seconds"] = round(time.perf_counter() - start, 3)
    return RunRecord(run.key, run.config_hash, "done", results=results, info=info,
                     series=series.rows, seconds=time.perf_counter() - start,
                     volume_estimator=volume_estimator_name(spec))


def network_dir_name(run: PlannedRun) -> str:
    """The directory name of a run's kept network: '<optimizer>-attack<A>-seed<S>', the
    optimizer's key with anything but letters, digits, '.', '_' and '-' as '_'.

    Args:
        run: The planned run.

    Returns:
        A name safe on every file system.
    """
    optimizer = re.sub(r"[^A-Za-z0-9._-]", "_", run.optimizer.key)
    return f"{optimizer}-attack{run.attack_size}-seed{run.seed}"


def keep_network(run: PlannedRun, ctx: SweepContext, task: TaskData, result: Any,
                 model: torch.nn.Module, start: float, measured_model: str) -> Path | None:
    """Write the run's network (when the sweep keeps networks, ctx.networks_dir) as the run
    directory `flatvol train` writes for the same settings (flatvol.train.run.run_info), so
    `flatvol collect` or `flatvol flatness` can measure it again with other settings.

    Args:
        run: The planned run.
        ctx: The sweep's context.
        task: The run's S, A and E.
        result: Its TrainResult.
        model: The network measured (the final iterate, or SWA's average).
        start: perf_counter() when the run started (its seconds).
        measured_model: 'final' or 'swa-average' (recorded in run.json).

    Returns:
        The run directory, or None when networks are not kept.

    Raises:
        WriteError: the disk is full or the place unwritable (the sweep stops: a run is not
            recorded as failed for it).
    """
    if ctx.networks_dir is None:
        return None
    from flatvol.problem_settings import run_spec
    from flatvol.train.checkpoint import save_run
    from flatvol.train.run import run_info

    spec = ctx.spec
    # A run with SWA is kept as its averaged network: one network, no averaging left to do.
    optimizer = run.optimizer.model_copy(update={"swa": None})
    one_run = run_spec(spec.data, spec.model, spec.train, optimizer, run.attack_size, run.seed)
    info = run_info(one_run, task, result, ctx.data_dir, time.perf_counter() - start)
    info["sweep"] = {"spec_name": spec.name, "spec_hash": run.key.spec_hash,
                     "optimizer": run.optimizer.key, "measured_model": measured_model}
    run_dir = Path(ctx.networks_dir) / network_dir_name(run)
    save_run(run_dir, model, info)
    return run_dir


def ensemble_eligible(spec: ExperimentSpec, opt: OptimizerSpec) -> bool:
    """Whether `opt`'s runs can train together: train.ensemble is on, and the optimizer is one
    of the catalogue's (SGD, momentum, Adam, AMSGrad, SAM, Entropy-SGD, with their options:
    flatvol.train.update_rules), without SWA. During-training measures and alpha events are
    refused with train.ensemble at spec validation."""
    from flatvol.train.ensemble import ENSEMBLE_OPTIMIZERS

    return (spec.train.ensemble and opt.name in ENSEMBLE_OPTIMIZERS
            and opt.swa is None and not spec.during.measures and not spec.alpha_events)


def trains_together(spec: ExperimentSpec, members: list[PlannedRun]) -> bool:
    """Whether a group (of ensemble_groups) trains as one ensemble: more than one run, and
    ensemble_eligible."""
    return len(members) > 1 and ensemble_eligible(spec, members[0].optimizer)


def train_group(members: list[PlannedRun], ctx: SweepContext,
                progress: ProgressFn | None = None,
                recording: list[PlannedRun] | None = None, threads: int | None = None,
                on_trained: Callable[[PlannedRun, TrainedNetwork], None] | None = None
                ) -> list[TrainedNetwork] | None:
    """The training stage of a sweep planned by stage: `members` (one ensemble_groups group)
    trained as one ensemble.

    Args:
        members: The whole group (every seed and attack size of one optimizer).
        ctx: What the runs of the sweep share.
        progress: Told (key of the first member, text, epoch, total) after each epoch, and
            (key, FITTED) as each member of `recording` stops training.
        recording: The members whose stages are reported (default: all).
        threads: Torch threads of the trainer (default: ctx.threads; None: torch's setting).
        on_trained: Called with each member and its TrainedNetwork as soon as it stops
            training, while the others train on (a sweep starts measuring it meanwhile).

    Returns:
        One TrainedNetwork per member, in order, for execute_run to measure (without its task,
        which execute_run loads: light to ship to another process or a Ray task); None when the
        group does not train together (trains_together) or the ensemble trainer refuses the
        model (BatchNorm) or fails: each run then trains on its own with execute_run (members
        already passed to `on_trained` excepted).
    """
    from flatvol.train.ensemble import StoppedMember, train_ensemble

    spec = ctx.spec
    if not trains_together(spec, members):
        return None
    first = members[0]
    config = train_config(spec, first.optimizer, first.seed)
    reported = {run.key for run in (recording if recording is not None else members)}
    networks: dict[int, TrainedNetwork] = {}

    def on_epoch(e: Any) -> None:
        if progress is not None:
            # the last report, every member stopped, has all its steps done (epoch/epoch)
            total = e.epoch if e.finished == e.total else config.max_epochs
            progress(ProgressEvent(first.key, f"ensemble of {e.total}: {e.finished} stopped",
                                   e.epoch, total))

    def on_stopped(member: StoppedMember) -> None:
        # the ensemble's training time until this member stopped (over resumes of a
        # checkpoint); the run's share: / size
        seconds = member.seconds
        about = {"size": len(members), "engine": member.engine,
                 "train_seconds": round(seconds, 3)}
        network = networks[member.index] = TrainedNetwork(
            None, member.model, member.result, seconds / len(members), about)
        run = members[member.index]
        if progress is not None and run.key in reported:
            progress(ProgressEvent(run.key, stage=FITTED))
        if on_trained is not None:
            on_trained(run, network)

    with torch_threads(threads if threads is not None else ctx.threads):
        try:
            # attack sets are prefixes of one pool: the largest task holds every member's
            task = ctx.run_task(max(r.attack_size for r in members))
            train_ensemble(spec.model.arch, task, config, [r.seed for r in members],
                           spec_prior(spec), ctx.device, callback=on_epoch,
                           keep_history=spec.train.history,
                           attack_sizes=[r.attack_size for r in members], on_stopped=on_stopped,
                           checkpoint=ctx.ensemble_checkpoint(members))
        except RUN_ERRORS:
            return None  # one at a time, where each run gets its own outcome
    return [networks[i] for i in range(len(members))]


def execute_group(runs: list[PlannedRun], ctx: SweepContext,
                  progress: ProgressFn | None = None,
                  trains_with: list[PlannedRun] | None = None) -> Iterator[RunRecord]:
    """Records of `runs` (of one ensemble_groups group), yielded one at a time as each is
    measured: the sweep is planned by stage, first training every network (train_group), then
    measuring (execute_run), all in this process.

    Args:
        runs: Runs of one optimizer (any seeds and attack sizes) to record.
        ctx: What the runs of the sweep share.
        progress: Told (key of the first run, text, epoch, total) during training, and each
            stage as each network is trained (FITTED) and each measure computed.
        trains_with: The whole group `runs` belong to (default: `runs`). All of it trains as
            one ensemble, so a resumed sweep (which records only the runs still missing) trains
            exactly the ensemble an uninterrupted one trains, and gives the same numbers.

    Yields:
        One RunRecord per run, in order. If the group can use the ensemble trainer, all its
        networks train together (member k on S plus its own attack set), each then being
        measured and recorded as execute_run does; otherwise (or if the ensemble trainer refuses
        the model, e.g. BatchNorm, or fails) each run trains on its own with execute_run.
    """
    members = trains_with if trains_with is not None else runs
    trained = train_group(members, ctx, progress, recording=runs)
    row = {run.key: i for i, run in enumerate(members)}
    for run in runs:
        yield execute_run(run, ctx, progress,
                          trained=trained[row[run.key]] if trained is not None else None)
