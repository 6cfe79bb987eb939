"""Walk-forward analysis: :func:`walk_forward` and its :class:`WalkForwardResult`.

The data is cut into folds: a training window followed by a test window, the
test windows consecutive and ``test`` long, after an initial ``train`` window.
Rolling folds slide the training window with the test window; anchored folds
always train from the data's first bar. In each fold every grid point is
backtested on both windows; the best point on the training window is the fold's
choice, and its test-window run is the out-of-sample result.

Every window runs with warm-up: its run gets the bars before the window as
history (from the data's first bar, or ``warmup`` bars before it), so indicators
are defined when the window opens, and trades only inside the window
(``PreparedData.trading_from``). All folds times points are one sweep over a
universe whose "symbols" are the windows (``"fold 3 train"``, ``"fold 3
test"``), each carrying the bar it trades from (``SweepSpec.trade_starts``): the
engines stay busy across folds, and the sweep's data sharing, checkpoints
(``save=``, ``resume=``), cancel and engine-loss handling apply unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import Any, NamedTuple, cast

import numpy as np
import pandas as pd

from nbbacktest.engine import views
from nbbacktest.engine.backtest import Settings
from nbbacktest.engine.data import format_timestamp, is_universe, validate_data
from nbbacktest.engine.strategy import Strategy
from nbbacktest.errors import SweepError
from nbbacktest.parallel.cluster import Cluster
from nbbacktest.parallel.grid import plan_sweep
from nbbacktest.parallel.launch import launch
from nbbacktest.parallel.spec import SweepSpec, check_metric
from nbbacktest.parallel.sweep import SweepResult

__all__ = ["Fold", "WalkForwardResult", "fold_windows", "walk_forward"]

#: A window's length: a number of bars, or a pandas offset or Timedelta string.
Length = int | str | pd.Timedelta | pd.DateOffset

# "3Y", "6M", "2 years", "90D": the calendar units a DateOffset counts (months and
# years have no fixed length, so they are not Timedeltas); anything else goes to
# pd.Timedelta ("90D", "12h", "1h30min").
_CALENDAR = re.compile(r"^\s*(\d+)\s*(y|yr|yrs|years?|m|mo|months?|w|weeks?)\s*$", re.IGNORECASE)
_CALENDAR_UNITS = {"y": "years", "m": "months", "w": "weeks"}


class Fold(NamedTuple):
    """One fold's windows as bar positions, ``[begin, end)``: train, then test."""

    number: int
    train_begin: int
    train_end: int
    test_begin: int
    test_end: int


def _offset(length: Length, name: str) -> pd.DateOffset | pd.Timedelta:
    """A time length as a DateOffset (years, months, weeks) or a Timedelta."""
    if isinstance(length, (pd.DateOffset, pd.Timedelta)):
        offset: pd.DateOffset | pd.Timedelta = length
    elif isinstance(length, str):
        match = _CALENDAR.match(length)
        if match:
            unit = match.group(2)[0].lower()
            offset = pd.DateOffset(**{_CALENDAR_UNITS[unit]: int(match.group(1))})  # type: ignore[arg-type]
        else:
            try:
                offset = pd.Timedelta(length)
            except ValueError:
                raise SweepError(f"{name}={length!r} is not a length: give a number of bars or"
                                 " a pandas offset such as '3Y', '6M', '90D' or '12h'") from None
    else:
        raise SweepError(f"{name} must be a number of bars or a length such as '3Y' or '6M',"
                         f" got {type(length).__name__} {length!r:.60}")
    base = pd.Timestamp("2000-01-01")
    if not base + offset > base:
        raise SweepError(f"{name}={length!r} is not a positive length: a window needs at least one bar")
    return offset


