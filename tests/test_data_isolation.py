"""Each run sees data it cannot change for others: a private frame over read-only columns.

A strategy that keeps an indicator as a column of ``data`` used to write it into the
frame every run shares (and into the caller's own frame): the next run read another
run's column, in-process and on the engines alike, each in its own order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.engine.backtest import PreparedData, Settings, simulate
from nbbacktest.engine.metrics import NUMERIC_STATS
from nbbacktest.engine.readonly import read_only_frame, read_only_index
from nbbacktest.errors import NbbacktestWarning, StrategyError

pytestmark = pytest.mark.timeout(120)

FAST = [5, 10, 20, 40]


class CachedSma(nbb.Strategy):
    """Keeps its average as a column of data, computed once: what leaked between runs."""

    fast = nbb.Param(10, low=2, high=100)

    def signals(self, data):
        if "sma" not in data:
            data["sma"] = data["Close"].rolling(self.fast).mean()
        return (data["Close"] > data["sma"]).astype(float)


class SmoothedClose(nbb.Strategy):
    """Replaces the Close column by its average: every later run smoothed it again."""

    fast = nbb.Param(10, low=2, high=100)

    def signals(self, data):
        data["Close"] = data["Close"].rolling(self.fast, min_periods=1).mean()
        return (data["Close"] > data["Open"]).astype(float)


class EventCachedSma(nbb.Strategy):
    """The event-driven form: a column added to ``self.data`` in ``init``."""

    fast = nbb.Param(10, low=2, high=100)

    def init(self):
        if "sma" not in self.data:
            self.data["sma"] = self.data["Close"].rolling(self.fast).mean()
        self.sma = self.indicator(lambda d: d["sma"])

    def next(self, bar):
        if bar.close > self.sma[bar.i] and not self.position:
            self.buy()
        elif bar.close < self.sma[bar.i] and self.position:
            self.close()


#: Ways to write into the values under a frame, each one numpy array of it.
WRITES = {
    "values": lambda data: data["Close"].values.__setitem__(slice(None), 1.0),
    "to_numpy": lambda data: data["Close"].to_numpy().__setitem__(slice(None), 1.0),
    "frame_values": lambda data: data.values.__setitem__((slice(None), 3), 1.0),
    "array": lambda data: data["Close"].array.__setitem__(slice(None), 1.0),
    "index": lambda data: data.index.asi8.__setitem__(0, 0),
}


class WritesInPlace(nbb.Strategy):
    """Writes through a numpy array of data (``how``), then trades above the average."""

    how = nbb.Param("array", choices=list(WRITES))

    def signals(self, data):
        WRITES[self.how](data)
        return (data["Close"] > data["Close"].rolling(10).mean()).astype(float)


def stats_of(table: pd.DataFrame, row: int) -> dict[str, float]:
    return {name: table.loc[row, name] for name in NUMERIC_STATS}


def assert_rows_are_lone_backtests(sweep, data, strategy_class) -> None:
    """Every row's stats equal, to the bit, a backtest of that point alone."""
    table = sweep.results
    assert table.status.eq("done").all(), table.get("error")
    for row in range(len(table)):
        frame = data if "symbol" not in table else data[table.loc[row, "symbol"]]
        alone = nbb.backtest(strategy_class(fast=int(table.loc[row, "fast"])), frame)
        expected = {name: alone.stats[name] for name in NUMERIC_STATS}
        assert stats_of(table, row) == pytest.approx(expected, rel=0, abs=0, nan_ok=True), row


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=["engine", "host", "seconds"])


@pytest.fixture
def data() -> pd.DataFrame:
    return nbb.load_sample("daily").iloc[:800]


@pytest.mark.parametrize("strategy_class", [CachedSma, SmoothedClose, EventCachedSma])
def test_backtest_leaves_the_callers_frame_alone_and_runs_do_not_leak(strategy_class, data):
    before = data.copy()
    first = nbb.backtest(strategy_class(fast=5), data)
    second = nbb.backtest(strategy_class(fast=40), data)
    pd.testing.assert_frame_equal(data, before, check_exact=True)
    # The second run computed its own average, not the first one's.
    again = nbb.backtest(strategy_class(fast=40), before.copy())
    pd.testing.assert_series_equal(second.stats, again.stats, check_exact=True)
    assert first.stats["return_pct"] != second.stats["return_pct"]


@pytest.mark.parametrize("strategy_class", [CachedSma, SmoothedClose, EventCachedSma])
def test_in_process_sweep_rows_equal_lone_backtests(strategy_class, data):
    before = data.copy()
    sweep = nbb.sweep(strategy_class, data, {"fast": FAST}, progress=False, engines=1)
    pd.testing.assert_frame_equal(data, before, check_exact=True)
    assert_rows_are_lone_backtests(sweep, before, strategy_class)
    # detail() re-runs on the sweep's data: the same again
    assert sweep.detail(3).stats["sharpe"] == sweep.results.loc[3, "sharpe"]


