"""The display layer: progress, tables and charts; it observes the parallel layer's events.

Importing it installs the progress display used by :func:`nbbacktest.sweep`.
"""

from nbbacktest.display.progress import TextProgress, show_progress
from nbbacktest.parallel.sweep import run_many, set_progress_factory, sweep

set_progress_factory(show_progress)

__all__ = ["TextProgress", "run_many", "show_progress", "sweep"]
