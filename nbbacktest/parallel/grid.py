"""Sweep planning: turn a grid, a filter and a sample size into the list of runs.

:func:`plan_sweep` and :func:`plan_instances` make a :class:`~nbbacktest.parallel.plan.Plan`,
the ordered list of runs of a sweep (or of ``run_many``): for each run the
strategy class, its parameter values, its symbol and its seed. It is built on
the client, before anything runs, so that every bad argument fails fast with a
message that names it. Nothing here imports ipyparallel: planning is pure and
works (and is tested) in a plain script.

The parts planning uses live next to it: :class:`~nbbacktest.parallel.plan.Plan`
in ``plan.py`` and the ``where`` compiler in ``where.py`` (both importable from
here, as before); the ``start:stop:step`` grammar of grid ranges in ``ranges.py``.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from nbbacktest.engine.params import Param, unknown_param_message
from nbbacktest.engine.strategy import Strategy, resolve_strategy
from nbbacktest.errors import ParamError, SweepError, UnknownParamError
from nbbacktest.parallel.plan import Plan
from nbbacktest.parallel.where import WHERE_BUILTINS, callable_text, compile_where, unknown_where_name

__all__ = [
    "MAX_RUNS", "MAX_SCANNED", "WHERE_BUILTINS", "Plan", "compile_where", "plan_instances", "plan_sweep",
]

#: Most runs (parameter points times symbols) one sweep may hold. A plan keeps each
#: run's values and a sweep a row of stats per run: a million runs take about
#: 300 MB on the client, and at a typical 0.4 ms a run, seven minutes of one core.
#: A larger grid fails at once, before anything is expanded: sample it with ``n=``,
#: narrow its ranges, or split it into several sweeps.
MAX_RUNS = 1_000_000
#: Most grid points a ``where`` may test, one by one and without keeping the points
#: it drops: about ten seconds of a simple expression.
MAX_SCANNED = 20_000_000


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
    cls, instance = resolve_strategy(strategy)
    base = instance.param_values
    seed = _check_seed(seed)
    n = _check_n(n)
    universe = _check_symbols(symbols)
    owner = cls.__name__
    declared = cls._params
    names = tuple(declared)

    subgrids = _normalise_grid(grid)
    test_point: Callable[[tuple], Any] | None = None
    if isinstance(where, str):
        compiled = compile_where(where, names)
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

    given = tuple({key: tuple(values) for key, values in zip(p.keys, p.lists)} for p in products)
    return _build(
        (cls,), (names,), points, None, seed, universe, grid_size=grid_points * per_point,
        grid=given, where=None if where is None else callable_text(where), sample=n,
    )


def _after_where(kept: list[Any], grid_points: int, where: Any, per_point: int,
                 n: int | None, rng: np.random.Generator,
                 point_at: Callable[[int], tuple]) -> list[tuple]:
    """The points ``where`` kept: ``kept`` holds their tuples, or their grid positions when
    sampling (``n`` given), as :func:`_filter` returns them."""
    if not kept:
        shown = f" (where={where!r})" if isinstance(where, str) else ""
        raise SweepError(f"where filtered out all {grid_points} points of the grid{shown}")
    if n is None:
        return kept
    if n < len(kept):
        chosen = np.sort(rng.choice(len(kept), size=n, replace=False))
        kept = [kept[i] for i in chosen.tolist()]
    _check_runs(len(kept) * per_point, f"{len(kept):,} points after where")
    return [point_at(i) for i in kept]


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
        product: Iterable[tuple] = itertools.product(*self.lists)
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
    grid: tuple[dict[str, tuple[Any, ...]], ...] | None = None,
    where: str | None = None,
    sample: int | None = None,
) -> Plan:
    """Expand points over symbols (fastest); ``grid``, ``where`` and ``sample`` are kept as given."""
    if universe is None:
        values = points
        run_symbols: list[str | None] = [None] * len(points)
    else:
        width = len(universe)
        values = [p for p in points for _ in range(width)]
        run_symbols = [*universe] * len(points)
    return Plan(
        classes=classes,
        param_names=names,
        values=values,
        symbols=run_symbols,
        seed=seed,
        grid_size=grid_size,
        class_index=class_index,
        universe=universe,
        grid=grid,
        where=where,
        sample=sample,
    )


# ----------------------------------------------------------------- argument checks
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
                raise UnknownParamError(unknown_where_name(missing, names)) from error
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


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

