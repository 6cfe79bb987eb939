"""The chunk planner against simulated engines (no cluster: the planner only sees times)."""

from __future__ import annotations

import heapq
import time

import pytest

from nbbacktest.parallel.schedule import MAX_CHUNK_SECONDS, MAX_OUTSTANDING, ChunkPlanner


def simulate(planner: ChunkPlanner, seconds_per_point: dict[int, float], *,
             round_trip: float = 0.005, gap: float = 0.002):
    """Run ``planner`` on engines of the given speeds; returns (finish times, chunks).

    Each engine runs its chunks in order; a chunk sent at t reaches an idle engine at
    t + round_trip / 2 and comes back round_trip / 2 after it ends.
    """
    now = 0.0
    engine_free = dict.fromkeys(seconds_per_point, 0.0)
    arrivals: list[tuple[float, int, int, float]] = []
    chunks: list[tuple[int, list[int], float]] = []
    finished: dict[int, float] = {}
    while True:
        for engine, rows in planner.due(now):
            out_now = sum(1 for _, e, _, _ in arrivals if e == engine) + 1
            assert out_now <= MAX_OUTSTANDING
            start = max(now + round_trip / 2, engine_free[engine] + gap)
            seconds = len(rows) * seconds_per_point[engine]
            engine_free[engine] = start + seconds
            heapq.heappush(arrivals, (start + seconds + round_trip / 2, engine, len(rows), seconds))
            chunks.append((engine, rows, seconds))
        if not arrivals:
            return finished, chunks
        now, engine, points, seconds = heapq.heappop(arrivals)
        finished[engine] = now
        planner.done(engine, points, seconds, now)


def handed_out(chunks) -> list[int]:
    return sorted(row for _, rows, _ in chunks for row in rows)


def test_a_short_sweep_is_one_chunk_per_engine():
    planner = ChunkPlanner(range(179), 0.0004, [0, 1])
    finished, chunks = simulate(planner, {0: 0.0004, 1: 0.0004})
    assert [(engine, len(rows)) for engine, rows, _ in chunks] == [(0, 90), (1, 89)]
    assert handed_out(chunks) == list(range(179))


@pytest.mark.parametrize("points", [2_000, 20_000, 200_000])
def test_a_long_sweep_uses_few_tasks_and_engines_finish_together(points):
    speeds = {0: 0.0004, 1: 0.0004}
    planner = ChunkPlanner(range(points), 0.0004, speeds)
    finished, chunks = simulate(planner, speeds)
    assert handed_out(chunks) == list(range(points))
    assert max(seconds for *_, seconds in chunks) <= MAX_CHUNK_SECONDS * 1.01
    wall = max(finished.values())
    ideal = points * 0.0004 / 2
    # Few tasks (factoring, then chunks of at most a second), little idle time.
    assert len(chunks) <= 2 * (6 + ideal / MAX_CHUNK_SECONDS)
    assert abs(finished[0] - finished[1]) <= 0.02
    assert wall <= ideal * 1.03 + 0.02


def test_a_slower_engine_gets_fewer_points_once_measured():
    speeds = {0: 0.0004, 1: 0.0005}  # engine 1 (another host) is a quarter slower
    planner = ChunkPlanner(range(4_000), 0.0004, speeds)
    finished, chunks = simulate(planner, speeds)
    share = {e: sum(len(rows) for engine, rows, _ in chunks if engine == e) for e in speeds}
    assert share[0] > 1.1 * share[1]
    assert abs(finished[0] - finished[1]) <= 0.03
    assert planner.engines[1].cost == pytest.approx(0.0005)


def test_heavy_points_end_within_one_point_of_each_other():
    speeds = {0: 0.09, 1: 0.09}
    planner = ChunkPlanner(range(40), 0.09, speeds)
    finished, chunks = simulate(planner, speeds)
    assert handed_out(chunks) == list(range(40))
    assert abs(finished[0] - finished[1]) <= 0.09 + 0.01


def test_requeued_rows_go_out_first_and_a_lost_engine_gets_nothing():
    planner = ChunkPlanner(range(10, 20), 0.01, [0, 1], fixed=3)
    first = planner.due(0.0)
    assert [rows for _, rows in first] == [[10, 11, 12], [13, 14, 15], [16, 17, 18], [19]]
    planner.remove_engine(1)
    planner.requeue([13, 14, 15])
    planner.done(0, 3, 0.03, 0.04)
    assert planner.due(0.04) == [(0, [13, 14, 15])]
    assert planner.outstanding == 2  # engine 0's second chunk and the requeued one


