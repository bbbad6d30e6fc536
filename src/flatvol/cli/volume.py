"""`flatvol volume`: the volume of a trained run, or of labels under a user-supplied kernel.

Labels under a kernel are binary ({0,1} or {-1,+1}: two classes, as always) or integer classes
0..K-1 (K inferred as the largest label + 1, or given by --classes); the estimator must support
K classes (its entry in the registry, flatvol.volume_settings.ESTIMATORS).

flatvol.cli registers `volume_command` as `flatvol volume`; FlatvolErrors raised here are
turned into one line and exit code 2 by flatvol.cli.main.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer

from flatvol.errors import SpecError, VolumeError
from flatvol.io import dumps_json
from flatvol.limits import MAX_MC_SAMPLES, MAX_OPTION_COUNT, MAX_SEED, bound_problem
from flatvol.validate import check_device
from flatvol.volume.estimate import (
    DEFAULT_ESTIMATOR,
    ESTIMATORS,
    check_estimator,
    estimator_info,
)
from flatvol.volume.mc_convergence import (
    DEFAULT_MC_MAX_SAMPLES,
    DEFAULT_MC_TOLERANCE,
    MonteCarloDrawsWarning,
    check_mc_settings,
)
from flatvol.volume.mc_kernel import DEFAULT_BATCHNORM, check_batchnorm_mode
from flatvol.volume.network_volume import volume_of_model
from flatvol.volume.orthant import PROPOSALS
from flatvol.volume.service import VolumeService


def load_npy(path: Path, what: str) -> np.ndarray:
    """Load a .npy array without pickle; any failure is a one-line VolumeError naming the file."""
    if not path.is_file():
        raise VolumeError(f"{path}: {what} file not found")
    try:
        with path.open("rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise VolumeError(f"{path}: cannot read the {what} file ({exc.strerror})") from None
    if magic != b"\x93NUMPY":
        raise VolumeError(f"{path}: expected a .npy {what} file (numpy.save), got another format")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            raise VolumeError(f"{path}: expected a numeric {what} array, got Python objects "
                              "(refused: object arrays need unpickling)") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VolumeError(f"{path}: not a readable .npy {what} ({first})") from None
    except (OSError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VolumeError(f"{path}: not a readable .npy {what} ({first})") from None


def label_classes(raw: np.ndarray, classes: int | None, path: Path) -> int:
    """The class count K of a labels file: binary for {0,1} or {-1,+1} labels (as always),
    else the largest label + 1; or `--classes`, checked to cover every label.

    Args:
        raw: the labels array as loaded.
        classes: --classes (None: infer).
        path: the labels file, for messages.

    Returns:
        K >= 2.

    Raises:
        SpecError: --classes below 2 or below the largest label + 1.
        VolumeError: labels that are neither binary nor integer classes 0..K-1.
    """
    from flatvol.volume import check_multiclass_labels

    if classes is not None and classes < 2:
        raise SpecError(f"--classes: expected an integer >= 2, got {classes}")
    if classes == 2:
        return 2  # {0,1} or {-1,+1}, checked by the service
    values = np.asarray(raw, dtype=np.float64) if raw.dtype.kind in "biuf" else None
    if classes is None and values is not None and values.size and np.all(np.isfinite(values)):
        distinct = set(np.unique(values).tolist())
        if distinct <= {0.0, 1.0} or distinct <= {-1.0, 1.0}:
            return 2  # binary labels keep their meaning, constant ones included
    try:
        f = check_multiclass_labels(raw)  # integer classes >= 0, K inferred as max + 1
    except VolumeError as exc:
        raise VolumeError(f"{path}: {exc} (labels are {{0,1}} or {{-1,+1}}, or classes "
                          "0..K-1)") from None
    largest = int(f.max())
    if classes is not None and classes <= largest:
        i = int(np.argmax(f))
        raise SpecError(f"--classes: {classes} classes are 0..{classes - 1}, but {path} has "
                        f"labels[{i}]={largest}; expected --classes >= {largest + 1}")
    return largest + 1 if classes is None else classes


def _volume_from_files(kernel: Path, labels: Path, estimator: str, n_train: int | None,
                       classes: int | None, options: dict[str, Any]) -> dict[str, Any]:
    from flatvol.volume._numerics import as_kernel

    K = as_kernel(load_npy(kernel, "kernel"), name=str(kernel))
    raw = load_npy(labels, "labels")
    n_classes = label_classes(raw, classes, labels)
    check_estimator(estimator, n_classes)
    service = VolumeService(K, n_classes=n_classes, name=str(kernel))
    try:
        y = service.labels(raw, K.shape[0])
    except VolumeError as exc:
        raise VolumeError(f"{labels}: {exc}") from None
    if n_train is not None and not 1 <= n_train <= K.shape[0]:
        raise SpecError(f"--n-train: expected 1..{K.shape[0]} (rows of {kernel}), got {n_train}")
    if n_train is None:
        out = service.log_volume(y, estimator, **options).to_dict()
    else:
        cond = service.conditional(y, n_train, estimator, **options)
        out = cond.full.to_dict()
        out.update(
            log10_volume_conditional=cond.to_dict()["log10_volume_conditional"],
            log10_volume_S=cond.log10_volume_S,
            pac_bayes_bound=cond.to_dict()["pac_bayes_bound"],
            n_train=n_train,
            train_estimate=cond.train.to_dict(),
        )
    out.update(kernel_file=str(kernel), labels_file=str(labels))
    return out


def _volume_from_run(run_dir: Path, estimator: str, data_dir: Path | None,
                     mc: dict[str, Any], device: str,
                     options: dict[str, Any]) -> dict[str, Any]:
    from flatvol.train.checkpoint import load_run

    run = load_run(run_dir, data_dir=data_dir, device=device)
    # Too few draws is said once, as one line (volume_command), not as a Python warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MonteCarloDrawsWarning)
        result = volume_of_model(run.model, run.task, estimator, device=device, **mc,
                                 **options)
    out = result.to_dict()
    out.update(run_dir=str(run_dir), model=run.info.get("model"))
    return out


def _mc_samples(text: str) -> int | Literal["auto"]:
    """--mc-samples: an integer in 2..MAX_MC_SAMPLES (flatvol.limits), or 'auto'."""
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 2 <= value <= MAX_MC_SAMPLES:
        raise SpecError(f"--mc-samples: expected an integer in 2..{MAX_MC_SAMPLES} or 'auto', "
                        f"got {text}")
    return value


def volume_command(
    run_dir: Annotated[
        Path | None,
        typer.Argument(help="Run directory written by 'flatvol train' (or use --kernel/--labels).",
                       show_default=False),
    ] = None,
    kernel: Annotated[
        Path | None, typer.Option("--kernel", help="Kernel matrix K.npy (n x n, float).")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="Labels y.npy (n,): {0,1} or {-1,+1}, or "
                                  "integer classes 0..K-1.")
    ] = None,
    estimator: Annotated[
        str, typer.Option("--estimator", help="One of: " + ", ".join(
            e.name + ("" if e.multiclass else " (binary only)")
            for e in ESTIMATORS.values()) + ".")
    ] = DEFAULT_ESTIMATOR,
    n_train: Annotated[
        int | None,
        typer.Option("--n-train", help="With --kernel: the first N rows are S; adds "
                     "log10_volume_conditional and the PAC-Bayes bound."),
    ] = None,
    classes: Annotated[
        int | None,
        typer.Option("--classes", help="With --labels: the number of classes K (labels "
                     "0..K-1); default: 2 for {0,1} or {-1,+1} labels, else the largest "
                     "label + 1.", show_default=False),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", help="Samples for orthant-is.")] = 4000,
    proposal: Annotated[
        str, typer.Option("--proposal", help="orthant-is proposal: auto, ep, minimax, prior.")
    ] = "auto",
    mc_samples: Annotated[
        str, typer.Option("--mc-samples", help="Inits for a Monte-Carlo kernel (non-FCN runs), "
                          "or 'auto': doubled until log10 V of the true labels converges.")
    ] = "auto",
    mc_tolerance: Annotated[
        float, typer.Option("--mc-tolerance", help="With --mc-samples auto: the log10 V "
                            "agreement between two halves of the draws that ends the check.")
    ] = DEFAULT_MC_TOLERANCE,
    mc_max_samples: Annotated[
        int, typer.Option("--mc-max-samples", help="With --mc-samples auto: the most draws "
                          "tried before the kernel is refused.")
    ] = DEFAULT_MC_MAX_SAMPLES,
    mc_batchnorm: Annotated[
        str, typer.Option("--mc-batchnorm", help="BatchNorm in the Monte-Carlo draws: eval "
                          "(reset statistics, the authors' code) or batch (those of S u E).")
    ] = DEFAULT_BATCHNORM,
    seed: Annotated[int, typer.Option("--seed", help="Seed for sampling estimators.")] = 0,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", envvar="FLATVOL_DATA", help="Data directory.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, ...")] = "cpu",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Estimate the volume V(f) (log10 prior probability of the function) with the NNGP kernel."""
    check_estimator(estimator)
    check_device(device)
    if not 2 <= samples <= MAX_OPTION_COUNT:
        raise SpecError(f"--samples: expected an integer in 2..{MAX_OPTION_COUNT}, got {samples}")
    if mc_max_samples > MAX_MC_SAMPLES:
        raise SpecError(f"--mc-max-samples: expected at most {MAX_MC_SAMPLES}, got "
                        f"{mc_max_samples}")
    if (problem := bound_problem(seed, 0, MAX_SEED)) is not None:
        raise SpecError(f"--seed: {problem}")
    draws = _mc_samples(mc_samples)
    check_mc_settings(mc_tolerance, mc_max_samples, ("--mc-tolerance", "--mc-max-samples"))
    check_batchnorm_mode(mc_batchnorm, "--mc-batchnorm")
    mc = {"mc_samples": draws, "mc_tolerance": mc_tolerance, "mc_max_samples": mc_max_samples,
          "mc_batchnorm": mc_batchnorm}
    if proposal not in PROPOSALS:
        raise SpecError(f"--proposal must be one of {', '.join(PROPOSALS)}, got {proposal!r}")
    # --samples, --proposal and --seed are orthant-is options: given only to an estimator whose
    # schema has them (the registry refuses options an estimator does not take)
    options = {k: v for k, v in {"n_samples": samples, "seed": seed, "proposal": proposal}.items()
               if estimator_info(estimator).takes(k)}
    if run_dir is not None:
        if kernel is not None or labels is not None or n_train is not None \
                or classes is not None:
            raise SpecError("give either RUN_DIR or --kernel/--labels (with --n-train, "
                            "--classes), not both")
        out = _volume_from_run(run_dir, estimator, data_dir, mc, device, options)
    else:
        if kernel is None or labels is None:
            raise SpecError("give RUN_DIR, or both --kernel K.npy and --labels y.npy")
        out = _volume_from_files(kernel, labels, estimator, n_train, classes, options)
    out["estimator_description"] = ESTIMATORS[estimator].description
    if out.get("warning"):  # too few Monte-Carlo draws: one line, also in the JSON
        typer.echo(f"warning: {out['warning']}", err=True)
    if json_output:
        typer.echo(dumps_json(out))
        return
    keys = ("estimator", "n_classes", "log10_volume", "log_marginal_likelihood_nats",
            "log10_volume_conditional", "log10_volume_S", "pac_bayes_bound",
            "log10_volume_stderr", "log10_volume_S_stderr", "log10_volume_conditional_stderr",
            "log10_volume_bias", "log10_volume_S_bias", "log10_volume_conditional_bias",
            "stderr_log10",
            "effective_sample_size", "proposal", "converged",
            "iterations", "seconds", "jitter", "message")
    for key in keys:
        if key in out and out[key] not in (None, ""):
            typer.echo(f"{key}: {out[key]}")
    check = (out.get("kernel_info") or {}).get("mc_convergence")
    if check:  # the Monte-Carlo kernel's convergence check, also in the JSON's kernel_info
        last = check["rounds"][-1]
        typer.echo(f"mc_convergence: {last['samples']} draws, log10 V of two halves differ by "
                   f"{last['halves_difference']:.3g}, all draws vs halves by "
                   f"{last['half_vs_full']:.3g} (tolerance {check['tolerance']})")
