"""Sweeps: map parameter points (or strategy instances) over engines, stream rows back.

The client validates everything first (grid, where, data, strategy picklability),
runs the first point locally to measure its cost (or takes the cost an earlier
sweep of the same job measured on this cluster), then hands chunks out as
:mod:`nbbacktest.parallel.schedule` decides: at most two outstanding per engine, so
that client and controller memory stay bounded however many points there are.
Engines on the client's host share each chunk: every one of them gets it and they
claim its points from a counter in a small file as they run, so they end together
however their speeds differ (engines on other hosts get chunks of their own).
Rows arrive out of order and are stored in grid order.
"""

from __future__ import annotations

import abc
import concurrent.futures
import contextlib
import dataclasses
import math
import os
import signal
import socket
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nbbacktest.engine import views
from nbbacktest.engine.backtest import PreparedData, Settings, simulate
from nbbacktest.engine.data import is_universe, validate_data
from nbbacktest.engine.metrics import NUMERIC_STATS, STAT_NAMES
from nbbacktest.engine.result import Result
from nbbacktest.engine.strategy import Strategy
from nbbacktest.errors import ClusterError, NbbacktestWarning, SweepError, SweepFailedError
from nbbacktest.parallel import pickling, worker
from nbbacktest.parallel.cluster import Cluster, current_or_start, resolve_engine_count
from nbbacktest.parallel.events import (
    Cancelled,
    EngineAdded,
    EngineLost,
    EventBus,
    Finished,
    PointDone,
    PointFailed,
    PointSlow,
    Started,
    SweepEvent,
)
from nbbacktest.parallel.grid import Plan, plan_instances, plan_sweep
from nbbacktest.parallel.schedule import ChunkPlanner, Timing

if TYPE_CHECKING:
    from nbbacktest.parallel.checkpoint import Checkpoint, SavedRow

#: Columns after the params and stats in ``SweepResult.results``.
RUN_COLUMNS = ("error", "traceback", "engine", "host", "seconds", "status")

# Row states.
PENDING, DONE, FAILED, CANCELLED = 0, 1, 2, 3
_STATUS_NAMES = np.array(["pending", "done", "failed", "cancelled"], dtype=object)


# The engine id the in-process runner gives its planner.
_HERE = -1
# What sweeps on a cluster measured (point cost per job, round trips), for the next one.
_TIMINGS: weakref.WeakKeyDictionary[Cluster, Timing] = weakref.WeakKeyDictionary()
#: Engines of connected clusters still running a cancelled sweep's task that ignored
#: the interrupt, with those tasks: later sweeps leave them out until the tasks end.
_STUCK: weakref.WeakKeyDictionary[Cluster, dict[int, list[Any]]] = weakref.WeakKeyDictionary()
#: Times a sweep sends its data again to an engine that let it go mid-sweep; after
#: that, its points fail with the KeyError.
RESEND_DATA = 3
#: Engines a cancel killed (see _ClusterRunner._unstick): never given work again,
#: even while the controller still lists them.
_KILLED: weakref.WeakKeyDictionary[Cluster, set[int]] = weakref.WeakKeyDictionary()
#: Seconds a cancelled sweep waits for its engines' points to stop after the interrupt.
CANCEL_WAIT = 5.0
#: Seconds an engine whose task did not come back by then has to answer a trivial
#: one, or count as still running a point (a round trip takes milliseconds).
PROBE_WAIT = 2.0
#: Seconds without a reply after which a sweep checks that its controller still
#: listens (a TCP connection to its registration port, about a millisecond); a dead
#: controller fails the sweep about this long after it died.
CONTROLLER_CHECK = 2.0
#: Seconds to wait for the controller to see a killed engine gone (its heartbeat
#: notices within about a second here).
UNREGISTER_WAIT = 10.0

ProgressFactory = Callable[["SweepResult"], Any]
_progress_factory: ProgressFactory | None = None


def set_progress_factory(factory: ProgressFactory | None) -> None:
    """Install what shows a sweep's progress (the display layer registers itself)."""
    global _progress_factory
    _progress_factory = factory


