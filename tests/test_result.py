"""Tests of nbbacktest.engine.result: what one backtest shows, built on first access."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.engine import views
from nbbacktest.engine.examples import SmaCross
from nbbacktest.engine.metrics import STAT_NAMES


@pytest.fixture(scope="module")
def result():
    return nbb.backtest(SmaCross(), nbb.load_sample("daily"), commission=0.001, close_at_end=True)


def test_series_share_the_bar_times_and_the_stats_keep_their_order(result):
    index = result.equity.index
    assert result.position.index is index and result.drawdown.index is index
    assert list(result.stats.index) == list(STAT_NAMES) and result.stats.name == "SmaCross(fast=10, slow=30)"
    assert result.params == {"fast": 10, "slow": 30}
    assert result.stats is result.stats  # built once


def test_drawdown_is_measured_from_the_peak_including_the_starting_cash(result):
    peak = np.maximum.accumulate(np.maximum(result.equity.to_numpy(), result.settings.cash))
    np.testing.assert_array_equal(result.drawdown.to_numpy(), result.equity.to_numpy() / peak - 1.0)
    assert result.drawdown.max() <= 0.0


def test_trades_rows_in_times_and_percent(result):
    trades = result.trades
    assert list(trades.columns) == ["entry_time", "exit_time", "entry_price", "exit_price", "size",
                                    "pnl", "return_pct", "duration", "tag", "exit_reason"]
    assert (trades.duration == trades.exit_time - trades.entry_time).all()
    # everything is closed at the end: the trades' P&L is the whole gain
    assert trades.pnl.sum() == pytest.approx(result.stats["equity_final"] - 10_000.0)
    assert set(trades.exit_reason) <= {"signal", "end"} and result.stats["trades"] == len(trades)
    assert result.position.iloc[-1] == 0.0


def test_adjusted_orders_is_an_empty_typed_frame_when_nothing_was_adjusted(result):
    frame = result.adjusted_orders
    assert frame.empty
    assert list(frame.columns) == ["time", "requested", "filled", "price", "action", "reason", "tag"]
    assert frame["price"].dtype == float and frame["action"].dtype == object


def test_pickling_drops_the_built_views(result):
    _ = result.trades, result.equity
    state = result.__getstate__()
    assert "trades" not in state and "equity" not in state and "_trades" in state
    clone = pickle.loads(pickle.dumps(result))
    pd.testing.assert_series_equal(clone.equity, result.equity)


def test_text_and_html_reprs_need_no_display_layer(result, monkeypatch):
    text = repr(result)
    assert text.startswith("<Result SmaCross(fast=10, slow=30): return_pct=") and "trades=" in text
    assert "Sharpe" in result._repr_html_() and "&lt;" not in result._repr_html_()
    monkeypatch.setattr(views, "_VIEWS", {})
    monkeypatch.setattr(views, "_loader", None)
    bundle = result._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    with pytest.raises(ImportError, match="display layer"):
        result.plot()