def fold_windows(index: pd.DatetimeIndex, train: Length, test: Length,
                 anchored: bool = False) -> list[Fold]:
    """The folds of a walk-forward analysis on ``index``, as bar positions.

    Fold ``k`` (from 0) tests from ``first + train + k * test`` to that plus
    ``test``; its training window ends where its test begins and starts at the
    first bar (``anchored``) or ``k * test`` after it (rolling). A time boundary
    falls on the first bar at or after it. A fold is complete, and kept, when the
    data reaches its end: a bar at or after it, or the last bar at most one bar
    spacing (the median) before it. With lengths in bars the same holds in bars.

    Raises
    ------
    SweepError
        ``train`` or ``test`` is not a positive length, shorter than one bar,
        longer than the data, or no complete fold fits.

    Examples
    --------
    >>> index = pd.date_range("2020-01-01", periods=10)
    >>> [tuple(f) for f in fold_windows(index, 4, 3)]
    [(1, 0, 4, 4, 7), (2, 3, 7, 7, 10)]
    >>> [tuple(f) for f in fold_windows(index, "4D", "3D", anchored=True)]
    [(1, 0, 4, 4, 7), (2, 0, 7, 7, 10)]
    """
    n = len(index)
    bars = [isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in (train, test)]
    for name, value, counted in (("train", train, bars[0]), ("test", test, bars[1])):
        if counted and value < 1:  # type: ignore[operator]
            raise SweepError(f"{name}={value} is shorter than one bar: give at least 1 bar")
    if any(bars) and not all(bars):
        raise SweepError(f"train={train!r} and test={test!r} must both be numbers of bars or both"
                         " lengths of time")
    span = f"the data has {n} bars, {format_timestamp(index[0])} to {format_timestamp(index[-1])}"
    folds: list[Fold] = []
    if all(bars):
        train_n, test_n = int(cast(int, train)), int(cast(int, test))
        for name, value in (("train", train_n), ("test", test_n)):
            if value > n:
                raise SweepError(f"{name}={value} bars is longer than the data ({span})")
        k = 0
        while train_n + (k + 1) * test_n <= n:
            begin = k * test_n
            middle = begin + train_n
            folds.append(Fold(k + 1, 0 if anchored else begin, middle, middle, middle + test_n))
            k += 1
    else:
        train_off, test_off = _offset(train, "train"), _offset(test, "test")
        first, last = index[0], index[-1]
        spacing = pd.Series(index).diff().median() if n > 1 else pd.Timedelta(0)
        for name, value, offset in (("train", train, train_off), ("test", test, test_off)):
            if first + offset - first < spacing:
                raise SweepError(f"{name}={value!r} is shorter than one bar (the bars are"
                                 f" {spacing} apart): give a longer window")
            if first + offset > last + spacing:
                raise SweepError(f"{name}={value!r} is longer than the data ({span})")
        k = 0
        while True:
            begin_t = first + test_off * k if k else first
            middle_t = begin_t + train_off
            end_t = middle_t + test_off
            if end_t > last + spacing:
                break
            begin, middle, end = (int(i) for i in index.searchsorted([begin_t, middle_t, end_t]))
            folds.append(Fold(k + 1, 0 if anchored else begin, middle, middle, end))
            k += 1
        empty = [f.number for f in folds if f.test_end <= f.test_begin or f.train_end <= f.train_begin]
        if empty:
            raise SweepError(f"fold {empty[0]} has a window without a bar: train={train!r} or"
                             f" test={test!r} is shorter than the gaps in the data")
    if not folds:
        raise SweepError(f"no complete fold fits: train={train!r} plus test={test!r} is longer than"
                         f" the data ({span}); shorten train or test")
    return folds


def _history_begin(index: pd.DatetimeIndex, begin: int, warmup: Length | None) -> int:
    """Where the history of a window starting at bar ``begin`` starts."""
    if warmup is None:
        return 0
    if isinstance(warmup, (int, np.integer)) and not isinstance(warmup, bool):
        if warmup < 0:
            raise SweepError(f"warmup must be 0 or more bars, got {warmup!r}")
        return max(0, begin - int(warmup))
    offset = _offset(warmup, "warmup")
    return int(index.searchsorted(index[begin] - offset, side="left"))


