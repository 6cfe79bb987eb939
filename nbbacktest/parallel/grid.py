"""Sweep planning: turn a grid, a filter and a sample size into the list of runs.

A :class:`Plan` is the ordered list of runs of a sweep (or of ``run_many``): for
each run the strategy class, its parameter values, its symbol and its seed. It is
built on the client, before anything runs, so that every bad argument fails fast
with a message that names it. Nothing here imports ipyparallel: planning is pure
and works (and is tested) in a plain script.

Run order ("grid order"): the cartesian product of the grid's values in the order
the grid lists its names (the first name varies slowest, like
``itertools.product``), then every symbol for each parameter point (symbols vary
fastest). Results are stored in this order whatever order they arrive in.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import functools
import itertools
import keyword
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from nbbacktest.engine.backtest import RunSeeds
from nbbacktest.engine.params import Param, unknown_param_message
from nbbacktest.engine.strategy import Strategy
from nbbacktest.errors import ParamError, SweepError, UnknownParamError

__all__ = ["MAX_RUNS", "MAX_SCANNED", "WHERE_BUILTINS", "Plan", "compile_where", "plan_instances", "plan_sweep"]

#: Most runs (parameter points times symbols) one sweep may hold. A plan keeps each
#: run's values and a sweep a row of stats per run: a million runs take about
#: 300 MB on the client, and at a typical 0.4 ms a run, seven minutes of one core.
#: A larger grid fails at once, before anything is expanded: sample it with ``n=``,
#: narrow its ranges, or split it into several sweeps.
MAX_RUNS = 1_000_000
#: Most grid points a ``where`` may test, one by one and without keeping the points
#: it drops: about ten seconds of a simple expression.
MAX_SCANNED = 20_000_000

#: The only builtins a ``where`` expression may call.
WHERE_BUILTINS: dict[str, Any] = {
    name: getattr(builtins, name)
    for name in ("abs", "min", "max", "round", "len", "int", "float", "bool", "str")
}

# str.format reaches attributes through its replacement fields ("{0.__class__}"),
# which the AST check below cannot see: keep those two methods out too.
_FORBIDDEN_ATTRIBUTES = frozenset({"format", "format_map"})
# Private names, and the generator/frame/traceback attributes that lead to the
# caller's globals. A guard against accidents, not a sandbox: the user owns the kernel.
_FORBIDDEN_PREFIXES = ("_", "gi_", "cr_", "ag_", "f_", "tb_")


@dataclass(frozen=True, eq=False)
class Plan:
    """The runs of a sweep (or of ``run_many``), in grid order.

    Run ``i`` is ``class_at(i)(**params(i))`` on symbol ``symbols[i]`` with seed
    ``seed_at(i)``. Per-run data is kept in flat lists of tuples (no dict per run),
    so 100,000 runs stay a few megabytes; the strategy classes are stored once.

    Attributes
    ----------
    classes : tuple of Strategy subclasses
        The distinct strategy classes, in order of first appearance. One class for
        a sweep; ``run_many`` over instances of several classes gives several.
    param_names : tuple of tuple of str
        ``param_names[k]``: every declared parameter of ``classes[k]``, in
        declaration order.
    values : list of tuple
        One tuple per run: all of its class's parameter values (defaults filled
        in), in ``param_names`` order. Runs of one point on several symbols share
        the same tuple object.
    symbols : list of str or None
        The symbol of each run; None for single-frame data.
    seed : int
        The sweep's seed. Run ``i``'s own seed, ``seed_at(i)``, is
        ``derive_seed(seed, params(i), symbols[i])``: it depends on the run alone,
        not on the rest of the grid. Engines derive the seeds of the runs they
        run; ``seeds`` lists them all (derived on first use).
    grid_size : int
        Runs of the grid before ``where`` and sampling (points x symbols).
    class_index : numpy.ndarray or None
        ``classes`` index of each run (int32), or None when there is one class.
    universe : tuple of str or None
        The symbols the runs were expanded over, or None.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class SmaCross(nbb.Strategy):
    ...     fast, slow = 10, 30
    >>> plan = plan_sweep(SmaCross, {"fast": [5, 10], "slow": 40}, symbols=["A", "B"])
    >>> len(plan), plan.params(1), plan.symbols[1]
    (4, {'fast': 5, 'slow': 40}, 'B')
    >>> plan.strategy_at(2)
    SmaCross(fast=10, slow=40)
    """

    classes: tuple[type[Strategy], ...]
    param_names: tuple[tuple[str, ...], ...]
    values: list[tuple]
    symbols: list[str | None]
    seed: int
    grid_size: int
    class_index: np.ndarray | None = None
    universe: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.values)

    @property
    def is_mixed(self) -> bool:
        """True when the runs use more than one strategy class."""
        return len(self.classes) > 1

    @property
    def strategy(self) -> type[Strategy]:
        """The strategy class of every run; SweepError when the plan mixes classes."""
        self._require_single("strategy")
        return self.classes[0]

    @property
    def names(self) -> tuple[str, ...]:
        """The parameter names of every run; SweepError when the plan mixes classes."""
        self._require_single("names")
        return self.param_names[0]

    def class_at(self, i: int) -> type[Strategy]:
        """The strategy class of run ``i``."""
        return self.classes[self._class_number(i)]

    def names_at(self, i: int) -> tuple[str, ...]:
        """The parameter names of run ``i``, in declaration order."""
        return self.param_names[self._class_number(i)]

    def params(self, i: int) -> dict[str, Any]:
        """The parameter values of run ``i`` as a dict, in declaration order."""
        return dict(zip(self.param_names[self._class_number(i)], self.values[i]))

    def seed_at(self, i: int) -> int:
        """The seed of run ``i``."""
        return RunSeeds(self.seed)(self.names_at(i), self.values[i], self.symbols[i])

    @functools.cached_property
    def seeds(self) -> list[int]:
        """The seed of every run, in run order."""
        seed_of = RunSeeds(self.seed)
        if self.class_index is None:
            names = self.param_names[0]
            return [seed_of(names, v, s) for v, s in zip(self.values, self.symbols)]
        return [seed_of(self.param_names[k], v, s)
                for k, v, s in zip(self.class_index.tolist(), self.values, self.symbols)]

    def strategy_at(self, i: int) -> Strategy:
        """The strategy instance of run ``i`` (values were validated while planning)."""
        return self.class_at(i)._from_values(self.params(i))

    def frame(self) -> pd.DataFrame:
        """One row per run, on a RangeIndex.

        One class: a column per declared parameter. Several classes: a
        ``strategy`` column (class name) and a ``params`` column (repr of the
        parameter dict). Either way a ``symbol`` column follows when the plan has
        symbols.
        """
        columns: dict[str, Any] = {}
        if self.is_mixed:
            columns["strategy"] = [self.class_at(i).__name__ for i in range(len(self))]
            columns["params"] = [repr(self.params(i)) for i in range(len(self))]
        else:
            names = self.param_names[0]
            by_column = list(zip(*self.values)) if self.values else [()] * len(names)
            columns.update(zip(names, (list(column) for column in by_column)))
        if self.universe is not None:
            columns["symbol"] = list(self.symbols)
        return pd.DataFrame(columns, index=pd.RangeIndex(len(self)))

    def subset(self, rows: Sequence[int] | np.ndarray) -> Plan:
        """A plan of the given runs only, in the order given, renumbered from 0.

        ``grid_size`` and ``universe`` are kept. The caller keeps the mapping from
        new to old row numbers (``rows`` itself), e.g. to resume a sweep.
        """
        index = np.asarray(rows)
        if index.size == 0:
            index = index.astype(np.intp)
        if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
            raise TypeError(f"rows must be a sequence of int run numbers, got {rows!r}")
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            bad = int(index[(index < 0) | (index >= len(self))][0])
            raise IndexError(f"rows contains {bad}, outside 0..{len(self) - 1}")
        picked = index.tolist()
        return Plan(
            classes=self.classes,
            param_names=self.param_names,
            values=[self.values[r] for r in picked],
            symbols=[self.symbols[r] for r in picked],
            seed=self.seed,
            grid_size=self.grid_size,
            class_index=None if self.class_index is None else self.class_index[index],
            universe=self.universe,
        )

    def __repr__(self) -> str:
        kinds = ", ".join(cls.__name__ for cls in self.classes)
        per = f" ({len(self.universe)} symbols)" if self.universe is not None else ""
        return f"<Plan {kinds}: {len(self)} runs{per}, grid of {self.grid_size}>"

    def _class_number(self, i: int) -> int:
        return 0 if self.class_index is None else int(self.class_index[i])

    def _require_single(self, what: str) -> None:
        if self.is_mixed:
            kinds = ", ".join(cls.__name__ for cls in self.classes)
            raise SweepError(
                f"Plan.{what} is undefined: the plan mixes {len(self.classes)} strategy"
                f" classes ({kinds}); use class_at(i), names_at(i) or params(i)"
            )


# --------------------------------------------------------------------------- sweeps
def plan_sweep(
    strategy: type[Strategy] | Strategy,
    grid: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    *,
    where: Callable[[SimpleNamespace], Any] | str | None = None,
    n: int | None = None,
    seed: int = 0,
    symbols: Sequence[str] | None = None,
) -> Plan:
    """Plan a parameter sweep: the grid, filtered by ``where``, sampled down to ``n``.

    Every argument is checked here, before anything runs.

    Parameters
    ----------
    strategy : Strategy subclass or instance
        The strategy to sweep. An instance's values are the defaults of the
        parameters the grid does not list.
    grid : dict or list of dicts, optional
        ``{name: values}``; a range, list, tuple, numpy array or pandas Index is a
        list of values, anything else (a str included) is one value. A list of
        dicts is the union of their grids, duplicate points removed (first kept).
        None or ``{}``: the single default point.
    where : callable or str, optional
        Keeps the points for which it is true. A callable gets a namespace whose
        attributes are all the point's parameters (``lambda p: p.fast < p.slow``);
        a str is an expression over the parameter names (``"fast < slow"``), see
        :func:`compile_where`. Applied once per parameter point, before symbols.
    n : int, optional
        Run a random sample of ``n`` parameter points (kept in grid order),
        drawn with ``numpy.random.default_rng(seed)``; all points if there are
        fewer.
    seed : int
        The sweep's seed: it drives the sample and every run's seed. numpy takes
        no negative seed, so a negative one is taken modulo 2**64 for the sample.
    symbols : sequence of str, optional
        Run every point on each of these symbols (symbols vary fastest).

    Returns
    -------
    Plan

    Raises
    ------
    TypeError
        ``strategy`` is not a Strategy; ``seed`` is not an int; a grid or
        ``where`` of the wrong type.
    UnknownParamError
        The grid or ``where`` names a parameter the strategy does not declare.
    ParamError
        A grid value is out of the parameter's type or range.
    SweepError
        An empty grid entry, bad ``n`` or ``symbols``, ``where`` failing or
        removing every point.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class SmaCross(nbb.Strategy):
    ...     fast = nbb.Param(10, low=2, high=100)
    ...     slow = nbb.Param(30, low=5, high=300)
    >>> plan = plan_sweep(SmaCross, {"fast": range(5, 60, 5), "slow": range(10, 200, 10)},
    ...                   where="fast < slow")
    >>> len(plan), plan.grid_size, plan.params(0)
    (179, 209, {'fast': 5, 'slow': 10})
    """
    cls, base = _resolve_strategy(strategy)
    seed = _check_seed(seed)
    n = _check_n(n)
    universe = _check_symbols(symbols)
    owner = cls.__name__
    declared = cls._params
    names = tuple(declared)

    subgrids = _normalise_grid(grid)
    test_point: Callable[[tuple], Any] | None = None
    if isinstance(where, str):
        compiled = _compile_where(where, names)
        if compiled.names == names:  # the fast path: no namespace per point
            positional = compiled.positional
            test_point = lambda point: positional(*point)  # noqa: E731
        else:
            test_point = _namespace_test(compiled, names)
    elif callable(where):
        test_point = _namespace_test(where, names)
    elif where is not None:
        raise TypeError(
            "where must be a callable (lambda p: p.fast < p.slow) or a str expression"
            f" ('fast < slow'), got {type(where).__name__} {where!r}"
        )

    products = [_Product.of(label, sub, declared, owner, base) for label, sub in subgrids]
    per_point = len(universe) if universe is not None else 1
    rng = np.random.default_rng(seed if seed >= 0 else seed % 2**64)
    if len(products) == 1:
        # Counted, sampled and filtered without expanding: a grid of 10**8 points
        # with n=10 or a narrow where costs what it keeps.
        product = products[0]
        grid_points = len(product)
        if test_point is None:
            taken = (n * per_point if n is not None and n < grid_points else grid_points * per_point)
            _check_runs(taken, product.describe(per_point))
            if n is not None and n < grid_points:
                chosen = np.sort(rng.choice(grid_points, size=n, replace=False))
                points = [product.point(i) for i in chosen.tolist()]
            else:
                points = product.points()
        else:
            if grid_points > MAX_SCANNED:
                raise SweepError(
                    f"the grid has {product.describe(1)}: too many for where to test (at most"
                    f" {MAX_SCANNED:,}); narrow the ranges, or sample without where (n=...)"
                )
            kept = _filter(product.iterate(), test_point, names,
                           limit=None if n is not None else MAX_RUNS // per_point)
            points = _after_where(kept, grid_points, where, per_point, n, rng, product.point)
    else:
        sizes = [len(product) for product in products]
        _check_runs(sum(sizes) * per_point, " + ".join(f"{size:,}" for size in sizes)
                    + " points" + (f" x {per_point} symbols" if per_point > 1 else ""))
        # One dict: values are de-duplicated per name, so the product has no repeats.
        points = list(dict.fromkeys(itertools.chain(*(p.points() for p in products))))
        grid_points = len(points)
        if test_point is not None:
            kept = _filter(enumerate(points), test_point, names,
                           limit=None if n is not None else MAX_RUNS // per_point)
            points = _after_where(kept, grid_points, where, per_point, n, rng, points.__getitem__)
        elif n is not None and n < len(points):
            chosen = np.sort(rng.choice(len(points), size=n, replace=False))
            points = [points[i] for i in chosen.tolist()]

    return _build(
        (cls,), (names,), points, None, seed, universe, grid_size=grid_points * per_point
    )


def _after_where(kept: list[int] | list[tuple], grid_points: int, where: Any, per_point: int,
                 n: int | None, rng: np.random.Generator,
                 point_at: Callable[[int], tuple]) -> list[tuple]:
    """The points ``where`` kept (their tuples, or their grid positions when sampling)."""
    if not kept:
        shown = f" (where={where!r})" if isinstance(where, str) else ""
        raise SweepError(f"where filtered out all {grid_points} points of the grid{shown}")
    if n is None:
        return kept  # type: ignore[return-value]
    if n < len(kept):
        chosen = np.sort(rng.choice(len(kept), size=n, replace=False))
        kept = [kept[i] for i in chosen.tolist()]  # type: ignore[misc]
    _check_runs(len(kept) * per_point, f"{len(kept):,} points after where")
    return [point_at(i) for i in kept]  # type: ignore[arg-type]


def _check_runs(runs: int, described: str) -> None:
    if runs > MAX_RUNS:
        raise SweepError(
            f"the sweep would hold {runs:,} runs ({described}), over the limit of {MAX_RUNS:,}:"
            " sample it with n=..., narrow the ranges, or split the grid into several sweeps"
        )


@dataclass(frozen=True)
class _Product:
    """One grid dict's cartesian product, counted and indexed without expanding it.

    ``lists`` are the values in the grid's order (its names first, then the
    parameters it leaves at their defaults); a point is a tuple in declaration
    order. Point ``i`` is the ``i``-th of ``itertools.product(*lists)``.
    """

    lists: tuple[list[Any], ...]
    reorder: Callable[[tuple], tuple] | None  #: grid order -> declaration order
    keys: tuple[str, ...]

    @classmethod
    def of(cls, label: str, grid: Mapping[str, Any], declared: Mapping[str, Param], owner: str,
           base: Mapping[str, Any]) -> _Product:
        names = list(declared)
        keys: list[str] = []
        lists: list[list[Any]] = []
        for key, raw in grid.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{label} keys must be parameter names (str), got {type(key).__name__} {key!r}"
                )
            if key not in declared:
                raise UnknownParamError(unknown_param_message(owner, key, names))
            keys.append(key)
            lists.append(_grid_values(f"{label}[{key!r}]", raw, declared[key], owner))
        rest = [name for name in names if name not in grid]
        order = keys + rest
        lists += [[base[name]] for name in rest]
        reorder = None
        if order != names and len(names) >= 2:
            getter = operator.itemgetter(*(order.index(name) for name in names))
            reorder = getter
        return cls(tuple(lists), reorder, tuple(keys))

    def __len__(self) -> int:
        return int(np.prod([len(values) for values in self.lists], dtype=object))

    def describe(self, per_point: int) -> str:
        sizes = " x ".join(f"{len(values):,}" for values, _ in zip(self.lists, self.keys))
        shown = f"{len(self):,} points" + (f" ({sizes})" if len(self.keys) > 1 else "")
        return shown + (f" x {per_point} symbols" if per_point > 1 else "")

    def iterate(self) -> Iterable[tuple[int, tuple]]:
        """(position, point) for every point, in grid order, made one at a time."""
        product = itertools.product(*self.lists)
        if self.reorder is not None:
            product = map(self.reorder, product)
        return enumerate(product)

    def points(self) -> list[tuple]:
        product = itertools.product(*self.lists)
        return list(product) if self.reorder is None else list(map(self.reorder, product))

    def point(self, i: int) -> tuple:
        """Point ``i`` of the product (the last list varies fastest)."""
        values = []
        for candidates in reversed(self.lists):
            i, at = divmod(i, len(candidates))
            values.append(candidates[at])
        point = tuple(reversed(values))
        return point if self.reorder is None else self.reorder(point)


def plan_instances(
    instances: Iterable[Strategy], *, seed: int = 0, symbols: Sequence[str] | None = None
) -> Plan:
    """Plan ``run_many``: one run per instance (and symbol), instances of any classes.

    Parameters
    ----------
    instances : iterable of Strategy
        The instances to run, in order; duplicates are kept.
    seed : int
        The base seed of every run's seed.
    symbols : sequence of str, optional
        Run every instance on each of these symbols (symbols vary fastest).

    Returns
    -------
    Plan
        Its ``classes`` are the distinct classes in order of first appearance.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class SmaCross(nbb.Strategy):
    ...     fast, slow = 10, 30
    >>> class Breakout(nbb.Strategy):
    ...     lookback = 20
    >>> plan = plan_instances([SmaCross(5, 50), Breakout(10)])
    >>> [s.__name__ for s in plan.classes], plan.strategy_at(1)
    (['SmaCross', 'Breakout'], Breakout(lookback=10))
    """
    if isinstance(instances, Strategy) or (
        isinstance(instances, type) and issubclass(instances, Strategy)
    ):
        raise TypeError(
            f"instances must be a list of Strategy instances, got {instances!r}:"
            " wrap it in a list"
        )
    if isinstance(instances, (str, bytes, Mapping)) or not isinstance(instances, Iterable):
        raise TypeError(
            f"instances must be a list of Strategy instances, got {type(instances).__name__}"
        )
    items = list(instances)
    seed = _check_seed(seed)
    universe = _check_symbols(symbols)
    if not items:
        raise SweepError("instances is empty: give at least one Strategy instance")
    classes: dict[type[Strategy], int] = {}
    class_numbers: list[int] = []
    points: list[tuple] = []
    for position, item in enumerate(items):
        if isinstance(item, type) and issubclass(item, Strategy):
            raise TypeError(
                f"instances[{position}] is the class {item.__name__}, not an instance:"
                f" call it, e.g. {item.__name__}()"
            )
        if not isinstance(item, Strategy):
            raise TypeError(
                f"instances[{position}] must be a Strategy instance, got"
                f" {type(item).__name__} {_short_repr(item)}"
            )
        class_numbers.append(classes.setdefault(type(item), len(classes)))
        points.append(tuple(item.param_values.values()))
    kinds = tuple(classes)
    names = tuple(tuple(kind._params) for kind in kinds)
    per_point = len(universe) if universe is not None else 1
    index = None
    if len(kinds) > 1:
        index = np.repeat(np.asarray(class_numbers, dtype=np.int32), per_point)
    return _build(
        kinds, names, points, index, seed, universe, grid_size=len(points) * per_point
    )


def _build(
    classes: tuple[type[Strategy], ...],
    names: tuple[tuple[str, ...], ...],
    points: list[tuple],
    class_index: np.ndarray | None,
    seed: int,
    universe: tuple[str, ...] | None,
    *,
    grid_size: int,
) -> Plan:
    """Expand points over symbols (fastest)."""
    if universe is None:
        values = points
        run_symbols: list[str | None] = [None] * len(points)
    else:
        width = len(universe)
        values = [p for p in points for _ in range(width)]
        run_symbols = list(universe) * len(points)
    return Plan(
        classes=classes,
        param_names=names,
        values=values,
        symbols=run_symbols,
        seed=seed,
        grid_size=grid_size,
        class_index=class_index,
        universe=universe,
    )


# ----------------------------------------------------------------- argument checks
def _resolve_strategy(strategy: Any) -> tuple[type[Strategy], dict[str, Any]]:
    if isinstance(strategy, Strategy):
        return type(strategy), strategy.param_values
    if isinstance(strategy, type) and issubclass(strategy, Strategy) and strategy is not Strategy:
        return strategy, {name: p.default for name, p in strategy._params.items()}
    raise TypeError(
        "strategy must be a Strategy subclass (or an instance of one), got"
        f" {_short_repr(strategy)}"
    )


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    return int(seed)


def _check_n(n: Any) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SweepError(
            f"n must be a positive int (the number of points to sample), got"
            f" {type(n).__name__} {n!r}"
        )
    return int(n)


def _check_symbols(symbols: Any) -> tuple[str, ...] | None:
    if symbols is None:
        return None
    if isinstance(symbols, (str, bytes)):
        raise SweepError(f"symbols must be a list of symbols, not one str: use [{symbols!r}]")
    if isinstance(symbols, Mapping) or not isinstance(symbols, Iterable):
        raise SweepError(
            f"symbols must be a list of str, got {type(symbols).__name__} {_short_repr(symbols)}"
        )
    universe = tuple(symbols)
    if not universe:
        raise SweepError("symbols is empty: give at least one symbol, or None")
    for position, symbol in enumerate(universe):
        if not isinstance(symbol, str):
            raise SweepError(
                f"symbols[{position}] must be a str, got {type(symbol).__name__} {symbol!r}"
            )
    if len(set(universe)) != len(universe):
        repeated = sorted({s for s in universe if universe.count(s) > 1})
        raise SweepError(f"symbols must be unique; repeated: {', '.join(repeated)}")
    return tuple(str(s) for s in universe)  # numpy str_ -> str, for stable reprs and seeds


def _normalise_grid(grid: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """The sub-grids with the label of each in messages: ``grid`` or ``grid[1]``."""
    if grid is None:
        return [("grid", {})]
    if isinstance(grid, Mapping):
        return [("grid", grid)]
    if isinstance(grid, (list, tuple)):
        if not grid:
            raise SweepError(
                "grid is an empty list: give at least one dict, or None for the default point"
            )
        for position, sub in enumerate(grid):
            if not isinstance(sub, Mapping):
                raise TypeError(
                    f"grid[{position}] must be a dict of parameter values, got"
                    f" {type(sub).__name__} {_short_repr(sub)}"
                )
        return [(f"grid[{position}]", sub) for position, sub in enumerate(grid)]
    raise TypeError(
        "grid must be a dict {name: values} or a list of such dicts, got"
        f" {type(grid).__name__} {_short_repr(grid)}"
    )


def _grid_values(label: str, raw: Any, param: Param, owner: str) -> list[Any]:
    """The validated, de-duplicated values of one grid entry."""
    if isinstance(raw, (str, bytes, np.generic)) or not isinstance(raw, Iterable):
        items = [raw]
    elif isinstance(raw, Mapping):
        raise TypeError(f"{label} is a {type(raw).__name__}: give a list of values")
    elif isinstance(raw, (set, frozenset)):
        raise TypeError(
            f"{label} is a set, whose order is arbitrary: give a list, e.g. sorted(...)"
        )
    elif isinstance(raw, np.ndarray) and raw.ndim != 1:
        if raw.ndim != 0:
            raise SweepError(f"{label} must be one-dimensional, got shape {raw.shape}")
        items = [raw.item()]
    else:
        items = list(raw)
        if not items:
            raise SweepError(f"{label} is empty")
    try:
        validated = [param.validate(value, owner) for value in items]
    except ParamError as error:
        raise ParamError(f"{error} (in {label})") from None
    return list(dict.fromkeys(validated))


def _namespace_test(
    where: Callable[[SimpleNamespace], Any], names: tuple[str, ...]
) -> Callable[[tuple], Any]:
    """``where`` applied to a point tuple through a namespace of its params."""
    return lambda point: where(SimpleNamespace(**dict(zip(names, point))))


def _filter(
    points: Iterable[tuple[int, tuple]], test: Callable[[tuple], Any], names: tuple[str, ...],
    limit: int | None,
) -> list[tuple] | list[int]:
    """The points ``test`` keeps; their positions instead when ``limit`` is None (to
    sample from, 8 bytes each), else the points, failing once more than ``limit`` pass."""
    kept: list[Any] = []
    for position, point in points:
        try:
            keep = bool(test(point))
        except (AttributeError, NameError) as error:
            missing = getattr(error, "name", None)
            # Only a lookup on our namespace (or of a free name) means a typo'd param.
            is_ours = isinstance(error, NameError) or isinstance(
                getattr(error, "obj", None), SimpleNamespace
            )
            if missing and is_ours and missing not in names:
                raise UnknownParamError(_unknown_where_name(missing, names)) from error
            raise _where_failed(error, names, point) from error
        except Exception as error:
            raise _where_failed(error, names, point) from error
        if keep:
            if limit is None:
                kept.append(position)
            elif len(kept) < limit:
                kept.append(point)
            else:
                raise SweepError(
                    f"more than {limit:,} points pass where, over the limit of {MAX_RUNS:,}"
                    " runs a sweep holds: sample them with n=..., narrow the ranges or where,"
                    " or split the grid into several sweeps"
                )
    return kept


def _where_failed(error: Exception, names: tuple[str, ...], point: tuple) -> SweepError:
    params = dict(zip(names, point))
    return SweepError(f"where raised {type(error).__name__} for point {params}: {error}")


def _unknown_where_name(name: str, names: Iterable[str]) -> str:
    known = list(names)
    message = f"where refers to unknown parameter {name!r}."
    close = difflib.get_close_matches(name, known, n=3)
    if close:
        return f"{message} Did you mean: {', '.join(close)}?"
    if known:
        return f"{message} The parameters are: {', '.join(known)}."
    return f"{message} The strategy declares no parameters."


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------ where strings
class _CompiledWhere:
    """A checked ``where`` expression; call it with a namespace of parameters."""

    __slots__ = ("expression", "names", "positional")

    def __init__(
        self, expression: str, names: tuple[str, ...], positional: Callable[..., Any]
    ) -> None:
        self.expression = expression
        self.names = names
        # The expression as a function of the params in ``names`` order: the sweep
        # calls it with each point's tuple and builds no namespace.
        self.positional = positional

    def __call__(self, point: SimpleNamespace) -> bool:
        return bool(self.positional(*[getattr(point, name) for name in self.names]))

    def __repr__(self) -> str:
        return f"<where {self.expression!r}>"


def compile_where(expression: str, names: Iterable[str]) -> Callable[[SimpleNamespace], bool]:
    """Compile a ``where`` expression over parameter names into a point filter.

    The expression sees the parameters and the builtins in
    :data:`WHERE_BUILTINS` only (abs, min, max, round, len, int, float, bool,
    str): no other builtin, no import, no attribute whose name starts with an
    underscore, no ``str.format`` and no generator or frame attributes. This
    guards against accidents; it is not a sandbox. Every problem is reported
    here, before the sweep runs.

    Parameters
    ----------
    expression : str
        A Python expression, e.g. ``"fast < slow and slow - fast >= 10"``.
    names : iterable of str
        The parameter names the expression may use.

    Returns
    -------
    callable
        Takes a namespace whose attributes are the parameters; returns a bool.

    Raises
    ------
    SweepError
        A syntax error, a forbidden name or attribute.
    UnknownParamError
        A name that is neither a parameter nor an allowed builtin.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> keep = compile_where("fast < slow", ["fast", "slow"])
    >>> keep(SimpleNamespace(fast=5, slow=10)), keep(SimpleNamespace(fast=50, slow=10))
    (True, False)
    """
    return _compile_where(expression, names)


def _compile_where(expression: str, names: Iterable[str]) -> _CompiledWhere:
    if not isinstance(expression, str):
        raise TypeError(f"where must be a str expression, got {type(expression).__name__}")
    params = tuple(dict.fromkeys(names))
    text = expression.strip()
    if not text:
        raise SweepError("where is an empty expression: give e.g. 'fast < slow', or None")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as error:
        column = max((error.offset or 1) - 1, 0)
        raise SweepError(
            f"where={expression!r} is not a valid expression: {error.msg}\n"
            f"    {text}\n    {' ' * column}^"
        ) from None
    _check_where_tree(tree, expression, params)
    usable = [name for name in params if name.isidentifier() and not keyword.iskeyword(name)]
    arguments = ast.arguments(
        posonlyargs=[],
        args=[ast.arg(arg=name) for name in usable],
        vararg=None,
        kwonlyargs=[],
        kw_defaults=[],
        kwarg=None,
        defaults=[],
    )
    # A lambda over the params (not eval with a locals dict): comprehensions in the
    # expression then see the params through closures.
    function = ast.Expression(body=ast.Lambda(args=arguments, body=tree.body))
    ast.fix_missing_locations(function)
    code = compile(function, "<where>", "eval")
    positional = eval(code, {"__builtins__": dict(WHERE_BUILTINS)})  # noqa: S307 - checked above
    return _CompiledWhere(expression, tuple(usable), positional)


def _check_where_tree(tree: ast.Expression, expression: str, params: tuple[str, ...]) -> None:
    allowed = ", ".join(WHERE_BUILTINS)
    # Names the expression binds itself: comprehension targets, lambda arguments, :=.
    bound = {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    bound |= {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (
            node.attr.startswith(_FORBIDDEN_PREFIXES) or node.attr in _FORBIDDEN_ATTRIBUTES
        ):
            raise SweepError(
                f"where={expression!r} may not use the attribute {node.attr!r}: it sees"
                f" only the parameters and {allowed}"
            )
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            name = node.id
            if name in params or name in bound or name in WHERE_BUILTINS:
                continue
            if name.startswith("_") or hasattr(builtins, name):
                raise SweepError(
                    f"where={expression!r} may not use {name!r}: it sees only the"
                    f" parameters and {allowed}"
                )
            raise UnknownParamError(_unknown_where_name(name, params))
