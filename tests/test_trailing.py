"""Trailing stops on hand-built bars: where the stop starts, when it moves, which bar's
extreme counts, gaps through it, and how it combines with a fixed stop-loss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb


def bars(rows):
    """A daily frame from (open, high, low, close) rows."""
    o, h, lo, c = (np.array(col, float) for col in zip(*rows))
    index = pd.date_range("2024-01-01", periods=len(rows), freq="D")
    return pd.DataFrame({"Open": o, "High": h, "Low": lo, "Close": c}, index=index)


FLAT = (100.0, 100.5, 99.5, 100.0)


class Trailing(nbb.Strategy):
    """One order on bar 0 with a trailing stop (and a limit or stop-loss if given)."""

    order = "buy"
    trail = 0.0
    trail_pct = 0.0
    limit = 0.0
    sl = 0.0

    def next(self, bar):
        if bar.i == 0:
            names = ("trail", "trail_pct", "limit", "sl")
            getattr(self, self.order)(**{k: getattr(self, k) for k in names if getattr(self, k)})


def run(strategy, rows, **settings):
    return nbb.backtest(strategy, bars(rows), **settings)


def test_a_long_trailing_stop_rises_with_each_high_and_exits_at_its_level():
    # Entry at bar 1's open, 100: the stop starts at 90. After bar 1 (high 110) it is
    # 99, after bar 2 (high 120) 108; bar 3's high 119 would give 107.1: it stays.
    # Bar 4 trades down to 107: out at 108.
    rows = [FLAT, (100, 110, 99, 108), (108, 120, 101, 118), (118, 119, 109, 110),
            (110, 111, 107, 108), FLAT]
    trade = run(Trailing(trail_pct=0.1), rows).trades.iloc[0]
    assert trade.entry_price == 100.0 and trade.exit_price == pytest.approx(108.0)
    assert trade.exit_time == pd.Timestamp("2024-01-05") and trade.exit_reason == "trailing-stop"
    assert trade.pnl == pytest.approx(100 * 8.0)  # 100 units (10,000 / 100)


def test_a_gap_below_the_trailing_stop_exits_at_the_open():
    rows = [FLAT, (100, 110, 99, 108), (108, 120, 101, 118), (118, 119, 109, 110),
            (105, 106, 104, 105), FLAT]
    trade = run(Trailing(trail_pct=0.1), rows).trades.iloc[0]
    assert trade.exit_price == 105.0 and trade.exit_reason == "trailing-stop"


def test_a_short_trailing_stop_by_price_distance_falls_with_each_low():
    # Short at 100, trail 5: stop 105; after bar 1 (low 92) 97, after bar 2 (low 90)
    # 95. Bar 3 opens at 96, above 95: out at the open.
    rows = [FLAT, (100, 101, 92, 93), (93, 96, 90, 95), (96, 98, 94, 97), FLAT]
    strategy = Trailing(order="sell", trail=5.0)
    result = run(strategy, rows)
    trade = result.trades.iloc[0]
    assert trade["size"] < 0 and trade.exit_price == 96.0 and trade.exit_reason == "trailing-stop"
    assert trade.exit_time == pd.Timestamp("2024-01-04")


def test_the_level_moves_after_the_close_and_acts_from_the_next_bar():
    # Bar 2's high 120 lifts the stop to 108 only after bar 2: bar 2's own low 101 is
    # not checked against it (its high may have come after its low).
    rows = [FLAT, (100, 110, 99, 108), (108, 120, 101, 118), (118, 125, 112, 124),
            (124, 126, 120, 125)]
    result = run(Trailing(trail_pct=0.1), rows, close_at_end=True)
    assert result.trades.exit_reason.tolist() == ["end"]


def test_an_in_bar_entry_does_not_trail_from_its_own_bar():
    # A buy limit at 99 fills inside bar 1 (open 101, low 98): the stop starts at 96
    # (trail 3). Bar 1's high 104 may have come before the fill: it does not count
    # (else the stop would be 101 and bar 2's low 97 would exit). After bar 2 (high
    # 103.5) the stop is 100.5; bar 3 opens at 100, below it: out at 100.
    rows = [FLAT, (101, 104, 98, 103), (103, 103.5, 97, 100), (100, 101, 99, 100), FLAT]
    trade = run(Trailing(limit=99.0, trail=3.0), rows).trades.iloc[0]
    assert trade.entry_price == 99.0
    assert trade.exit_time == pd.Timestamp("2024-01-04") and trade.exit_price == 100.0
    assert trade.exit_reason == "trailing-stop"


def test_an_entry_at_the_close_does_not_trail_from_its_own_bar():
    # fill="close": bought at bar 0's close 100, stop 95. Bar 0's high 110 came before
    # the fill (else the stop would be 105 and bar 1 would exit at its open). After
    # bar 1 (high 101) the stop is 96; bar 2's low 95.5 reaches it.
    rows = [(100, 110, 99, 100), (100, 101, 96, 97), (97, 98, 95.5, 96), FLAT]
    trade = run(Trailing(trail=5.0), rows, fill="close").trades.iloc[0]
    assert trade.exit_time == pd.Timestamp("2024-01-03") and trade.exit_price == 96.0


def test_the_tighter_of_stop_loss_and_trailing_stop_acts_and_names_itself():
    # Trailing stop 90 at the start, stop-loss 95: the stop-loss is tighter.
    rows = [FLAT, (100, 101, 94, 96), FLAT]
    trade = run(Trailing(trail_pct=0.1, sl=95.0), rows).trades.iloc[0]
    assert trade.exit_price == 95.0 and trade.exit_reason == "stop-loss"
    # After bar 1 (high 110) the trailing stop, 99, is tighter than the stop-loss.
    rows = [FLAT, (100, 110, 99.5, 108), (108, 108, 98, 99), FLAT]
    trade = run(Trailing(trail_pct=0.1, sl=95.0), rows).trades.iloc[0]
    assert trade.exit_price == pytest.approx(99.0) and trade.exit_reason == "trailing-stop"


def test_the_stop_level_is_visible_in_next():
    rows = [FLAT, (100, 110, 99, 108), (108, 120, 101, 118), (118, 119, 109, 110), FLAT]
    # next() on bar 1 sees the level the fill set; each later bar the one after the bar before.
    stops = []

    class Spy(Trailing):
        def next(self, bar):
            super().next(bar)
            stops.append(self.position.stop)

    run(Spy(trail_pct=0.1), rows)
    assert stops[:4] == [None, 90.0, pytest.approx(99.0), pytest.approx(108.0)]


def test_a_trailing_distance_must_be_positive_and_a_fraction_below_one():
    for bad in ({"trail_pct": 1.5}, {"trail_pct": 0.0}, {"trail": -1.0}):
        with pytest.raises(ValueError, match="trailing stop"):
            nbb.engine.orders.Order(1, None, None, None, None, None, None, **bad)
    with pytest.raises(ValueError, match="give one of them"):
        nbb.engine.orders.Order(1, None, None, None, None, None, None, trail=1.0, trail_pct=0.1)
