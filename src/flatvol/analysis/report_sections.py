"""The report's hook for experiments other than a spec sweep's runs (e.g. sgd-vs-bayes).

A results store may hold experiments of other kinds beside the runs of spec sweeps, in tables
of their own. Their packages sit above the analysis (flatvol.sgd_vs_bayes), so the report
cannot import them; each registers an `ExperimentSection` instead, when it is imported:

    register_report_section(ExperimentSection("sgd-vs-bayes", load=..., name_of=...,
                                              render=...))

`flatvol.analysis.report.load_results` then reads every registered kind from the store and
`write_report` gives each its sections after the sweeps'. Packages declare their section
module as a `flatvol.report_sections` entry point (pyproject.toml), which `report_sections()`
imports on first use, so a library caller of write_report gets every kind without importing
its package first, and the report never imports a layer above it by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

# (experiments, figures_dir, page_dir, several) -> the sections' HTML; `several`: the page holds
# more than one spec or experiment, so each gets its own figures folder and lower headings.
RenderSections = Callable[[Sequence[Any], Path, Path, bool], list[str]]


@dataclass(frozen=True)
class ExperimentSection:
    """One kind of experiment a results store can hold, as the report reads and renders it.

    `load(store_file)` returns the store's experiments of this kind, oldest first (an empty
    sequence when it holds none, a store written before the kind existed included);
    `name_of(experiment)` its name, for the page title; `render` its HTML sections."""

    kind: str
    load: Callable[[Path], Sequence[Any]]
    name_of: Callable[[Any], str]
    render: RenderSections


_SECTIONS: dict[str, ExperimentSection] = {}
ENTRY_POINT_GROUP = "flatvol.report_sections"
_discovered = False


def register_report_section(section: ExperimentSection) -> None:
    """Add (or replace, on a re-import) the report's section for one kind of experiment.

    Args:
        section: how the report reads and renders that kind.
    """
    _SECTIONS[section.kind] = section


def report_sections() -> tuple[ExperimentSection, ...]:
    """Every registered kind, in registration order.

    Returns:
        The registered ExperimentSections, the `flatvol.report_sections` entry points' included
        (each names a module that registers its section when imported).
    """
    global _discovered
    if not _discovered:
        _discovered = True
        for point in entry_points(group=ENTRY_POINT_GROUP):
            point.load()
    return tuple(_SECTIONS.values())
