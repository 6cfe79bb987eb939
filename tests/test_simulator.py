"""The fill model, checked on tiny hand-computed frames, both paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.errors import DataError, StrategyError


def frame(opens, closes, highs=None, lows=None):
    opens, closes = np.asarray(opens, float), np.asarray(closes, float)
    highs = np.maximum(opens, closes) + 0.5 if highs is None else np.asarray(highs, float)
    lows = np.minimum(opens, closes) - 0.5 if lows is None else np.asarray(lows, float)
    index = pd.date_range("2024-01-01", periods=len(opens), freq="D")
    return pd.DataFrame({"Open": opens, "High": highs, "Low": lows, "Close": closes}, index=index)


OPENS = [10, 11, 12, 13, 14]
CLOSES = [10.5, 11.5, 12.5, 13.5, 14.5]


class Fixed(nbb.Strategy):
    """Replays a fixed exposure sequence given as a comma-separated string."""

    targets = "1,1,0,0,0"

    def signals(self, data):
        return pd.Series([float(x) for x in self.targets.split(",")], index=data.index)


def test_long_round_trip_fills_at_next_open():
    result = nbb.backtest(Fixed(), frame(OPENS, CLOSES), cash=10_000)
    units = 10_000 / 11
    expected = [10_000, units * 11.5, units * 12.5, units * 13, units * 13]
    np.testing.assert_allclose(result.equity.to_numpy(), expected)
    trade = result.trades.iloc[0]
    assert trade.entry_price == 11 and trade.exit_price == 13
    assert trade.entry_time == pd.Timestamp("2024-01-02")
    assert trade.pnl == pytest.approx(units * 2)
    assert trade.return_pct == pytest.approx(2 / 11 * 100)
    assert result.stats["trades"] == 1


def test_commission_is_paid_on_both_fills_and_never_overspends():
    result = nbb.backtest(Fixed(), frame(OPENS, CLOSES), cash=10_000, commission=0.01)
    units = 10_000 / (11 * 1.01)
    assert result.position.iloc[1] == pytest.approx(units)
    # entry spends exactly the equity: position plus commission
    assert result.equity.iloc[1] == pytest.approx(units * 11.5)
    final = units * 13 * 0.99
    assert result.equity.iloc[-1] == pytest.approx(final)
    pnl = units * 2 - units * 11 * 0.01 - units * 13 * 0.01
    assert result.trades.pnl.iloc[0] == pytest.approx(pnl)
    assert result.trades.pnl.iloc[0] == pytest.approx(final - 10_000)


def test_slippage_moves_each_fill_against_the_trade():
    result = nbb.backtest(Fixed(), frame(OPENS, CLOSES), slippage=0.01)
    trade = result.trades.iloc[0]
    assert trade.entry_price == pytest.approx(11 * 1.01)
    assert trade.exit_price == pytest.approx(13 * 0.99)


def test_fill_at_close_uses_the_deciding_bar():
    result = nbb.backtest(Fixed(), frame(OPENS, CLOSES), fill="close")
    trade = result.trades.iloc[0]
    assert (trade.entry_price, trade.exit_price) == (10.5, 12.5)
    assert trade.entry_time == pd.Timestamp("2024-01-01")


def test_whole_units_round_toward_zero():
    result = nbb.backtest(Fixed(), frame(OPENS, CLOSES), cash=100, fractional=False)
    assert result.position.iloc[1] == 9.0  # 100 / 11 = 9.09
    assert result.equity.iloc[1] == pytest.approx(100 - 99 + 9 * 11.5)


def test_reversal_closes_then_opens_from_equity_left_at_the_same_fill():
    strategy = Fixed(targets="1,-1,-1,0,0")
    result = nbb.backtest(strategy, frame(OPENS, CLOSES), commission=0.001)
    long_units = 10_000 / (11 * 1.001)
    cash_after_close = long_units * 12 * 0.999
    short_units = -cash_after_close / (12 * 1.001)
    assert result.position.iloc[2] == pytest.approx(short_units)
    trades = result.trades
    assert list(trades["size"] > 0) == [True, False]
    assert trades.exit_time.iloc[0] == trades.entry_time.iloc[1] == pd.Timestamp("2024-01-03")
    assert trades.exit_price.iloc[1] == 14


def test_unchanged_target_is_not_rebalanced():
    result = nbb.backtest(Fixed(targets="1,1,1,1,1"), frame(OPENS, CLOSES))
    assert result.position.nunique() == 2  # flat on bar 0, then one constant size


def test_partial_reduction_books_a_trade_for_the_part_closed():
    result = nbb.backtest(Fixed(targets="1,0.5,0.5,0,0"), frame(OPENS, CLOSES))
    trades = result.trades
    assert len(trades) == 2
    assert trades["size"].sum() == pytest.approx(10_000 / 11)
    assert trades.exit_price.tolist() == [12, 14]


def test_open_position_is_valued_unless_close_at_end():
    held = nbb.backtest(Fixed(targets="1,1,1,1,1"), frame(OPENS, CLOSES))
    assert held.stats["trades"] == 0 and held.position.iloc[-1] > 0
    closed = nbb.backtest(Fixed(targets="1,1,1,1,1"), frame(OPENS, CLOSES), close_at_end=True)
    assert closed.stats["trades"] == 1 and closed.position.iloc[-1] == 0
    assert closed.trades.exit_price.iloc[0] == 14.5


def test_nan_signal_means_flat():
    class NanSignal(nbb.Strategy):
        def signals(self, data):
            return pd.Series([1.0, np.nan, np.nan, 1.0, 1.0], index=data.index)

    result = nbb.backtest(NanSignal(), frame(OPENS, CLOSES))
    assert result.stats["trades"] == 1
    assert result.position.iloc[2] == 0


def test_exposure_beyond_one_needs_leverage():
    strategy = Fixed(targets="2,2,0,0,0")
    with pytest.raises(DataError, match="leverage"):
        nbb.backtest(strategy, frame(OPENS, CLOSES))
    result = nbb.backtest(strategy, frame(OPENS, CLOSES), leverage=2)
    assert result.position.iloc[1] == pytest.approx(2 * 10_000 / 11)


def test_signal_length_must_match_the_data():
    class Short(nbb.Strategy):
        def signals(self, data):
            return np.ones(len(data) - 1)

    with pytest.raises(DataError, match="has 4 values but the data has 5 bars"):
        nbb.backtest(Short(), frame(OPENS, CLOSES))


# ------------------------------------------------------------- event-driven path
class Scripted(nbb.Strategy):
    """Places one order, described by ``order``, on bar ``at``."""

    at = 0
    order = "buy"
    limit = 0.0
    stop = 0.0
    sl = 0.0
    tp = 0.0
    size = 0.0

    def next(self, bar):
        if bar.i == self.at:
            kwargs = {
                k: getattr(self, k) or None for k in ("limit", "stop", "sl", "tp", "size")
            }
            getattr(self, self.order)(**kwargs)


def test_event_market_buy_fills_at_next_open():
    result = nbb.backtest(Scripted(), frame(OPENS, CLOSES))
    assert result.position.iloc[1] == pytest.approx(10_000 / 11)
    assert result.position.iloc[0] == 0


def test_limit_buy_fills_at_limit_or_at_a_gapped_open():
    data = frame([10, 10, 9, 9.8, 10], [10, 10, 9.5, 10, 10], lows=[9.9, 9.9, 8.9, 9.7, 9.9])
    # the limit 9.5 is first reached by bar 2, which opens below it: fill at the open 9
    gapped = nbb.backtest(Scripted(limit=9.5), data)
    assert gapped.position.iloc[2] == pytest.approx(10_000 / 9)
    # the limit 9.75 is reached inside bar 3 (opens at 9.8, low 9.7): fill at 9.75 ... but
    # bar 2 gaps below it first and fills at its open 9
    assert nbb.backtest(Scripted(limit=9.75), data).position.iloc[2] == pytest.approx(10_000 / 9)
    data2 = frame([10, 10, 10, 9.8, 10], [10, 10, 10, 10, 10], lows=[9.9, 9.9, 9.9, 9.7, 9.9])
    inside = nbb.backtest(Scripted(limit=9.75), data2)
    assert inside.position.iloc[3] == pytest.approx(10_000 / 9.75)


def test_stop_buy_fills_at_stop_or_at_a_gapped_open():
    data = frame([10, 10, 10.4, 11, 11], [10, 10.1, 10.5, 11, 11], highs=[10.2, 10.2, 10.6, 11.2, 11.2])
    inside = nbb.backtest(Scripted(stop=10.5), data)
    assert inside.position.iloc[2] == pytest.approx(10_000 / 10.5)
    gap = nbb.backtest(Scripted(stop=10.9), data)
    assert gap.position.iloc[3] == pytest.approx(10_000 / 11)


def test_stop_loss_and_take_profit_close_the_position():
    data = frame([10, 10, 10, 10, 10], [10, 10, 10, 10, 10],
                 highs=[10.1, 10.1, 10.1, 12.5, 10.1], lows=[9.9, 9.9, 9.9, 9.9, 9.9])
    tp = nbb.backtest(Scripted(sl=8.0, tp=12.0), data)
    assert tp.trades.exit_price.tolist() == [12.0]
    assert tp.trades.exit_time.iloc[0] == pd.Timestamp("2024-01-04")
    data_gap = frame([10, 10, 10, 7, 10], [10, 10, 10, 7.5, 10],
                     highs=[10.1, 10.1, 10.1, 7.6, 10.1], lows=[9.9, 9.9, 9.9, 6.9, 9.9])
    sl = nbb.backtest(Scripted(sl=8.0, tp=12.0), data_gap)
    assert sl.trades.exit_price.tolist() == [7.0]  # gapped through the stop: the open


def test_both_stop_loss_and_take_profit_in_one_bar_assumes_the_loss():
    data = frame([10, 10, 10, 10, 10], [10, 10, 10, 10, 10],
                 highs=[10.1, 10.1, 12.5, 10.1, 10.1], lows=[9.9, 9.9, 7.5, 9.9, 9.9])
    result = nbb.backtest(Scripted(sl=8.0, tp=12.0), data)
    assert result.trades.exit_price.tolist() == [8.0]


def test_sized_orders_fraction_and_units():
    half = nbb.backtest(Scripted(size=0.5), frame(OPENS, CLOSES))
    assert half.position.iloc[1] == pytest.approx(0.5 * 10_000 / 11)
    units = nbb.backtest(Scripted(size=3), frame(OPENS, CLOSES))
    assert units.position.iloc[1] == 3
    short = nbb.backtest(Scripted(order="sell"), frame(OPENS, CLOSES))
    assert short.position.iloc[1] == pytest.approx(-10_000 / 11)


def test_bad_order_arguments_raise_with_context():
    with pytest.raises(StrategyError, match="size must be positive") as info:
        nbb.backtest(Scripted(size=-1.0), frame(OPENS, CLOSES))
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(StrategyError, match="needs sl < tp"):
        nbb.backtest(Scripted(sl=12.0, tp=8.0), frame(OPENS, CLOSES))


def test_user_exception_is_reraised_with_strategy_and_params():
    class Broken(nbb.Strategy):
        n = 3

        def signals(self, data):
            raise ZeroDivisionError("boom")

    with pytest.raises(StrategyError, match=r"Broken\(n=3\): signals raised ZeroDivisionError: boom") as info:
        nbb.backtest(Broken(), frame(OPENS, CLOSES))
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_next_starts_where_every_indicator_is_defined():
    seen = []

    class Watch(nbb.Strategy):
        def init(self):
            self.sma = self.indicator(lambda d: d["Close"].rolling(3).mean())

        def next(self, bar):
            seen.append(bar.i)

    nbb.backtest(Watch(), frame(OPENS, CLOSES))
    assert seen == [2, 3, 4]


def test_api_calls_outside_a_run_say_where_they_belong():
    with pytest.raises(RuntimeError, match="event-driven"):
        Scripted().buy()


def test_strategy_without_a_body_is_rejected():
    class Empty(nbb.Strategy):
        pass

    with pytest.raises(TypeError, match="neither signals"):
        nbb.backtest(Empty(), frame(OPENS, CLOSES))


# ---------------------------------------------------- both paths, one fill model
class SmaVector(nbb.Strategy):
    fast = 10
    slow = 30
    short = False

    def signals(self, data):
        close = data["Close"]
        up = close.rolling(self.fast).mean() > close.rolling(self.slow).mean()
        down = -1.0 if self.short else 0.0
        return pd.Series(np.where(up, 1.0, down), index=data.index).where(
            close.rolling(self.slow).mean().notna(), 0.0
        )


class SmaEvent(nbb.Strategy):
    fast = 10
    slow = 30
    short = False

    def init(self):
        self.f = self.indicator(lambda d: d["Close"].rolling(self.fast).mean())
        self.s = self.indicator(lambda d: d["Close"].rolling(self.slow).mean())

    def next(self, bar):
        up = self.f[bar.i] > self.s[bar.i]
        if up and not self.position.is_long:
            self.buy()
        elif not up and self.short and not self.position.is_short:
            self.sell()
        elif not up and not self.short and self.position:
            self.close()


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"commission": 0.002, "slippage": 0.001},
        {"fill": "close", "commission": 0.001},
        {"fractional": False, "close_at_end": True},
    ],
    ids=["plain", "costs", "fill-close", "whole-units"],
)
@pytest.mark.parametrize("short", [False, True], ids=["long-only", "long-short"])
def test_vectorized_and_event_driven_give_identical_trades_and_equity(settings, short):
    data = nbb.load_sample("daily")
    vector = nbb.backtest(SmaVector(short=short), data, **settings)
    event = nbb.backtest(SmaEvent(short=short), data, **settings)
    assert vector.stats["trades"] > 10
    pd.testing.assert_frame_equal(vector.trades, event.trades)
    pd.testing.assert_series_equal(vector.equity, event.equity)
    assert vector.stats.drop("start").equals(event.stats.drop("start"))


def test_seeded_randomness_is_reproducible_per_params():
    class Coin(nbb.Strategy):
        p = 0.5

        def signals(self, data):
            return pd.Series(self.rng.random(len(data)) < self.p, index=data.index).astype(float)

    data = nbb.load_sample("daily")
    first = nbb.backtest(Coin(), data, seed=7)
    again = nbb.backtest(Coin(), data, seed=7)
    other = nbb.backtest(Coin(), data, seed=8)
    pd.testing.assert_series_equal(first.equity, again.equity)
    assert not first.equity.equals(other.equity)
    assert first.seed == again.seed != other.seed


def test_result_pickles_small_and_whole():
    import pickle

    result = nbb.backtest(SmaVector(), nbb.load_sample("daily"), commission=0.001)
    _ = result.trades, result.stats  # build the caches, which must not be pickled
    blob = pickle.dumps(result)
    clone = pickle.loads(blob)
    pd.testing.assert_frame_equal(clone.trades, result.trades)
    assert clone.stats.equals(result.stats)
    assert clone.params == {"fast": 10, "slow": 30, "short": False}
    assert len(blob) < 100_000
    assert "Result SmaVector" in repr(result) and "<table>" in result._repr_html_()


def test_trade_book_builds_records_on_demand_and_pickles_small():
    import pickle

    from nbbacktest.engine.ledger import TradeBook, trade_arrays

    data = nbb.load_sample("daily")
    run = nbb.backtest(SmaVector(), data, commission=0.001)
    book = run._trades
    assert isinstance(book, TradeBook)
    records = list(book)
    assert book == records and book[0] == records[0] and len(book) == len(records) > 10
    assert repr(book) == repr(records)
    clone = pickle.loads(pickle.dumps(book))
    assert clone == records
    for field, column in trade_arrays(records).items():
        np.testing.assert_array_equal(trade_arrays(clone)[field], column)
        assert trade_arrays(book)[field].dtype == column.dtype


def test_stats_only_runs_give_the_same_stats_and_reuse_scratch_safely():
    import importlib

    backtest_module = importlib.import_module("nbbacktest.engine.backtest")
    PreparedData, Settings = backtest_module.PreparedData, backtest_module.Settings
    simulate, simulate_stats = backtest_module.simulate, backtest_module.simulate_stats
    long_data = nbb.load_sample("hourly")
    short_data = nbb.load_sample("daily")
    settings = Settings(commission=0.002, slippage=0.001, close_at_end=True)
    for data in (long_data, short_data, long_data):  # scratch rows of another length between
        prepared = PreparedData.from_frame(data)
        for strategy in (SmaVector(short=True), SmaEvent()):
            full = simulate(strategy, prepared, settings, 3)
            assert simulate_stats(strategy, prepared, settings, 3) == full.stats
            assert full.stats["trades"] == len(full.trades) > 0
            # the kept arrays are the run's own, not scratch space the next run overwrites
            equity = full.equity.copy()
            simulate_stats(strategy, prepared, settings, 3)
            assert full.equity.tobytes() == equity.tobytes()


def test_a_backtest_inside_signals_does_not_disturb_the_outer_run():
    data = nbb.load_sample("daily")

    class Nested(nbb.Strategy):
        def signals(self, data):
            inner = nbb.backtest(SmaVector(short=True), data)  # uses the same scratch rows
            return SmaVector().signals(data) * (inner.stats["trades"] > 0)

    nested, plain = nbb.backtest(Nested(), data), nbb.backtest(SmaVector(), data)
    pd.testing.assert_series_equal(nested.equity, plain.equity)
    assert nested.stats.drop("start").equals(plain.stats.drop("start"))


def test_microsecond_and_time_zone_indexes_give_the_same_results():
    data = nbb.load_sample("daily")
    micro = data.set_axis(data.index.as_unit("us"))
    base = nbb.backtest(SmaVector(), data, commission=0.001)
    result = nbb.backtest(SmaVector(), micro, commission=0.001)
    np.testing.assert_array_equal(result.equity.to_numpy(), base.equity.to_numpy())
    assert result.stats.equals(base.stats)
    zoned = data.set_axis(data.index.tz_localize("America/New_York"))
    stats = nbb.backtest(SmaVector(), zoned, commission=0.001).stats
    assert stats["start"] == zoned.index[0] and stats["end"] == zoned.index[-1]
    assert stats["duration"] == zoned.index[-1] - zoned.index[0]  # an hour of DST apart
    assert stats["sharpe"] != base.stats["sharpe"]  # bars per year from the true span


def test_resizing_up_averages_the_entry_price_and_down_books_the_part_closed():
    data = frame([10, 10, 20, 30, 30], [10, 10, 20, 30, 30])
    result = nbb.backtest(Fixed(targets="1,0.5,1,0,0"), data, cash=1_000)
    # 100 units at 10; at 20 the position is worth 2,000: half of it is 50 units, so
    # 50 are sold; at 30 equity is 1,000 + 50 * 30 = 2,500: all-in is 83.33 units
    assert result.position.tolist() == pytest.approx([0, 100, 50, 2_500 / 30, 0])
    trades = result.trades
    assert trades["size"].tolist() == pytest.approx([50, 2_500 / 30])
    assert trades.pnl.tolist() == pytest.approx([50 * (20 - 10), 1_000])
    # the second trade holds 50 units bought at 10 and 33.33 bought at 30
    assert trades.entry_price.iloc[1] == pytest.approx((50 * 10 + (2_500 / 30 - 50) * 30) / (2_500 / 30))
    assert result.equity.iloc[-1] == pytest.approx(2_500)
