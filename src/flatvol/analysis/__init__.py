"""Analysis of a sweep: correlations between generalization and each measure (Kendall, Spearman,
Pearson with bootstrap CIs; granulated Kendall of Jiang et al. 2019), CSV/Parquet export, the
paper's Fig. 3-5 and a self-contained HTML report.

Inputs are the store's pandas frames (flatvol.experiments: runs_frame, series_frame).
"""

from flatvol.analysis.correlations import (
    DEFAULT_AXES,
    Correlation,
    Estimate,
    GranulatedKendall,
    KendallDifference,
    correlate,
    correlation_table,
    fitted_runs,
    granulated_kendall,
    kendall_difference,
)
from flatvol.analysis.export import (
    MissingDependencyError,
    export_csv,
    export_parquet,
    read_table,
)
from flatvol.analysis.measures import SHARPNESS, VOLUME, Measure, known_measures, resolve_measures
from flatvol.analysis.temporal import (
    AlphaEvent,
    RunSeries,
    TemporalSummary,
    split_runs,
    temporal_runs,
    temporal_summary,
)
from flatvol.analysis.vectorized import kendall_tau_b, pearson_r, spearman_rho

__all__ = [
    "DEFAULT_AXES", "SHARPNESS", "VOLUME", "AlphaEvent", "Correlation",
    "Estimate", "GranulatedKendall", "KendallDifference", "Measure", "MissingDependencyError",
    "RunSeries", "TemporalSummary", "correlate", "correlation_table", "export_csv",
    "export_parquet", "fitted_runs", "granulated_kendall", "kendall_difference",
    "kendall_tau_b", "known_measures", "pearson_r",
    "read_table", "resolve_measures", "spearman_rho", "split_runs", "temporal_runs",
    "temporal_summary",
]
