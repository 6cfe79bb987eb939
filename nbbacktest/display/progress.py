"""Progress of a sweep: a text line outside notebooks (the widget comes with the display issue).

One factory, :func:`show_progress`, picks what fits where the code runs, and
subscribes it to the sweep's events. Updates are throttled, whatever the rate at
which points finish.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO, Any

from nbbacktest.parallel.events import Finished, PointDone, PointFailed, Started, SweepEvent
from nbbacktest.parallel.sweep import SweepResult


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``'1:15'``; ``3725`` -> ``'1:02:05'``; NaN -> ``'?'``.

    Examples
    --------
    >>> format_seconds(75.2), format_seconds(3725), format_seconds(float("nan"))
    ('1:15', '1:02:05', '?')
    """
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TextProgress:
    """One line on a stream: rewritten in place on a terminal, else every few seconds.

    Examples
    --------
    >>> import io
    >>> stream = io.StringIO()
    >>> progress = TextProgress(stream=stream, interval=0)
    >>> progress(Started(total=4, engines=2, metric="sharpe", maximize=True))
    """

    def __init__(self, stream: IO[str] | None = None, interval: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.25 if self.tty else 5.0)
        self.total = 0
        self.done = 0
        self.failed = 0
        self.engines = 0
        self.metric = ""
        self.maximize = True
        self.best = math.nan
        self.best_params: dict[str, Any] | None = None
        self.started = time.monotonic()
        self.last_draw = -math.inf

    def __call__(self, event: SweepEvent) -> None:
        if isinstance(event, Started):
            self.total, self.engines = event.total, event.engines
            self.metric, self.maximize = event.metric, event.maximize
            self.started = event.time
        elif isinstance(event, PointDone):
            self.done += 1
            value = event.value
            if value == value:
                better = value > self.best if self.maximize else value < self.best
                if self.best != self.best or better:
                    self.best = float(value)
                    self.best_params = {
                        k: v for k, v in event.row.items() if k not in _ROW_NOT_PARAMS
                    }
        elif isinstance(event, PointFailed):
            self.done += 1
            self.failed += 1
        if isinstance(event, Finished):
            self.draw(final=event.status)
        elif event.time - self.last_draw >= self.interval:
            self.draw()

    def line(self, final: str | None = None) -> str:
        """The progress line as text."""
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else math.nan
        left = (self.total - self.done) / rate if rate and rate == rate else math.nan
        share = self.done / self.total if self.total else 1.0
        bar = "#" * int(share * 20)
        where = f"{self.engines} engines" if self.engines else "in-process"
        parts = [
            f"[{bar:<20}] {self.done}/{self.total}",
            f"{self.failed} errors",
            f"{rate:,.0f}/s" if rate == rate else "?/s",
            f"elapsed {format_seconds(elapsed)}",
            final or f"ETA {format_seconds(left)}",
            where,
        ]
        if self.best == self.best:
            params = ", ".join(f"{k}={v}" for k, v in (self.best_params or {}).items())
            parts.append(f"best {self.metric} {self.best:.4g} ({params})")
        return " | ".join(parts)

    def draw(self, final: str | None = None) -> None:
        self.last_draw = time.monotonic()
        text = self.line(final)
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


_ROW_NOT_PARAMS = frozenset(
    {"error", "traceback", "engine", "host", "seconds", "status", "start", "end", "duration"}
) | frozenset(__import__("nbbacktest.engine.metrics", fromlist=["STAT_NAMES"]).STAT_NAMES)


def show_progress(result: SweepResult) -> None:
    """Subscribe the progress display that fits this environment to ``result``."""
    result.events.subscribe(TextProgress())
