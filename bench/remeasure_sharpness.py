"""Measure kept networks again with other Keskar sharpness settings, into a store of their own.

`flatvol collect` with the sharpness maximizer's own options (the 'paper' maximizer's epoch
count, which the CLI does not take): each run directory (kept by `flatvol run --keep-networks`)
is measured with test accuracy and Keskar sharpness at the given maximizer, box size and
options, and recorded in OUT's store; `python scripts/panel_summary.py OUT` then gives tau with
test accuracy. Re-running skips the runs already in OUT.

    OMP_NUM_THREADS=1 .venv/bin/python bench/remeasure_sharpness.py RUN_DIR [RUN_DIR ...] \\
        --out OUT --maximizer paper --epsilon 1e-4 [--paper-epochs 5] [--data-dir DIR]
"""

from __future__ import annotations

import argparse

from flatvol.experiments.collect import collect_runs
from flatvol.measures import MeasuresSpec, SharpnessSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--maximizer", default="fast", choices=("fast", "paper", "lbfgsb"))
    parser.add_argument("--epsilon", type=float, default=1e-4)
    parser.add_argument("--paper-epochs", type=int, default=None,
                        help="epochs of the 'paper' maximizer (default: its 100)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    options = {} if args.paper_epochs is None else {"epochs": args.paper_epochs}
    settings = MeasuresSpec(final=["sharpness"], sharpness=SharpnessSpec(
        epsilon=args.epsilon, maximizer=args.maximizer, options=options))
    summary = collect_runs(args.run_dirs, args.out, settings, data_dir=args.data_dir,
                           progress=True)
    print(f"{summary.collected} measured, {summary.skipped} already in {summary.store}, "
          f"{summary.failed} failed")


if __name__ == "__main__":
    main()
