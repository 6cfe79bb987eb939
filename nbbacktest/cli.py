"""Sweeps from a terminal: ``nbbacktest run``, ``nbbacktest compare`` and ``nbbacktest report``.

``run`` takes the same sweep options as the ``%backtest`` magic (one declaration,
:mod:`nbbacktest.magic_args`, serves both), sweeps in this process, on a local
cluster (``--engines N``) or on one started with ``ipcluster`` (``--profile P``),
and writes everything to ``--out DIR``: the checkpoint (so that ``--resume`` goes
on after an interruption), the run card, the results table, the best run's trades
and equity and, for a universe, a summary per symbol. ``compare`` says whether two
such folders hold identical results, and why they may not; ``report`` writes a
folder's sweep as one HTML file that opens offline.

Exit status: 0 the sweep completed, 1 it failed (or every run raised), 2 bad
arguments or input, 130 interrupted (Ctrl-C or SIGTERM; the finished rows are kept).

What ``run`` reads (its config file, the strategy and the data) is read by
:mod:`nbbacktest.cli_inputs`.

Examples
--------
>>> compare_results(pd.DataFrame({"fast": [5]}), pd.DataFrame({"fast": [5]}))[0]
True
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pandas as pd
from IPython.core.error import UsageError

from nbbacktest.cli_inputs import CommandError, load_data, load_strategy
from nbbacktest.display.status import plural
from nbbacktest.engine.samples import SAMPLE_NAMES as SAMPLES
from nbbacktest.errors import NbbacktestError
from nbbacktest.magic_args import (
    add_options,
    grid_options,
    input_errors,
    run_options,
    settings_options,
    sweep_inputs,
    top_option,
    walk_forward_options,
)
from nbbacktest.parallel.checkpoint import ERRORS, ROWS, SPEC_JSON, load_spec
from nbbacktest.parallel.cluster import Cluster, resolve_engine_count
from nbbacktest.parallel.events import Started
from nbbacktest.parallel.progress import TextProgress
from nbbacktest.parallel.sweep import SweepResult
from nbbacktest.parallel.walk_forward import WalkForwardResult, walk_forward

__all__ = ["EXIT", "add_commands", "compare", "compare_results", "local_cluster", "report", "run",
           "run_command", "symbol_summary", "write_outputs"]

#: Exit statuses: the sweep completed, failed, was given bad input, was interrupted.
EXIT = {"complete": 0, "failed": 1, "usage": 2, "interrupted": 130}
#: What ``run`` writes into --out DIR besides the checkpoint's own files.
RESULTS_CSV, RESULTS_PARQUET = "results.csv", "results.parquet"
BEST_TRADES, BEST_EQUITY = "best_trades.csv", "best_equity.csv"
SYMBOLS_CSV, TRADES_DIR = "symbols.csv", "trades"
FOLDS_CSV, WALK_FORWARD_EQUITY = "folds.csv", "walk_forward_equity.csv"
REPORT_HTML = "report.html"
#: The files of a sweep's folder that ``--force`` removes (nothing else in DIR is touched).
SWEEP_FILES = (SPEC_JSON, "spec.pkl", "data.pkl", ROWS, ERRORS, "card.json", RESULTS_CSV,
               RESULTS_PARQUET, BEST_TRADES, BEST_EQUITY, SYMBOLS_CSV, REPORT_HTML, FOLDS_CSV,
               WALK_FORWARD_EQUITY)
#: How many differing cells of a row ``compare`` shows (the rest are counted).
SHOWN_CELLS = 3
#: Columns that say where and how long a run ran, not what it computed.
RUNTIME_COLUMNS = ("engine", "host", "seconds")

_RUN_EXAMPLES = """\
examples:
  nbbacktest run strategies.py:SmaCross prices.csv --grid fast=5:60:5 slow=10:200:10 \\
      --where "fast < slow" --metric sharpe --engines 4 --out runs/sma
  nbbacktest run strategies.py:SmaCross prices/ --grid fast=5:60:5 --max-symbols 3 --out smoke
  nbbacktest run --config sweep.toml --profile research
  nbbacktest run --out runs/sma --resume      go on with an interrupted sweep

