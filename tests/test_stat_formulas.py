"""Tests for nbbacktest.engine.stat_formulas: each formula against hand arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.engine.ledger import Ledger
from nbbacktest.engine.stat_formulas import (
    Market,
    drawdown_periods,
    kelly,
    sqn,
    trade_bars,
    trade_durations,
)
from nbbacktest.engine.timeline import Timeline

DAY_NS = 86_400_000_000_000


def periods(equity: list[float], cash: float = 100.0) -> tuple[int, int, float]:
    line = Timeline(pd.date_range("2024-01-01", periods=len(equity), freq="D"))
    return drawdown_periods(line, np.array(equity), cash)


def test_drawdown_periods_recovered_and_not() -> None:
    # 0 -> 2: -10 % over 2 days; 3 -> 6: -20 % then recovered over 3 days; 6 -> 7 never: -5 %
    longest, mean, depth = periods([100, 90, 100, 100, 80, 95, 110, 104.5])
    assert longest == 3 * DAY_NS
    assert mean == (2 + 3 + 1) * DAY_NS // 3
    assert depth == pytest.approx(-(0.10 + 0.20 + 0.05) / 3)


def test_drawdown_from_the_first_bar_and_none() -> None:
    # under the initial cash from bar 0, back at bar 2; then never below
    longest, mean, depth = periods([95, 90, 101, 102])
    assert (longest, mean) == (2 * DAY_NS, 2 * DAY_NS) and depth == pytest.approx(-0.10)
    assert periods([100, 101, 102]) == (0, 0, 0.0)
    # under water all along: the whole span
    longest, mean, depth = periods([90, 80, 85])
    assert (longest, mean) == (2 * DAY_NS, 2 * DAY_NS) and depth == pytest.approx(-0.2)


def test_sqn_and_its_degenerate_cases() -> None:
    pnl = np.array([10.0, -5.0, 25.0])  # mean 10, std(ddof=1) = 15
    assert sqn(pnl, 10.0) == pytest.approx(math.sqrt(3) * 10 / 15)
    assert math.isnan(sqn(np.array([3.0]), 3.0))
    assert math.isnan(sqn(np.array([2.0, 2.0]), 2.0))


def test_kelly() -> None:
    # 60 % winners averaging 30, losers averaging -20: 0.6 - 0.4 / 1.5
    assert kelly(0.6, 30.0, -20.0) == pytest.approx(0.6 - 0.4 / 1.5)
    assert math.isnan(kelly(1.0, 30.0, math.nan)) and math.isnan(kelly(0.0, math.nan, -3.0))


def test_market_returns_are_centred() -> None:
    market = Market(np.array([100.0, 110.0, 99.0, 108.9]))  # +10 %, -10 %, +10 %
    mean = 0.1 / 3
    assert market.centred == pytest.approx([0.1 - mean, -0.1 - mean, 0.1 - mean])
    assert market.sum_sq == pytest.approx(sum(x * x for x in market.centred))
    assert abs(sum(market.centred)) < 1e-15
    assert math.isnan(Market(np.array([5.0])).sum_sq)


def test_trade_spans() -> None:
    line = Timeline(pd.date_range("2024-01-01", periods=5, freq="D"))
    assert trade_durations(line, np.array([0, 2]), np.array([3, 4])) == (3 * DAY_NS, 5 * DAY_NS // 2)
    seconds = Timeline(pd.date_range("2024-01-01", periods=3, freq="s").as_unit("s"))
    assert trade_durations(seconds, np.array([0]), np.array([2])) == (2 * 10**9, 2 * 10**9)


def test_trade_bars_of_a_list_book_and_of_a_trade_book() -> None:
    listed = Ledger(100.0, 5, np.array([1, 3]), [10.0, 0.0], [0.0, 120.0], np.array([20.0]),
                    np.array([0.2]), [(1, 3, 10.0, 12.0, 10.0, 20.0, 0.2, None, "signal")])
    entry, exit_ = trade_bars(listed)
    assert entry.tolist() == [1] and exit_.tolist() == [3]

    class Flip(nbb.Strategy):
        def signals(self, data):
            return pd.Series(np.tile([1.0, 1.0, -1.0, 0.0], len(data) // 4), index=data.index)

    index = pd.date_range("2024-01-01", periods=40, freq="D")
    prices = np.linspace(10.0, 20.0, 40)
    data = pd.DataFrame({"Open": prices, "High": prices, "Low": prices, "Close": prices}, index=index)
    result = nbb.backtest(Flip(), data)
    trades = result.trades
    expected = (trades["exit_time"] - trades["entry_time"])
    assert result.stats["max_trade_duration"] == expected.max()
    # the mean to the nanosecond; pandas' to the index's microsecond
    assert abs(result.stats["avg_trade_duration"] - expected.mean()) < pd.Timedelta(microseconds=1)


def test_the_mean_trade_duration_does_not_overflow_on_nanosecond_bars():
    # 1,300 trades of 70 business days sum past int64 in nanoseconds (about 106,751 days).
    index = pd.DatetimeIndex(pd.bdate_range("2014-01-02", periods=2520), dtype="datetime64[ns]")
    longest, mean = trade_durations(Timeline(index), np.zeros(1300, dtype=np.int64), np.full(1300, 70))
    expected = (index[70] - index[0]).value
    assert longest == expected and mean == expected
