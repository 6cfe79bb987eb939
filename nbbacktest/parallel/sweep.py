"""The result of a sweep: :class:`SweepResult`, a Future over the rows as they arrive.

Read API only: the table, one row, the best run, the views, and the Future's
wait, cancel and result. The runners (:mod:`nbbacktest.parallel.runners`) write
through a :class:`SweepWriter`, the small interface that records chunks, reports
slow runs and ends the sweep; the rows themselves live in a
:class:`~nbbacktest.parallel.rows.RowStore`.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from nbbacktest.engine import views
from nbbacktest.engine.backtest import PreparedData, simulate
from nbbacktest.engine.portfolio import PortfolioStrategy
from nbbacktest.engine.portfolio_result import PortfolioResult
from nbbacktest.engine.result import Result
from nbbacktest.engine.strategy import Strategy
from nbbacktest.engine.universe import Universe
from nbbacktest.errors import SweepError
from nbbacktest.parallel.card import end_card
from nbbacktest.parallel.credibility import Credibility, credibility
from nbbacktest.parallel.events import (
    Cancelled,
    EventBus,
    Finished,
    PointDone,
    PointFailed,
    PointSlow,
    Started,
    SweepEvent,
)
from nbbacktest.parallel.grid import Plan
from nbbacktest.parallel.ranking import STABILITY_SUFFIX, neighbourhood_mean
from nbbacktest.parallel.rows import CANCELLED, Rows, RowStore, describe_row, row_params
from nbbacktest.parallel.run_returns import KeptReturns
from nbbacktest.parallel.spec import SweepSpec, check_metric

if TYPE_CHECKING:
    from nbbacktest.engine.backtest import Settings
    from nbbacktest.parallel.checkpoint import Checkpoint


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

    def __init__(self, spec: SweepSpec, data: pd.DataFrame | dict[str, pd.DataFrame]) -> None:
        super().__init__()
        self.spec = spec
        self.data = data
        self.events = EventBus()
        self.store = RowStore(spec.plan, spec.schema, spec.metric, spec.maximize, spec.min_trades)
        self._cancel = threading.Event()
        self._restored = 0
        #: The save directory's writer, when ``save=`` was given.
        self.checkpoint: Checkpoint | None = None
        #: The run card (:mod:`nbbacktest.parallel.card`): what makes the sweep
        #: reproducible, a JSON-able dict; set at launch, completed at the end.
        self.card: dict[str, Any] | None = None
        #: complete, cancelled, stopped (at an error), failed (the sweep itself) or running.
        self.status = "running"
        #: Why a sweep that did not complete ended.
        self.reason = ""
        self._slow_rows: set[int] = set()
        self.started = time.monotonic()
        self.seconds = math.nan
        self.engines = 0
        self._prepared: dict[str | None, PreparedData] = {}
        #: One record per chunk run on an engine: (engine, points, sent, received,
        #: started, completed); sent/received are perf_counter() seconds, started and
        #: completed the engine's datetimes. For diagnosing scheduling.
        self.chunks: list[tuple[Any, ...]] = []
        # Called while a blocking wait loops (a notebook display keeps its widgets
        # responsive this way, so that Cancel works while the cell runs).
        self._pollers: list[Callable[[], Any]] = []
        self._cancel_hooks: list[Callable[[], Any]] = []
        #: The runs' returns kept for :meth:`credibility` (None: ``returns_budget=0``, a universe).
        self.kept_returns = None if spec.returns is None else KeptReturns(spec.returns)
        self._credibility: dict[tuple[int, int, int], Credibility] = {}

    # ------------------------------------------------------------ the spec
    @property
    def plan(self) -> Plan:
        """Every run: its strategy class, params, symbol and seed."""
        return self.spec.plan

    @property
    def settings(self) -> Settings:
        """The simulation settings of every run."""
        return self.spec.settings

    @property
    def metric(self) -> str:
        """The stat ``best`` ranks by."""
        return self.spec.metric

    @property
    def maximize(self) -> bool:
        """Whether higher values of the metric are better."""
        return self.spec.maximize

    @property
    def min_trades(self) -> int:
        """Runs with fewer trades never become ``best`` (0: no minimum)."""
        return self.spec.min_trades

    @property
    def stop_on_error(self) -> bool:
        """Whether the sweep stops at its first failing run."""
        return self.spec.stop_on_error

    @property
    def warn_after(self) -> float:
        """Seconds after which a run still going is reported."""
        return self.spec.warn_after

    # ------------------------------------------------------------ Future API
    def __len__(self) -> int:
        return len(self.spec.plan)

    @property
    def progress(self) -> int:
        """Runs finished so far (done or failed)."""
        return self.store.counts()[0]

    @property
    def failed(self) -> int:
        """Runs that raised."""
        return self.store.counts()[1]

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

    @property
    def cancel_requested(self) -> bool:
        """True once :meth:`cancel` was called (or ``stop_on_error`` met an error)."""
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

    def result(self, timeout: float | None = None) -> pd.DataFrame:
        """Wait for the sweep and return :attr:`results`."""
        super().result(timeout)
        return self.results

    # ------------------------------------------------------------------ rows
    def pending_rows(self) -> list[int]:
        """Rows not finished yet, in grid order."""
        return self.store.pending_rows()

    def describe(self, i: int) -> str:
        """Row ``i``'s params as ``name=value, ...`` (and its symbol)."""
        return describe_row(self.spec.plan, i)

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` as a dict: params (and symbol), stats, error, engine, host, seconds."""
        return self.store.row(i)

    @property
    def results(self) -> pd.DataFrame:
        """Every run in grid order: params, stats, error, traceback, engine, host, seconds, status."""
        return self.store.table()

    def to_frame(self) -> pd.DataFrame:
        """A copy of :attr:`results`."""
        return self.results.copy()

    @property
    def best_index(self) -> int | None:
        """Row number of the best run by the metric (None if no run succeeded)."""
        return self.store.best.index

    @property
    def best(self) -> Strategy | None:
        """The best strategy instance by the metric (None if no run succeeded)."""
        row = self.store.best.index
        return None if row is None else self.spec.plan.strategy_at(row)

    @property
    def best_value(self) -> float:
        """The metric's best value so far (NaN before any success)."""
        return self.store.best.value

    def stability(self, metric: str | None = None) -> pd.Series:
        """Each run's ``metric`` (default: the sweep's) averaged with its grid neighbours'.

        A neighbour is the run one step up or down along one param of the grid, the
        other params and the symbol equal (:func:`~nbbacktest.parallel.ranking.neighbourhood_mean`).
        Runs that failed, are not finished, or have fewer trades than ``min_trades``
        count as missing: they are skipped as neighbours and their own score is NaN.
        A plateau of good runs then outranks a lone spike (see :attr:`best_stable`).

        Returns
        -------
        pandas.Series
            Named ``<metric>_stability``, indexed like :attr:`results`.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> from nbbacktest.engine.examples import SmaCross
        >>> sweep = nbb.sweep(SmaCross, nbb.load_sample("daily"),
        ...                   grid={"fast": [5, 10], "slow": [40]}, progress=False)
        >>> score = sweep.stability()
        >>> score.name, bool(score[0] == sweep.results["sharpe"].mean())
        ('sharpe_stability', True)
        """
        plan = self.spec.plan
        metric = self.metric if metric is None else metric
        if plan.grid is None or plan.is_mixed:
            raise SweepError("stability() needs a grid sweep (nbb.sweep): the runs of run_many"
                             " have no grid neighbours")
        frame = self.results
        if metric not in self.spec.schema.numeric:
            check_metric(metric, self.maximize, self.spec.schema)
        counted = frame["status"] == "done"
        if "too_few_trades" in frame:
            counted &= ~frame["too_few_trades"]
        values = frame[metric].astype(np.float64).where(counted).to_numpy()
        score = neighbourhood_mean(values, plan.values, plan.symbols)
        return pd.Series(score, index=frame.index, name=metric + STABILITY_SUFFIX)

    @property
    def best_stable_index(self) -> int | None:
        """Row number of the best run by :meth:`stability` (the first of equals; None if none)."""
        score = self.stability().to_numpy()
        if np.isnan(score).all():
            return None
        return int(np.nanargmax(score) if self.maximize else np.nanargmin(score))

    @property
    def best_stable(self) -> Strategy | None:
        """The best strategy instance by :meth:`stability`: the top of a plateau, not a spike."""
        row = self.best_stable_index
        return None if row is None else self.spec.plan.strategy_at(row)

    def credibility(self, blocks: int = 16, reps: int = 1000, seed: int = 0) -> Credibility:
        """Is the best run real? DSR, PBO (CSCV in ``blocks`` blocks) and SPA (``reps``
        bootstraps, ``seed``) from the runs' own returns; computed once, then cached.

        See :func:`nbbacktest.parallel.credibility.credibility` for what each field holds.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> from nbbacktest.engine.examples import SmaCross
        >>> sweep = nbb.sweep(SmaCross, nbb.load_sample("daily"),
        ...                   grid={"fast": [5, 10, 20], "slow": [40, 80]}, progress=False)
        >>> c = sweep.credibility(blocks=8, reps=100)
        >>> c.runs, c.kept, c.periods
        (6, 6, 2500)
        """
        key = (blocks, reps, seed)
        found = self._credibility.get(key)
        if found is None:
            found = credibility(self, blocks, reps, seed)
            self._credibility[key] = found
        return found

    def detail(self, i: int) -> Result | PortfolioResult:
        """Re-run row ``i`` locally (same seed, settings and data) and return its Result
        (a PortfolioResult for a portfolio strategy)."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(self):
            raise IndexError(f"detail(i) takes a row number from 0 to {len(self) - 1}, got {i!r}")
        plan = self.spec.plan
        if isinstance(self.data, Universe):
            from nbbacktest.engine.portfolio_sim import simulate_portfolio  # loads numba

            portfolio = cast(PortfolioStrategy, plan.strategy_at(int(i)))
            seed = plan.seed_at(int(i))
            return PortfolioResult(portfolio, self.data, self.settings, seed,
                                   simulate_portfolio(portfolio, self.data, self.settings, seed))
        symbol = plan.symbols[i]
        prepared = self._prepared.get(symbol)
        if prepared is None:
            frame = cast(pd.DataFrame, self.data if symbol is None else cast(dict, self.data)[symbol])
            prepared = self._prepared[symbol] = PreparedData.from_frame(frame)
        start = dict(self.spec.trade_starts).get(symbol, 0) if symbol is not None else 0
        if start:
            prepared = prepared.trading_from(start)
        strategy = plan.strategy_at(int(i))
        seed = plan.seed_at(int(i))
        run = simulate(strategy, prepared, self.settings, seed)
        return Result(strategy, prepared.window.index, self.settings, seed, run)

    # ------------------------------------------------------------ views (display layer)
    def table(self, top: int | None = 20, sort: str | None = None,
              columns: Sequence[str] | None = None, rank_by: str = "metric") -> Any:
        """The best ``top`` rows as a Plotly table, sorted by ``sort`` (default: the metric).

        ``rank_by="stability"`` ranks and colours the rows by :meth:`stability`
        instead (its ``<metric>_stability`` column comes first); "metric" by the metric.

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
        if rank_by not in ("metric", "stability"):
            raise SweepError(f"rank_by must be 'metric' or 'stability', got {rank_by!r}")
        if rank_by == "metric":
            return views.view("sweep_table")(self, top=top, sort=sort, columns=columns)
        score = self.stability()
        frame = self.results.assign(**{str(score.name): score})
        return views.view("sweep_table")(self, top=top, sort=sort, columns=columns, frame=frame,
                                         metric=score.name)

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

    def report(self, path: str | os.PathLike[str]) -> Path:
        """Write the sweep as one HTML file that opens offline in any browser; returns its path.

        The summary, the run card, every row (sortable), a chart of the metric over
        the grid, the best run's equity and drawdown, and the failures; plotly.js is
        inside the file, which asks for nothing over the network. A sweep still
        running is reported as far as it got.

        Parameters
        ----------
        path : str or os.PathLike
            The HTML file to write (replaced if it exists); its folder must exist.

        Examples
        --------
        >>> import shutil, tempfile
        >>> from pathlib import Path
        >>> import nbbacktest as nbb
        >>> from nbbacktest.engine.examples import SmaCross
        >>> sweep = nbb.sweep(SmaCross, nbb.load_sample("daily"),
        ...                   grid={"fast": [5, 10], "slow": [20, 40]}, progress=False)
        >>> folder = tempfile.mkdtemp()
        >>> path = sweep.report(Path(folder) / "sweep.html")
        >>> path.name, "SmaCross: complete" in path.read_text(encoding="utf-8")
        ('sweep.html', True)
        >>> shutil.rmtree(folder)
        """
        return cast(Path, views.view("sweep_report")(self, path))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": repr(self)}
        if views.available("sweep_bundle"):
            bundle.update(views.view("sweep_bundle")(self))
        return bundle

    def __repr__(self) -> str:
        best = "" if self.best is None else f", best {self.metric}={self.best_value:.4g}: {self.best!r}"
        why = f" ({self.reason})" if self.reason else ""
        return (
            f"<SweepResult {self.status}: {self.progress}/{len(self)} runs, "
            f"{self.failed} failed{best}{why}>"
        )


class SweepWriter:
    """What a runner may do to the sweep it runs: record rows, report, stop and end it.

    The one way into a :class:`SweepResult` from below: runners never touch its
    members. Every method may be called from the runner's thread.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.backtest import Settings
    >>> from nbbacktest.engine.examples import SmaCross
    >>> from nbbacktest.parallel.grid import plan_sweep
    >>> from nbbacktest.parallel.rows import RowsBuilder
    >>> result = SweepResult(SweepSpec(plan_sweep(SmaCross, {"fast": [5]}), Settings()),
    ...                      nbb.load_sample("daily"))
    >>> writer = SweepWriter(result)
    >>> writer.started(engines=0)
    >>> rows = RowsBuilder(result.spec.schema)
    >>> rows.failed(0, ("ValueError", "bad", ""), 0.01)
    >>> writer.record(rows.build(), engine=-1, host="here")
    >>> writer.finish()
    >>> result.status, result.failed
    ('complete', 1)
    """

    def __init__(self, result: SweepResult) -> None:
        self.result = result
        self.spec = result.spec
        self.data = result.data

    @property
    def stopping(self) -> bool:
        """True once the sweep was cancelled or stopped at an error: run nothing more."""
        return self.result._cancel.is_set()

    def stop(self) -> None:
        """Stop the sweep (a runner that saw the interrupt, or a failure)."""
        self.result._cancel.set()

    def on_cancel(self, hook: Callable[[], Any]) -> None:
        """Call ``hook()`` when the user cancels (a runner interrupts its points)."""
        self.result._cancel_hooks.append(hook)

    def pending_rows(self) -> list[int]:
        """Rows not finished yet, in grid order."""
        return self.result.store.pending_rows()

    def emit(self, event: SweepEvent) -> None:
        """Tell the sweep's observers."""
        self.result.events.emit(event)

    def started(self, engines: int) -> None:
        """The sweep runs on ``engines`` engines (0: in this process): emit Started."""
        result = self.result
        result.engines = engines
        finished, failed = result.store.counts()
        self.emit(Started(total=len(result), engines=engines, metric=self.spec.metric,
                          maximize=self.spec.maximize, finished=result._restored, failed=failed,
                          best=result.store.best.value))

    def restore(self, saved: Any) -> None:
        """Take the runs a checkpoint holds as finished (they will not run again)."""
        self.result._restored = self.result.store.restore(saved)

    def record(self, rows: Rows, engine: int, host: str | None) -> None:
        """Store a chunk's finished runs, save them, and emit one event per run."""
        result = self.result
        store = result.store
        with store.lock:
            fresh = store.store(rows, engine, host)
            if not len(fresh):
                return
            if rows.returns is not None and result.kept_returns is not None:
                result.kept_returns.add(rows.returns)
            finished = rows.rows[fresh].tolist()
            if result.checkpoint is not None:
                result.checkpoint.append([store.saved(r) for r in finished], result.describe)
        if result.events.observed:
            values = store.metric_values(rows, fresh)
            unranked = store.too_few_trades(rows, fresh).tolist()
            result.events.emit_many(
                PointFailed(index=row, source=result) if row in rows.errors
                else PointDone(index=row, value=value, ranked=not few, source=result)
                for row, value, few in zip(finished, values, unranked))
        if self.spec.stop_on_error and store.first_error is not None:
            result._cancel.set()

    def ran_chunk(self, record: tuple[Any, ...]) -> None:
        """Keep a chunk's timing record (see ``SweepResult.chunks``)."""
        self.result.chunks.append(record)

    def slow(self, row: int, seconds: float, engine: int | None) -> None:
        """A run has been going for ``seconds`` past ``warn_after``: say so, once."""
        result = self.result
        with result.store.lock:
            if row in result._slow_rows:
                return
            result._slow_rows.add(row)
        self.emit(PointSlow(index=row, params=row_params(self.spec.plan, row), seconds=seconds,
                            engine=engine))

    def finish(self, crash: BaseException | None = None) -> None:
        """End the sweep: complete, cancelled, stopped (at an error) or failed (``crash``)."""
        result = self.result
        store = result.store
        reason = ""
        if crash is not None:
            store.mark_unfinished_cancelled()
            status, reason = "failed", f"{type(crash).__name__}: {crash}"
        elif result._cancel.is_set():
            store.mark_unfinished_cancelled()
            row = store.first_error
            if self.spec.stop_on_error and row is not None:
                etype, message, _ = store.errors[row]
                status = "stopped"
                reason = (f"stopped at the first failure: row {row} ({result.describe(row)}) raised"
                          f" {etype}: {message}")
            else:
                status = "cancelled"
            self.emit(Cancelled(done=result.progress, total=len(result)))
        else:
            unfinished = store.mark_unfinished_cancelled()
            status = "complete"
            if unfinished:  # a sweep is complete only when every row is done or failed
                status, reason = "failed", f"{unfinished} row(s) never came back from the engines"
        result.seconds = time.monotonic() - result.started
        result.status, result.reason = status, reason
        if result.card is not None:
            end_card(result.card, result)
        if result.checkpoint is not None:
            if result.card is not None:
                result.checkpoint.write_card(result.card)
            if result.kept_returns is not None:
                result.kept_returns.save(result.checkpoint.folder)
            result.checkpoint.close()
        finished, failed = store.counts()
        self.emit(Finished(done=finished - failed, failed=failed, cancelled=store.count(CANCELLED),
                           seconds=result.seconds, status=status, reason=reason))
        if crash is not None:
            result.set_exception(crash)  # result() and exception() give what stopped the sweep
        else:
            result.set_result(None)

    def settle(self, status: str, reason: str, seconds: float = math.nan) -> None:
        """End a sweep that runs nothing (one loaded from its checkpoint): its unfinished rows
        are cancelled, and status, reason and seconds are as given; no event, no write."""
        result = self.result
        result.store.mark_unfinished_cancelled()
        result.status, result.reason, result.seconds = status, reason, seconds
        result.set_result(None)

