"""What one sgd-vs-bayes network costs to train at a given |S|: the spec's protocol, a few networks.

    OMP_NUM_THREADS=1 python bench/sgd_vs_bayes_cost.py sgd_vs_bayes_large --train-size 10000 \
        --networks 64 --data-dir ../shared/data

Trains `networks` networks (one ensemble chunk, one thread) with the spec's data, model and
training settings at |S| = train-size, through the runner's own `sample_functions` into a
throwaway store, and prints the seconds, seconds per network, mean epochs and test error on the
pool. Run two sizes side by side (one per core) to compare them under the same load.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from flatvol.experiments.build import load_run_task
from flatvol.experiments.spec_files import resolve_spec_path
from flatvol.experiments.store import Store
from flatvol.sgd_vs_bayes.run import sample_functions
from flatvol.sgd_vs_bayes.spec import SgdVsBayesSpec, load_sgd_vs_bayes_spec


def spec_at(name: str, train_size: int, networks: int, chunk: int) -> SgdVsBayesSpec:
    """A shipped or file spec's protocol at another |S|, number of networks and chunk size.

    Args:
        name: the spec's name or file.
        train_size, networks, chunk: the values that replace the spec's.

    Returns:
        The changed spec.
    """
    spec = load_sgd_vs_bayes_spec(resolve_spec_path(name))
    return spec.model_copy(update={
        "data": spec.data.model_copy(update={"train_size": train_size}),
        "sampling": spec.sampling.model_copy(update={"networks": networks, "chunk": chunk})})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--train-size", type=int, required=True)
    parser.add_argument("--networks", type=int, default=64)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = spec_at(args.spec, args.train_size, args.networks, chunk=args.networks)
    task = load_run_task(spec, 0, args.data_dir)
    with tempfile.TemporaryDirectory() as out, Store(out) as store:
        start = time.perf_counter()
        sample = sample_functions(spec, task, spec.optimizers[0], store)
        seconds = time.perf_counter() - start
    error = float(np.mean(sample.labels_E[sample.fitted] != task.E.y.numpy()[None, :]))
    print(f"|S| = {args.train_size}: {args.networks} networks in {seconds:.1f} s "
          f"({seconds / args.networks:.2f} s a network), {sample.n_fitted} fitted, mean epochs "
          f"{sample.epochs.mean():.1f}, test error on the pool {error:.3f}")


if __name__ == "__main__":
    main()
