"""nbbacktest from a terminal: ``python -m nbbacktest COMMAND`` (or ``nbbacktest COMMAND``).

demo     one backtest of the sample SmaCross strategy on the shipped daily sample, then
         its 179-point fast x slow sweep on a local cluster, the best rows as a table
bench    the same sweep in this process and on a local cluster: speed, speedup, and
         whether both give identical tables; by default with the event-driven
         SmaCrossEvent, whose backtests are heavy enough for engines to pay off
run      sweep your strategy on your data, results to a folder (:mod:`nbbacktest.cli`)
compare  whether two run folders hold identical results, and why not
report   a run folder as one HTML file that opens offline

Both start a local ipyparallel cluster (several seconds) and stop it at the end: its
processes end in the background (a watchdog nbbacktest starts with every local
cluster ends them once this process is gone), so the prompt comes back at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import pandas as pd

from nbbacktest import cli, cli_inputs
from nbbacktest.cli import local_cluster
from nbbacktest.engine import backtest, load_sample
from nbbacktest.engine.examples import SmaCross, SmaCrossEvent
from nbbacktest.errors import NbbacktestError

if TYPE_CHECKING:
    from nbbacktest.parallel import Cluster

PROG = "python -m nbbacktest"
GRID = {"fast": range(5, 60, 5), "slow": range(10, 200, 10)}
COMMISSION = 0.002
#: The strategies ``bench --strategy`` can time, by name.
BENCH_STRATEGIES: dict[str, type[SmaCross] | type[SmaCrossEvent]] = {
    "event": SmaCrossEvent, "vector": SmaCross,
}
#: bench's default strategy. The event-driven crossover takes about 1 ms a backtest
#: on the daily sample (measured on a 2-core machine): 179 of them are ~0.17 s of
#: work, against the ~20 ms a cluster adds per sweep sending tasks and collecting
#: rows, so 2 engines beat this process (1.6x there; 1.25x while other programs used
#: the cores). The vectorized SmaCross takes ~0.4 ms: its whole sweep (~80 ms) costs
#: about what the cluster adds, and its "speedup" (0.7-1.3x) measures that overhead,
#: not the engines. The hourly sample's points are heavier but ship 8x the data: 1.4x.
BENCH_STRATEGY = "event"
#: A load average before the bench from which bench says the cores were busy: half a
#: core's worth of other work already takes a quarter of 2 cores from the engines.
BUSY_LOAD = 0.5
#: Columns of the demo's table of the best runs, after the params.
TOP_COLUMNS = ["sharpe", "return_pct", "max_drawdown_pct", "trades"]

_DESCRIPTION = """\
nbbacktest from a terminal: try it on its shipped sample data (demo, bench), sweep
your own strategy into a folder (run), compare two runs and share one (compare,
report).

A local ipyparallel cluster (demo, bench, run --engines N) takes several seconds to
start; at the end its processes stop in the background, so the prompt comes back at
once."""
_EXAMPLES = f"""\
examples:
  {PROG} demo            a backtest, then a sweep on 2 engines
  {PROG} demo -n 4       the sweep on 4 engines
  {PROG} bench --repeat 3
  {PROG} bench --strategy vector   the light vectorized sweep
  {PROG} run strategies.py:SmaCross prices.csv --grid fast=5:60:5 slow=10:200:10 \\
      --where "fast < slow" --engines 4 --out runs/sma
  {PROG} compare runs/sma runs/sma-parallel
  {PROG} report runs/sma
