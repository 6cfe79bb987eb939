"""When each engine gets its next chunk of points, and how many: sized from measured time.

The points of a sweep cost about the same, so the planner learns each engine's
seconds per point and the cost of a task's trip through the controller from the
chunks that come back. Every engine holds two chunks (the one it runs and the next,
so it never waits for a round trip); each new chunk takes a falling share of what
is left (a few large tasks, then smaller ones); once what is left is short, it is
split so that every engine comes back at the same moment, in halves while a share
is long enough that a wrong estimate would cost more than one more task. A
200-point sweep is then one task per engine; 100,000 points are tasks of about a
second each.

A target of the planner can be several engines of one host that share each chunk
(``members``): they claim its points among themselves as they run (see
:class:`nbbacktest.parallel.worker.ClaimBoard`), so such a target balances itself
and its seconds per point are one member's divided by the members. A planner
with a single target only keeps chunks under a second: there is no one to balance.

Times are the client's clock (``time.perf_counter``) plus durations the engines
measure; an engine's own clock is never compared with the client's.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

#: Chunks sent to one engine and not yet back, at most.
MAX_OUTSTANDING = 2
#: A chunk runs at least this long (unless the points run out) ...
MIN_CHUNK_SECONDS = 0.015
#: ... and at least this many task gaps, so per-task costs stay a few percent ...
MIN_CHUNK_GAPS = 8
#: ... and at most this long, so progress, checkpoints and rebalancing stay live,
MAX_CHUNK_SECONDS = 1.0
#: ... and at most this many points, so that a task's message stays small.
MAX_CHUNK_POINTS = 20_000
#: Before the end, chunks go out in batches of one per engine, each batch taking
#: 1 / FACTOR of what is left (factoring: large tasks first, then smaller ones).
FACTOR = 2
#: Once what is left takes at most this long per engine, it is split to finish together ...
FINAL_SECONDS = 0.15
#: ... in halves while an engine's share is longer than this: point times vary by about
#: a tenth between chunks, and one more task costs a few milliseconds.
SPLIT_SECONDS = 0.05
#: Weight of the earlier chunks in an engine's seconds per point, per chunk since.
COST_MEMORY = 0.7
#: Until measured: a task's trip to an idle engine and back, and the gap between
#: two queued tasks on one engine (ipyparallel on one host: 2-6 ms and 1-3 ms).
DEFAULT_ROUND_TRIP = 0.005
DEFAULT_TASK_GAP = 0.002


@dataclass
class Timing:
    """What sweeps on one cluster measured, for the next sweep to start from."""

    #: seconds per point, by job (data, classes, settings)
    point_seconds: dict[str, float] = field(default_factory=dict)
    #: round trip to each idle engine and back, beyond the points
    round_trips: dict[int, float] = field(default_factory=dict)
    #: gap between two queued tasks on one engine
    task_gap: float | None = None


@dataclass
class EngineClock:
    """What the planner knows of one engine."""

    cost: float  #: seconds per point, measured on this engine (divided by its members)
    members: int = 1  #: engines that share this target's chunks
    round_trip: float = DEFAULT_ROUND_TRIP  #: client to idle engine and back, beyond the points
    #: client time at which everything sent to it is expected back
    back_at: float = 0.0
    #: (points, time sent) of the chunks out on this engine, oldest first
    out: deque[tuple[int, float]] = field(default_factory=deque)
    #: client time at which its last chunk came back
    last_back: float = -math.inf
    #: it runs a suspect row alone, and gets nothing more until that is back: were it
    #: to die, nothing else would be lost with it
    isolating: bool = False
    #: decayed sums of the seconds and points measured on it
    seconds: float = 0.0
    points: float = 0.0


class ChunkPlanner:
    """Hands out the rows of a sweep to engines as chunks.

    Parameters
    ----------
    rows : sequence of int
        The rows still to run, in the order they should go out.
    point_seconds : float
        The first estimate of one point's run time (measured by the caller).
    engines : iterable of int
        The engines' ids (or targets': see ``members``).
    fixed : int, optional
        Always this many points per chunk (``chunksize=N``).
    round_trips : mapping of int to float, optional
        Measured round trips of earlier sweeps, by engine.
    task_gap : float, optional
        Measured gap between two queued tasks on one engine.
    members : mapping of int to int, optional
        Engines sharing each target's chunks (default 1); ``point_seconds`` is one
        engine's, and :meth:`done` takes the seconds divided by the members.

    Examples
    --------
    A short sweep is one chunk per engine:

    >>> planner = ChunkPlanner(range(180), 0.0004, [0, 1])
    >>> [(engine, len(rows)) for engine, rows in planner.due(now=0.0)]
    [(0, 90), (1, 90)]
    >>> planner.done(0, 90, 0.036, now=0.041)
    >>> planner.remaining, planner.outstanding
    (0, 1)

    A long one starts with large chunks, two per engine:

    >>> planner = ChunkPlanner(range(10_000), 0.0004, [0, 1])
    >>> [(engine, len(rows)) for engine, rows in planner.due(now=0.0)]
    [(0, 2500), (1, 2500), (0, 1250), (1, 1250)]

    Two engines sharing chunks are one target, sent chunks of up to a second each:

    >>> planner = ChunkPlanner(range(10_000), 0.0004, [0], members={0: 2})
    >>> [(engine, len(rows)) for engine, rows in planner.due(now=0.0)]
    [(0, 5000), (0, 5000)]
    """

    def __init__(
        self,
        rows: Iterable[int],
        point_seconds: float,
        engines: Iterable[int],
        *,
        fixed: int | None = None,
        round_trips: dict[int, float] | None = None,
        task_gap: float | None = None,
        members: Mapping[int, int] | None = None,
    ) -> None:
        self.pending: deque[int] = deque(rows)
        #: Rows that go out one per chunk, before the others (suspected of killing an engine).
        self.alone: deque[int] = deque()
        self.fixed = fixed
        self.cost = point_seconds if point_seconds > 0 else 0.01
        self.task_gap = DEFAULT_TASK_GAP if task_gap is None else task_gap
        self.round_trips = dict(round_trips or {})
        self._batch_share = 0.0  # points per chunk of the current batch
        self._batch_left = 0  # chunks of the current batch still to hand out
        self.engines: dict[int, EngineClock] = {}
        for engine in engines:
            self.add_engine(engine, (members or {}).get(engine, 1))

    # ------------------------------------------------------------ membership
    def add_engine(self, engine: int, members: int = 1) -> None:
        """An engine (or a target of ``members`` engines) that takes work from now on."""
        self.engines[engine] = EngineClock(
            self.cost / members, members, self.round_trips.get(engine, DEFAULT_ROUND_TRIP)
        )

    def remove_engine(self, engine: int) -> None:
        """An engine that is gone; the caller gives its chunks back with :meth:`requeue`."""
        self.engines.pop(engine, None)

    def requeue(self, rows: Sequence[int], alone: bool = False) -> None:
        """Rows that came back unrun: they go out first; ``alone``: each in a chunk of its own
        (so that a point that kills its engine is told apart from its chunk's others)."""
        (self.alone if alone else self.pending).extendleft(reversed(list(rows)))

    @property
    def remaining(self) -> int:
        """Rows not yet sent."""
        return len(self.pending) + len(self.alone)

    @property
    def outstanding(self) -> int:
        """Chunks sent and not yet back."""
        return sum(len(clock.out) for clock in self.engines.values())

    # ------------------------------------------------------------ decisions
    def due(self, now: float) -> list[tuple[int, list[int]]]:
        """The chunks to send now, as (engine, rows); each is recorded as sent at ``now``."""
        chunks: list[tuple[int, list[int]]] = []
        # One chunk per engine per pass, so every engine starts before any gets its
        # second; the engine that runs dry first is served first.
        while self.alone:
            # Suspects first, each to an idle engine; the others wait until one is.
            idle = [e for e in self.engines if not self.engines[e].out]
            if not idle:
                return chunks
            for engine in sorted(idle, key=lambda e: self.engines[e].back_at)[: len(self.alone)]:
                self._sent(self.engines[engine], 1, now)
                self.engines[engine].isolating = True
                chunks.append((engine, [self.alone.popleft()]))
        while self.pending:
            hungry = [e for e, c in self.engines.items()
                      if len(c.out) < MAX_OUTSTANDING and not c.isolating]
            given = 0
            for engine in sorted(hungry, key=lambda e: self.engines[e].back_at):
                size = min(self._size(engine, now), len(self.pending))
                if size <= 0:
                    continue  # the others finish what is left sooner
                rows = [self.pending.popleft() for _ in range(size)]
                self._sent(self.engines[engine], size, now)
                chunks.append((engine, rows))
                given += 1
                if not self.pending:
                    break
            if not given:
                break
        return chunks

    def done(self, engine: int, points: int, seconds: float, now: float) -> None:
        """The oldest chunk out on ``engine`` came back: ``points`` ran in ``seconds``."""
        clock = self.engines.get(engine)
        if clock is None or not clock.out:
            return
        _, sent = clock.out.popleft()
        clock.isolating = clock.isolating and bool(clock.out)
        if points:
            # Seconds per point over the chunks so far, older chunks weighing less:
            # one slow chunk (the machine was busy) moves the estimate only partly.
            clock.seconds = COST_MEMORY * clock.seconds + seconds
            clock.points = COST_MEMORY * clock.points + points
            clock.cost = clock.seconds / clock.points
        # The part of the wait that was not the points: a round trip when the chunk
        # found the engine idle, else the gap between two queued tasks.
        if clock.last_back <= sent:
            clock.round_trip = 0.5 * (clock.round_trip + _clamp(now - sent - seconds))
            self.round_trips[engine] = clock.round_trip
        else:
            self.task_gap = 0.5 * (self.task_gap + _clamp(now - clock.last_back - seconds))
        clock.last_back = clock.back_at = now
        for size, _ in clock.out:
            clock.back_at += self.task_gap + size * clock.cost

    # ------------------------------------------------------------ sizing
    def _sent(self, clock: EngineClock, size: int, now: float) -> None:
        start = clock.back_at + self.task_gap if clock.out else now + clock.round_trip
        clock.back_at = max(start, now + clock.round_trip) + size * clock.cost
        clock.out.append((size, now))

    def _size(self, engine: int, now: float) -> int:
        if self.fixed is not None:
            return self.fixed
        clock = self.engines[engine]
        left = len(self.pending)
        largest = min(MAX_CHUNK_SECONDS / clock.cost, MAX_CHUNK_POINTS)
        if len(self.engines) == 1:
            return max(1, math.floor(min(left, largest)))
        mean_cost = sum(c.cost for c in self.engines.values()) / len(self.engines)
        if left * mean_cost <= FINAL_SECONDS * len(self.engines):
            return self._final_share(clock, list(self.engines.values()), left, now)
        if self._batch_left <= 0:
            self._batch_share = left / (FACTOR * len(self.engines))
            self._batch_left = len(self.engines)
        self._batch_left -= 1
        return max(1, math.ceil(min(max(self._batch_share, self._smallest(clock)), largest)))

    def _final_share(self, clock: EngineClock, engines: list[EngineClock], left: int,
                     now: float) -> int:
        """Water-fill: the points that make ``clock``'s engine come back with the others."""
        def free(c: EngineClock) -> float:
            return c.back_at + self.task_gap if c.out else now + c.round_trip

        # The finishing time T with sum((T - free) / cost) over the engines that take part
        # equal to what is left; an engine busy past T takes no part.
        taking = sorted(engines, key=free)
        while True:
            rate = sum(1.0 / c.cost for c in taking)
            finish = (left + sum(free(c) / c.cost for c in taking)) / rate
            if len(taking) == 1 or finish >= free(taking[-1]):
                break
            taking.pop()
        # At the end an engine would otherwise wait idle, so a piece is worth a task
        # down to a couple of task gaps.
        smallest = max(1.0, 2 * self.task_gap / clock.cost)
        if clock not in taking:
            return 0
        share = (finish - free(clock)) / clock.cost
        if share * clock.cost > SPLIT_SECONDS:
            share = max(share / 2, SPLIT_SECONDS / clock.cost)
        points = round(share)
        if points < smallest:
            # Too little to be worth a task of its own: the engine free first takes it all.
            return left if clock is taking[0] else 0
        return left if left - points < smallest else points

    def _smallest(self, clock: EngineClock) -> float:
        """Points in the shortest chunk worth a task on this engine."""
        return max(MIN_CHUNK_SECONDS, MIN_CHUNK_GAPS * self.task_gap) / clock.cost


def _clamp(seconds: float) -> float:
    return min(max(seconds, 0.0), 1.0)


# ------------------------------------------------------------------ point cost
_T = TypeVar("_T")

#: Runs at most that :func:`measure_point_cost` takes: the best of three is steady
#: to a few percent, and a slow strategy is not run a fourth time to learn little.
MEASURE_RUNS = 3


def measure_point_cost(run: Callable[[], _T], budget: float = 0.0) -> tuple[_T, float]:
    """Run one point and time it: ``(what run returned, seconds)``.

    The one measurement of a point's cost, for the sweep's first chunk size and
    the widgets' estimates. ``run`` is called once, then again (up to
    :data:`MEASURE_RUNS` times in all) while the runs so far took less than
    ``budget`` seconds; the time is the fastest run (the others waited on a
    cold cache or another process). ``budget=0`` runs once.

    Parameters
    ----------
    run : callable
        Runs one point; called without arguments. What it raises propagates.
    budget : float
        Seconds the repeats may take, in all (default 0: one run).

    Returns
    -------
    tuple
        What the last call of ``run`` returned, and the fastest run's seconds.

    Examples
    --------
    >>> calls = []
    >>> value, seconds = measure_point_cost(lambda: calls.append(1) or len(calls))
    >>> value, len(calls), seconds >= 0
    (1, 1, True)
    >>> value, seconds = measure_point_cost(lambda: calls.append(1) or len(calls), budget=60)
    >>> value, len(calls)
    (4, 4)
    """
    best = math.inf
    spent = 0.0
    for _ in range(MEASURE_RUNS):
        started = time.perf_counter()
        value = run()
        took = time.perf_counter() - started
        best, spent = min(best, took), spent + took
        if spent >= budget:
            break
    return value, best
