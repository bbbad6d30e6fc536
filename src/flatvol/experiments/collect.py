"""`flatvol collect RUN_DIR... --out DIR`: gather `flatvol train` runs into a results store.

Each run directory is reloaded (flatvol.train.checkpoint.load_run: finite weights that match
its run.json), measured with the catalogue measures asked for (flatvol.measures, as a sweep
measures its runs) and written as one store row (flatvol.experiments.store), under a synthetic
spec named 'collected' that describes the runs' shared data and model settings. `flatvol report
DIR` then gives the correlation table and the figures, as for a sweep.

The runs must share S and E (task, classes, sizes, data seed, data directory) and the model and
prior: the volume measure uses one NNGP kernel of S u E for all of them. They may differ in
attack size, seed and training settings. Every input is checked before anything is written, and
re-running skips the runs already collected, so the command resumes like `flatvol run`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flatvol.digest import digest
from flatvol.errors import SpecError
from flatvol.experiments.context import compute_kernel
from flatvol.experiments.spec import (
    DataSpec,
    ExperimentSpec,
    ModelSpec,
    spec_json,
)
from flatvol.experiments.spec_files import format_validation_error
from flatvol.experiments.store import DID_NOT_FIT, RunKey, RunRecord, Store, store_path
from flatvol.experiments.store_frames import recorded_runs
from flatvol.measures import (
    MeasureContext,
    MeasuresSpec,
    SharpnessSpec,
    VolumeSpec,
    compute_measures,
    measure_names,
)
from flatvol.progress import ProgressBar
from flatvol.train.checkpoint import load_run
from flatvol.validate import check_device, check_output_dir
from flatvol.volume import VolumeService

SPEC_NAME = "collected"
# What every collected run must share: S and E (so one kernel of S u E serves all) and the
# model and prior (which define that kernel).
SHARED_FIELDS = ("task", "classes", "train_size", "test_size", "data_seed", "data_dir", "model",
                 "prior")


@dataclass(frozen=True)
class CollectSummary:
    """What `collect_runs` did: runs given, already in the store, newly recorded, failed
    (did not fit S, recorded with the reason), the store file and the spec hash."""

    given: int
    skipped: int
    collected: int
    failed: int
    store: Path
    spec_hash: str


def parse_collect_measures(text: str) -> list[str]:
    """'volume,sharpness' -> ['volume', 'sharpness'] (catalogue names; accuracy is always taken).

    Args:
        text: comma-separated catalogue measure names, or 'none' for accuracy only.

    Returns:
        The names, in order, without repeats or 'accuracy'.
    """
    known = [n for n in measure_names() if n != "accuracy"]
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in known and n != "accuracy"]
    if unknown or not names:
        what = repr(unknown[0]) if unknown else "(none given)"
        raise SpecError(f"--measures: unknown measure {what}; expected a comma-separated "
                        f"subset of {', '.join(known)} or 'none'")
    return [n for n in dict.fromkeys(names) if n != "accuracy"]


def collect_settings(measures: Sequence[str], *, estimator: str | None = None,
                     kernel: str = "auto", mc_samples: int = 100, maximizer: str | None = None,
                     epsilon: float | None = None) -> MeasuresSpec:
    """The [measures] settings of a collection, validated like a spec's.

    Args:
        measures: catalogue measure names taken on every run.
        estimator: volume estimator (None: the default).
        kernel: NNGP kernel kind: auto, analytic or mc.
        mc_samples: initializations of a Monte-Carlo kernel.
        maximizer: Keskar maximizer (None: the default).
        epsilon: Keskar box size (None: the default).

    Returns:
        The settings; a bad value is a one-line SpecError naming the option.
    """
    volume = {"kernel": kernel, "mc_samples": mc_samples}
    if estimator is not None:
        volume["estimator"] = estimator
    sharpness: dict[str, Any] = {}
    if maximizer is not None:
        sharpness["maximizer"] = maximizer
    if epsilon is not None:
        sharpness["epsilon"] = epsilon
    try:
        return MeasuresSpec(final=list(measures), volume=VolumeSpec(**volume),
                            sharpness=SharpnessSpec(**sharpness))
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        option = "--" + str(error["loc"][-1]).replace("_", "-")
        raise SpecError(f"{option}: {error['msg'].removeprefix('Value error, ')} "
                        f"(got {error.get('input')!r})") from None


def collected_spec(info: dict[str, Any], settings: MeasuresSpec) -> ExperimentSpec:
    """The synthetic spec 'collected' of runs sharing `info`'s data and model settings.

    Args:
        info: the run.json of one of the runs.
        settings: the measures taken.

    Returns:
        The spec (its hash keys the collected runs in the store).
    """
    prior = info["prior"]
    data = {"task": info["task"], "classes": info.get("classes"),
            "train_size": info["train_size"], "test_size": info["test_size"],
            "data_seed": info.get("data_seed", 0)}
    try:
        return ExperimentSpec(
            name=SPEC_NAME,
            description="flatvol train runs gathered by flatvol collect; training settings are "
                        "per run (see the runs table)",
            data=DataSpec(**data),
            model=ModelSpec(arch=info["model"], sigma_w2=prior["sigma_w2"],
                            sigma_b2=prior["sigma_b2"]),
            measures=settings)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, "run.json")) from None


def run_key(spec_hash: str, info: dict[str, Any]) -> RunKey:
    """The store key of a collected run: its optimizer, attack size and seed."""
    train = info.get("train") or {}
    return RunKey(spec_hash, str(train.get("optimizer", "sgd")), int(info["attack_size"]),
                  int(info["seed"]))


def run_config_hash(run_dir: Path) -> str:
    """Hash of a run's run.json: the same run collected again has the same hash."""
    return digest("collected-run", [(run_dir / "run.json").read_bytes()])


