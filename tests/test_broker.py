"""Tests of nbbacktest.engine.broker: the Broker's fills, sizing and leverage cap, and
the vectorized runs' fill loop (follow_changes) against it, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nbbacktest.engine.broker import Broker, follow_changes
from nbbacktest.engine.ledger import trade_arrays


def test_all_in_with_commission_never_spends_more_than_the_equity():
    broker = Broker(cash=1_000.0, commission=0.01, slippage=0.0, fractional=True)
    broker.to_target(1.0, bar=0, raw_price=10.0)
    assert broker.units == pytest.approx(1_000.0 / (10.0 * 1.01))
    assert broker.cash == pytest.approx(0.0, abs=1e-9) and broker.cash >= -1e-9
    assert broker.exposure(10.0) == pytest.approx(1.0)


def test_slippage_moves_each_fill_against_the_trade():
    broker = Broker(cash=1_000.0, commission=0.0, slippage=0.01, fractional=True)
    broker.to_target(1.0, bar=0, raw_price=100.0)
    assert broker.entry_price == pytest.approx(101.0)
    broker.to_target(0.0, bar=1, raw_price=100.0, reason="end")
    trade = broker.trades[0]
    assert trade[3] == pytest.approx(99.0) and trade[8] == "end"
    assert trade[5] == pytest.approx(broker.cash - 1_000.0)


def test_whole_units_round_toward_zero_both_ways():
    broker = Broker(cash=1_000.0, commission=0.0, slippage=0.0, fractional=False)
    broker.to_target(-1.0, bar=0, raw_price=300.0)
    assert broker.units == -3.0  # -3.33 rounds toward zero
    broker.trade_units(1.7, bar=1, raw_price=300.0)
    assert broker.units == -2.0


def test_a_reversal_closes_then_opens_from_the_equity_left():
    broker = Broker(cash=1_000.0, commission=0.0, slippage=0.0, fractional=True)
    broker.to_target(1.0, bar=0, raw_price=10.0)
    broker.to_target(-1.0, bar=1, raw_price=12.0)
    assert len(broker.trades) == 1 and broker.trades[0][5] == pytest.approx(200.0)
    assert broker.units == pytest.approx(-1_200.0 / 12.0)
    # a reversal is two fills on one bar
    assert broker.fill_bars == [0, 1, 1]


def test_trade_units_crossing_zero_books_the_closed_part_and_opens_the_rest():
    broker = Broker(cash=1_000.0, commission=0.0, slippage=0.0, fractional=True)
    broker.trade_units(10.0, bar=0, raw_price=10.0, tag="entry")
    broker.trade_units(-15.0, bar=1, raw_price=11.0, tag="flip")
    assert broker.units == pytest.approx(-5.0)
    assert broker.trades == [(0, 1, 10.0, 11.0, 10.0, pytest.approx(10.0), pytest.approx(0.1),
                              "entry", "signal")]
    assert broker.entry_tag == "flip" and broker.entry_price == 11.0


def test_capped_units_reduces_rejects_and_never_caps_a_reduction():
    broker = Broker(cash=1_000.0, commission=0.0, slippage=0.0, fractional=True)
    assert broker.capped_units(50.0, bar=0, raw_price=10.0, leverage=1.0) == 50.0  # within
    assert broker.notes == []
    broker.trade_units(100.0, bar=0, raw_price=10.0)
    assert broker.capped_units(10.0, bar=1, raw_price=10.0, leverage=1.0, tag="more") == 0.0
    assert broker.notes[-1][4] == "rejected" and broker.notes[-1][6] == "more"
    assert broker.capped_units(-40.0, bar=1, raw_price=10.0, leverage=1.0) == -40.0
    assert broker.capped_units(100.0, bar=1, raw_price=10.0, leverage=1.5) == pytest.approx(50.0)
    assert broker.notes[-1][4] == "reduced" and len(broker.notes) == 2


def test_units_for_fraction_is_sized_at_the_slipped_price_after_commission():
    broker = Broker(cash=1_000.0, commission=0.01, slippage=0.02, fractional=True)
    assert broker.units_for_fraction(0.5, 10.0, 1.0) == pytest.approx(500.0 / (10.2 * 1.01))
    assert broker.units_for_fraction(0.5, 10.0, -1.0) == pytest.approx(-500.0 / (9.8 * 1.01))
    broker.cash = -1.0
    assert broker.units_for_fraction(0.5, 10.0, 1.0) == 0.0  # nothing left to size from


def test_ledger_holds_the_fill_log_and_the_trade_book():
    broker = Broker(cash=1_000.0, commission=0.0, slippage=0.0, fractional=True)
    broker.to_target(1.0, bar=1, raw_price=10.0)
    broker.to_target(0.0, bar=3, raw_price=12.0)
    ledger = broker.ledger(5)
    equity, held = ledger.mark_to_market(np.array([10.0, 10.0, 11.0, 12.0, 13.0]))
    assert held.tolist() == [0.0, 100.0, 100.0, 0.0, 0.0]
    assert equity.tolist() == [1_000.0, 1_000.0, 1_100.0, 1_200.0, 1_200.0]
    assert ledger.trades is broker.trades and ledger.notes is broker.notes
    assert ledger.pnl.tolist() == [200.0] and not math.isnan(ledger.returns[0])


# ------------------------------------------------- the fast vectorized fill loop
def _reference_ledger(settings, targets, bars, prices, n):
    """The general path: Broker.follow over every change, as the event path fills."""
    broker = Broker(settings["cash"], settings["commission"], settings["slippage"],
                    settings["fractional"])
    broker.follow(targets.tolist(), bars.tolist(), prices.tolist())
    return broker.ledger(n)


def _random_changes(rng, n, kind):
    levels = {
        "long": [0.0, 1.0],
        "long-short": [-1.0, 0.0, 1.0],
        "fractions": [-1.0, -0.5, 0.0, 0.25, 0.5, 1.0],  # resizes hand over mid-run
        "leverage": [-2.0, 0.0, 1.5, 3.0],
    }[kind]
    exposures = rng.choice(levels, n)
    changed = np.flatnonzero(exposures != np.concatenate(([0.0], exposures[:-1])))
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    return exposures[changed], changed, prices[changed]


@pytest.mark.parametrize("n", [100, 3_000], ids=["few-changes", "many-changes"])
@pytest.mark.parametrize("kind", ["long", "long-short", "fractions", "leverage"])
@pytest.mark.parametrize(
    "costs",
    [
        {"cash": 10_000.0, "commission": 0.0, "slippage": 0.0, "fractional": True},
        {"cash": 10_000.0, "commission": 0.002, "slippage": 0.001, "fractional": True},
        {"cash": 5_000.0, "commission": 0.01, "slippage": 0.0, "fractional": False},
    ],
    ids=["free", "costs", "whole-units"],
)
def test_fast_fill_loop_matches_the_broker_bit_for_bit(kind, costs, n):
    rng = np.random.default_rng(len(kind))
    targets, bars, prices = _random_changes(rng, n, kind)
    fast = follow_changes(costs["cash"], costs["commission"], costs["slippage"],
                          costs["fractional"], targets, bars, prices, n)
    reference = _reference_ledger(costs, targets, bars, prices, n)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    for got, expected in zip(fast.mark_to_market(close), reference.mark_to_market(close)):
        assert got.tobytes() == expected.tobytes()
    assert fast.pnl.tobytes() == reference.pnl.tobytes()
    assert fast.returns.tobytes() == reference.returns.tobytes()
    assert fast.bars_in_market() == reference.bars_in_market()
    assert fast.trades == reference.trades and len(fast.trades) == len(reference.trades) > 5
    # resizes hand the rest of the run to Broker.follow, which books a plain list
    assert isinstance(fast.trades, list) == (kind in ("fractions", "leverage"))
    for field, column in trade_arrays(fast.trades).items():
        np.testing.assert_array_equal(column, trade_arrays(reference.trades)[field], err_msg=field)
