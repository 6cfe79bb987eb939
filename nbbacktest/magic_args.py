"""The magics' options and their text: option types, shared option groups, ``--grid`` specs.

:mod:`nbbacktest.magics` declares its magics with the option groups here
(IPython's ``magic_arguments``, so ``%backtest?`` is the parser's help) and
turns what they parse into the values :func:`nbbacktest.sweep` takes. A range
in ``--grid`` follows the one grid-range grammar,
:class:`~nbbacktest.parallel.ranges.GridRange` (``start:stop:step``, stop
excluded like ``range``), which the sweep widget's sliders follow too. Every
mistake is a one-line ``UsageError`` that names the option.

Examples
--------
>>> parse_grid_spec("fast", "5:20:5", Param(10), "SmaCross")
[5, 10, 15]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shlex
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from IPython.core import magic_arguments
from IPython.core.error import UsageError

from nbbacktest.engine import Param, Settings, Strategy
from nbbacktest.engine.params import unknown_param_message
from nbbacktest.errors import (
    ClusterError,
    DataError,
    ParamError,
    SweepError,
    UnknownParamError,
    did_you_mean,
)
from nbbacktest.parallel.cluster import resolve_engine_count
from nbbacktest.parallel.ranges import MAX_RANGE_VALUES, GridRange, as_number

__all__ = [
    "DEFAULT_VARIABLE", "INPUT_ERRORS", "SweepInputs", "add_options", "assignments", "declared_param",
    "engine_count", "grid_options", "input_errors", "output_options", "parse_grid_spec", "parse_line",
    "parse_scalar", "run_options", "settings_from", "settings_options", "sweep_inputs", "top_option",
    "validated", "walk_forward_lengths", "walk_forward_options",
]

#: Where ``%backtest`` stores its result unless ``-o VAR`` says otherwise.
DEFAULT_VARIABLE = "_backtest"

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})

#: A decorator of a magic method (IPython's ``magic_arguments`` decorators are untyped).
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

#: The library's errors that mean "bad input": shown as one line, without a traceback.
#: StrategyError is not among them: what the user's strategy raises keeps its traceback.
INPUT_ERRORS: tuple[type[Exception], ...] = (
    ParamError, UnknownParamError, SweepError, DataError, ClusterError,
)


@contextlib.contextmanager
def input_errors() -> Iterator[None]:
    """Turn the library's bad-input errors into a one-line UsageError."""
    try:
        yield
    except INPUT_ERRORS as error:
        raise UsageError(str(error)) from None


# ------------------------------------------------------------------ option types
def engine_count(text: str) -> int | str:
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


def walk_forward_lengths(text: str) -> tuple[int | str, int | str]:
    """argparse type of ``--walk-forward``: TRAIN:TEST lengths, each bars (an int) or a period.

    Examples
    --------
    >>> walk_forward_lengths("3Y:6M"), walk_forward_lengths("750:125")
    (('3Y', '6M'), (750, 125))
    """
    parts = text.split(":")
    if len(parts) != 2 or not all(part.strip() for part in parts):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not TRAIN:TEST: give two lengths such as 3Y:6M, 90D:30D or 750:125 (bars)")
    lengths = [part.strip() for part in parts]
    return tuple(int(p) if p.isdigit() else p for p in lengths)  # type: ignore[return-value]


def walk_forward_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """``walk_forward``'s window options when ``--walk-forward`` is given, else None.

    Raises a UsageError for the sweep options a walk-forward does not take.
    """
    if args.walk_forward is None:
        if args.anchored:
            raise UsageError("--anchored applies to a walk-forward: give --walk-forward TRAIN:TEST too")
        return None
    for option, value in (("--sample", args.sample), ("--symbols", args.symbols),
                          ("--stop-on-error", args.stop_on_error or None)):
        if value is not None:
            raise UsageError(f"{option} does not apply to --walk-forward (every fold runs every point"
                             " of one instrument)")
    train, test = args.walk_forward
    return {"train": train, "test": test, "anchored": args.anchored}


