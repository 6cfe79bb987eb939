"""IPython magics: ``%cluster``, ``%backtest`` and ``%%backtest``.

Load them with ``%load_ext nbbacktest``. They parse their options (IPython's
``magic_arguments``, so ``%backtest?`` is the parser's help), look names up in the
user namespace, call :func:`nbbacktest.backtest`, :func:`nbbacktest.sweep` or
:class:`nbbacktest.Cluster`, and display what comes back. Every mistake in the
input is a one-line ``UsageError``; errors raised by strategy code are not touched.

The options, their types and the ``--grid`` SPEC grammar live in
:mod:`nbbacktest.magic_args`; the ``%cluster`` table in :mod:`nbbacktest.display.status`.

Examples
--------
>>> sorted(BacktestMagics.magics["line"]), sorted(BacktestMagics.magics["cell"])
(['backtest', 'cluster'], ['backtest'])
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from IPython.core import magic_arguments
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.display import display

from nbbacktest.display import sweep
from nbbacktest.display.status import engines_phrase, format_status, plural
from nbbacktest.engine import Param, Strategy, backtest, is_universe
from nbbacktest.engine.strategy import resolve_strategy
from nbbacktest.errors import (
    closest,
    did_you_mean,
)
from nbbacktest.magic_args import (
    engine_count,
    grid_options,
    input_errors,
    output_options,
    parse_grid_spec,
    parse_line,
    run_options,
    settings_options,
    sweep_inputs,
    walk_forward_options,
)
from nbbacktest.parallel.cluster import Cluster
from nbbacktest.parallel.events import Started, SweepEvent
from nbbacktest.parallel.sweep import SweepResult
from nbbacktest.parallel.walk_forward import WalkForwardResult, walk_forward

__all__ = [
    "BacktestMagics",
    "closest",
    "format_status",
    "load_ipython_extension",
    "parse_grid_spec",
    "unload_ipython_extension",
]


# --------------------------------------------------------------------- helpers
def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__}"
    return f"a {type(value).__name__}"


def _is_strategy_class(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, Strategy) and value is not Strategy


def _is_data(value: Any) -> bool:
    return isinstance(value, pd.DataFrame) or (
        is_universe(value) and all(isinstance(frame, pd.DataFrame) for frame in value.values())
    )


# ---------------------------------------------------------------------- magics
@magics_class
class BacktestMagics(Magics):
    """``%cluster``, ``%backtest`` and ``%%backtest``; registered by ``%load_ext nbbacktest``."""

    shell: InteractiveShell

    # ---------------------------------------------------------------- %cluster
    @magic_arguments.magic_arguments()
    @magic_arguments.argument(
        "action", nargs="?", choices=("start", "connect", "stop"), metavar="ACTION",
        help="start, connect or stop; none prints the status table",
    )
    @magic_arguments.argument(
        "-n", "--engines", type=engine_count, metavar="N",
        help="start: engines to start, N, -1 (every core) or auto (default auto)",
    )
    @magic_arguments.argument("--profile", metavar="P", help="start, connect: IPython profile")
    @magic_arguments.argument("--cluster-id", metavar="ID", help="connect: the cluster id")
    @magic_arguments.argument(
        "--url-file", metavar="F", help="connect: the controller's ipcontroller-client.json"
    )
    @no_var_expand
    @line_magic
    def cluster(self, line: str = "") -> None:
        """Start, connect to, stop or show the ipyparallel cluster sweeps run on.

        One cluster is current at a time; every ``%backtest --engines N`` reuses it.
        A cluster started here stops with ``%cluster stop`` (or when Python exits);
        one connected to is only disconnected from.

        Examples
        --------
        ::

            %cluster start -n 4                 # a local cluster of 4 engines
            %cluster start                      # every core that memory allows
            %cluster connect --profile research # one started with ipcluster
            %cluster connect --url-file ~/ipcontroller-client.json
            %cluster                            # engines, hosts, busy, data held
            %cluster stop
        """
        args = parse_line(self.cluster, line)
        action = args.action
        if args.engines is not None and action != "start":
            raise UsageError("-n/--engines applies to %cluster start")
        if (args.cluster_id or args.url_file) and action != "connect":
            raise UsageError("--cluster-id and --url-file apply to %cluster connect")
        if args.profile and action not in ("start", "connect"):
            raise UsageError("--profile applies to %cluster start and %cluster connect")
        current = Cluster.current()
        if action in ("start", "connect") and current is not None:
            raise UsageError(
                f"a cluster is already running ({'local' if current.owned else 'connected'},"
                f" {plural(len(current.ids), 'engine')}): stop it first with %cluster stop"
            )
        if action == "start":
            _start_cluster(args)
        elif action == "connect":
            with input_errors():
                cluster = Cluster.connect(
                    profile=args.profile, cluster_id=args.cluster_id,
                    url_file=None if args.url_file is None else os.path.expanduser(args.url_file),
                )
            print(f"Connected to a cluster of {plural(len(cluster.ids), 'engine')}")
        elif action == "stop":
            _stop_cluster(current)
        elif current is None:
            print(
                "No cluster is running. Start one with %cluster start -n 4, or connect with"
                " %cluster connect --profile NAME"
            )
        else:
            with input_errors():
                print(format_status(current.status()))

    # --------------------------------------------------------------- %backtest
    @magic_arguments.magic_arguments()
    @magic_arguments.argument(
        "strategy", metavar="STRATEGY", help="name of a Strategy subclass (or instance)"
    )
    @magic_arguments.argument(
        "data", metavar="DATA", help="name of a DataFrame of OHLC bars, or of a {symbol: DataFrame}"
    )
    @grid_options
    @run_options
    @settings_options
    @output_options
    @no_var_expand
    @line_magic
    def backtest(self, line: str = "") -> None:
        """Backtest a strategy, or sweep it over a grid of parameters.

        STRATEGY and DATA are names of variables (looked up, never evaluated).
        Without ``--grid`` one backtest runs and its Result is shown; with it, every
        point of the grid runs and the sweep is shown. The result is stored in
        ``_backtest`` (or ``-o VAR``) as soon as the sweep starts, so Ctrl-C cancels
        it and keeps the finished rows there. ``{``, ``}`` and ``$`` are not expanded.

        Examples
        --------
        ::

            %backtest SmaCross data --set fast=10 slow=30 --commission 0.002
            %backtest SmaCross data --grid fast=5:60:5 slow=10:200:10 --where "fast < slow" \\
                      --metric sharpe --top 20 --engines 2 -o sweep
            %backtest SmaCross data --grid fast=5,10,20 --sample 2 --seed 7
            %backtest SmaCross universe --grid fast=5:30:5 --symbols AAA,BBB
            %backtest SmaCross data --ui
        """
        args = parse_line(self.backtest, line)
        strategy = self._strategy(args.strategy)
        data = self._data(args.data)
        self._run(args.strategy, strategy, data, args)

    # -------------------------------------------------------------- %%backtest
    @magic_arguments.magic_arguments("%backtest")
    @magic_arguments.argument(
        "data", metavar="DATA", help="name of a DataFrame of OHLC bars, or of a {symbol: DataFrame}"
    )
    @magic_arguments.argument(
        "--strategy", metavar="NAME",
        help="the Strategy subclass to sweep when the cell defines several",
    )
    @grid_options
    @run_options
    @settings_options
    @output_options
    @no_var_expand
    # IPython types cell_magic(name) as returning a decorator *or* the function (one
    # annotation for both of its uses), so mypy cannot apply the decorator it returns.
    @cell_magic("backtest")  # type: ignore[arg-type]
    def backtest_cell(self, line: str, cell: str) -> None:
        """Run the cell, which defines a strategy, then backtest or sweep that strategy.

        The cell runs in the notebook's namespace (``Strategy`` and ``Param`` are
        there without an import). It must define exactly one Strategy subclass,
        or name the one to use with ``--strategy``. The options are those of
        ``%backtest``; ``{``, ``}`` and ``$`` are not expanded.

        Examples
        --------
        ::

            %%backtest data --grid lookback=10:50:5 --metric sortino
            class Breakout(Strategy):
                lookback = Param(20, low=5, high=100)
                def init(self):
                    self.high = self.indicator(lambda d: d["High"].rolling(self.lookback).max())
                def next(self, bar):
                    if bar.close >= self.high[bar.i]:
                        self.buy()
        """
        args = parse_line(self.backtest_cell, line)
        namespace = self.shell.user_ns
        namespace.setdefault("Strategy", Strategy)
        namespace.setdefault("Param", Param)
        before = {name: value for name, value in namespace.items() if _is_strategy_class(value)}
        self._execute(cell)
        if args.strategy is not None:
            name = args.strategy
            strategy = self._strategy(name)
        else:
            defined = [
                name for name, value in namespace.items()
                if _is_strategy_class(value) and before.get(name) is not value
            ]
            if not defined:
                raise UsageError(
                    "the cell defines no Strategy subclass: define one (class"
                    " MyStrategy(Strategy): ...) or name one with --strategy NAME"
                )
            if len(defined) > 1:
                raise UsageError(
                    f"the cell defines {len(defined)} Strategy subclasses ({', '.join(defined)}):"
                    " choose one with --strategy NAME"
                )
            name = defined[0]
            strategy = namespace[name]
        data = self._data(args.data)
        self._run(name, strategy, data, args)

    # ----------------------------------------------------------------- lookups
    def _lookup(self, name: str, role: str, wanted: Callable[[Any], bool], kind: str) -> Any:
        """The value of variable ``name`` (dotted attributes allowed), never evaluated."""
        parts = name.split(".")
        if not all(part.isidentifier() for part in parts):
            raise UsageError(
                f"{role} must be the name of a variable, got {name!r}: assign it to a"
                " variable first"
            )
        namespace = self.shell.user_ns
        head = parts[0]
        if head not in namespace:
            raise UsageError(f"{role} {name!r} is not defined.{self._hint(head, wanted, kind)}")
        value = namespace[head]
        for position, attribute in enumerate(parts[1:], 1):
            try:
                value = getattr(value, attribute)
            except AttributeError:
                owner = ".".join(parts[:position])
                raise UsageError(f"{role} {name!r}: {owner} has no attribute {attribute!r}") from None
        return value

    def _hint(self, name: str, wanted: Callable[[Any], bool], kind: str) -> str:
        hidden = self.shell.user_ns_hidden  # In, Out, exit, get_ipython, ...
        names = [n for n in self.shell.user_ns if not n.startswith("_") and n not in hidden]
        fitting = [n for n in names if wanted(self.shell.user_ns[n])]
        others = [n for n in names if n not in fitting]
        hint = did_you_mean(name, fitting) or did_you_mean(name, others)
        if hint:
            return hint
        if fitting:
            return f" The {kind} defined: {', '.join(sorted(fitting))}."
        return f" No {kind} defined yet."

    def _strategy(self, name: str) -> type[Strategy] | Strategy:
        value = self._lookup(
            name, "STRATEGY", lambda v: _is_strategy_class(v) or isinstance(v, Strategy),
            "strategies",
        )
        try:
            resolve_strategy(value, f"STRATEGY {name!r}")  # the one check of every entry point
        except TypeError:
            # Said in one line: the value's repr may span several.
            raise UsageError(f"STRATEGY {name!r} is {_describe(value)}, not a Strategy subclass"
                             " or instance") from None
        return value

    def _data(self, name: str) -> pd.DataFrame | Mapping[str, pd.DataFrame]:
        value = self._lookup(name, "DATA", _is_data, "data frames")
        if _is_data(value):
            return value
        raise UsageError(
            f"DATA {name!r} is {_describe(value)}, not a DataFrame of OHLC bars or a"
            " {symbol: DataFrame} universe"
        )

    def _execute(self, cell: str) -> None:
        """Run the cell's code in the user namespace, as IPython runs a cell."""
        shell = self.shell
        source = shell.transform_cell(cell)
        filename = shell.compile.cache(source, shell.execution_count, raw_code=cell)
        code = shell.compile(source, filename, "exec")
        exec(code, shell.user_global_ns, shell.user_ns)  # noqa: S102 - the user's own cell

    # --------------------------------------------------------------------- run
    def _run(
        self,
        name: str,
        strategy: type[Strategy] | Strategy,
        data: pd.DataFrame | Mapping[str, pd.DataFrame],
        args: argparse.Namespace,
    ) -> None:
        """Convert the options, then backtest, sweep or show the widget."""
        if args.resume and args.save is None:
            raise UsageError("--resume continues a sweep saved with --save DIR: give --save too")
        inputs = sweep_inputs(strategy, args)
        strategy, grid, settings = inputs.strategy, inputs.grid, inputs.settings
        if args.ui:
            self._show_widget(strategy, data, grid, args, settings)
            return
        if not grid and isinstance(data, pd.DataFrame):  # not a universe
            for option, value in (("--where", args.where), ("--sample", args.sample),
                                  ("--symbols", args.symbols), ("--save", args.save),
                                  ("--engines", args.engines), ("--top", args.top),
                                  ("--walk-forward", args.walk_forward),
                                  ("--stop-on-error", args.stop_on_error or None)):
                if value is not None:
                    raise UsageError(f"{option} applies to a sweep: give --grid too")
            with input_errors():
                result = backtest(strategy, data, seed=args.seed, **settings)
            self.shell.user_ns[args.output] = result
            display(result)
            return
        self._sweep(name, strategy, data, grid, args, settings)

    def _sweep(
        self,
        name: str,
        strategy: type[Strategy] | Strategy,
        data: pd.DataFrame | Mapping[str, pd.DataFrame],
        grid: dict[str, list],
        args: argparse.Namespace,
        settings: dict[str, Any],
    ) -> None:
        symbols = len(args.symbols) if args.symbols else len(data) if is_universe(data) else 0
        cluster_before = Cluster.current()

        def announce(event: SweepEvent) -> None:
            if not isinstance(event, Started):
                return
            cluster = Cluster.current()
            if cluster is not None and cluster is not cluster_before:
                print(f"Started a local cluster of {plural(len(cluster.ids), 'engine')}"
                      " (stop it with %cluster stop)")
            points = event.total // symbols if symbols else event.total
            on = f" on {plural(symbols, 'symbol')} ({event.total:,} runs)" if symbols else ""
            saved = f" ({event.finished:,} already saved)" if event.finished else ""
            print(f"Sweeping {plural(points, 'point')} of {name}{on}"
                  f" {engines_phrase(event.engines)}{saved}", flush=True)

        walk = walk_forward_options(args)
        save = None if args.save is None else os.path.expanduser(args.save)
        progress = False if args.no_progress else None
        analysis: WalkForwardResult | None = None
        with input_errors():
            if walk is not None:
                if not grid:
                    raise UsageError("--walk-forward chooses among the points of a grid: give --grid too")
                analysis = walk_forward(
                    strategy, data, grid, **walk, where=args.where, metric=args.metric,
                    maximize=not args.minimize, min_trades=args.min_trades, engines=args.engines,
                    progress=progress, block=False, save=save, resume=args.resume, **settings,
                )
                result = analysis.sweep
            else:
                result = sweep(
                    strategy, data, grid or None, where=args.where, n=args.sample, seed=args.seed,
                    metric=args.metric, maximize=not args.minimize, min_trades=args.min_trades,
                    engines=args.engines, symbols=args.symbols, stop_on_error=args.stop_on_error,
                    progress=progress, on_result=announce, block=False, save=save,
                    resume=args.resume, **settings,
                )
        try:
            # Stored before waiting: Ctrl-C then cancels the sweep, and the rows stay here.
            self.shell.user_ns[args.output] = result if analysis is None else analysis
            result.wait()  # turns Ctrl-C into cancel, and waits for the finished rows
        except KeyboardInterrupt:  # one that landed outside wait()'s own handler
            result.cancel()
            result.wait()
        crash = result.exception()
        if crash is not None:  # the sweep itself failed (a lost cluster): as sweep(block=True)
            with input_errors():
                raise crash
        _report(result, args)
        if analysis is not None:
            display(analysis)
            return
        display(result if args.top is None else result.table(top=args.top))

    def _show_widget(
        self,
        strategy: type[Strategy] | Strategy,
        data: pd.DataFrame | Mapping[str, pd.DataFrame],
        grid: dict[str, list],
        args: argparse.Namespace,
        settings: dict[str, Any],
    ) -> None:
        try:
            from nbbacktest.display import SweepWidget
        except ImportError as error:
            raise UsageError(f"--ui: the sweep widget is not available ({error})") from None
        # The widget starts from the options given; it fills in the rest from the Params.
        options: dict[str, Any] = dict(
            settings, metric=args.metric, maximize=not args.minimize, seed=args.seed,
            min_trades=args.min_trades,
        )
        for key, value in (("grid", grid or None), ("where", args.where), ("engines", args.engines),
                           ("symbols", args.symbols), ("top", args.top)):
            if value is not None:
                options[key] = value
        with input_errors():
            widget = SweepWidget(strategy, data, **options)
        self.shell.user_ns[args.output] = widget
        display(widget)


