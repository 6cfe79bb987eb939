"""Engine speed: vectorized backtests with all stats, and the event-driven loop.

Prints, for the SMA crossover on the daily sample (~2,500 bars) and on a 100,000-bar
series: milliseconds per vectorized backtest (stats included), microseconds per bar
of event-driven simulator overhead (a trivial ``next``), and the ratio between them.
Ratios and figures come from one run; nothing is asserted.

    python benchmarks/bench_engine.py
"""

from __future__ import annotations

import time

import pandas as pd
from common import long_series

import nbbacktest as nbb
from nbbacktest.engine.examples import SmaCross, SmaCrossEvent


class Idle(nbb.Strategy):
    def next(self, bar):
        pass


class Precomputed(nbb.Strategy):
    """The same crossover with its signal computed outside the timed loop."""

    def signals(self, data):
        return SIGNAL


SIGNAL: pd.Series | None = None


def per_call(fn, min_seconds: float = 1.0) -> float:
    """Best-of-5 seconds per call, each batch running about min_seconds / 5."""
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.05:
        fn()
        calls += 1
    batch = max(1, int(calls * min_seconds / 5 / 0.05))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        best = min(best, (time.perf_counter() - start) / batch)
    return best


def main() -> None:
    global SIGNAL
    for label, data in (("daily sample", nbb.load_sample("daily")), ("100,000 bars", long_series(100_000))):
        n = len(data)
        vector = per_call(lambda: nbb.backtest(SmaCross(), data, commission=0.002))
        SIGNAL = SmaCross().signals(data)
        simulator = per_call(lambda: nbb.backtest(Precomputed(), data, commission=0.002))
        event = per_call(lambda: nbb.backtest(SmaCrossEvent(), data, commission=0.002), 2.0)
        idle = per_call(lambda: nbb.backtest(Idle(), data), 2.0)
        print(f"{label} ({n} bars):")
        print(f"  vectorized SMA crossover, all stats : {vector * 1e3:8.3f} ms per backtest")
        print(f"    of which the strategy's signals   : {(vector - simulator) * 1e3:8.3f} ms")
        print(f"    simulator + validation + stats    : {simulator * 1e3:8.3f} ms")
        print(f"  event-driven SMA crossover          : {event * 1e3:8.3f} ms per backtest")
        print(f"  event-driven overhead, trivial next : {idle / n * 1e6:8.3f} us per bar")
        print(f"  ratio event / vectorized            : {event / vector:8.1f}x")


if __name__ == "__main__":
    main()