class SweepResult(concurrent.futures.Future):
    """The rows of a sweep as they arrive: a Future whose result is the table.

    ``results`` is a DataFrame in grid order: params, every stat, error, traceback,
    engine, host, seconds and status; ``best`` the best strategy instance by the
    metric; ``detail(i)`` re-runs row ``i`` locally and returns its full Result.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> sweep = nbb.sweep(SmaCross, nbb.load_sample("daily"),
    ...                   grid={"fast": [5, 10], "slow": [20, 40]}, progress=False)
    >>> len(sweep), sweep.done()
    (4, True)
    >>> sweep.best in {SmaCross(f, s) for f in (5, 10) for s in (20, 40)}
    True
    """

    def __init__(
        self,
        plan: Plan,
        data: pd.DataFrame | dict[str, pd.DataFrame],
        settings: Settings,
        metric: str,
        maximize: bool,
        stop_on_error: bool,
    ) -> None:
        super().__init__()
        self.plan = plan
        self.data = data
        self.settings = settings
        self.metric = metric
        # The metric's column: trades, or one of the float stats.
        self._metric_at = None if metric == "trades" else worker.FLOAT_STATS.index(metric)
        self.maximize = maximize
        self.stop_on_error = stop_on_error
        self.events = EventBus()
        total = len(plan)
        # Stats in columns (see worker.Rows): a finished run's are valid where its
        # status is DONE; the data's start, end and duration are kept per symbol.
        self._floats = np.full((total, len(worker.FLOAT_STATS)), np.nan)
        self._trades = np.zeros(total, dtype=np.int64)
        self._drawdown_ns = np.full(total, worker.NAT, dtype=np.int64)
        self._times: dict[str | None, tuple] = {}
        self._errors: dict[int, tuple[str, str, str]] = {}
        self._engine = np.full(total, -1, dtype=np.int64)
        self._host = np.full(total, None, dtype=object)
        self._seconds = np.full(total, np.nan)
        self._status = np.zeros(total, dtype=np.int8)
        self._lock = threading.RLock()
        self._cancel = threading.Event()
        self._table: pd.DataFrame | None = None
        self._best_row: int | None = None
        self._best_value = math.nan
        self._first_error: int | None = None
        self._restored = 0
        #: The save directory's writer, when ``save=`` was given.
        self.checkpoint: Checkpoint | None = None
        #: complete, cancelled, stopped (at an error), failed (the sweep itself) or running.
        self.status = "running"
        #: Why a sweep that did not complete ended.
        self.reason = ""
        self.warn_after = 3600.0
        self._slow_rows: set[int] = set()
        self.started = time.monotonic()
        self.seconds = math.nan
        self.engines = 0
        self._prepared: dict[str | None, PreparedData] = {}
        #: One record per chunk run on an engine: (engine, points, sent, received,
        #: started, completed); sent/received are perf_counter() seconds, started and
        #: completed the engine's datetimes. For diagnosing scheduling.
        self.chunks: list[tuple] = []
        # Called while a blocking wait loops (a notebook display keeps its widgets
        # responsive this way, so that Cancel works while the cell runs).
        self._pollers: list[Callable[[], Any]] = []
        self._cancel_hooks: list[Callable[[], Any]] = []

    # ------------------------------------------------------------ Future API
    def __len__(self) -> int:
        return len(self.plan)

    @property
    def progress(self) -> int:
        """Runs finished so far (done or failed)."""
        return int(np.count_nonzero((self._status == DONE) | (self._status == FAILED)))

    @property
    def failed(self) -> int:
        """Runs that raised."""
        return int(np.count_nonzero(self._status == FAILED))

    def cancel(self) -> bool:
        """Stop the sweep: drop queued work, interrupt running points, keep finished rows.

        Returns False when the sweep had already finished.
        """
        if self.done():
            return False
        self._cancel.set()
        for hook in list(self._cancel_hooks):
            hook()
        return True

    def add_cancel_hook(self, hook: Callable[[], Any]) -> None:
        """Call ``hook()`` when :meth:`cancel` is called (a runner interrupts its points)."""
        self._cancel_hooks.append(hook)

    @property
    def cancel_requested(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._cancel.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until finished (KeyboardInterrupt cancels and still waits); True if done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        step = 0.05 if self._pollers else 0.1
        while not self.done():
            remaining = step if deadline is None else min(step, deadline - time.monotonic())
            if remaining <= 0:
                return False
            try:
                for poll in self._pollers:
                    poll()
                concurrent.futures.wait([self], timeout=remaining)
            except KeyboardInterrupt:
                self.cancel()
        return True

    def add_poller(self, poll: Callable[[], Any]) -> None:
        """Call ``poll()`` about 20 times a second while a blocking :meth:`wait` loops."""
        self._pollers.append(poll)

    # ------------------------------------------------------------------ rows
    def _record(self, rows: worker.Rows, engine: int, host: str | None) -> None:
        """Store a chunk's finished runs, save them, and emit one event per run (any thread)."""
        events: list[SweepEvent] = []
        with self._lock:
            state = self._status[rows.rows]
            # A run can come back twice (a requeued chunk): the first one counts.
            fresh = np.flatnonzero((state != DONE) & (state != FAILED))
            if not len(fresh):
                return
            values = self._store(rows, fresh, engine, host)
            if self.checkpoint is not None:
                self.checkpoint.append([self._saved(int(r)) for r in rows.rows[fresh]], self.describe)
            observed = self.events.observed
            for row, value in zip(rows.rows[fresh].tolist(), values.tolist()):
                if row in rows.errors:
                    # The first in grid order: failures on two engines arrive in any order.
                    if self._first_error is None or row < self._first_error:
                        self._first_error = row
                    if observed:
                        events.append(PointFailed(index=row, source=self))
                elif observed:
                    events.append(PointDone(index=row, value=value, source=self))
            self._table = None
        self.events.emit_many(events)
        if self.stop_on_error and self._first_error is not None:
            self._cancel.set()

    def _store(self, rows: worker.Rows, keep: np.ndarray, engine: int, host: str | None) -> np.ndarray:
        """Keep runs ``keep`` (positions in ``rows``) as run on ``engine`` at ``host``;
        returns their metric values (NaN for failures)."""
        index = rows.rows[keep]
        self._floats[index] = rows.floats[keep]
        self._trades[index] = rows.trades[keep]
        self._drawdown_ns[index] = rows.drawdown_ns[keep]
        self._seconds[index] = rows.seconds[keep]
        self._engine[index] = engine
        self._host[index] = host
        self._status[index] = DONE
        for symbol, times in rows.times.items():
            self._times.setdefault(symbol, times)
        values = (rows.trades[keep].astype(np.float64) if self._metric_at is None
                  else rows.floats[keep, self._metric_at])
        if rows.errors:
            failed = np.fromiter((row in rows.errors for row in index.tolist()), bool, len(index))
            for row in index[failed].tolist():
                self._errors[row] = rows.errors[row]
            self._status[index[failed]] = FAILED
            values[failed] = np.nan  # a failed run's trades (0) is no value
        self._update_best(index, values)
        return values

    def _saved(self, row: int) -> SavedRow:
        """Run ``row`` as a checkpoint keeps it."""
        return (row, self._row_stats(row), self._errors.get(row), float(self._seconds[row]),
                int(self._engine[row]), self._host[row])

    def _row_stats(self, row: int) -> dict[str, Any] | None:
        if self._status[row] != DONE:
            return None
        return worker.stats_dict(self._floats[row], int(self._trades[row]),
                                 int(self._drawdown_ns[row]), self._times[self.plan.symbols[row]])

    def _restore(self, saved: Mapping[int, SavedRow]) -> None:
        """Take the runs a checkpoint holds as finished (they will not run again)."""
        with self._lock:
            # One set of columns per (engine, host), stored at once as a chunk would be.
            by_source: dict[tuple[int, str | None], worker.RowsBuilder] = {}
            for row, stats, error, seconds, engine, host in saved.values():
                if not 0 <= row < len(self):
                    continue
                rows = by_source.setdefault((engine, host), worker.RowsBuilder())
                if stats is None:
                    rows.failed(row, error, seconds)  # type: ignore[arg-type]
                else:
                    rows.ok(row, stats, self.plan.symbols[row], seconds)
            for (engine, host), rows in by_source.items():
                chunk = rows.build()
                self._store(chunk, np.arange(len(chunk.rows)), engine, host)
            self._restored = int(np.count_nonzero(self._status != PENDING))
            self._table = None

    def _slow(self, row: int, seconds: float, engine: int | None) -> None:
        """A run has been going for ``seconds`` past ``warn_after``: say so, once."""
        with self._lock:
            if row in self._slow_rows:
                return
            self._slow_rows.add(row)
        self.events.emit(PointSlow(index=row, params=row_params(self.plan, row), seconds=seconds,
                                   engine=engine))

    def pending_rows(self) -> list[int]:
        """Rows not finished yet, in grid order."""
        return np.flatnonzero(self._status == PENDING).tolist()

    def describe(self, i: int) -> str:
        """Row ``i``'s params as ``name=value, ...`` (and its symbol)."""
        return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                         for k, v in row_params(self.plan, i).items())

    def _started_event(self) -> Started:
        return Started(total=len(self), engines=self.engines, metric=self.metric,
                       maximize=self.maximize, finished=self._restored, failed=self.failed,
                       best=self._best_value)

    def _update_best(self, rows: np.ndarray, values: np.ndarray) -> None:
        # The first of equal values wins, in arrival order, as one run at a time would.
        if np.isnan(values).all():  # also no values at all
            return
        k = int(np.nanargmax(values) if self.maximize else np.nanargmin(values))
        value, best = float(values[k]), self._best_value
        if best != best or (value > best if self.maximize else value < best):
            self._best_value, self._best_row = value, int(rows[k])

    def _mark_unfinished_cancelled(self) -> int:
        with self._lock:
            pending = self._status == PENDING
            self._status[pending] = CANCELLED
            self._table = None
            return int(np.count_nonzero(pending))

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a dict: params (and symbol), stats, error, engine, host, seconds."""
        plan = self.plan
        out: dict[str, Any] = row_params(plan, i)
        stats = self._row_stats(i)
        if stats is not None:
            out.update(stats)
        error = self._errors.get(i)
        out["error"] = None if error is None else f"{error[0]}: {error[1]}"
        out["traceback"] = None if error is None else error[2]
        out["engine"] = None if self._engine[i] < 0 else int(self._engine[i])
        out["host"] = self._host[i]
        out["seconds"] = float(self._seconds[i])
        out["status"] = _STATUS_NAMES[self._status[i]]
        return out

    @property
    def results(self) -> pd.DataFrame:
        """Every run in grid order: params, stats, error, traceback, engine, host, seconds, status."""
        with self._lock:
            if self._table is None:
                self._table = self._build_table()
            return self._table

    def _build_table(self) -> pd.DataFrame:
        table = self.plan.frame()
        done = self._status == DONE
        symbols = self.plan.symbols
        missing = (None,) * len(worker.TIME_STATS)
        times = pd.DataFrame.from_records(
            [self._times[symbols[i]] if ok else missing for i, ok in enumerate(done.tolist())],
            columns=list(worker.TIME_STATS), nrows=len(done),
        )
        floats = np.where(done[:, None], self._floats, np.nan)
        columns: dict[str, Any] = {name: times[name] for name in worker.TIME_STATS}
        columns.update(zip(worker.FLOAT_STATS, floats.T))
        # Integer trades while every run is done; NaN marks the others, as floats.
        columns["trades"] = self._trades.copy() if done.all() else np.where(done, self._trades, np.nan)
        # Integer nanoseconds all the way (a float would round them).
        columns["max_drawdown_duration"] = np.where(done, self._drawdown_ns, worker.NAT).view("m8[ns]")
        stats = pd.DataFrame({name: columns[name] for name in STAT_NAMES})
        messages: list[str | None] = [None] * len(done)
        tracebacks: list[str | None] = [None] * len(done)
        for row, (etype, message, text) in self._errors.items():
            messages[row], tracebacks[row] = f"{etype}: {message}", text
        runs = pd.DataFrame(
            {
                "error": messages,
                "traceback": tracebacks,
                "engine": pd.array(np.where(self._engine < 0, pd.NA, self._engine), dtype="Int64"),
                "host": self._host.tolist(),
                "seconds": self._seconds,
                "status": _STATUS_NAMES[self._status],
            }
        )
        return pd.concat([table, stats, runs], axis=1)

    def to_frame(self) -> pd.DataFrame:
        """A copy of :attr:`results`."""
        return self.results.copy()

    def result(self, timeout: float | None = None) -> pd.DataFrame:  # type: ignore[override]
        """Wait for the sweep and return :attr:`results`."""
        super().result(timeout)
        return self.results

    @property
    def best_index(self) -> int | None:
        """Row number of the best run by the metric (None if no run succeeded)."""
        return self._best_row

    @property
    def best(self) -> Strategy | None:
        """The best strategy instance by the metric (None if no run succeeded)."""
        row = self._best_row
        return None if row is None else self.plan.strategy_at(row)

    @property
    def best_value(self) -> float:
        """The metric's best value so far (NaN before any success)."""
        return self._best_value

    def detail(self, i: int) -> Result:
        """Re-run row ``i`` locally (same seed, settings and data) and return its Result."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(self):
            raise IndexError(f"detail(i) takes a row number from 0 to {len(self) - 1}, got {i!r}")
        symbol = self.plan.symbols[i]
        prepared = self._prepared.get(symbol)
        if prepared is None:
            frame = self.data if symbol is None else self.data[symbol]
            prepared = self._prepared[symbol] = PreparedData.from_frame(frame)
        strategy = self.plan.strategy_at(int(i))
        seed = self.plan.seed_at(int(i))
        run = simulate(strategy, prepared, self.settings, seed)
        return Result(strategy, prepared.index, self.settings, seed, run)

    # ------------------------------------------------------------ views (display layer)
    def table(self, top: int | None = 20, sort: str | None = None,
              columns: Sequence[str] | None = None) -> Any:
        """The best ``top`` rows as a Plotly table, sorted by ``sort`` (default: the metric).

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> from nbbacktest.engine.examples import SmaCross
        >>> sweep = nbb.sweep(SmaCross, nbb.load_sample("daily"),
        ...                   grid={"fast": [5, 10], "slow": [20, 40]}, progress=False)
        >>> fig = sweep.table(top=3)
        >>> len(fig.data[0].cells.values[0])
        3
        """
        return views.view("sweep_table")(self, top=top, sort=sort, columns=columns)

    def heatmap(self, x: str, y: str, metric: str | None = None, agg: str = "max") -> Any:
        """The metric over two params as a Plotly heatmap (``agg`` folds the other params)."""
        return views.view("sweep_heatmap")(self, x, y, metric=metric, agg=agg)

    def compare(self, top: int = 5) -> Any:
        """Equity curves of the ``top`` best runs, re-run locally with :meth:`detail`."""
        return views.view("sweep_compare")(self, top=top)

    def parallel_coordinates(self, metric: str | None = None) -> Any:
        """One line per run across every param and the metric (for three or more params)."""
        return views.view("sweep_parallel_coordinates")(self, metric=metric)

    def distribution(self, metric: str | None = None) -> Any:
        """Histogram of a metric over the runs, the best marked: how robust is the best?"""
        return views.view("sweep_distribution")(self, metric=metric)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": repr(self)}
        if views.available("sweep_bundle"):
            bundle.update(views.view("sweep_bundle")(self))
        return bundle

    def __repr__(self) -> str:
        best = "" if self.best is None else f", best {self.metric}={self._best_value:.4g}: {self.best!r}"
        why = f" ({self.reason})" if self.reason else ""
        return (
            f"<SweepResult {self.status}: {self.progress}/{len(self)} runs, "
            f"{self.failed} failed{best}{why}>"
        )

    def _finish(self, status: str, reason: str = "", crash: BaseException | None = None) -> None:
        cancelled = int(np.count_nonzero(self._status == CANCELLED))
        self.seconds = time.monotonic() - self.started
        self.status, self.reason = status, reason
        if self.checkpoint is not None:
            self.checkpoint.close()
        self.events.emit(
            Finished(
                done=self.progress - self.failed,
                failed=self.failed,
                cancelled=cancelled,
                seconds=self.seconds,
                status=status,
                reason=reason,
            )
        )
        if crash is not None:
            self.set_exception(crash)  # result() and exception() give what stopped the sweep
        else:
            self.set_result(None)


def point_specs(plan: Plan, rows: Iterable[int]) -> list[worker.PointSpec]:
    """What a task carries for each row: (row, class index, values, symbol).

    No seed: the job carries the sweep's seed and each point's own is derived where
    it runs, so a big grid's seeds are not all derived here before the first task.
    """
    index = plan.class_index
    values, symbols = plan.values, plan.symbols
    if index is None:
        return [(r, 0, values[r], symbols[r]) for r in rows]
    return [(r, int(index[r]), values[r], symbols[r]) for r in rows]


def row_params(plan: Plan, i: int) -> dict[str, Any]:
    """The plan columns of row ``i`` (params, or strategy and params; then symbol)."""
    if plan.is_mixed:
        out: dict[str, Any] = {"strategy": plan.class_at(i).__name__, "params": repr(plan.params(i))}
    else:
        out = plan.params(i)
    if plan.universe is not None:
        out["symbol"] = plan.symbols[i]
    return out


# ---------------------------------------------------------------------- entry points
def sweep(
    strategy: type[Strategy] | Strategy,
    data: pd.DataFrame | Mapping[str, pd.DataFrame],
    grid: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    *,
    where: Callable[[Any], bool] | str | None = None,
    n: int | None = None,
    seed: int = 0,
    metric: str = "sharpe",
    maximize: bool = True,
    engines: int | str | None = None,
    cluster: Cluster | None = None,
    symbols: Sequence[str] | None = None,
    chunksize: int | str = "auto",
    on_result: Callable[[SweepEvent], Any] | None = None,
    stop_on_error: bool = False,
    save: str | os.PathLike[str] | None = None,
    resume: bool | str = False,
    warn_after: float = 3600.0,
    progress: bool | None = None,
    block: bool = True,
    cash: float = 10_000.0,
    commission: float = 0.0,
    slippage: float = 0.0,
    fill: str = "next_open",
    fractional: bool = True,
    leverage: float | None = None,
    close_at_end: bool = False,
) -> SweepResult:
    """Backtest every point of a parameter grid, in parallel on an ipyparallel cluster.

    Parameters
    ----------
    strategy : Strategy subclass (or instance, whose values fill params not in the grid)
    data : DataFrame or {symbol: DataFrame}
        One instrument, or a universe: every point then runs on every symbol.
    grid : dict of iterables, or a list of such dicts
        The values of each param to try (the product; a list is a union of grids).
    where : callable or str, optional
        Keep only points for which ``where(p)`` is true (``p.fast < p.slow``).
    n : int, optional
        Run a random sample of ``n`` points (deterministic from ``seed``).
    seed : int
        The sweep's seed: each run's seed is derived from it and the run's params.
    metric, maximize
        What ``best`` and the progress display rank by (a stat name).
    engines : int, -1, "auto" or None
        None or 1 runs in this process; N uses N engines of the current cluster (or
        starts a local one); -1 every core.
    cluster : Cluster, optional
        The cluster to use instead of the current one.
    symbols : list of str, optional
        Subset of a universe's symbols.
    chunksize : int or "auto"
        Points per task; "auto" sizes chunks from the measured run time.
    on_result : callable, optional
        Called with every event (``PointDone``, ``PointFailed``, ...).
    stop_on_error : bool
        Stop at the first failing point; ``reason`` (and the progress display) says which.
    save : str or path, optional
        A directory to checkpoint into: every finished run is appended as it
        arrives (``rows.jsonl``), with the sweep's spec, its data, and ``errors.log``.
    resume : bool or "force"
        Go on from the checkpoint in ``save``: finished runs are not run again and
        the final table equals an uninterrupted run's (see :func:`resume`). Refused
        when the code of a strategy class (or of its bases outside nbbacktest)
        changed since the checkpoint was made: its rows came from the old code.
        ``"force"`` keeps them anyway (for a change that cannot alter results).
    warn_after : float
        Seconds after which a run still going emits a ``PointSlow`` event naming it.
    progress : bool, optional
        Show progress (default: on, unless NBBACKTEST_PROGRESS=0).
    block : bool
        Wait for the end; False returns at once. Ctrl-C while waiting cancels the
        sweep and returns it with its finished rows (status "cancelled").
    cash, commission, slippage, fill, fractional, leverage, close_at_end
        Simulation settings, as in :func:`nbbacktest.backtest`.

    Returns
    -------
    SweepResult

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> sweep = nbb.sweep(SmaCross, nbb.load_sample("daily"),
    ...                   grid={"fast": range(5, 30, 5), "slow": range(20, 80, 20)},
    ...                   where=lambda p: p.fast < p.slow, progress=False)
    >>> len(sweep.results)
    13
    """
    settings = Settings(cash, commission, slippage, fill, fractional, leverage, close_at_end)
    data = validate_data(data, name="data")
    plan = plan_sweep(strategy, grid, where=where, n=n, seed=seed,
                      symbols=universe_symbols(data, symbols))
    check_metric(metric, maximize)
    return _launch(plan, data, settings, metric, maximize, engines, cluster, chunksize,
                   on_result, stop_on_error, progress, block, save, resume, warn_after)


def run_many(
    instances: Sequence[Strategy],
    data: pd.DataFrame | Mapping[str, pd.DataFrame],
    *,
    seed: int = 0,
    metric: str = "sharpe",
    maximize: bool = True,
    engines: int | str | None = None,
    cluster: Cluster | None = None,
    symbols: Sequence[str] | None = None,
    chunksize: int | str = "auto",
    on_result: Callable[[SweepEvent], Any] | None = None,
    stop_on_error: bool = False,
    save: str | os.PathLike[str] | None = None,
    resume: bool = False,
    warn_after: float = 3600.0,
    progress: bool | None = None,
    block: bool = True,
    **settings: Any,
) -> SweepResult:
    """Backtest a list of strategy instances (of any classes), in parallel.

    Takes the options of :func:`sweep` (but no grid).

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> runs = nbb.run_many([SmaCross(10, 30), SmaCross(20, 60)], nbb.load_sample("daily"),
    ...                     progress=False)
    >>> runs.results["trades"].gt(0).all()
    np.True_
    """
    settings_ = Settings.from_options(settings, "run_many")
    data = validate_data(data, name="data")
    plan = plan_instances(instances, seed=seed, symbols=universe_symbols(data, symbols))
    check_metric(metric, maximize)
    return _launch(plan, data, settings_, metric, maximize, engines, cluster, chunksize,
                   on_result, stop_on_error, progress, block, save, resume, warn_after)


def resume(
    save: str | os.PathLike[str],
    *,
    engines: int | str | None = None,
    cluster: Cluster | None = None,
    chunksize: int | str = "auto",
    on_result: Callable[[SweepEvent], Any] | None = None,
    progress: bool | None = None,
    block: bool = True,
    trusted: bool = False,
) -> SweepResult:
    """Go on with the sweep checkpointed in ``save``, in this or any later process.

    Everything comes from the directory: strategy classes (by value, so classes
    defined in a notebook or a killed script come back), grid, settings, metric
    and data. Finished runs are not run again; the final table equals an
    uninterrupted run's.

    A checkpoint holds code: its strategy classes are pickled, and loading them
    runs whatever its author put there. So only checkpoints signed by this user
    on this machine are loaded (each sweep signs its own with a per-user key);
    one received from someone else is refused unless ``trusted=True``.

    Parameters
    ----------
    save : str or path
        The directory of ``sweep(..., save=...)``.
    engines, cluster, chunksize, on_result, progress, block
        As in :func:`sweep`.
    trusted : bool
        Load a checkpoint that this user did not make (it is then signed as
        this user's). Only for checkpoints from a source you trust.

    Examples
    --------
    >>> import tempfile, nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> folder = tempfile.mkdtemp()
    >>> first = nbb.sweep(SmaCross, nbb.load_sample("daily"), grid={"fast": [5, 10], "slow": [40]},
    ...                   save=folder, progress=False)
    >>> again = nbb.resume(folder, progress=False)
    >>> again.results.equals(first.results), again.status
    (True, 'complete')
    """
    from nbbacktest.parallel.checkpoint import load_state

    if not isinstance(trusted, (bool, np.bool_)):
        raise TypeError(f"trusted must be True or False, got {trusted!r}")
    state, data = load_state(save, trusted=bool(trusted))
    return _launch(state["plan"], data, state["settings"], state["metric"], state["maximize"],
                   engines, cluster, chunksize, on_result, state["stop_on_error"], progress, block,
                   save, True, state["warn_after"])


def universe_symbols(data: Any, symbols: Sequence[str] | str | None) -> list[str] | None:
    """The symbols a sweep runs on: all of a universe's, or ``symbols`` checked against it.

    None for a single frame (where ``symbols`` is an error). A bare str is one symbol.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> universe_symbols(nbb.load_sample("universe"), ["BBB", "AAA"])
    ['BBB', 'AAA']
    >>> universe_symbols(nbb.load_sample("universe"), "AAA")
    ['AAA']
    >>> universe_symbols(nbb.load_sample("daily"), None) is None
    True
    """
    if not is_universe(data):
        if symbols is not None:
            raise SweepError("symbols= selects symbols of a universe, but data is a single frame")
        return None
    if symbols is None:
        return list(data)
    if isinstance(symbols, str):
        symbols = [symbols]  # one symbol, not its letters
    elif not isinstance(symbols, Iterable):
        raise SweepError(f"symbols must be a list of symbols such as ['AAA', 'BBB'] or one symbol,"
                         f" got {type(symbols).__name__} {symbols!r}")
    unknown = [s for s in symbols if s not in data]
    if unknown:
        raise SweepError(f"symbols {unknown} are not in the data; it has {', '.join(map(str, data))}")
    return list(symbols)


def check_metric(metric: Any, maximize: Any) -> None:
    """Raise a clear error unless ``metric`` is a numeric stat and ``maximize`` a bool."""
    if metric not in NUMERIC_STATS:
        import difflib

        close = difflib.get_close_matches(str(metric), NUMERIC_STATS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise SweepError(
            f"metric {metric!r} is not a numeric stat.{hint} Valid metrics: {', '.join(NUMERIC_STATS)}"
        )
    if not isinstance(maximize, (bool, np.bool_)):
        raise TypeError(f"maximize must be True or False, got {maximize!r}")


def _check_chunksize(chunksize: Any) -> int | None:
    if chunksize == "auto":
        return None
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise SweepError(f"chunksize must be a positive int or 'auto', got {chunksize!r}")
    return chunksize


def _launch(
    plan: Plan,
    data: Any,
    settings: Settings,
    metric: str,
    maximize: bool,
    engines: Any,
    cluster: Cluster | None,
    chunksize: Any,
    on_result: Callable[[SweepEvent], Any] | None,
    stop_on_error: bool,
    progress: bool | None,
    block: bool,
    save: Any = None,
    resume: bool = False,
    warn_after: float = 3600.0,
) -> SweepResult:
    fixed_chunk = _check_chunksize(chunksize)
    if cluster is not None and not isinstance(cluster, Cluster):
        raise TypeError(f"cluster must be an nbbacktest.Cluster, got {type(cluster).__name__}")
    if engines is not None:
        resolve_engine_count(engines)  # validate before anything starts
    if on_result is not None and not callable(on_result):
        raise TypeError(f"on_result must be callable, got {type(on_result).__name__}")
    for name, flag in (("stop_on_error", stop_on_error), ("resume", resume == "force" or resume),
                       ("block", block)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if resume and save is None:
        raise SweepError("resume=True needs save=DIR, the directory of the checkpoint to go on from")
    if isinstance(warn_after, bool) or not isinstance(warn_after, (int, float)) or not warn_after > 0:
        raise SweepError(f"warn_after must be a positive number of seconds, got {warn_after!r}")
    parallel = cluster is not None or (engines is not None and engines != 1)
    data_key = job_blob = None
    if parallel or save is not None:
        # Everything that can fail is checked before a cluster starts or data moves.
        from nbbacktest.parallel.shared import fingerprint

        data_key = fingerprint(data)
    if parallel:
        job_blob = _job_blob(make_job(plan, settings, data_key, warn_after, stop_on_error))
    result = SweepResult(plan, data, settings, metric, maximize, stop_on_error)
    result.warn_after = float(warn_after)
    if save is not None:
        _open_checkpoint(result, save, resume, data_key)
    try:
        if on_result is not None:
            result.events.subscribe(on_result)
        if _progress_factory is not None and _progress_wanted(progress):
            shown = _progress_factory(result)
            poll = getattr(shown, "poll", None)
            if callable(poll):
                result.add_poller(poll)
        if not parallel:
            runner: _Runner = _LocalRunner(result, fixed_chunk)
        else:
            if cluster is None:
                cluster = current_or_start(engines, _data_bytes(data))
            cluster.check_running()
            wanted = None if engines in (None, -1, "auto") else resolve_engine_count(engines)
            runner = _ClusterRunner(result, cluster, wanted, data_key, job_blob, fixed_chunk)
        runner.prepare()
    except BaseException:
        # The checkpoint holds its directory's lock: a sweep that never started frees it.
        if result.checkpoint is not None:
            result.checkpoint.close()
        raise
    # The runner always works in a thread: the caller's thread stays free to wait,
    # to turn Ctrl-C into a clean cancel, and to keep a notebook's widgets responsive.
    thread = threading.Thread(target=_drive, args=(runner,), name="nbbacktest-sweep", daemon=True)
    thread.start()
    if block:
        result.wait()
        thread.join()
        error = result.exception()
        if isinstance(error, Exception):
            raise failed_error(result, error, save) from error
        if error is not None:
            raise error
    return result


def failed_error(result: SweepResult, error: BaseException, save: Any = None) -> SweepFailedError:
    """The error a blocking sweep raises when it fails: what went wrong, and where its rows are."""
    kept = result.progress
    where = ("error.result holds them (error.result.results is the table)" if save is None else
             f"error.result holds them, and so does the checkpoint: sweep(..., save={str(save)!r},"
             " resume=True) runs the rest")
    return SweepFailedError(
        f"the sweep failed: {type(error).__name__}: {error}; {kept} of {len(result)} rows"
        f" finished and are kept: {where}", result)


def _drive(runner: _Runner) -> None:
    try:
        runner.run()
    except BaseException:  # the runner finished the result with it: status "failed"
        pass


def _open_checkpoint(result: SweepResult, save: Any, resume: bool, data_key: str | None) -> None:
    from nbbacktest.parallel.checkpoint import Checkpoint

    plan = result.plan
    spec = {
        "strategy": ", ".join(f"{c.__module__}.{c.__qualname__}" for c in plan.classes),
        "runs": len(plan),
        "grid_size": plan.grid_size,
        "symbols": None if plan.universe is None else list(plan.universe),
        "metric": result.metric,
        "maximize": bool(result.maximize),
        "settings": dataclasses.asdict(result.settings),
        "data": data_key,
        "identity": plan_identity(plan, result.settings),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    state = {
        "plan": plan, "settings": result.settings, "metric": result.metric,
        "maximize": result.maximize, "stop_on_error": result.stop_on_error,
        "warn_after": result.warn_after,
    }
    result.checkpoint, saved = Checkpoint.open(save, spec=spec, state=state, data=result.data,
                                               resume=resume)
    result._restore(saved)


def plan_identity(plan: Plan, settings: Settings) -> str:
    """A digest of what a sweep computes (classes, every run's params, symbol, seed, settings).

    Two sweeps with the same identity on the same data give the same table, so a
    checkpoint of one can resume the other.
    """
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for cls, names in zip(plan.classes, plan.param_names):
        digest.update(f"{cls.__module__}.{cls.__qualname__}{names!r}".encode())
    digest.update(repr(settings).encode())
    index = plan.class_index
    for i in range(len(plan)):
        klass = 0 if index is None else int(index[i])
        digest.update(f"{klass}|{plan.values[i]!r}|{plan.symbols[i]!r}|{plan.seeds[i]}\n".encode())
    return digest.hexdigest()


def _progress_wanted(progress: bool | None) -> bool:
    if progress is not None:
        return bool(progress)
    return os.environ.get("NBBACKTEST_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def _data_bytes(data: Any) -> int:
    frames = data.values() if isinstance(data, dict) else [data]
    return int(sum(f.memory_usage(index=True).sum() for f in frames))


def make_job(plan: Plan, settings: Settings, data_key: str, warn_after: float = 3600.0,
             stop_on_error: bool = False) -> worker.Job:
    """What every run of ``plan`` shares: its classes, their param names, settings, data."""
    return worker.Job(plan.classes, plan.param_names, settings, data_key, float(warn_after),
                      bool(stop_on_error), plan.seed)


def _job_blob(job: worker.Job) -> bytes:
    """cloudpickle the job, naming the attribute that cannot travel when one cannot."""
    import cloudpickle

    try:
        return pickling.dumps(job, job.classes)
    except Exception as error:
        for cls in job.classes:
            for name, value in vars(cls).items():
                try:
                    cloudpickle.dumps(value)
                except Exception:
                    raise SweepError(
                        f"strategy class {cls.__name__} cannot be sent to the engines: its"
                        f" attribute {name!r} ({type(value).__name__}) cannot be pickled ({error})"
                    ) from error
        raise SweepError(f"the strategy cannot be sent to the engines: {error}") from error


# ---------------------------------------------------------------------- runners
class _Runner(abc.ABC):
    """Runs a sweep's points and records them into its SweepResult."""

    def __init__(self, result: SweepResult, fixed_chunk: int | None) -> None:
        self.result = result
        self.fixed_chunk = fixed_chunk
        self.key = uuid.uuid4().hex

    def specs(self, rows: Sequence[int]) -> list[worker.PointSpec]:
        return point_specs(self.result.plan, rows)

    @abc.abstractmethod
    def prepare(self) -> None:
        """Make the data and the job available, and emit Started."""

    @abc.abstractmethod
    def run(self) -> None:
        """Run every point (or until cancelled), then :meth:`finish`."""

    def hold_here(self) -> str:
        """Hold the data and register the job in this process; returns the data's key here."""
        result = self.result
        key = f"local-{self.key}"
        worker.hold_data(key, result.data)
        worker.register_job(self.key, make_job(result.plan, result.settings, key, result.warn_after,
                                               result.stop_on_error))
        self.watch()
        return key

    def watch(self) -> None:
        """Report points of this sweep that run in this process past ``warn_after``."""
        result = self.result
        worker.watch(self.key, result.warn_after, report=lambda row, seconds: result._slow(row, seconds, None))

    def finish(self, crash: BaseException | None = None) -> None:
        worker.unwatch(self.key)
        result = self.result
        reason = ""
        if crash is not None:
            result._mark_unfinished_cancelled()
            status, reason = "failed", f"{type(crash).__name__}: {crash}"
        elif result._cancel.is_set():
            result._mark_unfinished_cancelled()
            row = result._first_error
            if result.stop_on_error and row is not None:
                etype, message, _ = result._errors[row]  # type: ignore[misc]
                status = "stopped"
                reason = f"stopped at the first failure: row {row} ({result.describe(row)}) raised {etype}: {message}"
            else:
                status = "cancelled"
            result.events.emit(Cancelled(done=result.progress, total=len(result)))
        else:
            unfinished = result._mark_unfinished_cancelled()
            status = "complete"
            if unfinished:  # a sweep is complete only when every row is done or failed
                status, reason = "failed", f"{unfinished} row(s) never came back from the engines"
        result._finish(status, reason, crash)


class _LocalRunner(_Runner):
    """engines=None|1: the same worker.run_points, in this process, chunked by the same planner."""

    def prepare(self) -> None:
        self.data_key = self.hold_here()
        self.result.engines = 0
        self.result.events.emit(self.result._started_event())

    def run(self) -> None:
        result = self.result
        host = worker.host_name()
        rows = result.pending_rows()
        interrupter = _Interrupter(threading.get_ident())
        result.add_cancel_hook(interrupter.interrupt)

        def run_chunk(chunk: list[int]) -> tuple[int, float]:
            """Run and record ``chunk``: (points run, their seconds)."""
            try:
                with interrupter.armed():
                    out, interrupted = worker.run_points(self.key, None, self.specs(chunk))
            except KeyboardInterrupt:
                out, interrupted = worker.Rows.empty(), True
            result._record(out, -1, host)
            if interrupted:
                result._cancel.set()
            return len(out.rows), float(out.seconds.sum())

        try:
            # The first point alone: its time sizes the chunks after it.
            points, seconds = run_chunk(rows[:1]) if rows else (0, 0.0)
            planner = ChunkPlanner(rows[1:], seconds / points if points else 0.01, [_HERE],
                                   fixed=self.fixed_chunk)
            while planner.remaining and not result._cancel.is_set():
                for _, chunk in planner.due(time.perf_counter()):
                    if result._cancel.is_set():
                        break
                    points, seconds = run_chunk(chunk)
                    planner.done(_HERE, points, seconds, time.perf_counter())
        except KeyboardInterrupt:  # cancel's interrupt, landed just outside a chunk
            result._cancel.set()
        except BaseException as error:
            worker.release_data([self.data_key])
            self.finish(error)
            raise
        worker.release_data([self.data_key])
        self.finish()


class _Interrupter:
    """Raises KeyboardInterrupt in the in-process runner's thread while a chunk runs there.

    An engine's running point is stopped by SIGINT; in this process the sweep runs
    in a thread of its own, which no signal reaches, so cancel raises the
    interrupt in that thread instead (delivered between two bytecodes: a point in
    one long C call stops when the call returns).
    """

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        self._lock = threading.Lock()
        self._armed = False

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        with self._lock:
            self._armed = True
        try:
            yield
        finally:
            with self._lock:
                self._armed = False

    def interrupt(self) -> None:
        import ctypes

        with self._lock:
            if self._armed:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread_id),
                                                           ctypes.py_object(KeyboardInterrupt))
                self._armed = False  # one interrupt per cancel


