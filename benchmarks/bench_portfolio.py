"""Portfolio backtests: one run's time, a sweep's rate on 2 engines, the engines' memory.

Measured in one run, on the ``equities`` sample's first 50 symbols (2,520 business
days; some list late or delist early), with a 126-day momentum score, long the top
20 % and short the bottom 20 %:

1. One ``nbb.backtest`` (scores, construction, fills, every stat), monthly and daily
   rebalance: the best of 15 runs after a warm-up (numba's compiled loop is loaded
   once per process). Targets: <= 20 ms monthly, <= 60 ms daily.
2. A 1,000-point sweep (lookback x long x short, monthly) in this process, then on
   a 2-engine local cluster (started, and warmed up with a 4-point sweep on the
   same universe, before the clock starts). Target: >= 1.8x the in-process rate.
3. Each engine's unique memory (USS, from psutil: shared mapped pages excluded)
   before the universe is shared (the engines warmed up on another, tiny universe:
   libraries and compiled code loaded) and after the 1,000 points, against the
   universe's size; then the same for a 10x wider universe (500 symbols: the 50
   symbols repeated with noise), over 200 points. Target: <= 10 % of it each; the
   universe itself lives once per host in shared memory, mapped by the engines.

    python benchmarks/bench_portfolio.py
"""

from __future__ import annotations

import os
import time

import numpy as np
import psutil

import nbbacktest as nbb

REPEATS = 15
GRID = {"lookback": list(range(10, 260)), "long": [0.1, 0.2], "short": [0.1, 0.2], "rebalance": ["M"]}


class Momentum(nbb.PortfolioStrategy):
    lookback = nbb.Param(126, low=2, high=500)

    def scores(self, universe):
        return universe.close.pct_change(self.lookback, fill_method=None)


def best_time(strategy: nbb.PortfolioStrategy, universe: nbb.Universe) -> tuple[float, nbb.PortfolioResult]:
    result = nbb.backtest(strategy, universe, commission=0.001)  # warm-up: numba's loop, facts
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = nbb.backtest(strategy, universe, commission=0.001)
        _ = result.stats
        times.append(time.perf_counter() - started)
    return min(times), result


def widened(universe: nbb.Universe, times: int) -> nbb.Universe:
    """``times`` copies of every symbol side by side, each scaled by its own noise (valid OHLC)."""
    rng = np.random.default_rng(7)
    blocks = []
    for _ in range(times):
        scale = np.exp(rng.normal(0.0, 0.01, universe.shape))  # one factor per bar and symbol
        part = np.array(universe.block)
        part[:4] *= scale
        blocks.append(part)
    names = [f"{symbol}.{k}" for k in range(times) for symbol in universe.symbols]
    return nbb.Universe(np.concatenate(blocks, axis=2), universe.index, names)


def engine_uss(cluster: nbb.Cluster) -> dict[int, int]:
    pids = {engine: cluster.client[engine].apply_sync(os.getpid) for engine in cluster.client.ids}
    return {engine: psutil.Process(pid).memory_full_info().uss for engine, pid in pids.items()}


def main() -> None:
    equities = nbb.load_sample("equities")
    universe = equities.select(list(equities.symbols[:50]))
    bars, symbols = universe.shape
    print(f"Universe: {symbols} symbols x {bars} bars, price block {universe.nbytes / 2**20:.2f} MiB")

    print("\n1. One portfolio backtest, every stat (best of 15):")
    for rule, target in (("M", 0.020), ("D", 0.060)):
        seconds, result = best_time(Momentum(long=0.2, short=0.2, rebalance=rule), universe)
        verdict = "met" if seconds <= target else "NOT met"
        print(f"  rebalance={rule!r}: {seconds * 1000:6.1f} ms (target <= {target * 1000:.0f} ms: {verdict});"
              f" {result.stats['trades']} trades, IC mean {result.stats['ic_mean']:.3f},"
              f" turnover {result.stats['turnover']:.1f}x a year")

    points = int(np.prod([len(v) for v in GRID.values()]))
    print(f"\n2. A {points}-point sweep:")
    started = time.perf_counter()
    local = nbb.sweep(Momentum, universe, GRID, metric="ic_mean", progress=False, commission=0.001)
    local_seconds = time.perf_counter() - started
    print(f"  in-process: {local_seconds:6.2f} s, {points / local_seconds:7.1f} runs/s")
    cluster = nbb.Cluster(engines=2, timeout=120)
    try:
        tiny = universe.select(list(universe.symbols[:5]))
        nbb.sweep(Momentum, tiny, {"lookback": [20, 40, 60, 80]}, progress=False, cluster=cluster)
        before = engine_uss(cluster)
        started = time.perf_counter()
        parallel = nbb.sweep(Momentum, universe, GRID, metric="ic_mean", progress=False, commission=0.001,
                             cluster=cluster)
        parallel_seconds = time.perf_counter() - started
        after = engine_uss(cluster)
        wide = widened(universe, 10)
        wide_before = engine_uss(cluster)
        nbb.sweep(Momentum, wide, {"lookback": list(range(10, 210))}, progress=False, cluster=cluster)
        wide_after = engine_uss(cluster)
    finally:
        cluster.stop()
    ratio = local_seconds / parallel_seconds
    same = parallel.results.drop(columns=["engine", "host", "seconds"]).equals(
        local.results.drop(columns=["engine", "host", "seconds"]))
    print(f"  2 engines:  {parallel_seconds:6.2f} s, {points / parallel_seconds:7.1f} runs/s:"
          f" {ratio:.2f}x the in-process rate (target >= 1.8x: {'met' if ratio >= 1.8 else 'NOT met'});"
          f" tables identical: {same}")

    print("\n3. Engine memory (unique set size) from before the universe is shared to after the sweep:")
    for name, data, start, end in (("50 symbols", universe, before, after), ("500 symbols", wide, wide_before,
                                                                             wide_after)):
        print(f"  {name} ({data.nbytes / 2**20:.1f} MiB):")
        for engine in sorted(start):
            grown = end[engine] - start[engine]
            share = grown / data.nbytes
            print(f"    engine {engine}: {start[engine] / 2**20:7.1f} MiB -> {end[engine] / 2**20:7.1f} MiB,"
                  f" {grown / 2**20:+6.2f} MiB = {share * 100:+5.1f} % of the universe"
                  f" (target <= 10 %: {'met' if share <= 0.10 else 'NOT met'})")


if __name__ == "__main__":
    main()
