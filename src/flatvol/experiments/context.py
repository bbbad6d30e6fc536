"""What all runs of a sweep share: the spec, the data settings, and the NNGP kernel of S u E.

    prepare_context(spec, out, ...) -> SweepContext   (kernel computed once, cached in DIR/cache)

A Monte-Carlo kernel comes with the kernels of its batches of draws (cached beside it, when
they fit in flatvol.volume.kernels.MAX_BATCH_KERNEL_BYTES), so that each run's volume carries
the kernel's error as a jackknife standard error.

The context is picklable: the local process pool and Ray ship it once to each worker.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from flatvol.data.task import TaskData
from flatvol.digest import digest
from flatvol.errors import VolumeError
from flatvol.experiments.build import RunTasks, spec_classes, spec_prior
from flatvol.experiments.plan import PlannedRun, ensemble_groups
from flatvol.experiments.spec import ExperimentSpec
from flatvol.experiments.store import RunKey
from flatvol.io import (
    CacheDamage,
    atomic_write,
    cache_notice,
    read_cache_record,
    write_cache_record,
)
from flatvol.volume import VolumeService, prior_kernel
from flatvol.volume.kernels import (
    DEFAULT_MC_BATCHES,
    KERNEL_REGISTRY,
    KernelRequest,
    PriorKernel,
    canonical_kind,
    is_exact_kind,
)

CACHE_DIR = "cache"  # OUT/cache: the kernel, Monte-Carlo draws and ensemble checkpoints
# OUT/networks/<spec hash>/<run>: kept networks, run directories as `flatvol train` writes them
NETWORKS_DIR = "networks"

def sweep_tasks(spec: ExperimentSpec, data_dir: str | None) -> RunTasks:
    """The tasks of a sweep's runs (nothing read yet): up to its largest attack size.

    Args:
        spec: The sweep's spec.
        data_dir: Data directory of the task (None: the embedded MNIST subset).

    Returns:
        The RunTasks every run's task is cut from.
    """
    return RunTasks(spec, data_dir, max(spec.sweep.attack_values()))


@dataclass
class SweepContext:
    """What all runs of a sweep share (picklable, shipped once to each worker)."""

    spec: ExperimentSpec
    data_dir: str | None = None
    device: str = "cpu"
    kernel: np.ndarray | None = None
    kernel_info: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    # A Monte-Carlo kernel's batch kernels (B, n, n) and draws per batch, for the error bar.
    kernel_batches: tuple[np.ndarray, np.ndarray] | None = None
    # Torch threads of the ensemble trainer when a staged sweep trains in the driver and
    # measures elsewhere (processes, Ray): the user's --threads; None: the workers' share
    # (processes) or the workers' count (Ray).
    train_threads: int | None = None
    # The true labels of S u E ({0, 1}): every run's ep-orthant V(f) starts from their
    # posterior (VolumeService reference_labels), the same start in every process.
    reference_labels: np.ndarray | None = None
    # Where ensembles keep their training progress (DIR/cache; None: no checkpoints).
    checkpoint_dir: str | None = None
    # Where each run's trained network is kept as a run directory (`flatvol run
    # --keep-networks`: DIR/networks/<spec hash>; None: networks are not kept).
    networks_dir: str | None = None
    # The runs' tasks, read once per process (shipped without their data).
    tasks: RunTasks | None = field(default=None, repr=False)
    _volume_cache: VolumeService | None = field(default=None, repr=False)

    def run_task(self, attack_size: int) -> TaskData:
        """The task of a run with `attack_size` attack points (from `tasks`, made on first use).

        Args:
            attack_size: |A| of the run.

        Returns:
            Its TaskData (S and E shared by every run).
        """
        if self.tasks is None:
            self.tasks = sweep_tasks(self.spec, self.data_dir)
        return self.tasks.task(attack_size)

    def volume_cache(self) -> VolumeService | None:
        """The per-process volume service on the kernel (not shipped to workers: each process
        factorizes the kernel once and reuses it for all its runs and epochs)."""
        if self.kernel is None:
            return None
        if self._volume_cache is None:
            self._volume_cache = VolumeService(self.prior_kernel(),
                                               n_classes=spec_classes(self.spec),
                                               reference_labels=self.reference_labels)
        return self._volume_cache

    def prior_kernel(self) -> PriorKernel:
        """The sweep's kernel with its info and batches, as `prior_kernel` gave it.

        Returns:
            The PriorKernel (its kind as stored, in today's vocabulary).

        Raises:
            VolumeError: the context holds no kernel.
        """
        if self.kernel is None:
            raise VolumeError("the sweep's context holds no kernel (no measure needs one)")
        kind = canonical_kind(str(self.kernel_info.get("kind", "")))
        return PriorKernel(self.kernel, kind, self.kernel_info,
                           *(self.kernel_batches or (None, None)), exact=is_exact_kind(kind))

    def ensemble_checkpoint(self, members: list[PlannedRun]) -> Path | None:
        """Where the ensemble of `members` keeps its training progress, so that a killed
        sweep resumes its training (flatvol.train.ensemble_checkpoint):
        DIR/cache/ensemble-<key>.pt, the key a hash of the members' runs and settings.

        Args:
            members: One ensemble_groups group.

        Returns:
            The checkpoint file, or None when the context keeps no checkpoints.
        """
        if self.checkpoint_dir is None:
            return None
        key = digest("ensemble-checkpoint",
                     [[*r.key.as_tuple(), r.config_hash] for r in members])
        return Path(self.checkpoint_dir) / f"ensemble-{key}.pt"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_volume_cache": None}


def discard_ensemble_checkpoints(ctx: SweepContext, runs: list[PlannedRun],
                                 settled: Collection[RunKey]) -> None:
    """Delete the checkpoints of the ensembles whose runs are all `settled` (Store.settled:
    done, or did not fit): their results are in the store, and a checkpoint of 18 CIFAR
    networks weighs 18-50 MB.

    Args:
        ctx: What the runs of the sweep share.
        runs: The sweep's planned runs.
        settled: The keys of the runs whose training needs no second go.
    """
    for group in ensemble_groups(runs):
        path = ctx.ensemble_checkpoint(group)
        if path is not None and all(r.key in settled for r in group):
            path.unlink(missing_ok=True)


def needs_kernel(spec: ExperimentSpec) -> bool:
    return "volume" in spec.measures.final or "volume" in spec.during.measures


def kernel_request(spec: ExperimentSpec) -> KernelRequest:
    """The kernel a sweep asks for: its [measures.volume] settings, with DEFAULT_MC_BATCHES
    batches of draws kept for the error bar.

    Args:
        spec: The sweep's spec.

    Returns:
        The KernelRequest (it owns the kernel's cache keys).
    """
    v = spec.measures.volume
    return KernelRequest(v.kernel, v.mc_samples, v.mc_seed, v.mc_tolerance, v.mc_max_samples,
                         v.mc_batchnorm, DEFAULT_MC_BATCHES, v.estimator, dict(v.options))


def _settings_json(spec: ExperimentSpec) -> tuple[Any, Any]:
    """The spec's data and model settings, as a kernel's keys hold them."""
    return spec.data.model_dump(mode="json"), spec.model.model_dump(mode="json")


def kernel_cache_key(spec: ExperimentSpec) -> str:
    """The key of a sweep's kernel in OUT/cache (KernelRequest.cache_key)."""
    return kernel_request(spec).cache_key(*_settings_json(spec))


def mc_draws_key(spec: ExperimentSpec) -> str:
    """The key of a sweep's Monte-Carlo draws (KernelRequest.draws_key)."""
    return kernel_request(spec).draws_key(*_settings_json(spec))


def compute_kernel(spec: ExperimentSpec, task: TaskData, device: str = "cpu",
                   progress: bool = True, mc_checkpoint: Path | None = None) -> PriorKernel:
    """The kernel of the model's prior on S u E (S first), as the spec's [measures.volume]
    asks for it (flatvol.volume.prior_kernel, the one place a kernel is chosen).

    Args:
        spec: the sweep's spec.
        task: the task whose S u E the kernel is of.
        device: torch device of a Monte-Carlo kernel.
        progress: show the Monte-Carlo progress.
        mc_checkpoint: with mc_samples 'auto', the file keeping the check's draws (a killed
            check resumes from it).

    Returns:
        The kernel and its info; a Monte-Carlo kernel keeps DEFAULT_MC_BATCHES batch kernels
        for its error bar where they fit. With mc_samples 'auto' the convergence check probes
        the true labels y on S u E (K-class for a K-class task) with the spec's estimator and
        its options.
    """
    from flatvol.models import build_model

    x = task.x_SE()
    request = kernel_request(spec)
    # The model is built with the draws' seed: only its architecture and prior matter.
    model = build_model(spec.model.arch, tuple(x.shape[1:]), spec_prior(spec), seed=request.seed)
    return prior_kernel(model, x, request, n_classes=task.n_classes, probe_labels=task.y_SE(),
                        device=device, progress=progress, checkpoint=mc_checkpoint)


def _cached_kernel(path: Path, record: Path, batches_path: Path) -> PriorKernel:
    """The kernel cached at `path`, once its record verifies (flatvol.io.read_cache_record).

    Raises:
        CacheDamage: a file or the record fails verification, or holds arrays of the wrong
            shape.
    """
    with_batches = batches_path.is_file()
    info = read_cache_record(record, [path, batches_path] if with_batches else [path])
    try:
        kernel = np.load(path, allow_pickle=False)
        batches: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        if info.get("mc_batches"):
            with np.load(batches_path, allow_pickle=False) as saved:
                batches = (saved["kernels"], saved["counts"])
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise CacheDamage(f"unreadable ({exc.__class__.__name__}: {exc})") from None
    n = kernel.shape[0] if kernel.ndim == 2 else -1
    if kernel.shape != (n, n) or (batches[0] is not None and (
            batches[0].ndim != 3 or batches[0].shape[1:] != (n, n)
            or batches[1] is None or batches[1].shape != batches[0].shape[:1])):
        raise CacheDamage(f"arrays of unexpected shapes (kernel {kernel.shape})")
    # a record written before the one kind vocabulary says 'monte-carlo' for 'mc'
    kind = canonical_kind(str(info.get("kind")))
    if kind not in KERNEL_REGISTRY:
        raise CacheDamage(f"unknown kernel kind {info.get('kind')!r}")
    return PriorKernel(kernel, kind, {**info, "kind": kind, "cached": True}, *batches,
                       exact=is_exact_kind(kind))


def sweep_kernel(spec: ExperimentSpec, task: TaskData, out: Path, device: str,
                 progress: bool) -> PriorKernel:
    """The sweep's kernel, from DIR/cache/kernel-<key>.npy (and a Monte-Carlo kernel's batches
    from kernel-<key>-batches.npz) if a previous sweep computed it. A Monte-Carlo check's draws
    are kept in DIR/cache/mc-draws-<key>.pt as they are made, so a killed sweep's check
    resumes.

    The cached files are used only when their record, kernel-<key>.json, verifies (their sha256
    and the cache schema, flatvol.io.read_cache_record): a damaged, truncated or unverified
    cache is recomputed after a one-line notice, so it never reaches a run.

    Args:
        spec: The sweep's spec.
        task: The spec's task without attack set (its S u E is the kernel's input).
        out: The output directory.
        device: Torch device of a Monte-Carlo kernel.
        progress: Show the Monte-Carlo progress.

    Returns:
        The kernel, its info carrying its cache key.

    Raises:
        WriteError: the cache cannot be written (full disk, unwritable place).
    """
    key = kernel_cache_key(spec)
    path = out / CACHE_DIR / f"kernel-{key}.npy"
    record = path.with_suffix(".json")
    batches_path = path.with_name(f"kernel-{key}-batches.npz")
    if path.is_file() or record.is_file():
        try:
            return _cached_kernel(path, record, batches_path)
        except CacheDamage as exc:
            # Runs that an earlier flatvol recorded as failed on this cache stay recorded so.
            cache_notice(path, f"cached kernel not used: {exc} (runs recorded as failed on it "
                         "run again with --retry-failed)")
    draws = out / CACHE_DIR / f"mc-draws-{mc_draws_key(spec)}.pt"
    nngp = compute_kernel(spec, task, device, progress, mc_checkpoint=draws)
    info = {**nngp.info, "cache_key": key}
    files = [path]
    if nngp.batch_kernels is not None:
        kernels, counts = nngp.batch_kernels, nngp.batch_counts
        atomic_write(batches_path, lambda fh: np.savez(fh, kernels=kernels, counts=counts))
        files.append(batches_path)
    else:  # a stale batches file of an earlier kernel must not be taken for this one's
        batches_path.unlink(missing_ok=True)
    atomic_write(path, lambda fh: np.save(fh, nngp.matrix, allow_pickle=False))
    write_cache_record(record, files, info)
    return replace(nngp, info=info)


def prepare_context(spec: ExperimentSpec, out: Path, data_dir: str | None = None,
                    device: str = "cpu", progress: bool = True,
                    threads: int | None = None,
                    train_threads: int | None = None,
                    keep_networks: bool = False,
                    tasks: RunTasks | None = None) -> SweepContext:
    """The context of a sweep writing to `out`, with the kernel if a measure needs it.

    Args:
        spec: The sweep's spec.
        out: The output directory (the kernel is cached in out/cache, and ensembles keep
            their training progress there).
        data_dir: Data directory of the task (None: the embedded MNIST subset).
        device: Torch device of the kernel computation and of the runs.
        progress: Show progress of a Monte-Carlo kernel.
        threads: Torch threads per run (None: leave torch's setting).
        train_threads: Torch threads of the ensemble trainer of a staged sweep whose runs are
            measured in other processes (None: torch's setting).
        keep_networks: Keep each run's trained network as a run directory under
            out/networks/<spec hash> (networks_dir).
        tasks: The runs' tasks, already read by the pre-flight (None: read here).

    Returns:
        The SweepContext shared by all runs.
    """
    checkpoints = str((out / CACHE_DIR).absolute())  # Ray workers run elsewhere
    networks = (str((out / NETWORKS_DIR / spec.spec_hash()[:12]).absolute())
                if keep_networks else None)
    if tasks is None:
        tasks = sweep_tasks(spec, data_dir)
    if not needs_kernel(spec):
        return SweepContext(spec, data_dir, device, None, {}, threads,
                            train_threads=train_threads, checkpoint_dir=checkpoints,
                            networks_dir=networks, tasks=tasks)
    task = tasks.task(0)  # S u E: the kernel's input and reference labels
    nngp = sweep_kernel(spec, task, out, device, progress)
    batches = (None if nngp.batch_kernels is None or nngp.batch_counts is None
               else (nngp.batch_kernels, nngp.batch_counts))
    labels = task.y_SE().detach().cpu().numpy().astype(np.float64)
    return SweepContext(spec, data_dir, device, nngp.matrix, nngp.info, threads, batches,
                        train_threads, labels, checkpoints, networks, tasks)