#: A point out on this many engines that died with it unrun is a failed row: the
#: first death only makes its chunk's points suspects (each then runs alone), the
#: second names the point. Two, not one: an engine may die for reasons of its own.
QUARANTINE_KILLS = 2
#: Seconds a sweep that lost every engine waits for the replacements it started
#: (an engine starts and registers in a few seconds; more on a busy machine).
REPLACE_WAIT = 60.0

#: Engines of one host that share chunks, at most (a shared chunk goes to each of them).
SHARE_GROUP = 8


@dataclasses.dataclass(eq=False)
class _Window:
    """A chunk out on a target: its rows, and what its engines brought back so far."""

    target: int
    rows: list[int]
    waiting: set[int]  #: engines whose task for it has not come back
    members: int  #: engines it went to
    sent: float  #: perf_counter() when it went out
    ran: set[int] = dataclasses.field(default_factory=set)
    seconds: float = 0.0  #: points' seconds, summed over its engines
    interrupted: bool = False
    lost: set[int] = dataclasses.field(default_factory=set)  #: engines that died with it out


class _ClusterRunner(_Runner):
    """Chunks over the engines, at most two outstanding each; survives lost engines."""

    def __init__(
        self,
        result: SweepResult,
        cluster: Cluster,
        wanted: int | None,
        data_key: str,
        job_blob: bytes,
        fixed_chunk: int | None,
    ) -> None:
        super().__init__(result, fixed_chunk)
        self.cluster = cluster
        self.wanted = wanted
        self.data_key = data_key
        self.job_blob = job_blob
        self.client = cluster.client
        self.point_seconds = math.nan
        #: Rows requeued because an engine died with them: EngineLost reports them.
        self._requeued: dict[int, int] = {}
        #: Engines that died with a chunk of this sweep out.
        self._died: set[int] = set()
        #: Engine deaths each row was out for, unrun (see QUARANTINE_KILLS).
        self._kills: dict[int, int] = {}
        #: Replacement engines asked for, and until when the sweep waits for them.
        self._replacing_until = -math.inf
        #: The controller refused a connection: nothing more can be asked of the cluster.
        self._controller_lost = False

    def prepare(self) -> None:
        result = self.result
        killed = _KILLED.get(self.cluster, set())
        ids = sorted(set(self.cluster.ids) - killed)
        if not ids:
            raise ClusterError("the cluster has no engines registered (0 ready)")
        busy = self._still_stuck()
        if busy:
            ids = [e for e in ids if e not in busy]
            if not ids:
                raise ClusterError(
                    f"every engine is still running a point of a cancelled sweep that ignored the"
                    f" interrupt (engines {', '.join(map(str, busy))}): wait for it to end, or"
                    " restart the cluster's engines")
            warnings.warn(
                f"engine(s) {', '.join(map(str, busy))} still run a point of a cancelled sweep"
                " that ignored the interrupt: this sweep runs without them",
                NbbacktestWarning, stacklevel=2)
        if self.wanted is not None:
            if self.wanted > len(ids):
                raise ClusterError(
                    f"engines={self.wanted} but the cluster has {len(ids)} engine(s) registered"
                )
            ids = ids[: self.wanted]
        self.cluster.share(result.data, self.data_key, ids)
        # An engine that did not answer (share warned, naming it) lacks the data: run without it.
        held = set(self.cluster.holds(self.data_key))
        ids = [e for e in ids if e in held]
        self.engines = ids
        result.engines = len(ids)
        result.events.emit(result._started_event())
        self.rows = result.pending_rows()
        self.timing = _TIMINGS.setdefault(self.cluster, Timing())
        self.cost_key = "|".join([self.data_key, *(f"{c.__module__}.{c.__qualname__}" for c in result.plan.classes),
                                   repr(result.settings)])
        known = self.timing.point_seconds.get(self.cost_key)
        if not self.rows:
            return
        if known is not None:
            self.point_seconds = known  # measured by an earlier sweep of the same job
            return
        # Measure one point here (it is also the first pending row: results are
        # identical wherever a point runs), so chunks are sized before anything is sent.
        local_key = self.hold_here()
        try:
            first, _ = worker.run_points(self.key, None, self.specs(self.rows[:1]))
        finally:
            worker.release_data([local_key])
        self.point_seconds = float(first.seconds[0])
        result._record(first, -1, worker.host_name())
        self.rows = self.rows[1:]

    def _still_stuck(self) -> list[int]:
        """Engines left stuck by a cancel (see :meth:`_unstick`) whose task has not ended."""
        stuck = _STUCK.get(self.cluster, {})
        for engine, tasks in list(stuck.items()):
            if all(task.done() for task in tasks) or engine not in self.cluster.ids:
                del stuck[engine]
                for task in tasks:
                    self._forget(task)
        return sorted(stuck)

    def targets(self, hosts: Mapping[int, str]) -> dict[int, list[int]]:
        """The planner's targets: engines of this host share chunks, in groups of up to
        :data:`SHARE_GROUP` (keyed by their first engine); any other engine is its own.

        Sharing needs a claim file every member can open, so only engines on the
        client's host share, and not when the caller fixed ``chunksize`` (points per task).
        """
        local = [e for e in self.engines if hosts.get(e) == self.cluster.host]
        if self.fixed_chunk is not None or len(local) < 2 or not worker.claims_supported():
            local = []
        groups = {group[0]: group for group in
                  (local[i : i + SHARE_GROUP] for i in range(0, len(local), SHARE_GROUP))}
        groups.update({e: [e] for e in self.engines if e not in local})
        return groups

    def run(self) -> None:
        import ipyparallel as ipp

        from nbbacktest.parallel.shared import SEGMENT_PREFIX, segment_dir

        result = self.result
        client = self.client
        timing = self.timing
        hosts = self.cluster.refresh_hosts(self.engines)
        groups = self.targets(hosts)
        board = None
        if any(len(members) > 1 for members in groups.values()):
            board = str(segment_dir() / f"{SEGMENT_PREFIX}{os.getpid()}-claims-{self.key}")
            worker.ClaimBoard.create(board)
        planner = ChunkPlanner(self.rows, self.point_seconds, groups, fixed=self.fixed_chunk,
                               round_trips=timing.round_trips, task_gap=timing.task_gap,
                               members={g: len(members) for g, members in groups.items()})
        views = {engine: client[engine] for engine in self.engines}
        outstanding: dict[Any, tuple[int, _Window]] = {}
        next_slot = 0  # the claim file's slot of the next shared chunk
        has_job: set[int] = set()
        # Engines that lost the data mid-sweep: when it was last sent again, how often.
        resent: dict[int, tuple[float, int]] = {}
        known_ids = set(client.ids)
        clock = time.perf_counter
        last_heard = last_probe = clock()
        try:
            while True:
                if result._cancel.is_set():
                    self._cancel(outstanding)
                    break
                now = clock()
                if outstanding and min(now - last_heard, now - last_probe) > CONTROLLER_CHECK:
                    # Nothing back for a while: a controller that died would leave the
                    # sweep waiting for ever, since ipyparallel's client does not notice.
                    last_probe = now
                    if not self._controller_answers():
                        self._controller_lost = True
                        raise ClusterError(
                            f"the cluster's controller stopped answering ({self._controller_url()}"
                            " refuses connections): the controller process died or was stopped;"
                            " restart the cluster")
                # Engines that joined get the data and take work; lost ones hand theirs back.
                current = set(client.ids)
                if current != known_ids:
                    for engine in sorted(current - known_ids - _KILLED.get(self.cluster, set())):
                        taking = sum(len(members) for members in groups.values())
                        if self.wanted is None or taking < self.wanted:
                            try:
                                self.cluster.share(result.data, self.data_key, [engine])
                                hosts.update(self.cluster.refresh_hosts([engine]))
                                views[engine] = client[engine]
                                groups[engine] = [engine]
                                planner.add_engine(engine)
                                result.events.emit(EngineAdded(engine=engine, host=hosts.get(engine, "")))
                            except Exception:
                                pass
                    for engine in sorted(known_ids - current):
                        self._lose(engine, groups, planner, outstanding)
                    known_ids = current
                if not planner.engines and time.monotonic() > self._replacing_until:
                    raise ClusterError("every engine of the sweep was lost")
                for target, chunk in planner.due(clock()):
                    members = groups[target]
                    specs = self.specs(chunk)
                    window = _Window(target, chunk, set(members), len(members), clock())
                    shared = (board, next_slot, len(members)) if len(members) > 1 else None
                    next_slot += 1
                    for engine in members:
                        blob = None if engine in has_job else self.job_blob
                        try:
                            ar = views[engine].apply_async(worker.run_points, self.key, blob,
                                                           specs, shared)
                        except (IndexError, ipp.error.NoEnginesRegistered):
                            # It unregistered since client.ids was read: its part of the
                            # chunk comes back empty, and the next pass sees it lost.
                            has_job.discard(engine)
                            self._settle(window, engine, worker.Rows.empty(), False, planner,
                                         clock())
                            continue
                        has_job.add(engine)
                        outstanding[ar] = (engine, window)
                if not outstanding:
                    if not (planner.remaining and time.monotonic() < self._replacing_until):
                        break
                    time.sleep(0.05)  # no engine left: waiting for the replacements
                    continue
                finished, _ = concurrent.futures.wait(
                    list(outstanding), timeout=0.05,
                    return_when=concurrent.futures.FIRST_COMPLETED,
                )
                self._report_slow(outstanding)
                if finished:
                    last_heard = clock()
                for ar in finished:
                    engine, window = outstanding.pop(ar)
                    lost = False
                    try:
                        out, interrupted = ar.get(timeout=0)
                    except (ipp.error.EngineError, ipp.error.TaskAborted) as error:
                        # the engine died or the task was dropped
                        out, interrupted = worker.Rows.empty(), False
                        lost = isinstance(error, ipp.error.EngineError)
                        has_job.discard(engine)
                    except ipp.RemoteError as error:
                        if error.ename == "KeyboardInterrupt":
                            out, interrupted = worker.Rows.empty(), True
                        elif error.ename in ("EngineError", "TaskAborted"):
                            # The controller reports an engine's death as a remote error.
                            out, interrupted = worker.Rows.empty(), False
                            lost = error.ename == "EngineError"
                            has_job.discard(engine)
                        else:
                            raise
                    finally:
                        self._forget(ar)
                    vanished = [row for row, (etype, message, _) in out.errors.items()
                                if etype == "KeyError" and self.data_key in message]
                    last, times = resent.get(engine, (-math.inf, 0))
                    if vanished and (window.sent < last or times < RESEND_DATA):
                        # The engine let the data go since share: send it again (once for
                        # the chunks sent before); _settle requeues these rows as unrun.
                        if window.sent >= last:
                            self.cluster.share(result.data, self.data_key, [engine])
                            resent[engine] = (clock(), times + 1)
                        out = out.without(vanished)
                    received = clock()
                    result._record(out, engine, hosts.get(engine))
                    if len(out.rows):
                        result.chunks.append((engine, len(out.rows), window.sent, received,
                                              ar.started, ar.completed))
                    # Another sweep's cancel interrupts the engines it shares with this
                    # one: only this sweep's own cancel (or stop_on_error) drops rows.
                    self._settle(window, engine, out, interrupted and result._cancel.is_set(),
                                 planner, received, lost)
        except BaseException as error:
            result._cancel.set()
            self._cancel(outstanding)
            self.finish(error)
            raise
        finally:
            if board is not None:
                with contextlib.suppress(OSError):
                    os.unlink(board)
        self._remember(planner)
        self.finish()

    def _settle(self, window: _Window, engine: int, out: worker.Rows, interrupted: bool,
                planner: ChunkPlanner, received: float, lost: bool = False) -> None:
        """One engine's part of ``window`` is back (``lost``: as an error, the engine
        died); once every part is, the planner learns the chunk's speed and gets back
        the rows no engine ran."""
        if lost:
            window.lost.add(engine)
            self._died.add(engine)
        window.waiting.discard(engine)
        window.ran.update(out.rows.tolist())
        window.seconds += float(out.seconds.sum())
        window.interrupted |= interrupted
        if window.waiting:
            return
        planner.done(window.target, len(window.ran), window.seconds / window.members, received)
        missing = [r for r in window.rows if r not in window.ran]
        if not missing or window.interrupted:
            return
        if not window.lost:
            planner.requeue(missing)
            return
        # An engine died running this chunk: one of its unrun points may have killed it.
        # They go out again one per task, so that a point that kills a second engine is
        # known, and is then a failed row instead of a third engine's death.
        for row in missing:
            self._kills[row] = self._kills.get(row, 0) + 1
        poisoned = [row for row in missing if self._kills[row] >= QUARANTINE_KILLS]
        again = [row for row in missing if self._kills[row] < QUARANTINE_KILLS]
        planner.requeue(again, alone=True)
        for dead in window.lost:
            self._requeued[dead] = self._requeued.get(dead, 0) + len(again)
        if poisoned:
            self._quarantine(poisoned, sorted(window.lost))

    def _quarantine(self, rows: list[int], engines: list[int]) -> None:
        """Rows whose point took down an engine each time it ran: failed, never run again."""
        out = worker.RowsBuilder()
        message = (f"killed its engine {QUARANTINE_KILLS} times (the last: engine"
                   f" {', '.join(map(str, engines))}); the point exits or crashes the process"
                   " (os._exit, a segfault, the out-of-memory killer) and is not run again")
        for row in rows:
            out.failed(row, ("EngineKilled", message, f"EngineKilled: {message}\n"), math.nan)
        self.result._record(out.build(), -1, None)

    def _lose(self, engine: int, groups: dict[int, list[int]], planner: ChunkPlanner,
              outstanding: dict[Any, tuple[int, _Window]]) -> None:
        """An engine left: its target loses it; what it had not run goes out again."""
        target = next((t for t, members in groups.items() if engine in members), None)
        if target is None:
            return
        groups[target].remove(engine)
        if not groups[target]:
            del groups[target]
            planner.remove_engine(target)
        self.cluster.forget_engine(engine)
        # Its chunks come back as errors and their rows are requeued then; what it
        # had not run of a shared chunk is run by the chunk's other engines or requeued
        # once they are back: either way other engines run it.
        mine = {window for e, window in outstanding.values() if e == engine or engine in window.lost}
        requeued = sum(len(w.rows) - len(w.ran) for w in mine) + self._requeued.pop(engine, 0)
        # Replaced only when it died working for this sweep: an engine killed before
        # (a stuck one, already replaced) that unregisters late is not this sweep's loss.
        worked = bool(mine) or engine in self._died
        replaced = worked and not self.result._cancel.is_set() and self.cluster.owned
        if replaced:
            # A cluster we started gets its engine back: in a thread, since starting
            # takes a moment, and the new engine takes work once it registers.
            self._replacing_until = time.monotonic() + REPLACE_WAIT
            threading.Thread(target=self._replace, name="nbbacktest-replace", daemon=True).start()
        self.result.events.emit(EngineLost(engine=engine, requeued=requeued, replaced=replaced))

    def _replace(self) -> None:
        try:
            self.cluster.start_engines(1)
        except Exception:  # the sweep goes on with the engines it has
            self._replacing_until = -math.inf

    def _remember(self, planner: ChunkPlanner) -> None:
        # The next sweep of the same job on this cluster starts from these measurements.
        costs = [clock.cost * clock.members for clock in planner.engines.values() if clock.points]
        if costs:
            self.timing.point_seconds[self.cost_key] = sum(costs) / len(costs)
        self.timing.round_trips.update(planner.round_trips)
        self.timing.task_gap = planner.task_gap

    def _report_slow(self, outstanding: dict[Any, tuple[int, _Window]]) -> None:
        # Engines publish a point that runs past warn_after into the task's metadata.
        metadata = self.client.metadata
        for ar, (engine, _window) in list(outstanding.items()):
            published = metadata.get(ar.msg_ids[0], {}).get("data")
            if published and worker.SLOW_KEY in published:
                row, seconds = published[worker.SLOW_KEY]
                self.result._slow(row, seconds, engine)

    def _controller_url(self) -> str:
        return str(getattr(self.client, "_config", {}).get("registration", "the controller"))

    def _controller_answers(self) -> bool:
        """False only when the controller's registration port refuses a connection."""
        url = self._controller_url()
        if not url.startswith("tcp://"):
            return True  # another transport: nothing to probe
        host, _, port = url[len("tcp://"):].rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return True
        except ConnectionRefusedError:
            return False
        except (OSError, ValueError):
            return True  # slow or unreachable for a moment is not proof of death

    def _cancel(self, outstanding: dict[Any, tuple[int, _Window]]) -> None:
        """Drop queued tasks, interrupt running ones, and collect the rows they finished."""
        if not outstanding or self._controller_lost:
            outstanding.clear()
            return
        client = self.client
        busy = sorted({engine for engine, _ in outstanding.values()} & set(client.ids))
        try:
            client.abort(jobs=list(outstanding), targets=busy, block=False)
            client.send_signal(signal.SIGINT, targets=busy, block=False)
        except Exception:
            pass
        deadline = time.monotonic() + CANCEL_WAIT
        while outstanding and time.monotonic() < deadline:
            finished, _ = concurrent.futures.wait(list(outstanding), timeout=0.1)
            for ar in finished:
                engine, _window = outstanding.pop(ar)
                try:
                    out, _ = ar.get(timeout=0)
                    self.result._record(out, engine, self.cluster._hosts.get(engine))
                except Exception:
                    pass
                finally:
                    self._forget(ar)
        stuck: dict[int, list[Any]] = {}
        for ar, (engine, _window) in outstanding.items():
            if not ar.done():
                stuck.setdefault(engine, []).append(ar)
        outstanding.clear()
        if stuck:
            self._unstick(self._busy(stuck))

    def _busy(self, late: dict[int, list[Any]]) -> dict[int, list[Any]]:
        """Of the engines whose tasks did not come back, those still running a point.

        A SIGINT that reaches an engine between two tasks can cost a task's reply
        while the engine itself is idle: such an engine answers a trivial task at
        once, where one still running a point cannot (it runs one task at a time).
        """
        ids = set(self.client.ids)
        probes = {engine: self.client[engine].apply_async(os.getpid) for engine in late if engine in ids}
        concurrent.futures.wait(list(probes.values()), timeout=PROBE_WAIT)
        busy = {}
        for engine, tasks in late.items():
            probe = probes.get(engine)
            if probe is not None and probe.done():
                for task in [*tasks, probe]:
                    self._forget(task)
            elif probe is not None:
                busy[engine] = [*tasks, probe]
        return busy

    def _unstick(self, stuck: dict[int, list[Any]]) -> None:
        """Engines whose points did not stop within CANCEL_WAIT of the interrupt (a point
        in one long C call, or one that catches KeyboardInterrupt and goes on).

        An engine of a cluster nbbacktest started is killed and a new one started; on
        a cluster connected to, it is left out of later sweeps until its task ends.
        """
        pids = self.cluster.pids if self.cluster.owned else {}
        killed = []
        for engine, tasks in stuck.items():
            pid = pids.get(engine)
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                killed.append(engine)
                _KILLED.setdefault(self.cluster, set()).add(engine)
                threading.Thread(target=self.cluster.start_engines, args=(1,),
                                 name="nbbacktest-replace", daemon=True).start()
            else:
                _STUCK.setdefault(self.cluster, {})[engine] = tasks
        # Until the controller sees them gone, the next sweep would still count on them.
        deadline = time.monotonic() + UNREGISTER_WAIT
        while set(killed) & set(self.client.ids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for engine in killed:
            self.cluster.forget_engine(engine)

    def _forget(self, ar: Any) -> None:
        # The client caches every result and its metadata; drop them so a sweep of
        # 100,000 points keeps only its own rows.
        try:
            self.client.purge_local_results(jobs=ar)
        except Exception:
            pass
