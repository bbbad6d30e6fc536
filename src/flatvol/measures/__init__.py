"""The measure catalogue: every measure a spec, the runner, `flatvol flatness` and the analysis
know, one entry each (flatvol.measures.catalogue), with the built-in entries
(flatvol.measures.builtin) registered on import.

    from flatvol.measures import MeasureEntry, Predictor, register_measure
    register_measure(MeasureEntry("my_measure", fn, fields=("my_value",), label="my measure",
                                  predictors=(Predictor("my_value", "-log10 my", -1, True),)))
"""

from flatvol.measures.builtin import register_builtin_measures
from flatvol.measures.catalogue import (
    DEFAULT_MAXIMIZER,
    DEFAULT_SHARPNESS_EPSILON,
    MeasureContext,
    MeasureEntry,
    MeasureFn,
    MeasuresSpec,
    OptionValue,
    Predictor,
    SharpnessSpec,
    VolumeSpec,
    check_measure_names,
    compute_measures,
    measure_entries,
    measure_entry,
    measure_names,
    register_measure,
    unregister_measure,
)

register_builtin_measures()

__all__ = [
    "DEFAULT_MAXIMIZER",
    "DEFAULT_SHARPNESS_EPSILON",
    "MeasureContext",
    "MeasureEntry",
    "MeasureFn",
    "MeasuresSpec",
    "OptionValue",
    "Predictor",
    "SharpnessSpec",
    "VolumeSpec",
    "check_measure_names",
    "compute_measures",
    "measure_entries",
    "measure_entry",
    "measure_names",
    "register_measure",
    "unregister_measure",
]
