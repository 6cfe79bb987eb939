"""Progress of a sweep in a notebook: the widget where a Jupyter kernel runs, else the text line.

One factory, :func:`show_progress`, picks what fits where the code runs (like
ipyparallel's ``util.progress``): the :class:`~nbbacktest.display.widget.ProgressWidget`
when IPython runs in a Jupyter kernel and ipywidgets imports, else a
:class:`~nbbacktest.parallel.progress.TextProgress` line on stderr. Both read a
:class:`~nbbacktest.parallel.progress.ProgressState` kept up to date from the
sweep's events, so they count, time and word things the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbbacktest.display.kernel import in_kernel
from nbbacktest.engine.formatting import format_seconds
from nbbacktest.parallel.progress import ProgressState, TextProgress, text_progress

if TYPE_CHECKING:
    from nbbacktest.display.widget import ProgressWidget
    from nbbacktest.parallel.sweep import SweepResult

__all__ = ["ProgressState", "TextProgress", "format_seconds", "in_kernel", "show_progress"]


def show_progress(sweep: SweepResult) -> ProgressWidget | TextProgress:
    """Show ``sweep``'s progress: the widget in a notebook, else a text line on stderr.

    What ``progress=True`` shows once ``nbbacktest`` was imported in IPython. The widget is
    displayed at once and returned (its ``poll`` keeps Cancel clickable while a
    blocking sweep waits); without a kernel or without ipywidgets, a
    :class:`TextProgress` on stderr is subscribed and returned.

    Examples
    --------
    >>> import io, contextlib
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> errors = io.StringIO()
    >>> with contextlib.redirect_stderr(errors):
    ...     sweep = nbb.sweep(SmaCross, nbb.load_sample("daily"), {"fast": [5, 10]}, progress=True)
    >>> errors.getvalue().splitlines()[-1].split(" | ")[0]
    '[####################] 2/2'
    """
    if in_kernel():
        try:
            from nbbacktest.display.widget import ProgressWidget
        except ImportError:  # no ipywidgets: the text line still tells the story
            pass
        else:
            from IPython.display import display

            widget = ProgressWidget(sweep)
            display(widget)
            return widget
    return text_progress(sweep)
