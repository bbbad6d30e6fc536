"""The built-in catalogue entries, in report order: volume, Keskar sharpness, the Hessian
measures, the other flatness measures of flatvol.flatness, and the accuracies.

A measure is taken on the genuine training set S (flatness) or on S u E (volume), never on the
attack set. Each randomized measure draws its seed from the context with its own salt, so the
numbers of a run depend only on (run seed, epoch, measure).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flatvol.errors import SpecError
from flatvol.measures.catalogue import (
    DEFAULT_MAXIMIZER,
    DEFAULT_SHARPNESS_EPSILON,
    MeasureContext,
    MeasureEntry,
    OptionValue,
    Predictor,
    measure_entry,
    register_measure,
)
from flatvol.measures.volume import kernel_is_exact, volume_values

if TYPE_CHECKING:
    from torch import nn

    from flatvol.data.task import TaskData
    from flatvol.flatness import FunctionalLoss


# --------------------------------------------------------------------------- accuracy
def accuracy_measure(model: nn.Module, task: TaskData, context: MeasureContext) -> dict[str, float]:
    """Accuracy on S, on the attack set A and on the test set E."""
    from flatvol.train import accuracy

    return {"train_acc_S": accuracy(model, task.S.x, task.S.y),
            "train_acc_A": accuracy(model, task.A.x, task.A.y),
            "test_acc_E": accuracy(model, task.E.x, task.E.y)}


def test_accuracy_measure(model: nn.Module, task: TaskData,
                          context: MeasureContext) -> dict[str, float]:
    """Accuracy on the test set E."""
    from flatvol.train import accuracy

    return {"test_acc_E": accuracy(model, task.E.x, task.E.y)}


# --------------------------------------------------------------------------- volume
def volume_measure(model: nn.Module, task: TaskData, context: MeasureContext) -> dict[str, float]:
    """log10 V(f) and log10 V(f|S) with the spec's estimator on the sweep's kernel."""
    if context.kernel is None and context.volume_cache is None:
        raise SpecError("measure 'volume' needs the sweep's NNGP kernel (context.kernel)")
    settings = context.settings.volume
    options = dict(settings.options)
    if settings.estimator == "orthant-is":
        options.setdefault("seed", context.measure_seed(11))
    values, details = volume_values(model, task, context.volume(task.n_classes),
                                    settings.estimator, options,
                                    exact_kernel=kernel_is_exact(context.kernel_info))
    context.details["volume"] = {**details, "kernel": context.kernel_info}
    return values


# --------------------------------------------------------------------------- flatness
# Settings of the loss operator that every flatness measure of a network shares (S, the default
# loss, the run's device and chunk size): no one measure's options may set them.
OPERATOR_SETTINGS = ("loss_fn", "device", "chunk_size", "labels", "hvp_method")


def flatness_operator(model: nn.Module, task: TaskData, context: MeasureContext) -> FunctionalLoss:
    """The loss operator of `model` on S that all the flatness measures of a run share: built by
    the first one, kept on the context, and built again when the network, S or the context's
    device or chunk size is no longer the one it describes (a network measured again after
    more training).

    Args:
        model: the network measured.
        task: its task; the operator is on the genuine training set S.
        context: the run's measure context (device, chunk size; keeps the operator).

    Returns:
        The FunctionalLoss.
    """
    import torch

    from flatvol.flatness import FunctionalLoss

    operator = context.flatness_operator
    if (operator is None or not operator.matches(model, task.S.x, task.S.y)
            or operator.device != torch.device(context.device)
            or operator.chunk_size != min(context.chunk_size or operator.n, operator.n)):
        operator = FunctionalLoss(model, task.S.x, task.S.y, device=context.device,
                                  chunk_size=context.chunk_size)
        context.flatness_operator = operator
    return operator


def _run_flatness(fn: Callable[..., Any], name: str, model: nn.Module, task: TaskData,
                  context: MeasureContext, salt: int, kwargs: Mapping[str, Any]) -> Any:
    """Call flatness function `fn` on the network's shared loss operator, the one way every
    flatness measure of the catalogue is called: fn(operator, seed=..., progress=..., **kwargs),
    its seed derived with `salt`; record its result in context.details."""
    where = (f"measures.{name}.options" if measure_entry(name).options_in == "own_table"
             else f"measures.options.{name}")
    clash = [key for key in OPERATOR_SETTINGS if key in kwargs]
    if clash:
        raise SpecError(f"{where}.{clash[0]}: a setting of the loss operator that every "
                        f"flatness measure shares (S, the default loss, the run's device and "
                        f"chunk size), not an option of one measure")
    operator = flatness_operator(model, task, context)
    options = {"seed": context.measure_seed(salt), "progress": context.progress, **kwargs}
    try:
        result = fn(operator, **options)
    except TypeError as exc:
        raise SpecError(f"{where}: {exc}") from None
    context.details[name] = result.to_dict()
    return result


def _flatness_entry(name: str, fn_name: str, attr: str | None, salt: int, label: str,
                    predictor: Predictor | None,
                    defaults: Mapping[str, OptionValue] | None = None) -> MeasureEntry:
    """An entry storing `name` = flatvol.flatness.<fn_name>(...).<attr> (its first element for
    a list); attr None stores nothing (the result goes to the details only)."""
    defaults = dict(defaults or {})

    def measure(model: nn.Module, task: TaskData, context: MeasureContext) -> dict[str, float]:
        import flatvol.flatness as flatness

        result = _run_flatness(getattr(flatness, fn_name), name, model, task, context, salt,
                               {**defaults, **context.options(name)})
        if attr is None:
            return {}
        value = getattr(result, attr)
        if isinstance(value, (list, tuple)):
            value = value[0]
        return {name: float(value)}

    measure.__doc__ = f"flatvol.flatness.{fn_name} on S -> {name} (its .{attr})."
    return MeasureEntry(name, measure, fields=(name,) if attr else (), label=label,
                        predictors=(predictor,) if predictor else (), defaults=defaults)


SHARPNESS_SALT = 1


def sharpness_measure(model: nn.Module, task: TaskData,
                      context: MeasureContext) -> dict[str, float]:
    """Keskar sharpness on S (box eps (|w| + 1)) with the spec's epsilon and maximizer."""
    from flatvol.flatness import keskar_sharpness

    s = context.settings.sharpness
    result = _run_flatness(keskar_sharpness, "sharpness", model, task, context, SHARPNESS_SALT,
                           {"epsilon": s.epsilon, "maximizer": s.maximizer, **s.options})
    return {"sharpness": result.sharpness, "log10_sharpness": result.log10_sharpness}


