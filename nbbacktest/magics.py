"""IPython magics: ``%cluster``, ``%backtest`` and ``%%backtest``.

Load them with ``%load_ext nbbacktest``. They parse their options (IPython's
``magic_arguments``, so ``%backtest?`` is the parser's help), look names up in the
user namespace, call :func:`nbbacktest.backtest`, :func:`nbbacktest.sweep` or
:class:`nbbacktest.Cluster`, and display what comes back. Every mistake in the
input is a one-line ``UsageError``; errors raised by strategy code are not touched.

Examples
--------
>>> sorted(BacktestMagics.magics["line"]), sorted(BacktestMagics.magics["cell"])
(['backtest', 'cluster'], ['backtest'])
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import pandas as pd
from IPython.core import magic_arguments
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.display import display

from nbbacktest.display import sweep
from nbbacktest.engine import Param, Settings, Strategy, backtest, is_universe
from nbbacktest.engine.params import unknown_param_message
from nbbacktest.errors import ClusterError, DataError, ParamError, SweepError, UnknownParamError
from nbbacktest.parallel.cluster import Cluster, resolve_engine_count
from nbbacktest.parallel.events import Started, SweepEvent
from nbbacktest.parallel.sweep import SweepResult

__all__ = [
    "BacktestMagics",
    "closest",
    "format_status",
    "load_ipython_extension",
    "parse_grid_spec",
    "unload_ipython_extension",
]

#: The library's errors that mean "bad input": shown as one line, without a traceback.
#: StrategyError is not among them: what the user's strategy raises keeps its traceback.
INPUT_ERRORS: tuple[type[Exception], ...] = (
    ParamError, UnknownParamError, SweepError, DataError, ClusterError,
)

#: Where ``%backtest`` stores its result unless ``-o VAR`` says otherwise.
DEFAULT_VARIABLE = "_backtest"

# A range longer than this per parameter is a typo (a step of 1e-9), not a sweep.
_MAX_RANGE = 1_000_000
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})

F = TypeVar("F", bound=Callable[..., Any])


# ------------------------------------------------------------------ option types
def _engine_count(text: str) -> int | str:
    """argparse type of ``--engines``/``-n``: N, -1 (every core) or auto."""
    if text == "auto":
        return text
    try:
        engines = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of engines: give N, -1 (every core) or auto"
        ) from None
    try:
        resolve_engine_count(engines)
    except SweepError:
        raise argparse.ArgumentTypeError(
            f"{engines} is not a number of engines: give N >= 1, -1 (every core) or auto"
        ) from None
    return engines


def _positive_int(text: str) -> int:
    """argparse type of counts (``--sample``, ``--top``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def _variable_name(text: str) -> str:
    """argparse type of ``-o``: a Python identifier."""
    if not text.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid variable name")
    return text


def _symbol_list(text: str) -> list[str]:
    """argparse type of ``--symbols``: A,B,C."""
    symbols = [symbol.strip() for symbol in text.split(",")]
    if not all(symbols):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty symbol: give A,B,C")
    return symbols


# ------------------------------------------------------ shared option groups
def _options(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """One decorator applying ``decorators`` so that help lists them in the order given."""

    def apply(magic: F) -> F:
        for decorator in reversed(decorators):
            magic = decorator(magic)
        return magic

    return apply


grid_options = _options(
    magic_arguments.argument_group("grid"),
    magic_arguments.argument(
        "--grid", nargs="+", action="extend", default=[], metavar="NAME=SPEC",
        help="values of a parameter to sweep: start:stop:step (stop excluded, like range;"
        " ints or floats; without :step, the Param's declared step, else 1 for an int"
        " parameter, while a float one needs a step), a,b,c (numbers or strings) or one value",
    ),
    magic_arguments.argument(
        "--set", nargs="+", action="extend", default=[], metavar="NAME=VALUE",
        help="a fixed value for a parameter the grid does not sweep",
    ),
    magic_arguments.argument(
        "--where", metavar="EXPR",
        help='keep the points where EXPR is true, e.g. "fast < slow"; it sees the'
        " parameters only",
    ),
    magic_arguments.argument(
        "--sample", type=_positive_int, metavar="N", help="run a random sample of N points"
    ),
    magic_arguments.argument(
        "--seed", type=int, default=0, metavar="S",
        help="seed of the sample and of every run (default 0)",
    ),
    magic_arguments.argument(
        "--symbols", type=_symbol_list, metavar="A,B", help="the symbols of a universe to run on"
    ),
)

run_options = _options(
    magic_arguments.argument_group("run"),
    magic_arguments.argument(
        "--metric", default="sharpe", metavar="M",
        help="the stat that ranks the runs (default sharpe)",
    ),
    magic_arguments.argument(
        "--minimize", action="store_true", help="the lowest metric is best (default: highest)"
    ),
    magic_arguments.argument(
        "--engines", type=_engine_count, metavar="N",
        help="engines to run on: N, -1 (every core) or auto; without a running cluster,"
        " N > 1 starts a local one (default: this process)",
    ),
    magic_arguments.argument(
        "--stop-on-error", action="store_true", help="stop at the first run that raises"
    ),
    magic_arguments.argument(
        "--save", metavar="DIR", help="checkpoint the rows into DIR as they arrive"
    ),
    magic_arguments.argument(
        "--resume", action="store_true", help="skip the points already saved in --save DIR"
    ),
    magic_arguments.argument(
        "--no-progress", action="store_true", help="do not show the progress display"
    ),
)

settings_options = _options(
    magic_arguments.argument_group("simulation"),
    magic_arguments.argument("--cash", type=float, help="starting equity (default 10000)"),
    magic_arguments.argument(
        "--commission", type=float,
        help="fraction of traded notional paid per fill, e.g. 0.002 for 0.2%% (default 0)",
    ),
    magic_arguments.argument(
        "--slippage", type=float,
        help="fraction by which fills move against the trade (default 0)",
    ),
    magic_arguments.argument(
        "--fill", choices=("next_open", "close"), help="fill at the next open (default) or this close"
    ),
    magic_arguments.argument("--leverage", type=float, help="largest absolute exposure (default 1)"),
    magic_arguments.argument(
        "--close-at-end", action="store_true", help="close the last position at the last close"
    ),
)

output_options = _options(
    magic_arguments.argument_group("output"),
    magic_arguments.argument(
        "--top", type=_positive_int, metavar="K", help="show the table of the K best runs"
    ),
    magic_arguments.argument(
        "-o", "--output", type=_variable_name, default=DEFAULT_VARIABLE, metavar="VAR",
        help=f"store the result in VAR (default {DEFAULT_VARIABLE})",
    ),
    magic_arguments.argument(
        "--ui", action="store_true", help="show the sweep widget instead of running"
    ),
)


# ------------------------------------------------------------------ grid specs
def parse_grid_spec(name: str, spec: str, param: Param, owner: str) -> list[Any]:
    """The values of ``--grid NAME=SPEC``, converted to the parameter's type.

    ``SPEC`` is ``start:stop:step`` (stop excluded, like ``range``; the step may be
    left out when the Param declares one, or for ints), ``a,b,c``, or one value.
    Ranges are computed in decimal, so ``0.1:0.3:0.05`` gives exactly 0.1, 0.15,
    0.2 and 0.25. A str parameter takes ``:`` literally.

    Raises
    ------
    UsageError
        Naming the part of SPEC that is wrong, or the value the Param rejects.

    Examples
    --------
    >>> parse_grid_spec("fast", "5:20:5", Param(10), "SmaCross")
    [5, 10, 15]
    >>> parse_grid_spec("stop", "0.1:0.3:0.05", Param(0.0), "SmaCross")
    [0.1, 0.15, 0.2, 0.25]
    >>> parse_grid_spec("mode", "long,short", Param("long"), "SmaCross")
    ['long', 'short']
    >>> parse_grid_spec("fast", "5:x:5", Param(10), "SmaCross")
    Traceback (most recent call last):
    ...
    IPython.core.error.UsageError: --grid fast=5:x:5: stop 'x' is not a number
    """
    label = f"--grid {name}={spec}"
    text = spec.strip()
    if not text:
        raise UsageError(f"{label}: SPEC is empty; give start:stop:step, a,b,c or one value")
    if ":" in text and param.type is not str:
        values: list[Any] = _range_values(text, param, label)
    else:
        items = [item.strip() for item in text.split(",")]
        for position, item in enumerate(items, 1):
            if not item:
                raise UsageError(f"{label}: item {position} of {text!r} is empty")
        values = [_scalar(item, param, label) for item in items]
    return [_validated(value, param, owner, label) for value in values]


def _range_values(text: str, param: Param, label: str) -> list[Any]:
    if param.type is bool:
        raise UsageError(f"{label}: a range needs a numeric parameter, {param.name!r} is bool;"
                         " give true,false")
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise UsageError(f"{label}: a range is start:stop:step, got {len(parts)} parts")
    start = _decimal(parts[0], "start", label)
    stop = _decimal(parts[1], "stop", label)
    if len(parts) == 3:
        step = _decimal(parts[2], "step", label)
    elif param.step is not None:
        step = Decimal(str(param.step))
    elif param.type is int:
        step = Decimal(1)
    else:
        raise UsageError(f"{label}: give a step, start:stop:step ({param.name!r} declares none)")
    if step == 0:
        raise UsageError(f"{label}: step must not be 0")
    count = math.ceil((stop - start) / step)
    if count <= 0:
        way = "up" if step > 0 else "down"
        raise UsageError(
            f"{label} is empty: no value from start {start} {way} to stop {stop}"
            " (stop is excluded, like range)"
        )
    if count > _MAX_RANGE:
        raise UsageError(f"{label} has {count:,} values; at most {_MAX_RANGE:,} per parameter")
    return [_number(start + i * step, param) for i in range(count)]


def _decimal(text: str, part: str, label: str) -> Decimal:
    text = text.strip()
    if not text:
        raise UsageError(f"{label}: {part} is missing")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise UsageError(f"{label}: {part} {text!r} is not a number") from None
    if not value.is_finite():
        raise UsageError(f"{label}: {part} {text!r} is not a finite number")
    return value


def _number(value: Decimal, param: Param) -> int | float:
    # A whole number stays an int unless the Param is a float (Param converts 5 -> 5.0).
    if param.type is not float and value == value.to_integral_value():
        return int(value)
    return float(value)


def _scalar(text: str, param: Param, label: str) -> Any:
    """One value of SPEC (or of ``--set``) in the Param's type."""
    if param.type is str:
        return text
    if param.type is bool:
        word = text.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise UsageError(f"{label}: {text!r} is not true or false")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise UsageError(f"{label}: {text!r} is not a number") from None
    if value.is_nan():
        raise UsageError(f"{label}: {text!r} is not a number")
    return _number(value, param) if value.is_finite() else float(value)


def _validated(value: Any, param: Param, owner: str, label: str) -> Any:
    try:
        return param.validate(value, owner)
    except ParamError as error:
        raise UsageError(f"{label}: {error}") from None


def _assignments(items: list[str], option: str) -> dict[str, str]:
    """``NAME=TEXT`` items of ``--grid``/``--set`` as a dict, each name once."""
    found: dict[str, str] = {}
    for item in items:
        name, equals, text = item.partition("=")
        name = name.strip()
        if not equals or not name:
            raise UsageError(f"{option} {item!r} must be NAME=VALUE, e.g. {option} fast=10")
        if name in found:
            raise UsageError(f"{option} gives {name!r} twice")
        found[name] = text
    return found


def _declared(name: str, params: Mapping[str, Param], owner: str, option: str, text: str) -> Param:
    if name not in params:
        close = closest(name, params)
        message = (f"Strategy {owner!r} has no parameter {name!r}. Did you mean: {', '.join(close)}?"
                   if close else unknown_param_message(owner, name, params))
        raise UsageError(f"{option} {name}={text}: {message}")
    return params[name]


def closest(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> list[str]:
    """The candidates closest to ``word``: the single best, or those tied for best.

    A did-you-mean hint that lists every name above ``cutoff`` (``difflib``'s
    ``get_close_matches``) offers ``period, upper`` for ``perod``; the one
    closest is what was meant unless two are exactly as close.

    Examples
    --------
    >>> closest("perod", ["upper", "period", "lower"])
    ['period']
    >>> closest("fst", ["fast", "fist"])
    ['fast', 'fist']
    >>> closest("zzz", ["fast", "slow"])
    []
    """
    scores: dict[str, float] = {}
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(word)
    for candidate in candidates:
        matcher.set_seq1(candidate)
        # The same three ratios, in the same order, as difflib.get_close_matches.
        if (matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff
                and matcher.ratio() >= cutoff):
            scores[candidate] = matcher.ratio()
    if not scores:
        return []
    best = max(scores.values())
    return [c for c, score in scores.items() if math.isclose(score, best)]


# --------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _input_errors() -> Iterator[None]:
    """Turn the library's bad-input errors into a one-line UsageError."""
    try:
        yield
    except INPUT_ERRORS as error:
        raise UsageError(str(error)) from None


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


def format_status(status: Mapping[str, Any]) -> str:
    """A cluster's :meth:`~nbbacktest.Cluster.status` as the text table ``%cluster`` prints.

    Examples
    --------
    >>> print(format_status({"running": True, "kind": "local", "engines": 2,
    ...                      "hosts": {"node1": 2}, "busy": 1, "idle": 1,
    ...                      "data": {"3f9a": {"bytes": 1_500_000, "engines": 2}}}))
    Cluster (local): 2 engines on 1 host, 1 busy, 1 idle
      host   engines
      node1        2
      data        size  engines
      3f9a     1.4 MiB        2
    """
    if not status.get("running"):
        return "Cluster: stopped"
    hosts = status["hosts"]
    lines = [
        f"Cluster ({status['kind']}): {_count(status['engines'], 'engine')} on"
        f" {_count(len(hosts), 'host')}, {status['busy']:,} busy, {status['idle']:,} idle"
    ]
    width = max([len("host"), *map(len, hosts)])
    lines.append(f"  {'host':<{width}}  engines")
    lines += [f"  {host:<{width}}  {count:>7,}" for host, count in hosts.items()]
    data = status["data"]
    if not data:
        lines.append("  data held: none")
        return "\n".join(lines)
    width = max([len("data"), *map(len, data)])
    lines.append(f"  {'data':<{width}}  {'size':>10}  engines")
    lines += [
        f"  {key:<{width}}  {_size(held['bytes']):>10}  {held['engines']:>7,}"
        for key, held in data.items()
    ]
    return "\n".join(lines)


def _size(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _engines_phrase(engines: int) -> str:
    return "in this process" if engines == 0 else f"on {_count(engines, 'engine')}"


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
        "-n", "--engines", type=_engine_count, metavar="N",
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
        args = _parse(self.cluster, line)
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
                f" {_count(len(current.ids), 'engine')}): stop it first with %cluster stop"
            )
        if action == "start":
            _start_cluster(args)
        elif action == "connect":
            with _input_errors():
                cluster = Cluster.connect(
                    profile=args.profile, cluster_id=args.cluster_id,
                    url_file=None if args.url_file is None else os.path.expanduser(args.url_file),
                )
            print(f"Connected to a cluster of {_count(len(cluster.ids), 'engine')}")
        elif action == "stop":
            _stop_cluster(current)
        elif current is None:
            print(
                "No cluster is running. Start one with %cluster start -n 4, or connect with"
                " %cluster connect --profile NAME"
            )
        else:
            with _input_errors():
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
        args = _parse(self.backtest, line)
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
    @cell_magic("backtest")
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
        args = _parse(self.backtest_cell, line)
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
        close = closest(name, fitting) or closest(name, others)
        if close:
            return f" Did you mean: {', '.join(close)}?"
        if fitting:
            return f" The {kind} defined: {', '.join(sorted(fitting))}."
        return f" No {kind} defined yet."

    def _strategy(self, name: str) -> type[Strategy] | Strategy:
        value = self._lookup(
            name, "STRATEGY", lambda v: _is_strategy_class(v) or isinstance(v, Strategy),
            "strategies",
        )
        if _is_strategy_class(value) or isinstance(value, Strategy):
            return value
        raise UsageError(f"STRATEGY {name!r} is {_describe(value)}, not a Strategy subclass")

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
        cls = strategy if isinstance(strategy, type) else type(strategy)
        params = cls.params()
        owner = cls.__name__
        grid = self._grid(args.grid, params, owner)
        fixed: dict[str, Any] = {}
        for key, text in _assignments(args.set, "--set").items():
            param = _declared(key, params, owner, "--set", text)
            label = f"--set {key}={text}"
            fixed[key] = _validated(_scalar(text.strip(), param, label), param, owner, label)
        both = sorted(fixed.keys() & grid.keys())
        if both:
            raise UsageError(f"{', '.join(both)} is both in --grid and in --set: keep one")
        if args.resume and args.save is None:
            raise UsageError("--resume continues a sweep saved with --save DIR: give --save too")
        settings = _settings(args)
        with _input_errors():
            if fixed:
                strategy = (
                    strategy.with_params(**fixed) if isinstance(strategy, Strategy) else cls(**fixed)
                )
        if args.ui:
            self._show_widget(strategy, data, grid, args, settings)
            return
        if not grid and not is_universe(data):
            for option, value in (("--where", args.where), ("--sample", args.sample),
                                  ("--symbols", args.symbols), ("--save", args.save),
                                  ("--engines", args.engines), ("--top", args.top),
                                  ("--stop-on-error", args.stop_on_error or None)):
                if value is not None:
                    raise UsageError(f"{option} applies to a sweep: give --grid too")
            with _input_errors():
                result = backtest(strategy, data, seed=args.seed, **settings)
            self.shell.user_ns[args.output] = result
            display(result)
            return
        self._sweep(name, strategy, data, grid, args, settings)

    def _grid(self, items: list[str], params: Mapping[str, Param], owner: str) -> dict[str, list]:
        return {
            key: parse_grid_spec(key, spec, _declared(key, params, owner, "--grid", spec), owner)
            for key, spec in _assignments(items, "--grid").items()
        }

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
                print(f"Started a local cluster of {_count(len(cluster.ids), 'engine')}"
                      " (stop it with %cluster stop)")
            points = event.total // symbols if symbols else event.total
            on = f" on {_count(symbols, 'symbol')} ({event.total:,} runs)" if symbols else ""
            saved = f" ({event.finished:,} already saved)" if event.finished else ""
            print(f"Sweeping {_count(points, 'point')} of {name}{on}"
                  f" {_engines_phrase(event.engines)}{saved}", flush=True)

        with _input_errors():
            result = sweep(
                strategy, data, grid or None, where=args.where, n=args.sample, seed=args.seed,
                metric=args.metric, maximize=not args.minimize, engines=args.engines,
                symbols=args.symbols, stop_on_error=args.stop_on_error,
                progress=False if args.no_progress else None, on_result=announce, block=False,
                save=None if args.save is None else os.path.expanduser(args.save),
                resume=args.resume, **settings,
            )
        try:
            # Stored before waiting: Ctrl-C then cancels the sweep, and the rows stay here.
            self.shell.user_ns[args.output] = result
            result.wait()  # turns Ctrl-C into cancel, and waits for the finished rows
        except KeyboardInterrupt:  # one that landed outside wait()'s own handler
            result.cancel()
            result.wait()
        crash = result.exception()
        if crash is not None:  # the sweep itself failed (a lost cluster): as sweep(block=True)
            with _input_errors():
                raise crash
        _report(result, args)
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
            from nbbacktest.display import SweepWidget  # type: ignore[attr-defined]
        except ImportError as error:
            raise UsageError(f"--ui: the sweep widget is not available ({error})") from None
        # The widget starts from the options given; it fills in the rest from the Params.
        options: dict[str, Any] = dict(
            settings, metric=args.metric, maximize=not args.minimize, seed=args.seed
        )
        for key, value in (("grid", grid or None), ("where", args.where), ("engines", args.engines),
                           ("symbols", args.symbols), ("top", args.top)):
            if value is not None:
                options[key] = value
        with _input_errors():
            widget = SweepWidget(strategy, data, **options)
        self.shell.user_ns[args.output] = widget
        display(widget)


def _start_cluster(args: argparse.Namespace) -> None:
    engines = "auto" if args.engines is None else args.engines
    started = time.monotonic()
    with _input_errors():
        cluster = Cluster(engines=engines, profile=args.profile)
    print(
        f"Started a local cluster of {_count(len(cluster.ids), 'engine')} in"
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
        print(f"Stopped the local cluster of {_count(engines, 'engine')}")
    else:
        print(f"Disconnected from the cluster of {_count(engines, 'engine')} (it keeps running)")


def _parse(magic: Callable[..., Any], line: str) -> argparse.Namespace:
    """Split ``line`` like a shell does, then parse it with the magic's parser.

    magic_arguments' own split keeps the quotes (``--where "fast < slow"`` would
    arrive as a quoted string literal) and cuts ``--where="a < b"`` in three.
    """
    try:
        words = shlex.split(line)
    except ValueError as error:  # an unclosed quote
        raise UsageError(f"cannot read the options: {error} in {line!r}") from None
    return magic.parser.parse_args(words)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The simulation options given, checked now (as :class:`Settings` checks them)."""
    given = {
        key: getattr(args, key)
        for key in ("cash", "commission", "slippage", "fill", "leverage")
        if getattr(args, key) is not None
    }
    if args.close_at_end:
        given["close_at_end"] = True
    try:
        Settings(**given)
    except (TypeError, ValueError) as error:
        # Settings names the field first ("commission must be ..."): name the option.
        field, _, rest = str(error).partition(" ")
        raise UsageError(f"--{field.replace('_', '-')} {rest}") from None
    return given


def _report(result: SweepResult, args: argparse.Namespace) -> None:
    """Say why the sweep ended early and which runs raised (their errors are not ours to hide)."""
    variable = args.output
    if result.failed:
        table = result.results
        row = int(table.index[table["status"] == "failed"][0])
        if result.status == "stopped":
            print(f"Sweep {result.reason}\nRow {row} ({result.describe(row)}):\n"
                  f"{table.at[row, 'traceback']}", file=sys.stderr)
        else:
            print(
                f"{result.failed} of {len(result)} runs raised; the first, row {row}"
                f" ({result.describe(row)}), raised {table.at[row, 'error']}."
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
