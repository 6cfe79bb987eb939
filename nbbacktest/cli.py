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

Examples
--------
>>> load_strategy("nbbacktest.engine.examples:SmaCross").__name__
'SmaCross'
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import math
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import pandas as pd
from IPython.core.error import UsageError

from nbbacktest.engine import Strategy, is_universe, load_ohlcv, load_sample
from nbbacktest.engine.samples import SAMPLE_NAMES as SAMPLES
from nbbacktest.errors import NbbacktestError, did_you_mean
from nbbacktest.magic_args import (
    add_options,
    grid_options,
    input_errors,
    run_options,
    settings_options,
    sweep_inputs,
    top_option,
)
from nbbacktest.parallel.checkpoint import ERRORS, ROWS, SPEC_JSON, load_spec
from nbbacktest.parallel.cluster import Cluster, resolve_engine_count
from nbbacktest.parallel.events import Started
from nbbacktest.parallel.progress import TextProgress
from nbbacktest.parallel.sweep import SweepResult

__all__ = ["EXIT", "add_commands", "compare", "load_data", "load_strategy", "read_config", "report", "run"]

#: Exit statuses: the sweep completed, failed, was given bad input, was interrupted.
EXIT = {"complete": 0, "failed": 1, "usage": 2, "interrupted": 130}
#: What ``run`` writes into --out DIR besides the checkpoint's own files.
RESULTS_CSV, RESULTS_PARQUET = "results.csv", "results.parquet"
BEST_TRADES, BEST_EQUITY = "best_trades.csv", "best_equity.csv"
SYMBOLS_CSV, TRADES_DIR = "symbols.csv", "trades"
REPORT_HTML = "report.html"
#: The files of a sweep's folder that ``--force`` removes (nothing else in DIR is touched).
SWEEP_FILES = (SPEC_JSON, "spec.pkl", "data.pkl", ROWS, ERRORS, "card.json", RESULTS_CSV,
               RESULTS_PARQUET, BEST_TRADES, BEST_EQUITY, SYMBOLS_CSV, REPORT_HTML)
#: Columns that say where and how long a run ran, not what it computed.
RUNTIME_COLUMNS = ("engine", "host", "seconds")
#: The data files a folder universe is made of (one per symbol, the file name's stem).
DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
#: How many frames of a failing strategy module's traceback are shown.
TRACEBACK_FRAMES = 3

_RUN_EXAMPLES = """\
examples:
  nbbacktest run strategies.py:SmaCross prices.csv --grid fast=5:60:5 slow=10:200:10 \\
      --where "fast < slow" --metric sharpe --engines 4 --out runs/sma
  nbbacktest run strategies.py:SmaCross prices/ --grid fast=5:60:5 --max-symbols 3 --out smoke
  nbbacktest run --config sweep.toml --profile research
  nbbacktest run --out runs/sma --resume      go on with an interrupted sweep

exit status: 0 complete, 1 failed, 2 bad arguments, 130 interrupted (rows kept)
"""


class CommandError(NbbacktestError):
    """Bad arguments or input of a command: one line, exit status 2."""


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


