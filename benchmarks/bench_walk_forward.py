"""What a walk-forward costs per bar simulated, against sweeping the same points once.

A 10-fold rolling walk-forward (train 500 bars, test 200 bars) of a 1,000-point SmaCross
grid on the 2,500-bar daily sample, in this process, against the same 1,000 points
swept once over the whole history, timed in the same run (best of --repeat). Bars
simulated: a sweep simulates every point over every bar; a walk-forward every point
over each fold's training and test windows (the warm-up history before a window is
read by the indicators but not simulated). Printed: both wall times, the bars each
simulates, and the ratio of seconds per bar simulated (target <= 1.3x), with and
without a bounded warm-up (``warmup=``), since a window's indicators otherwise read
all the history before it.

Usage: ``python benchmarks/bench_walk_forward.py [--repeat 3]``
"""

from __future__ import annotations

import argparse
import time

import nbbacktest as nbb
from nbbacktest.engine.examples import SmaCross

GRID = {"fast": range(2, 102, 2), "slow": range(10, 300, 10)}  # 50 x 29, fast < slow below
TRAIN, TEST = 500, 200


def where(p):
    return p.fast < p.slow


def best_of(repeat: int, run) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = nbb.load_sample("daily")
    points = sum(1 for f in GRID["fast"] for s in GRID["slow"] if f < s)
    sweep_seconds = best_of(args.repeat, lambda: nbb.sweep(SmaCross, data, GRID, where=where, progress=False))
    sweep_bars = points * len(data)
    print(f"{points:,} points of SmaCross on the daily sample ({len(data):,} bars), in-process,"
          f" best of {args.repeat}:")
    print(f"  sweep once           {sweep_seconds:7.2f} s  {sweep_bars / 1e6:6.1f} M bars simulated"
          f"  {sweep_seconds / sweep_bars * 1e9:6.1f} ns a bar")
    for label, warmup in (("all history", None), ("warm-up 300 bars", 300)):
        walk = nbb.walk_forward(SmaCross, data, GRID, where=where, train=TRAIN, test=TEST,
                                warmup=warmup, progress=False)
        folds = len(walk.folds)
        wf_bars = points * sum(f.train_end - f.train_begin + f.test_end - f.test_begin for f in walk.windows)
        seconds = best_of(args.repeat, lambda w=warmup: nbb.walk_forward(  # type: ignore[misc]
            SmaCross, data, GRID, where=where, train=TRAIN, test=TEST, warmup=w, progress=False))
        ratio = (seconds / wf_bars) / (sweep_seconds / sweep_bars)
        print(f"  walk-forward, {label:<17} {folds} folds: {seconds:7.2f} s  {wf_bars / 1e6:6.1f} M bars"
              f" simulated  {seconds / wf_bars * 1e9:6.1f} ns a bar  -> {ratio:.2f}x the sweep's"
              " (target <= 1.3x)")


if __name__ == "__main__":
    main()