@dataclass(frozen=True)
class _Checked:
    run_dir: Path
    key: RunKey
    config_hash: str


def check_runs(run_dirs: Sequence[Path], settings: MeasuresSpec, out: Path,
               data_dir: Path | None) -> tuple[ExperimentSpec, list[_Checked], list[_Checked]]:
    """Check every input before anything is written: each run directory loads (finite weights
    that match its run.json), all share data and model settings, no two runs (given or already
    in the store) have the same key.

    Args:
        run_dirs: the run directories.
        settings: the measures taken.
        out: the output directory.
        data_dir: relocated data directory of external data (as for `flatvol volume`).

    Returns:
        The spec, the runs to collect and the runs already collected.
    """
    if not run_dirs:
        raise SpecError("give at least one RUN_DIR written by 'flatvol train'")
    infos: list[dict[str, Any]] = []
    for run_dir in run_dirs:
        # load_run refuses weights that are not finite or do not match run.json
        info = load_run(run_dir, data_dir=data_dir).info
        differs = [k for k in SHARED_FIELDS if infos and info.get(k) != infos[0].get(k)]
        if differs:
            k = differs[0]
            raise SpecError(f"{run_dir}: its {k} ({info.get(k)!r}) differs from {run_dirs[0]}'s "
                            f"({infos[0].get(k)!r}); collected runs must share S, E, the model "
                            "and the prior (collect the others into another --out)")
        infos.append(info)
    spec = collected_spec(infos[0], settings)
    spec_hash = spec.spec_hash()
    recorded = recorded_runs(out, spec_hash)
    given: dict[RunKey, Path] = {}
    new, done = [], []
    for run_dir, info in zip(run_dirs, infos, strict=True):
        key = run_key(spec_hash, info)
        if key in given:
            raise SpecError(f"{run_dir}: same optimizer, attack size and seed ({key}) as "
                            f"{given[key]}; a store holds one run per key")
        given[key] = run_dir
        checked = _Checked(run_dir, key, run_config_hash(run_dir))
        if key not in recorded:
            new.append(checked)
        elif recorded[key][1] == checked.config_hash:
            done.append(checked)
        else:
            raise SpecError(f"{run_dir}: {out} already holds another run with the same "
                            f"optimizer, attack size and seed ({key}); collect into another "
                            "--out")
    return spec, new, done


