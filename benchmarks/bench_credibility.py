"""What credibility costs: a ~10,000-run sweep with and without its returns kept, and credibility().

A SmaCross grid of 9,998 points (fast 2..100 x slow 100..300 step 2, fast < slow)
on the 2,500-bar daily sample, on a local cluster of 2 engines (started first, data
sent by a warm-up sweep). The sweep runs ``REPEAT`` times with ``returns_budget=0``
(nothing kept) alternating with the default (every run's 2,500 returns kept: ~95
MiB); the minimum and the median of each are compared (the machine is shared: the
minimum is the least disturbed). Then ``credibility()`` (DSR, PBO by CSCV over 16
blocks, SPA with 1,000 replications) is timed, statistic by statistic, and the
per-point cost of the hot path is measured in-process with and without ``returns_out``.

    python benchmarks/bench_credibility.py
"""

from __future__ import annotations

import statistics
import time
import timeit

import numpy as np

import nbbacktest as nbb
from nbbacktest.engine import overfitting
from nbbacktest.engine.backtest import PreparedData, Settings, simulate_stats
from nbbacktest.engine.examples import SmaCross
from nbbacktest.parallel import credibility as credibility_module
from nbbacktest.parallel.run_returns import market_returns

GRID = {"fast": range(2, 101), "slow": range(100, 302, 2)}  # 99 x 101 less fast=slow=100: 9,998 runs
REPEAT = 5


def fast_lt_slow(p):
    return p.fast < p.slow


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def hot_path(data) -> tuple[float, float]:
    """Per-point seconds of simulate_stats without and with returns_out (in-process, best of 5)."""
    prepared = PreparedData.from_frame(data)
    settings = Settings()
    out = np.empty(len(data), dtype=np.float32)
    points = [SmaCross(f, s) for f in (5, 10, 20) for s in (40, 80, 160)]

    def plain():
        for p in points:
            simulate_stats(p, prepared, settings, 0)

    def kept():
        for p in points:
            simulate_stats(p, prepared, settings, 0, returns_out=out)

    plain(), kept()
    runs = 40
    a = min(timeit.repeat(plain, number=runs, repeat=5)) / (runs * len(points))
    b = min(timeit.repeat(kept, number=runs, repeat=5)) / (runs * len(points))
    return a, b


def main() -> None:
    data = nbb.load_sample("daily")
    without, with_ = hot_path(data)
    print(f"hot path per point (in-process): {without * 1e6:.0f} us without returns,"
          f" {with_ * 1e6:.0f} us with ({(with_ - without) * 1e6:+.1f} us, {with_ / without - 1:+.1%})")

    cluster = nbb.Cluster(engines=2, timeout=120)
    try:
        options = dict(grid=GRID, where=fast_lt_slow, engines=2, cluster=cluster, progress=False)
        nbb.sweep(SmaCross, data, grid={"fast": [5, 10]}, engines=2, cluster=cluster, progress=False)
        times: dict[str, list[float]] = {"off": [], "on": []}
        sweep = None
        for _ in range(REPEAT):
            seconds, _unused = timed(lambda: nbb.sweep(SmaCross, data, returns_budget=0, **options))
            times["off"].append(seconds)
            seconds, sweep = timed(lambda: nbb.sweep(SmaCross, data, **options))
            times["on"].append(seconds)
        assert sweep is not None
        off, on = min(times["off"]), min(times["on"])
        runs = len(sweep)
        print(f"sweep of {runs:,} runs x {len(data):,} bars on 2 engines (min and median of {REPEAT}):")
        for label, key in (("returns_budget=0:      ", "off"), ("returns kept (default):", "on")):
            print(f"  {label} {min(times[key]):6.2f} s min ({runs / min(times[key]):,.0f} runs/s),"
                  f" {statistics.median(times[key]):6.2f} s median;  all: "
                  + ", ".join(f"{t:.2f}" for t in times[key]))
        kept = sweep.kept_returns
        print(f"  kept: {len(kept):,} runs x {kept.plan.periods:,} periods = {kept.nbytes / 2**20:.1f} MiB;"
              f" sweep ratio with/without: {on / off:.3f} ({on / off - 1:+.1%}) by the minimum,"
              f" {statistics.median(times['on']) / statistics.median(times['off']):.3f} by the median")

        seconds, c = timed(lambda: sweep.credibility())
        print(f"credibility(): {seconds:.2f} s ({(on + seconds) / off:.3f}x the sweep without returns"
              f" for sweep + credibility)")
        print("  " + str(c).replace("\n", "\n  "))
        # Where credibility's time goes, statistic by statistic, on the same inputs.
        columns = kept.rows().tolist()
        t_matrix, matrix = timed(lambda: kept.matrix(columns))
        t_pbo, _ = timed(lambda: overfitting.probability_of_backtest_overfitting(matrix, 16))
        spa_runs = matrix[:, : credibility_module.SPA_RUNS]
        t_spa, _ = timed(lambda: overfitting.superior_predictive_ability(
            market_returns(data, kept.plan), spa_runs, reps=1000))
        print(f"  of which: matrix {t_matrix:.2f} s, PBO (12,870 splits x {len(columns):,} runs)"
              f" {t_pbo:.2f} s, SPA ({spa_runs.shape[1]} runs x 1,000 reps) {t_spa:.2f} s")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
