"""The same SMA-crossover grid with nbbacktest and its peers, measured in one run.

Grid: fast 5..55 step 5 x slow 10..190 step 10, fast < slow (179 points), on the
daily sample (``nbb.load_sample("daily")``), long or flat, no commission, all-in,
10,000 cash, ranked by total return. Runs, each when installed:

1. nbbacktest in-process (``nbb.sweep``, one core) and on a local 2-engine
   cluster (``nbb.Cluster(engines=2)``, warmed by one sweep first);
2. backtesting.py's ``Backtest.optimize`` with its SmaCross idiom (``self.I(SMA,
   ...)`` and ``crossover``; ``finalize_trades=True``), which runs one process per
   core (``backtesting.Pool``);
3. vectorbt: ``vbt.MA.run`` over the grid's windows and ``vbt.Portfolio.from_signals``
   (numba, one core), timed warm; its first call, which compiles, is shown apart.

Prints backtests per second, bar-backtests per second per core, the ratios of both
to nbbacktest in-process, and each one's best (fast, slow). The peers' rules differ,
so their results are not expected to be identical:

- nbbacktest: target exposure (long while fast SMA > slow SMA) decided at a bar's
  close, filled at the next bar's open; fractional units; the last position valued.
- backtesting.py: the same next-open fill, but orders on a cross only (it waits for
  the first cross, so a run that starts with fast > slow enters later), whole units
  (``size=0.9999`` of equity rounded down), the last trade closed at the end.
- vectorbt: entries and exits on a cross only, filled at the close of the signal
  bar (it would need the signals shifted for a next-open fill), fractional units.

    python benchmarks/bench_peers.py
    pip install backtesting vectorbt   # the peers: not dependencies of nbbacktest
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import pandas as pd

import nbbacktest as nbb
from nbbacktest.engine.examples import SmaCross

# backtesting.py draws a tqdm bar per run; tqdm reads this before the peers import it
os.environ.setdefault("TQDM_DISABLE", "1")

try:  # a peer, when installed: not a dependency of nbbacktest
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA
except ImportError:
    BtSmaCross = None
else:
    class BtSmaCross(Strategy):
        """backtesting.py's SmaCross idiom, long or flat (module level: its pool pickles it)."""

        fast = 10
        slow = 30

        def init(self) -> None:
            close = self.data.Close
            self.sma1 = self.I(SMA, close, self.fast)
            self.sma2 = self.I(SMA, close, self.slow)

        def next(self) -> None:
            if crossover(self.sma1, self.sma2):
                self.buy(size=0.9999)  # all-in (its default size), whole units
            elif crossover(self.sma2, self.sma1):
                self.position.close()

FAST, SLOW = range(5, 60, 5), range(10, 200, 10)
GRID = [(fast, slow) for fast in FAST for slow in SLOW if fast < slow]
CASH = 10_000.0
REPEATS = 5  # timed runs of each fast tool (the median is shown)


class Measured(NamedTuple):
    """One tool's timing on the grid and what it found best."""

    name: str
    seconds: float  # median wall time of one whole grid
    cores: int
    best: tuple[int, int]
    best_return_pct: float
    note: str = ""


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def fast_lt_slow(p: Any) -> bool:
    return p.fast < p.slow


def nbbacktest_sweep(data: pd.DataFrame, **options: Any) -> Any:
    return nbb.sweep(SmaCross, data, {"fast": FAST, "slow": SLOW}, where=fast_lt_slow,
                     metric="return_pct", progress=False, cash=CASH, **options)


def from_sweep(name: str, seconds: float, cores: int, sweep: Any, note: str = "") -> Measured:
    best = sweep.best
    row = sweep.results.sort_values("return_pct", ascending=False).iloc[0]
    return Measured(name, seconds, cores, (best.fast, best.slow), float(row["return_pct"]), note)


def in_process(data: pd.DataFrame) -> Measured:
    nbbacktest_sweep(data)  # indicators and imports warm, as in a session
    seconds, sweep = median_time(lambda: nbbacktest_sweep(data), REPEATS)
    return from_sweep("nbbacktest in-process", seconds, 1, sweep)


