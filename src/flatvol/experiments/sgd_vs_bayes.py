"""P_opt(f|S) vs V(f|S): does an optimizer find a function as often as its prior volume says?

Mingard et al. ("Is SGD a Bayesian sampler? Well, almost", JMLR 2021) train many networks to
fit S and count how often each function f on a test set E comes out: P_opt(f|S). The Bayesian
counterpart is the conditional volume V(f|S) = P(f on S u E) / P(y_S on S) under the NNGP
prior. This module trains N networks per optimizer with the ensemble trainer (chunks of
networks trained together, saved as they finish, so a re-run resumes), computes V(f|S) for
every function seen with one kernel factorization, and writes a table, a summary and the plots.

Outputs in the run directory:
- spec.json: the validated spec; chunks/<optimizer>-<hash>/seeds_<a>-<b>.npz: per network seed,
  epochs, status and its labels on E (saved per chunk; np.load without pickle);
- volumes.json: log10 V(y_S), log10 V(f on S u E) per function and the per-point marginals
  (a cache: resumes too);
- functions.csv: one row per (optimizer, function): count, P_opt, log10 V(f|S), errors on E
  (the function is its labels on E as a '0'/'1' string: read it as text, not as a number);
- points.csv: per E point, the prior's P(label 1 | y_S) and each optimizer's label frequency;
- summary.json: per optimizer N, distinct functions, correlations, the most frequent functions;
- p_opt_vs_v.png (all optimizers, one log-log scatter) and mingard.png (one panel per optimizer,
  coloured by the number of errors on E, as in Mingard et al.'s Fig. 1).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import Field, field_validator, model_validator

from flatvol.data.task import TaskData
from flatvol.errors import SpecError
from flatvol.experiments.spec import (
    DataSpec,
    ModelSpec,
    OptimizerSpec,
    TrainSpec,
    _Strict,
    validate_spec,
)
from flatvol.io import atomic_write, atomic_write_json, atomic_write_text, float_or_nan
from flatvol.models import Prior, build_model
from flatvol.train.ensemble import ENSEMBLE_OPTIMIZERS, EnsembleEpochInfo, train_ensemble
from flatvol.train.loop import TrainConfig

Progress = Callable[[str, int, int], None]  # (stage, done, total)


# ----------------------------------------------------------------------------- spec


class SamplingSpec(_Strict):
    """How many networks per optimizer (seeds first_seed, first_seed+1, ...), trained in chunks
    of `chunk` networks at once (`group_size` per batched matmul; see flatvol.train.ensemble)."""

    networks: int = Field(10_000, ge=1)
    chunk: int = Field(500, ge=1)
    first_seed: int = Field(0, ge=0)
    group_size: int = Field(16, ge=1)
    engine: Literal["auto", "fcn", "vmap"] = "auto"


class BayesVolumeSpec(_Strict):
    """V(f|S) of each function seen at least `min_count` times, with one kernel on S u E."""

    estimator: Literal["ep-orthant", "orthant-is", "ep-probit", "laplace"] = "ep-orthant"
    kernel: Literal["auto", "analytic", "mc"] = "auto"
    mc_samples: int = Field(100, ge=2)
    mc_seed: int = 0
    min_count: int = Field(1, ge=1)
    options: dict[str, bool | int | float | str] = Field(default_factory=dict)


class AnalysisSpec(_Strict):
    """Correlations use functions seen at least `min_count` times (P_opt resolved); the summary
    lists the `top` most frequent functions per optimizer."""

    min_count: int = Field(5, ge=1)
    top: int = Field(20, ge=1)


class SgdVsBayesSpec(_Strict):
    name: str
    description: str = ""
    data: DataSpec = Field(default_factory=lambda: DataSpec(train_size=100, test_size=30))
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    optimizers: list[OptimizerSpec] = Field(
        default_factory=lambda: [OptimizerSpec(name="sgd"), OptimizerSpec(name="adam", lr=1e-3)])
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    volume: BayesVolumeSpec = Field(default_factory=BayesVolumeSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)

    @field_validator("optimizers")
    @classmethod
    def _ensemble_optimizers(cls, optimizers: list[OptimizerSpec]) -> list[OptimizerSpec]:
        if not optimizers:
            raise ValueError("at least one optimizer is needed")
        for o in optimizers:
            if o.name not in ENSEMBLE_OPTIMIZERS:
                raise ValueError(f"{o.key!r}: the ensemble trainer supports "
                                 f"{', '.join(ENSEMBLE_OPTIMIZERS)}, got {o.name!r}")
            if o.options or o.swa is not None:
                raise ValueError(f"{o.key!r}: 'options' and 'swa' are not supported here")
        labels = [o.key for o in optimizers]
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be unique, got {labels} (give each a 'label')")
        return optimizers

    @model_validator(mode="after")
    def _fit_S(self) -> SgdVsBayesSpec:
        if self.train.fit != "S":
            raise ValueError("train.fit must be 'S' (there is no attack set here)")
        return self

    def train_config(self, optimizer: OptimizerSpec) -> TrainConfig:
        t, o = self.train, optimizer
        return TrainConfig(
            optimizer=o.name,
            lr=o.lr if o.lr is not None else t.lr,
            batch_size=o.batch_size if o.batch_size is not None else t.batch_size,
            max_epochs=o.max_epochs if o.max_epochs is not None else t.max_epochs,
            fit="S",
            momentum=o.momentum if o.momentum is not None else t.momentum,
            weight_decay=o.weight_decay if o.weight_decay is not None else t.weight_decay,
            post_train_epochs=(o.post_train_epochs if o.post_train_epochs is not None
                               else t.post_train_epochs),
        )

    def prior(self) -> Prior:
        return Prior(self.model.sigma_w2, self.model.sigma_b2)

    def seeds(self) -> list[int]:
        start = self.sampling.first_seed
        return list(range(start, start + self.sampling.networks))

    def chunk_hash(self, optimizer: OptimizerSpec, data_fingerprint: str) -> str:
        """What determines a trained network: data, model, prior, training config."""
        payload = {"data": self.data.model_dump(mode="json"), "data_fingerprint": data_fingerprint,
                   "model": self.model.model_dump(mode="json"),
                   "train": self.train_config(optimizer).to_dict()}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def sgd_vs_bayes_spec_from_dict(data: Mapping[str, Any], source: str = "<spec>"
                                ) -> SgdVsBayesSpec:
    return validate_spec(SgdVsBayesSpec, data, source)


def load_sgd_vs_bayes_spec(path: str | Path) -> SgdVsBayesSpec:
    """Read and validate a .toml/.yaml sgd-vs-bayes spec; a packaged name also works."""
    from flatvol.experiments.spec import resolve_spec_path

    path = resolve_spec_path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(" ".join(f"{path}: cannot read spec ({exc})".split())) from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise SpecError(f"{path}: unknown spec format {suffix!r}; expected .toml or .yaml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise SpecError(" ".join(f"{path}: invalid spec file: {exc}".split())) from None
    return sgd_vs_bayes_spec_from_dict(data, str(path))


# ----------------------------------------------------------------------------- training


@dataclass
class FunctionSample:
    """Every network trained with one optimizer: its seed, outcome and labels on E."""

    optimizer: str
    seeds: np.ndarray  # (N,)
    epochs: np.ndarray  # (N,)
    fitted: np.ndarray  # (N,) bool
    labels_E: np.ndarray  # (N, |E|) uint8 in {0, 1}
    seconds: float  # training time of the chunks trained in this call

    @property
    def n_fitted(self) -> int:
        return int(self.fitted.sum())

    def counts(self) -> Counter[str]:
        """How often each function on E (a '0'/'1' string in E order) was found by fitted nets."""
        rows = self.labels_E[self.fitted]
        return Counter(bits_of(r) for r in rows)


def bits_of(labels: np.ndarray) -> str:
    return "".join("1" if v else "0" for v in np.asarray(labels).ravel())


def labels_of(bits: str) -> np.ndarray:
    return np.frombuffer(bits.encode(), dtype=np.uint8) - ord("0")


def _read_chunk(path: Path, seeds: list[int], n_E: int) -> dict[str, np.ndarray] | None:
    """A saved chunk, or None if it is unreadable or does not match (then it is retrained)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            chunk = {k: z[k] for k in ("seeds", "epochs", "fitted", "labels_E")}
    except (OSError, ValueError, KeyError):
        return None
    if chunk["seeds"].tolist() != seeds or chunk["labels_E"].shape != (len(seeds), n_E):
        return None
    return chunk