def test_runs_on_one_prepared_frame_see_their_own_columns(data):
    prepared = PreparedData.from_frame(data)
    settings = Settings()
    shared = [simulate(CachedSma(fast=fast), prepared, settings, 0).stats for fast in FAST]
    alone = [simulate(CachedSma(fast=fast), PreparedData.from_frame(data), settings, 0).stats
             for fast in FAST]
    assert shared == alone
    assert list(prepared.run_frame().columns) == list(data.columns)


@pytest.mark.parametrize("how", list(WRITES))
def test_a_write_into_the_values_raises_and_changes_nothing(how, data):
    before = data.copy()
    with pytest.raises(StrategyError, match="read-only") as caught:
        nbb.backtest(WritesInPlace(how=how), data)
    assert isinstance(caught.value.__cause__, ValueError)
    pd.testing.assert_frame_equal(data, before, check_exact=True)


def test_a_sweep_point_that_writes_into_the_values_is_an_error_row(data):
    before = data.copy()
    with pytest.warns(NbbacktestWarning, match="every run of the sweep failed"):
        sweep = nbb.sweep(WritesInPlace, data, {"how": list(WRITES)}, progress=False)
    assert sweep.results.status.eq("failed").all()
    assert sweep.results.error.str.contains("read-only").all()
    pd.testing.assert_frame_equal(data, before, check_exact=True)


def test_extra_columns_of_other_types_are_read_only_too(data):
    frame = data.assign(
        Note=["x"] * len(data),
        Lots=np.arange(len(data)),
        Seen=data.index.tz_localize("UTC"),
    )
    before = frame.copy()
    shared = read_only_frame(frame)
    pd.testing.assert_frame_equal(shared, frame, check_exact=True)
    for column in ("Close", "Lots", "Seen"):
        with pytest.raises(ValueError, match="read-only"):
            shared[column].array[:2] = shared[column].array[2:4]
    shared["Lots"] = 0  # a column assignment stays in the shared frame's copy
    pd.testing.assert_frame_equal(frame, before, check_exact=True)


def test_read_only_index_keeps_times_name_and_frequency():
    index = pd.date_range("2024-01-01", periods=50, freq="h", tz="Europe/Paris", name="time")
    shared = read_only_index(index)
    assert shared.equals(index) and shared.name == "time" and shared.freq == index.freq
    assert shared.tz == index.tz and not shared.asi8.flags.writeable
    assert index.asi8.flags.writeable  # the caller's index is untouched
    frame = pd.DataFrame({"Open": 1.0, "High": 2.0, "Low": 1.0, "Close": 2.0}, index=index)
    result = nbb.backtest(CachedSma(fast=3), frame)
    pd.testing.assert_index_equal(result.equity.index, index)  # frequency included


def test_universe_sweep_in_process_leaves_the_frames_alone(small_universe):
    before = {symbol: frame.copy() for symbol, frame in small_universe.items()}
    sweep = nbb.sweep(CachedSma, small_universe, {"fast": FAST}, progress=False)
    for symbol, frame in small_universe.items():
        pd.testing.assert_frame_equal(frame, before[symbol], check_exact=True)
    assert_rows_are_lone_backtests(sweep, before, CachedSma)


@pytest.mark.parametrize("strategy_class", [CachedSma, EventCachedSma])
def test_cluster_sweep_equals_in_process_and_lone_backtests(cluster, strategy_class, data):
    before = data.copy()
    local = nbb.sweep(strategy_class, data, {"fast": FAST}, progress=False)
    remote = nbb.sweep(strategy_class, data, {"fast": FAST}, progress=False, cluster=cluster,
                       chunksize=1)
    pd.testing.assert_frame_equal(comparable(local.results), comparable(remote.results),
                                  check_exact=True)
    pd.testing.assert_frame_equal(data, before, check_exact=True)
    assert_rows_are_lone_backtests(remote, before, strategy_class)


def test_cluster_universe_sweep_equals_in_process(cluster, small_universe):
    local = nbb.sweep(SmoothedClose, small_universe, {"fast": FAST}, progress=False)
    remote = nbb.sweep(SmoothedClose, small_universe, {"fast": FAST}, progress=False,
                       cluster=cluster, chunksize=2)
    pd.testing.assert_frame_equal(comparable(local.results), comparable(remote.results),
                                  check_exact=True)
    assert_rows_are_lone_backtests(remote, small_universe, SmoothedClose)


def test_cluster_write_into_the_values_is_an_error_row(cluster, data):
    with pytest.warns(NbbacktestWarning, match="every run of the sweep failed"):
        sweep = nbb.sweep(WritesInPlace, data, {"how": list(WRITES)}, progress=False, cluster=cluster,
                          chunksize=1)
    assert sweep.results.error.str.contains("read-only").all()