def two_engines(data: pd.DataFrame) -> Measured:
    start = time.perf_counter()
    cluster = nbb.Cluster(engines=2)
    started = time.perf_counter() - start
    try:
        nbbacktest_sweep(data, cluster=cluster)  # data sent, classes shipped, engines warm
        seconds, sweep = median_time(lambda: nbbacktest_sweep(data, cluster=cluster), REPEATS)
    finally:
        cluster.stop()
    return from_sweep("nbbacktest 2 engines", seconds, 2, sweep,
                      f"cluster started in {started:.1f} s, not counted")


def backtesting_py(data: pd.DataFrame) -> Measured | str:
    if BtSmaCross is None:
        return "not installed"
    bt = Backtest(data, BtSmaCross, cash=CASH, commission=0.0, finalize_trades=True)

    def optimize() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bt.optimize(fast=FAST, slow=SLOW, constraint=fast_lt_slow,
                               maximize="Return [%]", return_heatmap=True)

    seconds, (stats, heatmap) = median_time(optimize, 2)  # seconds per call: few repeats
    assert len(heatmap) == len(GRID)
    strategy = stats._strategy
    cores = os.cpu_count() or 1
    return Measured("backtesting.py optimize", seconds, cores, (strategy.fast, strategy.slow),
                    float(stats["Return [%]"]), f"a pool of {cores} processes, started per call")


def vectorbt(data: pd.DataFrame) -> Measured | str:
    try:
        import vectorbt as vbt
    except ImportError:
        return "not installed"
    close = data["Close"]
    fast_windows = [fast for fast, _ in GRID]
    slow_windows = [slow for _, slow in GRID]

    def run() -> pd.Series:
        fast = vbt.MA.run(close, fast_windows, short_name="fast")
        slow = vbt.MA.run(close, slow_windows, short_name="slow")
        entries = fast.ma_crossed_above(slow)
        exits = fast.ma_crossed_below(slow)
        portfolio = vbt.Portfolio.from_signals(close, entries, exits, init_cash=CASH, fees=0.0,
                                               freq="1D")
        return portfolio.total_return()

    cold, _ = median_time(run, 1)
    seconds, returns = median_time(run, REPEATS)
    assert len(returns) == len(GRID)
    fast, slow = returns.idxmax()
    return Measured("vectorbt", seconds, 1, (int(fast), int(slow)), float(returns.max()) * 100,
                    f"first call (numba compiles) {cold:.1f} s, not counted")


def main() -> None:
    data = nbb.load_sample("daily")
    assert isinstance(data, pd.DataFrame)
    bars = len(data)
    print(f"SMA-crossover grid: fast 5..55 step 5 x slow 10..190 step 10, fast < slow "
          f"({len(GRID)} points) on the daily sample ({bars:,} bars, "
          f"{data.index[0].date()} to {data.index[-1].date()}); {os.cpu_count()} cores")
    print("long or flat, no commission, all-in, best by total return; fill rules differ "
          "(see the docstring): results are not expected to be identical\n")
    # backtesting.py forks its pool: run it before the cluster's threads exist.
    measured: list[Measured | tuple[str, str]] = [in_process(data)]
    for name, run in (("backtesting.py optimize", backtesting_py), ("vectorbt", vectorbt)):
        outcome = run(data)
        measured.append((name, outcome) if isinstance(outcome, str) else outcome)
    measured.insert(1, two_engines(data))

    base = measured[0]
    assert isinstance(base, Measured)
    base_rate = len(GRID) / base.seconds
    base_per_core = base_rate * bars / base.cores
    print(f"{'':26s} {'backtests/s':>12s} {'bar-backtests/s/core':>21s} {'cores':>5s} "
          f"{'vs in-process':>14s} {'per core':>9s}  best (fast, slow), return %")
    for m in measured:
        if not isinstance(m, Measured):
            print(f"{m[0]:26s} {m[1]}")
            continue
        rate = len(GRID) / m.seconds
        per_core = rate * bars / m.cores
        print(f"{m.name:26s} {rate:12,.0f} {per_core:21,.0f} {m.cores:5d} "
              f"{rate / base_rate:13.2f}x {per_core / base_per_core:8.2f}x  "
              f"({m.best[0]}, {m.best[1]}), {m.best_return_pct:.1f}"
              + (f"  [{m.note}]" if m.note else ""))
    print(f"\nseconds per grid (median of {REPEATS}; backtesting.py of 2): "
          + ", ".join(f"{m.name} {m.seconds:.3f}" for m in measured if isinstance(m, Measured)))


if __name__ == "__main__":
    main()