def sample_functions(
    spec: SgdVsBayesSpec,
    task: TaskData,
    optimizer: OptimizerSpec,
    out_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> FunctionSample:
    """Train spec.sampling.networks networks with `optimizer` to fit S, in ensemble chunks.

    With `out_dir`, each chunk is saved when done and reused by a later call (resume).
    """
    config = spec.train_config(optimizer)
    seeds = spec.seeds()
    step = spec.sampling.chunk
    chunk_key = spec.chunk_hash(optimizer, task.fingerprint())
    chunk_dir = (Path(out_dir) / "chunks" / f"{optimizer.key}-{chunk_key}"
                 if out_dir is not None else None)
    parts: list[dict[str, np.ndarray]] = []
    done = 0
    seconds = 0.0
    for c0 in range(0, len(seeds), step):
        chunk_seeds = seeds[c0 : c0 + step]
        path = (chunk_dir / f"seeds_{chunk_seeds[0]:07d}-{chunk_seeds[-1]:07d}.npz"
                if chunk_dir is not None else None)
        chunk = _read_chunk(path, chunk_seeds, len(task.E)) if path and path.is_file() else None
        if chunk is None:
            start = time.perf_counter()

            def on_epoch(info: EnsembleEpochInfo, base: int = done) -> None:
                if progress is not None:
                    progress(optimizer.key, base + info.finished, len(seeds))

            ens = train_ensemble(spec.model.arch, task, config, chunk_seeds, prior=spec.prior(),
                                 device=device, callback=on_epoch, keep_history=False,
                                 engine=spec.sampling.engine,
                                 group_size=spec.sampling.group_size)
            chunk = {
                "seeds": np.asarray(chunk_seeds, dtype=np.int64),
                "epochs": ens.epochs.astype(np.int64),
                "fitted": np.array([s == "fitted" for s in ens.status]),
                "labels_E": ens.predict_labels(task.E.x).numpy().astype(np.uint8),
            }
            seconds += time.perf_counter() - start
            if path is not None:
                atomic_write(path, lambda fh, c=chunk: np.savez(fh, **c))
        parts.append(chunk)
        done += len(chunk_seeds)
        if progress is not None:
            progress(optimizer.key, done, len(seeds))
    return FunctionSample(
        optimizer=optimizer.key,
        seeds=np.concatenate([p["seeds"] for p in parts]),
        epochs=np.concatenate([p["epochs"] for p in parts]),
        fitted=np.concatenate([p["fitted"] for p in parts]),
        labels_E=np.concatenate([p["labels_E"] for p in parts]),
        seconds=seconds,
    )


# ----------------------------------------------------------------------------- volumes


@dataclass(frozen=True)
class VolumeTable:
    """log10 V(y_S); per function f on E, log10 V(y_S, f) and hence log10 V(f|S); and per E
    point the prior's P(label 1 | y_S) (see point_marginals)."""

    estimator: str
    kernel: str
    log10_v_train: float
    log10_v_full: dict[str, float]
    converged: dict[str, bool]
    prior_label1: np.ndarray

    def conditional(self, bits: str) -> float:
        return self.log10_v_full[bits] - self.log10_v_train


def prior_kernel(spec: SgdVsBayesSpec, task: TaskData, device: str | torch.device = "cpu",
                 progress: bool = False) -> tuple[np.ndarray, str]:
    """The NNGP kernel of the spec's model prior on S u E (S first)."""
    from flatvol.models import FCN
    from flatvol.volume import fcn_kernel, mc_nngp_kernel

    v = spec.volume
    model = build_model(spec.model.arch, task.input_shape, spec.prior(), seed=v.mc_seed)
    kind = v.kernel if v.kernel != "auto" else ("analytic" if isinstance(model, FCN) else "mc")
    if kind == "analytic":
        if not isinstance(model, FCN):
            raise SpecError(f"volume.kernel: 'analytic' needs an fcn model, got "
                            f"{spec.model.arch!r} (use 'mc' or 'auto')")
        return fcn_kernel(model, task.x_SE()), "analytic"
    mc = mc_nngp_kernel(model, task.x_SE(), v.mc_samples, seed=v.mc_seed, device=device,
                        progress=progress)
    return mc.kernel, f"monte-carlo ({v.mc_samples} samples)"


def conditional_volumes(
    spec: SgdVsBayesSpec,
    task: TaskData,
    functions: list[str],
    cache_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> VolumeTable:
    """V(f|S) for each function on E: one kernel on S u E, factorized once, shared by all.

    With `cache_path` (a JSON file), values computed before for the same data, model and
    estimator are reused, and new ones are saved (every 30 s and at the end).
    """
    from flatvol.volume import VolumeEstimator

    v = spec.volume
    cache: dict[str, Any] = {}
    cache_key = {"estimator": v.estimator, "kernel": v.kernel, "mc_samples": v.mc_samples,
                 "mc_seed": v.mc_seed, "options": v.options,
                 "data": spec.data.model_dump(mode="json"), "data_fingerprint": task.fingerprint(),
                 "model": spec.model.model_dump(mode="json")}
    if cache_path is not None and Path(cache_path).is_file():
        try:
            cache = json.loads(Path(cache_path).read_text())
        except (OSError, json.JSONDecodeError):
            cache = {}
        if not isinstance(cache, dict) or cache.get("key") != cache_key:
            cache = {}
    lazy: dict[str, Any] = {}

    def estimator() -> VolumeEstimator:  # the kernel is only built if something is missing
        if "estimator" not in lazy:
            lazy["kernel"], lazy["kind"] = prior_kernel(spec, task, device)
            lazy["estimator"] = VolumeEstimator(lazy["kernel"])
        return lazy["estimator"]

    y_S = task.S.y.numpy().astype(np.float64)
    if "log10_v_train" not in cache or "prior_label1" not in cache:
        train = estimator().leading(len(y_S)).log_volume(y_S, v.estimator, **v.options)
        cache = {"key": cache_key, "kernel": lazy["kind"], "log10_v_train": train.log10_volume,
                 "prior_label1": point_marginals(spec, task, lazy["kernel"]).tolist(),
                 "functions": {}}
    known: dict[str, list] = cache["functions"]
    todo = [f for f in functions if f not in known]
    last_save = time.perf_counter()
    for i, bits in enumerate(todo):
        labels = np.concatenate([y_S, labels_of(bits).astype(np.float64)])
        res = estimator().log_volume(labels, v.estimator, **v.options)
        known[bits] = [res.log10_volume, bool(res.converged)]
        if progress is not None:
            progress("volumes", len(functions) - len(todo) + i + 1, len(functions))
        if cache_path is not None and time.perf_counter() - last_save > 30:
            _save_json(Path(cache_path), cache)
            last_save = time.perf_counter()
    if cache_path is not None and (todo or lazy):
        _save_json(Path(cache_path), cache)
    return VolumeTable(
        estimator=v.estimator,
        kernel=cache["kernel"],
        log10_v_train=float_or_nan(cache["log10_v_train"]),
        log10_v_full={f: float_or_nan(known[f][0]) for f in functions},
        converged={f: bool(known[f][1]) for f in functions},
        prior_label1=np.asarray(cache["prior_label1"], dtype=np.float64),
    )


def point_marginals(spec: SgdVsBayesSpec, task: TaskData, kernel: np.ndarray) -> np.ndarray:
    """P(label 1 on e | y_S) under the prior for each point e of E on its own:
    V(y_S, e -> 1) / V(y_S), from the kernel on S u {e} (a diagnostic: how sure the prior's
    posterior is about each test point, to set beside the networks' label frequencies)."""
    from flatvol.volume import VolumeEstimator

    v = spec.volume
    y_S = task.S.y.numpy().astype(np.float64)
    n_S = len(y_S)
    log10_S = VolumeEstimator(kernel[:n_S, :n_S]).log_volume(y_S, v.estimator, **v.options)
    out = np.empty(len(task.E))
    for j in range(len(task.E)):
        rows = np.r_[np.arange(n_S), n_S + j]
        res = VolumeEstimator(kernel[np.ix_(rows, rows)]).log_volume(
            np.r_[y_S, 1.0], v.estimator, **v.options)
        out[j] = 10 ** (res.log10_volume - log10_S.log10_volume)
    return np.clip(out, 0.0, 1.0)


def _save_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, indent=1)


# ----------------------------------------------------------------------------- analysis


@dataclass
class OptimizerSummary:
    optimizer: str
    networks: int
    fitted: int
    distinct_functions: int
    median_epochs: float
    mean_test_error: float
    resolved_functions: int  # seen >= analysis.min_count times
    pearson_log10: float  # over resolved functions: log10 P_opt vs log10 V(f|S)
    spearman: float
    top_within_10x: float  # fraction of the `top` most frequent functions with |log10 ratio| <= 1
    top_median_abs_log10_ratio: float
    top_functions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for k, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[k] = None
        return out


def function_rows(sample: FunctionSample, volumes: VolumeTable, y_E: np.ndarray
                  ) -> list[dict[str, Any]]:
    """One row per function the fitted networks found, most frequent first."""
    counts = sample.counts()
    n = max(sample.n_fitted, 1)
    rows = []
    for bits, count in counts.most_common():
        has_v = bits in volumes.log10_v_full
        rows.append({
            "optimizer": sample.optimizer,
            "function": bits,
            "count": count,
            "p_opt": count / n,
            "log10_p_opt": math.log10(count / n),
            "log10_v_conditional": volumes.conditional(bits) if has_v else math.nan,
            "log10_v_full": volumes.log10_v_full[bits] if has_v else math.nan,
            "ep_converged": volumes.converged[bits] if has_v else False,
            "errors_E": int(np.sum(labels_of(bits) != y_E)),
        })
    return rows


def summarize(sample: FunctionSample, rows: list[dict[str, Any]], spec: SgdVsBayesSpec,
              y_E: np.ndarray) -> OptimizerSummary:
    from scipy import stats

    a = spec.analysis
    resolved = [r for r in rows if r["count"] >= a.min_count
                and math.isfinite(r["log10_v_conditional"])]
    p = np.array([r["log10_p_opt"] for r in resolved])
    v = np.array([r["log10_v_conditional"] for r in resolved])
    if len(resolved) >= 3 and np.ptp(p) > 0 and np.ptp(v) > 0:
        pearson = float(stats.pearsonr(p, v)[0])
        spearman = float(stats.spearmanr(p, v)[0])
    else:
        pearson = spearman = math.nan
    top = [r for r in rows[: a.top] if math.isfinite(r["log10_v_conditional"])]
    ratios = np.array([r["log10_p_opt"] - r["log10_v_conditional"] for r in top])
    fitted_rows = sample.labels_E[sample.fitted]
    test_error = float(np.mean(fitted_rows != y_E[None, :])) if len(fitted_rows) else math.nan
    return OptimizerSummary(
        optimizer=sample.optimizer,
        networks=len(sample.seeds),
        fitted=sample.n_fitted,
        distinct_functions=len(rows),
        median_epochs=float(np.median(sample.epochs)),
        mean_test_error=test_error,
        resolved_functions=len(resolved),
        pearson_log10=pearson,
        spearman=spearman,
        top_within_10x=float(np.mean(np.abs(ratios) <= 1)) if len(ratios) else math.nan,
        top_median_abs_log10_ratio=float(np.median(np.abs(ratios))) if len(ratios) else math.nan,
        top_functions=[{k: r[k] for k in ("function", "count", "p_opt", "log10_p_opt",
                                          "log10_v_conditional", "errors_E")} for r in top],
    )


# ----------------------------------------------------------------------------- plots


def plot_p_opt_vs_v(rows: list[dict[str, Any]], summaries: list[OptimizerSummary],
                    path: str | Path, per_optimizer: bool, estimator: str = "ep-orthant",
                    min_count: int = 5) -> Path:
    """Log-log scatter of P_opt(f|S) against V(f|S) with the diagonal.

    per_optimizer=True: one panel per optimizer, points coloured by the number of errors on E
    (Mingard et al.'s figure); False: all optimizers on one panel, one colour each.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.optimizer for s in summaries]
    panels = len(names) if per_optimizer else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.8), squeeze=False)
    finite = [r for r in rows if math.isfinite(r["log10_v_conditional"])]
    if finite:
        lo = min(min(r["log10_v_conditional"] for r in finite),
                 min(r["log10_p_opt"] for r in finite)) - 0.3
    else:
        lo = -6.0
    max_err = max([r["errors_E"] for r in finite], default=1)
    for i, name in enumerate(names if per_optimizer else [None]):
        ax = axes[0, i]
        selected = [s for s in summaries if name is None or s.optimizer == name]
        for k, s in enumerate(selected):
            pts = [r for r in finite if r["optimizer"] == s.optimizer]
            x = [10 ** r["log10_v_conditional"] for r in pts]
            y = [r["p_opt"] for r in pts]
            size = [8 + 4 * math.log10(r["count"]) ** 2 for r in pts]
            label = (f"{s.optimizer}: N={s.fitted}, {s.distinct_functions} functions, "
                     f"r={_fmt(s.pearson_log10)} ({s.resolved_functions} with count>="
                     f"{min_count})")
            if per_optimizer:
                sc = ax.scatter(x, y, c=[r["errors_E"] for r in pts], cmap="viridis", s=size,
                                vmin=0, vmax=max(max_err, 1), alpha=0.8, edgecolors="none",
                                label=label)
            else:
                ax.scatter(x, y, s=size, alpha=0.6, edgecolors="none", label=label,
                           color=f"C{k}")
        ax.plot([10**lo, 1], [10**lo, 1], "k--", lw=1, label="P_opt = V")
        ax.fill_between([10**lo, 1], [10 ** (lo - 1), 0.1], [10 ** (lo + 1), 10], color="grey",
                        alpha=0.12, label="within 10x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(10**lo, 1.5)
        ax.set_ylim(10**lo, 1.5)
        ax.set_xlabel(f"V(f|S)  (NNGP prior, {estimator})")
        ax.set_ylabel("P_opt(f|S)  (frequency over trained networks)")
        ax.set_title(name if name is not None else "P_opt(f|S) vs V(f|S)")
        ax.legend(fontsize=7, loc="upper left")
        if per_optimizer and finite:
            fig.colorbar(sc, ax=ax, label="errors on E")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.2f}"


# ----------------------------------------------------------------------------- driver


@dataclass
class SgdVsBayesResult:
    spec: SgdVsBayesSpec
    task: TaskData
    samples: dict[str, FunctionSample]
    volumes: VolumeTable
    rows: list[dict[str, Any]]
    summaries: list[OptimizerSummary]
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def points(self) -> list[dict[str, Any]]:
        """Per E point: its label, the prior's P(label 1 | y_S), each optimizer's frequency."""
        out = []
        for j in range(len(self.task.E)):
            row: dict[str, Any] = {"point": j, "label": int(self.task.E.y[j]),
                                   "prior_p_label1": float(self.volumes.prior_label1[j])}
            for name, sample in self.samples.items():
                fitted = sample.labels_E[sample.fitted]
                row[f"{name}_p_label1"] = float(fitted[:, j].mean()) if len(fitted) else math.nan
            out.append(row)
        return out

    def summary(self) -> dict[str, Any]:
        spec, points = self.spec, self.points()
        optimizers = {}
        for s in self.summaries:
            gap = [abs(p[f"{s.optimizer}_p_label1"] - p["prior_p_label1"]) for p in points]
            optimizers[s.optimizer] = {**s.to_dict(),
                                       "mean_abs_label_frequency_gap": float(np.mean(gap))}
        return {
            "name": spec.name,
            "task": spec.data.task,
            "classes": self.task.classes,
            "train_size": self.task.train_size,
            "test_size": self.task.test_size,
            "model": spec.model.arch,
            "estimator": self.volumes.estimator,
            "kernel": self.volumes.kernel,
            "log10_v_train": self.volumes.log10_v_train,
            "analysis": spec.analysis.model_dump(),
            "optimizers": optimizers,
            "E_points": points,
            "seconds": self.seconds,
        }


def run_sgd_vs_bayes(
    spec: SgdVsBayesSpec | str | Path,
    out: str | Path | None,
    data_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    networks: int | None = None,
) -> SgdVsBayesResult:
    """Train, count, measure V(f|S), and write the table, summary and plots into `out`.

    `networks` overrides spec.sampling.networks. Re-running with the same `out` reuses the
    trained chunks and the computed volumes.
    """
    from flatvol.data import load_task

    if not isinstance(spec, SgdVsBayesSpec):
        spec = load_sgd_vs_bayes_spec(spec)
    if networks is not None:
        if networks < 1:
            raise SpecError(f"networks must be >= 1, got {networks}")
        spec = spec.model_copy(update={"sampling": spec.sampling.model_copy(
            update={"networks": int(networks)})})
    out_dir = Path(out) if out is not None else None
    d = spec.data
    task = load_task(d.task, train_size=d.train_size, attack_size=0, test_size=d.test_size,
                     data_seed=d.data_seed, data_dir=data_dir, classes=d.classes)
    files: dict[str, Path] = {}
    if out_dir is not None:
        files["spec"] = out_dir / "spec.json"
        _save_json(files["spec"], spec.model_dump(mode="json"))

    seconds: dict[str, float] = {}
    samples: dict[str, FunctionSample] = {}
    for optimizer in spec.optimizers:
        samples[optimizer.key] = sample_functions(spec, task, optimizer, out_dir, device,
                                                  progress)
        seconds[f"train_{optimizer.key}"] = round(samples[optimizer.key].seconds, 2)

    needed: set[str] = set()
    for sample in samples.values():
        needed.update(f for f, c in sample.counts().items() if c >= spec.volume.min_count)
    start = time.perf_counter()
    volumes = conditional_volumes(spec, task, sorted(needed),
                                  out_dir / "volumes.json" if out_dir is not None else None,
                                  device, progress)
    seconds["volumes"] = round(time.perf_counter() - start, 2)

    y_E = task.E.y.numpy().astype(np.uint8)
    rows: list[dict[str, Any]] = []
    summaries = []
    for sample in samples.values():
        opt_rows = function_rows(sample, volumes, y_E)
        rows.extend(opt_rows)
        summaries.append(summarize(sample, opt_rows, spec, y_E))
    result = SgdVsBayesResult(spec, task, samples, volumes, rows, summaries, files, seconds)
    if out_dir is not None:
        files["functions"] = _write_csv(out_dir / "functions.csv", rows, CSV_COLUMNS)
        files["points"] = _write_csv(out_dir / "points.csv", result.points())
        files["summary"] = out_dir / "summary.json"
        _save_json(files["summary"], result.summary())
        files["scatter"] = plot_p_opt_vs_v(rows, summaries, out_dir / "p_opt_vs_v.png", False,
                                           spec.volume.estimator, spec.analysis.min_count)
        files["mingard"] = plot_p_opt_vs_v(rows, summaries, out_dir / "mingard.png", True,
                                           spec.volume.estimator, spec.analysis.min_count)
    return result


CSV_COLUMNS = ("optimizer", "function", "count", "p_opt", "log10_p_opt", "log10_v_conditional",
               "log10_v_full", "ep_converged", "errors_E")


def _write_csv(path: Path, rows: list[dict[str, Any]],
               columns: tuple[str, ...] | None = None) -> Path:
    import csv
    import io

    if columns is None:
        columns = tuple(rows[0]) if rows else ()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r[k] for k in columns})
    atomic_write_text(path, buffer.getvalue())
    return path
