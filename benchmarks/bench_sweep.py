"""Sweep throughput on a local 2-engine cluster, with ratios measured in one run.

1. The 179-point SMA-crossover sweep (fast 5..55 step 5 x slow 10..190 step 10,
   fast < slow) on the daily sample, cluster started and data sent: backtests per
   second end to end (median of 7 sweeps), in-process for comparison.
2. Heavy points (event-driven, >= 50 ms each, 40 points): 2 engines vs 1 engine.
3. 2,000 tiny points: scheduling overhead, the share of engine time not spent
   running points: 1 - sum(point seconds) / (wall seconds x engines).

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
        remote_runs = [timed(lambda: sweep(cluster=cluster)) for _ in range(7)]
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
        wall, r3 = timed(lambda: nbb.sweep(SmaCross, daily, tiny, cluster=cluster, progress=False))
        busy = float(r3.results.seconds.sum())
        overhead = 1 - busy / (wall * 2)
        print(f"\n3. {len(r3):,} tiny points: {wall:.2f} s wall, {busy:.2f} s of points on 2 engines")
        print(f"   scheduling overhead {overhead * 100:.1f}% of engine time "
              f"(target <= 5%: {'met' if overhead <= 0.05 else 'NOT met'})")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
