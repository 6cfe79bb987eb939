"""Try nbbacktest from a terminal: python -m nbbacktest demo, python -m nbbacktest bench.

demo   one backtest of the sample SmaCross strategy on the shipped daily sample, then
       its 179-point fast x slow sweep on a local cluster, the best rows as a table
bench  the same sweep in this process and on a local cluster: speed, speedup, and
       whether both give identical results

Both start a local ipyparallel cluster (several seconds) and stop it at the end: its
processes end in the background (a watchdog nbbacktest starts with every local
cluster ends them once this process is gone), so the prompt comes back at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, cast

import pandas as pd

from nbbacktest.engine import backtest, load_sample
from nbbacktest.engine.examples import SmaCross
from nbbacktest.errors import NbbacktestError

if TYPE_CHECKING:
    from nbbacktest.parallel import Cluster

PROG = "python -m nbbacktest"
GRID = {"fast": range(5, 60, 5), "slow": range(10, 200, 10)}
COMMISSION = 0.002
#: Columns of the demo's table of the best runs, after the params.
TOP_COLUMNS = ["sharpe", "return_pct", "max_drawdown_pct", "trades"]

_DESCRIPTION = """\
Try nbbacktest from a terminal, on its shipped sample data.

Both commands start a local ipyparallel cluster (several seconds) and stop it at
the end: its processes end in the background, so the prompt comes back at once."""
_EXAMPLES = f"""\
examples:
  {PROG} demo            a backtest, then a sweep on 2 engines
  {PROG} demo -n 4       the sweep on 4 engines
  {PROG} bench --repeat 3
"""


def fast_below_slow(p: object) -> bool:
    """The demo sweep's filter: only points where the fast average is shorter."""
    return p.fast < p.slow  # type: ignore[attr-defined]


@contextlib.contextmanager
def local_cluster(engines: int, *, background_stop: bool = False) -> Iterator[Cluster]:
    """A local cluster of ``engines`` engines, saying what it does while it starts and stops.

    Parameters
    ----------
    engines : int
        Engines to start.
    background_stop : bool
        At a normal end, leave the cluster's processes to the watchdog every local
        cluster has (they end within ``cluster.ORPHAN_SECONDS`` of this process),
        instead of waiting for them here (about 5 s). The caller must then end
        the process at once, as ``python -m nbbacktest`` does with ``os._exit``.
        On an error the cluster is always stopped here.

    Examples
    --------
    >>> with local_cluster(2) as cluster:   # doctest: +SKIP
    ...     len(cluster.ids)
    Starting a local cluster of 2 engines ... ready in 6.8 s
    2
    Stopping the cluster ... done in 5.1 s
    """
    from nbbacktest.parallel import Cluster

    print(f"Starting a local cluster of {engines:,} engines ...", end="", flush=True)
    started = time.monotonic()
    try:
        cluster = Cluster(engines=engines)
    except BaseException:
        print(" failed", flush=True)
        raise
    print(f" ready in {time.monotonic() - started:.1f} s", flush=True)
    try:
        yield cluster
    except BaseException:
        cluster.stop()
        raise
    if background_stop:
        # Every process of the cluster is in its watchdog's hands once we exit.
        print("Stopping the cluster (its processes end in the background)", flush=True)
        return
    print("Stopping the cluster ...", end="", flush=True)
    started = time.monotonic()
    cluster.stop()
    print(f" done in {time.monotonic() - started:.1f} s", flush=True)


def demo(args: argparse.Namespace) -> int:
    """One backtest, then the 179-point sweep on a local cluster, the best rows printed."""
    from nbbacktest.display import sweep
    from nbbacktest.display.tables import results_text, stats_text

    data = cast(pd.DataFrame, load_sample("daily"))
    strategy = SmaCross()
    result = backtest(strategy, data, cash=10_000, commission=COMMISSION)
    print(f"{strategy!r} on the daily sample ({len(data):,} bars, synthetic),"
          f" commission {COMMISSION:.1%}:")
    print(_indent(stats_text(result.stats)))
    print(flush=True)
    with local_cluster(args.engines, background_stop=args.background_stop) as cluster:
        points = sum(1 for f in GRID["fast"] for s in GRID["slow"] if f < s)
        print(f"Sweeping fast x slow ({points:,} points, fast < slow) on {args.engines:,} engines;"
              " progress on stderr", flush=True)
        runs = sweep(SmaCross, data, GRID, where=fast_below_slow, metric="sharpe",
                     commission=COMMISSION, cluster=cluster, progress=True)
        print(f"\nTop 10 of {len(runs):,} runs by Sharpe ratio:")
        print(_indent(results_text(runs.results, metric="sharpe", top=10, columns=TOP_COLUMNS)))
        print(f"\nBest: {runs.best!r}", flush=True)
    return 0