exit status: 0 complete, 1 failed, 2 bad arguments, 130 interrupted (rows kept)
"""


# ------------------------------------------------------------------- parsers
def add_commands(commands: Any) -> None:
    """Add ``run``, ``compare`` and ``report`` to the subparsers ``commands``."""
    run_parser = commands.add_parser(
        "run", help="sweep a strategy over a grid and write the results to a folder",
        description="Sweep STRATEGY over a grid of its parameters on DATA and write the"
        " results, the run card and the checkpoint to --out DIR. The sweep options are"
        " those of the %%backtest magic.",
        epilog=_RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_parser.add_argument(
        "strategy", nargs="?", metavar="STRATEGY",
        help="FILE.py:CLASS or MODULE:CLASS, a Strategy subclass",
    )
    run_parser.add_argument(
        "data", nargs="?", metavar="DATA",
        help="a CSV or Parquet file of OHLC bars, a folder of one such file per symbol (a"
        f" universe), or a shipped sample: {', '.join('sample:' + n for n in SAMPLES)}",
    )
    add_options(run_parser, grid_options, run_options, settings_options)
    where = run_parser.add_argument_group("command line")
    where.add_argument("--out", metavar="DIR", help="the folder the sweep writes (required)")
    where.add_argument("--force", action="store_true",
                       help="replace the sweep already in --out DIR")
    where.add_argument("--config", metavar="FILE",
                       help="a TOML or YAML file of these options (the command line wins)")
    where.add_argument("--profile", metavar="P",
                       help="run on the cluster of `ipcluster start --profile P` instead")
    where.add_argument("--max-symbols", type=_positive, metavar="N",
                       help="the first N symbols of a universe only (a smoke test)")
    top_option.add_to_parser(run_parser, where)
    run_parser.set_defaults(run=run)

    compare_parser = commands.add_parser(
        "compare", help="whether two runs' results are identical, and why not",
        description="Compare the results of two --out folders row by row (every value to"
        " the bit, the engine, host and seconds columns aside) and their run cards:"
        " exit status 0 when identical, 1 when not.",
    )
    compare_parser.add_argument("first", metavar="DIR1")
    compare_parser.add_argument("second", metavar="DIR2")
    compare_parser.set_defaults(run=compare)

    report_parser = commands.add_parser(
        "report", help="write a folder's sweep as one HTML file that opens offline",
        description="Write the sweep saved in DIR as a self-contained HTML file (the run"
        " card, the sortable results, charts, the best run, the failures).",
    )
    report_parser.add_argument("folder", metavar="DIR")
    report_parser.add_argument("-o", "--output", metavar="FILE",
                               help=f"where to write it (default DIR/{REPORT_HTML})")
    report_parser.add_argument("--trusted", action="store_true",
                               help="load a folder that another user or machine wrote")
    report_parser.set_defaults(run=report)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


# ------------------------------------------------------------------------ run
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


def run(args: argparse.Namespace) -> int:
    """``nbbacktest run``: sweep, write the results to --out DIR; the exit status."""
    if args.out is None:
        raise CommandError("--out DIR is required: the folder the results and the checkpoint go to")
    out = Path(args.out).expanduser()
    if args.strategy is None or args.data is None:
        if not args.resume or args.strategy is not None:
            raise CommandError("give STRATEGY and DATA (or only --out DIR --resume to go on with"
                               " the sweep saved there)")
    _check_out(out, args)
    with input_errors():
        if args.strategy is None:
            return _resume_saved(out, args)
        strategy = load_strategy(args.strategy)
        data = load_data(args.data, max_symbols=args.max_symbols)
        inputs = sweep_inputs(strategy, args)
        walk = walk_forward_options(args)
    if walk is None:
        return _sweep_and_write(out, args, lambda **options: _sweep(inputs, data, args, out, **options))
    analyses: list[WalkForwardResult] = []

    def start(**options: Any) -> SweepResult:
        if not inputs.grid:
            raise CommandError("--walk-forward chooses among the points of a grid: give --grid too")
        analysis = walk_forward(
            inputs.strategy, data, inputs.grid, **walk, where=args.where, metric=args.metric,
            maximize=not args.minimize, min_trades=args.min_trades, save=str(out), resume=args.resume,
            **inputs.settings, **{k: v for k, v in options.items() if k != "on_result"})
        analyses.append(analysis)
        return analysis.sweep

    args.top = 0  # the best run over every window means nothing: the folds are printed instead
    status = _sweep_and_write(out, args, start)
    if analyses and analyses[0].sweep.status == "complete":
        write_walk_forward(analyses[0], out)
    return status


def write_walk_forward(analysis: WalkForwardResult, out: Path) -> None:
    """A walk-forward's folds and its stitched out-of-sample equity against buy and hold."""
    analysis.folds.to_csv(out / FOLDS_CSV, index=False)
    pd.DataFrame({"equity": analysis.equity, "buy_and_hold": analysis.buy_and_hold}).to_csv(
        out / WALK_FORWARD_EQUITY)
    print(f"\n{analysis.folds.to_string(index=False)}\n\n{analysis.summary()}")
    print(f"Wrote {FOLDS_CSV} and {WALK_FORWARD_EQUITY} to {out}", flush=True)


