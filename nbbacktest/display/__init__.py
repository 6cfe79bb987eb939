"""The display layer: progress, tables and charts; it observes the parallel layer's events.

Importing it registers the views that ``Result`` and ``SweepResult`` ask for by
name (``result.plot()``, ``sweep.table()``, their rich display, ...).
:func:`show_progress` is the progress display a sweep uses in IPython: the
top-level package names it as the default when IPython is present.

The widget modules load on first use (``ProgressWidget``, ``figure_widget``,
``SweepWidget``, ``explore``), so that a script without ipywidgets still gets the
text progress line, tables and charts.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from nbbacktest.display import charts, credibility, portfolio, report, tables, walk_forward
from nbbacktest.display.progress import ProgressState, TextProgress, in_kernel, show_progress
from nbbacktest.engine import views
from nbbacktest.parallel.launch import run_many, sweep

#: The views this layer draws, by the names the engine and parallel layers ask for.
VIEWS: dict[str, Callable[..., Any]] = {
    "result_plot": charts.result_figure,
    "stats_table": tables.result_stats_table,
    "result_bundle": charts.result_bundle,
    "sweep_table": tables.sweep_table,
    "sweep_heatmap": charts.sweep_heatmap,
    "sweep_compare": charts.sweep_compare,
    "sweep_parallel_coordinates": charts.sweep_parallel_coordinates,
    "sweep_distribution": charts.sweep_distribution,
    "sweep_bundle": credibility.sweep_bundle,
    "sweep_credibility": credibility.sweep_credibility,
    "sweep_credibility_bundle": credibility.credibility_bundle,
    "sweep_report": report.write_report,
    "walk_forward_table": walk_forward.walk_forward_table,
    "walk_forward_equity": walk_forward.walk_forward_equity,
    "walk_forward_params": walk_forward.walk_forward_params,
    "walk_forward_bundle": walk_forward.walk_forward_bundle,
    "portfolio_plot": portfolio.portfolio_figure,
    "portfolio_bundle": portfolio.portfolio_bundle,
}
for _name, _function in VIEWS.items():
    views.provide(_name, _function)

_LAZY = {
    "ProgressWidget": "nbbacktest.display.widget",
    "figure_widget": "nbbacktest.display.widget",
    "SweepWidget": "nbbacktest.display.sweep_widget",
    "explore": "nbbacktest.display.explorer",
}

__all__ = [
    "ProgressState", "ProgressWidget", "SweepWidget", "TextProgress", "explore", "figure_widget",
    "in_kernel", "run_many", "show_progress", "sweep",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbbacktest.display' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