def collect_runs(run_dirs: Sequence[str | Path], out: str | Path, settings: MeasuresSpec, *,
                 data_dir: str | Path | None = None, device: str = "cpu",
                 progress: bool = False) -> CollectSummary:
    """Measure `flatvol train` runs and record them in OUT's store (resumable).

    Args:
        run_dirs: run directories written by `flatvol train` (or train_run with out_dir).
        out: output directory (OUT/results.sqlite).
        settings: the measures to take (collect_settings).
        data_dir: relocated data directory of external data.
        device: torch device of the measures and the kernel.
        progress: show progress bars on stderr.

    Returns:
        The CollectSummary.
    """
    out = check_output_dir(out)
    check_device(device)
    dirs = [Path(d) for d in run_dirs]
    data = Path(data_dir) if data_dir is not None else None
    spec, new, done = check_runs(dirs, settings, out, data)
    failed = 0
    if new:
        failed = _measure_and_record(spec, new, out, data, device, progress)
    return CollectSummary(given=len(dirs), skipped=len(done), collected=len(new) - failed,
                          failed=failed, store=store_path(out), spec_hash=spec.spec_hash())


def _measure_and_record(spec: ExperimentSpec, runs: list[_Checked], out: Path,
                        data_dir: Path | None, device: str, progress: bool) -> int:
    settings = spec.measures
    kernel, kernel_info, service = None, {}, None
    if "volume" in settings.final:
        task = load_run(runs[0].run_dir, data_dir=data_dir, device=device).task
        nngp = compute_kernel(spec, task, device, progress)
        kernel, kernel_info = nngp.matrix, nngp.info
        service = VolumeService(nngp, n_classes=task.n_classes,
                                reference_labels=task.y_SE().detach().cpu().numpy())
    failed = 0
    with Store(out) as store, ProgressBar("collect", total=len(runs), enabled=progress,
                                          unit="runs") as bar:
        source = (f"# spec '{SPEC_NAME}': flatvol train runs gathered by flatvol collect\n"
                  "# (data and model shared by every run; training settings per run)\n"
                  + spec_json(spec))
        store.add_spec(spec.spec_hash(), SPEC_NAME, spec_json(spec), source_text=source)
        for done, checked in enumerate(runs):
            bar.update(done, status=str(checked.run_dir))
            record = _measure_run(checked, settings, kernel, kernel_info, service, data_dir,
                                  device)
            failed += record.status == "failed"
            store.record(record)
        bar.update(len(runs), status="")
    return failed


def _measure_run(checked: _Checked, settings: MeasuresSpec, kernel: Any,
                 kernel_info: dict[str, Any], service: VolumeService | None,
                 data_dir: Path | None, device: str) -> RunRecord:
    start = time.perf_counter()
    run = load_run(checked.run_dir, data_dir=data_dir, device=device)
    train = run.info.get("train") or {}
    info = {**run.info, "run_dir": str(checked.run_dir.resolve()),
            "train_status": run.info.get("status"), "optimizer_name": train.get("optimizer"),
            "lr": train.get("lr"), "batch_size": train.get("batch_size"),
            "measured_model": "final", "collected": True}
    if run.info.get("status") != "fitted":
        reason = f"{DID_NOT_FIT}: the run's status is {run.info.get('status')!r}"
        return RunRecord(checked.key, checked.config_hash, "failed", reason=reason, info=info,
                         seconds=time.perf_counter() - start)
    context = MeasureContext(settings, seed=checked.key.seed, device=device, kernel=kernel,
                             kernel_info=kernel_info, volume_cache=service)
    names = ["accuracy", *settings.final]
    results = compute_measures(names, run.model, run.task, context)
    info["measures"] = context.details
    estimator = settings.volume.estimator if "volume" in settings.final else None
    return RunRecord(checked.key, checked.config_hash, "done", results=results, info=info,
                     seconds=time.perf_counter() - start, volume_estimator=estimator)
