"""Matrix-free estimators on a symmetric matvec v -> H v (no Hessian is ever formed).

- Lanczos tridiagonalization with full reorthogonalization, for extreme eigenvalues; callers
  stop it when the Ritz residuals |beta_m s_mi| fall below tol * ||T_m|| (Golub & Van Loan,
  Matrix Computations, ch. 10);
- Hutchinson (1989) trace and squared-Frobenius estimates with Rademacher probes;
- Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021), which first takes the trace exactly on a
  sketched top subspace.

flatvol.flatness.hessian applies them to Hessian-vector products of the training loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal

from flatvol.errors import SpecError
from flatvol.progress import ProgressBar, track

MatVec = Callable[[torch.Tensor], torch.Tensor]

# ---------------------------------------------------------------------------------------
# Linear-algebra kernels on an abstract symmetric matvec
# ---------------------------------------------------------------------------------------
class Lanczos:
    """Lanczos tridiagonalization with full (twice-applied Gram-Schmidt) reorthogonalization.

    Stores the Krylov basis (max_iter x n) so Ritz vectors can be formed and every new vector
    is orthogonalized against all previous ones, which keeps the Ritz values free of the
    spurious copies plain Lanczos produces.
    """

    def __init__(self, matvec: MatVec, start: torch.Tensor, max_iter: int):
        self.matvec = matvec
        self.max_iter = min(int(max_iter), start.numel())
        self.basis = torch.empty(self.max_iter, start.numel(), dtype=start.dtype,
                                 device=start.device)  # rows beyond `size` are never read
        self.basis[0] = start / torch.linalg.vector_norm(start)
        self.alpha: list[float] = []
        self.beta: list[float] = []  # beta[j] couples basis[j] and basis[j + 1]
        self.residual_norm = math.inf  # norm of the last (unnormalized) residual vector
        self.scale = 0.0  # max |alpha|, beta so far: the scale breakdown is measured against
        self.done = False

    @property
    def size(self) -> int:
        return len(self.alpha)

    def step(self) -> bool:
        """One Lanczos step; False once the basis is complete or an invariant subspace is hit."""
        if self.done:
            return False
        j = self.size
        q = self.basis[j]
        w = self.matvec(q)
        a = float(torch.dot(q, w))
        w = w - a * q
        if j > 0:
            w = w - self.beta[j - 1] * self.basis[j - 1]
        used = self.basis[: j + 1]
        for _ in range(2):
            w = w - used.T @ (used @ w)
        b = float(torch.linalg.vector_norm(w))
        self.alpha.append(a)
        self.residual_norm = b
        # Breakdown is judged against the largest |alpha|, beta seen so far (a lower bound on
        # ||A||), not the latest ones: once the Krylov space is invariant the next alpha and
        # beta are round-off themselves, and a local test would keep normalizing noise into
        # new "directions" (Ritz values then run off to 1e100 and more).
        self.scale = max(self.scale, abs(a), self.beta[-1] if self.beta else 0.0,
                         np.finfo(float).tiny)
        if j + 1 >= self.max_iter or b <= 1e3 * torch.finfo(w.dtype).eps * self.scale:
            self.done = True
            return False
        self.beta.append(b)
        self.basis[j + 1] = w / b
        return True

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and the eigenvectors of the tridiagonal matrix T_m."""
        d = np.asarray(self.alpha, dtype=np.float64)
        e = np.asarray(self.beta[: self.size - 1], dtype=np.float64)
        if d.size == 1:
            return d.copy(), np.ones((1, 1))
        return eigh_tridiagonal(d, e)


def rademacher(n: int, count: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """count x n matrix of independent +-1 entries."""
    signs = torch.randint(0, 2, (count, n), generator=generator, dtype=torch.int8)
    return (signs.to(like.device, like.dtype) * 2 - 1)


@dataclass(frozen=True)
class TraceEstimate:
    trace: float
    trace_std_error: float
    frobenius_sq: float
    frobenius_sq_std_error: float
    n_matvec: int


def _std_error(samples: list[float]) -> float:
    if len(samples) < 2:
        return math.nan
    return float(np.std(samples, ddof=1) / math.sqrt(len(samples)))


def hutchinson(matvec: MatVec, n: int, n_probes: int, generator: torch.Generator,
               like: torch.Tensor, progress: bool = False) -> TraceEstimate:
    """tr(H) ~ mean v.Hv and tr(H^2) ~ mean |Hv|^2 with Rademacher v (one matvec per probe)."""
    traces, squares = [], []
    for _ in track(range(n_probes), "hutchinson", enabled=progress, unit="probes"):
        v = rademacher(n, 1, generator, like)[0]
        hv = matvec(v)
        traces.append(float(torch.dot(v, hv)))
        squares.append(float(torch.dot(hv, hv)))
    return TraceEstimate(float(np.mean(traces)), _std_error(traces), float(np.mean(squares)),
                          _std_error(squares), n_probes)


def hutchpp(matvec: MatVec, n: int, n_matvec: int, generator: torch.Generator,
            like: torch.Tensor, progress: bool = False) -> TraceEstimate:
    """Hutch++ with n_matvec = 3k matvecs: exact trace on Q = orth(H S), Hutchinson on the rest.

    tr(H)   = tr(Q^T H Q) + (1/k) sum_j g'_j.H g'_j,     g'_j = (I - QQ^T) g_j
    tr(H^2) = ||H Q||_F^2 + (1/k) sum_j ||H g'_j||^2
    (the second line is Hutch++ applied to H^2, reusing the same products since H = H^T).
    """
    k = n_matvec // 3
    if k < 1:
        raise SpecError(f"Hutch++ needs at least 3 Hessian-vector products, got {n_matvec}")
    k = min(k, n)
    with ProgressBar("hutch++", total=3 * k, enabled=progress, unit="matvecs",
                     leave=False) as bar:

        def apply(vectors: torch.Tensor) -> torch.Tensor:
            out = []
            for v in vectors:
                out.append(matvec(v))
                bar.advance()
            return torch.stack(out)

        sketch = apply(rademacher(n, k, generator, like))  # rows are H s_j
        q, _ = torch.linalg.qr(sketch.T)  # n x k orthonormal basis of range(H S)
        hq = apply(q.T)
        exact_trace = float((q.T * hq).sum())
        exact_square = float((hq * hq).sum())
        g = rademacher(n, k, generator, like)
        g = g - (g @ q) @ q.T
        hg = apply(g)
    traces = (g * hg).sum(dim=1).tolist()
    squares = (hg * hg).sum(dim=1).tolist()
    return TraceEstimate(exact_trace + float(np.mean(traces)), _std_error(traces),
                          exact_square + float(np.mean(squares)), _std_error(squares), 3 * k)