"""


def fast_below_slow(p: object) -> bool:
    """The demo sweep's filter: only points where the fast average is shorter."""
    return p.fast < p.slow  # type: ignore[attr-defined]


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
    """The same sweep sequential and parallel: speed, speedup, and whether the tables are identical."""
    from nbbacktest.parallel import sweep

    strategy = BENCH_STRATEGIES[args.strategy]
    data = load_sample(args.sample)
    n = sum(1 for f in GRID["fast"] for s in GRID["slow"] if f < s)

    def run(cluster: Cluster | None = None) -> tuple[float, pd.DataFrame]:
        """One sweep, in this process without a cluster: its seconds and its results."""
        start = time.perf_counter()
        runs = sweep(strategy, data, GRID, where=fast_below_slow, commission=COMMISSION,
                     progress=False, cluster=cluster)
        return time.perf_counter() - start, runs.results.drop(columns=["engine", "host", "seconds"])

    def step(text: str) -> None:
        print(f"  {text} ...", end="", flush=True)

    busy = _load_before()  # before the cluster's own start adds to it
    with local_cluster(args.engines, background_stop=args.background_stop) as cluster:
        print(f"{n:,}-point sweep of {strategy.__name__} on the {args.sample} sample"
              f" ({len(cast(pd.DataFrame, data)):,} bars), best of {args.repeat:,}:", flush=True)
        step("warm-up on the cluster (sends the data and the strategy class)")
        warm, _ = run(cluster=cluster)
        print(f" {warm * 1e3:,.0f} ms", flush=True)
        step(f"sequential (in-process) x {args.repeat:,}")
        sequential_runs = [run() for _ in range(args.repeat)]
        sequential = min(t for t, _ in sequential_runs)
        print(f" {_speed(n, sequential)}, {sequential / n * 1e3:,.2f} ms a backtest", flush=True)
        step(f"parallel ({args.engines:,} engines) x {args.repeat:,}")
        timings = [run(cluster=cluster) for _ in range(args.repeat)]
        parallel = min(t for t, _ in timings)
        print(f" {_speed(n, parallel)}", flush=True)
        print("  " + _speedup_text(sequential, parallel, args.engines, os.cpu_count() or 1, busy),
              flush=True)
        identical, text = _compare(sequential_runs[0][1], timings[0][1])
        print(f"  tables identical: {text}", flush=True)
    return 0 if identical else 1


