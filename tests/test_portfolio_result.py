"""PortfolioResult (nbbacktest.engine.portfolio_result): the views over a run (trades, legs,
leg equity, weights, drawdown, positions) and pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from portfolio_cases import (
    HAND_INDEX,
    Momentum,
    Table,
    hand_result,
    hand_universe,
    quirky_frames,
    same,
    sample_universe,
)

import nbbacktest as nbb
from nbbacktest.engine.portfolio_result import EXIT_REASONS, PortfolioResult
from nbbacktest.engine.portfolio_sim import simulate_portfolio
from nbbacktest.engine.types import Settings
from nbbacktest.engine.universe import Universe


@pytest.fixture(scope="module")
def hand():
    return hand_result()


@pytest.fixture(scope="module")
def sample() -> Universe:
    return sample_universe()


@pytest.fixture(scope="module")
def quirky():
    return quirky_frames()


@pytest.mark.parametrize("data", ["sample", "quirky"])
def test_legs_add_up_to_the_portfolio_return(request, data):
    universe = request.getfixturevalue(data)
    result = nbb.backtest(Momentum(lookback=30, long=0.3, short=0.3, rebalance="W"), universe,
                          commission=0.001, slippage=0.0005, close_at_end=True)
    legs, equity = result.legs, result.equity
    total = (legs["long"] + legs["short"]).to_numpy()
    np.testing.assert_allclose(total[1:], equity.pct_change().to_numpy()[1:], rtol=0, atol=1e-9)
    assert total[0] == pytest.approx(equity.iloc[0] / 10_000 - 1, abs=1e-12)
    assert (legs["long"] != 0).sum() > 100 and (legs["short"] != 0).sum() > 100
    np.testing.assert_allclose(result.leg_equity.iloc[-1].to_numpy() * 100 - 100,
                               [result.stats["long_return_pct"], result.stats["short_return_pct"]])


def test_trade_symbols_are_strings(quirky):
    result = nbb.backtest(Momentum(long=0.3, short=0.3), quirky)
    assert len(result.trades) > 10
    assert all(type(symbol) is str for symbol in result.trades["symbol"])
    assert set(result.trades["symbol"]) <= set(quirky)


def test_a_portfolio_result_pickles(quirky):
    result = nbb.backtest(Momentum(long=0.3, short=0.3, rebalance="M"), quirky, commission=0.001)
    stats, equity = result.stats, result.equity  # cached views are dropped, not pickled
    back = pickle.loads(pickle.dumps(result))
    assert all(same(back.stats[k], v) for k, v in stats.items())
    pd.testing.assert_series_equal(back.equity, equity, check_exact=True)
    pd.testing.assert_frame_equal(back.trades, result.trades)
    assert back.strategy == result.strategy


def test_trades_have_their_columns_and_types(hand):
    trades = hand.trades
    assert list(trades.columns) == ["symbol", "entry_time", "exit_time", "entry_price", "exit_price", "size",
                                    "pnl", "return_pct", "duration", "exit_reason"]
    assert (trades["duration"] == trades["exit_time"] - trades["entry_time"]).all()
    assert list(trades["exit_reason"].cat.categories) == list(EXIT_REASONS)
    assert trades["entry_time"].dtype == HAND_INDEX.dtype


def test_weights_are_each_value_at_its_last_close_over_equity(quirky):
    result = nbb.backtest(Momentum(lookback=30, long=0.3, short=0.3, rebalance="W"), quirky)
    universe = Universe.from_frames(quirky)
    last_close = universe.close.ffill().fillna(0.0)
    expected = result.positions * last_close / result.equity.to_numpy()[:, None]
    pd.testing.assert_frame_equal(result.weights, expected, rtol=1e-12)
    assert result.weights.index.equals(universe.index) and result.weights.columns.equals(universe.symbols)
    # the delisted symbol (the third) weighs nothing after its last bar
    assert (result.weights.iloc[201:, 2] == 0).all() and (result.weights.iloc[:201, 2] != 0).any()
    gross = result.weights.abs().sum(axis=1)
    assert result.stats["avg_gross_pct"] == pytest.approx(gross.mean() * 100, rel=1e-9)


def test_drawdown_runs_from_the_peak_including_the_starting_cash(hand):
    peak = np.maximum.accumulate(np.maximum(hand.equity.to_numpy(), 10_000))
    np.testing.assert_allclose(hand.drawdown, hand.equity / peak - 1, rtol=0, atol=1e-15)
    assert (hand.drawdown <= 0).all()


def test_a_run_without_held_units_has_no_positions():
    universe = hand_universe()
    settings = Settings(cash=10_000, commission=0.001)
    run = simulate_portfolio(Table(key="hand"), universe, settings, 0, keep_held=False)
    assert run.held is None
    result = PortfolioResult(Table(key="hand"), universe, settings, 0, run)
    with pytest.raises(ValueError, match=r"this run kept no positions \(a sweep's run\); re-run it with"
                                         r" sweep.detail\(i\)"):
        result.positions
    with pytest.raises(ValueError, match=r"kept no positions"):
        result.weights
    # what needs no units is there, the same as a full run's
    full = hand_result()
    pd.testing.assert_series_equal(result.equity, full.equity, check_exact=True)
    pd.testing.assert_frame_equal(result.trades, full.trades)
