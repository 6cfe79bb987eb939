"""Progress of a sweep as events tell it: a tally, and one text line on a stream.

:class:`ProgressState` counts, times and ranks a sweep's runs from its events;
:class:`TextProgress` writes it as one line (in place on a terminal). The
``progress=`` argument of a sweep picks what shows it (:func:`start_progress`):
``True`` the default display, which is this text line on stderr unless the
top-level package, imported in IPython, named the notebook-aware one
(``nbbacktest.display.show_progress``: a widget in a Jupyter kernel);
``False`` nothing; a callable, whatever it makes of the SweepResult.
Updates are throttled, whatever the rate at which points finish; the final
state is always drawn.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from nbbacktest.engine.formatting import format_params, format_rate, format_seconds, format_value
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
from nbbacktest.parallel.rows import Best, row_params

if TYPE_CHECKING:
    from nbbacktest.parallel.sweep import SweepResult

#: Environment variable that turns the default progress display off ("0").
PROGRESS_ENV = "NBBACKTEST_PROGRESS"

#: What ``progress=True`` shows, given the SweepResult; None: a :class:`TextProgress`
#: on stderr. ``nbbacktest`` sets it to the notebook-aware display when IPython runs.
default_display: Callable[[SweepResult], Any] | None = None

#: The ETA shows once this many runs finished after the first result, or this many
#: seconds passed since it: before, one chunk's arrival would make it swing wildly.
ETA_AFTER_RUNS = 10
ETA_AFTER_SECONDS = 2.0
#: Results that arrive within this many seconds of the first came in its chunk: the
#: rate counts from the end of that chunk.
FIRST_CHUNK_SECONDS = 0.05


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
        self._best = Best(maximize=True)
        self.done = 0
        self.failed = 0
        self.restored = 0
        self.engines = 0
        self.metric = ""
        self.best_params: dict[str, Any] | None = None
        self.started = time.monotonic()
        self.ended: float | None = None
        self.status = "running"
        self.reason = ""
        self.note = ""
        #: When the first result came (None before, or for a display that started late),
        #: and how many had finished with it: the rate counts from there.
        self.first_result: float | None = None
        self._first_done = 0
        self._first_error = ""

    @classmethod
    def of(cls, sweep: SweepResult) -> ProgressState:
        """The state of ``sweep`` as it stands (for a display that starts late)."""
        state = cls()
        state.total, state.engines = len(sweep), sweep.engines
        state.metric, state._best.maximize = sweep.metric, sweep.maximize
        state.done, state.failed = sweep.progress, sweep.failed
        state.started = sweep.started
        index = sweep.best_index
        if index is not None:
            state._best.offer(float(sweep.best_value), index)
            state.best_params = row_params(sweep.plan, index)
        if sweep.status != "running":  # set before the Finished event is emitted
            state.status, state.reason = sweep.status, sweep.reason
            state.ended = sweep.started + sweep.seconds
            if state.failed and state.failed == state.done and not state.reason:
                errors = sweep.results["error"].dropna()
                state.reason = every_run_failed(str(errors.iloc[0]) if len(errors) else "")
        return state

    @property
    def finished(self) -> bool:
        """True once the sweep ended (complete, cancelled, stopped or failed)."""
        return self.ended is not None

    def update(self, event: SweepEvent) -> bool:
        """Take ``event`` into account; True when it is the last one (Finished)."""
        if isinstance(event, Started):
            self.total, self.engines = event.total, event.engines
            self.metric, self._best.maximize = event.metric, event.maximize
            self.done = self.restored = event.finished
            self.failed = event.failed
            if event.best == event.best and self.best_index is None:
                self._best.value = float(event.best)
            self.started = event.time
        elif isinstance(event, PointDone):
            self.done += 1
            self._first(event)
            self._consider(event)
        elif isinstance(event, PointFailed):
            self.done += 1
            self.failed += 1
            self._first(event)
            if not self._first_error:
                self._first_error = str(event.row.get("error") or "")
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
            if self.failed and not event.done and not self.reason:
                self.reason = every_run_failed(self._first_error)
            self.ended = event.time
            return True
        return False

    def _first(self, event: SweepEvent) -> None:
        if self.first_result is None:
            self.first_result = event.time
        if event.time - self.first_result <= FIRST_CHUNK_SECONDS:
            self._first_done = self.done

    def _consider(self, event: PointDone) -> None:
        if event.ranked and self._best.offer(event.value, event.index):
            self.best_params = row_params(event.source.plan, event.index)

    @property
    def maximize(self) -> bool:
        """Whether higher values of the metric are better."""
        return self._best.maximize

    @property
    def best(self) -> float:
        """The best value of the metric so far (NaN before any)."""
        return self._best.value

    @property
    def best_index(self) -> int | None:
        """The row of the best value so far."""
        return self._best.index

    def fields(self, now: float | None = None) -> dict[str, str]:
        """What a display shows, as text: counts, errors, rate, elapsed, eta, engines, best.

        Every count has thousands separators (``3,394/8,150``), like every other
        number the display layer shows.
        """
        now = time.monotonic() if now is None else now
        end = self.ended if self.ended is not None else now
        elapsed = max(end - self.started, 0.0)
        # The rate counts from the first result on: not the cluster's start, nor the
        # data's shipping, nor the first chunk (it arrived all at once).
        ran, span = self.done - self._first_done, end - (self.first_result or end)
        settled = ran > 0 and (ran >= ETA_AFTER_RUNS or span >= ETA_AFTER_SECONDS)
        if self.first_result is None and self.done > self.restored:  # a display that came late
            settled = elapsed >= ETA_AFTER_SECONDS
        if ran <= 0 or span <= 0:  # no result since the first chunk: count from the start
            ran, span = self.done - self.restored, elapsed
        rate = ran / span if span > 0 and ran > 0 else math.nan
        left = (self.total - self.done) / rate if rate > 0 and settled else math.nan
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
            "eta": self.status if self.finished else f"ETA {format_seconds(left) if left == left else '…'}",
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


def every_run_failed(first_error: str) -> str:
    """What a sweep whose every run raised says: ``every run failed: ValueError: …``.

    Examples
    --------
    >>> every_run_failed("ValueError: no data")
    'every run failed: ValueError: no data'
    """
    return f"every run failed: {first_error}" if first_error else "every run failed"


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


def text_progress(sweep: SweepResult) -> TextProgress:
    """Subscribe a :class:`TextProgress` on stderr to ``sweep``'s events and return it."""
    text = TextProgress()
    sweep.events.subscribe(text)
    return text


