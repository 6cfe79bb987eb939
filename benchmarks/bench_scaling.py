"""How a sweep scales with engines: speedup and parallel efficiency per engine count.

One local cluster of as many engines as there are cores (``os.cpu_count()``; or
``ENGINES`` given on the command line) runs the same sweep on 1, 2, 4, ... engines,
then on one engine fewer than the cores (a core left to the client) and on all of
them. The sweep is a moving-average crossover (fast 2..99 x slow 10..295 step 5,
fast < slow: 4,829 points) on 50,000 hourly bars, 11-13 s of single-core work: each
point computes its two rolling means with pandas (no indicator memo, so that every
engine count does the same work whatever ran before it). The counts take turns,
``REPEAT`` rounds (a slow spell of a shared machine hits them alike); each keeps
its median. Speedup is against the same sweep on one engine of the same cluster;
efficiency is speedup / engines. The in-process time (``engines=1``, no cluster) is
printed for reference.

Target (issue: speed and memory at scale): 15 engines on 16 cores >= 90 %
efficiency; where only 2 cores are available, 2 engines >= 95 %.

    python benchmarks/bench_scaling.py [ENGINES]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from common import long_series

import nbbacktest as nbb

GRID = {"fast": range(2, 100), "slow": range(10, 300, 5)}
BARS = 50_000
REPEAT = 3


class RollingCross(nbb.Strategy):
    """Long while the fast rolling mean of the close is above the slow one."""

    fast = nbb.Param(10, low=2, high=500)
    slow = nbb.Param(50, low=3, high=1000)

    def signals(self, data):
        close = data["Close"]
        return (close.rolling(self.fast).mean() > close.rolling(self.slow).mean()).astype(float)


def fast_lt_slow(p):
    return p.fast < p.slow


def engine_counts(cores: int) -> list[int]:
    """1, 2, 4, ... below ``cores``, then ``cores - 1`` and ``cores``."""
    counts, k = [], 1
    while k < cores:
        counts.append(k)
        k *= 2
    return sorted(set(counts) | {max(1, cores - 1), cores})


def seconds(run) -> float:
    started = time.perf_counter()
    sweep = run()
    assert sweep.status == "complete", sweep.status
    return time.perf_counter() - started


def main() -> None:
    cores = int(sys.argv[1]) if len(sys.argv) > 1 else (os.cpu_count() or 1)
    data = long_series(BARS, seed=5)
    options = dict(where=fast_lt_slow, progress=False, commission=0.001)
    points = len(nbb.sweep(RollingCross, data.iloc[:500], GRID, **options))
    counts = engine_counts(cores)
    times: dict[int, list[float]] = {k: [] for k in [0, *counts]}  # 0: in-process
    cluster = nbb.Cluster(engines=cores, timeout=300)
    try:
        nbb.sweep(RollingCross, data, {"fast": [5], "slow": [20]}, cluster=cluster, **options)  # data shared
        for _ in range(REPEAT):
            times[0].append(seconds(lambda: nbb.sweep(RollingCross, data, GRID, engines=1, **options)))
            for k in counts:
                times[k].append(seconds(
                    lambda k=k: nbb.sweep(RollingCross, data, GRID, cluster=cluster, engines=k, **options)))
    finally:
        cluster.stop()
    print(f"Sweep: {points:,} points x {BARS:,} bars, {os.cpu_count()} cores; median of {REPEAT} rounds")
    local = statistics.median(times[0])
    print(f"  in-process: {local:6.2f} s ({points / local:,.0f} backtests/s); all: "
          + ", ".join(f"{t:.2f}" for t in times[0]))
    base = statistics.median(times[counts[0]])
    print(f"  {'engines':>7} {'seconds':>8} {'backtests/s':>12} {'speedup':>8} {'efficiency':>10}")
    for k in counts:
        median = statistics.median(times[k])
        speedup = base / median
        print(f"  {k:>7} {median:8.2f} {points / median:12,.0f} {speedup:8.2f} {speedup / k:10.1%}"
              "   all: " + ", ".join(f"{t:.2f}" for t in times[k]))
    target = (15, 0.90) if cores >= 16 else (2, 0.95)
    print(f"Target: {target[0]} engines >= {target[1]:.0%} efficiency (see the table)")


if __name__ == "__main__":
    main()
