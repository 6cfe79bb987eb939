"""What an engine keeps after a sweep, and its peak while running a point.

1. A 2-engine local cluster runs a 6-point SMA-crossover sweep on a frame of D bytes
   (minute bars, 5 float64 columns and the index; 256 MiB by default). Each engine's
   private anonymous memory (Private_Clean + Private_Dirty of its heap and anonymous
   mappings in /proc/PID/smaps: the shared segment and the libraries' files are not
   counted) is read before the sweep (after a warm-up sweep on a small slice: the
   libraries are loaded) and after it; the strategy's indicator memo (``self.I``,
   bounded by its budget) is read from the engine and taken off. Target: <= 0.25 x D
   kept beyond the shared copy and the memo.
2. In this process, the peak of memory allocated (tracemalloc; numpy reports its
   arrays) while ``worker.run_points`` runs one point of a strategy whose
   ``signals`` return a precomputed Series (so it allocates nothing itself), in
   float64 arrays of the data's length, for the first point of a sweep and a chunk
   of three (each from the state a sweep starts in: the arrays derived from the
   data and the scratch rows, reused by later chunks of a sweep, are counted).
   Target: <= 3 arrays.

    python benchmarks/bench_engine_memory.py [ROWS]
"""

from __future__ import annotations

import os
import re
import sys
import time
import tracemalloc

import pandas as pd
from bench_memory import make_frame

import nbbacktest as nbb
from nbbacktest.engine.backtest import Settings
from nbbacktest.engine.examples import SmaCross
from nbbacktest.engine.indicators import memo_info
from nbbacktest.parallel import worker

ROWS = 5_600_000  # 256 MiB with the index
KEPT_TARGET = 0.25
PEAK_TARGET = 3.0
_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def private_anonymous(pid: int) -> int:
    """Bytes of the process's private pages in its heap and anonymous mappings."""
    total, counted = 0, False
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            if _MAPPING.match(line):
                fields = line.split()
                counted = len(fields) < 6 or fields[5] in ("[heap]", "[stack]")
            elif counted and line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1]) * 1024
    return total


def kept_after_a_sweep(frame: pd.DataFrame) -> None:
    size = int(frame.memory_usage(index=True).sum())
    grid = {"fast": [5, 10, 15], "slow": [30, 60]}
    cluster = nbb.Cluster(engines=2, timeout=120)
    try:
        pids = {e: cluster.client[e].apply_sync(os.getpid) for e in cluster.client.ids}
        nbb.sweep(SmaCross, frame.iloc[:5000], grid, progress=False, cluster=cluster)
        before = {e: private_anonymous(pid) for e, pid in pids.items()}
        started = time.perf_counter()
        sweep = nbb.sweep(SmaCross, frame, grid, progress=False, cluster=cluster)
        seconds = time.perf_counter() - started
        after = {e: private_anonymous(pid) for e, pid in pids.items()}
        memo = {e: cluster.client[e].apply_sync(memo_info).nbytes for e in pids}
    finally:
        cluster.stop()
    print(f"1. After a {len(sweep.results)}-point sweep ({sweep.status}, {seconds:.1f} s) on a frame of"
          f" D = {size / 2**20:.0f} MiB ({len(frame):,} bars):")
    for engine in sorted(before):
        kept = (after[engine] - before[engine] - memo[engine]) / size
        print(f"   engine {engine}: private anonymous memory {before[engine] / 2**20:7.1f} ->"
              f" {after[engine] / 2**20:7.1f} MiB, of which the indicator memo"
              f" {memo[engine] / 2**20:.1f} MiB;"
              f" kept beyond it {kept:+.3f} x D"
              f" (target <= {KEPT_TARGET} x D: {'met' if kept <= KEPT_TARGET else 'NOT met'})")


class Precomputed(nbb.Strategy):
    """Signals computed before the run: the point itself allocates none."""

    fast = nbb.Param(10, low=2, high=100)
    signal: pd.Series | None = None

    def signals(self, data):
        return type(self).signal


def point_peaks(frame: pd.DataFrame) -> None:
    n = len(frame)
    close = frame["Close"]
    Precomputed.signal = (close > close.rolling(50).mean()).astype(float)
    worker.hold_data("bench-peak", frame)
    worker.register_job("bench-peak", worker.Job((Precomputed,), (("fast",),), Settings(), "bench-peak"))
    worker.run_points("bench-peak", None, [(0, 0, (10,), None)])  # imports, the job, the data prepared
    points = [(row, 0, (10 + row,), None) for row in range(3)]
    tracemalloc.start()
    try:
        for label, chunk in (("first point of a chunk", points[:1]), ("a chunk of three points", points)):
            # As at a sweep's first chunk: the arrays derived from the data and the
            # scratch rows, which later chunks of the same sweep reuse, count here.
            worker.release_working_memory()
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            worker.run_points("bench-peak", None, chunk)
            peak = (tracemalloc.get_traced_memory()[1] - start) / (n * 8)
            print(f"   {label}: peak {peak:.2f} float64 arrays of {n:,} bars"
                  f" (target <= {PEAK_TARGET:.0f}: {'met' if peak <= PEAK_TARGET else 'NOT met'})")
    finally:
        tracemalloc.stop()
        worker.release_data(["bench-peak"])


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else ROWS
    frame = make_frame(rows)
    kept_after_a_sweep(frame)
    print("\n2. Peak allocated while running points in-process, beyond the strategy's own:")
    for length in (200_000, 2_000_000):
        point_peaks(frame.iloc[:length])


if __name__ == "__main__":
    main()
