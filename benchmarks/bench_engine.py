"""Engine speed: vectorized backtests with all stats, the event-driven loop, a sweep's loop.

Prints, measured in one run, the figures of the engine's speed targets and the
ratios between them:

1. the SMA crossover (``examples.SmaCross``) on the daily sample (~2,500 bars), all
   stats: milliseconds per ``backtest()``, split into the strategy's own
   ``signals`` and the rest (validation, fills, equity, stats, Result);
2. microseconds per bar of event-driven simulator overhead (a ``next`` that does
   nothing), and the event-driven crossover;
3. the same vectorized backtest on 100,000 bars;
4. the per-point loop of sweeps (``worker.run_points`` on prepared data, as an
   engine runs it) over the 179-point SMA grid of ``bench_sweep.py``: microseconds
   per point and backtests per second per engine.

Each figure is the best and the median of several batches: the best shows what
the code costs, the median what a busy machine makes of it. Nothing is asserted.

    python benchmarks/bench_engine.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pandas as pd
from common import long_series

import nbbacktest as nbb
from nbbacktest.engine.backtest import Settings
from nbbacktest.engine.examples import SmaCross, SmaCrossEvent
from nbbacktest.parallel import worker

GRID = [(fast, slow) for fast in range(5, 60, 5) for slow in range(10, 200, 10) if fast < slow]


class Idle(nbb.Strategy):
    def next(self, bar):
        pass


class Precomputed(nbb.Strategy):
    """The same crossover with its signal computed outside the timed loop."""

    def signals(self, data):
        return SIGNAL


SIGNAL: pd.Series | None = None


def timed(fn: Callable[[], object], seconds: float = 1.0, batches: int = 9) -> tuple[float, float]:
    """(best, median) seconds per call over ``batches`` batches of about ``seconds / batches``."""
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.05:
        fn()
        calls += 1
    size = max(1, int(calls * seconds / batches / 0.05))
    per_call = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(size):
            fn()
        per_call.append((time.perf_counter() - start) / size)
    return min(per_call), statistics.median(per_call)


def show(label: str, figures: tuple[float, float], unit: str, scale: float, note: str = "") -> None:
    best, median = figures
    print(f"  {label:38s}: {best * scale:9.3f} {unit} best, {median * scale:9.3f} median{note}")


def verdict(value: float, limit: float) -> str:
    return f"  (target <= {limit:g}: {'met' if value <= limit else 'NOT met'})"


def sweep_loop(data: pd.DataFrame) -> Callable[[], object]:
    """One pass of an engine's run_points over the SMA grid, data prepared once."""
    key = "bench-engine"
    worker.hold_data(key, data)
    job = worker.Job((SmaCross,), (("fast", "slow"),), Settings(commission=0.002), key)
    worker.register_job(key, job)
    points = [(row, 0, values, None) for row, values in enumerate(GRID)]
    return lambda: worker.run_points(key, None, points)


def main() -> None:
    global SIGNAL
    daily = nbb.load_sample("daily")
    long = long_series(100_000)
    results = {}
    for label, data, seconds in (("daily sample", daily, 1.0), ("100,000 bars", long, 3.0)):
        n = len(data)
        vector = timed(lambda data=data: nbb.backtest(SmaCross(), data, commission=0.002), seconds)
        SIGNAL = SmaCross().signals(data)
        ours = timed(lambda data=data: nbb.backtest(Precomputed(), data, commission=0.002), seconds)
        signals = timed(lambda data=data: SmaCross().signals(data), seconds)
        event = timed(lambda data=data: nbb.backtest(SmaCrossEvent(), data, commission=0.002), 2 * seconds)
        idle = timed(lambda data=data: nbb.backtest(Idle(), data), 2 * seconds)
        results[label] = vector, ours, event, idle, n
        print(f"{label} ({n:,} bars):")
        limit = 0.5 if n < 10_000 else 10.0
        show("vectorized SMA crossover, all stats", vector, "ms", 1e3,
             verdict(vector[0] * 1e3, limit))
        show("  the strategy's signals alone", signals, "ms", 1e3)
        show("  the rest (same, signals precomputed)", ours, "ms", 1e3)
        show("event-driven SMA crossover", event, "ms", 1e3)
        show("event-driven overhead, trivial next", (idle[0] / n, idle[1] / n), "us/bar", 1e6,
             verdict(idle[0] / n * 1e6, 2.0))
        print(f"  ratio event / vectorized              : {event[0] / vector[0]:9.1f}x")
    per_sweep = timed(sweep_loop(daily), 3.0, batches=7)
    per_point = (per_sweep[0] / len(GRID), per_sweep[1] / len(GRID))
    print(f"sweep loop (worker.run_points), {len(GRID)} SMA points on the daily sample:")
    show("per point", per_point, "us", 1e6)
    print(f"  backtests/s per engine                : {1 / per_point[0]:9,.0f} best, "
          f"{1 / per_point[1]:9,.0f} median  (2 engines need >= 2,000 each for 4,000/s)")
    daily_vector, daily_ours = results["daily sample"][:2]
    long_vector, long_ours = results["100,000 bars"][:2]
    print("ratios:")
    print(f"  100,000 bars / daily, vectorized      : {long_vector[0] / daily_vector[0]:9.1f}x "
          f"for {len(long) / len(daily):.0f}x the bars")
    print(f"  the rest / whole backtest, daily      : {daily_ours[0] / daily_vector[0]:9.2f}")
    print(f"  the rest / whole backtest, 100,000    : {long_ours[0] / long_vector[0]:9.2f}")
    print(f"  sweep point / backtest(), daily       : {per_point[0] / daily_vector[0]:9.2f}")


if __name__ == "__main__":
    main()
