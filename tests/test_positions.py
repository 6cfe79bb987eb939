"""Managing an open position on hand-built bars: changing its exits, partial closes,
pyramiding's average entry price, separate trades each with its own exits; and
nbbacktest.engine.positions itself: Exits and Trade."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.engine.positions import Exits, Trade
from nbbacktest.errors import StrategyError


def bars(rows):
    """A daily frame from (open, high, low, close) rows."""
    o, h, lo, c = (np.array(col, float) for col in zip(*rows))
    index = pd.date_range("2024-01-01", periods=len(rows), freq="D")
    return pd.DataFrame({"Open": o, "High": h, "Low": lo, "Close": c}, index=index)


FLAT = (100.0, 100.5, 99.5, 100.0)


def day(i):
    return pd.Timestamp("2024-01-01") + pd.Timedelta(days=i)


class Script(nbb.Strategy):
    """Runs ``steps[bar.i](self)`` on each bar that has one (set on the class by a test)."""

    steps: dict = {}

    def next(self, bar):
        step = type(self).steps.get(bar.i)
        if step is not None:
            step(self)


def script(steps, separate=False):
    return type("Scripted", (Script,), {"steps": steps, "separate_trades": separate})


# -------------------------------------------------- 7. changing the exits
def test_a_stop_loss_set_on_the_open_position_acts_from_the_next_bar():
    # Bought at bar 1's open, 100. In next() on bar 1 the stop-loss becomes 99: bar 1's
    # own low 98 is not checked against it; bar 2's low 98.5 is: out at 99.
    steps = {0: lambda s: s.buy(), 1: lambda s: setattr(s.position, "sl", 99.0)}
    rows = [FLAT, (100, 102, 98, 101), (101, 102, 98.5, 100), FLAT]
    trade = nbb.backtest(script(steps), bars(rows)).trades.iloc[0]
    assert trade.exit_time == day(2) and trade.exit_price == 99.0 and trade.exit_reason == "stop-loss"


def test_set_exits_moves_the_take_profit_and_removes_the_stop_loss():
    # buy(sl=95, tp=130); on bar 1: tp 105, no stop-loss. Bar 2 gaps down to 90 (the old
    # stop-loss would exit at 90) and rallies to 106: out at the new take-profit, 105.
    def adjust(s):
        assert (s.position.sl, s.position.tp) == (95.0, 130.0)
        s.position.set_exits(sl=None, tp=105.0)

    steps = {0: lambda s: s.buy(sl=95.0, tp=130.0), 1: adjust}
    rows = [FLAT, (100, 101, 99, 100), (90, 106, 89, 104), FLAT]
    trade = nbb.backtest(script(steps), bars(rows)).trades.iloc[0]
    assert trade.exit_price == 105.0 and trade.exit_reason == "take-profit"


def test_a_trailing_stop_set_on_the_open_position_starts_at_the_close():
    # trail_pct 0.05 set on bar 1 (close 101): the stop starts at 95.95 and moves from
    # bar 2's high 110 on: 104.5. Bar 3's low 104 reaches it.
    steps = {0: lambda s: s.buy(), 1: lambda s: setattr(s.position, "trail_pct", 0.05)}
    rows = [FLAT, (100, 103, 96, 101), (101, 110, 100, 108), (108, 109, 104, 105), FLAT]
    trade = nbb.backtest(script(steps), bars(rows)).trades.iloc[0]
    assert trade.exit_time == day(3) and trade.exit_price == pytest.approx(104.5)
    assert trade.exit_reason == "trailing-stop"


def test_exits_need_an_open_position_and_valid_values():
    rows = [FLAT] * 3
    flat = script({0: lambda s: setattr(s.position, "sl", 99.0)})
    with pytest.raises(StrategyError, match="no open position"):
        nbb.backtest(flat, bars(rows))
    fraction = script({0: lambda s: s.buy(), 1: lambda s: setattr(s.position, "sl", 0.05)})
    with pytest.raises(StrategyError, match="sl_pct"):
        nbb.backtest(fraction, bars(rows))
    unknown = script({0: lambda s: s.buy(), 1: lambda s: s.position.set_exits(stop=1.0)})
    with pytest.raises(StrategyError, match="unknown exit"):
        nbb.backtest(unknown, bars(rows))


# ------------------------------------------------------- 7. partial closes
def test_a_partial_close_is_its_own_trade_and_the_rest_keeps_its_exits():
    # 10 units at 100 (bar 1's open), commission 1 %: entry commission 10. Half closed
    # at bar 3's open, 110: pnl = 5 * 10 - 5 (half the entry commission) - 5.5 (exit
    # commission 5 * 110 * 1 %) = 39.5. The rest keeps its stop-loss 105: bar 4's low
    # 104 closes it at 105: pnl = 5 * 5 - 5 - 5.25 = 14.75.
    steps = {0: lambda s: s.buy(size=10, sl=95.0), 2: lambda s: s.close(fraction=0.5),
             3: lambda s: setattr(s.position, "sl", 105.0)}
    rows = [FLAT, (100, 101, 99, 100), (100, 111, 99, 110), (110, 111, 109, 110),
            (110, 110, 104, 105), FLAT]
    trades = nbb.backtest(script(steps), bars(rows), commission=0.01).trades
    assert trades["size"].tolist() == [5.0, 5.0]
    assert trades.exit_price.tolist() == [110.0, 105.0]
    assert trades.pnl.tolist() == pytest.approx([39.5, 14.75])
    assert trades.exit_reason.tolist() == ["signal", "stop-loss"]


def test_a_partial_close_of_whole_units_rounds_toward_zero_or_is_rejected():
    # fractional=False: half of 3 units closes 1; half of the 2 left closes 1; half of
    # the 1 left rounds to 0: rejected and listed.
    steps = {0: lambda s: s.buy(size=3), 1: lambda s: s.close(fraction=0.5),
             2: lambda s: s.close(fraction=0.5), 3: lambda s: s.close(fraction=0.5)}
    result = nbb.backtest(script(steps), bars([FLAT] * 6), fractional=False)
    assert result.trades["size"].tolist() == [1.0, 1.0]
    assert result.position.iloc[-1] == 1.0
    notes = result.adjusted_orders
    assert notes.action.tolist() == ["rejected"] and "rounds to 0" in notes.reason.iloc[0]


def test_a_close_fraction_must_be_in_zero_to_one():
    with pytest.raises(StrategyError, match=r"fraction to close must be in \(0, 1\]"):
        nbb.backtest(script({0: lambda s: s.close(fraction=1.5)}), bars([FLAT] * 3))


# ------------------------------------------------------------ 8. pyramiding
def test_adding_to_a_position_averages_its_entry_price():
    # 10 units at 100, then 30 at 110: entry (10 * 100 + 30 * 110) / 40 = 107.5; one
    # trade of 40 units, closed at 120: pnl 40 * 12.5 = 500.
    seen = []
    # An add without exits of its own keeps the position's stop-loss.
    steps = {0: lambda s: s.buy(size=10, sl=90.0), 1: lambda s: s.buy(size=30),
             2: lambda s: seen.append((s.position.entry_price, s.position.sl)),
             3: lambda s: s.close()}
    rows = [FLAT, (100, 101, 99, 100), (110, 111, 109, 110), (110, 111, 109, 110),
            (120, 121, 119, 120), FLAT]
    trades = nbb.backtest(script(steps), bars(rows)).trades
    assert seen == [(107.5, 90.0)]
    assert trades["size"].tolist() == [40.0] and trades.entry_price.tolist() == [107.5]
    assert trades.pnl.tolist() == [500.0]


# --------------------------------------------------------- 8. separate trades
def test_separate_trades_each_exit_at_their_own_levels():
    # Trade A: 10 units at 100 (bar 1), sl 90. Trade B: 10 units at 110 (bar 2), tp 115.
    # Bar 3 reaches 116: B exits at 115 (+50). Bar 4 falls to 89: A exits at 90 (-100).
    seen = []
    steps = {0: lambda s: s.buy(size=10, sl=90.0), 1: lambda s: s.buy(size=10, tp=115.0),
             2: lambda s: seen.append((len(s.trades), s.position.size, s.position.entry_price))}
    rows = [FLAT, (100, 101, 99, 100), (110, 112, 108, 111), (111, 116, 109, 114),
            (114, 114, 89, 90), FLAT]
    result = nbb.backtest(script(steps, separate=True), bars(rows))
    trades = result.trades
    assert seen == [(2, 20.0, 105.0)]
    assert trades.entry_price.tolist() == [110.0, 100.0]
    assert trades.exit_price.tolist() == [115.0, 90.0]
    assert trades.exit_reason.tolist() == ["take-profit", "stop-loss"]
    assert trades.pnl.tolist() == [50.0, -100.0]
    assert result.equity.iloc[-1] == pytest.approx(10_000 - 50.0)


def test_an_opposite_order_closes_separate_trades_oldest_first():
    # Trades of 10 at 100 and 10 at 110; sell(size=15) at 120 closes the first and 5 of
    # the second; the rest closes at the end. Each closure is its own row.
    steps = {0: lambda s: s.buy(size=10), 1: lambda s: s.buy(size=10), 2: lambda s: s.sell(size=15)}
    rows = [FLAT, (100, 101, 99, 100), (110, 111, 109, 110), (120, 121, 119, 120),
            (120, 121, 119, 121)]
    trades = nbb.backtest(script(steps, separate=True), bars(rows), close_at_end=True).trades
    assert trades["size"].tolist() == [10.0, 5.0, 5.0]
    assert trades.entry_price.tolist() == [100.0, 110.0, 110.0]
    assert trades.exit_price.tolist() == [120.0, 120.0, 121.0]
    assert trades.exit_reason.tolist() == ["signal", "signal", "end"]


def test_a_separate_trade_closes_alone_and_keeps_its_own_exits():
    # trades[1].close(0.5) closes 5 of the second trade; trades[0].sl = 104 closes the
    # first on bar 4 (low 103); the second keeps none and stays open.
    def manage(s):
        first, second = s.trades
        second.close(0.5)
        first.sl = 104.0
        assert first.sl == 104.0 and second.sl is None

    steps = {0: lambda s: s.buy(size=10), 1: lambda s: s.buy(size=10), 2: manage}
    rows = [FLAT, (100, 101, 99, 100), (110, 111, 109, 110), (110, 111, 109, 110),
            (110, 111, 103, 105), FLAT]
    result = nbb.backtest(script(steps, separate=True), bars(rows))
    trades = result.trades
    assert trades["size"].tolist() == [5.0, 10.0]
    assert trades.entry_price.tolist() == [110.0, 100.0]
    assert trades.exit_reason.tolist() == ["signal", "stop-loss"]
    assert result.position.iloc[-1] == 5.0


def test_separate_trades_is_a_setting_not_a_parameter():
    cls = script({}, separate=True)
    assert "separate_trades" not in cls.params() and cls().param_values == {}


def test_without_new_features_separate_trades_gives_the_same_result():
    # One order at a time: each trade is the position, so both modes agree.
    data = nbb.load_sample("daily").iloc[:300]

    class Swing(nbb.Strategy):
        def next(self, bar):
            if bar.i % 20 == 5:
                self.buy(sl_pct=0.03, tp_pct=0.05)
            elif bar.i % 20 == 15:
                self.close()

    Separate = type("Separate", (Swing,), {"separate_trades": True})
    one, two = nbb.backtest(Swing, data), nbb.backtest(Separate, data)
    pd.testing.assert_frame_equal(one.trades, two.trades)
    pd.testing.assert_series_equal(one.equity, two.equity, check_names=False)


# ------------------------------------------------------------ Exits and Trade
def test_exits_start_ratchet_and_hit():
    exits = Exits()
    exits.arm_trail(-1, 100.0, trail=2.0, trail_pct=None, bar=0, counts=True)
    assert exits.stop == 102.0
    exits.ratchet(-1.0, 0, high=101.0, low=97.0)
    assert exits.stop == 99.0
    exits.ratchet(-1.0, 1, high=101.0, low=98.0)  # a higher low does not loosen it
    assert exits.stop == 99.0
    assert exits.hit(-1.0, o=98.0, h=99.5, lo=97.5) == (99.0, "trailing-stop")
    exits.clear()
    assert not exits.armed


def test_a_closed_trade_cannot_be_closed_again():
    trade = Trade(1.0, 100.0, 0, 0.0, None)
    with pytest.raises(RuntimeError, match="closed"):
        trade.close()


def test_an_opposite_order_larger_than_the_trades_reverses_into_a_new_trade():
    # 10 + 10 units long; sell(size=25) at 120 closes both and opens a short of 5 with
    # its own stop-loss at 125. Bar 4 gaps up to 127: the short exits at the open.
    steps = {0: lambda s: s.buy(size=10), 1: lambda s: s.buy(size=10),
             2: lambda s: s.sell(size=25, sl=125.0)}
    rows = [FLAT, (100, 101, 99, 100), (110, 111, 109, 110), (120, 121, 119, 120),
            (127, 128, 126, 127), FLAT]
    trades = nbb.backtest(script(steps, separate=True), bars(rows)).trades
    assert trades["size"].tolist() == [10.0, 10.0, -5.0]
    assert trades.exit_price.tolist() == [120.0, 120.0, 127.0]
    assert trades.exit_reason.tolist() == ["signal", "signal", "stop-loss"]
    assert trades.pnl.tolist() == [200.0, 100.0, -35.0]
