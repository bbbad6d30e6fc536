"""Bounds on every number of a spec, a run file or a command option that sizes memory or time.

One table, read by the spec schemas (pydantic validators), the run.json check, the model-spec
parser and the command options, so that a number no real experiment needs is refused in one
line before any work: not as a MemoryError while a range is expanded, an allocator failure while
a network is built, or an SQLite overflow after the training it was meant to record. Every bound
is orders of magnitude past the largest experiment of the paper (55 networks of at most 2.4e7
parameters on at most 60,000 images), and its comment says what it protects.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral

# --------------------------------------------------------------------------- the table
# Seed values (run seeds, data_seed, mc_seed, option seeds): the store keys runs by seed in an
# SQLite INTEGER column, which is signed 64-bit; torch.manual_seed takes up to 2**64 - 1, so
# the derived data-order seed (seed + 1_000_003, flatvol.train.protocol) still fits.
MAX_SEED = 2**63 - 1
# Seeds of one sweep: each is a trained network per optimizer and attack size.
MAX_SEEDS = 10_000
# Values on the attack-size axis: each is a trained network per optimizer and seed.
MAX_ATTACK_SIZES = 10_000
# Planned runs of one sweep (optimizers x attack sizes x seeds): the plan holds a record per run
# (10**6 runs take 11 s and 0.7 GB to plan, before the first one trains).
MAX_SWEEP_RUNS = 100_000
# Examples in S, A or E, and batch sizes: the largest pool (MNIST) has 60,000 images; the data
# loader checks the actual pool, this only keeps a number from being allocated or stored first.
MAX_DATA_SIZE = 10_000_000
# Hidden width of an FCN layer, channels of a CNN layer, a ResNet's base width.
MAX_WIDTH = 2**16
# Hidden layers of an FCN or CNN (and the layer index of an alpha-scaling event).
MAX_DEPTH = 1_024
# Parameters of one network, counted before it is allocated: 2**31 float32 weights are 8 GiB,
# and torch indexes many kernels with 32-bit integers.
MAX_PARAMETERS = 2**31 - 1
# Epochs (max_epochs, post_train_epochs, SWA annealing, alpha events, measurement intervals).
MAX_EPOCHS = 10_000_000
# Integer options of a measure or an optimizer (iterations, probes, samples, steps, grid and
# chunk sizes): each is at least one loss or gradient evaluation per unit.
MAX_OPTION_COUNT = 1_000_000
# Monte-Carlo NNGP kernel draws (fixed, or the most the convergence check may try): each draw
# is a network initialization evaluated on S u E.
MAX_MC_SAMPLES = 2**20
# Networks sampled per optimizer in an sgd-vs-bayes experiment (the paper's largest: 10**6).
MAX_NETWORKS = 10_000_000
# Networks trained at once in an sgd-vs-bayes chunk: the chunk's weights and optimizer state
# are held together (10**5 of the 30k-parameter FCN are 12 GB of weights alone).
MAX_CHUNK = 100_000
# Cells of an sgd-vs-bayes grid (width x |S| x batch size): each is a whole experiment.
MAX_GRID_CELLS = 10_000


# --------------------------------------------------------------------------- checks
def bound_problem(value: object, low: int, high: int) -> str | None:
    """What is wrong with `value` as an integer in low..high, or None if nothing is.

    Args:
        value: the number to check (any integral type but bool, e.g. numpy's int64).
        low: the smallest value allowed.
        high: the largest value allowed.

    Returns:
        None when `value` is an int in low..high, else 'expected an integer in low..high,
        got value' (for a pydantic ValueError or a one-line FlatvolError).
    """
    if isinstance(value, Integral) and not isinstance(value, bool) and low <= value <= high:
        return None
    return f"expected an integer in {low}..{high}, got {value!r}"


def is_seed_option(name: str) -> bool:
    """Whether an option named `name` holds a seed (bounded by MAX_SEED, not MAX_OPTION_COUNT).

    Args:
        name: the option's name, e.g. 'seed' or 'n_hvp'.

    Returns:
        True for 'seed' and names ending in '_seed'.
    """
    return name == "seed" or name.endswith("_seed")


def option_problem(name: str, value: object) -> str | None:
    """What is wrong with an integer option of a measure or an optimizer, or None.

    Every integer option is a count (at most MAX_OPTION_COUNT, at least 0: the functions
    themselves refuse a zero count where one is needed) or a seed (0..MAX_SEED); floats,
    strings and booleans do not size memory or time and are left to the function.

    Args:
        name: the option's name.
        value: its value.

    Returns:
        None when the value is within its bound, else 'name: expected ..., got ...'.
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        return None
    high = MAX_SEED if is_seed_option(name) else MAX_OPTION_COUNT
    problem = bound_problem(value, 0, high)
    return None if problem is None else f"{name}: {problem}"


def options_problem(options: Mapping[str, object]) -> str | None:
    """The first problem of `option_problem` over a table of options, or None.

    Args:
        options: option names and values (a measure's or an optimizer's).

    Returns:
        None when every integer option is within its bound, else 'name: expected ..., got ...'.
    """
    for name, value in options.items():
        problem = option_problem(str(name), value)
        if problem is not None:
            return problem
    return None


def range_length(start: int, stop: int, step: int) -> int:
    """How many values the inclusive range start, start + step, ..., <= stop holds, without
    making it (a range spec may name 10**12 values).

    Args:
        start: the first value.
        stop: the last value allowed (inclusive).
        step: the step, >= 1.

    Returns:
        The number of values (0 when stop < start).
    """
    return max(0, (stop - start) // step + 1)
