"""Tests of nbbacktest.parallel.events: the event types and the EventBus that delivers them."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import pytest

from nbbacktest.errors import NbbacktestWarning
from nbbacktest.parallel.events import (
    Cancelled,
    EngineAdded,
    EngineLost,
    EventBus,
    Finished,
    PointDone,
    PointFailed,
    PointSlow,
    RowEvent,
    Started,
    SweepEvent,
)


class Rows:
    """A row source that counts how often it is asked."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def row(self, index: int) -> dict[str, Any]:
        self.asked.append(index)
        return {"fast": index * 10, "status": "done"}


# ------------------------------------------------------------------ events
def test_an_event_is_stamped_with_the_monotonic_time_of_its_creation() -> None:
    before = time.monotonic()
    event = Cancelled(done=3, total=10)
    assert before <= event.time <= time.monotonic()
    assert Cancelled(done=3, total=10, time=1.5).time == 1.5
    with pytest.raises(TypeError):
        Cancelled(1.5, 3, 10)  # type: ignore[call-arg,misc]  # time is keyword-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.done = 4  # type: ignore[misc]


def test_started_defaults_to_a_sweep_with_nothing_restored() -> None:
    event = Started(total=12, engines=2, metric="sharpe", maximize=True)
    assert (event.finished, event.failed) == (0, 0)
    assert math.isnan(event.best)
    restored = Started(total=12, engines=0, metric="cagr", maximize=False, finished=5, failed=1, best=0.2)
    assert (restored.engines, restored.finished, restored.failed, restored.best) == (0, 5, 1, 0.2)


def test_a_row_event_builds_its_row_only_when_asked() -> None:
    rows = Rows()
    done = PointDone(7, 1.25, source=rows)
    assert (done.index, done.value) == (7, 1.25)
    assert rows.asked == []  # nothing built for observers that never look
    assert done.row == {"fast": 70, "status": "done"}
    assert done.row["fast"] == 70 and rows.asked == [7, 7]
    failed = PointFailed(3, source=rows)
    assert isinstance(failed, RowEvent) and failed.row["fast"] == 30
    # the source is neither shown nor compared
    assert "source" not in repr(done) and "Rows" not in repr(done)
    assert PointDone(7, 1.25, source=Rows(), time=1.0) == PointDone(7, 1.25, source=rows, time=1.0)


def test_the_other_events_carry_their_fields() -> None:
    slow = PointSlow(index=4, params={"fast": 5}, seconds=61.5, engine=None)
    assert (slow.index, slow.params, slow.seconds, slow.engine) == (4, {"fast": 5}, 61.5, None)
    assert (EngineAdded(engine=3, host="h1").engine, EngineAdded(engine=3, host="h1").host) == (3, "h1")
    lost = EngineLost(engine=1, requeued=2)
    assert (lost.engine, lost.requeued, lost.replaced) == (1, 2, False)
    assert EngineLost(engine=1, requeued=0, replaced=True).replaced
    finished = Finished(done=9, failed=1, cancelled=0, seconds=3.5, status="complete")
    assert finished.reason == "" and finished.status == "complete"
    assert Finished(done=1, failed=1, cancelled=8, seconds=1.0, status="stopped", reason="point 2").reason
    for event in (slow, lost, finished, Cancelled(done=0, total=0)):
        assert isinstance(event, SweepEvent)


# ------------------------------------------------------------------ the bus
def test_observers_get_every_event_in_order_in_subscription_order() -> None:
    bus = EventBus()
    seen: list[tuple[str, Any]] = []
    bus.subscribe(lambda e: seen.append(("a", e)))
    bus.subscribe(lambda e: seen.append(("b", e)))
    first, second = Cancelled(done=1, total=2), Cancelled(done=2, total=2)
    bus.emit(first)
    bus.emit(second)
    assert seen == [("a", first), ("b", first), ("a", second), ("b", second)]


