"""Run backends: how the pending runs of a sweep are executed, chosen by name.

    get_backend("local" | "ray") -> Backend

A backend executes runs (execute_run / execute_group) wherever it likes and hands each RunRecord
back to the driver, which alone writes the store. Every backend gives the same records for the
same runs (bitwise, at the same torch thread count).

- `local`: in the driver process (one worker), or a pool of spawned processes (workers > 1).
  With train.ensemble the sweep is planned by stage: each group's ensemble trains in the driver
  on all its threads, then its runs are measured (in the driver, or in the pool).
- `ray`: one Ray task per run, or with train.ensemble one task per group's ensemble and then
  one per run measuring it (flatvol.experiments.ray_backend).

Interrupted (a KeyboardInterrupt: Ctrl-C, or the CLI's SIGINT / SIGTERM), a backend stops at
once: the pool's workers (deaf to Ctrl-C: flatvol.interrupts) are ended, a Ray instance started
here is shut down (on a cluster, the sweep's tasks are cancelled). The runs in flight are lost,
never recorded half; re-running resumes them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.context import SpawnContext, SpawnProcess
from typing import Any, Protocol

from flatvol.errors import SpecError, SweepError
from flatvol.experiments.context import SweepContext
from flatvol.experiments.execute import (
    TrainedNetwork,
    execute_group,
    execute_run,
    train_group,
)
from flatvol.experiments.plan import PlannedRun, staged_plan
from flatvol.experiments.ray_backend import RayBackend
from flatvol.experiments.spec import ExperimentSpec
from flatvol.experiments.store import RunKey, RunRecord
from flatvol.interrupts import holding_signals, ignore_sigint, starting_children
from flatvol.progress import ProgressEvent, ProgressFn
from flatvol.validate import AUTO, check_workers

RecordFn = Callable[[RunRecord], None]


class Backend(Protocol):
    """Executes the runs of a sweep; the driver records what comes back."""

    name: str

    def check_available(self) -> None:
        """Raise a FlatvolError if the backend cannot run here (called before the store is
        touched)."""

    def default_threads(self, spec: ExperimentSpec, workers: int) -> int | None:
        """Torch threads per run when the user gives none (None: leave torch's setting)."""

    def run(self, todo: list[PlannedRun], ctx: SweepContext, record: RecordFn, workers: int,
            progress: ProgressFn) -> None:
        """Execute `todo` on `workers` workers, calling `record` in this process with each
        run's record as it finishes, and `progress` (flatvol.progress.ProgressEvent) with the
        runs' epochs and (where the backend can) as each run's network is trained and each of
        its measures computed. Raise SweepError after the others finish if runs were lost (a
        worker died): they are not recorded, so re-running resumes them."""


def resolve_workers(workers: int | str, runs: int) -> int:
    """The number of workers a sweep uses.

    Args:
        workers: An integer >= 1, or 'auto': one per core (os.cpu_count()), at most one per run
            to do (a single core or run: 1, in the driver process).
        runs: The runs still to do.

    Returns:
        The worker count (>= 1).
    """
    if check_workers(workers) == AUTO:
        return max(1, min(os.cpu_count() or 1, runs))
    return int(workers)


class LocalBackend:
    """Runs on this machine: in this process, or in `workers` spawned processes."""

    name = "local"

    def check_available(self) -> None:
        pass

    def default_threads(self, spec: ExperimentSpec, workers: int) -> int | None:
        # Share the cores between the worker processes (a staged sweep's ensemble trains in
        # this process before them, with ctx.train_threads).
        if workers > 1:
            return max(1, (os.cpu_count() or 1) // workers)
        return None

    def run(self, todo: list[PlannedRun], ctx: SweepContext, record: RecordFn, workers: int,
            progress: ProgressFn) -> None:
        if ctx.spec.train.ensemble and workers == 1:
            # Planned by stage, in this process: each optimizer's whole group trains as one
            # ensemble (the same one on a resume, so the numbers repeat), then its missing runs
            # are measured and recorded one by one.
            for group, runs in staged_plan(ctx.spec, todo):
                for rec in execute_group(runs, ctx, progress, trains_with=group):
                    record(rec)
        elif ctx.spec.train.ensemble:
            _run_staged_processes(todo, ctx, record, workers, progress)
        elif workers == 1:
            for run in todo:
                record(execute_run(run, ctx, progress))
        else:
            with sweep_pool(ctx, workers) as pool:
                for run in todo:
                    pool.submit(str(run.key), run, None)
                pool.collect(record, progress, wait=True)
            pool.raise_lost()


# Per worker process: set once by the pool initializer, so the context is pickled once per
# worker rather than once per job.
_WORKER_QUEUE: Any = None
_WORKER_CTX: Any = None
_WORKER_JOB: Callable[..., Any] | None = None
PARENT_POLL_S = 0.5  # how often a worker checks that the driver still lives
# Thread counts of the BLAS libraries numpy, scipy and torch may load in a worker.
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(queue: Any, contexts: Any, parent: int, nice: int) -> None:
    global _WORKER_QUEUE, _WORKER_CTX, _WORKER_JOB
    # A terminal's Ctrl-C reaches the workers too: only the driver acts on it, and stops them.
    ignore_sigint()
    # Progress is best effort: a worker never waits at its exit for the driver to read what it
    # queued (an interrupted driver reads no more; waiting was a deadlock on Ctrl-C).
    queue.cancel_join_thread()
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    # A killed driver cannot stop its workers: each leaves when its parent is gone, so a
    # SIGKILLed sweep leaves no process behind measuring for nobody.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _WORKER_QUEUE = queue
    _WORKER_JOB, _WORKER_CTX = contexts.get()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def _queue_progress(event: ProgressEvent) -> None:
    """A worker's progress callback: the event goes to the driver's display."""
    if _WORKER_QUEUE is not None:
        with contextlib.suppress(Exception):  # progress is best effort
            _WORKER_QUEUE.put_nowait(event)


def _worker_call(*args: Any) -> Any:
    assert _WORKER_JOB is not None
    return _WORKER_JOB(_WORKER_CTX, *args, progress=_queue_progress)


def _execute_in_worker(ctx: SweepContext, run: PlannedRun, trained: TrainedNetwork | None,
                       progress: ProgressFn) -> RunRecord:
    return execute_run(run, ctx, progress, trained=trained)


def sweep_pool(ctx: SweepContext, workers: int, nice: int = 0) -> WorkerPool:
    """The pool measuring a sweep's runs: jobs (label, run, trained network or None) give
    RunRecords; each worker's torch threads (set by execute_run) and BLAS threads: ctx.threads."""
    return WorkerPool(ctx, _execute_in_worker, workers, threads=ctx.threads, nice=nice)


# How long a worker may take to end after SIGTERM (its default action: at once) before it is
# killed; only a process stuck in the kernel (swapping) would need it.
STOP_GRACE_S = 5.0


class _WorkerContext(SpawnContext):
    """The spawn start method (no fork after torch threads started), remembering every process
    it starts (an interrupted driver ends them: ProcessPoolExecutor has no terminate before
    Python 3.14) and starting each deaf to Ctrl-C (starting_children).

    Each process gets the job and its context through `contexts` (read by its initializer),
    not through its arguments: those are written into the new process's pipe by the driver's
    main thread, which then waits, unable to act on a signal, until the process has imported
    torch and read them all (a kernel of S u E, a task's images, are far more than a pipe
    holds); the queue's feeder thread waits instead.

    Args:
        job: The module-level function every job calls.
        context: What the jobs share (sent once per process).
    """

    def __init__(self, job: Callable[..., Any], context: Any) -> None:
        super().__init__()
        self.shared = (job, context)
        self.started: list[SpawnProcess] = []
        self.contexts = self.Queue()
        # An interrupted driver exits without waiting to hand contexts to workers it ended.
        self.contexts.cancel_join_thread()

    def Process(self, *args: Any, **kwargs: Any) -> SpawnProcess:  # noqa: N802 (its API name)
        process = _WorkerProcess(*args, **kwargs)
        self.started.append(process)
        self.contexts.put(self.shared)
        return process


class _WorkerProcess(SpawnProcess):
    def start(self) -> None:
        with starting_children():
            super().start()


def _silence_resource_sharer() -> None:
    """Let the driver's multiprocessing resource-sharer thread lose its workers quietly.

    Tensors sent to a worker (a trained network) travel as file descriptors that a thread of
    the driver hands out on request (multiprocessing.resource_sharer). A worker ended in the
    middle of that handshake makes the thread's accept fail with ConnectionResetError, which
    it reports through sys.excepthook (and goes on serving), so Python printed a traceback
    under the interrupt's one line. Only those connection errors are dropped; every other
    exception is reported as before.
    """
    previous = sys.excepthook
    if getattr(previous, "silences_resource_sharer", False):  # installed by an earlier stop
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        frames = traceback.extract_tb(tb) if tb is not None else []
        if (issubclass(exc_type, (ConnectionError, EOFError))
                and any(frame.filename.endswith("resource_sharer.py") for frame in frames)):
            return
        previous(exc_type, exc, tb)

    hook.silences_resource_sharer = True  # type: ignore[attr-defined]
    sys.excepthook = hook


class WorkerPool:
    """`workers` spawned processes that each call `job(context, *args, progress=...)` for the
    jobs submitted: the context is sent once per process (by the initializer), results come
    back to the driver as jobs finish, and the driver alone records them (a sweep's runs, an
    sgd-vs-bayes run's chunks of networks). Jobs lost to a dead worker are collected, and
    raise_lost reports them after the others are recorded. Left by an exception (Interrupted,
    KeyboardInterrupt, an error), the pool drops the queued jobs and ends its workers at once:
    the jobs in flight are lost, never recorded half, and a re-run resumes them.

    Args:
        context: What every job shares (picklable).
        job: A module-level function job(context, *args, progress) -> result; `progress`
            sends ProgressEvents to the driver's display.
        workers: Processes.
        threads: The workers' BLAS threads (numpy, scipy), None: the library's default; the
            job sets its own torch threads.
        nice: Niceness added to each worker.
    """

    def __init__(self, context: Any, job: Callable[..., Any], workers: int,
                 threads: int | None = None, nice: int = 0):
        self.context, self.job, self.workers = context, job, workers
        self.threads, self.nice = threads, nice
        self.lost: list[str] = []
        self.pending: dict[Any, str] = {}

    def __enter__(self) -> WorkerPool:
        from concurrent.futures import ProcessPoolExecutor

        # The workers' BLAS (numpy/scipy: EP) gets their torch thread count: it reads these
        # variables when it loads, in each spawned process; the driver's own are restored.
        self.saved_env = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
        if self.threads:
            os.environ.update(dict.fromkeys(BLAS_THREAD_VARIABLES, str(self.threads)))
        self.mpctx = _WorkerContext(self.job, self.context)
        self.queue = self.mpctx.Queue()
        self.pool = ProcessPoolExecutor(self.workers, mp_context=self.mpctx,
                                        initializer=_init_worker,
                                        initargs=(self.queue, self.mpctx.contexts,
                                                  os.getpid(), self.nice))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # Signals wait until the workers are ended: a second Ctrl-C must not leave them behind.
        with holding_signals():
            try:
                if exc_type is None:
                    self.pool.shutdown(wait=True)
                else:
                    self._stop_workers()
            finally:
                self.queue.close()
                self.mpctx.contexts.close()
                for name, value in self.saved_env.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value

    def _stop_workers(self) -> None:
        """Drop the queued jobs and end every worker now (SIGTERM, then SIGKILL after
        STOP_GRACE_S), whatever it is doing: waiting for the runs in flight could take hours."""
        _silence_resource_sharer()
        self.pool.shutdown(wait=False, cancel_futures=True)
        alive = [process for process in self.mpctx.started if process.is_alive()]
        for process in alive:
            process.terminate()
        for process in alive:
            process.join(STOP_GRACE_S)
            if process.is_alive():
                process.kill()
                process.join()

    def submit(self, label: str, *args: Any) -> None:
        """Queue job(context, *args) in the pool (collect hands its result on).

        Args:
            label: Names the job in the report of jobs lost to a dead worker.
            args: The job's arguments after the context (picklable).
        """
        from concurrent.futures.process import BrokenProcessPool

        try:
            self.pending[self.pool.submit(_worker_call, *args)] = label
        except BrokenProcessPool:  # a worker died earlier: nothing more runs here
            self.lost.append(label)

    def collect(self, record: Callable[[Any], None], progress: ProgressFn, wait: bool) -> None:
        """`record` the results that came back (any order), forwarding the progress; with
        `wait`, until none is pending, else only those already there.

        Args:
            record: Called in this process with each job's result.
            progress: Called with each ProgressEvent the workers sent.
            wait: Wait for every pending job (else only take what is there).
        """
        import queue as queue_mod
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as wait_for
        from concurrent.futures.process import BrokenProcessPool

        while True:
            done: set = set()
            if self.pending:
                done, _ = wait_for(self.pending, timeout=0.2 if wait else 0,
                                   return_when=FIRST_COMPLETED)
            with contextlib.suppress(queue_mod.Empty):
                while True:
                    progress(self.queue.get_nowait())
            for future in done:
                label = self.pending.pop(future)
                exc = future.exception()
                if isinstance(exc, BrokenProcessPool):  # a worker died: not the job's fault
                    self.lost.append(label)
                    continue
                if exc is not None:  # an error the job does not turn into a result
                    raise exc
                record(future.result())
            if not (wait and self.pending):
                return

    def raise_lost(self, what: str = "run(s)") -> None:
        """Raise SweepError if jobs were lost (after the others were recorded).

        Args:
            what: What a job is, in the message ('run(s)', 'chunk(s) of networks').
        """
        if self.lost:
            raise SweepError(f"{len(self.lost)} {what} lost because a worker process died (out "
                             f"of memory?), e.g. {self.lost[0]}; finished {what} are saved: "
                             "re-run to resume")


def staged_train_threads(ctx: SweepContext) -> int | None:
    """Torch threads of a staged sweep's ensemble trainer when its runs are measured in
    worker processes: the user's --threads, else the workers' share of the cores (ctx.threads).
    All cores is not the default: on the MNIST panel the 55-member ensemble trained slower on 2
    threads than on 1 (small matmuls, its groups' threads contend for the GIL; bench/RESULTS.md),
    while on CIFAR-10's 3072 inputs 2 threads were 1.5x faster per epoch (pass --threads).

    Args:
        ctx: What the runs of the sweep share.

    Returns:
        The thread count (None: torch's setting).
    """
    return ctx.train_threads if ctx.train_threads is not None else ctx.threads


# Niceness of a staged sweep's measuring processes: they start on each network as soon as it
# stops training, and should take the cycles the trainer leaves idle (its threads wait on each
# other and on the GIL) rather than slow it down.
MEASURE_NICE = 10


def _run_staged_processes(todo: list[PlannedRun], ctx: SweepContext, record: RecordFn,
                          workers: int, progress: ProgressFn) -> None:
    """Planned by stage on all cores: each group's ensemble trains in this process
    (staged_train_threads); each missing run is sent to the pool of `workers` measuring
    processes (ctx.threads each, at MEASURE_NICE) as soon as its network stops training, and
    recorded as it comes back, also while the rest of the ensemble trains."""
    with sweep_pool(ctx, workers, nice=MEASURE_NICE) as pool:
        for group, runs in staged_plan(ctx.spec, todo):
            if pool.lost:  # the pool is broken: the rest is lost too, resumed by a re-run
                pool.lost.extend(str(run.key) for run in runs)
                continue
            missing = {run.key for run in runs}
            sent: set[RunKey] = set()

            def measure_now(run: PlannedRun, network: TrainedNetwork,
                            missing: set[RunKey] = missing, sent: set[RunKey] = sent) -> None:
                if run.key in missing:
                    pool.submit(str(run.key), run, network.on_cpu())
                    sent.add(run.key)

            def each_epoch(event: ProgressEvent) -> None:  # record what came back meanwhile
                progress(event)
                pool.collect(record, progress, wait=False)

            trained = train_group(group, ctx, each_epoch, recording=runs,
                                  threads=staged_train_threads(ctx), on_trained=measure_now)
            row = {run.key: i for i, run in enumerate(group)}
            for run in runs:
                if run.key not in sent:  # one at a time if the group did not train together
                    pool.submit(str(run.key), run,
                                trained[row[run.key]].on_cpu() if trained is not None else None)
            pool.collect(record, progress, wait=True)
    pool.raise_lost()


BACKENDS: dict[str, Callable[[], Backend]] = {"local": LocalBackend, "ray": RayBackend}


def get_backend(name: str) -> Backend:
    """The backend registered as `name`.

    Args:
        name: A key of BACKENDS ('local' or 'ray').

    Returns:
        A new backend instance.

    Raises:
        SpecError: for an unknown name.
    """
    factory = BACKENDS.get(name)
    if factory is None:
        raise SpecError(f"--backend: expected one of {', '.join(BACKENDS)}, got {name!r}")
    return factory()
