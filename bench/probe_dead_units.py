"""Why an FCN ensemble's members do not fit: accuracy and dead ReLUs, from its checkpoint.

A staged sweep's ensemble checkpoint (`OUT/cache/ensemble-<key>.pt`, flatvol.train.
ensemble_checkpoint) holds every member's weights: the stopped members' final weights and the
active members' current ones. For each member of each optimizer's group this prints its seed,
attack size and state, its accuracy on S, on its attack set A and on E, the hidden units that
are dead on all of S u A (ReLU output 0 for every input: no gradient ever reaches them again),
and the Frobenius norm of each layer's weights. FCN specs only (`fcn:W,...`).

    FLATVOL_DATA=../shared/data python bench/probe_dead_units.py fig4_cifar_fcn \
        --checkpoints OUT/cache [--optimizers adam amsgrad]

A checkpoint is deleted once all its group's runs are recorded; copy it first to keep it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from flatvol.data.task import TaskData
from flatvol.experiments import load_spec, plan_runs
from flatvol.experiments.build import load_run_task
from flatvol.experiments.context import SweepContext
from flatvol.experiments.plan import ensemble_groups
from flatvol.experiments.spec_files import resolve_spec_path


def member_weights(saved: dict, member: int) -> dict[str, torch.Tensor]:
    """The weights of `member`: its row of the active params while it trains, else its final
    weights."""
    active = [int(m) for m in saved["active"]]
    if member in active:
        row = active.index(member)
        return {k: v[row] for k, v in saved["params"].items()}
    return {k: v[member] for k, v in saved["final"].items()}


def hidden_and_logits(weights: dict[str, torch.Tensor], x: torch.Tensor, layers: int
                      ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Post-ReLU activations of each hidden layer and the logits (the FCN's forward)."""
    h, hidden = x.flatten(1), []
    for i in range(layers):
        h = torch.relu(h @ weights[f"hidden.{i}.weight"].T + weights[f"hidden.{i}.bias"])
        hidden.append(h)
    return hidden, (h @ weights["readout.weight"].T + weights["readout.bias"]).squeeze(-1)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return ((logits > 0).long() == y.long()).float().mean().item() if len(y) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--checkpoints", type=Path, required=True,
                        help="the directory holding the ensemble-<key>.pt files")
    parser.add_argument("--optimizers", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = load_spec(resolve_spec_path(args.spec))
    layers = len(spec.model.arch.partition(":")[2].split(","))
    ctx = SweepContext(spec, checkpoint_dir=str(args.checkpoints))
    tasks: dict[int, TaskData] = {}
    data_dir = os.environ.get("FLATVOL_DATA")
    for group in ensemble_groups(plan_runs(spec)):
        optimizer = group[0].key.optimizer
        if args.optimizers and optimizer not in args.optimizers:
            continue
        path = ctx.ensemble_checkpoint(group)
        if path is None or not path.is_file():
            print(f"{optimizer}: no checkpoint {path}")
            continue
        saved = torch.load(path, weights_only=True)
        print(f"\n{optimizer}: epoch {saved['epoch']}, {len(saved['active'])} of {len(group)} "
              f"still training ({path.name})\n")
        print("| seed | attack | state | acc S | acc A | acc E | dead units per layer | "
              "weight norms |")
        print("|---|---|---|---|---|---|---|---|")
        for member, run in enumerate(group):
            task = tasks.setdefault(run.attack_size,
                                    load_run_task(spec, run.attack_size, data_dir))
            weights = member_weights(saved, member)
            x_train = torch.cat([task.S.x, task.A.x])
            hidden, _ = hidden_and_logits(weights, x_train, layers)
            dead = [int((h.max(0).values == 0).sum()) for h in hidden]
            acc = [accuracy(hidden_and_logits(weights, split.x, layers)[1], split.y)
                   for split in (task.S, task.A, task.E)]
            fitted = int(saved["fitted_at"][member])
            state = ("training" if member in [int(m) for m in saved["active"]]
                     else f"fitted at {fitted}" if fitted >= 0
                     else f"stopped at {int(saved['epochs'][member])}, not fitted")
            norms = [weights[f"hidden.{i}.weight"].norm().item() for i in range(layers)]
            norms.append(weights["readout.weight"].norm().item())
            print(f"| {run.seed} | {run.attack_size} | {state} | {acc[0]:.4f} | {acc[1]:.4f} | "
                  f"{acc[2]:.3f} | {' / '.join(map(str, dead))} of {spec.model.arch[4:]} | "
                  f"{' / '.join(f'{n:.1f}' for n in norms)} |")


if __name__ == "__main__":
    main()