def walk_forward(
    strategy: type[Strategy] | Strategy,
    data: pd.DataFrame | Mapping[str, pd.DataFrame],
    grid: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    train: Length = "3Y",
    test: Length = "6M",
    anchored: bool = False,
    metric: str = "sharpe",
    maximize: bool = True,
    min_trades: int = 0,
    where: Callable[[Any], bool] | str | None = None,
    warmup: Length | None = None,
    engines: int | str | None = None,
    cluster: Cluster | None = None,
    save: Any = None,
    resume: bool | str = False,
    progress: bool | Callable[[SweepResult], Any] | None = None,
    block: bool = True,
    **settings: Any,
) -> WalkForwardResult:
    """Walk-forward analysis: choose the best point on each training window, test it on the next.

    Parameters
    ----------
    strategy : Strategy subclass (or instance, whose values fill params not in the grid)
    data : DataFrame
        One instrument. A universe is not supported yet: its windows already fill
        the sweep's symbol slot, and choosing per symbol or across symbols is a
        rule still to be defined.
    grid : dict of iterables, or a list of such dicts
        The points to try in every fold (as in :func:`nbbacktest.sweep`).
    train, test : int or str
        Window lengths: a number of bars, or a pandas offset or Timedelta string
        ("3Y", "6M", "90D", "12h"). See :func:`fold_windows` for the boundaries.
    anchored : bool
        Train from the data's first bar in every fold (else the training window
        rolls forward with the test window).
    metric, maximize
        What chooses a fold's point: the best in-sample value (ties: the first
        point in grid order).
    min_trades : int
        Points with fewer in-sample trades are never chosen. A fold where no point
        qualifies has no choice: it stays in cash.
    where : callable or str, optional
        Filter of the grid's points (as in :func:`nbbacktest.sweep`).
    warmup : int or str, optional
        History each window's run sees before it: None (default) from the data's
        first bar; a number of bars or a length bounds it.
    engines, cluster, save, resume, progress, block
        As in :func:`nbbacktest.sweep`: all folds and points run as one sweep.
    **settings
        Simulation settings (cash, commission, slippage, fill, ...), as in
        :func:`nbbacktest.backtest`.

    Returns
    -------
    WalkForwardResult
        Its properties wait for the sweep when ``block=False``.

    Notes
    -----
    A run's seed is derived from the sweep's seed, its params and its window's
    name, so a strategy that draws random numbers does not repeat the draws of a
    plain :func:`nbbacktest.backtest` on the same window.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> wf = nbb.walk_forward(SmaCross, nbb.load_sample("daily"), {"fast": [5, 10], "slow": [30, 60]},
    ...                       train="3Y", test="1Y", progress=False)
    >>> len(wf.folds), wf.folds["test_start"].iloc[0].year
    (6, 2017)
    >>> bool(wf.equity.index[0] == wf.folds["test_start"].iloc[0])
    True
    """
    if not isinstance(data, pd.DataFrame) and is_universe(data):
        raise SweepError(
            f"walk_forward runs one instrument, but data is a universe of {len(data)} symbols:"
            " a universe is not supported yet (the fold windows already are the sweep's"
            " symbols, and whether to choose per symbol or across symbols is still open);"
            f" pass one frame such as data[{next(iter(data))!r}]")
    check_metric(metric, maximize)
    if not isinstance(anchored, (bool, np.bool_)):
        raise TypeError(f"anchored must be True or False, got {anchored!r}")
    options = Settings.from_options(settings, "walk_forward")
    frame = cast(pd.DataFrame, validate_data(data, name="data"))
    index = cast(pd.DatetimeIndex, frame.index)
    folds = fold_windows(index, train, test, bool(anchored))
    windows: dict[str, pd.DataFrame] = {}
    starts: list[tuple[str, int]] = []
    for fold in folds:
        for part, begin, end in (("train", fold.train_begin, fold.train_end),
                                 ("test", fold.test_begin, fold.test_end)):
            history = _history_begin(index, begin, warmup)
            key = f"fold {fold.number} {part}"
            windows[key] = frame.iloc[history:end]
            starts.append((key, begin - history))
    plan = plan_sweep(strategy, grid, where=where, symbols=list(windows))
    spec = SweepSpec(plan, options, metric, maximize, min_trades=min_trades,
                     trade_starts=tuple(starts))
    sweep = launch(spec, windows, engines=engines, cluster=cluster, progress=progress,
                   block=block, save=save, resume=resume)
    layout = {"train": train, "test": test, "anchored": bool(anchored)}
    return WalkForwardResult(sweep, folds, frame, layout)