def _count(text: str) -> int:
    """argparse type of ``--min-trades``: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
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
def _options(*decorators: Decorator) -> Decorator:
    """One decorator applying ``decorators`` so that help lists them in the order given."""

    def apply(magic: Callable[..., Any]) -> Callable[..., Any]:
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
        " parameter, while a float one needs a step; at most"
        f" {MAX_RANGE_VALUES:,} values), a,b,c (numbers or strings) or one value",
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
        "--min-trades", type=_count, default=0, metavar="N",
        help="runs with fewer than N trades stay in the table but are never the best (default 0)",
    ),
    magic_arguments.argument(
        "--walk-forward", type=walk_forward_lengths, metavar="TRAIN:TEST",
        help="walk-forward analysis: choose the best point on each TRAIN window and test it on"
        " the TEST window after it, e.g. 3Y:6M, 90D:30D, or bars: 750:125",
    ),
    magic_arguments.argument(
        "--anchored", action="store_true",
        help="with --walk-forward: every training window starts at the data's first bar",
    ),
    magic_arguments.argument(
        "--engines", type=engine_count, metavar="N",
        help="engines to run on: N, -1 (every core) or auto; without a running cluster,"
        " N > 1 starts a local one (default: this process)",
    ),
    magic_arguments.argument(
        "--stop-on-error", action="store_true", help="stop at the first run that raises"
    ),
    magic_arguments.argument(
        "--resume", action="store_true",
        help="go on from the checkpoint in the save directory (--save DIR in a notebook,"
        " --out DIR on the command line): the points saved there do not run again",
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

#: ``--top``: in the magics' output group and on the command line.
top_option = magic_arguments.argument(
    "--top", type=_positive_int, metavar="K", help="show the table of the K best runs"
)

output_options = _options(
    magic_arguments.argument_group("output"),
    magic_arguments.argument(
        "--save", metavar="DIR", help="checkpoint the rows into DIR as they arrive"
    ),
    top_option,
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

    ``SPEC`` is a range ``start:stop:step`` in the one grid-range grammar of
    :mod:`nbbacktest.parallel.ranges` (stop excluded, like ``range``; the step may
    be left out when the Param declares one, or for ints; at most
    :data:`~nbbacktest.parallel.ranges.MAX_RANGE_VALUES` values), ``a,b,c``, or one
    value. Ranges are computed in decimal, so ``0.1:0.3:0.05`` gives exactly 0.1,
    0.15, 0.2 and 0.25. A str parameter takes ``:`` literally.

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
        try:
            values: list[Any] = GridRange.parse(text, param, label=label).values()
        except SweepError as error:
            raise UsageError(str(error)) from None
    else:
        items = [item.strip() for item in text.split(",")]
        for position, item in enumerate(items, 1):
            if not item:
                raise UsageError(f"{label}: item {position} of {text!r} is empty")
        values = [parse_scalar(item, param, label) for item in items]
    return [validated(value, param, owner, label) for value in values]




def parse_scalar(text: str, param: Param, label: str) -> Any:
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
    return as_number(value, param.type) if value.is_finite() else float(value)


def validated(value: Any, param: Param, owner: str, label: str) -> Any:
    try:
        return param.validate(value, owner)
    except ParamError as error:
        raise UsageError(f"{label}: {error}") from None


def assignments(items: list[str], option: str) -> dict[str, str]:
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


def declared_param(name: str, params: Mapping[str, Param], owner: str, option: str, text: str) -> Param:
    if name not in params:
        hint = did_you_mean(name, params)
        message = (f"Strategy {owner!r} has no parameter {name!r}.{hint}"
                   if hint else unknown_param_message(owner, name, params))
        raise UsageError(f"{option} {name}={text}: {message}")
    return params[name]




def add_options(parser: argparse.ArgumentParser, *groups: Decorator) -> None:
    """Add the option ``groups`` (``grid_options``, ``run_options``, ...) to a plain ``parser``.

    The command line's ``run`` takes the magics' options this way: one declaration
    serves both, so the two cannot drift apart.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_options(parser, grid_options, run_options)
    >>> parser.parse_args(["--grid", "fast=5:20:5", "--metric", "sortino"]).metric
    'sortino'
    """

    def declared() -> None:
        """Carries the groups' declarations (``magic_arguments`` records them here)."""

    for group in reversed(groups):
        group(declared)
    current = None
    # magic_arguments records decorators innermost first: reversed, they read top down.
    for declaration in reversed(declared.decorators):  # type: ignore[attr-defined]
        added = declaration.add_to_parser(parser, current)
        if added is not None:
            current = added


def parse_line(magic: Any, line: str) -> argparse.Namespace:
    """Split ``line`` like a shell does, then parse it with ``magic.parser``.

    ``magic`` is a magic method that ``magic_arguments`` gave its ``parser``.

    magic_arguments' own split keeps the quotes (``--where "fast < slow"`` would
    arrive as a quoted string literal) and cuts ``--where="a < b"`` in three.
    """
    try:
        words = shlex.split(line)
    except ValueError as error:  # an unclosed quote
        raise UsageError(f"cannot read the options: {error} in {line!r}") from None
    return magic.parser.parse_args(words)


def settings_from(args: argparse.Namespace) -> dict[str, Any]:
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


@dataclasses.dataclass(frozen=True)
class SweepInputs:
    """What the sweep options give: the strategy (with ``--set`` values), the grid and settings."""

    strategy: type[Strategy] | Strategy
    grid: dict[str, list[Any]]
    settings: dict[str, Any]


def sweep_inputs(strategy: type[Strategy] | Strategy, args: argparse.Namespace) -> SweepInputs:
    """Check and convert ``--grid``, ``--set`` and the simulation options for ``strategy``.

    The one conversion of the magics and of the command line's ``run``; every
    mistake is a one-line UsageError naming the option.

    Examples
    --------
    >>> from nbbacktest.engine.examples import SmaCross
    >>> parser = argparse.ArgumentParser()
    >>> add_options(parser, grid_options, settings_options)
    >>> inputs = sweep_inputs(SmaCross, parser.parse_args(
    ...     ["--grid", "fast=5:15:5", "--set", "slow=40", "--commission", "0.001"]))
    >>> inputs.strategy, inputs.grid, inputs.settings
    (SmaCross(fast=10, slow=40), {'fast': [5, 10]}, {'commission': 0.001})
    """
    cls = strategy if isinstance(strategy, type) else type(strategy)
    params = cls.params()
    owner = cls.__name__
    grid = {
        key: parse_grid_spec(key, spec, declared_param(key, params, owner, "--grid", spec), owner)
        for key, spec in assignments(args.grid, "--grid").items()
    }
    fixed: dict[str, Any] = {}
    for key, text in assignments(args.set, "--set").items():
        param = declared_param(key, params, owner, "--set", text)
        label = f"--set {key}={text}"
        fixed[key] = validated(parse_scalar(text.strip(), param, label), param, owner, label)
    both = sorted(fixed.keys() & grid.keys())
    if both:
        raise UsageError(f"{', '.join(both)} is both in --grid and in --set: keep one")
    settings = settings_from(args)
    if fixed:
        with input_errors():
            strategy = strategy.with_params(**fixed) if isinstance(strategy, Strategy) else cls(**fixed)
    return SweepInputs(strategy, grid, settings)
