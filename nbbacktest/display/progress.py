"""Progress of a sweep: a widget in a notebook, one text line anywhere else.

One factory, :func:`show_progress`, picks what fits where the code runs (like
ipyparallel's ``util.progress``): the :class:`~nbbacktest.display.widget.ProgressWidget`
when IPython runs in a Jupyter kernel and ipywidgets imports, else a
:class:`TextProgress` line on stderr. Both read a :class:`ProgressState` kept up to
date from the sweep's events, so they count, time and word things the same way.
Updates are throttled, whatever the rate at which points finish; the final state
is always drawn.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from nbbacktest.display.tables import (
    format_params,
    format_rate,
    format_seconds,
    format_value,
)
from nbbacktest.parallel.events import (
    EngineAdded,
    EngineLost,
    Finished,
    PointDone,
    PointFailed,
    PointSlow,
    Started,
    SweepEvent,
)
from nbbacktest.parallel.sweep import SweepResult, row_params

if TYPE_CHECKING:
    from nbbacktest.display.widget import ProgressWidget

__all__ = ["ProgressState", "TextProgress", "format_seconds", "in_kernel", "show_progress"]


class ProgressState:
    """Counts, timing and best run of one sweep, as its events tell them.

    ``done`` counts runs (points, not chunks) that finished, with or without an
    error; ``failed`` those with an error. Not locked: one observer owns it.

    Examples
    --------
    >>> state = ProgressState()
    >>> state.update(Started(total=4, engines=2, metric="sharpe", maximize=True))
    False
    >>> state.fields()["counts"], state.fields()["engines"]
    ('0/4', '2/2 engines busy')
    """

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.failed = 0
        self.restored = 0
        self.engines = 0
        self.metric = ""
        self.maximize = True
        self.best = math.nan
        self.best_index: int | None = None
        self.best_params: dict[str, Any] | None = None
        self.started = time.monotonic()
        self.ended: float | None = None
        self.status = "running"
        self.reason = ""
        self.note = ""

    @classmethod
    def of(cls, sweep: SweepResult) -> ProgressState:
        """The state of ``sweep`` as it stands (for a display that starts late)."""
        state = cls()
        state.total, state.engines = len(sweep), sweep.engines
        state.metric, state.maximize = sweep.metric, sweep.maximize
        state.done, state.failed = sweep.progress, sweep.failed
        state.started = sweep.started
        index = sweep.best_index
        if index is not None:
            state.best, state.best_index = float(sweep.best_value), index
            state.best_params = row_params(sweep.plan, index)
        if sweep.status != "running":  # set before the Finished event is emitted
            state.status, state.reason = sweep.status, sweep.reason
            state.ended = sweep.started + sweep.seconds
        return state

    @property
    def finished(self) -> bool:
        """True once the sweep ended (complete, cancelled, stopped or failed)."""
        return self.ended is not None

    def update(self, event: SweepEvent) -> bool:
        """Take ``event`` into account; True when it is the last one (Finished)."""
        if isinstance(event, Started):
            self.total, self.engines = event.total, event.engines
            self.metric, self.maximize = event.metric, event.maximize
            self.done = self.restored = event.finished
            self.failed = event.failed
            if event.best == event.best and self.best_index is None:
                self.best = float(event.best)
            self.started = event.time
        elif isinstance(event, PointDone):
            self.done += 1
            self._consider(event)
        elif isinstance(event, PointFailed):
            self.done += 1
            self.failed += 1
        elif isinstance(event, EngineAdded):
            self.engines += 1
        elif isinstance(event, EngineLost):
            self.engines = max(self.engines - 1, 0)
            self.note = (f"engine {event.engine} lost; its {event.requeued:,} unfinished runs go to"
                         " other engines" + ("; a new engine is starting" if event.replaced else ""))
        elif isinstance(event, PointSlow):
            where = "" if event.engine is None else f" on engine {event.engine}"
            self.note = (f"row {event.index} ({format_params(event.params)}) has run for "
                         f"{format_seconds(event.seconds)}{where}")
        elif isinstance(event, Finished):
            self.done, self.failed = event.done + event.failed, event.failed
            self.status, self.reason = event.status, event.reason
            self.ended = event.time
            return True
        return False

    def _consider(self, event: PointDone) -> None:
        value = event.value
        if value != value:
            return
        best = self.best
        if best != best or (value > best if self.maximize else value < best):
            self.best, self.best_index = float(value), event.index
            self.best_params = row_params(event.source.plan, event.index)

    def fields(self, now: float | None = None) -> dict[str, str]:
        """What a display shows, as text: counts, errors, rate, elapsed, eta, engines, best.

        Every count has thousands separators (``3,394/8,150``), like every other
        number the display layer shows.
        """
        now = time.monotonic() if now is None else now
        elapsed = max((self.ended if self.ended is not None else now) - self.started, 0.0)
        ran = self.done - self.restored
        rate = ran / elapsed if elapsed > 0 else math.nan
        left = (self.total - self.done) / rate if rate > 0 else math.nan
        if self.engines:
            busy = 0 if self.finished else min(self.engines, self.total - self.done)
            engines = f"{busy:,}/{self.engines:,} engines busy"
        else:
            engines = "in-process"
        best = ""
        if self.best == self.best:
            best = f"best {self.metric} {format_value(self.best, self.metric)}"
            if self.best_params is not None:
                best += f" ({format_params(self.best_params)})"
        return {
            # Thousands separators everywhere, as in "8,150 runs" beside the bar.
            "counts": f"{self.done:,}/{self.total:,}",
            "errors": f"{self.failed:,} error{'' if self.failed == 1 else 's'}",
            "rate": format_rate(rate),
            "elapsed": f"elapsed {format_seconds(elapsed)}",
            "eta": self.status if self.finished else f"ETA {format_seconds(left)}",
            "engines": engines,
            "best": best,
        }

    def line(self, now: float | None = None) -> str:
        """The whole state on one line of text."""
        fields = self.fields(now)
        share = self.done / self.total if self.total else 1.0
        bar = "#" * int(share * 20)
        parts = [f"[{bar:<20}] {fields['counts']}", fields["errors"], fields["rate"],
                 fields["elapsed"], fields["eta"], fields["engines"]]
        if fields["best"]:
            parts.append(fields["best"])
        if self.finished and self.reason:
            parts.append(self.reason)
        return " | ".join(parts)


class TextProgress:
    """One line on a stream: rewritten in place on a terminal, else every few seconds.

    Subscribe it to a sweep's events (:func:`show_progress` does). ``interval`` is
    the least time between two lines (default 0.25 s on a terminal, 5 s
    otherwise); the final line is always written.

    Examples
    --------
    >>> import io
    >>> stream = io.StringIO()
    >>> progress = TextProgress(stream=stream, interval=0)
    >>> progress(Started(total=4, engines=2, metric="sharpe", maximize=True))
    >>> stream.getvalue().split(" | ")[0]
    '[                    ] 0/4'
    """

    def __init__(self, stream: IO[str] | None = None, interval: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.25 if self.tty else 5.0)
        self.state = ProgressState()
        self.last_draw = -math.inf
        self._width = 0

    def __call__(self, event: SweepEvent) -> None:
        note = self.state.note
        if self.state.update(event):
            self.draw()
            return
        if self.state.note != note:
            self.write_note(self.state.note)
        if time.monotonic() - self.last_draw >= self.interval:
            self.draw()

    def line(self) -> str:
        """The progress line as text."""
        return self.state.line()

    def draw(self) -> None:
        """Write the line now (in place on a terminal)."""
        self.last_draw = time.monotonic()
        text = self.line()
        end = "\n" if self.state.finished else ""
        if self.tty:
            # Pad over what a longer previous line left on the terminal.
            self.stream.write("\r" + text.ljust(self._width) + end)
            self._width = 0 if end else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def write_note(self, note: str) -> None:
        """Write a one-off notice (an engine lost, a slow run) on a line of its own."""
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self.stream.write(note + "\n")
        self.last_draw = -math.inf  # redraw the progress line under it
        self.stream.flush()


def in_kernel() -> bool:
    """True when this code runs in a Jupyter kernel (IPython's shell has a ``kernel``).

    Examples
    --------
    >>> in_kernel()
    False
    """
    ipython = sys.modules.get("IPython")  # not imported: no shell can be running
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def show_progress(sweep: SweepResult) -> ProgressWidget | TextProgress:
    """Show ``sweep``'s progress: the widget in a notebook, else a text line on stderr.

    This is the progress factory installed by ``nbbacktest.display``. The widget is
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
    text = TextProgress()
    sweep.events.subscribe(text)
    return text