def _builtin_entries() -> list[MeasureEntry]:
    return [
        MeasureEntry(
            "volume", volume_measure, label="log10 V(f) by the NNGP prior (on S u E)",
            fields=("log10_volume", "log10_volume_conditional", "log10_volume_S",
                    "pac_bayes_bound", "volume_converged", "log10_volume_stderr",
                    "log10_volume_conditional_stderr"),
            predictors=(
                Predictor("log10_volume", "log10 V(f)", plot_label=r"$\log_{10} V(f)$"),
                Predictor("log10_volume_conditional", "log10 V(f|S)",
                          plot_label=r"$\log_{10} V(f\,|\,S)$"),
                Predictor("pac_bayes_bound", "-PAC-Bayes error bound", sign=-1)),
            group="volume", options_in="own_table"),
        MeasureEntry(
            "sharpness", sharpness_measure, label="Keskar sharpness (box eps (|w| + 1))",
            fields=("sharpness", "log10_sharpness"),
            predictors=(Predictor("log10_sharpness", "-log10 sharpness", sign=-1,
                                  plot_label=r"$-\log_{10}$ sharpness"),),
            options_in="own_table",
            defaults={"epsilon": DEFAULT_SHARPNESS_EPSILON, "maximizer": DEFAULT_MAXIMIZER}),
        _flatness_entry("hessian_top_eig", "hessian_top_eigenvalues", "eigenvalues", 2,
                        "top Hessian eigenvalue (Lanczos)",
                        Predictor("hessian_top_eig", "-log10 lambda_max(H)", -1, True,
                                  plot_label=r"$-\log_{10} \lambda_{\max}(H)$")),
        _flatness_entry("hessian_trace", "hessian_trace", "trace", 3,
                        "Hessian trace (Hutch++)",
                        Predictor("hessian_trace", "-log10 Tr(H)", -1, True,
                                  plot_label=r"$-\log_{10} \mathrm{Tr}\,H$")),
        _flatness_entry("hessian_frobenius", "hessian_frobenius_norm", "frobenius_norm", 4,
                        "Hessian Frobenius norm (Hutchinson)",
                        Predictor("hessian_frobenius", "-log10 ||H||_F", -1, True)),
        _flatness_entry("hessian_density", "hessian_density", None, 9,
                        "Hessian eigenvalue density (stochastic Lanczos quadrature)", None),
        _flatness_entry("average_sharpness", "average_sharpness", "sharpness", 5,
                        "average-case sharpness under Gaussian noise",
                        Predictor("average_sharpness", "-log10 avg. sharpness", -1, True)),
        _flatness_entry("adaptive_sharpness", "adaptive_sharpness", "sharpness", 6,
                        "adaptive sharpness (ASAM)",
                        Predictor("adaptive_sharpness", "-log10 adaptive sharpness", -1, True)),
        _flatness_entry("pac_bayes_sigma", "pac_bayes_flatness", "sigma_star", 7,
                        "PAC-Bayes flatness sigma*",
                        Predictor("pac_bayes_sigma", "log10 PAC-Bayes sigma*", 1, True)),
        _flatness_entry("pac_bayes_mag_sigma", "pac_bayes_magnitude_flatness", "sigma_star", 8,
                        "magnitude-aware PAC-Bayes flatness sigma*",
                        Predictor("pac_bayes_mag_sigma", "log10 PAC-Bayes mag. sigma*", 1, True)),
        _flatness_entry("fisher_rao_norm", "fisher_rao_norm", "fisher_rao_norm", 0,
                        "Fisher-Rao norm of the weights",
                        Predictor("fisher_rao_norm", "-log10 Fisher-Rao norm", -1, True)),
        MeasureEntry("accuracy", accuracy_measure, label="accuracy on S, A and E",
                     fields=("train_acc_S", "train_acc_A", "test_acc_E"), group="accuracy",
                     options_in="none"),
        MeasureEntry("test_accuracy", test_accuracy_measure, label="accuracy on E",
                     fields=("test_acc_E",), group="accuracy", options_in="none"),
    ]


def register_builtin_measures() -> None:
    """Put the built-in entries in the catalogue (done once, by the flatvol.measures package)."""
    for entry in _builtin_entries():
        register_measure(entry, replace=True)