def _check_out(out: Path, args: argparse.Namespace) -> None:
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {args.out}: it is a file, not a folder")
    if not (out / SPEC_JSON).exists():
        return
    if args.force and args.resume:
        raise CommandError("--force replaces the sweep in --out DIR and --resume goes on with it: give one")
    if args.force:
        for name in SWEEP_FILES:
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
        shutil.rmtree(out / TRADES_DIR, ignore_errors=True)
        return
    if not args.resume:
        try:
            saved = load_spec(out)
            what = f"{saved['strategy']}, {saved['runs']:,} runs"
        except NbbacktestError as error:
            what = str(error)
        raise CommandError(f"--out {args.out} already holds a sweep ({what}): pass --resume to go on"
                           " with it or --force to replace it, or choose another folder")


def _sweep(inputs: Any, data: Any, args: argparse.Namespace, out: Path, **options: Any) -> SweepResult:
    from nbbacktest.parallel import sweep

    symbols = args.symbols
    return sweep(
        inputs.strategy, data, inputs.grid or None, where=args.where, n=args.sample, seed=args.seed,
        metric=args.metric, maximize=not args.minimize, min_trades=args.min_trades, symbols=symbols,
        stop_on_error=args.stop_on_error, save=str(out), resume=args.resume, **inputs.settings,
        **options,
    )


def _resume_saved(out: Path, args: argparse.Namespace) -> int:
    from nbbacktest.parallel import resume

    if not (out / SPEC_JSON).exists():
        raise CommandError(f"--out {args.out} holds no sweep to resume: give STRATEGY and DATA")
    return _sweep_and_write(out, args, lambda **options: resume(str(out), **options))


def _sweep_and_write(out: Path, args: argparse.Namespace, start: Any) -> int:
    """Start the sweep (on the cluster the options ask for), wait, write the files: the exit status."""
    progress: Any = False if args.no_progress else _text_progress
    with _cluster(args) as cluster, _interrupts():

        def announce(event: Any) -> None:
            if isinstance(event, Started):
                where = "in this process" if not event.engines else f"on {plural(event.engines, 'engine')}"
                saved = f" ({event.finished:,} already saved)" if event.finished else ""
                print(f"Sweeping {event.total:,} runs {where}{saved}; writing to {out}", flush=True)

        with input_errors():
            result = start(cluster=cluster, progress=progress, block=False, on_result=announce)
        try:
            result.wait()
        except KeyboardInterrupt:
            result.cancel()
            result.wait()
    interrupted = result.status == "cancelled"
    write_outputs(result, out, top=args.top)
    if interrupted:
        print(f"Interrupted: {result.progress:,} of {len(result):,} runs finished and are kept in"
              f" {out}; `nbbacktest run --out {out} --resume` runs the rest", file=sys.stderr)
        return EXIT["interrupted"]
    if result.status != "complete":
        print(f"The sweep {result.status}: {result.reason}", file=sys.stderr)
        return EXIT["failed"]
    if result.failed == len(result):
        print(f"Every run failed; tracebacks in {out / ERRORS}", file=sys.stderr)
        return EXIT["failed"]
    return EXIT["complete"]


def _text_progress(result: SweepResult) -> TextProgress:
    """The progress line on stderr: a bar redrawn in place on a terminal, else plain lines."""
    text = TextProgress(stream=sys.stderr)
    result.events.subscribe(text)
    return text