def _start_cluster(args: argparse.Namespace) -> None:
    engines = "auto" if args.engines is None else args.engines
    started = time.monotonic()
    with input_errors():
        cluster = Cluster(engines=engines, profile=args.profile)
    print(
        f"Started a local cluster of {plural(len(cluster.ids), 'engine')} in"
        f" {time.monotonic() - started:.1f} s (stop it with %cluster stop)"
    )


def _stop_cluster(current: Cluster | None) -> None:
    if current is None:
        raise UsageError(
            "no cluster is running, so there is nothing to stop; start one with"
            " %cluster start -n 4"
        )
    engines, owned = len(current.ids), current.owned
    current.stop()
    if owned:
        print(f"Stopped the local cluster of {plural(engines, 'engine')}")
    else:
        print(f"Disconnected from the cluster of {plural(engines, 'engine')} (it keeps running)")


def _report(result: SweepResult, args: argparse.Namespace) -> None:
    """Say why the sweep ended early and which runs raised (their errors are not ours to hide)."""
    variable = args.output
    if result.failed:
        table = result.results
        row = int(table.index[table["status"] == "failed"][0])
        traceback, error = str(table.at[row, "traceback"]), str(table.at[row, "error"])
        if result.status == "stopped":
            print(f"Sweep {result.reason}\nRow {row} ({result.describe(row)}):\n{traceback}",
                  file=sys.stderr)
        else:
            every = "Every run failed: " if result.failed == result.progress == len(result) else ""
            print(
                f"{every}{result.failed} of {len(result)} runs raised; the first, row {row}"
                f" ({result.describe(row)}), raised {error}."
                f" Tracebacks: {variable}.results.traceback",
                file=sys.stderr,
            )
    if result.status == "cancelled":
        print(f"Cancelled: {result.progress} of {len(result)} runs finished, kept in {variable}")


# ------------------------------------------------------------------- extension
def load_ipython_extension(ipython: InteractiveShell) -> None:
    """Register ``%cluster``, ``%backtest`` and ``%%backtest`` (``%load_ext nbbacktest``)."""
    ipython.register_magics(BacktestMagics)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    """Remove the magics registered by :func:`load_ipython_extension` (``%unload_ext``)."""
    manager = ipython.magics_manager
    instance = dict.get(manager.registry, BacktestMagics.__name__)
    if instance is None:
        return
    for kind, names in BacktestMagics.magics.items():
        table = manager.magics[kind]
        for name in names:
            # Only ours: another extension may have registered the same name since.
            if getattr(table.get(name), "__self__", None) is instance:
                del table[name]
    dict.pop(manager.registry, BacktestMagics.__name__, None)
