"""A sweep's rows in every form: the stat schema, the wire columns, the store, the saved line.

One run's stats leave the simulator as a dict (:func:`nbbacktest.engine.metrics.summarize`)
and take these forms on their way to the results table:

- :class:`StatSchema`: which stats there are and how each is kept, read from
  :mod:`nbbacktest.engine.metrics` (``STAT_LABELS`` and ``STAT_KINDS``) when a sweep
  starts, so that a stat added there reaches the table, the checkpoint and a resume
  with no edit here;
- :class:`Rows`: a chunk's runs as they travel from an engine, a column per kind of
  stat (a few numpy arrays pickle in microseconds where a thousand tuples of Python
  floats take a millisecond each way), built by :class:`RowsBuilder`;
- :class:`RowStore`: every run of a sweep in grid order, with its status, error,
  engine, host and time, the best run by the metric, the table and one row's dict;
- the saved line: one JSON line of a checkpoint's ``rows.jsonl`` per run
  (:func:`saved_line` and :func:`parse_saved_line`), floats exact to the bit.

Examples
--------
>>> schema = StatSchema.current()
>>> "sharpe" in schema.floats, schema.ints, "max_drawdown_duration" in schema.durations
(True, ('trades',), True)
"""

from __future__ import annotations

import functools
import json
import math
import operator
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from nbbacktest.engine import metrics

if TYPE_CHECKING:
    from nbbacktest.parallel.grid import Plan
    from nbbacktest.parallel.run_returns import ChunkReturns, ReturnsCollector

#: The int64 that stands for "no value" in a nanoseconds column (NaT).
NAT = np.iinfo(np.int64).min

# Row states.
PENDING, DONE, FAILED, CANCELLED = 0, 1, 2, 3
STATUS_NAMES = np.array(["pending", "done", "failed", "cancelled"], dtype=object)

#: Columns after the params and stats in a sweep's table (``too_few_trades`` only
#: when the sweep has a ``min_trades``).
RUN_COLUMNS = ("error", "traceback", "engine", "host", "seconds", "status", "too_few_trades")

#: One error as it travels: (type name, message, traceback text).
ErrorInfo = tuple[str, str, str]
#: One saved run: (row, stats or None, error or None, seconds, engine, host).
SavedRow = tuple[int, "dict[str, Any] | None", "ErrorInfo | None", float, int, "str | None"]


