"""Which pipeline stages a `flatvol run` visits, and how often: the walk of a spec, measured.

    python scripts/walk_spec.py [SPEC] [--out DIR]

Runs the spec cut to one seed and one attack size (one run: every stage should run once, the
pre-flight's dry run on tiny stand-ins aside) under a profiler and prints, per stage, the
calls made before the first run starts (the pre-flight and planning) and after (the run), and
the flatvol source files the calls pass through. A stage called from inside another stage
(the kernel request that prior_kernel checks, the stand-in model it builds) is one of that
stage's steps: it is shown apart, in parentheses. Used for the counts in issue 26's note.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from flatvol.experiments.spec import load_spec
from flatvol.experiments.spec_files import resolve_spec_path

# stage -> the functions that do it (code object names, qualified by their module's file)
STAGES = {
    "plan the runs": ("plan.py", ("plan_runs", "staged_plan", "plan_sweep")),
    "read the store": ("store_frames.py", ("recorded_runs",)),
    "load the task": ("build.py", ("load_run_task",)),
    "build the model": ("registry.py", ("build_model",)),
    "check the kernel request": ("kernels.py", ("check",)),
    "compute the kernel": ("context.py", ("compute_kernel",)),
    "make the optimizer": ("optimizers.py", ("make_optimizer",)),
    "compute measures": ("catalogue.py", ("compute_measures",)),
    "train": ("loop.py", ("train_to_fit",)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="demo")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    spec = load_spec(resolve_spec_path(args.spec))
    spec = spec.model_copy(update={"sweep": spec.sweep.model_copy(
        update={"attack_sizes": [0], "seeds": 1})})
    out = Path(args.out or tempfile.mkdtemp(prefix="walk-"))

    import flatvol
    from flatvol.experiments import runner

    root = str(Path(flatvol.__file__).parent)
    wanted = {(file, name): stage for stage, (file, names) in STAGES.items() for name in names}
    phase = ["pre-flight and planning"]
    calls: Counter = Counter()
    files: dict[str, set[str]] = {"pre-flight and planning": set(), "the run": set()}

    original_context = runner.prepare_context

    def context_marks_the_run(*a, **k):
        phase[0] = "the run"
        return original_context(*a, **k)

    runner.prepare_context = context_marks_the_run

    # The stage calls in progress (their frames): a stage called from inside another is a step
    # of that one (prior_kernel checks its own request and builds its stand-in model), and is
    # counted apart, as `nested`.
    active: list[Any] = []
    nested: Counter = Counter()

    def profile(frame, event, arg):
        if event == "return":
            if active and active[-1] is frame:
                active.pop()
            return
        if event != "call":
            return
        path = frame.f_code.co_filename
        if not path.startswith(root):
            return
        rel = path[len(root) + 1:]
        files[phase[0]].add(rel)
        for (file, name), stage in wanted.items():
            if frame.f_code.co_name == name and rel.endswith(file):
                (nested if active else calls)[(phase[0], stage)] += 1
                active.append(frame)

    sys.setprofile(profile)
    try:
        runner.run_sweep(spec, out, progress=False, threads=1)
    finally:
        sys.setprofile(None)
    print(f"spec {args.spec}, one run, out {out}")
    print(f"{'stage':28s} {'pre-flight':>10s} {'the run':>8s}   (inside another stage: "
          "pre-flight / run)")
    for stage in STAGES:
        print(f"{stage:28s} {calls[('pre-flight and planning', stage)]:10d} "
              f"{calls[('the run', stage)]:8d}   ({nested[('pre-flight and planning', stage)]}"
              f" / {nested[('the run', stage)]})")
    for name, seen in files.items():
        print(f"files passed through in {name}: {len(seen)}")


if __name__ == "__main__":
    main()
