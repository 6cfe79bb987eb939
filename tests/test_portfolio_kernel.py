"""The portfolio kernel (nbbacktest.engine.portfolio_kernel): fill_loop compiled by numba
against its plain-Python function, and its outputs read directly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from portfolio_cases import Momentum, quirky_frames, same

import nbbacktest as nbb
from nbbacktest.engine import portfolio_sim
from nbbacktest.engine.portfolio_kernel import CASH, EQUITY, GROSS, LONG_PNL, SHORT_PNL, TRADED, fill_loop


@pytest.fixture(scope="module")
def quirky():
    return quirky_frames()


# ----------------------------------------------------------------- 1. compiled = plain Python


def _everything(result) -> dict:
    arrays = {"equity": result.equity, "cash": result.cash, "positions": result.positions,
              "weights": result.weights, "turnover": result.turnover, "legs": result.legs}
    trades = result.trades.drop(columns=["symbol", "exit_reason"])
    arrays.update({f"trade {name}": trades[name] for name in trades})
    arrays["trade symbol"] = result.trades["symbol"].astype(str)
    arrays["trade exit_reason"] = result.trades["exit_reason"].astype(str)
    return {name: np.asarray(values) for name, values in arrays.items()}


@pytest.mark.parametrize("rebalance", ["change", "M", "D"])
def test_the_compiled_kernel_and_plain_python_give_the_same_bits(quirky, monkeypatch, rebalance):
    strategy = Momentum(lookback=15, long=0.5, short=0.5, rebalance=rebalance)
    settings = {"commission": 0.001, "slippage": 0.0005}
    compiled = nbb.backtest(strategy, quirky, **settings)
    assert compiled.stats["trades"] > 20
    assert (compiled.trades["exit_reason"] == "delisted").any()
    monkeypatch.setattr(portfolio_sim, "fill_loop", fill_loop.py_func)
    plain = nbb.backtest(strategy, quirky, **settings)
    ours, theirs = _everything(compiled), _everything(plain)
    for name in ours:
        assert np.array_equal(ours[name], theirs[name], equal_nan=ours[name].dtype.kind == "f"), name
    for name, value in compiled.stats.items():
        assert same(plain.stats[name], value), name


# ----------------------------------------------------------------- 2. fill_loop's outputs

# Three symbols over 8 bars: B has no bar 3, C delists after bar 5 (its last bar).
_OPEN = np.array([[100.0, 50.0, 20.0], [101, 51, 21], [99, 52, 19], [102, np.nan, 20],
                  [104, 49, 22], [103, 50, 21], [105, 53, np.nan], [106, 52, np.nan]])
_CLOSE = _OPEN + np.array([0.5, -0.25, 0.125])


def _run(function, *, schedule=False, rate=0.001, fixed=0.5, slip=0.002, fractional=True,
         close_at_end=True, capacity=None):
    """fill_loop on the small case, deciding at every close to flip the signs of
    (0.4, -0.3, 0.2): every decision closes every position held and opens the other side."""
    bars, count = _OPEN.shape
    signs = np.where(np.arange(bars) % 2 == 0, 1.0, -1.0)[:, None]
    weights = signs * np.array([0.4, -0.3, 0.2])
    weights[6:, 2] = 0.0  # nothing for C after its delisting (as simulate_portfolio zeroes it)
    decision_of = np.concatenate(([-1], np.arange(bars - 1))).astype(np.int64)  # bar t fills t-1's
    delist_bar = np.array([-1, -1, 5], dtype=np.int64)
    decisions = bars - 1
    if capacity is None:  # the simulator's bound: two records a symbol a decision, delisting and end
        capacity = 2 * count * (decisions + int((delist_bar >= 0).sum()) + 1)
    held = np.full((bars, count), np.nan)
    per_bar = np.full((6, bars), np.nan)
    trade_ints = np.full((4, capacity), -7, dtype=np.int64)
    trade_floats = np.full((5, capacity), np.nan)
    n, paid, in_market = function(weights, decision_of, schedule, _OPEN, _CLOSE, delist_bar, 10_000.0, rate,
                                  fixed, slip, fractional, close_at_end, True, held, per_bar, trade_ints,
                                  trade_floats)
    return {"n": n, "paid": paid, "in_market": in_market, "held": held, "per_bar": per_bar,
            "ints": trade_ints, "floats": trade_floats, "capacity": capacity}


@pytest.mark.parametrize("fractional", [True, False])
def test_fill_loop_equity_is_cash_plus_the_units_held_at_their_last_close(fractional):
    out = _run(fill_loop, fractional=fractional)
    held, per_bar = out["held"], out["per_bar"]
    last_close = pd.DataFrame(_CLOSE).ffill().to_numpy()
    values = held * last_close
    np.testing.assert_allclose(per_bar[EQUITY], per_bar[CASH] + values.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(per_bar[GROSS], np.abs(values).sum(axis=1), rtol=1e-12)
    # the legs' P&L is the change in equity (commissions included)
    previous = np.concatenate(([10_000.0], per_bar[EQUITY][:-1]))
    np.testing.assert_allclose(per_bar[LONG_PNL] + per_bar[SHORT_PNL], per_bar[EQUITY] - previous,
                               rtol=0, atol=1e-9)
    # nothing held before the first fill; B untouched on the bar it has no price; C flat once delisted
    assert (held[0] == 0).all() and held[1].tolist() != [0.0, 0.0, 0.0]
    assert held[3, 1] == held[2, 1] and (held[5:, 2] == 0).all()
    assert held[-1].tolist() == [0.0, 0.0, 0.0]  # close_at_end
    if not fractional:
        assert np.array_equal(held, np.trunc(held))
    assert per_bar[TRADED][0] == 0 and (per_bar[TRADED][1:] > 0).all()
    assert out["in_market"] == 6  # bars 1 to 6 end holding; bar 7 closes everything


def test_fill_loop_records_fit_its_capacity_and_are_well_formed():
    out = _run(fill_loop)
    n, capacity, ints, floats = out["n"], out["capacity"], out["ints"], out["floats"]
    # A closes at bars 2-7 and at the end; B at 2, 5, 6, 7 and the end (no bar 3, and at bar 4 its
    # target is back to the one it holds: no trade); C at 2-4 and at its delisting (bar 5).
    assert n == 7 + 5 + 5 <= capacity
    assert (ints[:, n:] == -7).all() and np.isnan(floats[:, n:]).all()  # nothing written past n
    symbol, entry, exit_, reason = ints[:, :n]
    assert set(symbol.tolist()) == {0, 1, 2} and (entry <= exit_).all()  # C: opened and delisted at 5
    assert (reason[symbol == 2][-1], exit_[symbol == 2][-1]) == (1, 5)  # C: delisted at its last bar
    assert sorted(reason[exit_ == 7]) == [0, 0, 2, 2]  # A and B: flipped, then closed at the end
    assert out["held"][4, 1] == out["held"][2, 1]
    assert not np.isnan(floats[:, :n]).any()
    # commissions: each fill pays the fixed part plus the rate on its notional; every position
    # opened is closed whole, so there are two fills a record
    assert out["paid"] == pytest.approx(0.5 * 2 * n + 0.001 * out["per_bar"][TRADED].sum(), rel=1e-12)
    # a tight capacity is enough; the plain-Python function gives the same bits
    tight = _run(fill_loop.py_func, capacity=n)
    assert tight["n"] == n
    for name in ("held", "per_bar"):
        assert np.array_equal(tight[name], out[name], equal_nan=True), name
    for name in ("ints", "floats"):
        assert np.array_equal(tight[name], out[name][:, :n], equal_nan=True), name