def test_emit_many_delivers_each_event_to_each_observer_in_order() -> None:
    bus = EventBus()
    seen: list[tuple[str, int]] = []
    bus.subscribe(lambda e: seen.append(("a", e.done)))
    bus.subscribe(lambda e: seen.append(("b", e.done)))
    bus.emit_many(Cancelled(done=i, total=3) for i in range(3))
    assert seen == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_emit_many_builds_no_events_for_nobody() -> None:
    bus = EventBus()
    built: list[int] = []

    def events():
        for i in range(3):
            built.append(i)
            yield Cancelled(done=i, total=3)

    bus.emit_many(events())
    assert built == []
    bus.emit(Cancelled(done=0, total=0))  # nothing to deliver to, nothing raised


def test_kinds_filter_by_type_subclasses_included() -> None:
    bus = EventBus()
    rows: list[SweepEvent] = []
    ends: list[SweepEvent] = []
    everything: list[SweepEvent] = []
    bus.subscribe(rows.append, kinds=(RowEvent,))
    bus.subscribe(ends.append, (Finished, Cancelled))
    bus.subscribe(everything.append)
    done, failed = PointDone(0, 1.0, source=Rows()), PointFailed(1, source=Rows())
    cancelled = Cancelled(done=1, total=2)
    finished = Finished(done=1, failed=1, cancelled=0, seconds=1.0, status="cancelled")
    bus.emit_many([Started(total=2, engines=1, metric="m", maximize=True), done, failed, cancelled, finished])
    assert rows == [done, failed]
    assert ends == [cancelled, finished]
    assert len(everything) == 5


def test_observed_and_unsubscribe() -> None:
    bus = EventBus()
    assert not bus.observed
    seen: list[SweepEvent] = []
    unsubscribe = bus.subscribe(seen.append)
    also = bus.subscribe(seen.append)  # the same observer twice: delivered twice
    assert bus.observed
    bus.emit(Cancelled(done=0, total=1))
    assert len(seen) == 2
    unsubscribe()
    bus.emit(Cancelled(done=1, total=1))
    assert len(seen) == 3
    also()
    assert not bus.observed
    unsubscribe()  # a second time: nothing happens
    also()
    bus.emit(Cancelled(done=1, total=1))
    assert len(seen) == 3


def test_an_observer_may_unsubscribe_while_being_called() -> None:
    bus = EventBus()
    seen: list[str] = []
    handle: dict[str, Any] = {}

    def once(event: SweepEvent) -> None:
        seen.append("once")
        handle["unsubscribe"]()

    handle["unsubscribe"] = bus.subscribe(once)
    bus.subscribe(lambda e: seen.append("other"))
    bus.emit(Cancelled(done=0, total=1))
    bus.emit(Cancelled(done=1, total=1))
    assert seen == ["once", "other", "other"]


def test_a_non_callable_observer_is_refused() -> None:
    with pytest.raises(TypeError, match="observer must be callable, got list"):
        EventBus().subscribe([])  # type: ignore[arg-type]


def test_an_observer_that_raises_is_warned_about_once_and_dropped() -> None:
    bus = EventBus()
    calls: list[int] = []
    seen: list[int] = []

    def broken(event: Cancelled) -> None:
        calls.append(event.done)
        raise ValueError("no display")

    bus.subscribe(broken)  # type: ignore[arg-type]
    bus.subscribe(lambda e: seen.append(e.done))
    with pytest.warns(NbbacktestWarning, match=r"sweep observer .*broken.* raised ValueError: no display;"
                                               r" it was unsubscribed") as caught:
        bus.emit_many(Cancelled(done=i, total=3) for i in range(3))
    assert len(caught) == 1
    assert calls == [0]  # not called again, not even for the rest of the batch
    assert seen == [0, 1, 2]  # the others still get every event
    bus.emit(Cancelled(done=3, total=3))
    assert calls == [0] and seen == [0, 1, 2, 3]


def test_the_only_observer_raising_leaves_the_bus_unobserved() -> None:
    bus = EventBus()

    def broken(event: SweepEvent) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken)
    with pytest.warns(NbbacktestWarning, match="raised RuntimeError: boom"):
        bus.emit(Cancelled(done=0, total=1))
    assert not bus.observed
