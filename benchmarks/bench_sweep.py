"""Sweep throughput on a local 2-engine cluster, with ratios measured in one run.

1. The 179-point SMA-crossover sweep (fast 5..55 step 5 x slow 10..190 step 10,
   fast < slow) on the daily sample, cluster started and data sent: backtests per
   second end to end (median of 7 sweeps), in-process for comparison, and the
   floor: the same points sent as two bare apply_async of run_points (a fixed half
   each, nothing planned, claimed or recorded), alternating with the sweeps.
2. Heavy points (event-driven, >= 50 ms each, 40 points): 2 engines vs 1 engine.
3. 2,000 tiny points: scheduling overhead, the share of engine time not spent
   running points: 1 - sum(point seconds) / (wall seconds x engines), median of 5
   sweeps, and where that time goes on each engine.

    python benchmarks/bench_sweep.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from common import long_series

import nbbacktest as nbb
from nbbacktest.engine.examples import SmaCross, SmaCrossEvent

GRID = {"fast": range(5, 60, 5), "slow": range(10, 200, 10)}


def fast_lt_slow(p):
    return p.fast < p.slow


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    daily = nbb.load_sample("daily")
    start, cluster = timed(lambda: nbb.Cluster(engines=2))
    print(f"cluster of 2 engines started in {start:.1f} s")
    try:
        def sweep(**kw):
            return nbb.sweep(SmaCross, daily, GRID, where=fast_lt_slow, progress=False, **kw)

        sweep(cluster=cluster)  # data sent and classes shipped once, as in a session
        local = [timed(sweep)[0] for _ in range(5)]
        floor_once = bare_apply_floor(cluster, daily, sweep().plan)
        # Sweep and floor alternate, so that the machine's slow spells hit both alike.
        remote_runs, floor = [], []
        for _ in range(7):
            remote_runs.append(timed(lambda: sweep(cluster=cluster)))
            floor.append(timed(floor_once)[0])
        remote = [t for t, _ in remote_runs]
        n = len(remote_runs[0][1])
        identical = remote_runs[0][1].results.drop(columns=["engine", "host", "seconds"]).equals(
            sweep().results.drop(columns=["engine", "host", "seconds"])
        )
        print(f"\n1. {n}-point SMA sweep on the daily sample ({len(daily)} bars)")
        print(f"   in-process   : {n / statistics.median(local):8,.0f} backtests/s "
              f"(median {statistics.median(local) * 1e3:.1f} ms)")
        print(f"   2 engines    : {n / statistics.median(remote):8,.0f} backtests/s "
              f"(median {statistics.median(remote) * 1e3:.1f} ms, best {min(remote) * 1e3:.1f} ms)")
        print(f"   floor        : {n / statistics.median(floor):8,.0f} backtests/s "
              f"(median {statistics.median(floor) * 1e3:.1f} ms, best {min(floor) * 1e3:.1f} ms): "
              "the same points as two bare apply_async of run_points, half each")
        print(f"   identical to in-process: {identical}")
        print(f"   target >= 4,000/s: {'met' if n / statistics.median(remote) >= 4000 else 'NOT met'}")

        heavy = long_series(120_000, seed=3)
        grid = {"fast": range(5, 45, 1)}
        one, r1 = timed(lambda: nbb.sweep(SmaCrossEvent, heavy, grid, cluster=cluster, engines=1,
                                          progress=False))
        two, r2 = timed(lambda: nbb.sweep(SmaCrossEvent, heavy, grid, cluster=cluster, progress=False))
        point = float(np.nanmedian(r2.results.seconds))
        print(f"\n2. heavy points: 40 event-driven backtests of {len(heavy):,} bars "
              f"(~{point * 1e3:.0f} ms each)")
        print(f"   1 engine {one:.2f} s, 2 engines {two:.2f} s: speedup {one / two:.2f}x "
              f"(target >= 1.85x: {'met' if one / two >= 1.85 else 'NOT met'})")

        tiny = {"fast": range(2, 42), "slow": range(50, 100)}
        runs = []
        for _ in range(5):
            began = time.time()
            wall, r3 = timed(lambda: nbb.sweep(SmaCross, daily, tiny, cluster=cluster, progress=False))
            busy = float(r3.results.seconds.sum())
            runs.append((1 - busy / (wall * 2), wall, busy, r3, began))
        runs.sort(key=lambda run: run[0])
        overhead, wall, busy, r3, began = runs[len(runs) // 2]
        print(f"\n3. {len(r3):,} tiny points, median of {len(runs)} sweeps: {wall:.2f} s wall, "
              f"{busy:.2f} s of points on 2 engines")
        print(f"   scheduling overhead {overhead * 100:.1f}% of engine time "
              f"(all: {', '.join(f'{run[0] * 100:.1f}%' for run in runs)}; "
              f"target <= 5%: {'met' if overhead <= 0.05 else 'NOT met'})")
        where_the_time_goes(r3, began, began + wall)
    finally:
        cluster.stop()


def bare_apply_floor(cluster, data, plan):
    """A call that sends the sweep's points as one task per engine, a fixed half each,
    with no planning, claiming or recording, and waits: ipyparallel's round trip plus
    the points."""
    from nbbacktest.engine.backtest import Settings
    from nbbacktest.parallel import worker
    from nbbacktest.parallel.fingerprint import fingerprint
    from nbbacktest.parallel.launch import job_bytes
    from nbbacktest.parallel.spec import SweepSpec

    key = fingerprint(data)
    cluster.share(data, key)
    spec = SweepSpec(plan, Settings())
    blob = job_bytes(spec.job(key))
    views = [cluster.client[engine] for engine in cluster.client.ids[:2]]
    specs = spec.point_specs(range(len(plan)))
    halves = [specs[0::2], specs[1::2]]

    def once(job=None):
        tasks = [view.apply_async(worker.run_points, "bench-floor", job, half)
                 for view, half in zip(views, halves)]
        for task in tasks:
            task.get(timeout=60)

    once(blob)  # the job is registered on each engine once
    return once


def where_the_time_goes(result, began: float, ended: float) -> None:
    """Per engine: waiting for the first task, between tasks, inside tasks, after the last."""
    points = result.results.groupby("engine")["seconds"].sum()
    for engine in sorted({chunk[0] for chunk in result.chunks}):
        tasks = sorted((c for c in result.chunks if c[0] == engine), key=lambda c: c[4])
        starts = [c[4].timestamp() for c in tasks]
        ends = [c[5].timestamp() for c in tasks]
        inside = sum(e - s for s, e in zip(starts, ends)) - float(points.get(engine, 0.0))
        gaps = sum(s - e for e, s in zip(ends, starts[1:]))
        print(f"   engine {engine}: {len(tasks)} tasks; first task started after "
              f"{(starts[0] - began) * 1e3:.1f} ms, between tasks {gaps * 1e3:.1f} ms, "
              f"inside tasks but not points {inside * 1e3:.1f} ms, idle at the end "
              f"{(ended - ends[-1]) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