def progress_wanted(progress: bool | Callable[..., Any] | None) -> bool:
    """Whether to show progress: ``progress`` when given, else unless NBBACKTEST_PROGRESS=0."""
    if progress is not None:
        return bool(progress)
    return os.environ.get(PROGRESS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def start_progress(sweep: SweepResult, progress: bool | Callable[[SweepResult], Any] | None) -> Any:
    """Show ``sweep``'s progress as ``progress`` asks; returns what shows it (or None).

    A display with a ``poll`` method is polled while a blocking sweep waits (a
    widget stays clickable that way).

    Examples
    --------
    >>> import io, contextlib
    >>> import nbbacktest.parallel as parallel
    >>> from nbbacktest.engine.examples import SmaCross
    >>> from nbbacktest.engine.samples import load_sample
    >>> errors = io.StringIO()
    >>> with contextlib.redirect_stderr(errors):
    ...     _ = parallel.sweep(SmaCross, load_sample("daily"), {"fast": [5, 10]}, progress=True)
    >>> errors.getvalue().splitlines()[-1].split(" | ")[0]
    '[####################] 2/2'
    """
    if not progress_wanted(progress):
        return None
    if callable(progress):
        factory = progress
    else:
        factory = default_display if default_display is not None else text_progress
    shown = factory(sweep)
    poll = getattr(shown, "poll", None)
    if callable(poll):
        sweep.add_poller(poll)
    return shown
