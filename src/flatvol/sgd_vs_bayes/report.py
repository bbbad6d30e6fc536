"""The report's sgd-vs-bayes sections, registered with flatvol.analysis.report_sections.

The report sits below this package, so it finds these sections through its hook: importing
flatvol.sgd_vs_bayes registers `SECTION`. Its parts are imported when a report is made, not
here, so that registering (every `flatvol` command does) loads neither matplotlib nor the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flatvol.analysis.report_html import slug
from flatvol.analysis.report_sections import ExperimentSection, register_report_section

if TYPE_CHECKING:
    from flatvol.sgd_vs_bayes.function_store import FunctionExperiment, ResampledExperiment

KIND = "sgd-vs-bayes"


def load_section_experiments(store_file: Path) -> list[FunctionExperiment]:
    """Every sgd-vs-bayes experiment recorded in a results store, oldest first.

    Args:
        store_file: the store (OUT/results.sqlite); opened read-only.

    Returns:
        The experiments with their samples and volumes ([] if there is none).
    """
    from flatvol.sgd_vs_bayes.function_store import load_experiments

    return load_experiments(store_file)


def experiment_name(experiment: FunctionExperiment) -> str:
    """The name of an experiment's spec, as the page title shows it.

    Args:
        experiment: a recorded experiment.

    Returns:
        Its spec's name.
    """
    return str(experiment.info["name"])


def render_sections(experiments: Sequence[FunctionExperiment], figures_dir: Path,
                    page_dir: Path, several: bool) -> list[str]:
    """The grids' table and figure (one per grid), then one section per experiment.

    Args:
        experiments: the store's sgd-vs-bayes experiments.
        figures_dir: the report's figures folder.
        page_dir: the folder of the page (figure paths in captions are relative to it).
        several: the page holds more than one spec or experiment: each experiment's figures
            go to their own folder, under a lower heading.

    Returns:
        The sections' HTML.
    """
    from flatvol.sgd_vs_bayes.analysis import sgd_vs_bayes_section
    from flatvol.sgd_vs_bayes.grid_analysis import grid_section

    sections = [grid_section(experiments, figures_dir, page_dir)]
    for experiment in experiments:
        figures = figures_dir
        if several:
            figures = figures / slug(f"{experiment.info['name']}-{experiment.spec_hash[:8]}")
        sections.append(sgd_vs_bayes_section(experiment, figures, page_dir,
                                             level=3 if several else 2))
    return sections


SECTION = ExperimentSection(KIND, load=load_section_experiments, name_of=experiment_name,
                            render=render_sections)
register_report_section(SECTION)

RESAMPLED_KIND = "sgd-vs-bayes-resampled"


def load_resampled_experiments(store_file: Path) -> list[ResampledExperiment]:
    """Every comparison over draws of E recorded in a results store, oldest first.

    Args:
        store_file: the store (OUT/results.sqlite); opened read-only.

    Returns:
        The recorded comparisons ([] if there is none).
    """
    from flatvol.sgd_vs_bayes.function_store import load_resampled

    return load_resampled(store_file)


def render_resampled(experiments: Sequence[ResampledExperiment], figures_dir: Path,
                     page_dir: Path, several: bool) -> list[str]:
    """One section per comparison over draws of E: the spread table and its figure.

    Args:
        experiments: the recorded comparisons.
        figures_dir: the report's figures folder.
        page_dir: the folder of the page (figure paths in captions are relative to it).
        several: the page holds more than one spec or experiment (lower headings).

    Returns:
        The sections' HTML.
    """
    from flatvol.sgd_vs_bayes.analysis import resampled_section

    return [resampled_section(e.info, figures_dir, page_dir, level=3 if several else 2)
            for e in experiments]


RESAMPLED_SECTION = ExperimentSection(RESAMPLED_KIND, load=load_resampled_experiments,
                                      name_of=lambda e: str(e.info["name"]),
                                      render=render_resampled)
register_report_section(RESAMPLED_SECTION)