class WalkForwardResult:
    """The outcome of :func:`walk_forward`: folds, stitched out-of-sample equity, efficiency.

    Attributes
    ----------
    sweep : SweepResult
        The underlying sweep: one row per grid point and window ("fold 3 train",
        "fold 3 test"), in grid order, windows fastest.
    windows : list of Fold
        Each fold's windows as bar positions of the data.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> wf = nbb.walk_forward(SmaCross, nbb.load_sample("daily"), {"fast": [5, 10], "slow": [40]},
    ...                       train=750, test=250, anchored=True, progress=False)
    >>> wf.folds[["fold", "fast", "slow"]].shape
    (7, 3)
    >>> repr(wf).startswith("<WalkForwardResult SmaCross: 7 anchored folds")
    True
    """

    def __init__(self, sweep: SweepResult, windows: list[Fold], data: pd.DataFrame,
                 layout: Mapping[str, Any]) -> None:
        self.sweep = sweep
        self.windows = windows
        self.data = data
        self.layout = dict(layout)

    @property
    def metric(self) -> str:
        """The stat each fold's point is chosen by."""
        return self.sweep.metric

    def _frame(self) -> pd.DataFrame:
        return self._results

    @cached_property
    def _results(self) -> pd.DataFrame:
        self.sweep.wait()
        return self.sweep.results

    def _rows(self, fold: Fold) -> tuple[int | None, int | None]:
        """The chosen point's train and test rows in the sweep (None, None: no choice)."""
        frame = self._frame()
        symbols = len(self.sweep.plan.universe or ())
        column = 2 * (fold.number - 1)
        train = frame.iloc[column::symbols]
        ok = (train["status"] == "done") & train[self.metric].notna()
        if self.sweep.min_trades:
            ok &= train["trades"] >= self.sweep.min_trades
        if not ok.any():
            return None, None
        values = train[self.metric].where(ok).to_numpy(dtype=float, na_value=np.nan)
        best = np.nanargmax(values) if self.sweep.maximize else np.nanargmin(values)  # first of ties
        row = column + symbols * int(best)
        return row, row + 1

    @cached_property
    def folds(self) -> pd.DataFrame:
        """One row per fold: windows (first and last bar), chosen params, metric in and out of sample.

        Columns: fold, train_start, train_end, test_start, test_end, the chosen
        params, ``is_<metric>`` and ``oos_<metric>``, ``is_cagr_pct``,
        ``oos_cagr_pct``, ``oos_return_pct`` and ``trades`` (out of sample).
        """
        frame, index, metric = self._frame(), self.data.index, self.metric
        names = self.sweep.plan.names
        records = []
        for fold in self.windows:
            train_row, test_row = self._rows(fold)
            record: dict[str, Any] = {
                "fold": fold.number,
                "train_start": index[fold.train_begin], "train_end": index[fold.train_end - 1],
                "test_start": index[fold.test_begin], "test_end": index[fold.test_end - 1],
            }
            chosen = None if train_row is None else frame.iloc[train_row]
            tested = None if test_row is None else frame.iloc[test_row]
            for name in names:
                record[name] = None if chosen is None else chosen[name]
            for prefix, row in (("is", chosen), ("oos", tested)):
                record[f"{prefix}_{metric}"] = np.nan if row is None else row[metric]
                record[f"{prefix}_cagr_pct"] = np.nan if row is None else row["cagr_pct"]
            record["oos_return_pct"] = np.nan if tested is None else tested["return_pct"]
            record["trades"] = 0 if tested is None or pd.isna(tested["trades"]) else int(tested["trades"])
            records.append(record)
        return pd.DataFrame.from_records(records)

    @cached_property
    def equity(self) -> pd.Series:
        """The stitched out-of-sample equity: each fold's test equity, chained from the cash.

        Fold ``k``'s test run starts from ``cash``; its equity is scaled by the
        equity the folds before it ended with over ``cash``. A fold without a choice
        holds its equity flat.
        """
        cash = self.sweep.settings.cash
        capital, parts = cash, []
        for fold in self.windows:
            test_row = self._rows(fold)[1]
            if test_row is None or self._frame()["status"].iloc[test_row] != "done":
                bars = self.data.index[fold.test_begin:fold.test_end]
                curve = pd.Series(capital, index=bars, dtype=float)
            else:
                curve = self.sweep.detail(test_row).equity * (capital / cash)
            parts.append(curve)
            capital = float(curve.iloc[-1])
        return pd.concat(parts).rename("equity")

    @cached_property
    def buy_and_hold(self) -> pd.Series:
        """Buy and hold over the out-of-sample span, from the same cash at the first close."""
        span = slice(self.windows[0].test_begin, self.windows[-1].test_end)
        close = self.data["Close"].iloc[span]
        return (close / close.iloc[0] * self.sweep.settings.cash).rename("buy_and_hold")

    @cached_property
    def efficiency(self) -> float:
        """Walk-forward efficiency: out-of-sample CAGR over in-sample CAGR, averaged over folds.

        For each fold, the chosen point's annualised return (``cagr_pct``) on the
        test window divided by its annualised return on the training window; the
        mean over the folds whose in-sample CAGR is positive (a ratio to a loss or
        to nothing means nothing). NaN when no fold qualifies. Near 1: the choice
        kept its in-sample pace out of sample; near 0 or below: it did not.
        """
        folds = self.folds
        usable = folds["is_cagr_pct"] > 0
        if not usable.any():
            return float("nan")
        ratio = folds.loc[usable, "oos_cagr_pct"] / folds.loc[usable, "is_cagr_pct"]
        return float(ratio.mean())

    @property
    def return_pct(self) -> float:
        """The stitched out-of-sample return, in percent."""
        return (float(self.equity.iloc[-1]) / self.sweep.settings.cash - 1.0) * 100.0

    # ------------------------------------------------------------ views (display layer)
    def table(self) -> Any:
        """The fold table as a Plotly table."""
        return views.view("walk_forward_table")(self)

    def plot(self) -> Any:
        """Stitched out-of-sample equity against buy and hold, fold boundaries marked."""
        return views.view("walk_forward_equity")(self)

    def params_chart(self) -> Any:
        """The chosen params across folds, one panel per param."""
        return views.view("walk_forward_params")(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": repr(self)}
        if views.available("walk_forward_bundle"):
            bundle.update(views.view("walk_forward_bundle")(self))
        return bundle

    def summary(self) -> str:
        """One line: folds, the out-of-sample return against buy and hold, efficiency."""
        kind = "anchored" if self.layout["anchored"] else "rolling"
        names = ", ".join(c.__name__ for c in self.sweep.plan.classes)
        hold = (float(self.buy_and_hold.iloc[-1]) / self.sweep.settings.cash - 1.0) * 100.0
        return (f"{names}: {len(self.windows)} {kind} folds (train {self.layout['train']},"
                f" test {self.layout['test']}), out-of-sample return {self.return_pct:.2f} % vs"
                f" buy & hold {hold:.2f} %, efficiency {self.efficiency:.3g}, sweep {self.sweep.status}")

    def __repr__(self) -> str:
        return f"<WalkForwardResult {self.summary()}>\n{self.folds.to_string(index=False)}"