# -------------------------------------------------------------------- config
def read_config(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """The options of a TOML or YAML config file, as command-line words.

    Keys are the long options without their dashes (``max_symbols`` or
    ``max-symbols``), plus ``strategy`` and ``data``. ``grid`` and ``set`` take a
    table ``{name: spec}`` or a list of ``"name=spec"``; flags take true or false.

    Examples
    --------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "sweep.toml")
    >>> _ = Path(path).write_text('metric = "sortino"\\n[grid]\\nfast = "5:20:5"\\n')
    >>> top = argparse.ArgumentParser(); add_commands(top.add_subparsers())
    >>> read_config(path, top._subparsers._group_actions[0].choices["run"])
    ['--metric', 'sortino', '--grid', 'fast=5:20:5']
    """
    options = _read_config_file(path)
    actions = {action.dest: action for action in parser._actions if action.dest not in ("help", "config")}
    words: list[str] = []
    positionals: dict[str, str] = {}
    for key, value in options.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            raise CommandError(f"--config {path}: unknown key {key!r}.{did_you_mean(dest, actions)}"
                               f" Keys: {', '.join(sorted(actions))}")
        action = actions[dest]
        if not action.option_strings:
            positionals[dest] = str(value)
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise CommandError(f"--config {path}: {key} must be true or false, got {value!r}")
            words += [flag] if value else []
        elif dest in ("grid", "set"):
            items = value.items() if isinstance(value, Mapping) else None
            pairs = ([f"{name}={_config_text(spec)}" for name, spec in items] if items is not None
                     else [str(v) for v in value] if isinstance(value, list) else [str(value)])
            words += [flag, *pairs]
        else:
            words += [flag, _config_text(value)]
    # Positionals first, in the parser's order: argparse reads them by position.
    return [positionals[d] for d in ("strategy", "data") if d in positionals] + words


def _config_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _read_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise CommandError(f"--config {path}: cannot read it ({error.strerror or error})") from None
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            loaded: Any = tomllib.loads(raw.decode())
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml  # type: ignore[import-untyped]
            except ImportError:
                raise CommandError(f"--config {path}: reading YAML needs PyYAML"
                                   " (pip install pyyaml), or write the config as TOML") from None
            loaded = yaml.safe_load(raw) or {}
        else:
            raise CommandError(f"--config {path}: give a .toml, .yaml or .yml file")
    except CommandError:
        raise
    except Exception as error:  # tomllib.TOMLDecodeError, yaml.YAMLError, UnicodeDecodeError
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CommandError(f"--config {path}: cannot parse it ({first})") from None
    if not isinstance(loaded, dict):
        raise CommandError(f"--config {path}: it must hold a table of options, not a"
                           f" {type(loaded).__name__}")
    return loaded


def parse_run(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``run``'s words over a ``--config`` file's options: what the command line gives wins.

    A ``--grid`` (or ``--set``) on the command line replaces the config's whole grid.
    """
    given = parser.parse_args(argv)
    if given.config is None:
        return given
    config = parser.parse_args(read_config(given.config, parser))
    for name in ("grid", "set"):
        if getattr(given, name):
            setattr(config, name, [])
    # Parsed into the config's namespace: options the command line leaves out keep its values.
    merged = parser.parse_args(argv, namespace=config)
    for name in ("strategy", "data"):  # an absent optional positional is set to None: restore
        setattr(merged, name, getattr(given, name) or getattr(config, name))
    return merged


# ------------------------------------------------------------- strategy, data
def load_strategy(text: str) -> type[Strategy]:
    """The Strategy subclass ``FILE.py:CLASS`` or ``MODULE:CLASS`` names.

    A file is imported as a module named after it (its folder first on the
    path, so that it can import its neighbours); its classes travel to the
    engines by value.

    Raises
    ------
    CommandError
        No ``:``, no such file or module, a module that fails to import (its
        traceback, shortened), no such class, or not a Strategy subclass.

    Examples
    --------
    >>> load_strategy("nbbacktest.engine.examples:Smacross")
    Traceback (most recent call last):
    ...
    nbbacktest.cli.CommandError: STRATEGY nbbacktest.engine.examples:Smacross: ... Did you mean: SmaCross? ...
    """
    where, colon, name = text.rpartition(":")
    if not colon or not where or not name:
        raise CommandError(f"STRATEGY {text!r} must be FILE.py:CLASS or MODULE:CLASS,"
                           " e.g. strategies.py:SmaCross")
    is_file = where.endswith(".py") or os.sep in where
    module = _import_file(where, text) if is_file else _import_module(where, text)
    value = getattr(module, name, None)
    found = sorted(n for n, v in vars(module).items()
                   if isinstance(v, type) and issubclass(v, Strategy) and v is not Strategy
                   and not n.startswith("_"))
    if value is None:
        hint = did_you_mean(name, found)
        listed = (f" Its Strategy subclasses: {', '.join(found)}." if found
                  else " It defines no Strategy subclass.")
        raise CommandError(f"STRATEGY {text}: {where} has no class {name!r}.{hint or listed}")
    if not (isinstance(value, type) and issubclass(value, Strategy)) or value is Strategy:
        raise CommandError(f"STRATEGY {text}: {name} is a {type(value).__name__}, not a Strategy subclass")
    return value


def _import_file(path: str, text: str) -> ModuleType:
    file = Path(path).expanduser()
    if not file.is_file():
        raise CommandError(f"STRATEGY {text}: no file {path!r}")
    name = file.stem if file.stem.isidentifier() else "strategies"
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    folder = str(file.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module  # inspect.getsource and pickling look classes up here
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        sys.modules.pop(name, None)
        raise CommandError(f"STRATEGY {text}: importing {path} failed:\n"
                           + _short_traceback(error, str(file.resolve()))) from None
    return module


def _import_module(name: str, text: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and name.startswith(error.name):
            raise CommandError(f"STRATEGY {text}: no module {name!r} (give FILE.py:CLASS for a"
                               " file)") from None
        raise CommandError(f"STRATEGY {text}: importing {name} failed:\n"
                           + _short_traceback(error, None)) from None
    except Exception as error:
        raise CommandError(f"STRATEGY {text}: importing {name} failed:\n"
                           + _short_traceback(error, None)) from None


def _short_traceback(error: BaseException, file: str | None) -> str:
    """The last frames of ``error``'s traceback (those in ``file`` when given), and the error."""
    frames = traceback.extract_tb(error.__traceback__)
    if file is not None:
        frames = traceback.StackSummary.from_list([f for f in frames if f.filename == file]) or frames
    shown = traceback.StackSummary.from_list(list(frames)[-TRACEBACK_FRAMES:])
    lines = "".join(shown.format()) + "".join(traceback.format_exception_only(type(error), error))
    return lines.rstrip()


def load_data(text: str, *, max_symbols: int | None = None) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """The data DATA names: a file, a folder of one file per symbol, or ``sample:NAME``.

    ``max_symbols`` keeps the first N symbols of a universe (by name), read only those.

    Examples
    --------
    >>> sorted(load_data("sample:universe", max_symbols=2))
    ['AAA', 'BBB']
    """
    if text.startswith("sample:"):
        name = text.partition(":")[2]
        if name not in SAMPLES:
            raise CommandError(f"DATA {text!r}: no sample {name!r}.{did_you_mean(name, SAMPLES)}"
                               f" Samples: {', '.join(SAMPLES)}")
        data: Any = load_sample(name)
        if max_symbols is not None:
            if not is_universe(data):
                raise CommandError(f"--max-symbols applies to a universe, but DATA {text} is one frame")
            data = {symbol: data[symbol] for symbol in list(data)[:max_symbols]}
        return data
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.name.lower().endswith(DATA_SUFFIXES))
        if not files:
            raise CommandError(f"DATA {text!r} is a folder with no {', '.join(DATA_SUFFIXES)} file:"
                               " put one file of bars per symbol there")
        by_symbol = {_symbol_of(f): f for f in files}
        if len(by_symbol) < len(files):
            raise CommandError(f"DATA {text!r} has two files for one symbol: keep one of each")
        chosen = dict(list(by_symbol.items())[:max_symbols] if max_symbols else by_symbol.items())
        with _data_errors(text):
            return load_ohlcv(chosen)
    if not path.exists():
        raise CommandError(f"DATA {text!r}: no such file or folder")
    if max_symbols is not None:
        raise CommandError(f"--max-symbols applies to a universe (a folder of files), but DATA {text}"
                           " is one file")
    with _data_errors(text):
        return load_ohlcv(path)


def _symbol_of(file: Path) -> str:
    name = file.name
    for suffix in sorted(DATA_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return file.stem


@contextlib.contextmanager
def _data_errors(text: str) -> Iterator[None]:
    try:
        yield
    except (NbbacktestError, ValueError, OSError) as error:
        raise CommandError(f"DATA {text}: {error}") from None


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
    return _sweep_and_write(out, args, lambda **run_options: _sweep(inputs, data, args, out, **run_options))


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
        metric=args.metric, maximize=not args.minimize, symbols=symbols,
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
                where = "in this process" if not event.engines else f"on {event.engines:,} engines"
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
        print(f"Connected to the cluster of profile {args.profile!r} ({len(cluster.ids):,} engines)",
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
    if result.progress and best is not None:
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
        cells = [f"{c} {a.at[row, c]!r} vs {b.at[row, c]!r}" for c in same.columns if not same.at[row, c]]
        lines.append(f"row {row}: " + "; ".join(cells))
    return False, lines


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