def _values(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A getter of ``names``' values as a tuple (``itemgetter`` of one name gives a bare value)."""
    if not names:
        return lambda stats: ()
    if len(names) == 1:
        name = names[0]
        return lambda stats: (stats[name],)
    return operator.itemgetter(*names)


@dataclass(frozen=True)
class StatSchema:
    """The stats of a run and how a sweep keeps each: its kind in ``metrics.STAT_KINDS``.

    ``floats`` are float64 columns, ``ints`` int64 ones (NaN once a row is not
    done), ``durations`` int64 nanoseconds (NaT), ``per_data`` are kept once per
    data set (start, end, duration: the same for every run on it), ``objects`` as
    they are. The engines get the schema with the job, so both ends agree on the
    columns.

    Examples
    --------
    >>> schema = StatSchema.current()
    >>> schema.per_data, schema.names == metrics.STAT_NAMES
    (('start', 'end', 'duration'), True)
    """

    names: tuple[str, ...]
    floats: tuple[str, ...]
    ints: tuple[str, ...]
    durations: tuple[str, ...]
    per_data: tuple[str, ...]
    objects: tuple[str, ...]

    @classmethod
    def current(cls) -> StatSchema:
        """The schema of the stats :mod:`nbbacktest.engine.metrics` declares now."""
        kinds = metrics.STAT_KINDS
        names = tuple(metrics.STAT_LABELS)
        return _schema(names, tuple(kinds.get(name, "float") for name in names))

    @classmethod
    def portfolio(cls) -> StatSchema:
        """A portfolio strategy's stats: the above plus turnover, legs and IC.

        >>> "ic_mean" in StatSchema.portfolio().numeric, "ic_mean" in StatSchema.current().numeric
        (True, False)
        """
        kinds = metrics.STAT_KINDS
        names = metrics.PORTFOLIO_STAT_NAMES
        return _schema(names, tuple(kinds.get(name, "float") for name in names))

    @property
    def numeric(self) -> tuple[str, ...]:
        """The stats a sweep can rank by, in table order."""
        return tuple(n for n in self.names if n in self.floats or n in self.ints)

    @functools.cached_property
    def getters(self) -> tuple[Callable[[Mapping[str, Any]], tuple[Any, ...]], ...]:
        """Getters of a stats dict's floats, ints, durations, per-data and object values."""
        return tuple(_values(names) for names in
                     (self.floats, self.ints, self.durations, self.per_data, self.objects))

    def metric_column(self, metric: str) -> tuple[str, int]:
        """Where ``metric``'s values are kept: ("floats" or "ints", column)."""
        if metric in self.floats:
            return "floats", self.floats.index(metric)
        return "ints", self.ints.index(metric)


@functools.lru_cache(maxsize=8)
def _schema(names: tuple[str, ...], kinds: tuple[str, ...]) -> StatSchema:
    unknown = sorted({k for k in kinds if k not in ("float", "int", "timedelta", "data", "object")})
    if unknown:
        raise ValueError(f"metrics.STAT_KINDS has unknown kinds {unknown}")

    def of(kind: str) -> tuple[str, ...]:
        return tuple(name for name, k in zip(names, kinds) if k == kind)

    return StatSchema(names, of("float"), of("int"), of("timedelta"), of("data"), of("object"))


class Rows(NamedTuple):
    """The rows of a chunk as they travel: a column per kind of stat, not a tuple per row.

    Row ``k`` is run ``rows[k]``; a failed run has NaN floats, zero ints, NaT
    durations and its error in ``errors``.

    Examples
    --------
    >>> rows = Rows.empty()
    >>> len(rows.rows), rows.errors
    (0, {})
    """

    rows: np.ndarray  #: int64 run numbers, in the order they ran
    floats: np.ndarray  #: float64, one row per run, schema.floats order
    ints: np.ndarray  #: int64, one row per run: schema.ints then schema.durations (ns)
    objects: list[tuple[Any, ...]] | None  #: schema.objects values per run (None: no such stat)
    seconds: np.ndarray  #: float64 run time
    errors: dict[int, ErrorInfo]  #: run number -> (type, message, traceback)
    per_data: dict[str | None, tuple[Any, ...]]  #: symbol -> schema.per_data values
    returns: ChunkReturns | None = None  #: the returns of the runs that keep them (run_returns.py)

    @classmethod
    def empty(cls, schema: StatSchema | None = None) -> Rows:
        """No rows (a task that came back with nothing)."""
        return RowsBuilder(schema or StatSchema.current()).build()

    def without(self, runs: Iterable[int]) -> Rows:
        """These rows less ``runs`` (as if those had not run).

        Examples
        --------
        >>> builder = RowsBuilder(StatSchema.current())
        >>> builder.failed(3, ("KeyError", "'k'", ""), 0.1)
        >>> builder.failed(4, ("ValueError", "x", ""), 0.1)
        >>> left = builder.build().without([3])
        >>> left.rows.tolist(), list(left.errors)
        ([4], [4])
        """
        drop = set(runs)
        keep = ~np.isin(self.rows, list(drop))
        objects = None if self.objects is None else [o for o, k in zip(self.objects, keep.tolist()) if k]
        return self._replace(rows=self.rows[keep], floats=self.floats[keep], ints=self.ints[keep],
                             objects=objects, seconds=self.seconds[keep],
                             errors={r: e for r, e in self.errors.items() if r not in drop},
                             returns=None if self.returns is None else self.returns.without(drop))


class RowsBuilder:
    """Collects a chunk's runs one by one and builds their :class:`Rows`."""

    __slots__ = ("schema", "rows", "floats", "ints", "objects", "seconds", "errors", "per_data",
                 "_failed_floats", "_failed_ints", "returns")

    def __init__(self, schema: StatSchema, returns: ReturnsCollector | None = None) -> None:
        self.schema = schema
        self.returns = returns  # the chunk's kept returns, filled by the worker
        self.rows: list[int] = []
        self.floats: list[float] = []  # flat: one run's float values after another's
        self.ints: list[int] = []  # flat, as floats
        self.objects: list[tuple[Any, ...]] | None = [] if schema.objects else None
        self.seconds: list[float] = []
        self.errors: dict[int, ErrorInfo] = {}
        self.per_data: dict[str | None, tuple[Any, ...]] = {}
        self._failed_floats = (math.nan,) * len(schema.floats)
        self._failed_ints = (0,) * len(schema.ints) + (NAT,) * len(schema.durations)

    def ok(self, row: int, stats: Mapping[str, Any], symbol: str | None, seconds: float) -> None:
        """Run ``row`` finished with ``stats`` in ``seconds``."""
        floats, ints, durations, per_data, objects = self.schema.getters
        self.rows.append(row)
        self.floats.extend(floats(stats))
        self.ints.extend(ints(stats))
        # NaT.value is NAT; None is a duration a saved line had no value for.
        self.ints.extend(NAT if value is None else value.value for value in durations(stats))
        if self.objects is not None:
            self.objects.append(objects(stats))
        self.seconds.append(seconds)
        if symbol not in self.per_data:
            self.per_data[symbol] = per_data(stats)

    def failed(self, row: int, error: ErrorInfo, seconds: float) -> None:
        """Run ``row`` raised ``error`` after ``seconds``."""
        self.rows.append(row)
        self.floats.extend(self._failed_floats)
        self.ints.extend(self._failed_ints)
        if self.objects is not None:
            self.objects.append((None,) * len(self.schema.objects))
        self.seconds.append(seconds)
        self.errors[row] = error

    def build(self) -> Rows:
        """The runs collected so far, as columns."""
        n = len(self.rows)
        schema = self.schema
        return Rows(
            np.array(self.rows, dtype=np.int64),
            np.array(self.floats, dtype=np.float64).reshape(n, len(schema.floats)),
            np.array(self.ints, dtype=np.int64).reshape(n, len(schema.ints) + len(schema.durations)),
            self.objects,
            np.array(self.seconds, dtype=np.float64),
            self.errors,
            self.per_data,
            None if self.returns is None else self.returns.build(),
        )


def row_params(plan: Plan, i: int) -> dict[str, Any]:
    """The plan columns of row ``i`` (params, or strategy and params; then symbol).

    Examples
    --------
    >>> from nbbacktest.engine.examples import SmaCross
    >>> from nbbacktest.parallel.grid import plan_sweep
    >>> row_params(plan_sweep(SmaCross, {"fast": [5, 10]}), 1)
    {'fast': 10, 'slow': 30}
    """
    if plan.is_mixed:
        out: dict[str, Any] = {"strategy": plan.class_at(i).__name__, "params": repr(plan.params(i))}
    else:
        out = plan.params(i)
    if plan.universe is not None:
        out["symbol"] = plan.symbols[i]
    return out


def describe_row(plan: Plan, i: int) -> str:
    """Row ``i``'s params as ``name=value, ...`` (and its symbol)."""
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                     for k, v in row_params(plan, i).items())