@contextlib.contextmanager
def _cluster(args: argparse.Namespace) -> Iterator[Cluster | None]:
    """None (this process), a local cluster of --engines N, or the --profile P cluster."""
    if args.profile is not None:
        if args.engines is not None:
            raise CommandError("give --engines N (a local cluster) or --profile P (a running one), not both")
        with input_errors():
            cluster = Cluster.connect(profile=args.profile)
        print(f"Connected to the cluster of profile {args.profile!r} ({plural(len(cluster.ids), 'engine')})",
              flush=True)
        try:
            yield cluster
        finally:
            cluster.stop()  # disconnects: the cluster keeps running
        return
    if args.engines is None or args.engines == 1:
        yield None
        return
    with input_errors():
        engines = resolve_engine_count(args.engines if args.engines != "auto" else -1)
    with local_cluster(engines, background_stop=getattr(args, "background_stop", False)) as cluster:
        yield cluster


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """SIGTERM (what Slurm and ``kill`` send) ends the sweep as Ctrl-C does: rows kept."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        before = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def write_outputs(result: SweepResult, out: Path, *, top: int | None = None) -> None:
    """Write the results table, the best run's trades and equity and, for a universe, per-symbol files."""
    from nbbacktest.display.tables import results_text

    table = result.results
    table.to_csv(out / RESULTS_CSV)
    written = [RESULTS_CSV]
    try:
        table.to_parquet(out / RESULTS_PARQUET)
        written.append(RESULTS_PARQUET)
    except ImportError:
        print(f"({RESULTS_PARQUET} not written: pip install 'nbbacktest[parquet]' for Parquet)",
              file=sys.stderr)
    best = result.best_index
    if best is not None:
        detail = result.detail(best)
        detail.trades.to_csv(out / BEST_TRADES, index=False)
        pd.DataFrame({"equity": detail.equity, "drawdown": detail.drawdown}).to_csv(out / BEST_EQUITY)
        written += [BEST_TRADES, BEST_EQUITY]
    if "symbol" in table.columns and result.plan.universe is not None:
        summary = symbol_summary(result)
        summary.to_csv(out / SYMBOLS_CSV)
        written.append(SYMBOLS_CSV)
        trades = out / TRADES_DIR
        trades.mkdir(exist_ok=True)
        for symbol, row in summary["best_row"].dropna().items():
            result.detail(int(row)).trades.to_csv(trades / f"{symbol}.csv", index=False)
        written.append(f"{TRADES_DIR}/")
    shown = 10 if top is None else top
    if result.progress and best is not None and shown:  # 0: a walk-forward shows its folds instead
        print(f"\nTop {min(shown, len(table)):,} of {len(table):,} runs by {result.metric}:")
        print(results_text(table, metric=result.metric, maximize=result.maximize, top=shown))
        print(f"\nBest: {result.best!r}")
    print(f"Wrote {', '.join(written)} and the checkpoint to {out}", flush=True)


def symbol_summary(result: SweepResult) -> pd.DataFrame:
    """Per symbol of a universe sweep: runs, failed, the best and the median metric, the best row.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> runs = nbb.sweep(SmaCross, nbb.load_sample("universe"), {"fast": [5, 10]},
    ...                  symbols=["AAA", "BBB"], progress=False)
    >>> symbol_summary(runs)[["runs", "failed"]].to_dict("index")
    {'AAA': {'runs': 2, 'failed': 0}, 'BBB': {'runs': 2, 'failed': 0}}
    """
    table = result.results
    metric = result.metric
    rows = []
    for symbol, group in table.groupby("symbol", sort=False):
        values = pd.to_numeric(group[metric], errors="coerce")
        done = values.dropna()
        best = (done.idxmax() if result.maximize else done.idxmin()) if len(done) else math.nan
        rows.append({"symbol": symbol, "runs": len(group), "failed": int((group["status"] == "failed").sum()),
                     f"best_{metric}": done.max() if result.maximize else done.min(),
                     f"median_{metric}": done.median(), "best_row": best})
    return pd.DataFrame(rows).set_index("symbol")


# -------------------------------------------------------------------- compare
def compare(args: argparse.Namespace) -> int:
    """``nbbacktest compare DIR1 DIR2``: 0 when the results are identical, 1 when not."""
    first, second = Path(args.first), Path(args.second)
    tables = [_saved_results(first, args.first), _saved_results(second, args.second)]
    identical, lines = compare_results(*tables)
    print(f"{args.first} and {args.second}: " + ("identical" if identical else "DIFFERENT"))
    for line in lines:
        print("  " + line)
    if not identical:
        for reason in _card_reasons(first, second):
            print("  why: " + reason)
    return 0 if identical else 1


def _saved_results(folder: Path, text: str) -> pd.DataFrame:
    if not folder.is_dir():
        raise CommandError(f"{text}: no such folder")
    for name, read in ((RESULTS_PARQUET, pd.read_parquet), (RESULTS_CSV, _read_csv)):
        if (folder / name).is_file():
            try:
                return read(folder / name)
            except ImportError:
                continue
            except Exception as error:
                raise CommandError(f"{text}: its {name} cannot be read ({error})") from None
    raise CommandError(f"{text} holds no results ({RESULTS_CSV}): `nbbacktest run --out {text}` writes them")


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, index_col=0)


