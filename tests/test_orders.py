"""Orders a trader can trust: in-bar entries and their exits, the leverage limit,
stop-limit fills, stop-loss/take-profit as prices or fractions, exit reasons; and
nbbacktest.engine.orders itself: Order, Position and Bar."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.engine.orders import Bar, Order, Position
from nbbacktest.errors import StrategyError


def bars(rows):
    """A daily frame from (open, high, low, close) rows."""
    o, h, lo, c = (np.array(col, float) for col in zip(*rows))
    index = pd.date_range("2024-01-01", periods=len(rows), freq="D")
    return pd.DataFrame({"Open": o, "High": h, "Low": lo, "Close": c}, index=index)


FLAT = (100.0, 100.5, 99.5, 100.0)


class Once(nbb.Strategy):
    """Places one order on bar 0: ``order`` ("buy"/"sell") with the given keywords."""

    order = "buy"
    limit = 0.0
    stop = 0.0
    sl = 0.0
    tp = 0.0
    sl_pct = 0.0
    tp_pct = 0.0
    size = 0.0

    def next(self, bar):
        if bar.i == 0:
            names = ("limit", "stop", "sl", "tp", "sl_pct", "tp_pct", "size")
            getattr(self, self.order)(**{k: getattr(self, k) for k in names if getattr(self, k)})


# ------------------------------------------- 1. no exit priced before its entry
def test_limit_entry_in_a_gap_up_bar_exits_only_after_the_entry():
    # A buy limit at 99; bar 1 gaps up to 106 and trades down to 98: the entry is at
    # 99, inside the bar. Its take-profit at 105 lies below the open 106, which came
    # before the entry: before the fix the trade "exited" at 106 in the same bar.
    data = bars([FLAT, (106, 106.5, 98, 100), (100, 104, 99.5, 103), (103, 106, 102, 105), FLAT])
    result = nbb.backtest(Once(limit=99.0, tp=105.0), data)
    trade = result.trades.iloc[0]
    assert trade.entry_price == 99.0 and trade.entry_time == data.index[1]
    assert trade.exit_time == data.index[3] and trade.exit_price == 105.0
    assert trade.exit_reason == "take-profit"


def test_stop_entry_in_a_gap_down_bar_exits_only_after_the_entry():
    # A buy stop at 101; bar 1 gaps down to 94 and rallies to 102: the entry is at
    # 101, inside the bar. Its stop-loss at 95 lies above the open 94, which came
    # before the entry: before the fix the trade "exited" at 94 in the same bar.
    data = bars([FLAT, (94, 102, 93.5, 100), (100, 100.5, 96, 97), (97, 97.5, 90, 92), FLAT])
    result = nbb.backtest(Once(stop=101.0, sl=95.0), data)
    trade = result.trades.iloc[0]
    assert trade.entry_price == 101.0 and trade.entry_time == data.index[1]
    assert trade.exit_time == data.index[3] and trade.exit_price == 95.0
    assert trade.exit_reason == "stop-loss"


def test_short_limit_entry_in_a_gap_down_bar_waits_for_the_next_bar():
    # The mirror: a sell limit at 101 on a bar that gaps down to 94 and rallies to
    # 102; the take-profit at 95 is above that open.
    data = bars([FLAT, (94, 102, 93.5, 100), (100, 100.5, 96, 97), (97, 97.5, 94, 96), FLAT])
    result = nbb.backtest(Once(order="sell", limit=101.0, tp=95.0), data)
    trade = result.trades.iloc[0]
    assert trade.entry_price == 101.0 and trade.exit_time == data.index[3]
    assert trade.exit_price == 95.0 and trade.exit_reason == "take-profit"


def test_entry_at_the_open_is_checked_in_its_own_bar():
    # A market order (or a limit order the open gapped through) enters at the bar's
    # first price: what the bar does after it is reachable.
    data = bars([FLAT, (100, 100.5, 94, 96), FLAT, FLAT])
    market = nbb.backtest(Once(sl=95.0), data)
    assert market.trades.exit_time.iloc[0] == data.index[1]
    assert market.trades.exit_price.iloc[0] == 95.0
    gapped = nbb.backtest(Once(limit=101.0, sl=95.0), data)  # opens at 100 <= 101
    assert gapped.trades.entry_price.iloc[0] == 100.0
    assert gapped.trades.exit_time.iloc[0] == data.index[1]


# ------------------------------------------------- 2. cash and leverage limits
class Pyramid(nbb.Strategy):
    """buy(size=0.5) three times, then buy(size=1000) units."""

    def next(self, bar):
        if bar.i < 3:
            self.buy(size=0.5)
        elif bar.i == 3:
            self.buy(size=1000)


def _exposure(result, data):
    value = result.position * data["Close"]
    return value / result.equity


@pytest.mark.parametrize("leverage", [None, 1.0, 2.0])
def test_orders_beyond_the_leverage_limit_are_reduced(leverage):
    data = bars([FLAT] * 8)
    result = nbb.backtest(Pyramid(), data, leverage=leverage)
    limit = leverage or 1.0
    exposure = _exposure(result, data)
    # before the fix: about 10x and cash near -90,000 whatever the leverage
    assert exposure.max() == pytest.approx(limit)
    assert exposure.max() <= limit * (1 + 1e-9)
    adjusted = result.adjusted_orders
    assert list(adjusted.columns) == ["time", "requested", "filled", "price", "action", "reason", "tag"]
    # at 1x the third half is already beyond the limit: it and the 1000 are rejected
    expected = ["rejected", "rejected"] if limit == 1.0 else ["reduced"]
    assert adjusted.action.tolist() == expected
    assert adjusted.requested.iloc[-1] == 1000
    assert adjusted.filled.iloc[-1] < 1000
    assert f"leverage limit {limit:g}" in adjusted.reason.iloc[-1]
    if leverage is None or leverage == 1.0:
        cash = 10_000 - (result.position * 100.0).iloc[-1]
        assert cash >= -1e-6  # never a negative cash balance without leverage


def test_an_order_at_the_limit_is_rejected_and_says_so():
    seen = {}

    class Twice(nbb.Strategy):
        def next(self, bar):
            if bar.i == 0:
                self.buy()
            elif bar.i == 1:
                seen["order"] = self.buy(size=10)
            elif bar.i == 2:
                seen["cash"] = self.cash

    data = bars([FLAT] * 5)
    result = nbb.backtest(Twice(), data)
    assert seen["order"].status == "rejected"
    assert seen["cash"] == pytest.approx(0.0, abs=1e-9)
    assert result.adjusted_orders.action.tolist() == ["rejected"]
    assert result.adjusted_orders.filled.tolist() == [0.0]
    assert result.adjusted_orders.time.tolist() == [data.index[2]]
    assert result.adjusted_orders.price.tolist() == [100.0]


def test_reducing_and_closing_orders_are_never_capped():
    class Scale(nbb.Strategy):
        def next(self, bar):
            if bar.i == 0:
                self.buy()
            elif bar.i == 1:
                self.sell(size=0.5)
            elif bar.i == 2:
                self.close()

    result = nbb.backtest(Scale(), bars([FLAT] * 5))
    assert result.adjusted_orders.empty and len(result.trades) == 2


class LeveredVector(nbb.Strategy):
    side = 1.0

    def signals(self, data):
        target = np.zeros(len(data))
        target[:30] = 2.0 * self.side
        return pd.Series(target, index=data.index)


class LeveredEvent(nbb.Strategy):
    side = 1.0

    def next(self, bar):
        if bar.i == 0:
            (self.buy if self.side > 0 else self.sell)(size=10**9)  # reduced to the limit
        elif bar.i == 30:
            self.close()


@pytest.mark.parametrize(
    "settings",
    [{}, {"commission": 0.002, "slippage": 0.001}, {"fractional": False, "commission": 0.001}],
    ids=["plain", "costs", "whole-units"],
)
@pytest.mark.parametrize("side", [1.0, -1.0], ids=["long", "short"])
def test_the_leverage_limit_is_the_same_on_both_paths(settings, side):
    data = nbb.load_sample("daily").iloc[:60]
    vector = nbb.backtest(LeveredVector(side=side), data, leverage=2, **settings)
    event = nbb.backtest(LeveredEvent(side=side), data, leverage=2, **settings)
    pd.testing.assert_frame_equal(vector.trades, event.trades)
    pd.testing.assert_series_equal(vector.equity, event.equity)
    assert event.adjusted_orders.action.tolist() == ["reduced"]
    # signals beyond the limit are refused outright (see test_simulator)
    with pytest.raises(nbb.errors.DataError, match="leverage"):
        nbb.backtest(LeveredVector(side=side), data, **settings)


# -------------------------------------------------------- 3. stop-limit orders
def test_stop_limit_buy_fills_in_the_bar_that_triggers_it():
    # stop 101, limit 102: bar 1 opens at 100 and trades up to 103, so the stop
    # triggers at 101 inside the bar and fills there (before: a bar later).
    data = bars([FLAT, (100, 103, 99.8, 102.5), (102.5, 103, 102, 102.8), FLAT])
    result = nbb.backtest(Once(stop=101.0, limit=102.0), data)
    assert result.position.iloc[1] == pytest.approx(10_000 / 101)
    assert result.equity.iloc[1] == pytest.approx(10_000 / 101 * 102.5)


def test_stop_limit_buy_gapping_above_the_stop_fills_at_the_open():
    data = bars([FLAT, (101.5, 103, 101.2, 102), FLAT])
    result = nbb.backtest(Once(stop=101.0, limit=102.0), data)
    assert result.position.iloc[1] == pytest.approx(10_000 / 101.5)


def test_stop_limit_buy_gapping_through_the_limit_rests_as_a_limit_order():
    # Bar 1 opens at 104, above the limit 102, and never comes back: no fill at a
    # price it never traded. Bar 2 trades down to 101.5: the limit fills at 102.
    data = bars([FLAT, (104, 105, 103, 104), (103, 103.5, 101.5, 102.5), FLAT])
    result = nbb.backtest(Once(stop=101.0, limit=102.0), data)
    assert result.position.iloc[1] == 0
    assert result.position.iloc[2] == pytest.approx(10_000 / 102)


def test_stop_limit_sell_mirrors_the_buy():
    inside = bars([FLAT, (100, 100.2, 97, 97.5), FLAT])
    result = nbb.backtest(Once(order="sell", stop=99.0, limit=98.0), inside)
    assert result.position.iloc[1] == pytest.approx(-10_000 / 99)
    gap = bars([FLAT, (96, 97, 95, 96), (96.5, 98.5, 96, 98), FLAT])
    rested = nbb.backtest(Once(order="sell", stop=99.0, limit=98.0), gap)
    assert rested.position.iloc[1] == 0
    assert rested.position.iloc[2] == pytest.approx(-10_000 / 98)


# ------------------------------------------------------------ 4. the warm-up
def test_next_runs_from_bar_zero_without_indicators_and_never_on_an_all_nan_one():
    seen = []

    class Plain(nbb.Strategy):
        def next(self, bar):
            seen.append(bar.i)

    nbb.backtest(Plain(), bars([FLAT] * 3))
    assert seen == [0, 1, 2]
    seen.clear()

    class Never(nbb.Strategy):
        def init(self):
            self.x = self.indicator(lambda d: d["Close"] * np.nan)

        def next(self, bar):
            seen.append(bar.i)

    nbb.backtest(Never(), bars([FLAT] * 3))
    assert seen == []


# --------------------------------------- 5. stop-loss/take-profit as fractions
def test_sl_pct_and_tp_pct_are_fractions_of_the_fill_price():
    data = bars([FLAT, (100, 100.5, 99.5, 100), (100, 100.5, 94, 95), FLAT])
    long = nbb.backtest(Once(sl_pct=0.05, tp_pct=0.10), data)
    assert long.trades.exit_price.tolist() == [95.0]
    assert long.trades.exit_reason.tolist() == ["stop-loss"]
    up = bars([FLAT, (100, 100.5, 99.5, 100), (100, 111, 99, 108), FLAT])
    assert nbb.backtest(Once(sl_pct=0.05, tp_pct=0.10), up).trades.exit_price.tolist() == [
        pytest.approx(110.0)
    ]
    # a sell mirrors them: the stop-loss 5 % above the fill, the take-profit 10 % below
    down = bars([FLAT, (100, 100.5, 99.5, 100), (100, 101, 89, 91), FLAT])
    short = nbb.backtest(Once(order="sell", sl_pct=0.05, tp_pct=0.10), down)
    assert short.trades.exit_price.tolist() == [pytest.approx(90.0)]
    assert short.trades.exit_reason.tolist() == ["take-profit"]
    stopped = nbb.backtest(Once(order="sell", sl_pct=0.05, tp_pct=0.10), up)
    assert stopped.trades.exit_price.tolist() == [pytest.approx(105.0)]
    assert stopped.trades.exit_reason.tolist() == ["stop-loss"]


def test_sl_pct_follows_the_slipped_fill_price():
    data = bars([FLAT, (100, 100.5, 99.5, 100), (100, 100.5, 90, 92), FLAT])
    result = nbb.backtest(Once(sl_pct=0.05), data, slippage=0.01)
    # entry 101 after slippage; stop at 101 * 0.95; the exit sells at it less 1 %
    assert result.trades.entry_price.iloc[0] == pytest.approx(101.0)
    assert result.trades.exit_price.iloc[0] == pytest.approx(101 * 0.95 * 0.99)


def test_a_fraction_passed_as_a_price_points_to_sl_pct():
    # before: sl=0.05 was a stop-loss price of 0.05 that never triggered
    data = bars([FLAT] * 4)
    with pytest.raises(StrategyError, match=r"buy\(sl=0.05\).*pass sl_pct=0.05") as info:
        nbb.backtest(Once(sl=0.05), data)
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(StrategyError, match=r"sell\(tp=0.1\).*pass tp_pct=0.1"):
        nbb.backtest(Once(order="sell", tp=0.1), data)
    with pytest.raises(StrategyError, match="not both"):
        nbb.backtest(Once(sl=95.0, sl_pct=0.05), data)
    with pytest.raises(StrategyError, match=r"sl_pct=1.5\).*between 0 and 1"):
        nbb.backtest(Once(sl_pct=1.5), data)
    with pytest.raises(StrategyError, match=r"sell\(tp_pct=2.0\).*between 0 and 1"):
        nbb.backtest(Once(order="sell", tp_pct=2.0), data)


# ------------------------------------------------------------ 10. exit reasons
def test_every_trade_says_why_it_closed():
    data = nbb.load_sample("daily").iloc[:120]

    class Cross(nbb.Strategy):
        def signals(self, data):
            up = data["Close"] > data["Close"].rolling(5).mean()
            return up.astype(float)

    vector = nbb.backtest(Cross(), data, close_at_end=True)
    reasons = vector.trades.exit_reason.tolist()
    assert set(reasons[:-1]) == {"signal"}
    if vector.position.iloc[-2]:
        assert reasons[-1] == "end"
    held = nbb.backtest(Once(), data, close_at_end=True)
    assert held.trades.exit_reason.tolist() == ["end"]
    assert nbb.backtest(Once(), data).trades.exit_reason.tolist() == []


def test_a_reversal_on_the_last_bar_closes_by_signal_then_by_end():
    class Flip(nbb.Strategy):
        def signals(self, data):
            target = np.ones(len(data))
            target[-1] = -1.0
            return pd.Series(target, index=data.index)

    class FlipEvent(nbb.Strategy):
        def next(self, bar):
            if bar.i == 0:
                self.buy()
            elif bar.i == len(self.data) - 1:
                self.sell()

    data = bars([FLAT, (100, 101, 99, 100.5), (100.5, 102, 100, 101)])
    for settings in ({"fill": "close", "close_at_end": True},
                     {"fill": "close", "close_at_end": True, "commission": 0.001}):
        vector = nbb.backtest(Flip(), data, **settings)
        event = nbb.backtest(FlipEvent(), data, **settings)
        assert vector.trades.exit_reason.tolist() == ["signal", "end"]
        pd.testing.assert_frame_equal(vector.trades, event.trades)


class Resize(nbb.Strategy):
    def signals(self, data):
        return pd.Series([0.5, 1.0, 1.0, 0.0, 1.0, 1.0], index=data.index)


def test_exit_reasons_survive_the_hand_over_to_the_broker_and_pickling():
    import pickle

    # 0.5 -> 1 is a resize: the fast loop hands the rest of the run to Broker.follow
    data = bars([FLAT] * 6)
    result = nbb.backtest(Resize(), data, close_at_end=True)
    assert result.trades.exit_reason.tolist() == ["signal", "end"]
    clone = pickle.loads(pickle.dumps(result))
    pd.testing.assert_frame_equal(clone.trades, result.trades)


def test_a_reversal_without_exits_of_its_own_drops_the_old_stop_loss():
    # Long with a stop-loss at 95, then sell() reverses to short at bar 3's open.
    # Before: the short inherited the long's stop (below the price) and "stopped
    # out" at once at the open it entered on.
    class Reverse(nbb.Strategy):
        def next(self, bar):
            if bar.i == 0:
                self.buy(sl=95.0)
            elif bar.i == 2:
                self.sell()

    result = nbb.backtest(Reverse(), bars([FLAT] * 6))
    assert result.position.iloc[3:].lt(0).all()
    assert result.trades.exit_reason.tolist() == ["signal"]


def test_whole_units_are_capped_after_rounding_without_a_spurious_note():
    class Half(nbb.Strategy):
        def next(self, bar):
            if bar.i == 0:
                self.buy(size=0.5)
            elif bar.i == 1:
                self.buy(size=0.51)

    # 5,000 / 101 = 49.5 units -> 49; then 0.51 * 10,000 / 101 = 50.5 more -> 50:
    # 99 units, the whole-unit limit (99.5 before rounding is not a reduction)
    data = bars([FLAT, (101, 101.5, 100.5, 101), (101, 101.5, 100.5, 101), FLAT])
    result = nbb.backtest(Half(), data, fractional=False)
    assert result.position.iloc[2] == 99
    assert result.adjusted_orders.empty


# ------------------------------------------- Order, Position and Bar themselves
def test_an_order_checks_its_arguments_and_names_the_verb():
    with pytest.raises(TypeError, match=r"sell\(size=\.\.\.\) must be a number, got str"):
        Order(-1, "1", None, None, None, None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"buy\(size=-1\): size must be positive"):
        Order(1, -1, None, None, None, None, None)
    with pytest.raises(ValueError, match=r"buy\(limit=0\): must be a positive price"):
        Order(1, None, 0, None, None, None, None)
    with pytest.raises(ValueError, match=r"sell\(sl=90\.0, tp=95\.0\): a sell order needs sl > tp"):
        Order(-1, None, None, None, 90.0, 95.0, None)
    with pytest.raises(ValueError, match=r"buy\(sl_pct=1\.0\).*between 0 and 1"):
        Order(1, None, None, None, None, None, None, sl_pct=1.0)
    assert Order(-1, None, None, None, None, None, None, sl_pct=1.5).sl_pct == 1.5  # a short's stop


def test_an_order_knows_its_kind_levels_and_status():
    market = Order(1, None, None, None, None, None, "t")
    assert market.is_market and not market.has_exits and market.triggered
    stop = Order(-1, 0.5, None, 90.0, None, None, None, sl_pct=0.1, tp_pct=0.2)
    assert not stop.is_market and stop.has_exits and not stop.triggered
    assert stop.exit_levels(100.0) == pytest.approx((110.0, 80.0))
    assert repr(stop) == "<Order sell(size=0.5, stop=90.0, sl_pct=0.1, tp_pct=0.2) open>"
    stop.cancel()
    assert stop.status == "cancelled"
    market.status = "filled"
    market.cancel()
    assert market.status == "filled"  # a filled order stays filled


class _Broker:
    units, entry_price, cash = 0.0, float("nan"), 1_000.0


class _Runner:
    """The few members of the event loop a Position and a Bar read (orders.Runner)."""

    def __init__(self):
        self.broker, self.i, self.submitted = _Broker(), 1, []
        self.index = pd.date_range("2024-01-01", periods=2, freq="D")
        self.open, self.high, self.low = [10.0, 11.0], [12.0, 13.0], [9.0, 10.0]
        self.close, self.volume = [11.0, 12.0], [100.0, float("nan")]

    def submit(self, order):
        self.submitted.append(order)
        return order

    def close_part(self, fraction, trade, tag):
        return self.submit(Order(0, None, None, None, None, None, tag, fraction=fraction))


def test_a_position_reads_the_broker_at_the_current_close():
    runner = _Runner()
    position = Position(runner)  # type: ignore[arg-type]
    assert not position and position.pl == 0.0 and position.pl_pct == 0.0
    runner.broker.units, runner.broker.entry_price = -5.0, 10.0
    assert position and position.is_short and not position.is_long
    assert position.pl == pytest.approx(-10.0) and position.pl_pct == pytest.approx(-20.0)
    order = position.close()
    assert runner.submitted == [order] and order.side == 0


def test_a_bar_reads_the_values_of_its_index():
    runner = _Runner()
    bar = Bar(runner)  # type: ignore[arg-type]
    bar.i = 0
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (10.0, 12.0, 9.0, 11.0, 100.0)
    assert bar.time == pd.Timestamp("2024-01-01")
    bar.i = 1
    assert bar.close == 12.0 and np.isnan(bar.volume) and "i=1" in repr(bar)
