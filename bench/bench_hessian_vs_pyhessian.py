"""Top Hessian eigenvalue and trace: flatvol.flatness vs PyHessian 0.1, side by side.

Network: the paper's FCN 784-40-40-1 (float32) trained with SGD (lr 0.01, batch 32, sigmoid
cross-entropy) until MNIST S (|S| = 500) is fit; the loss is the mean over all of S.

- top eigenvalue: flatvol Lanczos (full reorthogonalization, tol 1e-6) vs PyHessian power
  iteration (its defaults: maxIter 100, tol 1e-3); reference: float64 Lanczos at tol 1e-10.
- trace: flatvol Hutchinson vs PyHessian Hutchinson with the same probe count (PyHessian's
  default stops after ~25 probes, so it runs here with tol=0 and maxIter=N). Both draw their
  Rademacher probes from a CPU generator seeded with the repeat index, which yields the same
  +-1 vectors, so their difference measures the HVPs, not probe noise; across repeats the
  probes differ. Plus flatvol
  Hutch++ with the same number of HVPs; reference: the exact trace, which for a ReLU network
  equals the Gauss-Newton trace (1/n) sum_i s_i (1 - s_i) ||grad f_i||^2 (every second
  derivative d^2 f / d w_j^2 vanishes; tested in tests/flatness/test_flatness_hessian.py).

Timing alternates the two sides (A B A B ...), one thread, and quotes medians.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_hessian_vs_pyhessian.py
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
from pyhessian import hessian as PyHessian  # bench-only dependency (pip install pyhessian)
from torch import nn

from _paper_fcn import trained_paper_fcn  # bench/ is on sys.path when run as a script
from flatvol.flatness import FunctionalLoss, hessian_top_eigenvalues, hessian_trace


def gauss_newton_trace(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact tr(H) for a ReLU net with sigmoid cross-entropy, in float64."""
    model64 = copy.deepcopy(model).double()
    with FunctionalLoss(model64, x.double(), y.double()) as fl:
        def logit(w, xi):
            return fl.forward(w, xi[None])[0]

        grads = torch.func.vmap(torch.func.grad(logit), in_dims=(None, 0))(fl.w0, fl.x)
        s = torch.sigmoid(fl.outputs(fl.w0))
        return float((s * (1 - s) * (grads**2).sum(dim=1)).mean())


