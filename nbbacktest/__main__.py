"""``python -m nbbacktest demo``: run the sample strategy on the sample data, headless."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd

from nbbacktest.engine import backtest, load_sample
from nbbacktest.engine.examples import SmaCross

GRID = {"fast": range(5, 60, 5), "slow": range(10, 200, 10)}


def fast_below_slow(p: object) -> bool:
    return p.fast < p.slow  # type: ignore[attr-defined]


def demo(args: argparse.Namespace) -> int:
    """One backtest, then the 179-point sweep on a local cluster, top rows printed."""
    from nbbacktest.display import sweep
    from nbbacktest.parallel import Cluster

    data = load_sample("daily")
    result = backtest(SmaCross(), data, cash=10_000, commission=0.002)
    print(f"{SmaCross()!r} on the daily sample ({len(data)} bars, synthetic):")
    print(result.stats.to_string())
    print(f"\nSweeping fast x slow on a local cluster of {args.engines} engines ...", flush=True)
    with Cluster(engines=args.engines) as cluster:
        runs = sweep(SmaCross, data, GRID, where=fast_below_slow, metric="sharpe",
                     commission=0.002, cluster=cluster, progress=True)
        columns = ["fast", "slow", "sharpe", "return_pct", "max_drawdown_pct", "trades", "engine"]
        top = runs.results.sort_values("sharpe", ascending=False).head(10)[columns]
        print(f"\nTop 10 of {len(runs)} runs by Sharpe ratio:")
        print(top.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
        print(f"\nBest: {runs.best!r}")
    return 0


def bench(args: argparse.Namespace) -> int:
    """The same sweep sequential and parallel: speedup, and whether results are identical."""
    import time

    from nbbacktest.parallel import Cluster, sweep

    data = load_sample("daily")

    def run(**kwargs: object) -> tuple[float, pd.DataFrame]:
        start = time.perf_counter()
        runs = sweep(SmaCross, data, GRID, where=fast_below_slow, commission=0.002,
                     progress=False, **kwargs)
        return time.perf_counter() - start, runs.results.drop(columns=["engine", "host", "seconds"])

    with Cluster(engines=args.engines) as cluster:
        run(cluster=cluster)  # first sweep sends the data and the classes
        sequential = min(run()[0] for _ in range(args.repeat))
        timings = [run(cluster=cluster) for _ in range(args.repeat)]
        parallel = min(t for t, _ in timings)
        identical = all(table.equals(run()[1]) for _, table in timings[:1])
    n = sum(1 for f in GRID["fast"] for s in GRID["slow"] if f < s)
    print(f"{n}-point sweep, best of {args.repeat}:")
    print(f"  sequential (in-process): {sequential * 1e3:8.1f} ms  {n / sequential:8,.0f} backtests/s")
    print(f"  parallel ({args.engines} engines)     : {parallel * 1e3:8.1f} ms  {n / parallel:8,.0f} backtests/s")
    print(f"  speedup {sequential / parallel:.2f}x; results identical: {identical}")
    return 0 if identical else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbbacktest", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, run, text in (
        ("demo", demo, "a backtest, then a sample sweep on a local cluster"),
        ("bench", bench, "the same sweep sequential and parallel: speedup and identity"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("-n", "--engines", type=int, default=2, help="engines to start")
        command.add_argument("--repeat", type=int, default=5, help="repetitions (bench)")
        command.set_defaults(run=run)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