class Best:
    """The best value of the metric so far and its row: the one comparison of the package.

    The first of equal values wins, in the order they are offered; NaN never wins.

    Examples
    --------
    >>> best = Best(maximize=True)
    >>> best.offer(1.5, 3), best.offer(float("nan"), 4), best.offer(1.5, 5), best.index
    (True, False, False, 3)
    """

    __slots__ = ("maximize", "value", "index")

    def __init__(self, maximize: bool, value: float = math.nan, index: int | None = None) -> None:
        self.maximize = maximize
        self.value = value
        self.index = index

    def offer(self, value: float, index: int) -> bool:
        """Take ``value`` of row ``index`` if it beats the best; True when it does."""
        best = self.value
        if value != value or not (best != best or (value > best if self.maximize else value < best)):
            return False
        self.value, self.index = float(value), index
        return True

    def offer_many(self, values: np.ndarray, rows: np.ndarray) -> None:
        """:meth:`offer` the best of ``values`` (of ``rows``), as if one at a time."""
        if np.isnan(values).all():  # also no values at all
            return
        k = int(np.nanargmax(values) if self.maximize else np.nanargmin(values))
        self.offer(float(values[k]), int(rows[k]))


class RowStore:
    """Every run of a sweep in grid order: stats in columns, status, error, engine, host, time.

    Thread-safe: runners store chunks from their thread while the user reads.

    Examples
    --------
    >>> from nbbacktest.engine.examples import SmaCross
    >>> from nbbacktest.parallel.grid import plan_sweep
    >>> store = RowStore(plan_sweep(SmaCross, {"fast": [5, 10]}), StatSchema.current(), "trades", True)
    >>> builder = RowsBuilder(store.schema)
    >>> builder.failed(1, ("ValueError", "bad", "Traceback ..."), 0.01)
    >>> store.store(builder.build(), engine=0, host="h").tolist(), store.counts()  # positions kept
    ([0], (1, 1))
    >>> store.table()["status"].tolist()
    ['pending', 'failed']
    """

    def __init__(self, plan: Plan, schema: StatSchema, metric: str, maximize: bool,
                 min_trades: int = 0) -> None:
        self.plan = plan
        self.schema = schema
        self.metric_column = schema.metric_column(metric)
        #: Runs with fewer trades never become ``best`` (0: any run may).
        self.min_trades = min_trades
        total = len(plan)
        self.floats = np.full((total, len(schema.floats)), np.nan)
        self.ints = np.zeros((total, len(schema.ints) + len(schema.durations)), dtype=np.int64)
        self.ints[:, len(schema.ints):] = NAT
        self.objects: np.ndarray | None = (np.full((total, len(schema.objects)), None, dtype=object)
                                           if schema.objects else None)
        self.per_data: dict[str | None, tuple[Any, ...]] = {}
        self.errors: dict[int, ErrorInfo] = {}
        self.engine = np.full(total, -1, dtype=np.int64)
        self.host = np.full(total, None, dtype=object)
        self.seconds = np.full(total, np.nan)
        self.status = np.zeros(total, dtype=np.int8)
        self.best = Best(maximize)
        #: The first failed row in grid order (failures arrive in any order).
        self.first_error: int | None = None
        self.lock = threading.RLock()
        self._table: pd.DataFrame | None = None

    # ----------------------------------------------------------------- writing
    def store(self, rows: Rows, engine: int, host: str | None) -> np.ndarray:
        """Keep the runs of ``rows`` not finished before; returns their positions in ``rows``.

        A run can come back twice (a requeued chunk): the first one counts.
        """
        with self.lock:
            state = self.status[rows.rows]
            fresh = np.flatnonzero((state != DONE) & (state != FAILED))
            if len(fresh):
                self._keep(rows, fresh, engine, host)
            return fresh

    def _keep(self, rows: Rows, keep: np.ndarray, engine: int, host: str | None) -> None:
        index = rows.rows[keep]
        self.floats[index] = rows.floats[keep]
        self.ints[index] = rows.ints[keep]
        if self.objects is not None and rows.objects is not None:
            for k in keep.tolist():
                self.objects[rows.rows[k]] = rows.objects[k]
        self.seconds[index] = rows.seconds[keep]
        self.engine[index] = engine
        self.host[index] = host
        self.status[index] = DONE
        for symbol, values in rows.per_data.items():
            self.per_data.setdefault(symbol, values)
        kind, column = self.metric_column
        values = (rows.floats[keep, column] if kind == "floats"
                  else rows.ints[keep, column].astype(np.float64))
        if rows.errors:
            failed = np.fromiter((row in rows.errors for row in index.tolist()), bool, len(index))
            for row in index[failed].tolist():
                self.errors[row] = rows.errors[row]
                if self.first_error is None or row < self.first_error:
                    self.first_error = row
            self.status[index[failed]] = FAILED
            values[failed] = np.nan  # a failed run's zero count is no value
        values[self.too_few_trades(rows, keep)] = np.nan  # stays in the table, never the best
        self.best.offer_many(values, index)
        self._table = None

    def metric_values(self, rows: Rows, positions: np.ndarray) -> list[float]:
        """The metric of the runs at ``positions`` of ``rows`` (NaN for failures)."""
        kind, column = self.metric_column
        values = (rows.floats[positions, column] if kind == "floats"
                  else rows.ints[positions, column].astype(np.float64))
        return [math.nan if int(r) in rows.errors else v
                for r, v in zip(rows.rows[positions].tolist(), values.tolist())]

    def too_few_trades(self, rows: Rows, positions: np.ndarray) -> np.ndarray:
        """Whether each run at ``positions`` of ``rows`` has fewer trades than ``min_trades``."""
        if not self.min_trades:
            return np.zeros(len(positions), dtype=bool)
        return rows.ints[positions, self.schema.ints.index("trades")] < self.min_trades

    def restore(self, saved: Iterable[SavedRow]) -> int:
        """Take saved runs as finished (they will not run again); returns the rows finished."""
        with self.lock:
            # One set of columns per (engine, host), stored at once as a chunk would be.
            by_source: dict[tuple[int, str | None], RowsBuilder] = {}
            total = len(self.plan)
            for row, stats, error, seconds, engine, host in saved:
                if not 0 <= row < total:
                    continue
                rows = by_source.setdefault((engine, host), RowsBuilder(self.schema))
                if stats is None:
                    rows.failed(row, error or ("Error", "", ""), seconds)
                else:
                    rows.ok(row, _complete(stats, self.schema), self.plan.symbols[row], seconds)
            for (engine, host), rows in by_source.items():
                chunk = rows.build()
                self._keep(chunk, np.arange(len(chunk.rows)), engine, host)
            return int(np.count_nonzero(self.status != PENDING))

    def mark_unfinished_cancelled(self) -> int:
        """Every pending run is cancelled; returns how many there were."""
        with self.lock:
            pending = self.status == PENDING
            self.status[pending] = CANCELLED
            self._table = None
            return int(np.count_nonzero(pending))

    # ----------------------------------------------------------------- reading
    def counts(self) -> tuple[int, int]:
        """(finished: done or failed, failed)."""
        failed = int(np.count_nonzero(self.status == FAILED))
        return int(np.count_nonzero(self.status == DONE)) + failed, failed

    def count(self, status: int) -> int:
        """Runs with ``status`` (PENDING, DONE, FAILED or CANCELLED)."""
        return int(np.count_nonzero(self.status == status))

    def pending_rows(self) -> list[int]:
        """Rows not finished yet, in grid order."""
        return np.flatnonzero(self.status == PENDING).tolist()

    def stats(self, row: int) -> dict[str, Any] | None:
        """Row ``row``'s stats in :data:`metrics.STAT_NAMES` order (None unless done)."""
        if self.status[row] != DONE:
            return None
        schema = self.schema
        values: dict[str, Any] = dict(zip(schema.floats, self.floats[row].tolist()))
        ints = self.ints[row].tolist()
        values.update(zip(schema.ints, ints))
        values.update((name, pd.Timedelta(ns)) for name, ns in zip(schema.durations, ints[len(schema.ints):]))
        values.update(zip(schema.per_data, self.per_data[self.plan.symbols[row]]))
        if self.objects is not None:
            values.update(zip(schema.objects, self.objects[row]))
        return {name: values[name] for name in schema.names}

    def saved(self, row: int) -> SavedRow:
        """Run ``row`` as a checkpoint keeps it."""
        return (row, self.stats(row), self.errors.get(row), float(self.seconds[row]),
                int(self.engine[row]), self.host[row])

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a dict: params (and symbol), stats, error, engine, host, seconds, status."""
        out: dict[str, Any] = row_params(self.plan, i)
        stats = self.stats(i)
        if stats is not None:
            out.update(stats)
        error = self.errors.get(i)
        out["error"] = None if error is None else f"{error[0]}: {error[1]}"
        out["traceback"] = None if error is None else error[2]
        out["engine"] = None if self.engine[i] < 0 else int(self.engine[i])
        out["host"] = self.host[i]
        out["seconds"] = float(self.seconds[i])
        out["status"] = STATUS_NAMES[self.status[i]]
        return out

    def table(self) -> pd.DataFrame:
        """Every run in grid order: params, stats, error, traceback, engine, host, seconds, status
        (then ``too_few_trades`` when ``min_trades`` is set)."""
        with self.lock:
            if self._table is None:
                self._table = self._build_table()
            return self._table

    def _build_table(self) -> pd.DataFrame:
        schema = self.schema
        table = self.plan.frame()
        done = self.status == DONE
        symbols = self.plan.symbols
        missing = (None,) * len(schema.per_data)
        per_data = pd.DataFrame.from_records(
            [self.per_data[symbols[i]] if ok else missing for i, ok in enumerate(done.tolist())],
            columns=list(schema.per_data), nrows=len(done),
        )
        columns: dict[str, Any] = {name: per_data[name] for name in schema.per_data}
        columns.update(zip(schema.floats, np.where(done[:, None], self.floats, np.nan).T))
        counts = self.ints[:, : len(schema.ints)]
        # Integer counts while every run is done; NaN marks the others, as floats.
        columns.update(zip(schema.ints, (counts.copy() if done.all()
                                         else np.where(done[:, None], counts, np.nan)).T))
        # Integer nanoseconds all the way (a float would round them).
        nanoseconds = np.where(done[:, None], self.ints[:, len(schema.ints):], NAT)
        columns.update((name, nanoseconds[:, k].view("m8[ns]")) for k, name in enumerate(schema.durations))
        if self.objects is not None:
            for k, name in enumerate(schema.objects):
                values = [v if ok else None for v, ok in zip(self.objects[:, k].tolist(), done.tolist())]
                columns[name] = pd.Series(values, dtype="object")
        stats = pd.DataFrame({name: columns[name] for name in schema.names})
        messages: list[str | None] = [None] * len(done)
        tracebacks: list[str | None] = [None] * len(done)
        for row, (etype, message, text) in self.errors.items():
            messages[row], tracebacks[row] = f"{etype}: {message}", text
        runs = pd.DataFrame(
            {
                "error": messages,
                "traceback": tracebacks,
                "engine": pd.arrays.IntegerArray(self.engine.copy(), self.engine < 0),
                "host": self.host.tolist(),
                "seconds": self.seconds,
                "status": STATUS_NAMES[self.status],
            }
        )
        if self.min_trades:  # finished with fewer trades than min_trades: never the best
            trades = self.ints[:, schema.ints.index("trades")]
            runs["too_few_trades"] = done & (trades < self.min_trades)
        return pd.concat([table, stats, runs], axis=1)


def _complete(stats: Mapping[str, Any], schema: StatSchema) -> Mapping[str, Any]:
    """Saved stats with every stat of ``schema``: one the checkpoint predates has no value."""
    if all(name in stats for name in schema.names):
        return stats
    blank: dict[str, Any] = {name: math.nan for name in schema.floats}
    blank.update({name: 0 for name in schema.ints})
    blank.update({name: pd.NaT for name in schema.durations})
    blank.update({name: None for name in (*schema.per_data, *schema.objects)})
    return {**blank, **stats}


# ------------------------------------------------------------------ saved line
def _encode(value: Any) -> Any:
    # Timestamps and Timedeltas keep their unit and zone, so the table rebuilds identically.
    if isinstance(value, pd.Timestamp):
        zone = None if value.tz is None else str(value.tz)
        return {"$ts": int(value.value), "unit": value.unit, "tz": zone}
    if isinstance(value, pd.Timedelta):
        return {"$td": int(value.value), "unit": value.unit}
    if value is pd.NaT:
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def _decode(obj: dict[str, Any]) -> Any:
    if "$ts" in obj:
        stamp = pd.Timestamp(obj["$ts"], unit="ns", tz="UTC" if obj["tz"] else None)
        if obj["tz"]:
            stamp = stamp.tz_convert(obj["tz"])
        return stamp.as_unit(obj["unit"])
    if "$td" in obj:
        return pd.Timedelta(obj["$td"], unit="ns").as_unit(obj["unit"])
    return obj


def saved_line(saved: SavedRow) -> str:
    """One run as a line of a checkpoint's ``rows.jsonl`` (no newline).

    Examples
    --------
    >>> line = saved_line((3, {"sharpe": 0.1 + 0.2}, None, 0.5, 1, "h"))
    >>> parse_saved_line(line.encode())[1]["sharpe"] == 0.1 + 0.2
    True
    """
    row, stats, error, seconds, engine, host = saved
    record = {"row": row, "stats": stats, "error": error, "seconds": seconds, "engine": engine,
              "host": host}
    return json.dumps(record, default=_encode, separators=(",", ":"))


def parse_saved_line(line: bytes) -> SavedRow:
    """One line of ``rows.jsonl`` as a saved run; ValueError, KeyError or TypeError if it is none."""
    record = json.loads(line, object_hook=_decode)
    row, stats, error = record["row"], record["stats"], record["error"]
    if type(row) is not int or row < 0:
        raise ValueError(f"row {row!r} is not a row number")
    # A finished run has stats, a failed one an error: exactly one of them.
    if not (isinstance(stats, dict) and error is None
            or stats is None and isinstance(error, list) and len(error) == 3):
        raise ValueError("neither stats nor an error")
    return (row, stats, None if error is None else (str(error[0]), str(error[1]), str(error[2])),
            float(record["seconds"]), int(record["engine"]), record["host"])