def _load_before() -> float | None:
    """The 1-minute load average, where the system has one (not on Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _speedup_text(sequential: float, parallel: float, engines: int, cores: int,
                  load: float | None = None) -> str:
    """The speedup, the most it could be here, and where the rest went.

    ``load`` is the load average before the bench: other programs' work on the
    cores, which the engines then share.

    Examples
    --------
    >>> _speedup_text(0.36, 0.2, 2, 2)
    'speedup 1.80x of at most 2x (2 engines on 2 cores); the cluster added 20 ms to the sweep'
    >>> _speedup_text(0.08, 0.1, 2, 2).split("; ")[1].split(",")[0]
    'the cluster added 60 ms to the sweep'
    """
    bound = min(engines, cores)
    overhead = max(parallel - sequential / bound, 0.0)
    text = (f"speedup {sequential / parallel:.2f}x of at most {bound}x ({engines:,} engines on"
            f" {cores:,} cores); the cluster added {overhead * 1e3:,.0f} ms to the sweep")
    if parallel >= sequential:
        text += (", more than the work it saved: heavier points (--strategy event)"
                 " show what engines gain")
    if load is not None and load >= BUSY_LOAD:
        text += (f"; other programs were using the cores (load average {load:.1f} before the"
                 " bench), so the engines shared them: timings vary")
    return text


def _compare(sequential: pd.DataFrame, parallel: pd.DataFrame) -> tuple[bool, str]:
    """Whether the two sweeps' tables are equal to the bit, and a line that says so.

    Examples
    --------
    >>> a = pd.DataFrame({"fast": [5, 10], "sharpe": [0.5, 0.25]})
    >>> _compare(a, a.copy())
    (True, 'yes (2 rows x 2 columns, every value to the bit)')
    >>> _compare(a, a.assign(sharpe=[0.5, 0.3]))
    (False, 'NO: 1 of 2 rows differ (first: row 1, column sharpe)')
    """
    if sequential.equals(parallel):
        return True, (f"yes ({len(sequential):,} rows x {len(sequential.columns):,} columns,"
                      " every value to the bit)")
    if sequential.shape != parallel.shape or list(sequential.columns) != list(parallel.columns):
        return False, f"NO: shapes differ ({sequential.shape} in process, {parallel.shape} on the cluster)"
    same = (sequential == parallel) | (sequential.isna() & parallel.isna())
    rows = ~same.all(axis=1)
    first = rows.to_numpy().nonzero()[0][0]
    column = same.columns[~same.iloc[first].to_numpy()][0]
    return False, (f"NO: {int(rows.sum()):,} of {len(rows):,} rows differ"
                   f" (first: row {first}, column {column})")


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


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command line's parser: one subcommand each with its own options and help.

    ``prog`` is how the command was typed (``nbbacktest`` or ``python -m nbbacktest``).

    Examples
    --------
    >>> parser().parse_args(["bench", "-n", "4"]).repeat
    5
    """
    top = argparse.ArgumentParser(
        prog=prog, description=_DESCRIPTION, epilog=_EXAMPLES,
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
        " REPEAT times: the best time of each, the speedup against the most the cores"
        " allow, and whether both give identical tables (exit status 1 if not). The"
        " default strategy is the event-driven SmaCrossEvent (~1 ms a backtest): the"
        " vectorized SmaCross (~0.4 ms) is too light for engines to pay off, and its"
        " speedup measures the cluster's own cost.",
    )
    bench_parser.add_argument("--strategy", choices=sorted(BENCH_STRATEGIES), default=BENCH_STRATEGY,
                              help="event: SmaCrossEvent, bar by bar; vector: SmaCross"
                              f" (default {BENCH_STRATEGY})")
    bench_parser.add_argument("--sample", choices=["daily", "hourly"], default="daily",
                              help="the shipped sample to run on: daily (2,500 bars) or"
                              " hourly (20,000 bars) (default daily)")
    bench_parser.add_argument("--repeat", type=_repeat, default=5, metavar="REPEAT",
                              help="times each way runs; the best counts (default 5)")
    bench_parser.set_defaults(run=bench)
    for command in (demo_parser, bench_parser):
        command.add_argument("-n", "--engines", type=_engines, default=2, metavar="N",
                             help="engines of the local cluster (default 2)")
    cli.add_commands(commands)
    return top


def main(argv: Sequence[str] | None = None, *, background_stop: bool = False, prog: str = PROG) -> int:
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
    the_parser = parser(prog)
    words = list(sys.argv[1:] if argv is None else argv)
    args = the_parser.parse_args(words)
    if args.command == "run":  # with its --config file's options under the command line's
        try:
            args = cli_inputs.parse_run(_subparser(the_parser, "run"), words[1:])
        except cli_inputs.CommandError as error:
            print(f"{prog} run: error: {error}", file=sys.stderr)
            return cli.EXIT["usage"]
        args.command = "run"
    args.background_stop = background_stop
    try:
        return cli.run_command(args, prog)
    except NbbacktestError as error:  # a cluster that would not start, a sweep that failed: one line
        print(f"{prog} {args.command}: error: {error}", file=sys.stderr)
        return 1


def _subparser(top: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return cast(argparse.ArgumentParser, commands.choices[name])


def console() -> None:
    """The ``nbbacktest`` console script: :func:`main`, then exit without waiting for the cluster."""
    # Named as it was typed: the console script, or python -m nbbacktest.
    typed = "nbbacktest" if os.path.basename(sys.argv[0]) == "nbbacktest" else PROG
    status = main(background_stop=True, prog=typed)
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: its atexit handlers would stop the cluster here and wait ~5 s for
    # its processes; the cluster's watchdog ends them (and removes its shared memory
    # and connection files) within a few seconds of this process being gone.
    os._exit(status)


if __name__ == "__main__":
    console()
