"""Sweep events: what happened, for observers (progress widgets, logs, callbacks).

The parallel layer emits; it never draws. Observers subscribe to a sweep's
:class:`EventBus`; an observer that raises is reported once as a warning and
then ignored for the rest of the sweep, so a display bug cannot stop a sweep.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from nbbacktest.errors import NbbacktestWarning


@dataclass(frozen=True)
class SweepEvent:
    """Base class of every event; ``time`` is ``time.monotonic()`` at emission."""

    time: float = field(default_factory=time.monotonic, kw_only=True)


@dataclass(frozen=True)
class Started(SweepEvent):
    """The sweep starts: ``total`` runs on ``engines`` engines (0 = in-process).

    ``finished`` runs (``failed`` of them with an error) were restored from a
    checkpoint and will not run again; ``best`` is the best metric among them.
    """

    total: int
    engines: int
    metric: str
    maximize: bool
    finished: int = 0
    failed: int = 0
    best: float = float("nan")


@dataclass(frozen=True)
class RowEvent(SweepEvent):
    """An event about one run; its ``row`` is built on first access."""

    index: int
    source: Any = field(repr=False, compare=False, kw_only=True)

    @property
    def row(self) -> dict[str, Any]:
        """The run's row: params, stats or error, engine, seconds (most observers never ask)."""
        return self.source.row(self.index)


@dataclass(frozen=True)
class PointDone(RowEvent):
    """One run finished; ``value`` is the sweep metric's value for it (NaN when undefined).

    ``ranked`` is False for a run with fewer trades than the sweep's ``min_trades``:
    it may not become the best.
    """

    value: float
    ranked: bool = True


@dataclass(frozen=True)
class PointFailed(RowEvent):
    """One run raised; its ``row`` holds ``error`` and ``traceback``."""


@dataclass(frozen=True)
class PointSlow(SweepEvent):
    """A run has been going for longer than the sweep's ``warn_after`` seconds."""

    index: int
    params: dict[str, Any]
    seconds: float
    engine: int | None


@dataclass(frozen=True)
class EngineAdded(SweepEvent):
    """An engine registered while the sweep ran and now takes work."""

    engine: int
    host: str


@dataclass(frozen=True)
class EngineLost(SweepEvent):
    """An engine died or left; ``requeued`` of its runs go to other engines; ``replaced``:
    a new engine is starting in its place (clusters that nbbacktest started)."""

    engine: int
    requeued: int
    replaced: bool = False


@dataclass(frozen=True)
class Cancelled(SweepEvent):
    """The sweep was cancelled; ``done`` runs finished and are kept."""

    done: int
    total: int


@dataclass(frozen=True)
class Finished(SweepEvent):
    """The sweep is over: ``status`` is complete, cancelled, stopped (at an error) or failed.

    ``reason`` says why a sweep that did not complete ended (which point stopped it).
    """

    done: int
    failed: int
    cancelled: int
    seconds: float
    status: str
    reason: str = ""


Observer = Callable[[SweepEvent], Any]


class EventBus:
    """Delivers events to subscribed observers, in order, from the emitting thread.

    Examples
    --------
    >>> bus = EventBus()
    >>> seen = []
    >>> unsubscribe = bus.subscribe(seen.append)
    >>> bus.emit(Cancelled(done=3, total=10))
    >>> seen[0].done
    3
    >>> unsubscribe()
    """

    def __init__(self) -> None:
        self._observers: list[tuple[Observer, tuple[type, ...] | None]] = []
        self._lock = threading.Lock()

    def subscribe(
        self, observer: Observer, kinds: tuple[type[SweepEvent], ...] | None = None
    ) -> Callable[[], None]:
        """Call ``observer(event)`` for every event (or only those of ``kinds``)."""
        if not callable(observer):
            raise TypeError(f"observer must be callable, got {type(observer).__name__}")
        entry = (observer, kinds)
        with self._lock:
            self._observers.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._observers:
                    self._observers.remove(entry)

        return unsubscribe

    @property
    def observed(self) -> bool:
        """Whether anyone listens (a sweep builds no per-row events for nobody)."""
        return bool(self._observers)

    def emit(self, event: SweepEvent) -> None:
        """Deliver ``event``; an observer that raises is warned about and dropped."""
        self.emit_many((event,))

    def emit_many(self, events: Iterable[SweepEvent]) -> None:
        """Deliver ``events`` in order, as :meth:`emit` does each (one lock for all)."""
        with self._lock:
            observers = list(self._observers)
        if not observers:
            return
        for event in events:
            for entry in observers:
                observer, kinds = entry
                if kinds is not None and not isinstance(event, kinds):
                    continue
                try:
                    observer(event)
                except Exception as error:  # an observer must never stop a sweep
                    with self._lock:
                        if entry in self._observers:
                            self._observers.remove(entry)
                    observers = [o for o in observers if o is not entry]
                    warnings.warn(
                        f"sweep observer {observer!r} raised {type(error).__name__}: {error};"
                        " it was unsubscribed",
                        NbbacktestWarning,
                        stacklevel=2,
                    )
