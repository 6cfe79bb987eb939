"""Tests of nbbacktest.engine.event_driven: the bar loop, its fill prices and its checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.engine.broker import Broker
from nbbacktest.engine.event_driven import PRICE_RANGE_FACTOR, EventRunner, exit_price
from nbbacktest.engine.orders import Order
from nbbacktest.engine.types import PreparedData


class Idle(nbb.Strategy):
    def next(self, bar):
        pass


def runner(rows=((100.0, 101.0, 99.0, 100.0),) * 5, fill="next_open") -> EventRunner:
    o, h, lo, c = (np.array(column) for column in zip(*rows))
    index = pd.date_range("2024-01-01", periods=len(o), freq="D")
    frame = pd.DataFrame({"Open": o, "High": h, "Low": lo, "Close": c}, index=index)
    broker = Broker(10_000.0, 0.0, 0.0, True)
    return EventRunner(Idle(), PreparedData.from_frame(frame), broker, fill)


@pytest.mark.parametrize(
    ("units", "bar", "expected"),
    [
        (10.0, (100.0, 104.0, 94.0), (95.0, "stop-loss")),  # both reached: the loss first
        (10.0, (100.0, 111.0, 96.0), (110.0, "take-profit")),
        (10.0, (93.0, 94.0, 90.0), (93.0, "stop-loss")),  # gapped through: at the open
        (10.0, (100.0, 104.0, 96.0), None),
        (-10.0, (100.0, 106.0, 89.0), (105.0, "stop-loss")),  # a short mirrors it
        (-10.0, (88.0, 89.0, 87.0), (88.0, "take-profit")),
    ],
)
def test_exit_price(units, bar, expected):
    sl, tp = (95.0, 110.0) if units > 0 else (105.0, 90.0)
    assert exit_price(units, sl, tp, *bar) == expected


def test_first_bar_is_where_every_indicator_is_defined():
    loop = runner()
    assert loop.first_bar() == 0
    loop.add_indicator(loop.frame["Close"].rolling(3).mean(), "sma")
    assert loop.first_bar() == 2
    loop.add_indicator(np.full((5, 1), np.nan), "nan")  # one column is fine
    assert loop.first_bar() == loop.n == 5  # all NaN: next never runs


def test_an_indicator_is_one_value_per_bar_made_before_the_first_bar():
    loop = runner()
    with pytest.raises(ValueError, match=r"indicator '_short' returned shape \(2,\); it must return "
                                         r"one value per bar \(5,\)"):
        loop.add_indicator(_short(loop.frame), "_short")
    loop.i = 0
    with pytest.raises(RuntimeError, match="call it in init"):
        loop.check_init("indicator")


def _short(frame):
    return frame["Close"].iloc[:2]


def test_stop_loss_prices_that_cannot_be_prices_point_to_sl_pct():
    loop = runner()
    loop.check_levels(Order(1, None, None, None, 99.0 / PRICE_RANGE_FACTOR, None, None))  # in range
    with pytest.raises(ValueError, match=r"buy\(sl=0\.05\): 0\.05 cannot be a stop-loss price .*"
                                         r"pass sl_pct=0\.05"):
        loop.submit(Order(1, None, None, None, 0.05, None, None))
    assert loop.market == [] and loop.resting == []


def test_orders_queue_as_market_or_resting():
    loop = runner()
    market = loop.submit(Order(1, None, None, None, None, None, None))
    limit = loop.submit(Order(1, None, 95.0, None, None, None, None))
    close = loop.submit(Order(0, None, None, None, None, None, None))
    assert loop.market == [market, close] and loop.resting == [limit]
    limit.cancel()
    assert loop.open_orders() == [market, close]


@pytest.mark.parametrize(
    ("order", "bar", "price"),
    [
        (Order(1, None, 95.0, None, None, None, None), (100.0, 101.0, 94.0), 95.0),
        (Order(1, None, 95.0, None, None, None, None), (93.0, 96.0, 92.0), 93.0),  # gap below L
        (Order(-1, None, 105.0, None, None, None, None), (100.0, 106.0, 99.0), 105.0),
        (Order(1, None, None, 105.0, None, None, None), (100.0, 106.0, 99.0), 105.0),
        (Order(1, None, None, 105.0, None, None, None), (107.0, 108.0, 106.0), 107.0),  # gap above S
        (Order(-1, None, None, 95.0, None, None, None), (100.0, 101.0, 94.0), 95.0),
        (Order(1, None, 106.0, 105.0, None, None, None), (104.0, 107.0, 103.0), 105.0),  # stop-limit
        (Order(1, None, None, 105.0, None, None, None), (100.0, 104.0, 99.0), None),
    ],
)
def test_resting_fill_prices(order, bar, price):
    assert EventRunner.resting_fill_price(order, *bar) == price


def test_a_stop_limit_triggered_beyond_its_limit_rests_as_a_limit_order():
    order = Order(1, None, 106.0, 105.0, None, None, None)
    assert EventRunner.resting_fill_price(order, 108.0, 109.0, 107.0) is None  # opened above L
    assert order.triggered
    assert EventRunner.resting_fill_price(order, 107.0, 108.0, 105.5) == 106.0  # now a limit at L


def test_fill_at_close_fills_market_orders_in_the_bar_that_placed_them():
    class BuyFirst(nbb.Strategy):
        def next(self, bar):
            if bar.i == 1:
                self.buy()

    rows = [(10.0, 11.0, 9.0, 10.0), (10.0, 13.0, 9.0, 12.0), (13.0, 14.0, 12.0, 13.0)]
    loop = runner(rows, fill="close")
    loop.strategy = BuyFirst()
    loop.strategy._runner = loop
    loop.run()
    assert loop.broker.fill_bars == [1] and loop.broker.entry_price == 12.0
