"""The indicator memo (``Strategy.I``): the 2,419-point hourly SMA sweep with it on and off.

Runs ``examples.SmaCross`` (whose SMAs go through ``self.I``) over fast 2..98 step 2
x slow 10..295 step 5, fast < slow, on the hourly sample (20,000 bars), in this
process (``engines=None``), once with the memo off (``set_indicator_memo(0)``) and
once on (the default budget), alternating for ``ROUNDS`` rounds; prints the best
round's per-point time, backtests and bar-backtests (bars simulated) per second,
the ratio, and the memo's hits and misses. It checks that both give the same
results table, bit for bit (engine, host and seconds columns aside).

The floor, timed in the same rounds: a bare numpy script that computes the same
crossover once per point (two cumsum moving averages, the position, the equity
curve and its drawdown; no other statistic, no validation, nothing recorded).
The target is a point of the sweep with the memo on no slower than a point of
that script.

    python benchmarks/bench_indicators.py
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

import nbbacktest as nbb
from nbbacktest.engine.examples import SmaCross
from nbbacktest.engine.indicators import DEFAULT_MEMO_MB, memo_info

GRID = {"fast": range(2, 100, 2), "slow": range(10, 300, 5)}
ROUNDS = 2
#: Columns that say where and how long a point ran, not what it computed.
TIMING = ["engine", "host", "seconds"]


def run(data: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    started = time.perf_counter()
    sweep = nbb.sweep(SmaCross, data, grid=GRID, where=lambda p: p.fast < p.slow, progress=False)
    seconds = time.perf_counter() - started
    return seconds, sweep.results.drop(columns=[c for c in TIMING if c in sweep.results])


def bare_numpy(close: np.ndarray, pairs: list[tuple[int, int]], cash: float = 10_000.0) -> float:
    """Seconds for the crossover of every pair, computed once each with plain numpy."""
    started = time.perf_counter()
    sums = np.concatenate(([0.0], np.cumsum(close)))
    bar_returns = close[1:] / close[:-1] - 1.0
    for fast, slow in pairs:
        fast_ma = (sums[fast:] - sums[:-fast])[slow - fast:] / fast  # both from bar slow - 1 on
        slow_ma = (sums[slow:] - sums[:-slow]) / slow
        long = np.zeros(len(close))
        long[slow - 1:] = fast_ma > slow_ma
        equity = cash * np.cumprod(1.0 + long[:-1] * bar_returns)  # held from the next bar
        drawdown = float((equity / np.maximum.accumulate(equity)).min()) - 1.0
        assert drawdown <= 0.0
    return time.perf_counter() - started


def main() -> None:
    data = nbb.load_sample("hourly")
    points = sum(1 for f in GRID["fast"] for s in GRID["slow"] if f < s)
    bars = len(data)
    best = {"off": float("inf"), "on": float("inf"), "bare": float("inf")}
    close = data["Close"].to_numpy()
    pairs = [(f, s) for f in GRID["fast"] for s in GRID["slow"] if f < s]
    tables: dict[str, pd.DataFrame] = {}
    hits = misses = 0
    for _ in range(ROUNDS):
        for mode in ("off", "on"):
            nbb.set_indicator_memo(0 if mode == "off" else DEFAULT_MEMO_MB)
            before = memo_info()
            seconds, table = run(data)
            after = memo_info()
            if mode == "on":
                hits, misses = after.hits - before.hits, after.misses - before.misses
            best[mode] = min(best[mode], seconds)
            tables[mode] = table
        best["bare"] = min(best["bare"], bare_numpy(close, pairs))
    pd.testing.assert_frame_equal(tables["off"], tables["on"], check_exact=True)
    print(f"{points:,} points x {bars:,} bars (hourly sample), in-process, best of {ROUNDS}")
    for mode in ("off", "on"):
        seconds = best[mode]
        print(f"  memo {mode:>3}: {seconds:6.2f} s  {seconds / points * 1e3:6.3f} ms/point  "
              f"{points / seconds:7.0f} backtests/s  {points * bars / seconds / 1e6:6.1f} M bar-backtests/s")
    bare = best["bare"]
    print(f"  bare numpy script: {bare:6.2f} s  {bare / points * 1e3:6.3f} ms/point  "
          f"{points / bare:7.0f} backtests/s  {points * bars / bare / 1e6:6.1f} M bar-backtests/s")
    print(f"  speed-up of the memo: {best['off'] / best['on']:.2f}x")
    ratio = best["on"] / bare
    print(f"  a sweep point (memo on, all stats) / a bare numpy point: {ratio:.2f}x"
          f" (target <= 1: {'met' if ratio <= 1.0 else 'NOT met'})")
    print(f"  memo: {hits:,} hits, {misses:,} misses, hit rate {hits / (hits + misses):.1%}"
          f" ({2 * points:,} self.I calls, {misses} distinct SMAs)")
    print("  results tables identical, bit for bit: yes")


if __name__ == "__main__":
    main()
