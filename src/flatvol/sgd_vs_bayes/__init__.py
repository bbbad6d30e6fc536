"""sgd-vs-bayes (Mingard et al.'s test): does an optimizer find each function on E as often as
its NNGP conditional volume V(f|S) says? One vertical slice, above flatvol.experiments and
flatvol.analysis:

- spec: the spec schema (the sweep spec's sections, sampling, analysis, an optional [grid]);
- run: the driver (networks in ensemble chunks, volumes from the volume service, resumable);
- grid: the same over a grid of width, |S| and batch size, one experiment per cell;
- function_store: its tables in the results store (samples, volumes, experiment records);
- analysis, grid_analysis: the statistics, figures and the report's HTML;
- report: the report's sections, registered with flatvol.analysis.report_sections on import;
- cli: `flatvol sgd-vs-bayes SPEC --out DIR`.

Importing the package registers its report sections and nothing heavier; the driver is
`flatvol.sgd_vs_bayes.run.run_sgd_vs_bayes` (and `grid.run_sgd_vs_bayes_grid`).
"""

from flatvol.sgd_vs_bayes import report as _report  # noqa: F401  registers the report sections