def compare_results(first: pd.DataFrame, second: pd.DataFrame, *, show: int = 5) -> tuple[bool, list[str]]:
    """Whether two results tables are equal to the bit (runtime columns aside), and what differs.

    Examples
    --------
    >>> a = pd.DataFrame({"fast": [5, 10], "sharpe": [0.5, 0.25], "seconds": [0.1, 0.2]})
    >>> compare_results(a, a.assign(seconds=[0.3, 0.4]))
    (True, ['2 rows x 2 columns, every value to the bit (engine, host and seconds aside)'])
    >>> compare_results(a, a.assign(sharpe=[0.5, 0.3]))
    (False, ['1 of 2 rows differ, in columns: sharpe', 'row 1: sharpe 0.25 vs 0.3'])
    """
    a = first.drop(columns=[c for c in RUNTIME_COLUMNS if c in first.columns])
    b = second.drop(columns=[c for c in RUNTIME_COLUMNS if c in second.columns])
    if list(a.columns) != list(b.columns):
        only = [f"{c} only in the first" for c in a.columns if c not in b.columns]
        only += [f"{c} only in the second" for c in b.columns if c not in a.columns]
        return False, ["the columns differ: " + (", ".join(only) or "same columns in another order")]
    if len(a) != len(b):
        return False, [f"{len(a):,} rows against {len(b):,}"]
    b = b.set_axis(a.index)
    same = (a == b) | (a.isna() & b.isna())
    if bool(same.to_numpy().all()):
        return True, [f"{len(a):,} rows x {len(a.columns):,} columns, every value to the bit"
                      " (engine, host and seconds aside)"]
    rows = ~same.all(axis=1)
    columns = [str(c) for c in same.columns[~same.all(axis=0)]]
    lines = [f"{int(rows.sum()):,} of {len(a):,} rows differ, in columns: {', '.join(columns)}"]
    for row in a.index[rows.to_numpy()][:show]:
        cells = [f"{c} {_cell(a.at[row, c])} vs {_cell(b.at[row, c])}" for c in same.columns
                 if not same.at[row, c]]
        more = f"; and {len(cells) - SHOWN_CELLS} more columns" if len(cells) > SHOWN_CELLS else ""
        lines.append(f"row {row}: " + "; ".join(cells[:SHOWN_CELLS]) + more)
    return False, lines


def _cell(value: Any) -> str:
    """A value as the user would write it (``0.25``, not ``np.float64(0.25)``)."""
    return repr(value.item() if hasattr(value, "item") else value)


def _card_reasons(first: Path, second: Path) -> list[str]:
    """Why two folders' runs may differ, from their run cards (when both have one)."""
    import json

    try:
        from nbbacktest.parallel.card import card_differences
    except ImportError:
        return []
    cards = []
    for folder in (first, second):
        try:
            cards.append(json.loads((folder / "card.json").read_text()))
        except (OSError, ValueError):
            return [f"{folder} has no readable card.json, so the cause is not known"]
    return card_differences(cards[0], cards[1]) or ["the run cards match: same data, code and settings"]


# --------------------------------------------------------------------- report
def report(args: argparse.Namespace) -> int:
    """``nbbacktest report DIR``: the folder's sweep as one HTML file."""
    from nbbacktest.parallel import load_sweep

    folder = Path(args.folder)
    if not (folder / SPEC_JSON).exists():
        raise CommandError(f"{args.folder} holds no sweep (no {SPEC_JSON}): `nbbacktest run --out DIR` or"
                           " sweep(..., save=DIR) writes one")
    with input_errors():
        result = load_sweep(str(folder), trusted=args.trusted)
    path = Path(args.output) if args.output is not None else folder / REPORT_HTML
    written = result.report(path)
    size = Path(written).stat().st_size
    print(f"Wrote {written} ({size / 2**20:.1f} MiB): open it in a browser, no server needed")
    return 0


def run_command(args: argparse.Namespace, prog: str) -> int:
    """Run a parsed command: its exit status, bad input as one line and status 2."""
    try:
        return int(args.run(args))
    except (CommandError, UsageError) as error:
        print(f"{prog} {args.command}: error: {error}", file=sys.stderr)
        return EXIT["usage"]