def pyhessian_for(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> PyHessian:
    model.zero_grad(set_to_none=True)  # PyHessian adds to .grad: start from none
    return PyHessian(model, nn.BCEWithLogitsLoss(), data=(x, y), cuda=False)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--probes", type=int, default=300, help="trace probes / HVPs")
    parser.add_argument("--data-dir", default=None, help="MNIST dir (default: embedded subset)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, x, y = trained_paper_fcn(args.data_dir, args.seed)
    n_params = sum(p.numel() for p in model.parameters())

    reference_top = hessian_top_eigenvalues(copy.deepcopy(model).double(), x.double(), y.double(),
                                            tol=1e-10, max_iter=300).eigenvalues[0]
    exact_trace = gauss_newton_trace(model, x, y)
    print(f"{n_params} parameters; reference top eigenvalue {reference_top:.6g}, "
          f"exact trace {exact_trace:.6g}")

    def ours_top():
        return hessian_top_eigenvalues(model, x, y, k=1, seed=args.seed)

    def pyh_top():
        torch.manual_seed(args.seed)
        values, _ = pyhessian_for(model, x, y).eigenvalues()
        return values[0]

    def pyh_top_tight():  # PyHessian at an accuracy closer to flatvol's default
        torch.manual_seed(args.seed)
        values, _ = pyhessian_for(model, x, y).eigenvalues(maxIter=1000, tol=1e-6)
        return values[0]

    def ours_hutchinson(seed: int):
        return hessian_trace(model, x, y, method="hutchinson", n_hvp=args.probes, seed=seed)

    def ours_hutchpp(seed: int):
        return hessian_trace(model, x, y, method="hutchpp", n_hvp=args.probes, seed=seed)

    def pyh_trace(seed: int):
        torch.manual_seed(seed)
        return float(np.mean(pyhessian_for(model, x, y).trace(maxIter=args.probes, tol=0.0)))

    rows: dict[str, list[tuple[float, float]]] = {k: [] for k in
                                                   ("ours_top", "pyh_top", "pyh_top_tight",
                                                    "ours_hutchinson",
                                                    "pyh_trace", "ours_hutchpp")}
    n_hvp_top = []
    for r in range(args.repeats):  # A B A B: the sides alternate within every repeat
        result, t = timed(ours_top)
        rows["ours_top"].append((result.eigenvalues[0], t))
        n_hvp_top.append(result.n_hvp)
        rows["pyh_top"].append(timed(pyh_top))
        rows["pyh_top_tight"].append(timed(pyh_top_tight))
        result, t = timed(lambda r=r: ours_hutchinson(r))
        rows["ours_hutchinson"].append((result.trace, t))
        rows["pyh_trace"].append(timed(lambda r=r: pyh_trace(r)))
        result, t = timed(lambda r=r: ours_hutchpp(r))
        rows["ours_hutchpp"].append((result.trace, t))
        model.zero_grad(set_to_none=True)

    med = {k: (statistics.median(v for v, _ in rs), statistics.median(t for _, t in rs))
           for k, rs in rows.items()}
    print(f"\nmedians over {args.repeats} alternating repeats, 1 thread "
          f"(trace: {args.probes} probes / HVPs each)")
    print(f"{'estimate':34s} {'value':>12s} {'rel. to ref':>12s} {'seconds':>9s}")
    labels = {"ours_top": "top eig  flatvol Lanczos",
              "pyh_top": "top eig  PyHessian power (tol 1e-3)",
              "pyh_top_tight": "top eig  PyHessian power (tol 1e-6)",
              "ours_hutchinson": "trace    flatvol Hutchinson",
              "pyh_trace": "trace    PyHessian Hutchinson",
              "ours_hutchpp": "trace    flatvol Hutch++"}
    for key, label in labels.items():
        ref = reference_top if "top" in key else exact_trace
        value, seconds = med[key]
        print(f"{label:34s} {value:12.6g} {value / ref - 1:+12.2e} {seconds:9.3f}")
    print(f"flatvol Lanczos used {statistics.median(n_hvp_top)} HVPs (median)")

    top_diff = abs(med["ours_top"][0] / med["pyh_top"][0] - 1)
    trace_diff = abs(med["ours_hutchinson"][0] / med["pyh_trace"][0] - 1)
    hutchpp_diff = abs(med["ours_hutchpp"][0] / med["pyh_trace"][0] - 1)
    print(f"\ntop eigenvalue: flatvol vs PyHessian differ by {top_diff:.2%} (target <= 1%): "
          f"{'PASS' if top_diff <= 0.01 else 'FAIL'}")
    print(f"trace (Hutchinson, same probes): differ by {trace_diff:.2%} (target <= 5%): "
          f"{'PASS' if trace_diff <= 0.05 else 'FAIL'}; Hutch++ vs PyHessian {hutchpp_diff:.2%}")
    print(f"wall-time ratio PyHessian / flatvol: top eigenvalue "
          f"{med['pyh_top'][1] / med['ours_top'][1]:.2f}x (PyHessian tol 1e-3), "
          f"{med['pyh_top_tight'][1] / med['ours_top'][1]:.2f}x (tol 1e-6); "
          "trace (same probe count) "
          f"{med['pyh_trace'][1] / med['ours_hutchinson'][1]:.2f}x, "
          "PyHessian Hutchinson / flatvol Hutch++ "
          f"{med['pyh_trace'][1] / med['ours_hutchpp'][1]:.2f}x")


if __name__ == "__main__":
    main()
