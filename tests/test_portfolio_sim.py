"""The portfolio simulator's rules (nbbacktest.engine.portfolio_sim): a case computed by hand,
one symbol against the single-instrument path bit for bit, rebalance rules, listings and
delistings, IC and quantile returns, and the stats (the README's numbers)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from portfolio_cases import (
    HAND_INDEX,
    SYMBOL,
    TABLES,
    Fixed,
    OneSignal,
    OneWeight,
    Table,
    bars,
    five_symbols,
    hand_result,
    random_universe,
    same,
    sample_universe,
    traded_bars,
)

import nbbacktest as nbb
from nbbacktest.engine.universe import Universe


@pytest.fixture(scope="module")
def hand():
    return hand_result()


@pytest.fixture(scope="module")
def sample() -> Universe:
    return sample_universe()


@pytest.fixture(scope="module", name="random_universe")
def random_universe_() -> Universe:
    return random_universe()


# ----------------------------------------------------------------- 1. a case computed by hand


def test_a_case_computed_by_hand(hand):
    c = 0.001
    # Bar 0: nothing fills (decided at its close); all cash.
    # Bar 1, at the opens (A 100, B 50, C 20): nothing to close; E = 10,000 (all cash).
    # Each symbol moves to w * E / (p * (1 + c)) units.
    a1 = 0.5 * 10_000 / (100 * 1.001)   # 49.95005 A
    b1 = 0.3 * 10_000 / (50 * 1.001)    # 59.94006 B
    c1 = -0.2 * 10_000 / (20 * 1.001)   # -99.90010 C (short)
    # Cash pays units * p plus commission c * |units| * p on each fill (a short receives).
    cost_a1, cost_b1, cost_c1 = a1 * 100 * c, b1 * 50 * c, -c1 * 20 * c
    cash1 = 10_000 - a1 * 100 - cost_a1 - b1 * 50 - cost_b1 - c1 * 20 - cost_c1   # 3,996.004
    # Bar 3, at the opens (A 110, B 48, C 18).
    # 1. B's target is on the other side: close all of B at 48.
    cost_b_close = b1 * 48 * c
    cash2 = cash1 + b1 * 48 - cost_b_close                                        # 6,870.250
    # 2. Equity at the fill, everything at its open: E = cash + A + C.
    e3 = cash2 + a1 * 110 + c1 * 18                                               # 10,566.553
    # 3. A resizes to 0.3 * E / (110 * 1.001), B opens -0.3 * E / (48 * 1.001); C keeps its units.
    a3 = 0.3 * e3 / (110 * 1.001)       # 28.78908 A: 21.16097 sold
    b3 = -0.3 * e3 / (48 * 1.001)       # -65.97498 B
    sold_a = a1 - a3
    cost_a3, cost_b3 = sold_a * 110 * c, -b3 * 48 * c
    cash3 = cash2 + sold_a * 110 - cost_a3 - b3 * 48 - cost_b3                   # 12,359.261
    units = np.array([[0, 0, 0], [a1, b1, c1], [a1, b1, c1], [a3, b3, c1], [a3, b3, c1],
                      [a3, b3, c1]])
    cash = np.array([10_000, cash1, cash1, cash3, cash3, cash3])
    # Equity at each close: cash + units * close.
    equity = [10_000,
              cash1 + a1 * 102 + b1 * 51 + c1 * 19.5,   # 10,199.800
              cash1 + a1 * 106 + b1 * 50 + c1 * 18.5,   # 10,439.560
              cash3 + a3 * 108 + b3 * 47 + c1 * 18,     # 10,569.456
              cash3 + a3 * 114 + b3 * 45 + c1 * 19,     # 10,774.240
              cash3 + a3 * 116 + b3 * 44 + c1 * 19.5]   # 10,847.843
    np.testing.assert_allclose(hand.positions.to_numpy(), units, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(hand.cash.to_numpy(), cash, rtol=1e-9)
    np.testing.assert_allclose(hand.equity.to_numpy(), equity, rtol=1e-9)
    assert hand.equity.iloc[-1] == pytest.approx(10_847.8432311, abs=1e-6)

    # Two trades, both closed at bar 3's open, ordered by exit time then symbol.
    # A's partial close: the units sold at 110 against the entry at 100, with their share of
    # A's entry commission and the exit commission: per unit 10 - 0.1 - 0.11 = 9.79.
    pnl_a = sold_a * (110 - 100) - cost_a1 * (sold_a / a1) - cost_a3
    # B's close: per unit -2 - 0.05 - 0.048 = -2.098.
    pnl_b = b1 * (48 - 50) - cost_b1 - cost_b_close
    trades = hand.trades
    assert trades["symbol"].tolist() == ["A", "B"]
    assert trades["entry_time"].tolist() == [HAND_INDEX[1]] * 2
    assert trades["exit_time"].tolist() == [HAND_INDEX[3]] * 2
    assert trades["entry_price"].tolist() == [100.0, 50.0]
    assert trades["exit_price"].tolist() == [110.0, 48.0]
    np.testing.assert_allclose(trades["size"], [sold_a, b1], rtol=1e-9)
    np.testing.assert_allclose(trades["pnl"], [pnl_a, pnl_b], rtol=1e-9)
    np.testing.assert_allclose(trades["return_pct"], [9.79, -4.196], rtol=1e-9)
    assert trades["exit_reason"].tolist() == ["signal", "signal"]
    assert hand.stats["trades"] == 2
    paid = cost_a1 + cost_b1 + cost_c1 + cost_b_close + cost_a3 + cost_b3
    assert hand.stats["commissions"] == pytest.approx(paid, rel=1e-9)
    assert hand.stats["equity_final"] == pytest.approx(equity[-1], rel=1e-9)


def test_turnover_is_notional_traded_over_the_previous_equity(hand):
    previous = hand.equity.shift(1).fillna(10_000)
    a1, b1, c1 = hand.positions.iloc[1]
    a3, b3, _ = hand.positions.iloc[3]
    notional_1 = a1 * 100 + b1 * 50 + -c1 * 20          # = 10,000 / 1.001
    notional_3 = b1 * 48 + (a1 - a3) * 110 + -b3 * 48   # B closed, A sold, B shorted
    expected = [0, notional_1 / 10_000, 0, notional_3 / previous.iloc[3], 0, 0]
    np.testing.assert_allclose(hand.turnover.to_numpy(), expected, rtol=1e-12)
    assert hand.turnover.iloc[1] == pytest.approx(1 / 1.001, rel=1e-12)
    years = (HAND_INDEX[-1] - HAND_INDEX[0]).days / 365.25
    assert hand.stats["turnover"] == pytest.approx(sum(expected) / years, rel=0.05)


def test_legs_of_the_hand_case(hand):
    a1, b1, c1 = hand.positions.iloc[1]
    # Bar 1: the longs (A, B) made close - open less their commission, the short C lost its.
    long_1 = (a1 * (102 - 100) - a1 * 100 * 0.001 + b1 * (51 - 50) - b1 * 50 * 0.001) / 10_000
    short_1 = (c1 * (19.5 - 20) - -c1 * 20 * 0.001) / 10_000
    assert hand.legs.iloc[1].tolist() == pytest.approx([long_1, short_1], rel=1e-9)
    assert hand.legs.iloc[0].tolist() == [0.0, 0.0]


# ----------------------------------------------------------------- 2. one symbol = the single path


@pytest.fixture(scope="module")
def short_sample(sample) -> Universe:
    return Universe.from_frames({s: sample[s].iloc[:900] for s in list(sample)[:4]})


SETTINGS = [
    {},
    {"commission": 0.001},
    {"commission": 0.001, "slippage": 0.002},
    {"spread": 0.004},
    {"fill": "close", "commission": 0.002},
    {"fractional": False, "commission": 0.001},
    {"commission": (1.0, 0.001)},
    {"commission": 0.001, "close_at_end": True},
]
# the benchmark of a universe is its equal-weighted index, not the one symbol's buy & hold
BENCHMARK_STATS = {"buy_hold_return_pct", "alpha_pct", "beta"}


@pytest.mark.parametrize("kind", ["pattern", "cross"])
@pytest.mark.parametrize("settings", SETTINGS, ids=[str(s) for s in SETTINGS])
def test_one_symbol_at_weight_one_is_the_single_instrument_path_bit_for_bit(short_sample, settings, kind):
    single = nbb.backtest(OneSignal(kind=kind), short_sample[SYMBOL], **settings)
    assert single.stats["trades"] > 10
    for universe in (short_sample, short_sample.select([SYMBOL])):
        port = nbb.backtest(OneWeight(kind=kind), universe, **settings)
        assert np.array_equal(port.equity.to_numpy(), single.equity.to_numpy())
        assert np.array_equal(port.positions[SYMBOL].to_numpy(), single.position.to_numpy())
        assert len(port.trades) == len(single.trades)
        for column in ("entry_price", "exit_price", "size", "pnl", "return_pct", "entry_time", "exit_time"):
            assert np.array_equal(port.trades[column].to_numpy(), single.trades[column].to_numpy()), column
        assert port.trades["exit_reason"].astype(str).tolist() == \
            single.trades["exit_reason"].astype(str).tolist()
        assert (port.trades["symbol"] == SYMBOL).all()
        for name, value in single.stats.items():
            if name not in BENCHMARK_STATS:
                assert same(port.stats[name], value), name
    if settings.get("close_at_end"):
        assert single.trades["exit_reason"].astype(str).iloc[-1] == "end"
    alone = nbb.backtest(OneWeight(kind=kind), short_sample.select([SYMBOL]), **settings)
    assert alone.stats["buy_hold_return_pct"] == pytest.approx(single.stats["buy_hold_return_pct"], rel=1e-9)


def test_one_symbol_with_leverage_is_the_single_instrument_path_bit_for_bit(short_sample):
    single = nbb.backtest(OneSignal(kind="levered"), short_sample[SYMBOL], leverage=1.5, commission=0.001)
    port = nbb.backtest(OneWeight(kind="levered"), short_sample, leverage=1.5, commission=0.001)
    assert (single.position.abs() * short_sample[SYMBOL]["Close"] / single.equity).max() > 1.4
    assert np.array_equal(port.equity.to_numpy(), single.equity.to_numpy())
    assert np.array_equal(port.trades["pnl"].to_numpy(), single.trades["pnl"].to_numpy())


# ----------------------------------------------------------------- 3. rebalance rules


@pytest.fixture(scope="module")
def five(sample) -> Universe:
    return five_symbols(sample)


def test_change_trades_only_when_the_target_changes(five):
    result = nbb.backtest(Fixed(), five, commission=0.001)
    assert traded_bars(result).tolist() == [1]  # constant weights: one fill per symbol
    assert result.stats["trades"] == 0 and np.count_nonzero(result.turnover) == 1
    assert not np.allclose(result.weights.iloc[-1], 0.2, atol=1e-3)  # left to drift
    # one symbol's weight changes at bar 100: only it trades, at bar 101's open
    TABLES["one-change"] = pd.DataFrame(0.2, index=five.index, columns=five.symbols)
    TABLES["one-change"].iloc[100:, 2] = 0.1
    changed = nbb.backtest(Table(key="one-change"), five)
    assert traded_bars(changed).tolist() == [1, 101]
    moved = changed.positions.diff().iloc[101]
    assert moved.ne(0).tolist() == [False, False, True, False, False]


def _fills_reset_to_target(result, universe, bars_, target):
    opens = universe.open.to_numpy()
    held = result.positions.to_numpy()
    for f in bars_:
        value = held[f] * opens[f]
        equity = result.cash.iloc[f] + value.sum()
        np.testing.assert_allclose(value / equity, target, rtol=1e-9)


def test_monthly_trades_at_most_once_a_month_and_resets_drifted_weights(five):
    result = nbb.backtest(Fixed(rebalance="M"), five)
    index = five.index
    position = pd.Series(np.arange(len(index)), index=index)
    month_ends = position.groupby(index.to_period("M")).max().to_numpy()[:-1]
    traded = traded_bars(result)
    assert traded.tolist() == (month_ends + 1).tolist()  # flat until the first month's end
    assert pd.Series(index[traded].to_period("M")).value_counts().max() == 1
    _fills_reset_to_target(result, five, traded, 0.2)
    assert not np.allclose(result.weights.iloc[month_ends[-1]], 0.2, atol=1e-4)  # drifted before


def test_every_n_bars_and_daily(five):
    every = nbb.backtest(Fixed(rebalance="21"), five)
    assert traded_bars(every).tolist() == list(range(1, 260, 21))
    _fills_reset_to_target(every, five, traded_bars(every), 0.2)
    daily = nbb.backtest(Fixed(rebalance="D"), five)
    assert traded_bars(daily).tolist() == list(range(1, 260))
    _fills_reset_to_target(daily, five, range(1, 260), 0.2)
    weekly = nbb.backtest(Fixed(rebalance="W"), five)
    weeks = pd.Series(five.index[traded_bars(weekly)].to_period("W")).value_counts()
    assert weeks.max() == 1 and len(weeks) >= 50


# ----------------------------------------------------------------- 4. listing and delisting

LIST_INDEX = pd.date_range("2024-01-01", periods=10, freq="D")
_OPEN = np.arange(10) + 100.0
LISTED = {
    "A": bars(_OPEN, _OPEN + 0.5, LIST_INDEX),
    "B": bars(_OPEN[4:], _OPEN[4:] + 0.5, LIST_INDEX[4:]),          # lists at bar 4
    "C": bars(_OPEN[:7], _OPEN[:7] + 0.5, LIST_INDEX[:7]),          # last bar: 6
    "D": bars(np.delete(_OPEN, 1), np.delete(_OPEN, 1) + 0.5, LIST_INDEX.delete(1)),  # no bar 1
}


@pytest.fixture(scope="module")
def listed():
    TABLES["quarter"] = pd.DataFrame(0.25, index=LIST_INDEX, columns=list(LISTED))
    return nbb.backtest(Table(key="quarter"), LISTED, commission=0.001, slippage=0.001)


def test_a_symbol_never_trades_before_its_listing(listed):
    b = listed.positions["B"]
    assert (b.iloc[:5] == 0).all() and (b.iloc[5:] > 0).all()  # listed at bar 4: first fill bar 5
    assert listed.target_weights["B"].iloc[:4].tolist() == [0.0] * 4  # weights outside it ignored
    trade_b = nbb.backtest(Table(key="quarter"), LISTED, close_at_end=True).trades.set_index("symbol").loc["B"]
    assert trade_b["entry_time"] == LIST_INDEX[5] and trade_b["entry_price"] == 105.0  # bar 5's open


def test_a_symbol_that_delists_is_closed_at_its_last_close(listed):
    c = listed.positions["C"]
    assert (c.iloc[1:6] > 0).all() and (c.iloc[6:] == 0).all()
    trade = listed.trades.set_index("symbol").loc["C"]
    assert trade["exit_reason"] == "delisted"
    assert trade["exit_time"] == LIST_INDEX[6]
    assert trade["exit_price"] == pytest.approx(106.5 * (1 - 0.001))  # its last close, slipped
    assert trade["entry_price"] == pytest.approx(101 * (1 + 0.001))
    assert listed.target_weights["C"].iloc[7:].tolist() == [0.0] * 3
    assert len(listed.trades) == 1


def test_a_symbol_missing_a_bar_trades_on_its_next_bar(listed):
    d = listed.positions["D"]
    assert d.iloc[1] == 0 and d.iloc[2] > 0
    # sized at bar 2's open from the equity then, A and C valued at their opens
    held = listed.positions.iloc[1]
    equity = listed.cash.iloc[1] + held["A"] * 102 + held["C"] * 102
    assert d.iloc[2] == pytest.approx(0.25 * equity / (102 * 1.001 * 1.001), rel=1e-12)
    # valued at its last close where it has no bar
    assert listed.equity.iloc[1] == pytest.approx(listed.cash.iloc[1] + held["A"] * 101.5 + held["C"] * 101.5)


# ----------------------------------------------------------------- 5. IC and quantile returns


def _month_forward(close: pd.DataFrame) -> pd.DataFrame:
    """Each month's last close to the next month's last (the last month: to the last bar)."""
    index = close.index
    ends = pd.Series(np.arange(len(index)), index=index).groupby(index.to_period("M")).max().to_numpy()
    rows = close.iloc[ends].to_numpy()
    forward = rows[1:] / rows[:-1] - 1
    out = pd.DataFrame(np.nan, index=index, columns=close.columns)
    out.iloc[ends[:-1]] = forward
    return out


class Planted(nbb.PortfolioStrategy):
    sign = 1.0
    horizon = "bar"

    def scores(self, universe):
        close = universe.close
        if self.horizon == "month":
            return self.sign * _month_forward(close)
        if self.horizon == "random":
            rng = np.random.default_rng(11)
            return pd.DataFrame(rng.normal(size=close.shape), index=close.index, columns=close.columns)
        return self.sign * (close.shift(-1) / close - 1)


def test_scores_equal_to_the_next_returns_have_ic_one(random_universe):
    result = nbb.backtest(Planted(long=0.25, short=0.25), random_universe)
    assert result.ic.index.equals(random_universe.index[:-1])  # every bar decides, but the last
    np.testing.assert_allclose(result.ic, 1.0, rtol=1e-12)
    reverse = nbb.backtest(Planted(sign=-1.0, long=0.25, short=0.25), random_universe)
    np.testing.assert_allclose(reverse.ic, -1.0, rtol=1e-12)
    quantiles = result.quantile_returns
    assert list(quantiles.columns) == ["q1", "q2", "q3", "q4", "q5"]
    assert (quantiles.diff(axis=1).iloc[:, 1:] > 0).all().all()  # monotone at every bar
    # twelve symbols in five quantiles: the top one holds ranks 11 and 12
    forward = (random_universe.close.shift(-1) / random_universe.close - 1).iloc[:-1]
    top_two = np.sort(forward.to_numpy(), axis=1)[:, -2:].mean(axis=1)
    np.testing.assert_allclose(quantiles["q5"], top_two, rtol=1e-12)
    bottom_three = np.sort(forward.to_numpy(), axis=1)[:, :3].mean(axis=1)
    np.testing.assert_allclose(quantiles["q1"], bottom_three, rtol=1e-12)


def test_ic_on_a_schedule_is_per_decision_period(random_universe):
    index = random_universe.index
    ends = pd.Series(np.arange(len(index)), index=index).groupby(index.to_period("M")).max().to_numpy()
    result = nbb.backtest(Planted(horizon="month", long=0.25, short=0.25, rebalance="M"), random_universe)
    assert result.ic.index.equals(index[ends[:-1]])
    np.testing.assert_allclose(result.ic, 1.0, rtol=1e-12)
    reverse = nbb.backtest(Planted(horizon="month", sign=-1.0, rebalance="M", long=0.25), random_universe)
    np.testing.assert_allclose(reverse.ic, -1.0, rtol=1e-12)


def test_random_scores_have_an_ic_near_zero_and_the_stats_match_the_series(random_universe):
    result = nbb.backtest(Planted(horizon="random", long=0.25, short=0.25), random_universe)
    ic, quantiles, stats = result.ic, result.quantile_returns, result.stats
    assert len(ic) == 249 and abs(ic.mean()) < 0.08
    assert stats["ic_mean"] == pytest.approx(ic.mean(), rel=1e-12)
    assert stats["ic_ir"] == pytest.approx(ic.mean() / ic.std(ddof=1), rel=1e-12)
    assert stats["ic_hit_pct"] == pytest.approx((ic > 0).mean() * 100, rel=1e-12)
    assert stats["quantile_spread_pct"] == pytest.approx(
        (quantiles["q5"].mean() - quantiles["q1"].mean()) * 100, rel=1e-12)
    assert 30 < stats["ic_hit_pct"] < 70


def test_a_weights_strategy_has_no_ic(hand):
    assert hand.ic.empty and hand.quantile_returns.empty
    for name in ("ic_mean", "ic_ir", "ic_hit_pct", "quantile_spread_pct"):
        assert math.isnan(hand.stats[name]), name


# ----------------------------------------------------------------- 6. stats


def test_the_readme_examples_run_and_show_these_numbers():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Portfolio strategies", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.+?)\n```", section, re.S)
    assert len(blocks) == 2
    namespace: dict = {"__name__": "readme_portfolio"}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    stats = namespace["result"].stats
    assert round(stats["return_pct"], 2) == 27.72 and round(stats["ic_mean"], 4) == 0.0999
    assert round(stats["turnover"], 2) == 9.71
    assert (round(stats["long_return_pct"], 2), round(stats["short_return_pct"], 2)) == (203.18, -61.72)
    sixty = nbb.backtest(namespace["SixtyForty"](rebalance="Q"), namespace["universe"], commission=0.001)
    assert round(sixty.stats["return_pct"], 2) == 708.63
    assert "10,847.843" in section and "-125.754" in section  # the worked example: test_a_case_computed_by_hand
