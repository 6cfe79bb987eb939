"""Tests for nbbacktest.engine.costs: the commission forms, the spread, both paths alike."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.engine.broker import Broker
from nbbacktest.engine.costs import Costs
from nbbacktest.engine.examples import SmaCross
from nbbacktest.engine.types import Settings
from tests.test_simulator import SmaEvent, SmaVector

# --- forms and checks --------------------------------------------------------------

def test_a_number_is_a_fraction_and_keeps_the_fast_path() -> None:
    costs = Costs.parse(0.002)
    assert (costs.rate, costs.fixed, costs.fn, costs.plain) == (0.002, 0.0, None, True)
    assert costs.charge(10.0, 50.0) == 10.0 * 50.0 * 0.002


def test_a_pair_is_fixed_then_fraction() -> None:
    costs = Costs.parse((2.5, 0.001))
    assert (costs.fixed, costs.rate, costs.plain) == (2.5, 0.001, False)
    assert costs.charge(100.0, 20.0) == 2.5 + 100.0 * 20.0 * 0.001  # 4.5
    # sized so that units * price + cost == value: (1004.5 - 2.5) / (20 * 1.001) = 50 units
    assert costs.units(1004.5 - 0.0, 20.0) == pytest.approx(1002.0 / 20.02)
    assert costs.units(-1004.5, 20.0) == -costs.units(1004.5, 20.0)
    assert costs.units(2.0, 20.0) == 0.0  # the value does not cover the fixed fee


def test_a_callable_is_asked_for_every_fill() -> None:
    costs = Costs.parse(lambda size, price: 1.0 + 0.0005 * size * price)
    assert costs.charge(10.0, 100.0) == 1.5
    # units = (value - cost(value / price, price)) / price = (1000 - 1.5) / 100
    assert costs.units(1000.0, 100.0) == pytest.approx(9.985)


@pytest.mark.parametrize("commission, error, text", [
    ((-1.0, 0.001), ValueError, "commission fixed fee must be a finite number >= 0, got -1.0"),
    ((1.0, 1.5), ValueError, "commission fraction must be below 1.0"),
    ((math.nan, 0.0), ValueError, "commission fixed fee"),
    ((1.0, 0.0, 3.0), ValueError, r"\(fixed per fill, fraction\)"),
    (("1", 0.0), TypeError, "commission fixed fee must be a number"),
    (-0.001, ValueError, "commission must be a finite number >= 0.0"),
    (1.0, ValueError, "commission must be below 1.0"),
    ("0.1", TypeError, "commission must be a fraction, a \\(fixed, fraction\\) pair or a callable"),
])
def test_bad_commissions_raise_naming_the_argument(commission, error, text) -> None:
    with pytest.raises(error, match=text):
        Settings(commission=commission)


@pytest.mark.parametrize("returned", [-1.0, math.nan, math.inf, "1", None])
def test_a_callable_returning_a_bad_cost_raises_naming_commission(returned, daily) -> None:
    with pytest.raises(ValueError, match=r"commission\(.*\) returned .*finite cost >= 0"):
        nbb.backtest(SmaVector(), daily, commission=lambda size, price: returned)


@pytest.mark.parametrize("spread, text", [
    (1.0, "spread must be below 1.0"),
    (-0.01, "spread must be a finite number >= 0.0"),
    ("0.1", "spread must be a number"),
])
def test_bad_spreads_raise(spread, text) -> None:
    with pytest.raises((TypeError, ValueError), match=text):
        Settings(spread=spread)
    with pytest.raises(ValueError, match="slippage \\+ spread / 2 must be below 1"):
        Settings(slippage=0.6, spread=0.9)


# --- fills by hand -------------------------------------------------------------------

def frame(opens: list[float]) -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=len(opens), freq="D")
    o = np.array(opens)
    return pd.DataFrame({"Open": o, "High": o, "Low": o, "Close": o}, index=index)


class Steps(nbb.Strategy):
    """Long from bar 0's close (fills at bar 1's open), flat at bar 2's (bar 3's open)."""

    def signals(self, data):
        return pd.Series([1.0, 1.0, 0.0, 0.0], index=data.index)


def test_a_fixed_fee_is_paid_on_each_fill() -> None:
    result = nbb.backtest(Steps(), frame([10.0, 10.0, 12.0, 12.0]), cash=1000.0, commission=(5.0, 0.0))
    trade = result.trades.iloc[0]
    assert trade["size"] == pytest.approx(99.5)  # (1000 - 5) / 10
    assert trade["pnl"] == pytest.approx(99.5 * 2.0 - 10.0)  # gain less two fees
    assert result.stats["commissions"] == 10.0
    assert result.equity.iloc[-1] == pytest.approx(1000.0 + 99.5 * 2.0 - 10.0)


def test_the_spread_is_half_at_entry_and_half_at_exit() -> None:
    result = nbb.backtest(Steps(), frame([10.0, 10.0, 12.0, 12.0]), cash=1000.0, spread=0.02)
    trade = result.trades.iloc[0]
    assert trade["entry_price"] == pytest.approx(10.0 * 1.01)
    assert trade["exit_price"] == pytest.approx(12.0 * 0.99)
    assert result.stats["commissions"] == 0.0  # a spread is a price, not a commission
    # with slippage too: both move the price
    both = nbb.backtest(Steps(), frame([10.0, 10.0, 12.0, 12.0]), spread=0.02, slippage=0.01)
    assert both.trades.iloc[0]["entry_price"] == pytest.approx(10.0 * 1.02)


def test_a_plain_fraction_counts_its_commissions() -> None:
    result = nbb.backtest(Steps(), frame([10.0, 10.0, 12.0, 12.0]), cash=1000.0, commission=0.01)
    units = 1000.0 / (10.0 * 1.01)
    assert result.stats["commissions"] == pytest.approx(units * 10.0 * 0.01 + units * 12.0 * 0.01)


def test_the_broker_sizes_with_the_fixed_fee() -> None:
    broker = Broker(cash=1000.0, commission=(10.0, 0.0), slippage=0.0, fractional=True)
    broker.to_target(1.0, bar=1, raw_price=10.0)
    assert broker.units == 99.0 and broker.cash == 0.0 and broker.paid == 10.0
    assert broker.units_for_fraction(0.5, 10.0, 1.0) == pytest.approx((495.0 - 10.0) / 10.0)


# --- both paths charge the same ------------------------------------------------------

COSTS = {
    "fixed": {"commission": (3.0, 0.0)},
    "fixed+fraction": {"commission": (3.0, 0.001), "slippage": 0.0005},
    "callable": {"commission": lambda size, price: 1.0 + 0.0008 * size * price},
    "spread": {"commission": 0.001, "spread": 0.002},
    "all": {"commission": (1.0, 0.001), "spread": 0.001, "fractional": False, "close_at_end": True},
}


@pytest.mark.parametrize("settings", list(COSTS.values()), ids=list(COSTS))
@pytest.mark.parametrize("short", [False, True], ids=["long-only", "long-short"])
def test_both_paths_charge_the_same(settings, short, daily) -> None:
    vector = nbb.backtest(SmaVector(short=short), daily, **settings)
    event = nbb.backtest(SmaEvent(short=short), daily, **settings)
    assert vector.stats["trades"] > 10 and vector.stats["commissions"] > 0
    pd.testing.assert_frame_equal(vector.trades, event.trades)
    pd.testing.assert_series_equal(vector.equity, event.equity)
    assert vector.stats.drop("start").equals(event.stats.drop("start"))


def test_costs_lower_the_result(daily) -> None:
    free = nbb.backtest(SmaVector(), daily).stats
    fee = nbb.backtest(SmaVector(), daily, commission=(5.0, 0.0)).stats
    spread = nbb.backtest(SmaVector(), daily, spread=0.002).stats
    assert fee["equity_final"] < free["equity_final"] and spread["equity_final"] < free["equity_final"]
    # 5 per fill: two per closed trade, one more for a position still open
    assert fee["commissions"] in (10.0 * fee["trades"], 10.0 * fee["trades"] + 5.0)


# --- sweeps --------------------------------------------------------------------------

def test_sweep_and_run_many_accept_the_forms(daily) -> None:
    grid = {"fast": [5, 10], "slow": [30]}
    swept = nbb.sweep(SmaVector, daily, grid, commission=(1.0, 0.001), spread=0.001, progress=False)
    direct = nbb.backtest(SmaVector(fast=10, slow=30), daily, commission=(1.0, 0.001), spread=0.001)
    row = swept.results.set_index("fast").loc[10]
    assert row["commissions"] == direct.stats["commissions"]
    assert row["sharpe"] == direct.stats["sharpe"]
    many = nbb.run_many([SmaVector(fast=10)], daily, commission=(1.0, 0.001), spread=0.001,
                        progress=False)
    assert many.results["commissions"].iloc[0] == direct.stats["commissions"]


def test_a_lambda_commission_travels_to_the_engines(cluster, daily) -> None:
    def fee(size, price):
        return 2.0 + 0.0005 * size * price

    grid = {"fast": [5, 10], "slow": [30, 40]}
    local = nbb.sweep(SmaCross, daily, grid, commission=fee, progress=False, engines=1)
    remote = nbb.sweep(SmaCross, daily, grid, commission=lambda s, p: 2.0 + 0.0005 * s * p,
                       progress=False, cluster=cluster, engines=2)
    assert remote.status == "complete" and remote.results["error"].isna().all()
    cols = ["fast", "slow", "sharpe", "equity_final", "commissions"]
    pd.testing.assert_frame_equal(local.results[cols], remote.results[cols])


def test_follow_changes_takes_every_form() -> None:
    from nbbacktest.engine.broker import follow_changes, follow_changes_paid

    args = (np.array([1.0, 0.0]), np.array([1, 2]), np.array([10.0, 12.0]), 3)
    ledger, paid = follow_changes_paid(1000.0, (5.0, 0.0), 0.0, True, *args)
    assert ledger.pnl.tolist() == [99.5 * 2.0 - 10.0] and paid == 10.0
    assert follow_changes(1000.0, Costs(fixed=5.0), 0.0, True, *args).units.tolist() == [0.0, 99.5, 0.0]
    plain, paid = follow_changes_paid(1000.0, 0.01, 0.0, True, *args)
    assert paid == pytest.approx(plain.units[1] * (10.0 + 12.0) * 0.01)
