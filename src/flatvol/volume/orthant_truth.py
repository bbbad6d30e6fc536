"""Exactly known orthant probabilities by direct sampling: held-out truth for `orthant-is`.

P(sign z = f), z ~ N(0, K), is counted directly: z = L e with e ~ N(0, I), chunk by chunk, and
the draws whose sign pattern is f (or -f: P(f) = P(-f) because z and -z have the same law, which
doubles the effective count; or any function that a symmetry of the kernel maps f to, see
`symmetry_orbit`) are counted. With c hits in N draws on an orbit of m functions the
estimate c / (2 m N) is unbiased with binomial standard error; in log10,
se = sqrt((1 - c/N) / c) / ln 10 (delta method), e.g. 0.003 at c = 21,000. This is independent
of every estimator in this package, so a table of such values checks importance sampling's
error bars on kernels it was not tuned on.

A table (JSON, made by scripts/make_orthant_truth_tables.py) stores, per kernel, how to rebuild
the kernel (`KernelSpec`: inputs and kernel family, no matrices) with a checksum of it, and per
function its labels, hit count and draw count. `load_truth_table` verifies every field and a
digest of the content before anything is used, and refuses a damaged file with one line.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flatvol.errors import VolumeError
from flatvol.io import dumps_json
from flatvol.volume._numerics import LN10
from flatvol.volume.arccos import arccos_kernel

TABLE_FORMAT = "flatvol-orthant-truth/1"
INPUT_KINDS = ("hypercube", "gaussian", "mnist")
KERNEL_KINDS = ("arccos", "rbf", "linear", "cnn-mc")
# A rebuilt kernel must match the stored checksum to this relative accuracy: the analytic
# kernels agree to ~1e-15; the CNN Monte-Carlo kernel sums float32 features, whose rounding may
# depend on the thread count (~1e-7), which moves log10 P by far less than any truth's se.
KERNEL_CHECK_RTOL = 1e-5


@dataclass(frozen=True)
class KernelSpec:
    """How to rebuild one kernel deterministically.

    inputs: 'hypercube' (all 2^dim points of {0,1}^dim, index i has bit k = (i >> (dim-1-k)) & 1,
    n = 2^dim), 'gaussian' (n points of N(0, I_dim) from default_rng(seed)), 'mnist' (the first
    n training images of the embedded MNIST subset, pixels / 255; dim unused).
    kernel: 'arccos' (ReLU FCN NNGP, `depth` hidden layers, sigma_w2, sigma_b2), 'rbf'
    (exp(-|x - x'|^2 / (2 lengthscale^2))), 'linear' (sigma_b2 + sigma_w2 x.x' / dim), 'cnn-mc'
    (Monte-Carlo NNGP of a SmallCNN with `depth` conv layers of 4 channels, `mc_draws` draws,
    seed `seed`, prior (sigma_w2, sigma_b2)); every kernel gets `nugget` times its mean
    diagonal added to the diagonal (the truth is for the kernel with it; the tables' kernels
    factorize without the estimators' jitter, so both see the same kernel).
    """

    name: str
    inputs: str
    n: int
    dim: int
    kernel: str
    depth: int = 0
    sigma_w2: float = 2.0
    sigma_b2: float = 1.0
    lengthscale: float = 1.0
    nugget: float = 0.0
    seed: int = 0
    mc_draws: int = 0


@dataclass(frozen=True)
class TruthFunction:
    """One function's orthant probability by direct sampling (see module doc)."""

    labels: np.ndarray  # +-1, shape (n,)
    hits: int  # draws whose sign pattern is in f's orbit, or its negation
    n_draws: int
    orbit: int = 1  # size of f's symmetry orbit (`symmetry_orbit`), each member as likely as f

    @property
    def log10_probability(self) -> float:
        """log10 of hits / (2 orbit n_draws): P(f) from the symmetric count."""
        return math.log10(self.hits / (2.0 * self.orbit * self.n_draws))

    @property
    def stderr_log10(self) -> float:
        """Binomial standard error of log10_probability (delta method)."""
        return math.sqrt((1.0 - self.hits / self.n_draws) / self.hits) / LN10


@dataclass(frozen=True)
class TruthKernel:
    """A kernel's spec, its checksum and its functions with their sampled truth."""

    spec: KernelSpec
    checksum: tuple[float, float]  # (trace, sum of all entries) of the built kernel
    functions: tuple[TruthFunction, ...]


def _inputs(spec: KernelSpec) -> np.ndarray:
    if spec.inputs == "hypercube":
        i = np.arange(2**spec.dim)
        return np.stack([(i >> (spec.dim - 1 - k)) & 1 for k in range(spec.dim)], 1).astype(
            np.float64)
    if spec.inputs == "gaussian":
        return np.random.default_rng(spec.seed).standard_normal((spec.n, spec.dim))
    from flatvol.data.tasks import load_source  # only this input kind needs the data layer

    images = load_source("mnist", "embedded")[0].x_train[: spec.n]
    return images.reshape(spec.n, -1).astype(np.float64) / 255.0


def _cnn_mc_kernel(spec: KernelSpec, x: np.ndarray) -> np.ndarray:
    import torch

    from flatvol.models.cnn import SmallCNN
    from flatvol.models.prior import Prior
    from flatvol.volume.mc_kernel import mc_nngp_kernel

    side = int(round(math.sqrt(x.shape[1])))
    images = torch.as_tensor(x.reshape(-1, 1, side, side), dtype=torch.float32)
    model = SmallCNN((1, side, side), channels=(4,) * spec.depth,
                     prior=Prior(spec.sigma_w2, spec.sigma_b2))
    return np.asarray(mc_nngp_kernel(model, images, spec.mc_draws, seed=spec.seed,
                                     progress=False).kernel, dtype=np.float64)


def build_kernel(spec: KernelSpec) -> np.ndarray:
    """The kernel a spec describes (see `KernelSpec`), float64 (n, n).

    Args:
        spec: The kernel's spec.

    Returns:
        The kernel matrix, nugget included.

    Raises:
        VolumeError: If the spec names an unknown input or kernel kind.
    """
    if spec.inputs not in INPUT_KINDS or spec.kernel not in KERNEL_KINDS:
        raise VolumeError(f"kernel spec {spec.name!r}: inputs in {INPUT_KINDS} and kernel in "
                          f"{KERNEL_KINDS} expected, got {spec.inputs!r}, {spec.kernel!r}")
    x = _inputs(spec)
    if x.shape[0] != spec.n:
        raise VolumeError(f"kernel spec {spec.name!r}: n = {x.shape[0]} inputs expected from "
                          f"{spec.inputs!r}, got n = {spec.n}")
    if spec.kernel == "arccos":
        K = arccos_kernel(x, spec.depth, spec.sigma_w2, spec.sigma_b2)
    elif spec.kernel == "rbf":
        sq = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
        K = np.exp(-0.5 * sq / spec.lengthscale**2)
    elif spec.kernel == "linear":
        K = spec.sigma_b2 + spec.sigma_w2 * (x @ x.T) / x.shape[1]
    else:
        K = _cnn_mc_kernel(spec, x)
    K = 0.5 * (K + K.T)
    K[np.diag_indices(spec.n)] += spec.nugget * float(np.mean(np.diag(K)))
    return K


def kernel_checksum(K: np.ndarray) -> tuple[float, float]:
    """(trace, sum of entries): enough to notice a kernel rebuilt differently."""
    return float(np.trace(K)), float(np.sum(K))


def sign_keys(z: np.ndarray) -> np.ndarray:
    """Each column's sign pattern up to a global sign, packed into uint64 words.

    Args:
        z: Values or labels, shape (n, M).

    Returns:
        uint64 keys of shape (M, ceil(n / 64)): equal rows iff equal patterns up to sign.
    """
    canonical = (z * np.where(z[:1] >= 0, 1.0, -1.0)) > 0  # first coordinate made positive
    packed = np.packbits(canonical.T, axis=1)
    pad = (-packed.shape[1]) % 8
    packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


def _mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijection of uint64 that scatters structured inputs."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash_rows(keys: np.ndarray) -> np.ndarray:
    """One uint64 per row of packed keys, for sorted look-ups (matches are then verified).

    Each word is mixed before it is combined: a plain multiply-add maps the structured keys
    of sparse patterns (e.g. words (A, B) and (B, A)) to the same hash.
    """
    h = np.zeros(keys.shape[0], dtype=np.uint64)
    for word in keys.T:
        h = _mix64(h ^ _mix64(word + np.uint64(0x9E3779B97F4A7C15)))
    return h


def symmetry_orbit(spec: KernelSpec, labels: np.ndarray) -> np.ndarray:
    """The sign patterns with the same orthant probability as `labels` by a kernel symmetry.

    On hypercube inputs every kernel family here except 'cnn-mc' depends on the inputs only
    through x.x', |x|^2 and |x - x'|^2, which a permutation of the dim bits preserves; so the
    function f(pi(x)) has the probability of f for each of the dim! permutations. Counting the
    whole orbit multiplies the hits by its size (e.g. 35 for one flipped point of weight 3 in
    {0,1}^7), without changing what is estimated.

    Args:
        spec: The kernel's spec.
        labels: A label vector in {-1, +1}, shape (n,).

    Returns:
        The orbit members distinct up to a global sign (labels first), shape (m, n).
    """
    f = np.asarray(labels, dtype=np.float64)
    if spec.inputs != "hypercube" or spec.kernel == "cnn-mc":
        return f[None, :]
    i = np.arange(spec.n)
    bits = np.stack([(i >> (spec.dim - 1 - k)) & 1 for k in range(spec.dim)], 1)
    perms = np.array(list(itertools.permutations(range(spec.dim))))
    # index of x with its bits permuted, for every permutation: (perms, n)
    weights = 1 << (spec.dim - 1 - np.arange(spec.dim))
    moved = np.einsum("pnk,k->pn", bits[:, perms].transpose(1, 0, 2), weights)
    members = f[moved]
    _, first = np.unique(sign_keys(members.T), axis=0, return_index=True)  # keys ignore sign
    first = np.sort(first)  # the identity permutation comes first, so labels stay first
    return members[first]


def sample_sign_patterns(
    K: np.ndarray, n_draws: int, seed: int, *, chunk: int = 50_000
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct sign patterns (up to a global sign) of n_draws draws of N(0, K), with counts.

    Args:
        K: Covariance, (n, n), positive semi-definite.
        n_draws: Number of draws.
        seed: Seed of the draws.
        chunk: Draws per block (memory O(n chunk)).

    Returns:
        (labels (m, n) in {-1, +1} with labels[:, 0] = +1, counts (m,)), most frequent first.
    """
    root = _psd_root(K)
    rng = np.random.default_rng(seed)
    keys, counts = [], []
    for start in range(0, n_draws, chunk):
        z = root @ rng.standard_normal((K.shape[0], min(chunk, n_draws - start)))
        k, c = np.unique(sign_keys(z), axis=0, return_counts=True)
        keys.append(k)
        counts.append(c)
    merged, inverse = np.unique(np.concatenate(keys), axis=0, return_inverse=True)
    total = np.bincount(inverse.ravel(), weights=np.concatenate(counts)).astype(np.int64)
    order = np.argsort(-total, kind="stable")
    bits = np.unpackbits(merged[order].view(np.uint8), axis=1)[:, : K.shape[0]]
    return np.where(bits == 1, 1.0, -1.0), total[order]


def count_orthant_hits(
    K: np.ndarray, targets: Sequence[np.ndarray], n_draws: int, seed: int, *,
    chunk: int = 50_000,
) -> np.ndarray:
    """How many of n_draws draws z ~ N(0, K) hit each target (a sign pattern or an orbit).

    A draw hits target t when its sign pattern, or its negation, is one of t's rows.

    Args:
        K: Covariance, (n, n), positive semi-definite.
        targets: Per target, label vectors in {-1, +1}: shape (n,) or (m, n) (e.g. an orbit of
            `symmetry_orbit`); the targets must be disjoint.
        n_draws: Number of draws.
        seed: Seed of the draws (the same seed gives the same counts).
        chunk: Draws per block (memory O(n chunk)).

    Returns:
        Hit counts, int64 of shape (len(targets),).

    Raises:
        VolumeError: If two targets share a sign pattern.
    """
    if not targets:
        return np.zeros(0, dtype=np.int64)
    rows = [np.atleast_2d(np.asarray(t, dtype=np.float64)) for t in targets]
    owner = np.repeat(np.arange(len(rows)), [r.shape[0] for r in rows])
    keys = sign_keys(np.concatenate(rows).T)
    hashes = _hash_rows(keys)
    order = np.argsort(hashes, kind="stable")
    keys, hashes, owner = keys[order], hashes[order], owner[order]
    if np.any(hashes[1:] == hashes[:-1]):
        raise VolumeError("targets: disjoint sign patterns expected, got a pattern (or a hash) "
                          "in two targets")
    root = _psd_root(K)
    rng = np.random.default_rng(seed)
    hits = np.zeros(len(rows), dtype=np.int64)
    for start in range(0, n_draws, chunk):
        z = root @ rng.standard_normal((K.shape[0], min(chunk, n_draws - start)))
        drawn = sign_keys(z)
        at = np.minimum(np.searchsorted(hashes, _hash_rows(drawn)), hashes.size - 1)
        match = np.all(keys[at] == drawn, axis=1)  # the hash only finds the candidate
        hits += np.bincount(owner[at[match]], minlength=len(rows))
    return hits


def _psd_root(K: np.ndarray) -> np.ndarray:
    """A square root R with R R^T = K: Cholesky when it exists, else from eigh (singular K)."""
    try:
        return np.linalg.cholesky(K)
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(K)
        return vectors * np.sqrt(np.clip(values, 0.0, None))


# ---- Table files ---------------------------------------------------------------------------


def table_digest(kernels: list[dict[str, Any]]) -> str:
    """sha256 of a table's `kernels` list in the module's JSON convention (sorted keys)."""
    return hashlib.sha256(dumps_json(kernels).encode()).hexdigest()


def labels_to_bits(labels: np.ndarray) -> str:
    """'1' for +1, '0' for -1: the table's label format."""
    return "".join("1" if v > 0 else "0" for v in labels)


def table_to_json(kernels: Sequence[TruthKernel]) -> dict[str, Any]:
    """The JSON object of a table (with the digest `load_truth_table` checks)."""
    body = [{"spec": vars(k.spec), "checksum": list(k.checksum),
             "functions": [{"bits": labels_to_bits(f.labels), "hits": f.hits,
                            "n_draws": f.n_draws, "orbit": f.orbit} for f in k.functions]}
            for k in kernels]
    return {"format": TABLE_FORMAT, "sha256": table_digest(body), "kernels": body}


def _field(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise VolumeError(f"{where}: field {key!r} expected, got none")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise VolumeError(f"{where}.{key}: {names} expected, got {type(value).__name__}")
    return value


def _parse_spec(raw: Any, where: str) -> KernelSpec:
    if not isinstance(raw, dict) or set(raw) != set(KernelSpec.__dataclass_fields__):
        raise VolumeError(f"{where}.spec: the fields of KernelSpec expected, got "
                          f"{sorted(raw) if isinstance(raw, dict) else type(raw).__name__}")
    numeric = (int, float)
    where = f"{where}.spec"
    spec = KernelSpec(
        name=_field(raw, "name", str, where), inputs=_field(raw, "inputs", str, where),
        n=_field(raw, "n", int, where), dim=_field(raw, "dim", int, where),
        kernel=_field(raw, "kernel", str, where), depth=_field(raw, "depth", int, where),
        sigma_w2=float(_field(raw, "sigma_w2", numeric, where)),
        sigma_b2=float(_field(raw, "sigma_b2", numeric, where)),
        lengthscale=float(_field(raw, "lengthscale", numeric, where)),
        nugget=float(_field(raw, "nugget", numeric, where)), seed=_field(raw, "seed", int, where),
        mc_draws=_field(raw, "mc_draws", int, where))
    if spec.n < 1 or spec.inputs not in INPUT_KINDS or spec.kernel not in KERNEL_KINDS:
        raise VolumeError(f"{where}: n >= 1, inputs in {INPUT_KINDS}, kernel in "
                          f"{KERNEL_KINDS} expected, got {spec.n}, {spec.inputs!r}, "
                          f"{spec.kernel!r}")
    return spec


def _parse_function(raw: Any, n: int, where: str) -> TruthFunction:
    bits = _field(raw, "bits", str, where)
    hits, draws = _field(raw, "hits", int, where), _field(raw, "n_draws", int, where)
    orbit = _field(raw, "orbit", int, where)
    if len(bits) != n or set(bits) - {"0", "1"}:
        raise VolumeError(f"{where}.bits: {n} characters 0/1 expected, got {len(bits)}: "
                          f"{bits[:20]!r}")
    if not 0 < hits <= draws or orbit < 1:
        raise VolumeError(f"{where}: 0 < hits <= n_draws and orbit >= 1 expected, got {hits} "
                          f"of {draws}, orbit {orbit}")
    labels = np.array([1.0 if b == "1" else -1.0 for b in bits])
    return TruthFunction(labels=labels, hits=hits, n_draws=draws, orbit=orbit)


def load_truth_table(path: str | Path) -> tuple[TruthKernel, ...]:
    """Read and verify a truth table (format TABLE_FORMAT, see module doc).

    Args:
        path: The JSON file.

    Returns:
        Its kernels with their functions.

    Raises:
        VolumeError: One line naming the file and field, if the file is missing, not JSON, of
            another format, damaged (digest mismatch) or has a malformed field.
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VolumeError(f"{path}: a JSON truth table expected, got {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if _field(obj, "format", str, str(path)) != TABLE_FORMAT:
        raise VolumeError(f"{path}: format {TABLE_FORMAT!r} expected, got {obj['format']!r}")
    body = _field(obj, "kernels", list, str(path))
    if _field(obj, "sha256", str, str(path)) != table_digest(body):
        raise VolumeError(f"{path}: content does not match its sha256 (damaged or edited)")
    kernels = []
    for i, raw in enumerate(body):
        where = f"{path}: kernels[{i}]"
        spec = _parse_spec(_field(raw, "spec", dict, where), where)
        checksum = _field(raw, "checksum", list, where)
        if len(checksum) != 2 or not all(isinstance(c, (int, float)) and math.isfinite(c)
                                         for c in checksum):
            raise VolumeError(f"{where}.checksum: two finite numbers expected, got {checksum}")
        functions = tuple(_parse_function(f, spec.n, f"{where}.functions[{j}]")
                          for j, f in enumerate(_field(raw, "functions", list, where)))
        kernels.append(TruthKernel(spec, (float(checksum[0]), float(checksum[1])), functions))
    return tuple(kernels)


def rebuild_checked_kernel(entry: TruthKernel) -> np.ndarray:
    """Rebuild a table's kernel and check it against the stored checksum.

    Args:
        entry: A kernel of a loaded table.

    Returns:
        The kernel.

    Raises:
        VolumeError: If the rebuilt kernel's checksum differs by more than KERNEL_CHECK_RTOL.
    """
    K = build_kernel(entry.spec)
    got = kernel_checksum(K)
    if not np.allclose(got, entry.checksum, rtol=KERNEL_CHECK_RTOL, atol=0.0):
        raise VolumeError(f"kernel {entry.spec.name!r}: checksum {entry.checksum} expected, got "
                          f"{got} (the kernel code or data changed since the table was made)")
    return K