def bench(args: argparse.Namespace) -> int:
    """The same sweep sequential and parallel: speed, speedup, and whether results are identical."""
    from nbbacktest.parallel import sweep

    data = load_sample("daily")
    n = sum(1 for f in GRID["fast"] for s in GRID["slow"] if f < s)

    def run(cluster: Cluster | None = None) -> tuple[float, pd.DataFrame]:
        """One sweep, in this process without a cluster: its seconds and its results."""
        start = time.perf_counter()
        runs = sweep(SmaCross, data, GRID, where=fast_below_slow, commission=COMMISSION,
                     progress=False, cluster=cluster)
        return time.perf_counter() - start, runs.results.drop(columns=["engine", "host", "seconds"])

    def step(text: str) -> None:
        print(f"  {text} ...", end="", flush=True)

    with local_cluster(args.engines, background_stop=args.background_stop) as cluster:
        print(f"{n:,}-point sweep, best of {args.repeat:,}:", flush=True)
        step("warm-up on the cluster (sends the data and the strategy class)")
        warm, _ = run(cluster=cluster)
        print(f" {warm * 1e3:,.0f} ms", flush=True)
        step(f"sequential (in-process) x {args.repeat:,}")
        sequential = min(run()[0] for _ in range(args.repeat))
        print(f" {_speed(n, sequential)}", flush=True)
        step(f"parallel ({args.engines:,} engines) x {args.repeat:,}")
        timings = [run(cluster=cluster) for _ in range(args.repeat)]
        parallel = min(t for t, _ in timings)
        print(f" {_speed(n, parallel)}", flush=True)
        identical = timings[0][1].equals(run()[1])
        print(f"  speedup {sequential / parallel:.2f}x; results identical: {identical}", flush=True)
    return 0 if identical else 1


def _speed(points: int, seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms, {points / seconds:,.0f} backtests/s"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _engines(text: str) -> int:
    """argparse type of ``-n/--engines``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of engines") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} engines: give 1 or more")
    return value


def _repeat(text: str) -> int:
    """argparse type of ``--repeat``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of repetitions") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} repetitions: give 1 or more")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line's parser: one subcommand each with its own options and help.

    Examples
    --------
    >>> parser().parse_args(["bench", "-n", "4"]).repeat
    5
    """
    top = argparse.ArgumentParser(
        prog=PROG, description=_DESCRIPTION, epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_parser = commands.add_parser(
        "demo", help="a backtest, then a sample sweep on a local cluster",
        description="One backtest of SmaCross(fast=10, slow=30) on the shipped daily sample"
        " (its stats), then the 179-point fast x slow sweep on a local cluster (a progress"
        " line on stderr) and its 10 best runs by Sharpe ratio.",
    )
    demo_parser.set_defaults(run=demo)
    bench_parser = commands.add_parser(
        "bench", help="the same sweep sequential and parallel: speedup and identity",
        description="The 179-point sweep in this process and on a local cluster, each"
        " REPEAT times: the best time of each, the speedup, and whether both give"
        " identical results (exit status 1 if not).",
    )
    bench_parser.add_argument("--repeat", type=_repeat, default=5, metavar="REPEAT",
                              help="times each way runs; the best counts (default 5)")
    bench_parser.set_defaults(run=bench)
    for command in (demo_parser, bench_parser):
        command.add_argument("-n", "--engines", type=_engines, default=2, metavar="N",
                             help="engines of the local cluster (default 2)")
    return top


def main(argv: Sequence[str] | None = None, *, background_stop: bool = False) -> int:
    """Run the command ``argv`` names (default ``sys.argv[1:]``); the exit status.

    ``background_stop`` leaves the local cluster's processes to its watchdog at a
    normal end (see :func:`local_cluster`); only a caller that exits right after,
    with ``os._exit``, may set it.

    Examples
    --------
    >>> main(["bench", "--repeat", "0"])   # doctest: +SKIP
    usage: python -m nbbacktest bench [-h] [--repeat REPEAT] [-n N]
    python -m nbbacktest bench: error: argument --repeat: 0 repetitions: give 1 or more
    """
    the_parser = parser()
    args = the_parser.parse_args(argv)
    args.background_stop = background_stop
    try:
        return int(args.run(args))
    except NbbacktestError as error:  # bad input or a cluster that would not start: one line
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    status = main(background_stop=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: its atexit handlers would stop the cluster here and wait ~5 s for
    # its processes; the cluster's watchdog ends them (and removes its shared memory
    # and connection files) within a few seconds of this process being gone.
    os._exit(status)
