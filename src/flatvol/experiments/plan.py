"""Planning a sweep: the runs of a spec, and which of them can train together.

    plan_runs(spec)        -> [PlannedRun]          (seed-major, so a partial sweep is balanced)
    ensemble_groups(runs)  -> [[PlannedRun]]        (runs of one optimizer: they train together)
    staged_plan(spec, todo) -> [(group, missing)]   (each group with its runs still to record)
"""

from __future__ import annotations

from dataclasses import dataclass

from flatvol.experiments.spec import ExperimentSpec, OptimizerSpec
from flatvol.experiments.store import RunKey


@dataclass(frozen=True)
class PlannedRun:
    """One (optimizer, attack size, seed) run of a spec, with the hash of its settings."""

    key: RunKey
    config_hash: str
    optimizer: OptimizerSpec
    attack_size: int
    seed: int


def plan_runs(spec: ExperimentSpec) -> list[PlannedRun]:
    """All (optimizer, attack size, seed) runs of the spec, seed-major.

    Args:
        spec: The validated experiment spec.

    Returns:
        One PlannedRun per (optimizer, attack size, seed), seed-major.
    """
    spec_hash = spec.spec_hash()
    runs = []
    for seed in spec.sweep.seed_values():
        for opt in spec.optimizers:
            config_hash = spec.config_hash(opt)
            for attack in spec.sweep.attack_values():
                runs.append(PlannedRun(RunKey(spec_hash, opt.key, attack, seed), config_hash,
                                       opt, attack, seed))
    return runs


def ensemble_groups(runs: list[PlannedRun]) -> list[list[PlannedRun]]:
    """`runs` split into groups that differ only by seed and attack size (one optimizer): a
    sweep planned by stage trains each group as one ensemble, every member on S plus its own
    attack set (a prefix of the largest one). In order of first appearance, each group in plan
    order.

    Args:
        runs: planned runs (plan_runs order).

    Returns:
        One list of runs per optimizer key.
    """
    groups: dict[str, list[PlannedRun]] = {}
    for run in runs:
        groups.setdefault(run.optimizer.key, []).append(run)
    return list(groups.values())


def staged_plan(spec: ExperimentSpec, todo: list[PlannedRun]
                ) -> list[tuple[list[PlannedRun], list[PlannedRun]]]:
    """The plan of a sweep planned by stage: each ensemble group of the whole spec with its
    runs still to record. The whole group trains (so a resumed sweep trains exactly the
    ensemble an uninterrupted one trains, and gets the same numbers); only `todo` is measured.

    Args:
        spec: The validated experiment spec.
        todo: The runs still to record (any order).

    Returns:
        (group, missing) per group with at least one run to record, in plan order; `missing`
        keeps the group's order.
    """
    keys = {run.key for run in todo}
    plan = []
    for group in ensemble_groups(plan_runs(spec)):
        missing = [run for run in group if run.key in keys]
        if missing:
            plan.append((group, missing))
    return plan
