"""``backtest()`` again and again on a user's own frame, against a loaded frame.

A loop of single backtests (or an explorer's slider) passes the same frame each
time. A frame that is not canonical (here: the hourly sample, 20,000 bars, as a
plain DataFrame with lower-case columns and a ``date`` column) is rebuilt by
validation once, then remembered until it changes (``FrameSnapshot``). Prints
milliseconds per ``backtest()`` of the SMA crossover on:

1. the loaded frame (``nbb.load_sample("hourly")``: canonical, validated as it is);
2. the user's frame, unchanged between calls (validated once, then compared);
3. the user's frame with one value edited in place before every call (validated
   again each time, plus the edit and the snapshot taken of it);
4. the user's frame never remembered: what every call cost before frames were
   remembered (a fresh frame, measured with the memory's size limit set to 0);
5. and 6. the same frame with its dates as strings, as ``read_csv`` gives them
   (pandas' pyarrow-backed ``str``), unchanged and never remembered;

and the ratios to 1 (target for 2: <= 1.3). Each figure is the best and the median of
several batches. Nothing is asserted.

    python benchmarks/bench_backtest_repeat.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pandas as pd

import nbbacktest as nbb
from nbbacktest.engine import data as data_module
from nbbacktest.engine.examples import SmaCross

TARGET = 1.3


def timed(fn: Callable[[], object], seconds: float = 1.5, batches: int = 9) -> tuple[float, float]:
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


def user_frame(loaded: pd.DataFrame) -> pd.DataFrame:
    frame = loaded.reset_index()
    frame.columns = [str(c).lower() for c in frame.columns]
    return frame


def main() -> None:
    loaded = nbb.load_sample("hourly")
    assert isinstance(loaded, pd.DataFrame)
    user = user_frame(loaded)
    edited = user_frame(loaded)
    strategy = SmaCross(fast=10, slow=30)
    last = edited.index[-1]
    closes = [float(edited.loc[last, "close"]), float(edited.loc[last, "open"])]  # both valid

    def edit_then_run() -> object:
        # one value changed in place each call (the last close, flipped between two
        # values): the frame is validated again every time
        closes.reverse()
        edited.loc[last, "close"] = closes[0]
        return nbb.backtest(strategy, edited)

    same = nbb.backtest(strategy, loaded).stats.equals(nbb.backtest(strategy, user).stats)
    print(f"backtest() of SmaCross(10, 30) on the hourly sample ({len(loaded):,} bars); "
          f"same stats on both frames: {same}")
    print(f"  user frame: columns {list(user.columns)}, index {type(user.index).__name__}")
    figures = {
        "loaded frame": timed(lambda: nbb.backtest(strategy, loaded)),
        "user frame, unchanged": timed(lambda: nbb.backtest(strategy, user)),
        "user frame, one value edited each call": timed(edit_then_run),
    }
    csv = user_frame(loaded)
    csv["date"] = csv["date"].dt.strftime("%Y-%m-%d %H:%M:%S")
    figures["user frame, string dates, unchanged"] = timed(lambda: nbb.backtest(strategy, csv))
    # Fresh frames, never seen while remembering is on: nothing of them is remembered.
    limit = data_module._REMEMBER_MAX_BYTES
    data_module._REMEMBER_MAX_BYTES = 0
    try:
        fresh = user_frame(loaded)
        figures["user frame, never remembered (before)"] = timed(lambda: nbb.backtest(strategy, fresh))
        fresh_csv = csv.copy()
        figures["string dates, never remembered (before)"] = timed(
            lambda: nbb.backtest(strategy, fresh_csv))
    finally:
        data_module._REMEMBER_MAX_BYTES = limit
    for label, (best, median) in figures.items():
        print(f"  {label:40s}: {best * 1e3:7.3f} ms best, {median * 1e3:7.3f} ms median")
    base, repeat = figures["loaded frame"], figures["user frame, unchanged"]
    ratio, ratio_median = repeat[0] / base[0], repeat[1] / base[1]
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"  ratio unchanged user frame / loaded frame: {ratio:.2f}x best, "
          f"{ratio_median:.2f}x median (target <= {TARGET:g}: {verdict})")
    for label in list(figures)[2:]:
        print(f"  ratio {label} / loaded frame: {figures[label][0] / base[0]:.2f}x best")


if __name__ == "__main__":
    main()