def test_an_engine_that_joins_takes_work():
    planner = ChunkPlanner(range(10_000), 0.0004, [0])
    assert [len(rows) for _, rows in planner.due(0.0)] == [2500, 2500]  # a second each
    planner.add_engine(5)
    planner.done(0, 2500, 1.0, 1.005)
    engines = {engine for engine, _ in planner.due(1.005)}
    assert 5 in engines


def test_a_single_target_gets_chunks_of_at_most_a_second_and_no_tail():
    # Alone (one engine, or engines sharing chunks) nothing needs balancing: a short
    # sweep is one chunk, a long one chunks of a second, however much is left.
    assert [len(rows) for _, rows in ChunkPlanner(range(179), 0.0004, [0]).due(0.0)] == [179]
    planner = ChunkPlanner(range(6_000), 0.0004, [7], members={7: 2})
    finished, chunks = simulate(planner, {7: 0.0002})
    assert [len(rows) for _, rows, _ in chunks] == [5000, 1000]
    assert handed_out(chunks) == list(range(6_000))


def test_chunks_are_capped_in_points_for_very_cheap_points():
    planner = ChunkPlanner(range(100_000), 0.000001, [0])
    assert [len(rows) for _, rows in planner.due(0.0)] == [20_000, 20_000]


def test_round_trips_and_task_gaps_are_learned():
    planner = ChunkPlanner(range(2_000), 0.0004, [0, 1], round_trips={0: 0.001, 1: 0.001})
    simulate(planner, {0: 0.0004, 1: 0.0004}, round_trip=0.008, gap=0.003)
    assert 0.004 < planner.round_trips[0] <= 0.008  # one idle arrival per engine
    assert 0.0015 < planner.task_gap <= 0.003


def test_rows_requeued_alone_go_out_first_one_per_chunk():
    planner = ChunkPlanner(range(100), 0.001, [0, 1])
    planner.requeue([107, 109, 111], alone=True)  # came back unrun
    assert planner.remaining == 103
    # Each to an idle engine, which then gets nothing else until it is back: were the
    # suspect to kill it, no other row would be lost with it.
    assert planner.due(now=0.0) == [(0, [107]), (1, [109])]
    assert planner.due(now=0.001) == []
    planner.done(1, 1, 0.001, now=0.002)
    assert planner.due(now=0.003) == [(1, [111])]
    planner.done(0, 1, 0.001, now=0.004)
    chunks = planner.due(now=0.005)
    assert chunks and {e for e, _ in chunks} == {0}  # engine 1 still runs its suspect
    later = [r for _, rows in chunks for r in rows]
    assert later == list(range(len(later)))
    planner.done(1, 1, 0.001, now=0.006)
    assert [e for e, _ in planner.due(now=0.007)][:1] == [1]


# ------------------------------------------------------------------ point cost
def test_measure_point_cost_runs_once_without_a_budget():
    from nbbacktest.parallel.schedule import measure_point_cost

    calls = []
    value, seconds = measure_point_cost(lambda: calls.append(None) or "result")
    assert value == "result" and len(calls) == 1 and 0 <= seconds < 1


def test_measure_point_cost_keeps_the_fastest_of_three_within_the_budget():
    from nbbacktest.parallel.schedule import MEASURE_RUNS, measure_point_cost

    sleeps = iter([0.03, 0.0, 0.01, 0.5])

    def run():
        time.sleep(next(sleeps))
        return "done"

    value, seconds = measure_point_cost(run, budget=10)
    assert value == "done" and MEASURE_RUNS == 3
    assert seconds < 0.01  # the second run, the fastest; the fourth never ran
    assert next(sleeps) == 0.5


def test_measure_point_cost_stops_once_the_budget_is_spent_and_raises_what_run_raises():
    from nbbacktest.parallel.schedule import measure_point_cost

    calls = []

    def slow():
        calls.append(None)
        time.sleep(0.02)

    measure_point_cost(slow, budget=0.01)
    assert len(calls) == 1
    with pytest.raises(ZeroDivisionError):
        measure_point_cost(lambda: 1 / 0, budget=1)
