"""The names and defaults of the volume's settings, without the volume package.

The spec schemas (flatvol.measures' VolumeSpec, sgd-vs-bayes' [volume] table) validate a spec's
volume settings when it is parsed; the analysis reads the measure catalogue. Neither needs torch
or the estimators, so the names they check against live here, in the base layer, and
flatvol.volume imports them from here: one definition each, the estimator registry included.

- ESTIMATORS: the registered estimator names, each with its one-line description (the
  estimators themselves: flatvol.volume.estimate), and DEFAULT_ESTIMATOR.
- KernelKind / KERNEL_KINDS: how a volume kernel is chosen (flatvol.volume.kernels).
- BatchNormMode / BATCHNORM_MODES / DEFAULT_BATCHNORM: how BatchNorm normalizes in a
  Monte-Carlo kernel's random networks (flatvol.volume.mc_kernel explains the choice).
- DEFAULT_MC_TOLERANCE, DEFAULT_MC_MAX_SAMPLES, MIN_MC_MAX_SAMPLES: the Monte-Carlo draw
  count's convergence check (flatvol.volume.mc_convergence explains the check).
"""

from __future__ import annotations

from typing import Literal, get_args

from flatvol.errors import VolumeError

ESTIMATORS: dict[str, str] = {
    "ep-orthant": "EP with the noise-free step likelihood: log P(sign z = f), z ~ N(0, K)",
    "orthant-is": "importance sampling of P(sign z = f) (EP or minimax-tilted proposal), stderr",
    "ep-probit": "EP with the probit likelihood Phi(y z) (the paper's GPy value; orthant of K+I)",
    "laplace": "Laplace approximation of the probit marginal likelihood",
}
DEFAULT_ESTIMATOR = "ep-orthant"

# 'auto': analytic for a ReLU FCN, Monte Carlo otherwise.
KernelKind = Literal["auto", "analytic", "mc"]
KERNEL_KINDS: tuple[str, ...] = get_args(KernelKind)

# 'eval': the running statistics as reset (the authors' code); 'batch': the statistics of all
# the kernel's inputs in one pass (as the network normalizes while it trains).
BatchNormMode = Literal["eval", "batch"]
BATCHNORM_MODES: tuple[str, ...] = get_args(BatchNormMode)
DEFAULT_BATCHNORM: BatchNormMode = "eval"

# log10 V within which the two halves (and halves vs all draws) must agree.
DEFAULT_MC_TOLERANCE = 0.5
# The most draws before the check gives up.
DEFAULT_MC_MAX_SAMPLES = 4096
MIN_MC_MAX_SAMPLES = 4  # two halves of at least two draws each


def check_estimator(name: str) -> str:
    """Return `name` if it is in the ESTIMATORS registry, else raise a one-line VolumeError.

    Args:
        name: Estimator name to check.

    Returns:
        `name`, unchanged.

    Raises:
        VolumeError: If `name` is not in the ESTIMATORS registry.
    """
    if name not in ESTIMATORS:
        raise VolumeError(
            f"unknown estimator {name!r}; expected one of {', '.join(ESTIMATORS)}"
        )
    return name


def check_batchnorm_mode(mode: str, name: str = "mc_batchnorm") -> None:
    """Refuse an unknown BatchNorm convention in one line.

    Args:
        mode: The convention asked for.
        name: What the caller calls the setting (a spec field or a CLI flag).

    Raises:
        VolumeError: naming the setting, expected vs got.
    """
    if mode not in BATCHNORM_MODES:
        raise VolumeError(f"{name} must be one of {', '.join(BATCHNORM_MODES)}, got {mode!r}")
