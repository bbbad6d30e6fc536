"""Reproduce Fig. 3 in about a minute: the shipped `demo` sweep (MNIST, FCN, attack sets), run,
correlated and plotted.

    python examples/reproduce_fig3.py --out fig3_out
    python examples/reproduce_fig3.py --out tiny --train-size 40 --test-size 60 --seeds 1

Re-running with the same --out resumes: finished runs are read from OUT/results.sqlite.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flatvol.analysis import correlation_table
from flatvol.analysis.figures import fig3_scatter, save_figure
from flatvol.experiments import run_sweep, runs_frame, spec_from_dict
from flatvol.experiments.spec_files import packaged_spec_path, read_spec_file


def main(argv: list[str] | None = None) -> Path:
    """Run the smaller demo sweep, print the correlation table and write OUT/fig3.png.

    Args:
        argv: command-line arguments (default: sys.argv[1:]).

    Returns:
        The PNG written.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("fig3_out"))
    parser.add_argument("--train-size", type=int, default=100, help="|S| (demo: 200)")
    parser.add_argument("--test-size", type=int, default=200, help="|E| (demo: 500)")
    parser.add_argument("--attack-sizes", default="0,25,50,75,100",
                        help="comma-separated attack-set sizes (demo: 0..200 step 50)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="no progress")
    args = parser.parse_args(argv)

    spec = read_spec_file(packaged_spec_path("demo"))
    spec["data"].update(train_size=args.train_size, test_size=args.test_size)
    spec["sweep"].update(attack_sizes=[int(a) for a in args.attack_sizes.split(",")],
                         seeds=args.seeds)
    summary = run_sweep(spec_from_dict(spec, "demo (smaller)"), args.out, workers=args.workers,
                        threads=1, progress=not args.quiet)
    print(f"{summary.planned} runs ({summary.skipped} resumed) in {summary.seconds:.0f} s")

    runs = runs_frame(args.out)
    table = correlation_table(runs, n_resamples=500)
    print(table[["measure", "n", "kendall", "spearman", "pearson"]].to_string(index=False))
    figure = save_figure(fig3_scatter(runs), args.out, "fig3")
    print(f"-> {figure.png}")
    return figure.png


if __name__ == "__main__":
    main()
